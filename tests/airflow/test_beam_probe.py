"""The Beam tasks skip the provider's per-job Beam version probe for this
interpreter (ssl_splits.beam_probe), and only there."""

from __future__ import annotations

import sys

import pytest
from airflow.providers.apache.beam.hooks import beam as provider_hook
from ssl_splits.beam_probe import NoProbeBeamHook
from ssl_splits.operators import SplitBeamOperator


@pytest.fixture
def launched(monkeypatch):
    """Records the probes and the launched commands, running neither."""
    seen: dict[str, list] = {"probes": [], "commands": []}

    def probe(cmd, *a, **k):
        seen["probes"].append(cmd)
        return b"2.0.0\n"

    monkeypatch.setattr(provider_hook.subprocess, "check_output", probe)
    monkeypatch.setattr(
        NoProbeBeamHook,
        "_start_pipeline",
        lambda self, variables, command_prefix, **k: seen["commands"].append(
            (command_prefix, variables)
        ),
    )
    return seen


def test_this_interpreter_is_not_probed(launched):
    hook = NoProbeBeamHook(runner="DirectRunner")
    variables = {"labels": {"a": "b"}, "split": "train"}
    hook.start_python_pipeline(variables, "beam_jobs.building.build", ["-m"], sys.executable)
    assert launched["probes"] == []
    assert launched["commands"] == [
        ([sys.executable, "-m", "beam_jobs.building.build"], {"labels": ["a=b"], "split": "train"})
    ]


def test_another_interpreter_is_probed_as_the_provider_does(launched):
    hook = NoProbeBeamHook(runner="DirectRunner")
    hook.start_python_pipeline({}, "beam_jobs.building.build", ["-m"], "/usr/bin/python3")
    assert len(launched["probes"]) == 1 and launched["probes"][0][:2] == ["/usr/bin/python3", "-c"]
    assert launched["commands"][0][0] == ["/usr/bin/python3", "-m", "beam_jobs.building.build"]


def test_the_operator_launches_with_the_hook_without_the_probe():
    op = SplitBeamOperator(
        task_id="t",
        job="build",
        config={},
        py_file="beam_jobs.building.build",
        runner="DirectRunner",
    )
    op._init_pipeline_options(format_pipeline_options=True, job_name_variable_key="job_name")
    assert type(op.beam_hook) is NoProbeBeamHook
