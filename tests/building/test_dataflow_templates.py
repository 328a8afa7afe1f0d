"""Real Dataflow job descriptions, staged to a local GCS (no Google account).

Beam's DataflowRunner with ``--template_location=gs://...`` translates the
pipeline, stages its artifacts (``pipeline.pb``, the pickled main session, the
worker package) and writes the job description, without calling the Dataflow
service. Against the GCS emulator on loopback this runs here, for every job
the DAG sends to Dataflow: validate, the build of a seeded split, the
reshuffle, the validation copy, and the deep verification.

Each job is staged through its CLI with exactly the options the DAG chooses
(``pipeline_options`` and ``dataflow_config`` of ``ssl_splits.job_options``,
turned into flags by the Beam provider's own ``beam_options_to_args``), and
through Airflow itself (``bin/airflow dags test`` with
``dataflow_template_location``: the operator, the provider's hook and Beam's
DataflowRunner stop at the point of submission and write the template).

What is checked, from the staged files themselves (``beam_jobs.building.template.describe``):

* each description equals its entry in ``tests/golden/dataflow_jobs.json``:
  the graph (every transform's name and URN, in topological order), the
  staged files, the worker wheel's modules and requirements, the SDK and its
  container, job name, labels, machine type, max workers and the options
  that matter. Any change to the graph, the wheel or the options fails here.
  If the change is intended, regenerate the golden file and review its diff::

      SSL_SPLITS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/building/test_dataflow_templates.py

* explicitly: ``Create -> Reshuffle -> ParDo(the job's DoFn)`` (the Reshuffle
  makes Dataflow spread the shards over its workers instead of fusing them
  onto one), the staged wheel is byte for byte the one
  ``bin/build-worker-package`` built, and the SDK and container are the
  locked Beam's.

Beam looks for Google credentials once per process and, finding none, retries
for about 25 s before it goes on anonymously. The jobs get an offline
credential instead (an access token that never expires; the emulator ignores
it), so ``google.auth.default()`` answers at once and nothing leaves loopback.
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.common import ROOT

pytest.importorskip("airflow")

pytestmark = [pytest.mark.slow, pytest.mark.gcs, pytest.mark.xdist_group("dataflow_templates")]

GOLDEN = ROOT / "tests" / "golden" / "dataflow_jobs.json"
UPDATE = os.environ.get("SSL_SPLITS_UPDATE_GOLDEN") == "1"
PROJECT = "ssl-splits-ci"
# The ParDo after Create -> Reshuffle, per golden entry: (its label, its DoFn's module and class).
JOBS = {
    "validate": ("ValidateShard", "beam_jobs.source.validate", "ValidateShard"),
    "build_seeded": ("WriteShard", "beam_jobs.building.build", "WriteShard"),
    "build_reshuffle": ("WriteShard", "beam_jobs.building.build", "WriteShard"),
    "build_validation": ("CopyShard", "beam_jobs.building.build", "CopyShard"),
    "verify_deep": ("DeepCheck", "beam_jobs.verification.deep", "DeepCheck"),
}
CREATE_URN = "beam:transform:pickled_python:v1"  # beam.Create, a Python composite
RESHUFFLE_URN = "beam:transform:reshuffle:v1"
PARDO_URN = "beam:transform:pardo:v1"
# An authorized-user credential with a token valid until 2999: google.auth.default()
# loads it without any network call and nothing ever refreshes it.
OFFLINE_CREDENTIALS = {
    "type": "authorized_user",
    "client_id": "ssl-splits-ci",
    "client_secret": "ssl-splits-ci",
    "refresh_token": "ssl-splits-ci",
    "token": "ssl-splits-ci-offline-token",
    "expiry": "2999-01-01T00:00:00Z",
}


def offline_env(tmp: Path) -> dict[str, str]:
    """The offline credential for Beam, and a bytecode cache for the many Beam
    processes (this environment writes no .pyc: each would compile Beam again,
    ~10 s; the cache is the one the benchmark smoke test shares)."""
    path = tmp / "offline-credentials.json"
    path.write_text(json.dumps(OFFLINE_CREDENTIALS))
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(path),
        "PYTHONPYCACHEPREFIX": str(ROOT / ".bench" / "pycache"),
        "PYTHONDONTWRITEBYTECODE": "",
    }


def locked_beam_version() -> str:
    m = re.search(
        r"^apache-beam(?:\[[^\]]*\])?==([^\s;\\]+)", (ROOT / "requirements.lock").read_text(), re.M
    )
    assert m, "apache-beam is not pinned in requirements.lock"
    return m.group(1)


# --------------------------------------------------------------------------- staging


def dataflow_argv(cfg: Any, job: str, spec: dict[str, Any] | None) -> list[str]:
    """The job's command-line flags as the DAG's operator sends them: our options,
    then the provider's (job name, project, region, runner), through the provider's
    own options-to-flags function."""
    from airflow.providers.apache.beam.hooks.beam import beam_options_to_args
    from ssl_splits.job_options import dataflow_config, pipeline_options

    opts = pipeline_options(cfg, job, spec)
    df = dataflow_config(cfg, job, spec)
    opts.update(job_name=df.job_name, project=df.project_id, region=df.location)
    return [*beam_options_to_args(opts), "--runner=DataflowRunner"]


def _run_all(
    commands: list[tuple[str, list[str]]], env: dict[str, str], cwd: Path, parallel: int = 3
) -> dict[str, subprocess.CompletedProcess]:
    """Run ``python -m module args`` commands, a few at a time."""
    out: dict[str, subprocess.CompletedProcess] = {}
    pending = list(commands)
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", *argv],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, argv in batch
        }
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=300)
            out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


def _ok(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def world(gcs_emulator, small_source, tmp_path_factory) -> dict[str, Any]:
    """A source on the emulator, validated, planned and one split built (DirectRunner),
    the worker wheel, and the params of a Dataflow run in template mode."""
    from ssl_splits.config import resolve
    from ssl_splits.tasks import describe_source
    from ssl_splits.tasks import plan as plan_task

    from beam_jobs import storage

    tmp = tmp_path_factory.mktemp("dataflow_templates")
    bucket = f"df-{uuid.uuid4().hex[:10]}"
    storage.gcs_client().create_bucket(bucket)
    for f in sorted(small_source.iterdir()):
        if f.name.startswith(("train-", "validation-")):
            storage.copy(str(f), f"gs://{bucket}/imagenet/{f.name}")
    wheel_out = subprocess.run(
        [str(ROOT / "bin" / "build-worker-package"), str(tmp / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    _ok(wheel_out, "bin/build-worker-package")
    wheel = Path(wheel_out.stdout.strip().splitlines()[-1])
    params = {
        "source_uri": f"gs://{bucket}/imagenet",
        "output_uri": f"gs://{bucket}/ssl",
        "seeds": [1],
        "num_classes": 10,
        "runner": "DataflowRunner",
        "dataflow_project": PROJECT,
        "dataflow_region": "europe-west4",
        "dataflow_temp_location": f"gs://{bucket}/dataflow-tmp",
        "dataflow_worker_package": str(wheel),
        "dataflow_machine_type": "n2-highmem-8",
        "dataflow_max_workers": 37,
        "dataflow_template_location": f"gs://{bucket}/templates",
    }
    cfg = resolve(params)
    env = {**os.environ, **offline_env(tmp)}
    source = describe_source(cfg).to_dict()
    _ok(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "beam_jobs.source.validate",
                f"--source_uri={cfg.source_uri}",
                f"--catalog_dir={source['catalog_dir']}",
                "--num_classes=10",
            ],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "validate (DirectRunner)",
    )
    specs = {s["split"]: s for s in plan_task(cfg.to_dict(), {**source, "action": "cached"})}
    seeded = next(s for name, s in specs.items() if name.startswith("train") and name != "train")
    _ok(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "beam_jobs.building.build",
                f"--split={seeded['split']}",
                f"--plan_uri={seeded['plan_uri']}",
                f"--catalog_dir={seeded['catalog_dir']}",
                f"--output_uri={cfg.output_uri}",
                f"--work_uri={cfg.work_uri}",
            ],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "build (DirectRunner)",
    )
    return {
        "bucket": bucket,
        "params": params,
        "cfg": cfg,
        "source": source,
        "specs": specs,
        "seeded": seeded,
        "wheel": wheel,
        "env": env,
        "tmp": tmp,
    }


def job_specs(world: dict[str, Any]) -> dict[str, tuple[Any, str, dict[str, Any] | None]]:
    """(config, job, spec) of every golden entry, as the DAG would run them."""
    from ssl_splits.config import resolve

    specs = world["specs"]
    deep = resolve({**world["params"], "deep_verify": "always"})  # the DAG's deep verify
    return {
        "validate": (world["cfg"], "validate", world["source"]),
        "build_seeded": (world["cfg"], "build", world["seeded"]),
        "build_reshuffle": (world["cfg"], "build", specs["train"]),
        "build_validation": (world["cfg"], "build", specs["validation"]),
        "verify_deep": (deep, "verify", world["seeded"]),
    }


@pytest.fixture(scope="module")
def staged(world) -> dict[str, dict[str, Any]]:
    """Every job staged through its CLI; name -> describe() of its template."""
    from ssl_splits.job_options import template_uri

    from beam_jobs.building.template import describe
    from beam_jobs.core import JOB_MODULES

    jobs = job_specs(world)
    commands = [
        (name, [JOB_MODULES[job], *dataflow_argv(cfg, job, spec)])
        for name, (cfg, job, spec) in jobs.items()
    ]
    results = _run_all(commands, world["env"], world["tmp"])
    out = {}
    for name, (cfg, job, spec) in jobs.items():
        _ok(results[name], f"staging {name}")
        uri = template_uri(cfg, job, spec)
        assert f"Dataflow job description written to {uri} (staged, not run" in results[name].stdout
        out[name] = describe(uri)
    return out


# --------------------------------------------------------------------------- golden


def normalize(desc: dict[str, Any], bucket: str) -> dict[str, Any]:
    """A description without what changes from run to run: the bucket, Dataflow's
    per-submission suffixes (``-1a2b3c4d`` on Airflow's job names,
    ``.<seconds>.<micros>`` on staging folders), the launcher's local paths, and
    the Airflow version label the provider adds."""

    def gs(v: str) -> str:
        v = v.replace(f"gs://{bucket}/", "gs://BUCKET/")
        return re.sub(r"(ssl-[a-z0-9-]+?)(-[0-9a-f]{8})?\.\d+\.\d+", r"\1.SUBMISSION", v)

    opts = dict(desc["options"])
    opts.pop("labels", None)  # Beam keeps the raw flag; the job's labels are below
    opts["job_name"] = re.sub(r"-[0-9a-f]{8}$", "", opts["job_name"])
    for k in ("temp_location", "staging_location", "template_location"):
        if k in opts:
            opts[k] = gs(opts[k])
    opts["extra_packages"] = [os.path.basename(p) for p in opts.get("extra_packages", [])]
    if "max_num_workers" in opts:
        opts["max_num_workers"] = int(opts["max_num_workers"])
    return {
        "type": desc["type"],
        "sdk": desc["sdk"],
        "container_images": desc["container_images"],
        "single_core_per_container": desc["single_core_per_container"],
        "machine_type": desc["machine_type"],
        "max_workers": desc["max_workers"],
        "labels": {k: v for k, v in desc["labels"].items() if k != "airflow-version"},
        "options": opts,
        "staged_files": sorted(desc["staged_files"]),
        "wheels": desc["wheels"],
        "transforms": [f"{'  ' * t['depth']}{t['name']}  [{t['urn']}]" for t in desc["transforms"]],
    }


def _golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"jobs": {}}


def test_descriptions_match_the_golden_file(staged, world):
    got = {name: normalize(d, world["bucket"]) for name, d in staged.items()}
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(
            json.dumps(
                {
                    "about": "Dataflow job descriptions the DAG stages (tests/building/test_dataflow_templates.py); "
                    "regenerate: SSL_SPLITS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest "
                    "tests/building/test_dataflow_templates.py, then review the diff",
                    "jobs": got,
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )
    want = _golden()["jobs"]
    assert set(got) == set(want), f"jobs {sorted(got)} vs golden {sorted(want)}"
    for name in JOBS:
        for key in want[name]:
            assert got[name][key] == want[name][key], (
                f"{name}: {key} differs from tests/golden/dataflow_jobs.json; if intended, "
                "regenerate it (SSL_SPLITS_UPDATE_GOLDEN=1, see this module's docstring)\n"
                f"now:    {json.dumps(got[name][key], indent=1)}\n"
                f"golden: {json.dumps(want[name][key], indent=1)}"
            )
        assert got[name] == want[name], name


@pytest.mark.parametrize("name", sorted(JOBS))
def test_graph_is_create_reshuffle_then_the_jobs_dofn(staged, name):
    """Create ("Shards") -> Reshuffle -> ParDo(the DoFn), wired output to input in
    the staged proto (not just named in order); the Reshuffle and the ParDo may sit
    inside a composite of the job's (e.g. ``Verify/Spread``, ``Verify/DeepCheck``)."""
    from apache_beam.portability.api import beam_runner_api_pb2

    from beam_jobs import storage

    proto = beam_runner_api_pb2.Pipeline.FromString(
        storage.read_bytes(staged[name]["pipeline_url"])
    )
    transforms = list(proto.components.transforms.values())
    by_name = {t.unique_name: t for t in transforms}
    top = [t["name"] for t in staged[name]["transforms"] if t["depth"] == 0]
    label, module, dofn = JOBS[name]
    assert top[0] == "Shards", top
    create = by_name["Shards"]
    assert create.spec.urn == CREATE_URN and not create.inputs
    (spread,) = [
        t
        for t in transforms
        if t.spec.urn == RESHUFFLE_URN and list(t.inputs.values()) == list(create.outputs.values())
    ]
    (work,) = [
        t
        for t in transforms
        if t.spec.urn == PARDO_URN and list(t.inputs.values()) == list(spread.outputs.values())
    ]
    assert work.unique_name.split("/")[-1] == label, work.unique_name
    # The ParDo runs our DoFn class: its pickled payload (bz2, base64) names the class
    # and its module (read as bytes; nothing is unpickled).
    payload = beam_runner_api_pb2.ParDoPayload.FromString(work.spec.payload)
    raw = bz2.decompress(base64.b64decode(payload.do_fn.payload))
    assert dofn.encode() in raw and module.encode() in raw, name


