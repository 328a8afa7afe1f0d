"""The Splits view's actions without a browser: the pre-filled trigger forms
(plugins/ssl_splits/prefill.py), the middleware that fills the form
(ssl_splits_ui.PrefillMiddleware), the seeds param as the form's text box sends
it (config.parse_seeds and the param's JSON schema), and the view's charts at
ImageNet's size.

The browser test (test_ui_browser.py) runs the same through a real Airflow.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import urllib.parse

import pytest


def _doc(**over):
    """A manifest as the DAG publishes it: seeds 1, 2 and 4, the reshuffle and the
    validation copy, from a 10-class source."""

    def split(seed, **extra):
        return {
            "kind": "supervised",
            "seed": seed,
            "fraction": "0.1",
            "sampling": "stratified",
            "num_examples": 29,
            "num_shards": 1,
            "file_pattern": f"/o/train29.{seed}-*",
            "plan": {"uri": "/o/_work/plans/p.csv", "sha256": "a" * 64, "source": "computed"},
            "provenance": {
                "runner": "DirectRunner",
                "dag_id": "ssl_imagenet_splits",
                "run_id": "manual__2026-11-30T21:48:41+00:00",
                "built_at": "2026-11-30T21:50:00.123+00:00",
            },
            **extra,
        }

    doc = {
        "schema_version": 1,
        "output_uri": "/o",
        "source": {"uri": "/src/imagenet", "num_records": 296, "num_shards": 4, "num_classes": 10},
        "splits": {
            "train29.1": split(1),
            "train29.2": split(2),
            "train29.4": split(4),
            "train": {
                "kind": "unsupervised",
                "seed": 0,
                "fraction": "1",
                "num_examples": 296,
                "num_shards": 4,
            },
            "validation": {"kind": "validation", "num_examples": 50, "num_shards": 2},
        },
    }
    doc.update(over)
    return doc


# --------------------------------------------------------------------------- prefill


def test_rebuild_builds_only_that_split_as_it_was_made():
    from ssl_splits.prefill import rebuild_conf

    conf = rebuild_conf(_doc(), "train29.2", "/o/manifest.json")
    assert conf == {
        "source_uri": "/src/imagenet",
        "output_uri": "/o",
        "unsupervised": False,
        "copy_validation": False,
        "num_classes": 10,
        "seeds": [2],
        "fraction": 0.1,
        "sampling": "stratified",
        "num_shards": 1,
        "force": True,
    }
    with pytest.raises(KeyError, match="train"):
        rebuild_conf(_doc(), "train", "/o/manifest.json")  # the reshuffle has no seed to rebuild


def test_rebuild_keeps_a_published_plan_file_another_manifest_and_the_runner():
    from ssl_splits.prefill import rebuild_conf

    doc = _doc()
    doc["splits"]["train29.4"]["plan"]["source"] = "gs://b/fixmatch/split4.txt"
    doc["splits"]["train29.4"]["sampling"] = "uniform"
    for e in doc["splits"].values():
        e.setdefault("provenance", {})["runner"] = "DataflowRunner"
    doc["source"]["num_classes"] = 1000  # the param's default: not repeated
    conf = rebuild_conf(doc, "train29.4", "gs://b/m/other.json")
    assert conf["sharding_files"] == {"4": "gs://b/fixmatch/split4.txt"}
    assert conf["manifest_uri"] == "gs://b/m/other.json" and conf["runner"] == "DataflowRunner"
    assert conf["sampling"] == "uniform" and "num_classes" not in conf


def test_add_seeds_takes_the_next_seed_and_what_most_splits_share():
    from ssl_splits.prefill import add_seeds_conf, next_seeds

    doc = _doc()
    doc["splits"]["train29.1"]["fraction"] = "0.01"
    assert next_seeds(doc) == [5] and next_seeds(doc, 2) == [5, 6]
    five = _doc()
    five["splits"].update(
        {f"train29.{i}": {**five["splits"]["train29.1"], "seed": i} for i in (3, 5)}
    )
    assert next_seeds(five) == [6]  # a sixth seed after FixMatch's five
    conf = add_seeds_conf(doc, "/o/manifest.json")
    assert conf["seeds"] == [5] and conf["fraction"] == 0.1 and conf["force"] is False
    assert conf["unsupervised"] is False and conf["copy_validation"] is False
    assert "num_shards" not in conf  # new splits get the default shard count
    # A manifest without seeded splits (or without a source) still gives a form to fill.
    bare = add_seeds_conf({"splits": {}}, "/x/manifest.json")
    assert bare["seeds"] == [1] and bare["source_uri"] is None and "fraction" not in bare


def test_the_link_carries_the_conf_and_the_middleware_reads_it_back():
    from ssl_splits.prefill import conf_of_page, rebuild_conf, run_url, trigger_url

    conf = rebuild_conf(_doc(), "train29.1", "/o/manifest.json")
    url = trigger_url(conf, ui_base="/airflow")
    assert url.startswith("/airflow/dags/ssl_imagenet_splits?conf=")
    assert conf_of_page("http://h:8080" + url) == conf
    assert conf_of_page(f"http://h/dags/other_dag?{url.split('?')[1]}") is None
    assert conf_of_page(f"http://h/dags/ssl_imagenet_splits/runs/r?{url.split('?')[1]}") is None
    assert conf_of_page("http://h/dags/ssl_imagenet_splits?conf=%5B1%5D") is None  # not an object
    assert conf_of_page("http://h/dags/ssl_imagenet_splits?conf=%7Bbad") is None
    assert conf_of_page(None) is None
    assert (
        run_url("manual__2026-11-30T21:48:41+00:00")
        == "/dags/ssl_imagenet_splits/runs/manual__2026-11-30T21%3A48%3A41%2B00%3A00"
    )


def test_apply_prefill_sets_only_the_dags_params():
    from ssl_splits.prefill import apply_prefill

    details = {
        "dag_id": "ssl_imagenet_splits",
        "params": {
            "seeds": {"value": [1, 2, 3, 4, 5], "schema": {"type": "array"}, "description": "d"},
            "force": {"value": False, "schema": {"type": "boolean"}, "description": None},
        },
    }
    before = copy.deepcopy(details)
    new, applied = apply_prefill(details, {"seeds": [3], "force": True, "not_a_param": 1})
    assert applied == ["seeds", "force"] and details == before  # the input is not changed
    assert new["params"]["seeds"] == {"value": [3], "schema": {"type": "array"}, "description": "d"}
    assert new["params"]["force"]["value"] is True and "not_a_param" not in new["params"]
    assert apply_prefill(details, {"other": 1}) == (details, [])
    assert apply_prefill({"params": None}, {"seeds": [1]}) == ({"params": None}, [])


# --------------------------------------------------------------------------- the middleware


def _details_app():
    """An ASGI app serving the DAG's details at Airflow's path, compressed like
    Airflow's API server (GZipMiddleware) when the client accepts it."""
    from starlette.applications import Starlette
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    details = {
        "dag_id": "ssl_imagenet_splits",
        "doc": "x" * 4000,
        "params": {
            "seeds": {"value": [1, 2, 3, 4, 5], "schema": {}, "description": None},
            "source_uri": {"value": None, "schema": {}, "description": None},
        },
    }

    async def endpoint(request):
        if request.path_params["dag_id"] != "ssl_imagenet_splits":
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(details)

    async def ui_page(request):  # the UI's index.html, whatever the route
        return HTMLResponse(
            '<!doctype html><html><head><base href="/"><title>Airflow</title>'
            '</head><body><div id="root"></div></body></html>' + " " * 2000
        )

    app = Starlette(
        routes=[
            Route("/api/v2/dags/{dag_id}/details", endpoint),
            Route("/dags/{rest:path}", ui_page),
            Route("/airflow/x/dags/{rest:path}", ui_page),
        ]
    )
    app.add_middleware(GZipMiddleware, minimum_size=100)
    return app


