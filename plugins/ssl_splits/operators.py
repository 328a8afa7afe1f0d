"""``SplitBeamOperator``: the Beam provider's Python operator, configured per run.

A thin subclass of ``BeamRunPythonPipelineOperator``: it launches one of the
``beam_jobs`` modules (``python -m beam_jobs.source.validate``, ``beam_jobs.building.build``, ``beam_jobs.verification.verify``) with the
pipeline options derived from the run's config (an XCom of the DAG's first
task) and, for mapped tasks, from one split's spec. So one DAG runs the jobs
on the DirectRunner (a subprocess of the Airflow worker) or submits them to
Dataflow, where the provider tracks the job, links it in the UI and cancels it
on kill. Airflow workers never read the dataset themselves.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Sequence

from airflow.providers.apache.beam.hooks.beam import BeamHook
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowConfiguration
from airflow.sdk import BaseOperatorLink
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from beam_jobs import storage
from beam_jobs.core import JOB_MODULES, VALIDATION, job_name
from ssl_splits.config import RunConfig
from ssl_splits.gcp import gcp_credentials_for_subprocess

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

JOBS = ("validate", "build", "verify")


def pipeline_options(cfg: RunConfig, job: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """The ``--flags`` a job gets: its own args plus runner options (pure)."""

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
    if job != "validate":
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
    if cfg.is_dataflow and cfg.dataflow:
        df = cfg.dataflow
        opts.update(
            project=df.project,
            region=df.region,
            temp_location=df.temp_location,
            staging_location=storage.join(df.temp_location, "staging"),
            machine_type=df.machine_type,
            max_num_workers=df.max_num_workers,
            extra_packages=[df.worker_package] if df.worker_package else None,
            labels={
                "app": "ssl-imagenet-splits",
                "split": job_name((spec or {}).get("split", "source")),
            },
        )
        if cfg.template_location:
            opts["template_location"] = template_uri(cfg, job, spec)
    elif cfg.direct_num_workers:
        opts["direct_num_workers"] = cfg.direct_num_workers
    return {k: v for k, v in opts.items() if v is not None}


def template_uri(cfg: RunConfig, job: str, spec: dict[str, Any] | None) -> str:
    """Where template mode writes a job's Dataflow description (pure):
    ``{dataflow_template_location}/ssl-{job}-{split}``, the job's name without
    the run's suffix, so a later run of the same job replaces it."""

    assert cfg.template_location is not None
    return storage.join(
        cfg.template_location, job_name("ssl", job, (spec or {}).get("split", "source"))
    )


def dataflow_config(
    cfg: RunConfig, job: str, spec: dict[str, Any] | None
) -> DataflowConfiguration | None:
    """Dataflow job settings: the job name carries the split (``ssl-build-train128116-3``)."""
    if not cfg.is_dataflow or not cfg.dataflow:
        return None

    return DataflowConfiguration(
        job_name=job_name("ssl", job, (spec or {}).get("split", "source")),
        append_job_name=True,
        project_id=cfg.dataflow.project,
        location=cfg.dataflow.region,
        gcp_conn_id="google_cloud_default",
        wait_until_finished=True,
        max_num_workers=cfg.dataflow.max_num_workers,
    )


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


class SplitBeamHook(BeamHook):
    """The provider's Beam hook without its per-job version probe.

    ``BeamHook.start_python_pipeline`` starts ``python -c "import apache_beam;
    print(apache_beam.__version__)"`` before every job only to log the version
    (and to refuse impersonation before Beam 2.39): about 4 s of imports per
    task here. The jobs run with this interpreter's own Beam, whose version the
    package metadata gives at no cost; everything else is the provider's.
    """

    def start_python_pipeline(
        self,
        variables: dict,
        py_file: str,
        py_options: list[str],
        py_interpreter: str = "python3",
        py_requirements: list[str] | None = None,
        py_system_site_packages: bool = False,
        process_line_callback: Any = None,
        is_dataflow_job_id_exist_callback: Any = None,
    ) -> None:
        if py_requirements is not None or py_interpreter != sys.executable:
            return super().start_python_pipeline(
                variables,
                py_file,
                py_options,
                py_interpreter,
                py_requirements,
                py_system_site_packages,
                process_line_callback,
                is_dataflow_job_id_exist_callback,
            )
        from importlib.metadata import version

        if "labels" in variables:
            variables["labels"] = [f"{key}={value}" for key, value in variables["labels"].items()]
        self.log.info("Beam version: %s", version("apache-beam"))
        self._start_pipeline(
            variables=variables,
            command_prefix=[py_interpreter, *py_options, py_file],
            process_line_callback=process_line_callback,
            is_dataflow_job_id_exist_callback=is_dataflow_job_id_exist_callback,
        )
        return None


