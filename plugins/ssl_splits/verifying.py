"""The verify task: one split's staged build checked before anything is published.

A plain Python task (mapped over the plan's specs, like ``build``) that calls
``beam_jobs.verification.verify.run`` in the task's process:

* exact mode (the default): the check from metadata (sizes and CRC32Cs the
  catalog predicts, compared with what storage reports). No Beam job and no
  record data read on GCS, so no pipeline start-up either.
* deep mode (``deep_verify: always``): ``verify.run`` also runs its Beam job,
  which re-reads every staged record, on the run's runner: the DirectRunner
  here, or submitted to Dataflow from this task (with the connection's
  credentials, the run's Dataflow settings and a job name of its own) and
  waited for. Unlike the build, a deep verification on Dataflow is not a job
  the Beam provider tracks: it has no Dataflow link in the UI, and killing the
  task does not cancel it (it only reads; a rerun verifies again).

A split the plan skipped is skipped, and so is every split in template mode
(the builds were staged, not run: there is nothing to verify). A failed
verification fails the task at once, naming the split and what differs.
"""

from __future__ import annotations

import contextlib
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ssl_splits.config import RunConfig
from ssl_splits.job_options import dataflow_config, pipeline_options, split_label

# The flags verify.run reads itself; the others are Beam pipeline options (deep mode).
JOB_FLAGS = ("split", "output_uri", "work_uri", "plan_uri", "catalog_dir", "copy_from", "layout")


def verify_split(
    config: dict[str, Any], spec: dict[str, Any], lease: dict[str, Any] | None
) -> dict[str, Any]:
    """Verify one split of this run holding the run's lock (``lease``); returns a
    summary for the task's XCom (mode, seconds, bytes read)."""
    from beam_jobs.verification import verify
    from ssl_splits.gcp import airflow_storage, gcp_credentials_for_subprocess
    from ssl_splits.tasks import holding_lock

    cfg = RunConfig.from_dict(config)
    with airflow_storage(), holding_lock(lease):
        _skip_unless_built(cfg, spec)
        # Deep mode runs Beam here: its gs:// access uses the connection's key, if any.
        with gcp_credentials_for_subprocess() if cfg.deep_verify else contextlib.nullcontext():
            try:
                report = verify.run(verify_argv(cfg, spec))
            except verify.VerificationFailed as err:
                raise AirflowFailException(f"{err}\nnothing was published") from None
    return {
        "split": split_label(spec),
        "job": "verify",
        "runner": cfg.runner if cfg.deep_verify else "in-process",
        "mode": report["mode"],
        "seconds": report["seconds"],
        "bytes_read": report["bytes_read"],
    }


def _skip_unless_built(cfg: RunConfig, spec: dict[str, Any]) -> None:
    """Skip a split the plan skipped, and every split in template mode."""
    if spec.get("action") == "skip":
        raise AirflowSkipException(f"{split_label(spec)}: {spec.get('reason')}")
    if cfg.template_location:
        raise AirflowSkipException(
            f"{split_label(spec)}: template mode: the build was staged as a Dataflow template, "
            "not run; there is nothing to verify"
        )


def verify_argv(cfg: RunConfig, spec: dict[str, Any]) -> list[str]:
    """``verify.run``'s arguments: the split's flags; in deep mode also ``--deep``,
    the runner and its pipeline options (as the Beam provider would pass them)."""
    from airflow.providers.apache.beam.hooks.beam import beam_options_to_args

    opts = pipeline_options(cfg, "verify", spec)
    if not cfg.deep_verify:
        return beam_options_to_args({k: v for k, v in opts.items() if k in JOB_FLAGS})
    opts["runner"] = cfg.runner
    if "labels" in opts:
        opts["labels"] = [f"{key}={value}" for key, value in opts["labels"].items()]
    df = dataflow_config(cfg, "verify", spec)
    if df is not None:
        from airflow.providers.google.cloud.hooks.dataflow import DataflowHook

        assert df.job_name is not None
        opts["job_name"] = DataflowHook.build_dataflow_job_name(df.job_name, df.append_job_name)
    return beam_options_to_args(opts)