def test_staged_wheel_is_the_worker_package(staged, world):
    from beam_jobs import storage

    built = world["wheel"].read_bytes()
    for name, d in staged.items():
        wheels = {k: v for k, v in d["staged_files"].items() if k.endswith(".whl")}
        assert list(wheels) == [world["wheel"].name], (name, sorted(d["staged_files"]))
        staged_bytes = storage.read_bytes(wheels[world["wheel"].name])
        assert hashlib.sha256(staged_bytes).hexdigest() == hashlib.sha256(built).hexdigest(), name
        modules = d["wheels"][world["wheel"].name]["modules"]
        assert all(m.startswith(("beam_jobs/", "ssl_imagenet_splits")) for m in modules), modules
        requires = " ".join(d["wheels"][world["wheel"].name]["requires"]).lower()
        assert (
            "apache-beam" in requires and "airflow" not in requires and "tensorflow" not in requires
        )
        assert {"pickled_main_session", "extra_packages.txt"} <= set(d["staged_files"])


def test_sdk_and_container_are_the_locked_beam(staged):
    version = locked_beam_version()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name, d in staged.items():
        assert d["sdk"] == {"name": f"Apache Beam Python {py} SDK", "version": version}, name
        assert d["container_images"] == [
            f"gcr.io/cloud-dataflow/v1beta3/beam_python{py}_sdk:{version}"
        ], name


