"""Shared plumbing for the Beam jobs: options, logging, metrics, job names."""

from __future__ import annotations

import os
import sys
from typing import Any

from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from beam_jobs.core import job_name  # noqa: F401 (re-exported)
from beam_jobs.logs import LOG_FORMAT, setup_logging  # noqa: F401 (re-exported)

# Below this much data a DirectRunner job runs in-process: starting one worker
# process per core costs several seconds (each imports Beam), more than the work.
MULTIPROCESS_MIN_BYTES = 256 * 1024 * 1024
# A job that can estimate its work in seconds of one worker (the build) runs
# in-process below this: worker processes take seconds to start and stop, so
# on 2 cores they only pay off for longer work (a reshuffle of ~9 s of work:
# 12.6 s with 2 workers, 13.9 s in-process).
MULTIPROCESS_MIN_SECONDS = 8.0
DATAFLOW_RUNNERS = ("DataflowRunner", "dataflow")
DIRECT_RUNNERS = ("DirectRunner", "direct")


def make_options(
    beam_args: list[str],
    default_job_name: str,
    work_bytes: int | None = None,
    work_seconds: float | None = None,
) -> PipelineOptions:
    """PipelineOptions from the args a job did not know, with local defaults.

    On the DirectRunner, unless told otherwise: one worker process per core
    (the work is CPU-bound Python: threads would share one GIL) for
    ``work_seconds`` (one worker's estimated time) of at least
    ``MULTIPROCESS_MIN_SECONDS`` or, without an estimate, ``work_bytes`` of
    at least ``MULTIPROCESS_MIN_BYTES`` (or unknown); otherwise one
    in-process worker.
    """
    options = PipelineOptions(beam_args)
    std = options.view_as(StandardOptions)
    if not std.runner:
        std.runner = "DirectRunner"
    gcp = options.view_as(GoogleCloudOptions)
    if not gcp.job_name:
        gcp.job_name = default_job_name
    if gcp.template_location and std.runner not in DATAFLOW_RUNNERS:
        print(
            f"error: --template_location={gcp.template_location} writes a Dataflow job "
            "description (a classic template): it needs --runner=DataflowRunner",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)
    if std.runner in ("DirectRunner", "direct", "BundleBasedDirectRunner"):
        direct = options.view_as(DirectOptions)
        given = " ".join(beam_args)
        if work_seconds is not None:
            small = work_seconds < MULTIPROCESS_MIN_SECONDS
        else:
            small = work_bytes is not None and work_bytes < MULTIPROCESS_MIN_BYTES
        if "direct_num_workers" not in given:
            direct.direct_num_workers = 1 if small else max(1, min(os.cpu_count() or 1, 8))
        if "direct_running_mode" not in given:
            direct.direct_running_mode = (
                "multi_processing" if direct.direct_num_workers > 1 else "in_memory"
            )
    return options


def new_pipeline(options: PipelineOptions) -> Any:
    """A ``beam.Pipeline`` for ``options``.

    On the DirectRunner, the pipeline runs on Beam's FnApiRunner, the runner
    the DirectRunner itself picks for a batch pipeline, made the same way. The
    DirectRunner would first try the Prism runner (Beam 2.77): it starts a
    worker pool and downloads a Go binary from GitHub, then falls back to the
    FnApiRunner when that fails (offline: every job, about 0.2 s each). On a
    machine with internet access the same job would run on Prism, where the
    worker settings above (``direct_num_workers``, ``direct_running_mode``)
    do not apply. Local runs thus behave the same on any machine. Other
    runners (Dataflow, template mode) are left to Beam.
    """
    import apache_beam as beam

    std = options.view_as(StandardOptions)
    if std.runner not in DIRECT_RUNNERS:
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(
            pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())
        )
    )
    return beam.Pipeline(
        runner=fn_runner.FnApiRunner(provision_info=provision_info), options=options
    )


def template_location(options: PipelineOptions) -> str | None:
    """Where ``--template_location`` asks for the Dataflow job description, if it does."""
    return options.view_as(GoogleCloudOptions).template_location or None


def stage_template(p: Any, options: PipelineOptions, job: str) -> dict[str, Any] | None:
    """Template mode: write the job's Dataflow description instead of running it.

    With ``--runner=DataflowRunner --template_location=gs://...``, Beam's
    DataflowRunner translates the pipeline, stages its artifacts (the
    pipeline proto, the pickled main session, ``--extra_packages``) under the
    staging location and writes the job description (a classic template) to
    the template location, without calling the Dataflow service. Nothing is
    read or written by the job's transforms: a platform team reviews the
    description, then launches it (``gcloud dataflow jobs run``). Returns what
    was staged, or None (not template mode: the caller runs the pipeline).
    """
    uri = template_location(options)
    if not uri:
        return None
    p.run()  # DataflowRunner: stage and write the template; no job is created
    gcp = options.view_as(GoogleCloudOptions)
    staged = {
        "job": job,
        "template_location": uri,
        "job_name": gcp.job_name,
        "project": gcp.project,
        "region": gcp.region,
        "staged": True,
    }
    print(
        f"{job}: Dataflow job description written to {uri} (staged, not run: nothing was "
        f"read or written). Launch it with: gcloud dataflow jobs run {gcp.job_name} "
        f"--gcs-location={uri} --region={gcp.region} --project={gcp.project}",
        flush=True,
    )
    return staged


def counters(result: Any) -> dict[str, int]:
    """Beam counter totals of a finished pipeline, by name (committed values)."""
    out: dict[str, int] = {}
    try:
        for c in result.metrics().query()["counters"]:
            value = c.committed if c.committed is not None else c.attempted
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    except Exception:  # some runners do not report metrics
        pass
    return out