def test_the_middleware_prefills_the_details_a_dag_page_with_conf_asks_for():
    import ssl_splits_ui as ui
    from ssl_splits.prefill import trigger_url
    from starlette.testclient import TestClient

    client = TestClient(ui.PrefillMiddleware(_details_app()))
    page = "http://testserver" + trigger_url({"seeds": [3], "source_uri": "/src", "x": 1})
    r = client.get(
        "/api/v2/dags/ssl_imagenet_splits/details",
        headers={"Referer": page, "Accept-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers.get("content-encoding") is None
    assert int(r.headers["content-length"]) == len(r.content)
    params = r.json()["params"]
    assert params["seeds"]["value"] == [3] and params["source_uri"]["value"] == "/src"
    assert "x" not in params

    # Any other page, or no referer: Airflow's response as it was (compressed).
    for referer in (
        None,
        "http://testserver/dags/ssl_imagenet_splits",
        "http://testserver/dags/ssl_imagenet_splits/details?conf=%7B%7D",
    ):
        headers = {"Accept-Encoding": "gzip"} | ({"Referer": referer} if referer else {})
        raw = client.get("/api/v2/dags/ssl_imagenet_splits/details", headers=headers)
        assert raw.headers.get("content-encoding") == "gzip", referer
        assert raw.json()["params"]["seeds"]["value"] == [1, 2, 3, 4, 5]
    # Another DAG's details, an error: untouched.
    other = client.get("/api/v2/dags/other/details", headers={"Referer": page})
    assert other.status_code == 404 and other.json() == {"detail": "not found"}


def test_the_middleware_adds_the_form_opener_to_the_dag_page_with_conf():
    import ssl_splits_ui as ui
    from ssl_splits.prefill import trigger_url
    from starlette.testclient import TestClient

    client = TestClient(ui.PrefillMiddleware(_details_app()))
    r = client.get(trigger_url({"seeds": [3]}), headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    tag = '<script src="/ssl-splits/static/airflow-nav.js" data-open="trigger"></script></head>'
    assert r.text.count("<script") == 1 and tag in r.text
    # Under a path prefix (Airflow's base_url), the script is found under it too.
    r = client.get(trigger_url({"seeds": [3]}, ui_base="/airflow/x"))
    assert 'src="/airflow/x/ssl-splits/static/airflow-nav.js"' in r.text
    # The DAG page without conf, another DAG's page, a run's page: as they were.
    for path in (
        "/dags/ssl_imagenet_splits",
        "/dags/other?conf=%7B%7D",
        "/dags/ssl_imagenet_splits/runs/r?conf=%7B%7D",
        "/dags/ssl_imagenet_splits?conf=notjson",
    ):
        r = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert "<script" not in r.text and r.headers.get("content-encoding") == "gzip", path
    assert ui.with_opener(b"<html>no head</html>", "/x.js") == b"<html>no head</html>"


def test_the_plugin_registers_the_middleware():
    import ssl_splits_ui as ui

    (entry,) = ui.SslSplitsUIPlugin.fastapi_root_middlewares
    assert entry["middleware"] is ui.PrefillMiddleware


def test_a_gzipped_or_broken_body_is_passed_on_as_it_is():
    import ssl_splits_ui as ui

    ok = {"status": 200, "headers": [(b"content-type", b"application/json")]}
    assert ui._plain(ok)
    assert not ui._plain({**ok, "headers": ok["headers"] + [(b"content-encoding", b"gzip")]})
    assert not ui._plain({**ok, "status": 403})
    assert ui._prefilled(b"{not json", {"seeds": [1]}) == b"{not json"
    assert ui._prefilled(b"[1, 2]", {"seeds": [1]}) == b"[1, 2]"
    zipped = gzip.compress(b'{"params": {}}')
    assert ui._prefilled(zipped, {"seeds": [1]}) == zipped
    body = json.dumps({"params": {"seeds": {"value": [1]}}}).encode()
    assert json.loads(ui._prefilled(body, {"seeds": [2]}))["params"]["seeds"]["value"] == [2]


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize(
    "value, seeds",
    [
        ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),  # --conf, the REST API
        (["3"], [3]),  # the form's text box
        (["1", " 2 ", "", "10"], [1, 2, 10]),  # spaces, a blank line (a trailing newline)
        ([], []),
        ([""], []),
    ],
)
def test_seeds_from_the_form_become_integers(value, seeds):
    from ssl_splits.config import parse_seeds

    assert parse_seeds(value) == seeds


@pytest.mark.parametrize(
    "value, message",
    [
        (["3,4"], r"item 1 \('3,4'\) is not a seed number"),
        ([1, "x"], r"item 2 \('x'\) is not a seed number"),
        (["0"], r"between 1 and 1000000, got 0 \(item 1\)"),
        ([3, "3"], r"seed 3 is given twice"),
        ([True], r"item 1 is True"),
        ("3", r"must be a list of integers, got '3'"),
        (None, r"must be a list of integers, got None"),
        (["٣"], r"is not a seed number"),  # a digit, but not an ASCII one
    ],
)
def test_bad_seeds_are_named(value, message):
    from ssl_splits.config import ConfigError, parse_seeds

    with pytest.raises(ConfigError, match=message):
        parse_seeds(value)


@pytest.mark.parametrize(
    "value, ok",
    [
        ([1, 2, 3, 4, 5], True),
        (["3", "4", ""], True),
        ([" 12 "], True),
        ([], True),
        (["3,4"], False),
        (["x"], False),
        ([0], False),
        ([1, 1], False),
        ([1.5], False),
    ],
)
def test_the_seeds_schema_takes_the_form_text_box_and_json_integers(value, ok):
    """What Airflow checks when a run is triggered (before it exists): the param's
    JSON schema, through Airflow's own Param validation."""
    from airflow.sdk.exceptions import ParamValidationError
    from ssl_splits.config import params

    param = params()["seeds"]
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_the_form_shows_seeds_as_a_text_box_one_per_line():
    """Airflow 3.3's form picks the widget from the schema: an array whose items have
    no single "type" (and no examples/enum) is a text box, one value per line."""
    from ssl_splits.config import params

    schema = params()["seeds"].schema
    assert schema["type"] == "array" and "type" not in schema["items"]
    assert "examples" not in schema and "enum" not in schema
    assert "one seed per line" in params()["seeds"].description


# --------------------------------------------------------------------------- the view


def test_the_view_offers_rebuild_and_add_seeds_with_links_to_runs():
    import ssl_splits_ui as ui
    from ssl_splits.prefill import conf_of_page

    active = [
        {
            "run_id": "manual__now",
            "state": "running",
            "since": "2026-11-30 22:00:00",
            "conf": {"output_uri": "/o", "seeds": ["2"]},
        }
    ]
    page = ui.render_page(uri="/o/manifest.json", doc=_doc(), active=active)
    rows = dict(re.findall(r'<tr data-split="([^"]+)">(.*?)</tr>', page, re.S))
    rebuild = re.findall(r'data-testid="rebuild" href="([^"]+)"', page)
    assert len(rebuild) == 3  # the seeded splits; not the reshuffle or the validation copy
    for name, seed in (("train29.1", 1), ("train29.2", 2), ("train29.4", 4)):
        href = re.search(r'data-testid="rebuild" href="([^"]+)"', rows[name]).group(1)
        conf = conf_of_page("http://h" + href.replace("&amp;", "&"))
        assert conf["seeds"] == [seed] and conf["force"] is True, conf
        assert "2026-11-30 21:50:00" in rows[name]  # the build time, to the second
        assert (
            "/dags/ssl_imagenet_splits/runs/manual__2026-11-30T21%3A48%3A41%2B00%3A00" in rows[name]
        )
    assert "rebuilding" in rows["train29.2"] and "rebuilding" not in rows["train29.1"]
    assert 'data-testid="rebuild"' not in rows["train"] + rows["validation"]
    add = re.search(r'data-testid="add-seeds" href="([^"]+)"', page).group(1)
    assert conf_of_page("http://h" + add.replace("&amp;", "&"))["seeds"] == [5]
    running = re.search(r'data-testid="active-run">(.*?)</div>', page, re.S).group(1)
    assert "/dags/ssl_imagenet_splits/runs/manual__now" in running and "seeds 2" in running


def test_the_page_escapes_the_conf_in_its_links():
    import html as html_lib

    import ssl_splits_ui as ui

    doc = _doc()
    doc["source"]["uri"] = '/src/"><script>alert(1)</script>'
    page = ui.render_page(uri="/o/manifest.json", doc=doc)
    assert "<script>alert(1)" not in page
    href = re.search(r'data-testid="add-seeds" href="([^"]+)"', page).group(1)
    query = urllib.parse.urlsplit(html_lib.unescape(href)).query
    assert json.loads(urllib.parse.parse_qs(query)["conf"][0])["source_uri"] == doc["source"]["uri"]


def test_histogram_bins_cover_the_range_exactly():
    import ssl_splits_ui as ui

    assert ui.histogram([]) == []
    assert ui.histogram([5, 5, 7]) == [(5, 5, 2), (6, 6, 0), (7, 7, 1)]  # one bin per value
    bins = ui.histogram(list(range(73, 131)) + [130] * 300, bins=10)  # 58 values: width 6
    assert len(bins) == 10 and bins[0][:2] == (73, 78) and bins[-1][:2] == (127, 130)
    assert sum(c for _, _, c in bins) == 58 + 300 and bins[-1][2] == 4 + 300
    fewest, most = ui.extremes({"b": 1, "a": 1, "c": 9, "d": 5})
    assert fewest == [("a", 1), ("b", 1), ("d", 5)] and most == [("c", 9), ("d", 5), ("a", 1)]