def test_options_are_the_ones_the_dag_chose(staged, world):
    from ssl_splits.job_options import dataflow_config, pipeline_options, template_uri

    for name, (cfg, job, spec) in job_specs(world).items():
        d, ours, df = (
            staged[name],
            pipeline_options(cfg, job, spec),
            dataflow_config(cfg, job, spec),
        )
        assert d["name"] == df.job_name == d["options"]["job_name"], name
        assert d["labels"] == ours["labels"], name
        assert d["machine_type"] == ours["machine_type"] == "n2-highmem-8"
        assert d["max_workers"] == ours["max_num_workers"] == 37
        assert d["options"]["project"] == PROJECT and d["options"]["region"] == "europe-west4"
        assert d["options"]["template_location"] == template_uri(cfg, job, spec)
        assert d["options"]["temp_location"].startswith(cfg.dataflow.temp_location + "/")
        assert d["options"]["staging_location"].startswith(ours["staging_location"] + "/")


def test_template_location_needs_the_dataflow_runner(world):
    from beam_jobs import storage

    target = f"gs://{world['bucket']}/templates/direct"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.source.validate",
            f"--source_uri={world['cfg'].source_uri}",
            f"--catalog_dir=gs://{world['bucket']}/unused",
            "--num_classes=10",
            f"--template_location={target}",
        ],
        cwd=world["tmp"],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs --runner=DataflowRunner" in proc.stderr
    assert not storage.exists(target)
    assert not storage.list_files(f"gs://{world['bucket']}/unused/*")


