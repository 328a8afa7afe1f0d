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


RUN = "manual__2026-11-30T21:48:41+00:00"


def test_a_link_names_only_the_run_and_the_split():
    from ssl_splits.prefill import (
        ADD_SEEDS,
        REBUILD,
        PrefillRequest,
        parse_prefill_query,
        request_of_page,
        run_url,
        trigger_url,
    )

    rebuild = PrefillRequest(REBUILD, RUN, "train29.1")
    url = trigger_url(rebuild, ui_base="/airflow")
    assert url == (
        "/airflow/dags/ssl_imagenet_splits?prefill=rebuild"
        "&from_run=manual__2026-11-30T21%3A48%3A41%2B00%3A00&split=train29.1"
    )
    assert request_of_page("http://h:8080" + url, ui_base="/airflow") == rebuild
    add = PrefillRequest(ADD_SEEDS, RUN)
    assert request_of_page(trigger_url(add)) == add and "&split=" not in trigger_url(add)
    query = url.split("?")[1]
    # Only the DAG's page, exactly, under the configured base.
    for page in (
        f"http://h/airflow/dags/other_dag?{query}",
        f"http://h/airflow/dags/ssl_imagenet_splits/runs/r?{query}",
        f"http://h/dags/ssl_imagenet_splits?{query}",  # not under the base
        f"http://h/evil/airflow/dags/ssl_imagenet_splits?{query}",
        f"http://h/airflow/dags/ssl_imagenet_splits/?{query}",
        None,
    ):
        assert request_of_page(page, ui_base="/airflow") is None, page
    # A conf in the URL is not read: alone it is no request, beside one it is ignored.
    conf = urllib.parse.urlencode({"conf": json.dumps({"output_uri": "gs://prod", "force": True})})
    assert parse_prefill_query(conf) is None
    assert parse_prefill_query(f"{conf}&{query}") == rebuild
    for bad in (
        "prefill=rebuild&from_run=r",  # a rebuild names its split
        "prefill=add-seeds&from_run=r&split=s",  # new seeds name none
        "prefill=delete&from_run=r",
        "prefill=rebuild&split=s",
        "prefill=rebuild&from_run=&split=s",
        "prefill=rebuild&from_run=a&from_run=b&split=s",  # given twice
        "prefill=rebuild&from_run=r%0A&split=s",  # not printable
        "prefill=add-seeds&from_run=" + "r" * 251,
        "",
    ):
        assert parse_prefill_query(bad) is None, bad
    assert run_url(RUN) == (
        "/dags/ssl_imagenet_splits/runs/manual__2026-11-30T21%3A48%3A41%2B00%3A00"
    )
    assert (
        run_url("javascript:alert(1)//")
        == "/dags/ssl_imagenet_splits/runs/javascript%3Aalert%281%29%2F%2F"
    )


@pytest.mark.parametrize(
    "base_url, base",
    [
        ("", ""),
        ("http://h:8080", ""),
        ("http://h:8080/", ""),
        ("https://h/airflow/", "/airflow"),
        ("https://h/a/b", "/a/b"),
        ("https://h//evil.example/x", "/evil.example/x"),  # never "//host"
        ("https://h/a/../b/./c", "/a/b/c"),
        ('https://h/a"b<c>', "/a%22b%3Cc%3E"),
    ],
)
def test_the_ui_base_comes_from_base_url_as_a_plain_path(base_url, base):
    from ssl_splits.prefill import dag_page_path, ui_base_path

    assert ui_base_path(base_url) == base
    assert dag_page_path(base) == f"{base}/dags/ssl_imagenet_splits"


