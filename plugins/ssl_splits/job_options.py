"""What each Beam job of a run is told: its flags and, on Dataflow, its job settings.

Pure functions of the run's config (``RunConfig``) and, for a split's jobs, of
that split's spec (the plan task's XCom): the Beam tasks
(``ssl_splits.operators``) hand them to the Beam provider's operator, the
verify task (``ssl_splits.verifying``) to ``beam_jobs.verification.verify``.
Nothing here imports Apache Beam: the task process only prepares options.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.google.cloud.operators.dataflow import DataflowConfiguration

from beam_jobs import storage
from beam_jobs.core import JOB_MODULES, VALIDATION, job_name
from ssl_splits.config import RunConfig

JOBS = tuple(JOB_MODULES)  # validate, build, verify: the jobs beam_jobs.core names


def split_label(spec: dict[str, Any] | None) -> str:
    """The split a job is about, or ``source`` for the validation of the source."""
    return (spec or {}).get("split", "source")


def pipeline_options(cfg: RunConfig, job: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """The ``--flags`` a job gets: its own args plus runner options (pure)."""
    opts = _job_args(cfg, job, spec)
    if cfg.is_dataflow and cfg.dataflow:
        opts.update(_dataflow_args(cfg, job, spec))
    elif cfg.direct_num_workers:
        opts["direct_num_workers"] = cfg.direct_num_workers
    return {k: v for k, v in opts.items() if v is not None}


def _job_args(cfg: RunConfig, job: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """The job's own arguments: what it reads and writes."""
    opts: dict[str, Any] = {}
    if job == "validate":
        opts.update(
            source_uri=cfg.source_uri,
            catalog_dir=spec["catalog_dir"] if spec else None,
            num_classes=cfg.num_classes,
            expected_total=cfg.expected_total,
        )
    # The source's layout (common or tfds:DATASET), from check_params' listing and then
    # the validation report: it names the files the jobs read and write.
    if spec and spec.get("layout"):
        opts["layout"] = spec["layout"]
    if job == "validate":
        return opts
    assert spec is not None
    opts.update(split=spec["split"], output_uri=cfg.output_uri, work_uri=cfg.work_uri)
    if spec["kind"] == VALIDATION:
        opts["copy_from"] = cfg.source_uri
    else:
        opts.update(plan_uri=spec["plan_uri"], catalog_dir=spec["catalog_dir"])
        if job == "build":  # read where the source is now (it may have moved)
            opts["source_uri"] = cfg.source_uri
    if job == "verify":
        opts["deep"] = bool(cfg.deep_verify)
    return opts


def _dataflow_args(cfg: RunConfig, job: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """Dataflow's worker settings, staging folders and labels (and, in template
    mode, where the job's description goes)."""
    assert cfg.dataflow is not None
    df = cfg.dataflow
    opts: dict[str, Any] = dict(
        project=df.project,
        region=df.region,
        temp_location=df.temp_location,
        staging_location=storage.join(df.temp_location, "staging"),
        machine_type=df.machine_type,
        max_num_workers=df.max_num_workers,
        extra_packages=[df.worker_package] if df.worker_package else None,
        labels={"app": "ssl-imagenet-splits", "split": job_name(split_label(spec))},
    )
    if cfg.template_location:
        opts["template_location"] = template_uri(cfg, job, spec)
    return opts


def template_uri(cfg: RunConfig, job: str, spec: dict[str, Any] | None) -> str:
    """Where template mode writes a job's Dataflow description (pure):
    ``{dataflow_template_location}/ssl-{job}-{split}``, the job's name without
    the run's suffix, so a later run of the same job replaces it."""

    assert cfg.template_location is not None
    return storage.join(cfg.template_location, job_name("ssl", job, split_label(spec)))


def dataflow_config(
    cfg: RunConfig, job: str, spec: dict[str, Any] | None
) -> DataflowConfiguration | None:
    """Dataflow job settings: the job name carries the split (``ssl-build-train128116-3``)."""
    if not cfg.is_dataflow or not cfg.dataflow:
        return None

    return DataflowConfiguration(
        job_name=job_name("ssl", job, split_label(spec)),
        append_job_name=True,
        project_id=cfg.dataflow.project,
        location=cfg.dataflow.region,
        gcp_conn_id="google_cloud_default",
        wait_until_finished=True,
        max_num_workers=cfg.dataflow.max_num_workers,
    )
