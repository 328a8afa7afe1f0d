"""The UI trusts nothing of the request: through a real Airflow API server.

One Airflow (API server, scheduler, DAG processor, triggerer; ``support.airflow_server``)
and one real run of the DAG that published a manifest, shared by every scenario
(a module fixture: the module takes about a minute on 2 cores). Then, with raw HTTP requests:

* path tricks (``//evil.example/dags/ssl_imagenet_splits?...``, ``/evil/dags/...``,
  encoded slashes) never give a page with a script from another origin or path;
  the exact DAG page gets the nav script at the configured URL;
* a ``conf=`` in a link (the page's Referer) changes nothing in the DAG details;
* a rebuild / add-seeds link of the published run gives the params computed from
  that run's recorded conf and the manifest it published; a bogus run, a run that
  published nothing, a split that is not seeded give the DAG's defaults, with
  nothing of the request in them;
* the manifest view and API serve only the published manifest: a local JSON file
  with a ``splits`` key, an unpublished copy, another bucket and path tricks get 404
  without the file's content;
* a manifest's values with ``<script>`` and quotes are escaped in the page;
* under a ``base_url`` with a path (a second Airflow, no run): the nav script and
  the view's links come from the configured path; only that exact page gets it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.airflow_env import DAG_ID, migrated_home
from support.airflow_server import Airflow

# long: the module's Airflow (api-server, scheduler, a DAG run) takes about 40 s to set up;
# one xdist group, so that one worker sets it up once.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.long,
    pytest.mark.xdist_group("ui_security"),
    pytest.mark.timeout(900),
]

NUM_CLASSES = 10
SEEDS = [1, 2]
NAV_SCRIPT = "/ssl-splits/static/airflow-nav.js"  # Airflow's base_url has no path here
DETAILS = f"/api/v2/dags/{DAG_ID}/details"
PAGE = f"/dags/{DAG_ID}"


@dataclass
class Published:
    airflow: Airflow
    run_id: str  # the run that published the manifest
    conf: dict[str, Any]  # the conf it was triggered with
    manifest: Path  # the manifest it published (local disk)
    data: Path
    idle_run: str  # a run of the DAG that published nothing

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text())


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[Published]:
    from beam_jobs.source.synthetic import Spec, generate

    base = tmp_path_factory.mktemp("ui-security")
    data = Path(tempfile.mkdtemp(prefix="ssl-splits-sec-", dir="/tmp"))
    af = Airflow(migrated_home(base / "airflow"), base / "airflow-logs")
    af.start()
    try:
        source = data / "imagenet"
        generate(
            Spec(
                num_classes=NUM_CLASSES,
                min_per_class=20,
                max_per_class=30,
                train_shards=4,
                validation_shards=0,
                seed=3,
            ),
            str(source),
            workers=1,
        )
        output = data / "bucket" / "ssl-imagenet"
        conf = {
            "source_uri": str(source),
            "output_uri": str(output),
            "seeds": SEEDS,
            "unsupervised": False,
            "num_classes": NUM_CLASSES,
            "direct_num_workers": 1,
        }
        af.wait_ready(timeout=240)
        run_id = af.trigger(conf)
        run = af.wait_run(run_id, timeout=480)
        assert run.get("state") == "success", (
            f"run {run_id} ended {run.get('state')!r}:\n{af.failure_report(run_id)}\n"
            f"{af.log_tails(10)}"
        )
        # A run that publishes nothing (its source does not exist); queued or failed,
        # it has no manifest either way.
        idle = af.trigger({**conf, "source_uri": str(data / "missing")})
        yield Published(af, run_id, conf, output / "manifest.json", data, idle)
    finally:
        af.stop()
        shutil.rmtree(data, ignore_errors=True)


def _q(**query: str) -> str:
    return urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def _seeded(doc: dict[str, Any], seed: int) -> str:
    return next(n for n, e in doc["splits"].items() if e.get("seed") == seed)


def _script_srcs(html: str) -> list[str]:
    return re.findall(r"<script\b[^>]*\bsrc=[\"']?([^\"' >]*)", html, re.I)


def _params(r) -> dict[str, Any]:
    assert r.status == 200, (r.status, r.text[:500])
    return {k: v["value"] for k, v in r.json()["params"].items()}


# --------------------------------------------------------------------------- the page


def test_path_tricks_never_load_a_script_from_elsewhere(published):
    af = published.airflow
    split = _seeded(published.doc, 2)
    link = _q(prefill="rebuild", from_run=published.run_id, split=split)
    conf = _q(conf=json.dumps({"output_uri": "gs://prod/ssl", "force": True}))
    tricks = [
        f"//evil.example{PAGE}?{link}",
        f"//evil.example{PAGE}?{conf}",
        f"/evil{PAGE}?{link}",
        f"/evil.example{PAGE}?{link}",
        f"/dags%2F{DAG_ID}?{link}",
        f"/%2Fevil.example{PAGE}?{link}",
        f"/%2F%2Fevil.example{PAGE}?{link}",
        f"{PAGE}/?{link}",
        f"{PAGE}?{conf}",
        f"{PAGE}/runs/x?{link}",
    ]
    for target in tricks:
        r = af.request(target)
        srcs = _script_srcs(r.text)
        assert not any("evil" in s or s.startswith("//") or "://" in s for s in srcs), (
            target,
            srcs,
        )
        assert not any("airflow-nav" in s for s in srcs), (target, r.status, srcs)
        assert "evil.example/ssl-splits" not in r.text, target
    # The exact page: the nav script, at the configured URL (the control: the checks
    # above would see a script added elsewhere).
    exact = af.request(f"{PAGE}?{link}")
    assert exact.status == 200 and [s for s in _script_srcs(exact.text) if "nav" in s] == [
        NAV_SCRIPT
    ], _script_srcs(exact.text)


# --------------------------------------------------------------------------- the form's values


def test_a_conf_in_a_link_changes_nothing(published):
    af = published.airflow
    defaults = _params(af.request(DETAILS))
    crafted = {"output_uri": "gs://prod/ssl", "force": True, "seeds": [9]}
    for page in (
        f"{af.url}{PAGE}?{_q(conf=json.dumps(crafted))}",
        # With a real link's request beside it, the conf is still ignored.
        f"{af.url}{PAGE}?{_q(conf=json.dumps(crafted), prefill='add-seeds', from_run='nope')}",
        # A link under another path (a suffix match would take it).
        f"{af.url}//evil.example{PAGE}?{_q(prefill='add-seeds', from_run=published.run_id)}",
        f"{af.url}/evil{PAGE}?{_q(prefill='add-seeds', from_run=published.run_id)}",
    ):
        r = af.request(DETAILS, {"Referer": page})
        assert _params(r) == defaults, page
        assert "gs://prod" not in r.text
    assert defaults["force"] is False and defaults["output_uri"] != "gs://prod/ssl"


def test_a_rebuild_link_of_a_published_run_prefills_from_its_manifest(published):
    from ssl_splits.prefill import ADD_SEEDS, REBUILD, PrefillRequest, prefill_conf

    af = published.airflow
    doc, uri = published.doc, str(published.manifest)
    split = _seeded(doc, 2)
    referer = f"{af.url}{PAGE}?{_q(prefill='rebuild', from_run=published.run_id, split=split)}"
    params = _params(af.request(DETAILS, {"Referer": referer}))
    expected = prefill_conf(
        PrefillRequest(REBUILD, published.run_id, split), published.conf, doc, uri
    )
    assert expected is not None
    assert {k: params[k] for k in expected} == expected
    # What that means, spelled out: the seed, force, the folders; the run's workers.
    assert params["seeds"] == [2] and params["force"] is True
    assert params["output_uri"] == published.conf["output_uri"]
    assert params["source_uri"] == published.conf["source_uri"]
    assert params["num_shards"] == doc["splits"][split]["num_shards"]
    assert params["direct_num_workers"] == 1 and params["num_classes"] == NUM_CLASSES
    assert params["unsupervised"] is False and params["copy_validation"] is False

    add = f"{af.url}{PAGE}?{_q(prefill='add-seeds', from_run=published.run_id)}"
    params = _params(af.request(DETAILS, {"Referer": add}))
    expected = prefill_conf(PrefillRequest(ADD_SEEDS, published.run_id), published.conf, doc, uri)
    assert {k: params[k] for k in expected} == expected
    assert params["seeds"] == [max(SEEDS) + 1] and params["force"] is False


def test_a_bogus_link_gives_the_dags_defaults(published):
    af = published.airflow
    defaults = _params(af.request(DETAILS))
    doc = published.doc
    bogus = [
        _q(prefill="rebuild", from_run="manual__2026-01-01T00:00:00+00:00", split=_seeded(doc, 2)),
        _q(prefill="add-seeds", from_run="<script>alert(1)</script>"),
        _q(prefill="add-seeds", from_run=published.idle_run),  # published nothing
        _q(prefill="rebuild", from_run=published.idle_run, split=_seeded(doc, 2)),
        _q(prefill="rebuild", from_run=published.run_id, split="train7.9"),  # no such split
        _q(prefill="rebuild", from_run=published.run_id, split='"><img src=x>'),
        _q(prefill="rebuild", from_run=published.run_id),  # no split
    ]
    for query in bogus:
        r = af.request(DETAILS, {"Referer": f"{af.url}{PAGE}?{query}"})
        assert _params(r) == defaults, query
        for echo in ("<script", "<img", "train7.9", "2026-01-01T00:00:00"):
            assert echo not in r.text, (query, echo)


# --------------------------------------------------------------------------- the manifests


def test_only_published_manifests_are_served(published):
    af = published.airflow
    run_id, manifest = published.run_id, published.manifest
    secret = published.data / "secret.json"
    secret.write_text(json.dumps({"splits": {}, "token": "s3cr3t-value"}))
    copy = published.data / "elsewhere" / "manifest.json"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(manifest, copy)
    refused = [
        str(secret),  # a local JSON file with a "splits" key
        str(copy),  # a manifest nobody published
        "gs://other-bucket/ssl-imagenet/manifest.json",  # another bucket
        "gs://bucket/ssl-imagenet/manifest.json",
        f"{manifest.parent}/../../secret.json",
        f"/x/..{secret}",
        f"{manifest}/../../../secret.json",
        f"{manifest.parent}/./../../secret.json",
        urllib.parse.quote(str(secret), safe=""),  # encoded once more than the query
        "file://" + str(secret),
        str(secret).replace("/", "//"),
    ]
    for uri in refused:
        for route in ("/ssl-splits/api/manifest", "/ssl-splits/"):
            r = af.request(f"{route}?{_q(uri=uri)}")
            assert r.status == 404, (route, uri, r.status, r.text[:300])
            assert "s3cr3t" not in r.text and "token" not in r.text, (route, uri)
            assert '"splits"' not in r.text, (route, uri)
    # Raw encodings of ".." and "/" in the query string itself.
    for raw in (
        "uri=" + str(manifest.parent).replace("/", "%2F") + "%2F..%2F..%2Fsecret.json",
        "uri=" + str(manifest.parent) + "/%2E%2E/%2E%2E/secret.json",
        "uri=" + urllib.parse.quote(urllib.parse.quote(str(secret), safe=""), safe=""),
    ):
        r = af.request(f"/ssl-splits/api/manifest?{raw}")
        assert r.status == 404 and "s3cr3t" not in r.text, (raw, r.status)
    by_run = af.request(f"/ssl-splits/api/manifest?{_q(run_id=run_id)}")
    assert by_run.status == 200 and by_run.json() == published.doc
    assert af.request(f"/ssl-splits/api/manifest?{_q(uri=str(manifest))}").status == 200
    page = af.request(f"/ssl-splits/?{_q(run_id=run_id)}")
    assert page.status == 200 and "server-timing" in page.headers
    assert 'data-testid="rebuild"' in page.text

    for run in (published.idle_run, "manual__nope", "../" + run_id):
        r = af.request(f"/ssl-splits/api/manifest?{_q(run_id=run)}")
        assert r.status == 404 and "s3cr3t" not in r.text, run


def test_a_manifests_values_render_escaped(published):
    af = published.airflow
    original = published.manifest.read_bytes()
    doc = published.doc
    split = _seeded(doc, 1)
    entry = doc["splits"][split]
    doc["splits"]['x"><script>alert(1)</script>'] = {**entry, "seed": 7}
    entry["class_counts"] = {"</title><script>alert(2)</script>": 1, "a'b\"c": 2}
    entry["provenance"] = {**entry.get("provenance", {}), "run_id": "javascript:alert(3)//"}
    doc["source"]["uri"] = "/src/\"'><img src=x onerror=alert(4)>"
    try:
        published.manifest.write_text(json.dumps(doc))
        r = af.request(f"/ssl-splits/?{_q(run_id=published.run_id)}")
        assert r.status == 200, r.text[:500]
        page = r.text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=alert(4)&gt;" in page
        hrefs = re.findall(r'href="([^"]*)"', page)
        assert not any(h.lower().lstrip().startswith("javascript:") for h in hrefs), hrefs
        assert "/runs/javascript%3Aalert%283%29%2F%2F" in page
        assert _script_srcs(page) == []
    finally:
        published.manifest.write_bytes(original)


def test_a_manifest_edited_into_nonsense_shows_an_error_not_a_crash(published):
    """Values of the wrong JSON type (hand-edited since it was published): the page
    says it cannot show the manifest, without quoting it; the raw JSON stays served."""
    af = published.airflow
    original = published.manifest.read_bytes()
    doc = published.doc
    entry = doc["splits"][_seeded(doc, 1)]
    entry["shards"][0]["num_records"] = "secret-text"
    entry["class_counts"] = ["secret-list"]
    try:
        published.manifest.write_text(json.dumps(doc))
        r = af.request(f"/ssl-splits/?{_q(run_id=published.run_id)}")
        assert r.status == 200, r.text[:500]
        assert "Cannot show the manifest published at" in r.text
        assert "secret" not in r.text
        raw = af.request(f"/ssl-splits/api/manifest?{_q(run_id=published.run_id)}")
        assert raw.status == 200 and raw.json()["splits"] == doc["splits"]
    finally:
        published.manifest.write_bytes(original)


# --------------------------------------------------------------------------- under a path


@pytest.fixture(scope="module")
def airflow_under_a_path(tmp_path_factory) -> Iterator[Airflow]:
    """Airflow whose ``[api] base_url`` has a path (``/airflow``), no run."""
    base = tmp_path_factory.mktemp("ui-security-base")
    af = Airflow(migrated_home(base / "airflow"), base / "airflow-logs")
    af.url = f"{af.url}/airflow"  # the REST API and the token are under it too
    af.env["AIRFLOW__API__BASE_URL"] = af.url
    af.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{af.url}/execution/"
    af.start()
    try:
        af.wait_ready(timeout=240)
        yield af
    finally:
        af.stop()


def test_under_a_base_path_the_urls_come_from_the_configuration(airflow_under_a_path):
    af = airflow_under_a_path
    link = _q(prefill="add-seeds", from_run="manual__x")
    conf = _q(conf=json.dumps({"seeds": [9]}))
    for query in (link, conf):
        for target in (
            f"{PAGE}?{query}",  # not under the configured base
            f"/evil{PAGE}?{query}",
            f"//evil.example/airflow{PAGE}?{query}",
            f"/airflow//evil.example{PAGE}?{query}",
            f"/airflow/x{PAGE}?{query}",
            f"/airflow%2Fdags%2F{DAG_ID}?{query}",
        ):
            r = af.request(target)
            srcs = _script_srcs(r.text)
            assert not any("evil" in s or s.startswith("//") for s in srcs), (target, srcs)
            assert not any("airflow-nav" in s for s in srcs), (target, srcs)
    # The exact page under the base: the nav script at the configured URL, served there.
    exact = af.request(f"/airflow{PAGE}?{link}")
    assert exact.status == 200, exact.text[:300]
    nav = [s for s in _script_srcs(exact.text) if "airflow-nav" in s]
    assert nav == [f"/airflow{NAV_SCRIPT}"], _script_srcs(exact.text)
    assert af.request(f"/airflow{NAV_SCRIPT}").status == 200
    # The view's own links start with the configured base.
    page = af.request("/airflow/ssl-splits/")
    assert page.status == 200, page.text[:300]
    assert 'script.src = "/airflow/ssl-splits/static/airflow-nav.js";' in page.text
    hrefs = re.findall(r'href="([^"]*)"', page.text)
    assert all(h.startswith(("/airflow/", "#")) for h in hrefs), hrefs
