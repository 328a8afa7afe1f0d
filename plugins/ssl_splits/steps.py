"""What each Python task of the DAG does with its Airflow context.

The DAG file (``dags/ssl_imagenet_splits.py``) only wires tasks; each of its
Python tasks calls one function here with the task's context. These read what
Airflow provides (params, run ids, the lock's lease from ``acquire_lock``'s
XCom, the Beam tasks' results), open the ``google_cloud_default`` connection
for gs:// access (``ssl_splits.gcp``) and hold the run's lock where the work
needs it, then call the work itself in ``ssl_splits.tasks``,
``ssl_splits.verifying`` and ``ssl_splits.templates``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

from ssl_splits import tasks
from ssl_splits.gcp import airflow_storage
from ssl_splits.templates import skip_plan_without_catalog, skip_publish
from ssl_splits.verifying import verify_split


def _lease(ctx: Any) -> dict[str, Any] | None:
    """The run's lock lease, as ``acquire_lock`` returned it."""
    return ctx["ti"].xcom_pull(task_ids="acquire_lock")


def check_params(ctx: Any) -> dict[str, Any]:
    """The run's config and its source's description, from the params."""
    with airflow_storage():
        return tasks.check_params(dict(ctx["params"]))


def acquire_lock(ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Take the output folder's lock for this run; the lease the other tasks hold."""
    run = {
        "dag_id": ctx["dag"].dag_id,
        "run_id": ctx["run_id"],
        "in_process": tasks.runs_whole_dag_in_process(ctx["dag_run"]),
    }
    with airflow_storage():
        return tasks.acquire_lock(config, run)


def plan(ctx: Any, config: dict[str, Any], source: dict[str, Any]) -> list[dict[str, Any]]:
    """Plan every requested split, holding the lock (skipped in template mode
    while the source's validation is only staged)."""
    skip_plan_without_catalog(config, source)
    with airflow_storage(), tasks.holding_lock(_lease(ctx)) as fence:
        return tasks.plan(config, source, fence)


def verify(ctx: Any, config: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Verify one split; its name indexes the mapped task (``map_index_template``)."""
    ctx["split"] = spec["split"]
    return verify_split(config, spec, _lease(ctx))


def publish_manifest(
    ctx: Any,
    config: dict[str, Any],
    source: dict[str, Any],
    specs: list[dict[str, Any]],
    asset: Asset,
) -> dict[str, Any]:
    """Publish this run's verified builds; the manifest Asset's event says where and
    whether it changed (template mode: skipped, listing the staged templates)."""
    ti = ctx["ti"]
    skip_publish(config, ti.xcom_pull(task_ids=["validate_source", "build"]) or [])
    # task_ids as a list: a list back even when one split was built (a str pulls the
    # single mapped value itself, a dict).
    jobs = {r["split"]: r for r in (ti.xcom_pull(task_ids=["build"]) or []) if r}
    run_info = {"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"]}
    with airflow_storage(), tasks.holding_lock(_lease(ctx)) as fence:
        result = tasks.publish_manifest(config, source, specs, jobs, run_info, fence)
    ctx["outlet_events"][asset].extra = {
        "manifest_uri": result["manifest_uri"],
        "changed": result["changed"],
    }
    return result


def release_lock(ctx: Any) -> bool:
    """Free the output folder for the next run, whatever happened."""
    with airflow_storage():
        return tasks.release_lock(_lease(ctx))