# --------------------------------------------------------------------------- through Airflow


@pytest.mark.long  # a whole DAG run, about 40 s
def test_dag_run_in_template_mode_stages_and_publishes_nothing(world, staged, tmp_path):
    """``bin/airflow dags test`` with runner DataflowRunner and
    dataflow_template_location: the operator and the provider's hook launch each
    job for Dataflow and Beam writes the template instead of submitting (the
    point of submission, reached without a Google account).

    Run 1, a source never validated: validate_source stages its template; there
    is no catalog, so plan and everything after it are skipped. Run 2, the
    validated source: the three builds stage theirs; verify and publish are
    skipped; the descriptions are those the CLI staged (the golden file's)."""
    from support.airflow_env import GCP_CONN_ANONYMOUS, airflow_env, dags_test, migrated_home

    from beam_jobs import storage
    from beam_jobs.building.template import describe

    bucket = world["bucket"]
    home = migrated_home(tmp_path / "airflow")
    # The provider's Dataflow hook needs the connection; with no key in it, the Beam
    # jobs use application-default credentials (here: the offline one).
    env = airflow_env(
        home, AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=GCP_CONN_ANONYMOUS, **offline_env(tmp_path)
    )
    dag_templates = f"gs://{bucket}/dag-templates"
    conf = {**world["params"], "dataflow_template_location": dag_templates}

    # 1. A new output folder: no catalog for this source there yet.
    r1 = dags_test(
        {**conf, "output_uri": f"gs://{bucket}/ssl-unvalidated"}, env, log=tmp_path / "run1.log"
    )
    assert r1.returncode == 0 and r1.state == "success", r1.tail()
    assert r1.tasks[("validate_source", "-1")] == "success", r1.tasks
    assert r1.tasks[("plan", "-1")] == "skipped", r1.tasks
    assert r1.tasks[("publish_manifest", "-1")] == "skipped", r1.tasks
    assert "no catalog of" in r1.output and "Launch the validate template" in r1.output
    validate_uri = f"{dag_templates}/ssl-validate-source"
    assert f"validate source: {validate_uri}" in r1.output
    assert not storage.exists(f"gs://{bucket}/ssl-unvalidated/manifest.json")

    # 2. The validated source: every build stages its template.
    r2 = dags_test(conf, env, log=tmp_path / "run2.log")
    assert r2.returncode == 0 and r2.state == "success", r2.tail()
    assert r2.tasks[("validate_source", "-1")] == "success"  # cached: no job
    builds = r2.states("build")
    assert set(builds) == {world["seeded"]["split"], "train", "validation"}, r2.tasks
    assert set(builds.values()) == {"success"}, r2.tasks
    assert set(r2.states("verify").values()) == {"skipped"}, r2.tasks
    assert r2.tasks[("publish_manifest", "-1")] == "skipped", r2.tasks
    assert "3 Dataflow job description(s) staged" in r2.output
    assert "--runner=DataflowRunner" in r2.output and "--template_location=" in r2.output
    assert not storage.exists(world["cfg"].manifest_uri)
    assert not storage.list_files(f"{world['cfg'].output_uri}/train-*")

    names = {"validate": validate_uri}
    for golden_name, split in (
        ("build_seeded", world["seeded"]["split"]),
        ("build_reshuffle", "train"),
        ("build_validation", "validation"),
    ):
        from beam_jobs.pipeline import job_name

        names[golden_name] = f"{dag_templates}/{job_name('ssl', 'build', split)}"
    for golden_name, uri in names.items():
        d = describe(uri)
        assert d["labels"]["airflow-version"].startswith("v3-"), d["labels"]
        assert re.fullmatch(r"ssl-[a-z0-9-]+-[0-9a-f]{8}", d["name"]), d["name"]  # provider suffix
        got, want = normalize(d, bucket), normalize(staged[golden_name], bucket)
        got["options"]["template_location"] = got["options"]["template_location"].replace(
            "/dag-templates/", "/templates/"
        )
        assert got == want, golden_name
