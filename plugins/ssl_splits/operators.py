"""The DAG's Beam tasks: the Beam provider's ``BeamRunPythonPipelineOperator``, as configured.

``validate_source`` and the mapped ``build`` run a ``beam_jobs`` job
(``beam_jobs.core.JOB_MODULES``) on the DirectRunner, as a subprocess of the
Airflow worker, or submit it to Dataflow, where the provider tracks the job,
links it in the UI and cancels it on kill. Airflow workers never read the
dataset themselves. Verification is a plain task (``ssl_splits.verifying``).

How a job is launched, as configured
    The provider starts ``[py_interpreter, *py_options, py_file]`` followed by
    ``--runner`` and the pipeline options as flags (``BeamHook.start_python_pipeline``).
    :func:`beam_task` passes ``py_options=["-m"]`` and the job's module name as
    ``py_file`` (the provider reads ``py_file`` as a path only when it starts with
    ``gs://``), so the command is ``python -m beam_jobs.building.build --runner=...
    --split=...``: no launcher file, this worker's interpreter
    (``py_interpreter``), no extra requirements (``py_requirements`` unset).
    The provider's per-job Beam version probe is skipped for this interpreter
    (``ssl_splits.beam_probe``, the one performance trick here, measured there).

What the provider cannot know
    A job's options come from the run's config and its split's spec, XComs
    known only when the task runs (both templated fields). So
    :class:`SplitBeamOperator` overrides ``execute``, the entry point Airflow
    gives every operator (and, for the probe, the hook it makes): it sets ``runner``,
    ``pipeline_options`` and ``dataflow_config`` (``ssl_splits.job_options``),
    skips a split the plan skipped, holds the run's lock and hands the
    ``google_cloud_default`` connection's credentials to the subprocess while
    the provider's ``execute`` runs, and turns "process failed with return code
    1" from the validation into what it found. In template mode
    (``ssl_splits.templates``) it overrides ``execute_on_dataflow``, the
    provider's public step after launching, because a staged job has no
    Dataflow job to wait for.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Sequence

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.sdk import BaseOperatorLink
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from beam_jobs import storage
from beam_jobs.core import JOB_MODULES
from ssl_splits.beam_probe import SkipVersionProbe
from ssl_splits.config import RunConfig
from ssl_splits.job_options import JOBS, dataflow_config, pipeline_options, split_label

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.definitions.mappedoperator import MappedOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)


class OutputFolderLink(BaseOperatorLink):
    """A link from a build task to the folder its split was written to."""

    name = "Output folder"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key="output_folder")
        if not value:
            return ""
        if value.startswith("gs://"):
            return "https://console.cloud.google.com/storage/browser/" + value[len("gs://") :]
        return "file://" + value


def beam_task(
    job: str, *, task_id: str, config: Any, spec: Any = None, specs: Any = None, **kwargs: Any
) -> SplitBeamOperator | MappedOperator:
    """The task running ``job`` (``validate`` or ``build``) with ``python -m <module>``
    for one spec, or mapped over ``specs`` (one task instance per split, indexed by
    the split's name). Other keyword arguments are the operator's."""
    if job not in JOBS:
        raise ValueError(f"job must be one of {JOBS}, got {job!r}")
    launch: dict[str, Any] = {
        "job": job,
        "config": config,
        "py_file": JOB_MODULES[job],
        "py_options": ["-m"],
        "py_interpreter": sys.executable,
        # Local runs stay in the worker: deferrable mode would run the pipeline
        # inside the triggerer.
        "deferrable": False,
        **kwargs,
    }
    if specs is None:
        return SplitBeamOperator(task_id=task_id, spec=spec, **launch)
    return SplitBeamOperator.partial(
        task_id=task_id, map_index_template="{{ task.spec['split'] }}", **launch
    ).expand(spec=specs)


class SplitBeamOperator(SkipVersionProbe, BeamRunPythonPipelineOperator):
    """Run a ``beam_jobs`` job for this DAG run (and one split, when mapped).

    :param job: ``validate`` or ``build``.
    :param config: the run config (``RunConfig.to_dict()``), usually an XComArg.
    :param spec: one split's spec from the plan task (build), or the source
        spec (validate). A spec with ``action == "skip"`` skips the task with
        the reason in the log; ``cached`` (a source validated before) runs nothing.
    """

    template_fields: Sequence[str] = (
        *BeamRunPythonPipelineOperator.template_fields,
        "config",
        "spec",
    )
    # Ours, and the provider's Dataflow job link (a URL only for jobs run on Dataflow).
    operator_extra_links = (OutputFolderLink(), *BeamRunPythonPipelineOperator.operator_extra_links)

    def __init__(self, *, job: str, config: Any, spec: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.config = config
        self.spec = spec

    def execute(self, context: Any) -> Any:
        from ssl_splits.gcp import airflow_storage, gcp_credentials_for_subprocess
        from ssl_splits.tasks import holding_lock

        # The run's lock: renewed now (a run whose lock was taken over stops
        # here) and in the background while the job runs, for hours if need be.
        lease = context["ti"].xcom_pull(task_ids="acquire_lock")
        with airflow_storage(), holding_lock(lease):
            cfg = RunConfig.from_dict(self.config)
            if not self._configure(cfg, context):
                return {"split": "source", "job": self.job, "runner": cfg.runner, "cached": True}
            with gcp_credentials_for_subprocess():
                try:
                    result = super().execute(context)
                except Exception as err:
                    raise explain_failure(self.job, self.spec, err) from err
                finally:
                    # The provider clears operator_extra_links off Dataflow, ours included
                    # (the worker stores these links when the task ends).
                    self.operator_extra_links = self._extra_links(cfg)
        return {
            "split": split_label(self.spec),
            "job": self.job,
            "runner": cfg.runner,
            "dataflow_job_id": self.dataflow_job_id,
            **(result if isinstance(result, dict) else {}),
        }

    def _configure(self, cfg: RunConfig, context: Any) -> bool:
        """Set this run's runner, options and Dataflow settings; False: nothing to run
        (a source validated before). Skips the task when the plan skipped the split."""
        spec = self.spec
        self.operator_extra_links = self._extra_links(cfg)
        if spec and spec.get("action") == "skip":
            raise AirflowSkipException(f"{split_label(spec)}: {spec.get('reason')}")
        if spec and spec.get("action") == "cached":
            log.info("not running %s: %s", self.job, spec.get("reason"))
            return False
        self.runner = cfg.runner
        self.pipeline_options = pipeline_options(cfg, self.job, spec)
        df = dataflow_config(cfg, self.job, spec)
        if df is not None:
            self.dataflow_config = df
        log.info(
            "%s %s on %s with %s",
            self.job,
            split_label(spec),
            cfg.runner,
            json.dumps(self.pipeline_options, sort_keys=True),
        )
        if self.job == "build" and spec:
            context["ti"].xcom_push(key="output_folder", value=cfg.output_uri)
        return True

    def _extra_links(self, cfg: RunConfig) -> tuple[BaseOperatorLink, ...]:
        """The links this task stores when it ends: the output folder for a build, and
        Dataflow's job link only for jobs run on Dataflow. A link whose XCom a task
        never pushes would be looked up anyway and log an error in every task log."""
        ours: tuple[BaseOperatorLink, ...] = (OutputFolderLink(),) if self.job == "build" else ()
        if cfg.is_dataflow:
            return (*ours, *BeamRunPythonPipelineOperator.operator_extra_links)
        return ours

    def execute_on_dataflow(self, context: Any) -> dict[str, Any]:
        """Submit to Dataflow and wait (the provider's), or in template mode only
        stage: the provider's hook runs the job's launcher as for a submission,
        and Beam's DataflowRunner writes the job description to
        ``--template_location`` and exits without creating a job, so there is
        no job to link or wait for."""
        template = self.pipeline_options.get("template_location")
        if not template:
            return super().execute_on_dataflow(context)
        self.beam_hook.start_python_pipeline(
            variables=self.snake_case_pipeline_options,
            py_file=self.py_file,
            py_options=self.py_options,
            py_interpreter=self.py_interpreter,
            py_requirements=self.py_requirements,
            py_system_site_packages=self.py_system_site_packages,
            process_line_callback=self.process_line_callback,
        )
        log.info("staged, not run: the Dataflow job description is at %s", template)
        return {"dataflow_job_id": None, "template_location": template}


def explain_failure(job: str, spec: dict[str, Any] | None, err: Exception) -> Exception:
    """Turn "process failed with return code 1" into what the job found: for the
    validation, the report it wrote (the original error otherwise)."""
    from beam_jobs.source.catalog import REPORT_FILE
    from beam_jobs.source.validate import format_report

    if job != "validate" or not spec:
        return err
    try:
        uri = storage.join(spec["catalog_dir"], REPORT_FILE)
        if storage.exists(uri):
            report = json.loads(storage.read_text(uri))
            if not report["ok"]:
                return AirflowFailException("the source is invalid:\n" + format_report(report))
    except Exception as inner:  # explaining must never hide the original error
        log.warning("could not read the job's report: %s", inner)
    return err
