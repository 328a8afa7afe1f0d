"""Pre-filled trigger forms: the run config that rebuilds a published split or adds seeds.

The Splits view (``plugins/ssl_splits_ui.py``) offers "Rebuild" on each seeded
split and "Add seeds" for the manifest. Each opens the DAG's own trigger form
with these values filled in; the user reviews and submits it, so Airflow's
validation and run history apply as to any manual run.

How the form gets the values: the link is ``{ui}/dags/{dag_id}?conf={json}``
(the URL shape Airflow 2 used, and Airflow 3's proposed one). Airflow 3.3's
UI neither opens the form nor reads ``conf`` from the URL itself (the feature
was merged upstream and reverted, apache/airflow#59231 and #59769); its form
takes its initial values from the params that ``GET /api/v2/dags/{dag_id}/details``
returns. The UI plugin's middleware therefore, for such a page, adds a script
that presses the page's Trigger button, and puts this conf into the details
response requested from the page (its ``Referer``): ``conf_of_page`` and
``apply_prefill`` below. Nothing else changes: other pages, other DAGs and
API clients without that referer see the DAG's own defaults.

Everything here is pure (a manifest and a URI in, a dict or a URL out) and
reads manifest fields defensively: a manifest may lack any optional field.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from typing import Any

from ssl_splits.config import DEFAULT_NUM_CLASSES, RUNNERS

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


def trigger_url(conf: dict[str, Any], *, ui_base: str = "", dag_id: str = DAG_ID) -> str:
    """The DAG's page with ``conf`` to pre-fill its trigger form (compact JSON)."""
    query = urllib.parse.urlencode({"conf": json.dumps(conf, separators=(",", ":"))})
    return f"{ui_base.rstrip('/')}/dags/{urllib.parse.quote(dag_id, safe='')}?{query}"


def run_url(run_id: str, *, ui_base: str = "", dag_id: str = DAG_ID) -> str:
    """A DAG run's page in the Airflow UI."""
    return (
        f"{ui_base.rstrip('/')}/dags/{urllib.parse.quote(dag_id, safe='')}/runs/"
        f"{urllib.parse.quote(run_id, safe='')}"
    )


def conf_of_page(page_url: str | None, dag_id: str = DAG_ID) -> dict[str, Any] | None:
    """The conf a DAG page's URL carries (``/dags/{dag_id}?conf={json object}``, a full
    URL or its path and query), or None for any other page, a missing or malformed conf."""
    if not page_url:
        return None
    url = urllib.parse.urlsplit(page_url)
    if not url.path.rstrip("/").endswith(f"/dags/{dag_id}"):
        return None
    values = urllib.parse.parse_qs(url.query).get("conf")
    if not values:
        return None
    try:
        conf = json.loads(values[-1])
    except ValueError:
        return None
    return conf if isinstance(conf, dict) else None


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
