"""Pre-filled trigger forms: the run config that rebuilds a published split or adds seeds.

The Splits view (``plugins/ssl_splits_ui.py``) offers "Rebuild" on each seeded
split and "Add seeds" for the manifest. Each opens the DAG's own trigger form
with these values filled in; the user reviews and submits it, so Airflow's
validation and run history apply as to any manual run.

The link names only what to do and which run to start from, never values:
``{ui}/dags/{dag_id}?prefill=rebuild&from_run={run_id}&split={split}`` or
``...?prefill=add-seeds&from_run={run_id}`` (``PrefillRequest``, ``trigger_url``).
The values come from server-side state: the conf that run was triggered with
(Airflow's DB) and the manifest that run published (its publish_manifest asset
event), through ``prefill_conf`` (``rebuild_conf`` / ``add_seeds_conf``). A
crafted link can therefore only open the form for a run and split that exist,
with the values they imply; a ``conf=`` in the URL is ignored.

Airflow 3.3's UI neither opens the form nor reads a conf from the URL itself
(the feature was merged upstream and reverted, apache/airflow#59231 and
#59769); its form takes its initial values from the params that
``GET /api/v2/dags/{dag_id}/details`` returns. The UI plugin's middleware
therefore, for the DAG's page (exactly ``dag_page_path`` under the configured
``[api] base_url``, ``ui_base_path``), adds a script that presses the page's
Trigger button, and puts the looked-up conf into the details response requested
from that page (its ``Referer``, ``request_of_page``; ``apply_prefill``). Nothing
else changes: other pages, other DAGs and API clients without that referer see
the DAG's own defaults.

Everything here is pure (a manifest, a conf and a URI in, a dict or a URL out)
and reads manifest fields defensively: a manifest may lack any optional field.
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ssl_splits.limits import DEFAULT_NUM_CLASSES, RUNNERS

DAG_ID = "ssl_imagenet_splits"
DEFAULT_RUNNER = RUNNERS[0]  # the runner param's default


def _fraction(value: Any) -> float | None:
    """The manifest's fraction (a decimal string, "0.1") as the form's number."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if 0 < f <= 1 else None


def _source_num_classes(doc: dict[str, Any]) -> int | None:
    n = (doc.get("source") or {}).get("num_classes")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def base_conf(doc: dict[str, Any], manifest_uri: str) -> dict[str, Any]:
    """What every action keeps from the published manifest: the folders, the
    source's label range and the runner; and builds nothing it is not asked
    for (no reshuffle, no validation copy)."""
    output = (doc.get("output_uri") or "").rstrip("/")
    conf: dict[str, Any] = {
        "source_uri": (doc.get("source") or {}).get("uri") or None,
        "output_uri": output or None,
    }
    if manifest_uri and manifest_uri != f"{output}/manifest.json":
        conf["manifest_uri"] = manifest_uri
    conf["unsupervised"] = False
    conf["copy_validation"] = False
    classes = _source_num_classes(doc)
    if classes is not None and classes != DEFAULT_NUM_CLASSES:
        conf["num_classes"] = classes
    runners = Counter(
        ((e.get("provenance") or {}).get("runner"))
        for e in (doc.get("splits") or {}).values()
        if isinstance(e, dict)
    )
    runners.pop(None, None)
    if runners:
        runner = runners.most_common(1)[0][0]
        if runner != DEFAULT_RUNNER:
            conf["runner"] = runner
    return conf


