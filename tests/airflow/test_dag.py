"""The DAG ``ssl_imagenet_splits`` as Airflow parses it, validates its params
and runs it (issue 5).

* DagBag: no import errors; a parse as the DAG processor does it stays well
  under 2 s (and never imports Apache Beam or TensorFlow); the structure the
  design promises (tasks, dependencies, mapped Beam operators, manifest asset,
  params and their documented defaults, one run at a time, retries, docs).
* Bad params fail the run before any Beam job starts, with a message that
  names the param (one interpreter runs every case through ``dag.test``).
* End to end on the GCS emulator through ``bin/airflow dags test``: build,
  rebuild one seed (only its manifest entry and files change), rerun (nothing
  is built, the manifest stays as it was).
* FixMatch's published split 3 reproduced through the DAG, record by record.
* The built-in protocols chosen by name (issue 15): FixMatch's five published
  splits, each byte-identical to its file's records at its positions, and
  SimCLR's 1% subset, exactly its 12,811 records; one synthetic source holding
  every name of those files is generated and validated once for them (each
  run's work folder gets a copy of that validation, as a rerun on the same
  source would find it).
* A TFDS-prepared source (``imagenet2012-train.tfrecord-*``) end to end, its
  splits read back with TensorFlow Datasets.

Airflow and Beam run for real: every Airflow here has its own AIRFLOW_HOME and
SQLite DB (tests/support/airflow_env.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.airflow_env import (
    BIN_AIRFLOW,
    DAG_FILE,
    DAG_ID,
    GCP_CONN_ANONYMOUS,
    PYTHON,
    airflow_env,
    copy_home,
    dags_test,
    db_task_tries,
    migrated_home,
    run_cases,
)
from support.common import REFERENCE, ROOT, SIMCLR, small_spec

TASK_IDS = {
    "check_params",
    "acquire_lock",
    "validate_source",
    "plan",
    "build",
    "verify",
    "publish_manifest",
    "release_lock",
}
MANIFEST_ASSET = "ssl_imagenet_splits_manifest"
# DESIGN.md's params table: name -> documented default (None: required or derived).
DESIGN_DEFAULTS = {
    "source_uri": None,
    "output_uri": None,
    "manifest_uri": None,  # {output_uri}/manifest.json, filled by resolve()
    "seeds": [1, 2, 3, 4, 5],
    "fraction": 0.1,
    "sampling": "stratified",
    "sharding_files": {},
    "unsupervised": True,
    "runner": "DirectRunner",
    "force": False,
}
SPLIT3 = REFERENCE / "files2shards_train_size128116_split3.txt"


@pytest.fixture(scope="module")
def template_home(tmp_path_factory) -> Path:
    """An AIRFLOW_HOME migrated once per module; tests run on copies of its DB."""
    return migrated_home(tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture
def airflow_home(template_home, tmp_path) -> Path:
    return copy_home(template_home, tmp_path / "airflow")


# --------------------------------------------------------------------------- parse & structure

PARSE_SCRIPT = r"""
import importlib, json, os, sys, time
# Warm-up, as the DAG processor does before it forks a parser per file: Airflow
# itself, plus the airflow.* modules the DAG file names (parsing_pre_import_modules).
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import iter_airflow_imports
path = sys.argv[1]
for module in iter_airflow_imports(path):
    importlib.import_module(module)