class SplitBeamOperator(BeamRunPythonPipelineOperator):
    """Run a ``beam_jobs`` job for this DAG run (and one split, when mapped).

    :param job: ``validate``, ``build`` or ``verify``.
    :param config: the run config (``RunConfig.to_dict()``), usually an XComArg.
    :param spec: one split's spec from the plan task (build and verify), or
        the source spec (validate). A spec with ``action == "skip"`` skips the
        task with the reason in the log.
    """

    template_fields: Sequence[str] = (
        *BeamRunPythonPipelineOperator.template_fields,
        "config",
        "spec",
    )
    # Ours, and the provider's Dataflow job link (a URL only for jobs run on Dataflow).
    operator_extra_links = (OutputFolderLink(), *BeamRunPythonPipelineOperator.operator_extra_links)

    def __init__(self, *, job: str, config: Any, spec: Any = None, **kwargs: Any) -> None:
        if job not in JOBS:
            raise ValueError(f"job must be one of {JOBS}, got {job!r}")
        kwargs.setdefault("py_file", JOB_MODULES[job])
        kwargs.setdefault("py_options", ["-m"])
        kwargs.setdefault("py_interpreter", sys.executable)
        # Local runs stay in the worker: deferrable mode would run the pipeline
        # inside the triggerer.
        kwargs.setdefault("deferrable", False)
        super().__init__(**kwargs)
        self.job = job
        self.config = config
        self.spec = spec

    def _init_pipeline_options(self, *args: Any, **kwargs: Any) -> Any:
        out = super()._init_pipeline_options(*args, **kwargs)
        self.beam_hook = SplitBeamHook(runner=self.runner)
        return out

    def execute(self, context: Any) -> Any:
        from ssl_splits.gcp import airflow_storage
        from ssl_splits.tasks import holding_lock

        # The run's lock: renewed now (a run whose lock was taken over stops
        # here) and in the background while the job runs, for hours if need be.
        lease = context["ti"].xcom_pull(task_ids="acquire_lock")
        with airflow_storage(), holding_lock(lease):
            return self._execute(context)

    def _extra_links(self, cfg: RunConfig) -> tuple[BaseOperatorLink, ...]:
        """The links this task stores when it ends: the output folder for a build, and
        Dataflow's job link only for jobs run on Dataflow. A link whose XCom a task
        never pushes would be looked up anyway and log an error in every task log."""
        ours: tuple[BaseOperatorLink, ...] = (OutputFolderLink(),) if self.job == "build" else ()
        if cfg.is_dataflow:
            return (*ours, *BeamRunPythonPipelineOperator.operator_extra_links)
        return ours

    def _execute(self, context: Any) -> Any:
        cfg = RunConfig.from_dict(self.config)
        self.operator_extra_links = self._extra_links(cfg)
        spec = self.spec
        if spec and spec.get("action") == "skip":
            raise AirflowSkipException(f"{spec.get('split', 'source')}: {spec.get('reason')}")
        if spec and spec.get("action") == "cached":
            log.info("not running %s: %s", self.job, spec.get("reason"))
            return {"split": "source", "job": self.job, "runner": cfg.runner, "cached": True}
        if cfg.template_location and self.job == "verify":
            raise AirflowSkipException(
                f"{spec.get('split') if spec else 'source'}: template mode: the build was staged "
                "as a Dataflow template, not run; there is nothing to verify"
            )
        self.runner = cfg.runner
        self.pipeline_options = pipeline_options(cfg, self.job, spec)
        df = dataflow_config(cfg, self.job, spec)
        if df is not None:
            self.dataflow_config = df
        label = spec.get("split", "source") if spec else "source"
        log.info(
            "%s %s on %s with %s",
            self.job,
            label,
            cfg.runner,
            json.dumps(self.pipeline_options, sort_keys=True),
        )
        if self.job == "build" and spec:
            context["ti"].xcom_push(key="output_folder", value=cfg.output_uri)
        if self.job == "verify" and not cfg.deep_verify:
            return self._verify_exact(label)
        with gcp_credentials_for_subprocess():
            try:
                result = super().execute(context)
            except Exception as err:
                raise self._explain(cfg, spec, err) from err
            finally:
                # The provider clears operator_extra_links off Dataflow, ours included (the
                # worker stores these links when the task ends).
                self.operator_extra_links = self._extra_links(cfg)
        return {
            "split": label,
            "job": self.job,
            "runner": cfg.runner,
            "dataflow_job_id": self.dataflow_job_id,
            **(result if isinstance(result, dict) else {}),
        }

    def _verify_exact(self, label: str) -> dict[str, Any]:
        """The exact check from metadata needs no Beam job (no record data is
        read on GCS): run it in this task, without a pipeline's start-up."""
        from airflow.providers.apache.beam.hooks.beam import beam_options_to_args

        from beam_jobs.verification import verify
        from ssl_splits.gcp import airflow_storage

        own = {"split", "output_uri", "work_uri", "plan_uri", "catalog_dir", "copy_from", "layout"}
        argv = beam_options_to_args({k: v for k, v in self.pipeline_options.items() if k in own})
        with airflow_storage():
            try:
                report = verify.run(argv)
            except verify.VerificationFailed as err:
                raise AirflowFailException(f"{err}\nnothing was published") from None
        return {
            "split": label,
            "job": self.job,
            "runner": "in-process",
            "mode": report["mode"],
            "seconds": report["seconds"],
            "bytes_read": report["bytes_read"],
        }

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

    def _explain(self, cfg: RunConfig, spec: dict[str, Any] | None, err: Exception) -> Exception:
        """Turn "process failed with return code 1" into what the job found."""
        from beam_jobs.layout import report_uri
        from beam_jobs.source.catalog import REPORT_FILE
        from beam_jobs.source.validate import format_report

        try:
            if self.job == "validate" and spec:
                uri = storage.join(spec["catalog_dir"], REPORT_FILE)
                if storage.exists(uri):
                    report = json.loads(storage.read_text(uri))
                    if not report["ok"]:
                        return AirflowFailException(
                            "the source is invalid:\n" + format_report(report)
                        )
            if self.job == "verify" and spec:
                uri = report_uri(cfg.work_uri, spec["split"])
                if storage.exists(uri):
                    report = json.loads(storage.read_text(uri))
                    if not report["ok"]:
                        return AirflowFailException(
                            f"{spec['split']} failed verification; nothing was published:\n  "
                            + "\n  ".join(report["findings"][:20])
                        )
        except Exception as inner:  # explaining must never hide the original error
            log.warning("could not read the job's report: %s", inner)
        return err