def test_prefill_conf_takes_the_runs_settings_and_the_manifest():
    from ssl_splits.prefill import (
        ADD_SEEDS,
        REBUILD,
        PrefillRequest,
        add_seeds_conf,
        prefill_conf,
        rebuild_conf,
    )

    run_conf = {
        "source_uri": "/elsewhere",  # what to build: from the manifest, not the run
        "output_uri": "/other",
        "seeds": [1, 2, 3],
        "force": False,
        "direct_num_workers": 1,  # how it ran: kept
        "dataflow_region": "europe-west4",
        "deep_verify": None,
    }
    doc = _doc()
    conf = prefill_conf(
        PrefillRequest(REBUILD, RUN, "train29.2"), run_conf, doc, "/o/manifest.json"
    )
    assert conf == {
        **rebuild_conf(doc, "train29.2", "/o/manifest.json"),
        "direct_num_workers": 1,
        "dataflow_region": "europe-west4",
    }
    assert conf["output_uri"] == "/o" and conf["seeds"] == [2] and conf["force"] is True
    add = prefill_conf(PrefillRequest(ADD_SEEDS, RUN), None, doc, "/o/manifest.json")
    assert add == add_seeds_conf(doc, "/o/manifest.json")
    # Not a seeded split of that manifest: nothing (the form keeps the DAG's defaults).
    for split in ("train", "validation", "train29.3", '"><script>'):
        assert prefill_conf(PrefillRequest(REBUILD, RUN, split), run_conf, doc, "/o/m.json") is None
    assert prefill_conf(PrefillRequest("other", RUN), run_conf, doc, "/o/m.json") is None


@pytest.mark.parametrize(
    "uri, normal",
    [
        ("gs://b/ssl/manifest.json", "gs://b/ssl/manifest.json"),
        (" /data/ssl//manifest.json ", "/data/ssl/manifest.json"),
        ("/data/./ssl/manifest.json", "/data/ssl/manifest.json"),
        ("gs://b//ssl/manifest.json", "gs://b/ssl/manifest.json"),
        ("/data/../etc/x.json", None),
        ("/data/ssl/..", None),
        ("gs://b/../x.json", None),
        ("gs://b", None),
        ("gs://", None),
        ("gs:///x.json", None),
        ("relative/manifest.json", None),
        ("file:///etc/x.json", None),
        ("http://h/manifest.json", None),
        ("/data\\..\\x.json", None),
        ("/data/x.json\x00", None),
        ("", None),
        (None, None),
    ],
)
def test_manifest_uris_are_compared_normalised(uri, normal):
    import ssl_splits_ui as ui

    assert ui.normalize_manifest_uri(uri) == normal


def test_only_a_published_uri_is_selected_and_as_recorded():
    import ssl_splits_ui as ui

    published = ["gs://b/ssl/manifest.json", "/data/ssl/manifest.json"]
    assert ui.select_published("gs://b/ssl/manifest.json", published) == published[0]
    assert ui.select_published("/data//ssl/./manifest.json", published) == published[1]
    for other in (
        "gs://other/ssl/manifest.json",  # another bucket
        "gs://b/ssl2/manifest.json",  # another folder
        "/tmp/secret.json",  # a local JSON file
        "/data/ssl/../ssl/manifest.json",  # ".." is refused, even where it would resolve
        "/data/x/../../etc/passwd.json",
        "/data%2Fssl%2Fmanifest.json",  # still encoded: not a path of it
        "gs://b/ssl/manifest.json/..",
        "",
        None,
    ):
        assert ui.select_published(other, published) is None, other
    assert ui.select_published("/data/ssl/manifest.json", []) is None


def test_exact_path_compares_the_raw_path():
    import ssl_splits_ui as ui

    page = "/dags/ssl_imagenet_splits"
    assert ui.exact_path({"path": page, "raw_path": page.encode()}, page)
    assert ui.exact_path({"path": page}, page)  # a server that gives no raw path
    for path, raw in (
        ("//evil.example/dags/ssl_imagenet_splits", b"//evil.example/dags/ssl_imagenet_splits"),
        ("/evil/dags/ssl_imagenet_splits", b"/evil/dags/ssl_imagenet_splits"),
        ("/dags/ssl_imagenet_splits", b"/dags%2Fssl_imagenet_splits"),  # an encoded slash
        ("/dags/ssl_imagenet_splits", b"/dags/ssl_imagenet_spl%69ts"),
        ("/dags/ssl_imagenet_splits/", b"/dags/ssl_imagenet_splits/"),
    ):
        assert not ui.exact_path({"path": path, "raw_path": raw}, page), raw


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
            Route("/{rest:path}", ui_page),  # the UI's single page, at any path
        ]
    )
    app.add_middleware(GZipMiddleware, minimum_size=100)
    return app