before = set(sys.modules)
t0, c0 = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=path)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
t0 = time.perf_counter()
DagBag(dag_folder=path)
reparse = time.perf_counter() - t0
print("RESULT " + json.dumps({
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids), "wall": wall, "cpu": cpu, "reparse": reparse,
    "heavy": sorted(m for m in set(sys.modules) - before
                    if m.split(".")[0] in ("apache_beam", "tensorflow", "pandas")),
}))
"""


def test_dagbag_imports_without_errors_and_parses_fast(tmp_path):
    env = airflow_env(tmp_path / "airflow")
    proc = subprocess.run(
        [PYTHON, "-c", PARSE_SCRIPT, str(DAG_FILE)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(lines[-1][len("RESULT ") :])
    assert r["import_errors"] == {}
    assert r["dag_ids"] == [DAG_ID]
    # Nothing heavy at parse time: the Beam jobs import Beam, the DAG file must not.
    assert r["heavy"] == [], f"parsing the DAG file imported {r['heavy'][:10]}"
    print(f"parse: {r['wall']:.3f} s wall, {r['cpu']:.3f} s CPU; re-parse {r['reparse']:.3f} s")
    assert r["wall"] < 2.0, f"parsing {DAG_FILE.name} took {r['wall']:.2f} s (CPU {r['cpu']:.2f} s)"


@pytest.fixture(scope="module")
def airflow_in_process(tmp_path_factory):
    """Airflow importable in this process, with a throwaway AIRFLOW_HOME (not ~/airflow)."""
    if "airflow" not in sys.modules:  # Airflow reads AIRFLOW_HOME once, on import
        os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))


@pytest.fixture(scope="module")
def dag(airflow_in_process):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]  # (get_dag would consult the metadata DB)


def test_dag_tasks_and_dependencies(dag):
    assert set(dag.task_ids) == TASK_IDS
    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert "validate_source" in up["plan"]
    assert "plan" in up["build"]
    assert "build" in up["verify"]
    assert "verify" in up["publish_manifest"]
    assert up["validate_source"] == {"check_params", "acquire_lock"}
    assert up["acquire_lock"] == {"check_params"}
    assert up["check_params"] == set()
    # check_params is the only root; acquire_lock takes the output folder's lock (a
    # setup); release_lock, after publishing, is the only leaf and its teardown: it
    # runs whatever happened in between, so a failed run never leaves the lock held.
    assert [t.task_id for t in dag.roots] == ["check_params"]
    assert [t.task_id for t in dag.leaves] == ["release_lock"]
    assert {"publish_manifest", "acquire_lock"} <= up["release_lock"]
    assert dag.get_task("acquire_lock").is_setup
    assert dag.get_task("release_lock").is_teardown
    # Skipped (up-to-date) builds must not block verify and publishing.
    assert dag.get_task("verify").trigger_rule == "none_failed"
    assert dag.get_task("publish_manifest").trigger_rule == "none_failed"


def test_beam_tasks_use_the_provider_operator(dag):
    from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
    from airflow.sdk.definitions.mappedoperator import MappedOperator
    from ssl_splits.operators import SplitBeamOperator

    from beam_jobs.core import JOB_MODULES

    assert issubclass(SplitBeamOperator, BeamRunPythonPipelineOperator)
    validate = dag.get_task("validate_source")
    assert isinstance(validate, SplitBeamOperator) and validate.job == "validate"
    assert validate.deferrable is False  # a local pipeline must not run inside the triggerer
    # python -m <the job's module>, as the provider runs py_options + py_file.
    assert (validate.py_options, validate.py_file) == (["-m"], JOB_MODULES["validate"])
    for task_id in ("build", "verify"):
        task = dag.get_task(task_id)
        assert isinstance(task, MappedOperator), f"{task_id} is not mapped"
        # One task instance per planned split (a Python task maps its op_kwargs).
        assert "spec" in task._get_specified_expand_input().value
        template = task.partial_kwargs.get("map_index_template") or task.map_index_template
        assert template and "split" in template, f"{task_id}: map_index_template {template!r}"
    build = dag.get_task("build")
    assert build.operator_class is SplitBeamOperator
    assert build.partial_kwargs["job"] == "build"
    assert build.partial_kwargs["py_file"] == JOB_MODULES["build"]
    # Verification is a plain Python task (exact from metadata; deep runs Beam itself).
    assert not issubclass(dag.get_task("verify").operator_class, BeamRunPythonPipelineOperator)


def test_manifest_asset_and_run_policy(dag):
    outlets = dag.get_task("publish_manifest").outlets
    assert [a.name for a in outlets] == [MANIFEST_ASSET]
    assert dag.max_active_runs == 1
    assert dag.default_args.get("retries", 0) >= 1
    assert dag.get_task("validate_source").retries >= 1
    assert dag.get_task("build").partial_kwargs["retries"] >= 1
    assert dag.get_task("publish_manifest").retries >= 1
    assert dag.tags and all(isinstance(t, str) and t for t in dag.tags)
    assert dag.doc_md and len(dag.doc_md) > 200
    for word in ("source_uri", "output_uri", "manifest", *sorted(TASK_IDS)):
        assert word in dag.doc_md, f"doc_md does not mention {word}"


def test_params_form_has_every_design_param_with_its_default(dag):
    from ssl_splits.config import resolve

    params = dag.params
    for name, default in DESIGN_DEFAULTS.items():
        assert name in params, f"param {name} is missing"
        param = params.get_param(name)
        assert param.value == default, f"{name} defaults to {param.value!r}, not {default!r}"
        assert param.schema.get("title") and param.description, f"{name} has no title/help"
    assert set(params.get_param("sampling").schema["enum"]) == {"stratified", "uniform"}
    assert set(params.get_param("runner").schema["enum"]) == {"DirectRunner", "DataflowRunner"}
    # Defaults that depend on other params.
    cfg = resolve({"source_uri": "/data/imagenet", "output_uri": "/data/ssl"})
    assert cfg.manifest_uri == "/data/ssl/manifest.json"
    assert (
        cfg.seeds,
        cfg.fraction,
        cfg.sampling,
        cfg.sharding_files,
        cfg.unsupervised,
        cfg.runner,
        cfg.force,
    ) == ([1, 2, 3, 4, 5], "0.1", "stratified", {}, True, "DirectRunner", False)


def test_protocol_is_a_dropdown_in_the_main_section(dag):
    from beam_jobs.planning import protocols

    param = dag.params.get_param("protocol")
    assert param.value == "seeded"
    assert param.schema["enum"] == list(protocols.PROTOCOLS)
    assert "section" not in param.schema  # with the common params, not folded away
    shown = param.schema["values_display"]
    assert set(shown) == set(protocols.PROTOCOLS)
    assert "FixMatch" in shown["fixmatch"] and "1%" in shown["simclr"], shown
    lists = dag.params.get_param("name_lists")
    assert lists.value == {} and lists.schema["additionalProperties"] is False
    assert lists.schema.get("title") and lists.description
    names = list(dag.params.keys())
    assert names.index("protocol") < names.index("seeds")  # it decides what seeds mean


def test_resolve_protocols_and_name_lists(airflow_in_process):
    from ssl_splits.config import ConfigError, RunConfig, resolve

    ok = {"source_uri": "/data/imagenet", "output_uri": "/data/ssl"}
    # The defaults: seeded draws, as before.
    cfg = resolve(ok)
    assert (cfg.protocol, cfg.name_lists, cfg.seeds) == ("seeded", {}, [1, 2, 3, 4, 5])
    # FixMatch's published splits for the seeds asked (all five by default).
    assert resolve({**ok, "protocol": "fixmatch"}).seeds == [1, 2, 3, 4, 5]
    assert resolve({**ok, "protocol": "fixmatch", "seeds": [3]}).seeds == [3]
    # SimCLR: the subsets are the labelled splits; the form's seeded defaults are set aside.
    cfg = resolve(
        {
            **ok,
            "protocol": "simclr",
            "seeds": [1, 2, 3, 4, 5],
            "fraction": 0.1,
            "sampling": "stratified",
        }
    )
    assert cfg.protocol == "simclr" and cfg.seeds == []
    cfg = resolve({**ok, "protocol": "simclr_1pct", "unsupervised": False})
    assert cfg.seeds == [] and not cfg.unsupervised  # something to build: the subset
    cfg = resolve(
        {
            **ok,
            "seeds": [],
            "unsupervised": False,
            "name_lists": {"mine": "gs://bucket/lists/names.txt/"},
        }
    )
    assert cfg.name_lists == {"mine": "gs://bucket/lists/names.txt"}
    # Round trip through the XCom, and an older XCom without the new fields.
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("protocol", "name_lists")}
    assert RunConfig.from_dict(old).protocol == "seeded"
    with pytest.raises(
        ConfigError,
        match=r"name_lists\[mine\]='data/x.txt': a local path must be "
        "absolute",
    ):
        resolve({**ok, "name_lists": {"mine": "data/x.txt"}})


def test_trigger_form_requires_the_two_folders(dag):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError, match="source_uri"):
        params.validate()
    params["source_uri"] = "gs://bucket/imagenet"
    params["output_uri"] = "/data/ssl"
    resolved = params.validate()
    assert resolved["seeds"] == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- bad params


def _bad_cases(src: Path, out: Path) -> list[dict]:
    """(name, conf, the param the message must name, where it is caught)."""
    ok = {"source_uri": str(src), "output_uri": str(out)}
    return [
        {"name": "seed_negative", "conf": {**ok, "seeds": [-1]}, "param": "seeds"},
        {"name": "seed_zero", "conf": {**ok, "seeds": [1, 0]}, "param": "seeds"},
        {"name": "seed_huge", "conf": {**ok, "seeds": [10**12]}, "param": "seeds"},
        {"name": "fraction_zero", "conf": {**ok, "fraction": 0}, "param": "fraction"},
        {"name": "fraction_above_one", "conf": {**ok, "fraction": 1.5}, "param": "fraction"},
        {"name": "output_is_source", "conf": {**ok, "output_uri": str(src)}, "param": "output_uri"},
        {
            "name": "output_inside_source",
            "conf": {**ok, "output_uri": f"{src}/splits"},
            "param": "output_uri",
        },
        {
            "name": "dotdot_in_path",
            "conf": {**ok, "output_uri": f"{out}/../escaped"},
            "param": "output_uri",
        },
        {
            "name": "relative_path",
            "conf": {**ok, "source_uri": "data/imagenet"},
            "param": "source_uri",
        },
        {
            "name": "unknown_scheme",
            "conf": {**ok, "source_uri": "s3://bucket/imagenet"},
            "param": "source_uri",
        },
        {
            "name": "sharding_file_seed_not_built",
            "conf": {**ok, "seeds": [1], "sharding_files": {"3": str(SPLIT3)}},
            "param": "sharding_files",
        },
        {
            "name": "dataflow_without_project",
            "conf": {**ok, "runner": "DataflowRunner", "dataflow_project": None},
            "param": "dataflow_project",
        },
        {"name": "source_missing", "conf": {"output_uri": str(out)}, "param": "source_uri"},
        # The built-in protocols and name lists (issue 15).
        {
            "name": "protocol_unknown",
            "conf": {**ok, "protocol": "simclr_5pct"},
            "param": "protocol",
        },
        {
            "name": "fixmatch_seed_without_a_published_split",
            "conf": {**ok, "protocol": "fixmatch", "seeds": [2, 6]},
            "param": "seeds",
        },
        {
            "name": "fixmatch_and_sharding_files",
            "conf": {
                **ok,
                "protocol": "fixmatch",
                "seeds": [3],
                "sharding_files": {"3": str(SPLIT3)},
            },
            "param": "sharding_files",
        },
        {
            "name": "fixmatch_other_fraction",
            "conf": {**ok, "protocol": "fixmatch", "fraction": 0.05},
            "param": "fraction",
        },
        {
            "name": "simclr_with_seeds",
            "conf": {**ok, "protocol": "simclr", "seeds": [3]},
            "param": "seeds",
        },
        {
            "name": "name_list_label_all_digits",
            "conf": {**ok, "name_lists": {"3": str(SPLIT3)}},
            "param": "name_lists",
        },
        {
            "name": "name_list_label_of_the_protocol",
            "conf": {**ok, "protocol": "simclr", "name_lists": {"simclr": str(SPLIT3)}},
            "param": "name_lists",
        },
        {
            "name": "name_list_missing",
            "conf": {**ok, "name_lists": {"mine": f"{src}/none.txt"}},
            "param": "name_lists",
        },
        # Several fractions (issue 20): seeded draws only.
        {
            "name": "fractions_with_fixmatch",
            "conf": {**ok, "protocol": "fixmatch", "fractions": [0.1, 0.05, 0.01]},
            "param": "fractions",
        },
        {
            "name": "fractions_with_sharding_files",
            "conf": {
                **ok,
                "seeds": [3],
                "sharding_files": {"3": str(SPLIT3)},
                "fractions": [0.1, 0.01],
            },
            "param": "fractions",
        },
        {
            "name": "fractions_out_of_range",
            "conf": {**ok, "fractions": [0.1, 1.5]},
            "param": "fractions",
        },
        {
            "name": "fractions_repeated",
            "conf": {**ok, "fractions": [0.1, "0.10"]},
            "param": "fractions",
        },
    ]


@pytest.fixture(scope="module")
def bad_param_runs(template_home, tmp_path_factory):
    """Every bad case triggered through dag.test(run_conf=...) in one interpreter."""
    work = tmp_path_factory.mktemp("bad-params")
    src = work / "source"
    src.mkdir()
    (src / "train-00000-of-00001").write_bytes(b"")  # a source folder that exists
    home = copy_home(template_home, work / "airflow")
    cases = _bad_cases(src, work / "out")
    results = run_cases(
        [{"name": c["name"], "conf": c["conf"]} for c in cases], airflow_env(home), work
    )
    return {c["name"]: (c, r) for c, r in zip(cases, results, strict=True)}, src, work


@pytest.mark.long  # the module fixture triggers every case: about 50 s
@pytest.mark.xdist_group("dag_bad_params")
@pytest.mark.parametrize("name", [c["name"] for c in _bad_cases(Path("/s"), Path("/o"))])
def test_bad_params_fail_before_any_job_starts(bad_param_runs, name):
    runs, src, work = bad_param_runs
    case, r = runs[name]
    param = case["param"]
    if r["error"] is not None:
        # Rejected when the run is created: the trigger form's JSON schema.
        assert "ParamValidationError" in r["error"], r["error"]
        assert f"param {param}" in r["error"], r["error"]
        assert r["run_id"] is None and r["tasks"] == {}
    else:
        # Created, then failed in check_params, the first task, without retries.
        assert r["state"] == "failed", (r["state"], r["tasks"])
        assert r["tasks"]["check_params"] == "failed"
        errors = [ln for ln in r["log"].splitlines() if "ConfigError:" in ln]
        assert errors and param in errors[-1], r["log"][-3000:]
        assert "up_for_retry" not in r["log"]
    # No Beam job: validate_source never ran, nothing was written for the output.
    assert r["tasks"].get("validate_source") in (None, "upstream_failed"), r["tasks"]
    assert "Running command:" not in r["log"] and "-m beam_jobs" not in r["log"], (
        "a Beam job was launched"
    )
    assert not (work / "out").exists() and not (work / "escaped").exists()
    assert sorted(p.name for p in src.iterdir()) == ["train-00000-of-00001"]


def test_an_error_that_cannot_heal_fails_at_once_without_a_retry(airflow_home, tmp_path):
    # A sharding file that does not exist stays missing a minute later: the
    # task fails on its first try (no retry after the DAG's retry_delay).
    src = tmp_path / "source"
    src.mkdir()
    (src / "train-00000-of-00001").write_bytes(b"")
    missing = tmp_path / "files2shards_split1.txt"
    conf = {
        "source_uri": str(src),
        "output_uri": str(tmp_path / "out"),
        "seeds": [1],
        "unsupervised": False,
        "sharding_files": {"1": str(missing)},
    }
    r = dags_test(conf, airflow_env(airflow_home), log=tmp_path / "run.log")
    assert r.state == "failed", r.tail()
    assert r.tasks[("check_params", "-1")] == "failed", r.tasks
    assert db_task_tries(airflow_home, r.run_id)[("check_params", "-1")] == 1, r.tail()
    assert f"sharding_files[1]: {missing} does not exist" in r.output
    assert "up_for_retry" not in r.output


def test_bin_airflow_is_airflows_cli_with_its_exit_codes(airflow_home):
    """bin/airflow runs Airflow's CLI through bin/airflow_main.py (an exit without the
    collector's passes at shutdown): its output and exit codes are Airflow's."""
    from importlib.metadata import version

    env = airflow_env(airflow_home)
    ok = subprocess.run(
        [str(BIN_AIRFLOW), "version"], env=env, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0 and ok.stdout.strip() == version("apache-airflow"), ok
    bad = subprocess.run(
        [str(BIN_AIRFLOW), "dags", "no-such-command"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "invalid choice: 'no-such-command'" in bad.stderr, bad


def test_bin_airflow_wakes_task_supervisors_every_second_unless_told_otherwise(airflow_home):
    """A task's supervisor notices its task's exit at its next wake-up
    (``[workers] min_heartbeat_interval``): bin/airflow (and the compose file) make
    it 1 s, not Airflow's 5 s, which a skipped split's task added to its run about
    half the time. A user's own setting wins."""
    import yaml

    def value(**extra: str) -> str:
        proc = subprocess.run(
            [str(BIN_AIRFLOW), "config", "get-value", "workers", "min_heartbeat_interval"],
            env=airflow_env(airflow_home, **extra),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc
        return proc.stdout.strip()

    assert value() == "1"
    assert value(AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="7") == "7"
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    common = compose["x-airflow-common"]["environment"]
    assert common["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] == "1"


# --------------------------------------------------------------------------- GCS end to end


@pytest.mark.gcs
def test_airflow_side_reaches_gcs_through_the_connection(
    airflow_in_process, gcs_bucket, monkeypatch
):
    """The tasks' own gs:// calls use a client made from google_cloud_default (here with
    its own project, to tell it from the default client)."""
    from ssl_splits.gcp import airflow_storage

    from beam_jobs import storage

    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        "google-cloud-platform://?project=conn-project&is_anonymous=true",
    )
    storage.write_text(f"{gcs_bucket}/hello.txt", "hello")
    default = storage.gcs_client()
    with airflow_storage():
        client = storage.gcs_client()
        assert client is not default and client.project == "conn-project"
        assert storage.read_text(f"{gcs_bucket}/hello.txt") == "hello"
    assert storage.gcs_client() is default


def _manifest(uri: str) -> dict:
    from beam_jobs import storage

    return json.loads(storage.read_text(uri))


def _versions(manifest_uri: str) -> list[str]:
    from beam_jobs import storage
    from beam_jobs.publishing.publish import versions_folder

    return [f.path for f in storage.list_files(storage.join(versions_folder(manifest_uri), "*"))]


def _check_split_files(name: str, entry: dict) -> dict[str, int]:
    """Every shard the manifest lists exists with its size and CRC32C (GCS metadata),
    nothing else matches the split's glob; returns path -> generation."""
    from beam_jobs import storage

    shards = entry["shards"]
    assert len(shards) == entry["num_shards"]
    assert sum(s["num_records"] for s in shards) == entry["num_examples"]
    folder = storage.dirname(shards[0]["path"])
    listed = {f.path: f for f in storage.list_files(storage.join(folder, f"{name}-*"))}
    assert set(listed) == {s["path"] for s in shards}, name
    for i, s in enumerate(shards):
        assert s["path"].endswith(f"/{name}-{i:05d}-of-{entry['num_shards']:05d}")
        info = listed[s["path"]]
        assert info.size == s["num_bytes"], s["path"]
        assert info.crc32c is not None and info.crc32c == s["crc32c"], s["path"]
    return {p: f.generation for p, f in listed.items()}


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.gcs
def test_end_to_end_on_gcs_build_rebuild_one_seed_rerun(gcs_bucket, airflow_home, tmp_path):
    from beam_jobs.source.synthetic import Spec, generate, layout

    spec = Spec(
        num_classes=10,
        min_per_class=35,
        max_per_class=45,
        train_shards=8,
        validation_shards=2,
        validation_per_class=4,
        seed=5,
    )
    source, output = f"{gcs_bucket}/imagenet", f"{gcs_bucket}/ssl"
    manifest_uri = f"{gcs_bucket}/published/ssl-imagenet.json"
    summary = generate(spec, source, workers=1)
    total = summary["train_records"]
    n = total // 10  # floor(N * 0.1)
    lay = layout(spec)
    class_sizes = {c.synset: size for c, size in zip(lay.classes, lay.class_sizes(), strict=True)}
    sup1, sup2 = f"train{n}.1", f"train{n}.2"

    env = airflow_env(airflow_home, AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=GCP_CONN_ANONYMOUS)
    conf = {
        "source_uri": source,
        "output_uri": output,
        "manifest_uri": manifest_uri,
        "seeds": [1, 2],
        "num_classes": 10,
        "direct_num_workers": 1,
    }

    # 1. Everything: two seeded splits, the reshuffle, the validation copy.
    r1 = dags_test(conf, env, log=tmp_path / "run1.log")
    assert r1.returncode == 0 and r1.state == "success", r1.tail()
    # Each task stores only the links it has values for (no error lines in its log).
    assert "XCom not found" not in r1.output
    assert set(r1.states("build").values()) == {"success"}, r1.tasks
    assert set(r1.states("build")) == {sup1, sup2, "train", "validation"}
    assert set(r1.states("verify").values()) == {"success"}, r1.tasks
    m1 = _manifest(manifest_uri)
    assert set(m1["splits"]) == {sup1, sup2, "train", "validation"}
    assert m1["splits"]["train"]["num_examples"] == total
    assert m1["splits"]["train"]["num_shards"] == spec.train_shards
    assert m1["splits"]["validation"]["num_examples"] == summary["validation_records"]
    assert m1["splits"]["validation"]["num_shards"] == spec.validation_shards
    for name in (sup1, sup2):
        e = m1["splits"][name]
        assert e["num_examples"] == n and e["seed"] == int(name[-1])
        counts = e["class_counts"]
        assert sum(counts.values()) == n and set(counts) == set(class_sizes)
        # Stratified: floor(N_c / 10) records of each class, at most one more.
        for synset, size in class_sizes.items():
            assert size // 10 <= counts[synset] <= size // 10 + 1, (name, synset, size)
        assert e["provenance"]["run_id"] == r1.run_id
    assert m1["splits"][sup1]["plan"]["sha256"] != m1["splits"][sup2]["plan"]["sha256"]
    gens1 = {name: _check_split_files(name, e) for name, e in m1["splits"].items()}
    versions1 = _versions(manifest_uri)
    assert len(versions1) == 1

    # 2. Rebuild seed 2 alone: only its entry changes, nobody else's files are touched.
    r2 = dags_test(
        {**conf, "seeds": [2], "unsupervised": False, "force": True}, env, log=tmp_path / "run2.log"
    )
    assert r2.returncode == 0 and r2.state == "success", r2.tail()
    assert r2.states("build") == {sup2: "success", "validation": "skipped"}, r2.tasks
    m2 = _manifest(manifest_uri)
    assert set(m2["splits"]) == set(m1["splits"])
    for name in (sup1, "train", "validation"):
        assert m2["splits"][name] == m1["splits"][name], f"{name} changed"
    new, old = m2["splits"][sup2], m1["splits"][sup2]
    assert new != old
    assert new["provenance"]["run_id"] == r2.run_id != old["provenance"]["run_id"]
    assert new["plan"]["sha256"] == old["plan"]["sha256"]  # same seed, same plan
    assert [s["crc32c"] for s in new["shards"]] == [s["crc32c"] for s in old["shards"]]
    gens2 = {name: _check_split_files(name, e) for name, e in m2["splits"].items()}
    for name in (sup1, "train", "validation"):
        assert gens2[name] == gens1[name], f"files of {name} were rewritten"
    versions2 = _versions(manifest_uri)
    assert len(versions2) == 2 and set(versions1) < set(versions2)

    # 3. The first params again: nothing to build, the manifest stays as it is.
    text2 = _manifest_text(manifest_uri)
    r3 = dags_test(conf, env, log=tmp_path / "run3.log")
    assert r3.returncode == 0 and r3.state == "success", r3.tail()
    assert set(r3.states("build")) == {sup1, sup2, "train", "validation"}
    assert set(r3.states("build").values()) == {"skipped"}, r3.tasks
    assert set(r3.states("verify").values()) == {"skipped"}, r3.tasks
    assert "Running command:" not in r3.output  # no Beam job at all (source cached)
    assert r3.tasks[("publish_manifest", "-1")] == "success"
    assert _manifest_text(manifest_uri) == text2
    assert _versions(manifest_uri) == versions2
    assert {name: _check_split_files(name, e) for name, e in m2["splits"].items()} == gens2


def _manifest_text(uri: str) -> str:
    from beam_jobs import storage

    return storage.read_text(uri)


# --------------------------------------------------------------------------- published protocols

# Every name of FixMatch's five published splits and of SimCLR's 1% list.
PUBLISHED_NAMES = tuple(f"published:fixmatch/split{s}" for s in range(1, 6)) + (
    "published:simclr/1percent",
)


@pytest.fixture(scope="module")
def published_source(tmp_path_factory):
    """A synthetic source holding every name of PUBLISHED_NAMES (about 590,000
    records of ~1 KB in 32 shards: the lists' own names, a few others per
    class), generated and validated once for the module."""
    from beam_jobs.source import validate
    from beam_jobs.source.synthetic import Spec, generate

    root = tmp_path_factory.mktemp("published_source")
    source, catalog = root / "imagenet", root / "catalog"
    generate(
        Spec(
            names_from=PUBLISHED_NAMES,
            num_classes=1000,
            min_per_class=1,
            max_per_class=140,
            image_size=1,
            image_pool=8,
            train_shards=32,
            validation_shards=0,
        ),
        str(source),
        workers=2,
    )
    report = validate.run(
        [f"--source_uri={source}", f"--catalog_dir={catalog}", "--num_classes=1000"]
    )
    assert report["ok"] and report["layout"] == "common"
    return source, catalog, report


def with_validated_catalog(published_source, output: Path) -> Path:
    """The output's work folder with the source's catalog, where check_params
    looks for it: the run skips validation (a rerun on an unchanged source)."""
    from beam_jobs import layout

    _, catalog, report = published_source
    folder = Path(
        layout.catalog_dir(layout.work_default(str(output)), report["source_fingerprint"])
    )
    folder.mkdir(parents=True)
    for name in ("catalog.parquet", "report.json"):
        (folder / name).write_bytes((catalog / name).read_bytes())
    return folder


def source_records(catalog: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every source record's framed bytes by file name, read at the catalog's
    file/offset/length; and each name's class (synset)."""
    from beam_jobs.source.catalog import read_table

    cat = read_table(
        str(catalog / "catalog.parquet"), ["filename", "synset", "file", "offset", "length"]
    ).to_pydict()
    data = {f: Path(f).read_bytes() for f in set(cat["file"])}
    records = {
        n: data[f][o : o + ln]
        for n, f, o, ln in zip(cat["filename"], cat["file"], cat["offset"], cat["length"])
    }
    return records, dict(zip(cat["filename"], cat["synset"]))


def framed(path: Path) -> list[tuple[str, bytes]]:
    """(file name, framed bytes) of every record of an output shard, in order."""
    from beam_jobs.source import example_proto, tfrecord

    out = []
    with open(path, "rb") as f:
        for item in tfrecord.iter_framed(f, str(path)):
            assert not isinstance(item, tfrecord.RecordError), item
            name = example_proto.parse_image_record(item.data).filename
            out.append((name, item.data))
    return out


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.xdist_group("dag_published")
def test_fixmatch_protocol_builds_the_five_published_splits(
    published_source, airflow_home, tmp_path
):
    from beam_jobs.planning import protocols

    source, catalog, _ = published_source
    output = tmp_path / "ssl"
    cached = with_validated_catalog(published_source, output)
    # Shallow verification: this test itself compares every record, name and byte.
    conf = {
        "source_uri": str(source),
        "output_uri": str(output),
        "protocol": "fixmatch",
        "unsupervised": False,
        "num_classes": 1000,
        "copy_validation": False,
        "deep_verify": "never",
    }
    r = dags_test(conf, airflow_env(airflow_home), log=tmp_path / "run.log")
    assert r.returncode == 0 and r.state == "success", r.tail()
    splits = [f"train128116.{s}" for s in range(1, 6)]
    assert r.states("build") == dict.fromkeys(splits, "success"), r.tasks
    assert r.states("verify") == dict.fromkeys(splits, "success"), r.tasks
    # The source's catalog was found: validation was not run again.
    assert not [
        ln
        for ln in r.output.splitlines()
        if "Running command:" in ln and "beam_jobs.source.validate" in ln
    ]

    records, _ = source_records(catalog)
    manifest = json.loads((output / "manifest.json").read_text())
    assert sorted(manifest["splits"]) == splits
    assert manifest["source"]["validation_report_uri"] == str(cached / "report.json")
    for seed in range(1, 6):
        split = f"train128116.{seed}"
        published = REFERENCE / f"files2shards_train_size128116_split{seed}.txt"
        expected: dict[int, list[str]] = {}
        for line in published.read_text().splitlines():
            name, shard, index = line.split(",")
            names = expected.setdefault(int(shard), [])
            assert int(index) == len(names)  # the file is sorted by (shard, index)
            names.append(name)
        shards = sorted(output.glob(f"{split}-*"))
        assert [p.name for p in shards] == [f"{split}-{s:05d}-of-00102" for s in range(102)]
        for s, path in enumerate(shards):
            got = framed(path)
            assert [n for n, _ in got] == expected[s], f"{split} shard {s}: other names"
            # Byte for byte the source's records: the framed bytes of the source, in order.
            assert path.read_bytes() == b"".join(records[n] for n in expected[s]), (
                f"{split} shard {s}: bytes differ from the source records"
            )
        entry = manifest["splits"][split]
        assert entry["num_examples"] == 128_116 and entry["num_shards"] == 102
        assert entry["seed"] == seed and entry["sampling"] == "published"
        assert entry["plan"]["source"] == f"published:fixmatch/split{seed}"
        assert (
            entry["plan"]["sha256"]
            == protocols.LISTS[f"fixmatch/split{seed}"].sha256
            == hashlib.sha256(published.read_bytes()).hexdigest()
        )
        assert entry["layout"] == "common"


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.xdist_group("dag_published")
def test_simclr_1pct_protocol_holds_exactly_the_listed_records(
    published_source, airflow_home, tmp_path
):
    from beam_jobs.planning.algorithm import hash_keys, shard_sizes

    source, catalog, report = published_source
    output = tmp_path / "ssl"
    with_validated_catalog(published_source, output)
    # num_shards 10: what the default gives on ImageNet (floor(12,811 * 1,024 / 1,281,167)).
    conf = {
        "source_uri": str(source),
        "output_uri": str(output),
        "protocol": "simclr_1pct",
        "unsupervised": False,
        "num_classes": 1000,
        "copy_validation": False,
        "num_shards": 10,
    }
    r = dags_test(conf, airflow_env(airflow_home), log=tmp_path / "run.log")
    assert r.returncode == 0 and r.state == "success", r.tail()
    split = "train12811.simclr"
    assert r.states("build") == {split: "success"}, r.tasks  # no seeded split: seeds do not apply

    listed = (SIMCLR / "1percent.txt").read_text().split()
    assert len(listed) == len(set(listed)) == 12_811
    records, synsets = source_records(catalog)
    shards = sorted(output.glob(f"{split}-*"))
    assert [p.name for p in shards] == [f"{split}-{s:05d}-of-00010" for s in range(10)]
    got = [framed(p) for p in shards]
    names = [n for shard in got for n, _ in shard]
    assert sorted(names) == sorted(listed)  # exactly the listed records, each once
    # In the product's order (the order key, seed 0), dealt by its rule.
    by_name = sorted(listed)
    keys = hash_keys(by_name, "order", 0)
    assert names == [by_name[i] for i in sorted(range(len(by_name)), key=lambda i: (keys[i], i))]
    assert [len(shard) for shard in got] == shard_sizes(12_811, 10) == [1282] + [1281] * 9
    for p in shards:
        assert p.read_bytes() == b"".join(records[n] for n, _ in framed(p))

    entry = json.loads((output / "manifest.json").read_text())["splits"][split]
    assert entry["num_examples"] == 12_811 and entry["seed"] is None
    assert entry["sampling"] == "names" and entry["plan"]["source"] == "published:simclr/1percent"
    assert entry["fraction"] == f"12811/{report['total_records']}"
    counts: dict[str, int] = {}
    for n in listed:
        counts[synsets[n]] = counts.get(synsets[n], 0) + 1
    assert entry["class_counts"] == counts and sorted(set(counts.values())) == [12, 13]


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.xdist_group("dag_published")
def test_reproduces_fixmatch_split3_through_the_dag(published_source, airflow_home, tmp_path):
    """A published file given by path (sharding_files) is used exactly as given."""
    from beam_jobs.source import example_proto, tfrecord

    source, _, _ = published_source
    output = tmp_path / "ssl"
    with_validated_catalog(published_source, output)
    # Shallow verification: the names at every position are compared here, and the
    # bytes of all five published splits in the test above.
    conf = {
        "source_uri": str(source),
        "output_uri": str(output),
        "seeds": [3],
        "sharding_files": {"3": str(SPLIT3)},
        "unsupervised": False,
        "num_classes": 1000,
        "copy_validation": False,
        "deep_verify": "never",
    }
    r = dags_test(conf, airflow_env(airflow_home), log=tmp_path / "run.log")
    assert r.returncode == 0 and r.state == "success", r.tail()
    assert r.states("build") == {"train128116.3": "success"}

    expected: dict[int, list[str]] = {}
    for line in SPLIT3.read_text().splitlines():
        name, shard, index = line.split(",")
        names = expected.setdefault(int(shard), [])
        assert int(index) == len(names)  # the file is sorted by (shard, index)
        names.append(name)
    assert len(expected) == 102

    shards = sorted(p.name for p in output.glob("train128116.3-*"))
    assert shards == [f"train128116.3-{s:05d}-of-00102" for s in range(102)]
    for s in range(102):
        with open(output / shards[s], "rb") as f:
            got = [
                example_proto.parse_image_record(rec).filename
                for rec in tfrecord.iter_records(f, shards[s])
            ]
        assert got == expected[s], (
            f"shard {s}: first difference at index "
            f"{next(i for i, (a, b) in enumerate(zip(got + [None], expected[s] + [None])) if a != b)}"
        )

    manifest = json.loads((output / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train128116.3"}
    entry = manifest["splits"]["train128116.3"]
    assert entry["num_examples"] == 128116 and entry["num_shards"] == 102 and entry["seed"] == 3
    assert entry["plan"]["sha256"] == hashlib.sha256(SPLIT3.read_bytes()).hexdigest()
    assert entry["plan"]["source"] == str(SPLIT3)  # imported as is, read where it lies
    assert Path(entry["plan"]["uri"]).is_relative_to(output)  # our copy: beside the output


# --------------------------------------------------------------------------- a TFDS-prepared source


@pytest.mark.slow
def test_tfds_source_end_to_end_and_read_back_with_tfds(airflow_home, tmp_path):
    import tensorflow_datasets as tfds

    from beam_jobs.core import Manifest, SourceSection
    from beam_jobs.source import example_proto, tfrecord
    from beam_jobs.source.synthetic import generate

    source, output = tmp_path / "tensorflow_datasets" / "imagenet2012" / "5.1.0", tmp_path / "ssl"
    spec = small_spec(seed=5, layout="tfds:imagenet2012")
    summary = generate(spec, str(source), workers=1)
    total = summary["train_records"]
    n = total // 10
    # (The validation copy in this layout is built in tests/source/test_tfds_meta.py, in-process.)
    conf = {
        "source_uri": str(source),
        "output_uri": str(output),
        "seeds": [1],
        "num_classes": 10,
        "direct_num_workers": 1,
        "copy_validation": False,
    }
    r = dags_test(conf, airflow_env(airflow_home), log=tmp_path / "run.log")
    assert r.returncode == 0 and r.state == "success", r.tail()
    splits = {f"train{n}.1", "train"}
    assert r.tasks[("validate_source", "-1")] == "success"
    assert r.states("build") == dict.fromkeys(splits, "success"), r.tasks
    assert r.states("verify") == dict.fromkeys(splits, "success"), r.tasks

    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["source"]["layout"] == "tfds:imagenet2012"
    # The typed manifest reads what the DAG wrote and gives it back key for key.
    typed = Manifest.from_dict(manifest)
    assert json.dumps(typed.to_dict()) == json.dumps(manifest) and not typed.other
    assert typed.source_layout == "tfds:imagenet2012"
    assert SourceSection.from_dict(manifest["source"]).to_dict() == manifest["source"]
    for split, entry in manifest["splits"].items():
        assert json.dumps(typed.entry(split).to_dict()) == json.dumps(entry)
    assert manifest["source"]["label_range"] == [0, 9]
    assert set(manifest["splits"]) == splits
    # Named as TFDS names its files; nothing in the common layout's names.
    tfds_name = {f"train{n}.1": f"train{n}_1", "train": "train"}
    for split, entry in manifest["splits"].items():
        assert entry["layout"] == "tfds:imagenet2012"
        k = entry["num_shards"]
        assert [Path(s["path"]).name for s in entry["shards"]] == [
            f"imagenet2012-{tfds_name[split]}.tfrecord-{i:05d}-of-{k:05d}" for i in range(k)
        ]
    assert not list(output.glob("train*")) and not list(output.glob("validation*"))
    # Every output record is its source record, byte for byte.
    source_recs = {}
    for path in source.glob("imagenet2012-*.tfrecord-*"):
        with open(path, "rb") as f:
            for rec in tfrecord.iter_records(f, str(path)):
                source_recs[
                    example_proto.parse_image_record(rec, example_proto.TFDS_KEYS).filename
                ] = rec
    assert len(source_recs) == total + summary["validation_records"]
    assert summary["validation_records"] > 0
    planned = {}
    for split, entry in manifest["splits"].items():
        names = []
        for s in entry["shards"]:
            with open(s["path"], "rb") as f:
                for rec in tfrecord.iter_records(f, s["path"]):
                    name = example_proto.parse_image_record(rec, example_proto.TFDS_KEYS).filename
                    assert rec == source_recs[name]
                    names.append(name)
        planned[split] = names
    assert sorted(planned["train"]) == sorted(k for k in source_recs if not k.startswith("ILSVRC"))
    assert len(planned[f"train{n}.1"]) == n

    # TensorFlow Datasets reads the output folder as it reads the source: same features.
    builder = tfds.builder_from_directory(str(output))
    assert builder.info.name == "imagenet2012"
    assert sorted(builder.info.splits) == sorted(tfds_name.values())
    assert builder.info.supervised_keys == ("image", "label")
    labels = (source / "label.labels.txt").read_text().split()
    assert builder.info.features["label"].names == labels
    source_builder = tfds.builder_from_directory(str(source))
    assert (
        sorted(builder.info.features.keys())
        == sorted(source_builder.info.features.keys())
        == ["file_name", "image", "label"]
    )
    in_order = tfds.ReadConfig(interleave_cycle_length=1)
    for split, names in planned.items():
        ds = builder.as_dataset(split=tfds_name[split], shuffle_files=False, read_config=in_order)
        got = [
            (ex["file_name"].decode(), int(ex["label"]), ex["image"].shape)
            for ex in tfds.as_numpy(ds)
        ]
        assert [g[0] for g in got] == names, f"{split}: not the planned records in order"
        assert all(0 <= lab < 10 and shape == (8, 8, 3) for _, lab, shape in got)
    image, label = next(
        iter(tfds.as_numpy(builder.as_dataset(split=tfds_name[f"train{n}.1"], as_supervised=True)))
    )
    assert image.dtype.name == "uint8" and 0 <= label < 10


# --------------------------------------------------------------------------- several fractions

# FixMatch's ImageNet input pipeline (google-research/fixmatch, imagenet/datasets/imagenet.py,
# Apache-2.0): the file patterns and sizes of every split it reads, copied as they are.
CONSUMER_FILE_PATTERNS = {
    "train": "train-*",
    "test": "validation-*",
    **{f"train{n}.{s}": f"train{n}.{s}-*" for n in (128116, 64058, 12811) for s in range(1, 6)},
}
CONSUMER_NUM_IMAGES = {
    "train": 1281167,
    "test": 50000,
    **{f"train{n}.{s}": n for n in (128116, 64058, 12811) for s in range(1, 6)},
}
IMAGENET_TRAIN = 1281167


def scaled_consumer(total: int, validation: int) -> dict[str, tuple[str, int]]:
    """The consumer's splits on a source of ``total`` training and ``validation``
    records: each labelled size ``n`` is ``floor(1,281,167 x f)`` for one of the
    fractions 10%, 5%, 1%, and becomes ``floor(total x f)`` in both its pattern and
    its size. ``{consumer split: (file pattern, number of records)}``."""
    import re
    from fractions import Fraction

    fraction_of = {
        IMAGENET_TRAIN * f // 1: f for f in (Fraction(1, 10), Fraction(1, 20), Fraction(1, 100))
    }
    out = {
        "train": (CONSUMER_FILE_PATTERNS["train"], total),
        "test": (CONSUMER_FILE_PATTERNS["test"], validation),
    }
    for split, n in CONSUMER_NUM_IMAGES.items():
        m = re.fullmatch(r"train(\d+)\.(\d+)", split)
        if m is None:
            continue
        assert int(m.group(1)) == n and CONSUMER_FILE_PATTERNS[split] == f"{split}-*"
        k = total * fraction_of[n] // 1
        out[split] = (f"train{k}.{m.group(2)}-*", k)
    return out


def _shard_files(output: Path, manifest: dict) -> dict[str, tuple[int, str]]:
    """Every published shard file: path -> (mtime_ns, sha256)."""
    out = {}
    for entry in manifest["splits"].values():
        for s in entry["shards"]:
            p = Path(s["path"])
            out[str(p)] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.mark.long
@pytest.mark.slow
def test_one_run_builds_fixmatchs_three_sizes_for_every_seed(airflow_home, tmp_path):
    """Issue 20: ``fractions`` [0.1, 0.05, 0.01] and seeds 1-5 in one run give every
    split FixMatch's ImageNet trainer reads; a rerun skips them all; rebuilding one
    (fraction, seed) alone touches that split only and gives the same bytes."""
    from fractions import Fraction

    import tensorflow as tf
    from ssl_splits.prefill import rebuild_conf

    from beam_jobs.planning.algorithm import class_quotas, default_num_shards
    from beam_jobs.source.synthetic import Spec, generate, layout

    spec = Spec(
        num_classes=8,
        min_per_class=40,
        max_per_class=60,
        train_shards=40,
        validation_shards=2,
        validation_per_class=3,
        seed=11,
    )
    source, output = tmp_path / "imagenet", tmp_path / "ssl"
    summary = generate(spec, str(source), workers=1)
    total, validation = summary["train_records"], summary["validation_records"]
    lay = layout(spec)
    class_sizes = {c.label: size for c, size in zip(lay.classes, lay.class_sizes(), strict=True)}
    synset = {c.label: c.synset for c in lay.classes}
    fractions = ["0.1", "0.05", "0.01"]
    n = {f: total * Fraction(f) // 1 for f in fractions}
    labelled = {f"train{n[f]}.{s}": (f, s) for f in fractions for s in range(1, 6)}
    everything = set(labelled) | {"train", "validation"}

    env = airflow_env(airflow_home)
    conf = {
        "source_uri": str(source),
        "output_uri": str(output),
        "seeds": [1, 2, 3, 4, 5],
        "fractions": [0.1, 0.05, 0.01],
        "num_classes": spec.num_classes,
    }

    # 1. One run: fifteen labelled splits, the reshuffle, the validation copy.
    r1 = dags_test(conf, env, log=tmp_path / "run1.log")
    assert r1.returncode == 0 and r1.state == "success", r1.tail()
    assert r1.states("build") == dict.fromkeys(everything, "success"), r1.tasks
    assert r1.states("verify") == dict.fromkeys(everything, "success"), r1.tasks
    for s in range(1, 6):  # the plan task says how they relate
        assert (
            f"seed {s}: train{n['0.01']}.{s} in train{n['0.05']}.{s} in "
            f"train{n['0.1']}.{s} (nested)" in r1.output
        )
    manifest_path = output / "manifest.json"
    m1 = json.loads(manifest_path.read_text())
    assert set(m1["splits"]) == everything  # one manifest update lists them all
    assert len(list((output / "manifest.versions").iterdir())) == 1
    assert {e["provenance"]["run_id"] for e in m1["splits"].values()} == {r1.run_id}

    # 2. Read as the consumer reads: its file patterns and sizes, scaled to this source.
    names_of: dict[str, list[str]] = {}  # by our split name
    consumer = scaled_consumer(total, validation)
    assert len(consumer) == 17 and {p[:-2] for p, _ in consumer.values()} == everything
    for theirs, (pattern, size) in consumer.items():
        split = pattern[: -len("-*")]  # ours: train12811.3 for train4.3-*, validation for test
        files = tf.io.gfile.glob(str(output / pattern))
        assert files, f"{theirs}: nothing matches {pattern}"
        ds = tf.data.TFRecordDataset(sorted(files)).map(
            lambda r: tf.io.parse_single_example(
                r,
                {
                    "image/encoded": tf.io.FixedLenFeature((), tf.string, ""),
                    "image/filename": tf.io.FixedLenFeature((), tf.string, ""),
                    "image/class/label": tf.io.FixedLenFeature([], tf.int64, -1),
                },
            )
        )
        records = [
            (ex["image/filename"].decode(), int(ex["image/class/label"]))
            for ex in ds.as_numpy_iterator()
        ]
        assert len(records) == size, f"{theirs} ({pattern}): {len(records)} records, not {size}"
        assert all(0 <= label - 1 < spec.num_classes for _, label in records), split
        assert all(tf.io.decode_jpeg(ex["image/encoded"]).shape[-1] == 3 for ex in ds.take(2)), (
            split
        )
        names_of[split] = [name for name, _ in records]
        if split in labelled:
            fraction, _ = labelled[split]
            entry = m1["splits"][split]
            assert entry["num_examples"] == size == n[fraction]
            assert entry["fraction"] == fraction and entry["sampling"] == "stratified"
            # Stratified: the documented quotas, in the manifest and in the records read.
            quotas = class_quotas(class_sizes, Fraction(fraction), size)
            for c, k in quotas.items():
                assert (
                    class_sizes[c] * Fraction(fraction) // 1
                    <= k
                    <= class_sizes[c] * Fraction(fraction) // 1 + 1
                )
            read = {synset[c]: sum(1 for _, label in records if label == c) for c in synset}
            assert read == {synset[c]: k for c, k in quotas.items()}
            assert entry["class_counts"] == {s: k for s, k in read.items() if k}
    for split, (fraction, _) in labelled.items():  # the default shard count, per split
        assert (
            m1["splits"][split]["num_shards"]
            == default_num_shards(n[fraction], spec.train_shards, total)
            > 0
        )
    for s in range(1, 6):  # nested: 1% inside 5% inside 10%
        small, mid, large = (set(names_of[f"train{n[f]}.{s}"]) for f in ("0.01", "0.05", "0.1"))
        assert small < mid < large, s
    assert sorted(names_of["train"]) == sorted({x for shard in lay.train for x, _ in shard})

    # 3. A rerun: every split is up to date; nothing is built, the manifest is unchanged.
    files1 = _shard_files(output, m1)
    text1 = manifest_path.read_text()
    r2 = dags_test(conf, env, log=tmp_path / "run2.log")
    assert r2.returncode == 0 and r2.state == "success", r2.tail()
    assert r2.states("build") == dict.fromkeys(everything, "skipped"), r2.tasks
    assert "Running command:" not in r2.output
    assert manifest_path.read_text() == text1 and _shard_files(output, m1) == files1

    # 4. Rebuild one (fraction, seed), as the Splits view's Rebuild does: that split alone,
    #    at its fraction; the others keep their files (bytes and mtimes) and entries.
    one = f"train{n['0.05']}.2"
    conf3 = rebuild_conf(m1, one, str(manifest_path))
    assert conf3["seeds"] == [2] and conf3["fraction"] == 0.05 and "fractions" not in conf3
    r3 = dags_test(conf3, env, log=tmp_path / "run3.log")
    assert r3.returncode == 0 and r3.state == "success", r3.tail()
    assert r3.states("build") == {one: "success"}, r3.tasks
    m3 = json.loads(manifest_path.read_text())
    assert set(m3["splits"]) == everything
    for split in everything - {one}:
        assert m3["splits"][split] == m1["splits"][split], split
    assert m3["splits"][one]["provenance"]["run_id"] == r3.run_id
    assert m3["splits"][one]["plan"]["sha256"] == m1["splits"][one]["plan"]["sha256"]
    files3 = _shard_files(output, m3)
    rebuilt = {p for p in files1 if Path(p).name.startswith(f"{one}-")}
    assert rebuilt and set(files3) == set(files1)
    for path, (mtime, sha) in files1.items():
        if path in rebuilt:  # rewritten, to the same bytes: alone as with the other fractions
            assert files3[path][1] == sha and files3[path][0] != mtime, path
        else:
            assert files3[path] == (mtime, sha), f"{path} was touched"
