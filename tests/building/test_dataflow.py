"""What we send to Dataflow: options, job names, the worker package.

Dataflow itself cannot be reached from here; these tests pin down everything
on our side of the wire: the command-line options each job gets, the
provider's DataflowConfiguration (job name carries the split), the params
Dataflow needs, and the wheel workers install (beam_jobs only, no Airflow,
no TensorFlow).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from email.parser import Parser

import pytest
from support.common import ROOT

pytest.importorskip("airflow")

from ssl_splits.config import ConfigError, resolve  # noqa: E402
from ssl_splits.job_options import dataflow_config, pipeline_options, template_uri  # noqa: E402

DATAFLOW_PARAMS = {
    "source_uri": "gs://src-bucket/imagenet",
    "output_uri": "gs://out-bucket/ssl",
    "runner": "DataflowRunner",
    "dataflow_project": "my-project",
    "dataflow_region": "europe-west4",
    "dataflow_temp_location": "gs://tmp-bucket/dataflow",
    "dataflow_worker_package": "gs://tmp-bucket/pkg/ssl_imagenet_splits-0.1.0-py3-none-any.whl",
    "dataflow_machine_type": "n2-highmem-4",
    "dataflow_max_workers": 50,
}
SPEC = {
    "split": "train128116.3",
    "kind": "supervised",
    "plan_uri": "gs://out-bucket/ssl/_work/plans/train128116.3.abc.csv",
    "catalog_dir": "gs://out-bucket/ssl/_work/catalog/0123456789abcdef",
}


def test_build_options_for_dataflow():
    cfg = resolve(DATAFLOW_PARAMS)
    opts = pipeline_options(cfg, "build", SPEC)
    assert opts["split"] == "train128116.3"
    assert opts["plan_uri"] == SPEC["plan_uri"] and opts["catalog_dir"] == SPEC["catalog_dir"]
    assert opts["source_uri"] == "gs://src-bucket/imagenet"  # where it is now (it may move)
    assert opts["output_uri"] == "gs://out-bucket/ssl"
    assert opts["work_uri"] == "gs://out-bucket/ssl/_work"
    assert opts["project"] == "my-project" and opts["region"] == "europe-west4"
    assert opts["temp_location"] == "gs://tmp-bucket/dataflow"
    assert opts["staging_location"] == "gs://tmp-bucket/dataflow/staging"
    assert opts["extra_packages"] == [DATAFLOW_PARAMS["dataflow_worker_package"]]
    assert opts["machine_type"] == "n2-highmem-4" and opts["max_num_workers"] == 50
    assert opts["labels"]["split"] == "train128116-3"
    assert "direct_num_workers" not in opts
    # Every label value must be legal for GCP labels.
    for v in opts["labels"].values():
        assert re.fullmatch(r"[a-z0-9_-]{0,63}", v), v


def test_airflow_side_of_a_job_does_not_import_beam(tmp_path):
    """The task process only prepares options and the Dataflow configuration:
    importing Apache Beam there (about a second) is paid by every task of a
    deployed Airflow, where each task is a new process."""
    code = (
        "import sys, json\n"
        "from ssl_splits.config import resolve\n"
        "from ssl_splits.job_options import dataflow_config, pipeline_options\n"
        "from ssl_splits.operators import SplitBeamOperator\n"
        "from ssl_splits.verifying import verify_argv\n"
        f"cfg = resolve({DATAFLOW_PARAMS!r})\n"
        f"spec = {SPEC!r}\n"
        "for job in ('build', 'verify'):\n"
        "    pipeline_options(cfg, job, spec); dataflow_config(cfg, job, spec)\n"
        "verify_argv(cfg, spec)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam')))\n"
    )
    from support.airflow_env import airflow_env

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**airflow_env(tmp_path), "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_verify_and_validate_options():
    cfg = resolve(DATAFLOW_PARAMS)
    verify = pipeline_options(cfg, "verify", SPEC)
    assert verify["deep"] is False  # default on Dataflow: storage checksums only
    assert "source_uri" not in verify
    val = pipeline_options(cfg, "validate", {"catalog_dir": "gs://out-bucket/ssl/_work/catalog/x"})
    assert val["source_uri"] == "gs://src-bucket/imagenet" and val["num_classes"] == 1000
    copy = pipeline_options(cfg, "build", {"split": "validation", "kind": "validation"})
    assert copy["copy_from"] == "gs://src-bucket/imagenet" and "plan_uri" not in copy


def test_dataflow_job_names_carry_the_split():
    cfg = resolve(DATAFLOW_PARAMS)
    df = dataflow_config(cfg, "build", SPEC)
    assert df.job_name == "ssl-build-train128116-3"
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", df.job_name)
    assert df.project_id == "my-project" and df.location == "europe-west4"
    assert df.gcp_conn_id == "google_cloud_default"
    assert df.append_job_name is True and df.wait_until_finished is True
    names = {
        dataflow_config(cfg, "build", {**SPEC, "split": f"train128116.{s}"}).job_name
        for s in range(1, 6)
    }
    assert len(names) == 5
    assert (
        dataflow_config(resolve({**DATAFLOW_PARAMS, "runner": "DirectRunner"}), "build", SPEC)
        is None
    )


@pytest.mark.parametrize(
    "missing, message",
    [
        ("dataflow_project", "dataflow_project"),
        ("dataflow_temp_location", "dataflow_temp_location"),
        ("dataflow_worker_package", "bin/build-worker-package"),
    ],
)
def test_dataflow_params_required(missing, message):
    with pytest.raises(ConfigError, match=message):
        resolve({**DATAFLOW_PARAMS, missing: None})


def test_template_mode_sends_each_job_to_its_own_template():
    cfg = resolve({**DATAFLOW_PARAMS, "dataflow_template_location": "gs://tmp-bucket/templates/"})
    assert cfg.template_location == "gs://tmp-bucket/templates"
    build = pipeline_options(cfg, "build", SPEC)
    assert (
        build["template_location"]
        == template_uri(cfg, "build", SPEC)
        == "gs://tmp-bucket/templates/ssl-build-train128116-3"
    )
    val = pipeline_options(cfg, "validate", {"catalog_dir": "gs://out-bucket/ssl/_work/catalog/x"})
    assert val["template_location"] == "gs://tmp-bucket/templates/ssl-validate-source"
    # Without the param, jobs are submitted: no template option at all.
    assert "template_location" not in pipeline_options(resolve(DATAFLOW_PARAMS), "build", SPEC)
    assert resolve(DATAFLOW_PARAMS).template_location is None


@pytest.mark.parametrize(
    "params, message",
    [
        ({"runner": "DirectRunner"}, "needs runner DataflowRunner"),
        ({"dataflow_template_location": "/tmp/templates"}, "must be a gs:// folder"),
        ({"dataflow_template_location": "gs://b/../x"}, "'..' is not allowed"),
    ],
)
def test_template_location_checked(params, message):
    with pytest.raises(ConfigError, match=message):
        resolve({**DATAFLOW_PARAMS, "dataflow_template_location": "gs://tmp-bucket/t", **params})


def test_dataflow_needs_gcs_paths():
    with pytest.raises(ConfigError, match="output_uri must be gs://"):
        resolve({**DATAFLOW_PARAMS, "output_uri": "/tmp/out"})


def test_worker_package_is_beam_jobs_only(tmp_path):
    out = subprocess.run(
        [str(ROOT / "bin" / "build-worker-package"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    wheel = out.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(meta_name).decode())
    modules = {n for n in names if n.startswith("beam_jobs/")}
    for needed in (
        "source/validate",
        "building/build",
        "verification/verify",
        "planning/algorithm",
        "source/tfrecord",
        "source/example_proto",
        "source/catalog",
        "publishing/manifest",
        "storage/__init__",
        "storage/base",
        "storage/local",
        "storage/gcs",
        "storage/schemes",
        "storage/ranges",
    ):
        assert f"beam_jobs/{needed}.py" in modules
    # Exactly the tree's modules: nothing stale from an in-tree build/ folder.
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "beam_jobs").rglob("*.py")}
    assert {n for n in modules if n.endswith(".py")} == tree
    assert not [n for n in names if n.startswith(("dags/", "plugins/", "tests/", "ssl_splits"))]
    # The published lists travel with the package (workers and the plan task load them
    # from it), each beside its notice, and load from the wheel itself with their sha256.
    from beam_jobs.planning import protocols

    for entry in protocols.LISTS.values():
        assert f"beam_jobs/data/{entry.path}" in names
        assert f"beam_jobs/data/{entry.path.split('/')[0]}/NOTICE.md" in names
        data = protocols.read_bytes(entry.ref, root=zipfile.Path(wheel, "beam_jobs/data/"))
        assert len(data) and data.count(b"\n") == entry.lines
    requires = " ".join(meta.get_all("Requires-Dist") or []).lower()
    assert "apache-beam" in requires and "google-crc32c" in requires
    assert "airflow" not in requires and "tensorflow" not in requires


def test_verify_task_arguments_exact_and_deep_on_dataflow():
    """The verify task runs verify.run in its process: exact mode gets the split's
    flags only; deep mode also the runner and Dataflow's options, as the provider
    would pass them (labels as key=value, a job name of its own with a suffix)."""
    from ssl_splits.verifying import verify_argv

    exact = verify_argv(resolve(DATAFLOW_PARAMS), SPEC)
    assert "--split=train128116.3" in exact and f"--plan_uri={SPEC['plan_uri']}" in exact
    assert not [a for a in exact if a.startswith(("--runner", "--project", "--deep"))], exact
    deep = verify_argv(resolve({**DATAFLOW_PARAMS, "deep_verify": "always"}), SPEC)
    assert {"--deep", "--runner=DataflowRunner", "--project=my-project"} <= set(deep), deep
    assert "--labels=split=train128116-3" in deep and "--labels=app=ssl-imagenet-splits" in deep
    (name,) = [a for a in deep if a.startswith("--job_name=")]
    assert re.fullmatch(r"--job_name=ssl-verify-train128116-3-[0-9a-f]{8}", name), name
