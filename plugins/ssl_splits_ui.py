"""Airflow UI plugin: the published manifest of ``ssl_imagenet_splits``, inside Airflow.

Wiring (Airflow 3 plugin mechanism):

* ``fastapi_apps``: a small FastAPI app mounted by the API server at
  ``/ssl-splits``:

  - ``GET /ssl-splits/?uri=<manifest>``: an HTML page with the manifest's
    splits, counts, shard sizes, each split's per-class counts as a bar chart
    (inline SVG, nothing loaded from the internet) and the source. Without
    ``uri``: the manifest of the latest run that published one (the
    ``manifest_uri`` in the extra of the DAG's asset event), else a form.
    ``?run_id=`` picks the manifest a given run published.
  - ``GET /ssl-splits/api/manifest?uri=...``: the manifest JSON.
  - ``GET /ssl-splits/api/recent``: recently published manifests.

  Every route but the icon needs the caller to be allowed to read the DAG
  (Airflow's own ``requires_access_dag``: the UI's session cookie or a bearer
  token). Reading ``gs://`` goes through ``beam_jobs.storage`` with the
  ``google_cloud_default`` connection (``ssl_splits.gcp.airflow_storage``).

* ``external_views``: a "Splits manifest" item in the UI's navigation that
  shows the page in an iframe at ``/plugin/ssl-splits`` (the iframe's own path
  follows in the browser's address bar, so a manifest view can be linked).

The FastAPI app is built on its first request: other Airflow processes load
plugins too (scheduler, workers) and import nothing heavy from here.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
import statistics
from typing import Any

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

DAG_ID = "ssl_imagenet_splits"
ASSET_NAME = "ssl_imagenet_splits_manifest"  # the DAG's Asset (dags/ssl_imagenet_splits.py)
URL_PREFIX = "/ssl-splits"
HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "ssl_splits_ui", "templates")
STATIC = os.path.join(HERE, "ssl_splits_ui", "static")
MAX_SHARD_ROWS = 200  # per split in the shard table; the chart shows every shard


# --------------------------------------------------------------------------- pure helpers


def size(n: float | None) -> str:
    """Bytes, human readable (decimal units, as ``gsutil du -h`` shows them)."""
    if n is None:
        return "–"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"  # pragma: no cover


def check_manifest_uri(uri: str) -> str:
    """Only manifests: a gs:// URI or an absolute path of a ``.json`` file."""
    uri = (uri or "").strip()
    if not uri:
        raise ValueError("give the manifest's URI (gs://bucket/path/manifest.json or a local path)")
    if not uri.startswith(("gs://", "/")):
        raise ValueError(f"{uri!r}: a manifest URI is gs://bucket/path/... or an absolute path")
    if not uri.endswith(".json") or "/../" in uri or uri.endswith("/.."):
        raise ValueError(f"{uri!r}: a manifest is a .json file (e.g. {{output_uri}}/manifest.json)")
    return uri


def bar_chart(values: list[float], titles: list[str], *, height: int = 120,
              color: str = "#017cee", label: str = "") -> str:
    """An inline SVG bar chart (one bar per value, a dashed line at the mean).

    The SVG stretches to the page's width; every bar has a tooltip (``titles``).
    """
    n = len(values)
    if not n:
        return '<p class="muted">nothing to chart</p>'
    width = max(n, 300)
    top = max(values) or 1
    bw = width / n
    gap = bw * 0.15 if bw >= 3 and n > 1 else 0
    bars = []
    for i, (v, t) in enumerate(zip(values, titles)):
        h = max(v / top * (height - 4), 1 if v else 0)
        bars.append(f'<rect x="{i * bw:.3f}" y="{height - h:.3f}" width="{max(bw - gap, 0.5):.3f}" '
                    f'height="{h:.3f}"><title>{html.escape(t)}</title></rect>')
    mean = sum(values) / n
    y = height - mean / top * (height - 4)
    return (
        f'<svg class="chart" role="img" aria-label="{html.escape(label)}" viewBox="0 0 {width} '
        f'{height}" preserveAspectRatio="none" width="100%" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><g fill="{color}">{"".join(bars)}</g>'
        f'<line x1="0" x2="{width}" y1="{y:.3f}" y2="{y:.3f}" stroke="#c2410c" '
        f'stroke-width="1" stroke-dasharray="4 3" vector-effect="non-scaling-stroke">'
        f'<title>mean {mean:,.1f}</title></line></svg>'
    )