def seeded_splits(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's supervised splits that name their seed, by split name."""
    return {
        name: e
        for name, e in (doc.get("splits") or {}).items()
        if isinstance(e, dict)
        and e.get("kind") == "supervised"
        and isinstance(e.get("seed"), int)
        and not isinstance(e.get("seed"), bool)
    }


def rebuild_conf(doc: dict[str, Any], split: str, manifest_uri: str) -> dict[str, Any]:
    """The conf that rebuilds ``split`` (and only it) as it was made: its seed,
    fraction, sampling, shard count and published plan file (when it was
    reproduced from one), with ``force``."""
    entry = seeded_splits(doc).get(split)
    if entry is None:
        raise KeyError(f"{split!r} is not a seeded split of this manifest")
    seed = entry["seed"]
    conf = base_conf(doc, manifest_uri)
    conf["seeds"] = [seed]
    fraction = _fraction(entry.get("fraction"))
    if fraction is not None:
        conf["fraction"] = fraction
    if entry.get("sampling"):
        conf["sampling"] = entry["sampling"]
    num_shards = entry.get("num_shards")
    if isinstance(num_shards, int) and not isinstance(num_shards, bool) and num_shards > 0:
        conf["num_shards"] = num_shards  # the plan depends on it: keep it, default or not
    plan_source = (entry.get("plan") or {}).get("source")
    if plan_source and plan_source != "computed":
        conf["sharding_files"] = {str(seed): plan_source}
    conf["force"] = True
    return conf


def next_seeds(doc: dict[str, Any], count: int = 1) -> list[int]:
    """``count`` seeds after the largest one published (6 after 1..5)."""
    seeds = [e["seed"] for e in seeded_splits(doc).values()]
    start = max(seeds, default=0) + 1
    return list(range(start, start + count))


def add_seeds_conf(doc: dict[str, Any], manifest_uri: str, count: int = 1) -> dict[str, Any]:
    """The conf that adds ``count`` new seeds beside the published ones, with the
    fraction and sampling most of them share (the form's defaults without any); when
    several fractions are published for as many seeds each (FixMatch's 10%, 5% and 1%),
    all of them, as ``fractions``, largest first."""
    conf = base_conf(doc, manifest_uri)
    conf["seeds"] = next_seeds(doc, count)
    kinds = Counter((e.get("fraction"), e.get("sampling")) for e in seeded_splits(doc).values())
    if kinds:
        (fraction, sampling), most = kinds.most_common(1)[0]
        tied = sorted(
            {
                value
                for (f, s), k in kinds.items()
                if k == most and s == sampling and (value := _fraction(f)) is not None
            },
            reverse=True,
        )
        if len(tied) > 1:
            conf["fractions"] = tied
        elif _fraction(fraction) is not None:
            conf["fraction"] = _fraction(fraction)
        if sampling:
            conf["sampling"] = sampling
    conf["force"] = False
    return conf


# Settings of a run that say how (not what) it builds: a rebuild or new seeds run the
# way the run they start from ran. What to build comes from the manifest.
RUN_SETTINGS = (
    "direct_num_workers",
    "deep_verify",
    "dataflow_project",
    "dataflow_region",
    "dataflow_temp_location",
    "dataflow_machine_type",
    "dataflow_worker_package",
    "dataflow_max_workers",
)
REBUILD = "rebuild"
ADD_SEEDS = "add-seeds"
MAX_ID_LENGTH = 250  # Airflow's run ids (StringID) are at most 250 characters


@dataclass(frozen=True)
class PrefillRequest:
    """What a pre-filled trigger form link asks for: an action and the run it starts
    from (the run whose published manifest says what to build), and for a rebuild the
    split. Nothing else: the values are looked up server side (``prefill_conf``)."""

    action: str  # REBUILD or ADD_SEEDS
    run_id: str
    split: str | None = None

    def query(self) -> str:
        """The link's query string: ``prefill=...&from_run=...[&split=...]``."""
        items = [("prefill", self.action), ("from_run", self.run_id)]
        if self.split is not None:
            items.append(("split", self.split))
        return urllib.parse.urlencode(items, quote_via=urllib.parse.quote)


def _plain_id(value: str | None) -> str | None:
    """``value`` if it can name a run or a split (non-empty, printable, not too long)."""
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        return None
    return value


def parse_prefill_query(query: str) -> PrefillRequest | None:
    """The request a DAG page's query string carries, or None (no or a malformed one).

    Only ``prefill``, ``from_run`` and ``split`` are read, each given once; anything else
    in the query (a ``conf=`` in particular) is ignored."""
    values = urllib.parse.parse_qs(query, keep_blank_values=True)
    if any(len(values.get(k, [])) > 1 for k in ("prefill", "from_run", "split")):
        return None

    def one(name: str) -> str | None:
        return values[name][0] if values.get(name) else None

    action, run_id, split = one("prefill"), _plain_id(one("from_run")), one("split")
    if run_id is None:
        return None
    if action == REBUILD:
        split = _plain_id(split)
        return None if split is None else PrefillRequest(REBUILD, run_id, split)
    if action == ADD_SEEDS and split is None:
        return PrefillRequest(ADD_SEEDS, run_id)
    return None


def ui_base_path(base_url: str | None) -> str:
    """The UI's path prefix from Airflow's ``[api] base_url`` (``http://h/airflow/`` ->
    ``/airflow``; no path -> ``""``). Empty, ``.`` and ``..`` segments are dropped, so
    the result is ``""`` or ``/seg[/seg...]``: never ``//host``, never relative; each
    segment percent-quoted."""
    path = urllib.parse.urlsplit(base_url or "").path
    segments = [s for s in path.split("/") if s not in ("", ".", "..")]
    return "".join(
        "/" + urllib.parse.quote(urllib.parse.unquote(s), safe="-._~!$&'()*+,;=:@")
        for s in segments
    )


def dag_page_path(ui_base: str = "", dag_id: str = DAG_ID) -> str:
    """The DAG's page in the UI, under the (already normalised) ``ui_base``."""
    return f"{ui_base.rstrip('/')}/dags/{urllib.parse.quote(dag_id, safe='')}"


def trigger_url(request: PrefillRequest, *, ui_base: str = "", dag_id: str = DAG_ID) -> str:
    """The DAG's page with the link's ``request`` (no values: ``prefill_conf`` finds them)."""
    return f"{dag_page_path(ui_base, dag_id)}?{request.query()}"


def run_url(run_id: str, *, ui_base: str = "", dag_id: str = DAG_ID) -> str:
    """A DAG run's page in the Airflow UI (the run id percent-quoted)."""
    return f"{dag_page_path(ui_base, dag_id)}/runs/{urllib.parse.quote(run_id, safe='')}"


def request_of_page(
    page_url: str | None, *, ui_base: str = "", dag_id: str = DAG_ID
) -> PrefillRequest | None:
    """The request of a DAG page's URL (a ``Referer``: a full URL or its path and
    query), or None: its path must be exactly the DAG's page under ``ui_base``
    (``dag_page_path``), not merely end with it, and carry a well-formed request."""
    if not page_url:
        return None
    url = urllib.parse.urlsplit(page_url)
    if url.path != dag_page_path(ui_base, dag_id):
        return None
    return parse_prefill_query(url.query)


def prefill_conf(
    request: PrefillRequest,
    run_conf: dict[str, Any] | None,
    doc: dict[str, Any],
    manifest_uri: str,
) -> dict[str, Any] | None:
    """The trigger form's values for ``request``, from server-side state only: the conf
    the run was triggered with (``run_conf``, its settings in ``RUN_SETTINGS``) and the
    manifest the run published (``doc`` at ``manifest_uri``), through ``rebuild_conf`` or
    ``add_seeds_conf``. None when the split is not a seeded split of the manifest."""
    run_conf = run_conf if isinstance(run_conf, dict) else {}
    settings = {k: run_conf[k] for k in RUN_SETTINGS if run_conf.get(k) is not None}
    if request.action == REBUILD:
        if request.split is None or request.split not in seeded_splits(doc):
            return None
        return {**settings, **rebuild_conf(doc, request.split, manifest_uri)}
    if request.action == ADD_SEEDS:
        return {**settings, **add_seeds_conf(doc, manifest_uri)}
    return None


def apply_prefill(
    details: dict[str, Any], conf: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The DAG details (REST API shape: ``params`` = ``{name: {"value", "schema",
    "description"}}``) with the values of ``conf`` as the params' values; and the
    names applied. Names that are not params of the DAG are left out."""
    params = details.get("params")
    if not isinstance(params, dict):
        return details, []
    applied = [k for k in conf if isinstance(params.get(k), dict)]
    if not applied:
        return details, []
    new_params = {
        k: ({**v, "value": conf[k]} if k in conf and isinstance(v, dict) else v)
        for k, v in params.items()
    }
    return {**details, "params": new_params}, applied
