"""The one performance trick of the Beam tasks: no Beam version probe per job.

``BeamHook.start_python_pipeline`` (apache-airflow-providers-apache-beam) runs
``python -c "import apache_beam; print(apache_beam.__version__)"`` before every
job, only to log the version (and to refuse impersonation before Beam 2.39).
Importing Beam costs about a second of CPU, paid by every Beam task. The jobs
run with this worker's own interpreter and Beam, whose version the package
metadata gives for free. Measured side by side (3 interleaved pairs of
``bin/demo``, the DAG from trigger to manifest): 24.5 s with the probe,
16.6 s without (x1.50; validate and each build about 1 s longer).

:class:`SkipVersionProbe` is mixed into the operator: after the provider made
its hook (``_init_pipeline_options``) it swaps in :class:`NoProbeBeamHook`,
which differs from the provider's only in the probe, and only for this
interpreter without extra requirements (a virtualenv the provider makes is
probed as the provider does).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Any

from airflow.providers.apache.beam.hooks.beam import BeamHook


class NoProbeBeamHook(BeamHook):
    """The provider's Beam hook, logging the version from package metadata."""

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
        if "labels" in variables:  # as the provider formats them
            variables["labels"] = [f"{key}={value}" for key, value in variables["labels"].items()]
        self.log.info("Beam version: %s", version("apache-beam"))
        self._start_pipeline(
            variables=variables,
            command_prefix=[py_interpreter, *py_options, py_file],
            process_line_callback=process_line_callback,
            is_dataflow_job_id_exist_callback=is_dataflow_job_id_exist_callback,
        )
        return None


class SkipVersionProbe:
    """Mixin for ``BeamRunPythonPipelineOperator``: its hook without the probe."""

    runner: str
    beam_hook: BeamHook

    def _init_pipeline_options(self, *args: Any, **kwargs: Any) -> Any:
        out = super()._init_pipeline_options(*args, **kwargs)  # type: ignore[misc]
        self.beam_hook = NoProbeBeamHook(runner=self.runner)
        return out