def spread(values: list[int]) -> str:
    """``min..max (mean m)`` or the single value when all are equal."""
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    if lo == hi:
        return f"{lo:,} each"
    return f"{lo:,}..{hi:,} (mean {statistics.fmean(values):,.1f})"


def size_spread(sizes: list[int]) -> str:
    if not sizes:
        return "–"
    lo, hi = min(sizes), max(sizes)
    return f"{size(lo)} each" if lo == hi else f"{size(lo)}..{size(hi)}"


def split_view(name: str, e: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one split (pure: a manifest entry in, strings out)."""
    shards = e.get("shards") or []
    records = [int(s.get("num_records") or 0) for s in shards]
    sizes = [int(s.get("num_bytes") or 0) for s in shards]
    counts = e.get("class_counts") or {}
    keys = sorted(counts)
    class_values = [int(counts[k]) for k in keys]
    prov = e.get("provenance") or {}
    ver = e.get("verification") or {}
    plan = e.get("plan") or {}
    return {
        "name": name,
        "anchor": "split-" + "".join(c if c.isalnum() else "-" for c in name),
        "kind": e.get("kind", ""),
        "seed": e.get("seed"),
        "fraction": e.get("fraction"),
        "sampling": e.get("sampling"),
        "num_examples": int(e.get("num_examples") or 0),
        "num_shards": int(e.get("num_shards") or len(shards)),
        "bytes": sum(sizes),
        "size": size(sum(sizes)),
        "file_pattern": e.get("file_pattern", ""),
        "records_spread": spread(records),
        "bytes_spread": size_spread(sizes),
        "shard_chart": bar_chart(
            [float(r) for r in records],
            [f"{os.path.basename(s.get('path', ''))}: {r:,} records, {size(b)}"
             for s, r, b in zip(shards, records, sizes)],
            label=f"records per shard of {name}"),
        "num_classes": len(keys),
        "class_spread": spread(class_values),
        "class_chart": bar_chart(
            [float(v) for v in class_values], [f"{k}: {v:,}" for k, v in zip(keys, class_values)],
            color="#0f766e", label=f"examples per class in {name}") if keys else "",
        "first_class": keys[0] if keys else "",
        "last_class": keys[-1] if keys else "",
        "shards": [{"name": os.path.basename(s.get("path", "")), "path": s.get("path", ""),
                    "num_records": int(s.get("num_records") or 0),
                    "size": size(s.get("num_bytes")), "crc32c": s.get("crc32c", "")}
                   for s in shards[:MAX_SHARD_ROWS]],
        "more_shards": max(0, len(shards) - MAX_SHARD_ROWS),
        "plan": plan,
        "plan_sha": (plan.get("sha256") or "")[:16],
        "verification": ver,
        "provenance": prov,
        "copied_from": e.get("copied_from"),
    }


def manifest_view(doc: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a manifest."""
    splits = [split_view(n, e) for n, e in (doc.get("splits") or {}).items()]
    src = doc.get("source") or {}
    files = src.get("files") or []
    return {
        "splits": splits,
        "total_examples": sum(s["num_examples"] for s in splits),
        "total_shards": sum(s["num_shards"] for s in splits),
        "total_size": size(sum(s["bytes"] for s in splits)),
        "source": src,
        "source_size": size(sum(int(f.get("size") or 0) for f in files)) if files else "–",
        "source_files": len(files),
        "provenance": doc.get("provenance") or {},
        "output_uri": doc.get("output_uri", ""),
        "updated_at": doc.get("updated_at", ""),
        "schema_version": doc.get("schema_version"),
    }


# --------------------------------------------------------------------------- Airflow side


def recent_manifests(limit: int = 10) -> list[dict[str, Any]]:
    """Manifests the DAG published, newest first, one entry per manifest URI:
    from the ``manifest_uri`` in the extra of the DAG's asset events."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra, AssetEvent.source_run_id, AssetEvent.timestamp)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == ASSET_NAME)
            .order_by(AssetEvent.timestamp.desc())
            .limit(200)
        ).all()
    for extra, run_id, ts in rows:
        uri = (extra or {}).get("manifest_uri")
        if uri and uri not in out:
            out[uri] = {"uri": uri, "run_id": run_id, "changed": (extra or {}).get("changed") or [],
                        "published_at": ts.isoformat(timespec="seconds") if ts else ""}
        if len(out) >= limit:
            break
    return list(out.values())


def manifest_of_run(run_id: str) -> str | None:
    """The manifest a run published (its publish_manifest task's return value)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.execute(
            select(XComModel.value).where(
                XComModel.dag_id == DAG_ID, XComModel.run_id == run_id,
                XComModel.task_id == "publish_manifest", XComModel.key == "return_value")
        ).scalar()
    if value is None:
        return None
    try:
        value = json.loads(value) if isinstance(value, (str, bytes)) else value
    except ValueError:
        return None
    return value.get("manifest_uri") if isinstance(value, dict) else None


def read_manifest(uri: str) -> dict[str, Any]:
    """Load a manifest through beam_jobs.storage (gs:// with the Airflow connection)."""
    from ssl_splits.gcp import airflow_storage

    from beam_jobs.manifest import load

    with airflow_storage():
        return load(check_manifest_uri(uri))


_PAGE = None


def render_page(*, uri: str = "", doc: dict[str, Any] | None = None, error: str | None = None,
                note: str | None = None, recent: list[dict[str, Any]] | None = None) -> str:
    """The HTML page (Jinja2, autoescaped: manifest values are never markup)."""
    global _PAGE
    if _PAGE is None:
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                 autoescape=jinja2.select_autoescape(["html"]))
        env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, (int, float)) else (v or "–")
        _PAGE = env.get_template("manifest.html")
    return _PAGE.render(
        uri=uri or "", error=error, note=note, recent=recent or [], dag_id=DAG_ID,
        view=manifest_view(doc) if doc else None, prefix=URL_PREFIX,
        now=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def create_app():  # -> fastapi.FastAPI
    """The plugin's FastAPI app (built in the API server, on first use)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Query
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    can_read_dag = [Depends(requires_access_dag("GET", param_dag_id=DAG_ID))]
    app = FastAPI(title="SSL ImageNet splits: manifest view", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/", response_class=HTMLResponse, dependencies=can_read_dag)
    def view(uri: str | None = Query(None), run_id: str | None = Query(None)) -> HTMLResponse:
        error = note = None
        doc = None
        try:
            recent = recent_manifests()
        except Exception as err:  # noqa: BLE001 (the page still works with a URI)
            log.warning("could not list published manifests: %s", err)
            recent = []
        if not uri and run_id:
            uri = manifest_of_run(run_id)
            if not uri:
                error = f"run {run_id} of {DAG_ID} published no manifest (yet)"
        if not uri and recent and not error:
            uri = recent[0]["uri"]
            note = (f"The latest published manifest (run {recent[0]['run_id']}, "
                    f"{recent[0]['published_at']}).")
        if uri and not error:
            try:
                doc = read_manifest(uri)
            except Exception as err:  # noqa: BLE001 (shown on the page)
                error = f"cannot show {uri}: {err}"
        elif not uri and not error:
            note = (f"No manifest published yet: trigger {DAG_ID}, or enter the URI of a "
                    "manifest.")
        return HTMLResponse(render_page(uri=uri or "", doc=doc, error=error, note=note,
                                        recent=recent))

    @app.get("/api/manifest", dependencies=can_read_dag)
    def manifest_json(uri: str = Query(...)) -> JSONResponse:
        try:
            return JSONResponse(read_manifest(uri))
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        except Exception as err:  # noqa: BLE001 (ManifestError, storage errors)
            raise HTTPException(404, str(err)) from None

    @app.get("/api/recent", dependencies=can_read_dag)
    def recent_json() -> JSONResponse:
        return JSONResponse(recent_manifests())

    @app.get("/static/icon.svg", include_in_schema=False)
    def icon() -> FileResponse:
        return FileResponse(os.path.join(STATIC, "icon.svg"), media_type="image/svg+xml")

    return app


class LazyASGIApp:
    """An ASGI app that builds the real one on its first request."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


class SslSplitsUIPlugin(AirflowPlugin):
    name = "ssl_splits_ui"
    fastapi_apps = [{
        "app": LazyASGIApp(create_app),
        "url_prefix": URL_PREFIX,
        "name": "SSL splits manifest view",
    }]
    external_views = [{
        "name": "Splits",  # the nav shows about 8 characters
        "href": f"{URL_PREFIX}/",
        "url_route": "ssl-splits",
        "destination": "nav",
        "icon": f"{URL_PREFIX}/static/icon.svg",
    }]
