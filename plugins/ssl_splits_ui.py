"""Airflow UI plugin: the published manifest of ``ssl_imagenet_splits``, inside Airflow.

Wiring (Airflow 3 plugin mechanism):

* ``fastapi_apps``: a small FastAPI app mounted by the API server at
  ``/ssl-splits``:

  - ``GET /ssl-splits/?run_id=<run>``: an HTML page with the manifest that run
    published: its splits, counts, shard sizes, each split's per-class counts
    (one bar per class up to 60 classes, else a histogram with the extremes
    named; inline SVG, nothing loaded from the internet) and the source.
    Without ``run_id``: the latest publication (``?uri=`` also selects one, but
    only a URI that a run published). Actions: "Rebuild" on each seeded split
    and "Add seeds" open the DAG's trigger form pre-filled (links that name the
    run and the split only; ``ssl_splits.prefill``); links to the run that built
    each split and to runs in progress. Shard lists load when opened. A
    ``Server-Timing`` header says where the time went.
  - ``GET /ssl-splits/api/manifest?run_id=...`` (or ``?uri=`` of a published
    manifest): the manifest JSON.
  - ``GET /ssl-splits/api/recent``: recently published manifests.

  Only manifests that runs of this deployment published are read: the
  ``manifest_uri`` of the asset events the DAG's ``publish_manifest`` task
  emitted (``publications``, ``manifest_of_run``). Any other URI (a JSON file on
  the server's disk, another bucket's object, ``..`` tricks) is refused with 404
  before anything is read, and the recorded URI, not the requested string, is
  what gets read (``select_published``). Every route but the static files needs
  the caller to be allowed to read the DAG (Airflow's own ``requires_access_dag``:
  the UI's session cookie or a bearer token). Reading ``gs://`` goes through
  ``beam_jobs.storage`` with the ``google_cloud_default`` connection
  (``ssl_splits.gcp.airflow_storage``).

  Every URL the page writes (links, the nav script) starts with the UI's path
  from the configuration (``[api] base_url``, ``configured_ui_base``), never
  with anything from the request; values are autoescaped, run ids quoted.

* ``external_views``: a "Splits manifest" item in the UI's navigation that
  shows the page in an iframe at ``/plugin/ssl-splits`` (the iframe's own path
  follows in the browser's address bar, so a manifest view can be linked).
  The iframe is sandboxed without top navigation: links to Airflow's own pages
  (runs, the trigger form) run ``static/airflow-nav.js`` in the UI's page,
  which moves the UI there (same origin only; and presses the DAG's Trigger
  button).

* ``fastapi_root_middlewares``: ``PrefillMiddleware`` opens and fills the
  trigger form for the view's links, ``{base}/dags/ssl_imagenet_splits?prefill=
  rebuild&from_run={run_id}&split={split}`` (or ``prefill=add-seeds&from_run=``),
  which Airflow 3.3's UI does not do itself: on exactly that path under the
  configured base it adds the opener script (its URL from the configuration) to
  the page, and puts the values looked up server side (the run's recorded conf
  and the manifest it published) into the DAG details the page's form takes its
  initial values from. A ``conf=`` in the URL is ignored. Every other request
  passes untouched.

The FastAPI app is built on its first request: other Airflow processes load
plugins too (scheduler, workers) and import nothing heavy from here.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import logging
import os
import statistics
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from ssl_splits.prefill import PrefillRequest

log = logging.getLogger(__name__)

DAG_ID = "ssl_imagenet_splits"
ASSET_NAME = "ssl_imagenet_splits_manifest"  # the DAG's Asset (dags/ssl_imagenet_splits.py)
URL_PREFIX = "/ssl-splits"
HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "ssl_splits_ui_assets", "templates")
STATIC = os.path.join(HERE, "ssl_splits_ui_assets", "static")
MAX_TITLED_BARS = 240  # bars with their own tooltip; more are drawn as one path
PER_CLASS_BARS = 60  # up to this many classes, one bar per class; more: a histogram
HISTOGRAM_BINS = 40
EXTREMES = 3  # classes named at each end
DETAILS_PATH = f"/api/v2/dags/{DAG_ID}/details"
PUBLISH_TASK = "publish_manifest"  # the task whose asset events record the manifests


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


def normalize_manifest_uri(uri: str | None) -> str | None:
    """The form in which manifest URIs are compared, or None for anything that is not
    a ``gs://bucket/object`` or an absolute local path: whitespace around it dropped,
    empty and ``.`` segments dropped (``//`` is ``/``). A ``..`` segment, a backslash or
    a control character makes it None (never resolved: nothing is looked up on disk)."""
    uri = (uri or "").strip()
    if not uri or not uri.isprintable() or "\\" in uri:
        return None
    if uri.startswith("gs://"):
        scheme, rest = "gs://", uri[len("gs://") :]
    elif uri.startswith("/"):
        scheme, rest = "/", uri
    else:
        return None
    segments = [seg for seg in rest.split("/") if seg not in ("", ".")]
    if not segments or ".." in segments or (scheme == "gs://" and len(segments) < 2):
        return None
    return scheme + "/".join(segments)


def select_published(requested: str | None, published: Iterable[str]) -> str | None:
    """The published URI that ``requested`` names (equal once both are normalised,
    ``normalize_manifest_uri``), or None. The caller reads the published one, the
    recorded string, never the requested one."""
    key = normalize_manifest_uri(requested)
    if key is None:
        return None
    return next((p for p in published if normalize_manifest_uri(p) == key), None)


def exact_path(scope: dict[str, Any], wanted: str) -> bool:
    """Is the request's path exactly ``wanted`` (a path as ``dag_page_path`` builds it:
    percent-quoted)? Compared on the raw path when the server gives it, so that
    ``/dags%2Fx`` is not ``/dags/x``; no prefix or suffix matching (``//host/dags/x``
    and ``/other/dags/x`` are not ``/dags/x``)."""
    raw = scope.get("raw_path")
    if raw is not None:
        return bytes(raw) == wanted.encode("ascii", "replace")
    return scope.get("path") == urllib.parse.unquote(wanted)


def bar_chart(
    values: list[float],
    titles: list[str] | None = None,
    *,
    height: int = 120,
    color: str = "#017cee",
    label: str = "",
    mean_line: bool = True,
) -> str:
    """An inline SVG bar chart (one bar per value, a dashed line at the mean).

    The SVG stretches to the page's width. Up to ``MAX_TITLED_BARS`` bars each
    get a tooltip (``titles``); more are drawn as a single path (thousands of
    elements slow the first paint and no one hovers over a 1,024th bar).
    """
    n = len(values)
    if not n:
        return '<p class="muted">nothing to chart</p>'
    width = max(n, 300)
    top = max(values) or 1
    bw = width / n
    gap = bw * 0.15 if bw >= 3 and n > 1 else 0
    w = max(bw - gap, 0.5)
    heights = [max(v / top * (height - 4), 1 if v else 0) for v in values]
    if titles is not None and n <= MAX_TITLED_BARS:
        bars = "".join(
            f'<rect x="{i * bw:.3f}" y="{height - h:.3f}" width="{w:.3f}" height="{h:.3f}">'
            f"<title>{html.escape(t)}</title></rect>"
            for i, (h, t) in enumerate(zip(heights, titles))
        )
        body = f'<g fill="{color}">{bars}</g>'
    else:
        d = "".join(
            f"M{i * bw:.2f} {height}v{-h:.2f}h{w:.2f}v{h:.2f}z" for i, h in enumerate(heights) if h
        )
        body = f'<path fill="{color}" d="{d}"/>'
    line = ""
    if mean_line:
        mean = sum(values) / n
        y = height - mean / top * (height - 4)
        line = (
            f'<line x1="0" x2="{width}" y1="{y:.3f}" y2="{y:.3f}" stroke="#c2410c" '
            f'stroke-width="1" stroke-dasharray="4 3" vector-effect="non-scaling-stroke">'
            f"<title>mean {mean:,.1f}</title></line>"
        )
    return (
        f'<svg class="chart" role="img" aria-label="{html.escape(label)}" viewBox="0 0 {width} '
        f'{height}" preserveAspectRatio="none" width="100%" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">{body}{line}</svg>'
    )


def histogram(values: list[int], bins: int = HISTOGRAM_BINS) -> list[tuple[int, int, int]]:
    """``(lo, hi, count)`` per bin over ``min..max`` of integer ``values``: one bin
    per value when the range is small, else ``bins`` bins of equal integer width."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))  # ceil
    counts = [0] * ((hi - lo) // width + 1)
    for v in values:
        counts[(v - lo) // width] += 1
    return [(lo + i * width, min(lo + (i + 1) * width - 1, hi), c) for i, c in enumerate(counts)]


def extremes(
    counts: dict[str, int], k: int = EXTREMES
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The ``k`` classes with the fewest and with the most examples (ties by name)."""
    items = list(counts.items())
    fewest = sorted(items, key=lambda kv: (kv[1], kv[0]))[:k]
    most = sorted(items, key=lambda kv: (-kv[1], kv[0]))[:k]
    return fewest, most


def class_view(name: str, counts: dict[str, int]) -> dict[str, Any]:
    """Per-class counts, readable at 10 classes and at 1,000: one bar per class
    (sorted by class) up to ``PER_CLASS_BARS``, else a histogram of the classes
    by their number of examples, with the extremes named."""
    keys = sorted(counts)
    values = [counts[k] for k in keys]
    if not keys:
        return {"num_classes": 0, "chart": "", "spread": "–"}
    fewest, most = extremes(counts)
    out = {
        "num_classes": len(keys),
        "spread": spread(values),
        "median": statistics.median(values),
        "fewest": fewest,
        "most": most,
        "uniform": min(values) == max(values),
    }
    if len(keys) <= PER_CLASS_BARS:
        out.update(
            kind="bars",
            first=keys[0],
            last=keys[-1],
            chart=bar_chart(
                [float(v) for v in values],
                [f"{k}: {v:,}" for k, v in zip(keys, values)],
                color="#0f766e",
                label=f"examples per class in {name}",
            ),
        )
        return out
    bins = histogram(values)
    out.update(
        kind="histogram",
        first=f"{bins[0][0]:,}",
        last=f"{bins[-1][1]:,}",
        chart=bar_chart(
            [float(c) for _, _, c in bins],
            [
                f"{lo:,} examples: {c:,} classes"
                if lo == hi
                else f"{lo:,}..{hi:,} examples: {c:,} classes"
                for lo, hi, c in bins
            ],
            color="#0f766e",
            mean_line=False,
            label=f"classes of {name} by their number of examples (histogram)",
        ),
    )
    return out


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


def when(ts: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` (UTC as written), or ``""``."""
    return str(ts)[:19].replace("T", " ") if ts else ""


def split_view(
    name: str, e: dict[str, Any], *, ui_base: str = "", rebuild_url: str | None = None
) -> dict[str, Any]:
    """What the page shows of one split (pure: a manifest entry in, strings out)."""
    from ssl_splits.prefill import run_url

    shards = e.get("shards") or []
    records = [int(s.get("num_records") or 0) for s in shards]
    sizes = [int(s.get("num_bytes") or 0) for s in shards]
    counts = {str(k): int(v or 0) for k, v in (e.get("class_counts") or {}).items()}
    prov = e.get("provenance") or {}
    ver = e.get("verification") or {}
    plan = e.get("plan") or {}
    run_id = prov.get("run_id") if isinstance(prov.get("run_id"), str) else None
    dag_id = prov.get("dag_id") if isinstance(prov.get("dag_id"), str) else None
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
            [
                f"{os.path.basename(s.get('path', ''))}: {r:,} records, {size(b)}"
                for s, r, b in zip(shards, records, sizes)
            ],
            label=f"records per shard of {name}",
        ),
        "classes": class_view(name, counts),
        "plan": plan,
        "plan_sha": (plan.get("sha256") or "")[:16],
        "verification": ver,
        "verified_at": when(ver.get("verified_at")),
        "provenance": prov,
        "built_at": when(prov.get("built_at")),
        "run_id": run_id,
        "run_url": run_url(run_id, ui_base=ui_base, dag_id=dag_id or DAG_ID) if run_id else None,
        "rebuild_url": rebuild_url,
        "copied_from": e.get("copied_from"),
    }


def manifest_view(
    doc: dict[str, Any],
    *,
    uri: str = "",
    run_id: str | None = None,
    ui_base: str = "",
    active: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the page shows of a manifest, with its actions: links that open the
    trigger form to rebuild each seeded split or to add seeds, and the runs in
    progress (``active``: ``active_runs()``). ``run_id``: the run that published
    this manifest; the links name it (and the split), nothing else, and the form's
    values are looked up from it server side (``ssl_splits.prefill``). Without it,
    no action links."""
    from ssl_splits.prefill import ADD_SEEDS, PrefillRequest, next_seeds, trigger_url

    splits = split_views(doc, run_id=run_id, ui_base=ui_base)
    src = doc.get("source") or {}
    files = src.get("files") or []
    runs = runs_view(active or [], output=(doc.get("output_uri") or "").rstrip("/"))
    mark_building(splits, runs)
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
        "add_seeds": next_seeds(doc),
        "add_seeds_url": trigger_url(PrefillRequest(ADD_SEEDS, run_id), ui_base=ui_base)
        if run_id
        else None,
        "active_runs": runs,
    }


def split_views(doc: dict[str, Any], *, run_id: str | None, ui_base: str) -> list[dict[str, Any]]:
    """Every split of the manifest as the page shows it; a seeded split has a link
    to rebuild it when the publishing run is known."""
    from ssl_splits.prefill import REBUILD, PrefillRequest, seeded_splits, trigger_url

    seeded = seeded_splits(doc)
    return [
        split_view(
            n,
            e,
            ui_base=ui_base,
            rebuild_url=trigger_url(PrefillRequest(REBUILD, run_id, n), ui_base=ui_base)
            if run_id and n in seeded
            else None,
        )
        for n, e in (doc.get("splits") or {}).items()
        if isinstance(e, dict)
    ]


def runs_view(active: list[dict[str, Any]], *, output: str) -> list[dict[str, Any]]:
    """The runs in progress, each marked ``this_output`` when it writes this
    manifest's output folder (or names none: the default folder)."""
    runs = []
    for r in active:
        conf = r.get("conf") or {}
        mine = not conf.get("output_uri") or str(conf["output_uri"]).rstrip("/") == output
        runs.append({**r, "this_output": mine})
    return runs


def mark_building(splits: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """Set each split view's ``building_in``: the first active run on this output
    folder whose seeds rebuild it (a seeded, supervised split), or None."""
    building: dict[str, str] = {}  # split name -> the active run that rebuilds it
    for r in runs:
        if not r["this_output"]:
            continue
        seeds = (r.get("conf") or {}).get("seeds")
        for sv in splits:
            if (
                sv["seed"] is not None
                and sv["kind"] == "supervised"
                and isinstance(seeds, list)
                and str(sv["seed"]) in {str(x).strip() for x in seeds}
            ):
                building.setdefault(sv["name"], r["run_id"])
    for sv in splits:
        sv["building_in"] = building.get(sv["name"])


# --------------------------------------------------------------------------- Airflow side


def configured_ui_base() -> str:
    """The UI's path prefix from Airflow's configuration (``[api] base_url``'s path,
    ``ssl_splits.prefill.ui_base_path``): ``""`` unless Airflow is served under a path.
    Every URL the plugin writes starts with it; none is built from a request."""
    from airflow.configuration import conf
    from ssl_splits.prefill import ui_base_path

    return ui_base_path(conf.get("api", "base_url", fallback=""))


def publications(run_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The manifests the DAG's runs published, newest first (of one run: ``run_id``):
    the ``manifest_uri`` in the extra of the asset events that the DAG's
    ``publish_manifest`` task emitted. Events created by hand (the REST API's
    ``POST /assets/events``, which have no source task) do not count."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(AssetEvent.extra, AssetEvent.source_run_id, AssetEvent.timestamp)
        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        .where(
            AssetModel.name == ASSET_NAME,
            AssetEvent.source_dag_id == DAG_ID,
            AssetEvent.source_task_id == PUBLISH_TASK,
            AssetEvent.source_run_id.is_not(None),
        )
        .order_by(AssetEvent.timestamp.desc(), AssetEvent.id.desc())
    )
    if run_id is not None:
        query = query.where(AssetEvent.source_run_id == run_id)
    if limit is not None:
        query = query.limit(limit)
    with create_session() as session:
        rows = session.execute(query).all()
    out = []
    for extra, source_run_id, ts in rows:
        uri = (extra or {}).get("manifest_uri") if isinstance(extra, dict) else None
        if isinstance(uri, str) and uri:
            out.append(
                {
                    "uri": uri,
                    "run_id": source_run_id,
                    "changed": (extra or {}).get("changed") or [],
                    "published_at": ts.isoformat(timespec="seconds") if ts else "",
                }
            )
    return out


def recent_manifests(limit: int = 10) -> list[dict[str, Any]]:
    """Manifests the DAG published, newest first, one entry per manifest URI (its
    latest publication: ``uri``, ``run_id``, ``changed``, ``published_at``)."""
    out: dict[str, dict[str, Any]] = {}
    for pub in publications(limit=200):
        out.setdefault(pub["uri"], pub)
        if len(out) >= limit:
            break
    return list(out.values())


def latest_publication(uri: str) -> dict[str, Any] | None:
    """The latest publication of the published manifest ``uri`` (as recorded)."""
    return next((p for p in publications() if p["uri"] == uri), None)


def manifest_of_run(run_id: str) -> str | None:
    """The manifest a run of the DAG published: its publish_manifest asset event's
    ``manifest_uri``; else its publish_manifest task's return value (XCom), if that
    URI is one the DAG's asset events recorded. None: no such run, or it published
    nothing."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    own = publications(run_id=run_id, limit=1)
    if own:
        return own[0]["uri"]
    with create_session() as session:
        value = session.execute(
            select(XComModel.value).where(
                XComModel.dag_id == DAG_ID,
                XComModel.run_id == run_id,
                XComModel.task_id == PUBLISH_TASK,
                XComModel.key == "return_value",
            )
        ).scalar()
    if value is None:
        return None
    try:
        value = json.loads(value) if isinstance(value, (str, bytes)) else value
    except ValueError:
        return None
    uri = value.get("manifest_uri") if isinstance(value, dict) else None
    if not isinstance(uri, str):
        return None
    return select_published(uri, {p["uri"] for p in publications()})


def run_conf(run_id: str) -> dict[str, Any] | None:
    """The conf a run of the DAG was triggered with (``{}`` without one), or None when
    the DAG has no run of that id (a run of another DAG is no run of this one)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(DagRun.conf).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id)
        ).first()
    if row is None:
        return None
    return row[0] if isinstance(row[0], dict) else {}


def lookup_prefill(request: PrefillRequest) -> dict[str, Any] | None:
    """The trigger form's values for a link's ``request``, from server-side state only:
    the run's recorded conf and the manifest it published (``prefill_conf``). None
    (the form keeps the DAG's defaults) for an unknown run, a run that published
    nothing, an unreadable manifest or a split that is not one of its seeded splits."""
    from ssl_splits.prefill import prefill_conf

    conf = run_conf(request.run_id)
    if conf is None:
        return None
    uri = manifest_of_run(request.run_id)
    if uri is None:
        return None
    try:
        doc = read_manifest(uri)
    except Exception as err:  # noqa: BLE001 (no prefill; the form shows the defaults)
        log.warning("cannot read the manifest %s for a pre-filled form: %s", uri, err)
        return None
    return prefill_conf(request, conf, doc, uri)


def active_runs(limit: int = 5) -> list[dict[str, Any]]:
    """The DAG's runs in progress (queued or running), oldest first: run id, state,
    start and conf (what they build)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(DagRun.run_id, DagRun.state, DagRun.start_date, DagRun.queued_at, DagRun.conf)
            .where(
                DagRun.dag_id == DAG_ID, DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED])
            )
            .order_by(DagRun.id)
            .limit(limit)
        ).all()
    return [
        {
            "run_id": run_id,
            "state": str(getattr(state, "value", state)),
            "since": when((start or queued).isoformat()) if (start or queued) else "",
            "conf": conf if isinstance(conf, dict) else {},
        }
        for run_id, state, start, queued, conf in rows
    ]


def read_manifest(uri: str) -> dict[str, Any]:
    """Load a manifest through beam_jobs.storage (gs:// with the Airflow connection).
    Called with published URIs only (``choose_manifest``, ``lookup_prefill``)."""
    from ssl_splits.gcp import airflow_storage

    from beam_jobs.publishing.manifest import load

    with airflow_storage():
        return load(check_manifest_uri(uri))


NOT_PUBLISHED = (
    f"Not a manifest published by a run of {DAG_ID}: the view shows only those "
    "(pick one of the list, or give a run id)."
)
NO_MANIFEST_OF_RUN = f"No manifest published by a run of {DAG_ID} with that run id."


def choose_manifest(
    uri: str | None, run_id: str | None, recent: list[dict[str, Any]]
) -> tuple[str | None, str | None, str | None]:
    """``(uri, run_id, error)``: the published manifest to show and the run that
    published it. By ``run_id`` (preferred), else by ``uri`` (it must name a published
    manifest, ``select_published``), else the latest publication (``recent``). The
    error never quotes what was asked for."""
    if run_id:
        found = manifest_of_run(run_id)
        return (found, run_id, None) if found else (None, None, NO_MANIFEST_OF_RUN)
    if uri:
        found = select_published(uri, {p["uri"] for p in publications()})
        if found is None:
            return None, None, NOT_PUBLISHED
        latest = latest_publication(found)
        return found, (latest or {}).get("run_id"), None
    if recent:
        return recent[0]["uri"], recent[0]["run_id"], None
    return None, None, None


def manifest_query(run_id: str | None, uri: str | None = None) -> str:
    """The query that selects a published manifest: by its run when known, else by URI."""
    return urllib.parse.urlencode({"run_id": run_id} if run_id else {"uri": uri or ""})


_PAGE = None


def render_page(
    *,
    uri: str = "",
    run_id: str | None = None,
    doc: dict[str, Any] | None = None,
    error: str | None = None,
    note: str | None = None,
    recent: list[dict[str, Any]] | None = None,
    active: list[dict[str, Any]] | None = None,
    ui_base: str = "",
) -> str:
    """The HTML page (Jinja2, autoescaped: manifest values are never markup; the
    only values in the inline script go through ``tojson``).

    ``uri``/``run_id``: the published manifest shown and the run that published it
    (its action links name that run); ``ui_base``: the Airflow UI's path prefix
    from the configuration (``configured_ui_base``), for links to its pages and the
    plugin's own; ``active``: the runs in progress."""
    global _PAGE
    if _PAGE is None:
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"])
        )
        env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, (int, float)) else (v or "–")
        _PAGE = env.get_template("manifest.html")
    from ssl_splits.prefill import run_url

    prefix = f"{ui_base}{URL_PREFIX}"
    view = (
        manifest_view(doc, uri=uri, run_id=run_id, ui_base=ui_base, active=active) if doc else None
    )
    runs = view["active_runs"] if view else (active or [])
    runs = [{**r, "url": run_url(r["run_id"], ui_base=ui_base)} for r in runs]
    recent = [
        {**r, "href": f"{prefix}/?{manifest_query(r.get('run_id'), r['uri'])}"}
        for r in recent or []
    ]
    return _PAGE.render(
        uri=uri or "",
        run_id=run_id,
        error=error,
        note=note,
        recent=recent,
        dag_id=DAG_ID,
        view=view,
        active=runs,
        prefix=prefix,
        raw_json_url=f"{prefix}/api/manifest?{manifest_query(run_id, uri)}",
        nav_script_url=f"{prefix}/static/airflow-nav.js",
        now=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _or_empty(fetch: Callable[[], list[dict[str, Any]]], what: str) -> list[dict[str, Any]]:
    """``fetch()``, or ``[]`` (logged) when it fails: the page works without it."""
    try:
        return fetch()
    except Exception as err:  # noqa: BLE001 (the page still shows a run's manifest)
        log.warning("could not list %s: %s", what, err)
        return []


def _load_chosen(
    chosen: str | None, error: str | None, recent: list[dict[str, Any]], latest: bool
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The chosen manifest's document, the page's error and its note. ``latest``:
    the page was asked for no manifest in particular (the newest is shown)."""
    if error:
        return None, error, None
    if not chosen:
        return None, None, f"No manifest published yet: trigger {DAG_ID}."
    note = None
    if latest:
        note = (
            f"The latest published manifest (run {recent[0]['run_id']}, "
            f"{recent[0]['published_at']})."
        )
    try:
        return read_manifest(chosen), None, note
    except Exception as err:  # noqa: BLE001 (shown on the page, without its text)
        log.warning("cannot read the published manifest %s: %s", chosen, err)
        return None, f"Cannot read the manifest published at {chosen} ({type(err).__name__}).", note


def page_response(uri: str | None, run_id: str | None, ui_base: str):  # -> HTMLResponse
    """The Splits page (404 when the manifest asked for was not published), with
    a ``Server-Timing`` header: the metadata DB, the manifest read, rendering."""
    from fastapi.responses import HTMLResponse

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    recent = _or_empty(recent_manifests, "published manifests")
    active = _or_empty(active_runs, "runs in progress")
    chosen, chosen_run, error = choose_manifest(uri, run_id, recent)
    t1 = time.perf_counter()
    timing["db"] = t1 - t0
    status = 404 if error else 200
    doc, error, note = _load_chosen(chosen, error, recent, latest=not uri and not run_id)
    t2 = time.perf_counter()
    timing["manifest"] = t2 - t1
    page_of = functools.partial(
        render_page, uri=chosen or "", run_id=chosen_run, recent=recent, active=active
    )
    try:
        page = page_of(doc=doc, error=error, note=note, ui_base=ui_base)
    except Exception as err:  # noqa: BLE001 (a manifest edited since it was published)
        log.warning("cannot show the published manifest %s: %r", chosen, type(err))
        error = (
            f"Cannot show the manifest published at {chosen}: it no longer reads as a "
            f"manifest of this product ({type(err).__name__})."
        )
        page = page_of(doc=None, error=error, note=note, ui_base=ui_base)
    timing["render"] = time.perf_counter() - t2
    server_timing = ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in timing.items())
    return HTMLResponse(page, status_code=status, headers={"Server-Timing": server_timing})


def manifest_response(uri: str | None, run_id: str | None):  # -> JSONResponse
    """A published manifest as JSON, chosen by its run (or its uri); 400 without
    either, 404 when it was not published by the DAG or cannot be read."""
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse

    if not uri and not run_id:
        raise HTTPException(400, "give run_id (or the uri of a published manifest)")
    chosen, _, error = choose_manifest(uri, run_id, [])
    if chosen is None:
        raise HTTPException(404, error or NOT_PUBLISHED)
    try:
        return JSONResponse(read_manifest(chosen))
    except Exception as err:  # noqa: BLE001 (ManifestError, storage errors)
        log.warning("cannot read the published manifest %s: %s", chosen, err)
        raise HTTPException(
            404, f"cannot read the manifest published at {chosen} ({type(err).__name__})"
        ) from None


def create_app():  # -> fastapi.FastAPI
    """The plugin's FastAPI app (built in the API server, on first use): the page,
    its JSON API and its static files; the page and the API need read access to
    the DAG."""
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, Query
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    can_read_dag = [Depends(requires_access_dag("GET", param_dag_id=DAG_ID))]
    ui_base = configured_ui_base()
    app = FastAPI(
        title="SSL ImageNet splits: manifest view", docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.get("/", response_class=HTMLResponse, dependencies=can_read_dag)
    def view(uri: str | None = Query(None), run_id: str | None = Query(None)) -> HTMLResponse:
        return page_response(uri, run_id, ui_base)

    @app.get("/api/manifest", dependencies=can_read_dag)
    def manifest_json(
        uri: str | None = Query(None), run_id: str | None = Query(None)
    ) -> JSONResponse:
        return manifest_response(uri, run_id)

    @app.get("/api/recent", dependencies=can_read_dag)
    def recent_json() -> JSONResponse:
        return JSONResponse(recent_manifests())

    @app.get("/static/icon.svg", include_in_schema=False)
    def icon() -> FileResponse:
        return FileResponse(os.path.join(STATIC, "icon.svg"), media_type="image/svg+xml")

    @app.get("/static/airflow-nav.js", include_in_schema=False)
    def nav_script() -> FileResponse:
        return FileResponse(
            os.path.join(STATIC, "airflow-nav.js"),
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )

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


Transform = Callable[[bytes], Awaitable[bytes]]


class PrefillMiddleware:
    """Opens and pre-fills the DAG's trigger form for the links of the Splits view,
    ``{base}/dags/ssl_imagenet_splits?prefill=rebuild&from_run={run_id}&split={split}``
    (or ``prefill=add-seeds&from_run={run_id}``).

    A root ASGI middleware of the API server. ``{base}`` is the path of Airflow's
    ``[api] base_url`` (``configured_ui_base``; ``base_url`` overrides it); nothing is
    derived from the request's path. It acts on two requests only, matched on their
    exact path (``exact_path``):

    * the DAG's page itself (``GET {base}/dags/ssl_imagenet_splits`` with such a query,
      the UI's HTML): the script ``{base}/ssl-splits/static/airflow-nav.js`` is added,
      which presses the page's Trigger button;
    * the DAG's details asked for by that page (``GET {base}/api/v2/dags/
      ssl_imagenet_splits/details`` whose ``Referer`` is that page, ``request_of_page``):
      the params carry the values ``lookup`` finds for the link (``lookup_prefill``:
      the run's recorded conf and the manifest it published), applied with
      ``ssl_splits.prefill.apply_prefill``. Nothing of the request but the run id and
      the split is read; no values are taken from it, and for a link that names no
      published run and seeded split the details pass as Airflow wrote them.

    Airflow has already answered (and authorised) the request; a response other than
    200 HTML or JSON passes as it is, and ``lookup`` runs only after a 200. These
    requests are asked uncompressed (no ``Accept-Encoding``) so that their body can
    be read.
    """

    def __init__(
        self,
        app,
        base_url: str | None = None,
        lookup: Callable[[PrefillRequest], dict[str, Any] | None] | None = None,
    ) -> None:
        from ssl_splits.prefill import dag_page_path, ui_base_path

        self.app = app
        self.ui_base = configured_ui_base() if base_url is None else ui_base_path(base_url)
        self.page_path = dag_page_path(self.ui_base)
        self.details_path = f"{self.ui_base}{DETAILS_PATH}"
        self.script_src = f"{self.ui_base}{URL_PREFIX}/static/airflow-nav.js"
        self.lookup = lookup or lookup_prefill

    async def __call__(self, scope, receive, send) -> None:
        transform = self._transform(scope) if scope.get("type") == "http" else None
        if transform is None:
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        scope = {**scope, "headers": [(k, v) for k, v in headers if k != b"accept-encoding"]}
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if _plain(start):
                body = await transform(body)
            out_headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            out_headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": out_headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)

    def _transform(self, scope: dict[str, Any]) -> Transform | None:
        """What to do with this request's response body, or None to let it pass."""
        from ssl_splits.prefill import parse_prefill_query, request_of_page

        if scope.get("method") != "GET":
            return None
        if exact_path(scope, self.details_path):
            referer = next(
                (v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"referer"),
                None,
            )
            request = request_of_page(referer, ui_base=self.ui_base)
            if request is None:
                return None
            lookup = self.lookup

            async def prefill(body: bytes) -> bytes:
                import anyio.to_thread

                try:
                    conf = await anyio.to_thread.run_sync(lookup, request)
                except Exception as err:  # noqa: BLE001 (the form keeps its defaults)
                    log.warning("no pre-filled trigger form for %s: %s", request, err)
                    return body
                return body if conf is None else _prefilled(body, conf)

            return prefill
        if exact_path(scope, self.page_path):
            query = scope.get("query_string", b"").decode("latin-1")
            if parse_prefill_query(query) is None:
                return None
            script_src = self.script_src

            async def opener(body: bytes) -> bytes:
                return with_opener(body, script_src)

            return opener
        return None


def _plain(start: dict[str, Any]) -> bool:
    """A 200 answer whose body is not encoded (compressed)."""
    headers = {k.lower(): v for k, v in start.get("headers", [])}
    return start.get("status") == 200 and not headers.get(b"content-encoding")


def _prefilled(body: bytes, conf: dict[str, Any]) -> bytes:
    """The details body with ``conf`` applied, or as it was (not a JSON object)."""
    from ssl_splits.prefill import apply_prefill

    try:
        details = json.loads(body)
    except ValueError:
        return body
    if not isinstance(details, dict):
        return body
    new, applied = apply_prefill(details, conf)
    if not applied:
        return body
    log.info("trigger form of %s pre-filled with %s", DAG_ID, ", ".join(applied))
    return json.dumps(new).encode()


def with_opener(page: bytes, script_src: str) -> bytes:
    """The UI's HTML page with the script that opens the trigger form, before
    ``</head>`` (unchanged when the page has none). ``script_src`` comes from the
    configuration (``PrefillMiddleware``), never from the request."""
    tag = f'<script src="{html.escape(script_src)}" data-open="trigger"></script>'.encode()
    i = page.find(b"</head>")
    return page if i < 0 else page[:i] + tag + page[i:]


class SslSplitsUIPlugin(AirflowPlugin):
    name = "ssl_splits_ui"
    fastapi_apps = [
        {
            "app": LazyASGIApp(create_app),
            "url_prefix": URL_PREFIX,
            "name": "SSL splits manifest view",
        }
    ]
    fastapi_root_middlewares = [
        {
            "middleware": PrefillMiddleware,
            "name": "SSL splits: pre-filled trigger form",
        }
    ]
    external_views = [
        {
            "name": "Splits",  # the nav shows about 8 characters
            "href": f"{URL_PREFIX}/",
            "url_route": "ssl-splits",
            "destination": "nav",
            "icon": f"{URL_PREFIX}/static/icon.svg",
        }
    ]