def _lookup(calls):
    """The middleware's lookup of a link's values, over a fixed state: run RUN published
    ``_doc()`` at /o/manifest.json with ``{"direct_num_workers": 1}`` as its conf (the
    real one reads Airflow's DB: tests/airflow/test_ui_security.py)."""
    from ssl_splits.prefill import prefill_conf

    def lookup(request):
        calls.append(request)
        if request.run_id != RUN:
            return None
        return prefill_conf(request, {"direct_num_workers": 1}, _doc(), "/o/manifest.json")

    return lookup


def test_the_middleware_prefills_the_details_from_the_links_run_only():
    import ssl_splits_ui as ui
    from ssl_splits.prefill import ADD_SEEDS, REBUILD, PrefillRequest, trigger_url
    from starlette.testclient import TestClient

    calls = []
    client = TestClient(ui.PrefillMiddleware(_details_app(), base_url="", lookup=_lookup(calls)))
    details = "/api/v2/dags/ssl_imagenet_splits/details"
    page = "http://testserver" + trigger_url(PrefillRequest(REBUILD, RUN, "train29.2"))
    r = client.get(details, headers={"Referer": page, "Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers.get("content-encoding") is None
    assert int(r.headers["content-length"]) == len(r.content)
    params = r.json()["params"]
    assert params["seeds"]["value"] == [2] and params["source_uri"]["value"] == "/src/imagenet"
    assert calls == [PrefillRequest(REBUILD, RUN, "train29.2")]
    add = client.get(
        details,
        headers={"Referer": "http://testserver" + trigger_url(PrefillRequest(ADD_SEEDS, RUN))},
    )
    assert add.json()["params"]["seeds"]["value"] == [5]

    # A conf in the link, an unknown run, a split that is not seeded, a page that is
    # not exactly the DAG's: Airflow's response as it was (compressed), and nothing
    # of the request in it.
    conf = urllib.parse.urlencode({"conf": json.dumps({"seeds": [9], "source_uri": "gs://prod"})})
    for referer in (
        None,
        "http://testserver/dags/ssl_imagenet_splits",
        f"http://testserver/dags/ssl_imagenet_splits?{conf}",
        "http://testserver" + trigger_url(PrefillRequest(REBUILD, "manual__nope", "train29.2")),
        "http://testserver" + trigger_url(PrefillRequest(REBUILD, RUN, "train")),
        "http://testserver" + trigger_url(PrefillRequest(REBUILD, RUN, "<script>x</script>")),
        "http://testserver/evil" + trigger_url(PrefillRequest(REBUILD, RUN, "train29.2")),
        "http://testserver/dags/ssl_imagenet_splits/details?prefill=add-seeds&from_run=" + RUN,
    ):
        headers = {"Accept-Encoding": "gzip"} | ({"Referer": referer} if referer else {})
        raw = client.get(details, headers=headers)
        assert raw.json()["params"]["seeds"]["value"] == [1, 2, 3, 4, 5], referer
        assert raw.json()["params"]["source_uri"]["value"] is None, referer
        assert "gs://prod" not in raw.text and "<script" not in raw.text and "nope" not in raw.text
    # The details under another path (a suffix match would take them): untouched, no lookup.
    calls.clear()
    for path in ("/x" + details, "/api/v2/dags/ssl_imagenet_splits/details/"):
        client.get(path, headers={"Referer": page}, follow_redirects=False)
    other = client.get("/api/v2/dags/other/details", headers={"Referer": page})
    assert other.status_code == 404 and other.json() == {"detail": "not found"}
    assert calls == []


def test_the_middleware_adds_the_configured_opener_to_the_exact_dag_page():
    import ssl_splits_ui as ui
    from ssl_splits.prefill import ADD_SEEDS, REBUILD, PrefillRequest, trigger_url
    from starlette.testclient import TestClient

    link = trigger_url(PrefillRequest(REBUILD, RUN, "train29.2"))
    query = link.split("?")[1]
    client = TestClient(ui.PrefillMiddleware(_details_app(), base_url="http://h:8080/"))
    r = client.get(link, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    tag = '<script src="/ssl-splits/static/airflow-nav.js" data-open="trigger"></script></head>'
    assert r.text.count("<script") == 1 and tag in r.text
    assert client.get(trigger_url(PrefillRequest(ADD_SEEDS, RUN))).text.count("<script") == 1
    # Under a path prefix (Airflow's base_url), the script is found under it too: the
    # configured one, whatever the request's path.
    based = TestClient(ui.PrefillMiddleware(_details_app(), base_url="http://h/airflow/x/"))
    r = based.get(trigger_url(PrefillRequest(REBUILD, RUN, "s"), ui_base="/airflow/x"))
    assert 'src="/airflow/x/ssl-splits/static/airflow-nav.js"' in r.text
    # Not the DAG's page under the configured base exactly, no request or a conf: as
    # they were (the app serves its page for every one of these paths).
    conf = urllib.parse.urlencode({"conf": "{}"})
    for raw in (
        "/dags/ssl_imagenet_splits",
        f"/dags/ssl_imagenet_splits?{conf}",
        "/dags/other?" + query,
        "/dags/ssl_imagenet_splits/runs/r?" + query,
        "/dags/ssl_imagenet_splits?prefill=rebuild&from_run=r",
        "/airflow/x/dags/ssl_imagenet_splits?" + query,  # a base that is not configured
    ):
        r = client.get(raw, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200, raw
        assert "<script" not in r.text and r.headers.get("content-encoding") == "gzip", raw
    for raw in ("/dags/ssl_imagenet_splits?" + query, "/x/dags/ssl_imagenet_splits?" + query):
        r = based.get(raw)
        assert r.status_code == 200 and "<script" not in r.text, raw
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
    from ssl_splits.form import params

    param = params()["seeds"]
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_the_form_shows_seeds_as_a_text_box_one_per_line():
    """Airflow 3.3's form picks the widget from the schema: an array whose items have
    no single "type" (and no examples/enum) is a text box, one value per line."""
    from ssl_splits.form import params

    schema = params()["seeds"].schema
    assert schema["type"] == "array" and "type" not in schema["items"]
    assert "examples" not in schema and "enum" not in schema
    assert "one seed per line" in params()["seeds"].description


# --------------------------------------------------------------------------- the view


def test_the_view_offers_rebuild_and_add_seeds_naming_its_run_and_links_to_runs():
    import html as html_lib

    import ssl_splits_ui as ui
    from ssl_splits.prefill import ADD_SEEDS, REBUILD, PrefillRequest, parse_prefill_query

    active = [
        {
            "run_id": "manual__now",
            "state": "running",
            "since": "2026-11-30 22:00:00",
            "conf": {"output_uri": "/o", "seeds": ["2"]},
        }
    ]
    published_by = "manual__2026-12-01T10:00:00+00:00"
    page = ui.render_page(uri="/o/manifest.json", run_id=published_by, doc=_doc(), active=active)
    rows = dict(re.findall(r'<tr data-split="([^"]+)">(.*?)</tr>', page, re.S))
    rebuild = re.findall(r'data-testid="rebuild" href="([^"]+)"', page)
    assert len(rebuild) == 3  # the seeded splits; not the reshuffle or the validation copy
    for name in ("train29.1", "train29.2", "train29.4"):
        href = html_lib.unescape(re.search(r'data-testid="rebuild" href="([^"]+)"', rows[name])[1])
        path, query = href.split("?")
        assert path == "/dags/ssl_imagenet_splits"
        assert parse_prefill_query(query) == PrefillRequest(REBUILD, published_by, name)
        assert set(urllib.parse.parse_qs(query)) == {"prefill", "from_run", "split"}  # no values
        assert "2026-11-30 21:50:00" in rows[name]  # the build time, to the second
        assert (
            "/dags/ssl_imagenet_splits/runs/manual__2026-11-30T21%3A48%3A41%2B00%3A00" in rows[name]
        )
    assert "rebuilding" in rows["train29.2"] and "rebuilding" not in rows["train29.1"]
    assert 'data-testid="rebuild"' not in rows["train"] + rows["validation"]
    add = html_lib.unescape(re.search(r'data-testid="add-seeds" href="([^"]+)"', page)[1])
    assert parse_prefill_query(add.split("?")[1]) == PrefillRequest(ADD_SEEDS, published_by)
    assert "seed 5 beside" in page  # the next seed, named in the link's title
    running = re.search(r'data-testid="active-run">(.*?)</div>', page, re.S).group(1)
    assert "/dags/ssl_imagenet_splits/runs/manual__now" in running and "seeds 2" in running
    raw = html_lib.unescape(re.search(r'id="raw-json" href="([^"]+)"', page)[1])
    assert raw == "/ssl-splits/api/manifest?run_id=manual__2026-12-01T10%3A00%3A00%2B00%3A00"
    # Without the run that published it, no action (nothing to look the values up from).
    bare = ui.render_page(uri="/o/manifest.json", doc=_doc())
    assert 'data-testid="rebuild"' not in bare and 'data-testid="add-seeds"' not in bare


def test_every_url_in_the_page_starts_with_the_configured_base_and_values_are_escaped():
    import html as html_lib

    import ssl_splits_ui as ui

    doc = _doc()
    evil_run = 'javascript:alert(1)//"><script>alert(2)</script>'
    doc["source"]["uri"] = '/src/"><script>alert(3)</script>'
    doc["output_uri"] = "/o'\"onmouseover=alert(4)"
    doc["splits"]["train29.1"]["provenance"]["run_id"] = evil_run
    doc["splits"]['x"><svg onload=alert(5)>'] = {**doc["splits"]["train29.2"], "seed": 7}
    doc["splits"]["train29.2"]["provenance"] = {
        **doc["splits"]["train29.2"]["provenance"],
        "dag_id": "javascript:alert(6)",
        "bytes_read": "<b>many</b>",
    }
    doc["splits"]["train29.4"]["class_counts"] = {"</title><script>alert(7)</script>": 3}
    recent = [{"uri": "/o/manifest.json", "run_id": evil_run, "published_at": "", "changed": []}]
    active = [
        {"run_id": evil_run, "state": "running", "since": "", "conf": {"seeds": ["<i>1</i>"]}}
    ]
    page = ui.render_page(
        uri="/o/manifest.json",
        run_id=evil_run,
        doc=doc,
        recent=recent,
        active=active,
        ui_base="/airflow",
        error="<b>not bold</b>",
    )
    assert "<script>alert" not in page and "<svg onload" not in page and "<b>not" not in page
    assert "<b>many" not in page
    assert "<i>1</i>" not in page and '"onmouseover' not in page
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page
    hrefs = [html_lib.unescape(h) for h in re.findall(r'href="([^"]*)"', page)]
    assert hrefs and all(h.startswith(("/airflow/", "#split-")) for h in hrefs), hrefs
    for h in hrefs:  # a run id in a URL is quoted: no scheme, no quote, no angle bracket
        assert not re.search(r"[\s\"'<>]", h), h
    inline = page.rsplit("<script>", 1)[1]
    assert 'script.src = "/airflow/ssl-splits/static/airflow-nav.js";' in inline
    assert re.findall(r"<script\b[^>]*\bsrc=", page) == []  # the page itself loads no script


def test_histogram_bins_cover_the_range_exactly():
    import ssl_splits_ui as ui

    assert ui.histogram([]) == []
    assert ui.histogram([5, 5, 7]) == [(5, 5, 2), (6, 6, 0), (7, 7, 1)]  # one bin per value
    bins = ui.histogram(list(range(73, 131)) + [130] * 300, bins=10)  # 58 values: width 6
    assert len(bins) == 10 and bins[0][:2] == (73, 78) and bins[-1][:2] == (127, 130)
    assert sum(c for _, _, c in bins) == 58 + 300 and bins[-1][2] == 4 + 300
    fewest, most = ui.extremes({"b": 1, "a": 1, "c": 9, "d": 5})
    assert fewest == [("a", 1), ("b", 1), ("d", 5)] and most == [("c", 9), ("d", 5), ("a", 1)]
