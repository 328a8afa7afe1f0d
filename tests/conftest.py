"""Shared fixtures: the repo on sys.path, a GCS emulator on loopback, small
synthetic ImageNets (generated once per session, copied per test when a test
must modify one)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# In-process imports of Airflow (the plugins' modules) must not create or read
# ~/airflow: give them a private home before anything imports airflow.
os.environ.setdefault(
    "AIRFLOW_HOME",
    os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ssl-splits-tests-airflow-{os.getuid()}"),
)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

_ROOT = Path(__file__).resolve().parent.parent
for p in (_ROOT, _ROOT / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
# Helpers live in tests/support (a package: tests/ is on sys.path); fixtures here.
from support.common import PYTHON, ROOT, free_port  # noqa: E402  (after sys.path is set)


@pytest.fixture(scope="session")
def gcs_emulator():
    """A gcp-storage-emulator on loopback; STORAGE_EMULATOR_HOST points at it
    for this process and every subprocess (Beam jobs) it starts."""
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, str(ROOT / "tests" / "support" / "gcs_emulator.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"GCS emulator did not start: {proc.stderr.read().decode()}"
                ) from None
            time.sleep(0.1)
    old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    os.environ["STORAGE_EMULATOR_HOST"] = host
    os.environ["GOOGLE_CLOUD_PROJECT"] = "test-project"
    yield host
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def proxy(gcs_emulator, monkeypatch):
    """Route all GCS traffic (this process and subprocesses) through a fault
    proxy (tests/support/gcs_fault_proxy.py)."""
    from support.gcs_fault_proxy import FaultProxy, Faults

    from beam_jobs import storage

    with FaultProxy(gcs_emulator, Faults()) as px:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", px.url)
        monkeypatch.setenv("SSL_SPLITS_GCS_RETRY_DEADLINE", "60")
        with storage.use_client(None):  # a fresh client for the proxy's address
            yield px


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
    """A fresh, empty bucket on the emulator: ``gs://test-xxxxxxxx``."""
    from beam_jobs import storage

    name = f"test-{uuid.uuid4().hex[:10]}"
    storage.gcs_client().create_bucket(name)
    return f"gs://{name}"


@pytest.fixture(scope="session")
def small_source(tmp_path_factory) -> Path:
    """A small synthetic ImageNet (10 classes, 8 train shards), generated once."""
    from support.common import small_spec

    from beam_jobs.source.synthetic import generate

    out = tmp_path_factory.mktemp("small_source")
    generate(small_spec(), str(out), workers=1)
    return out


@pytest.fixture
def source_copy(small_source, tmp_path) -> Path:
    """A private copy of ``small_source`` that a test may damage."""
    dst = tmp_path / "source"
    shutil.copytree(small_source, dst)
    return dst


# --------------------------------------------------------------------------- tiers
# `make test-fast` (`pytest --fast`): the pure units and in-process TestPipeline
# transforms, under a minute on two cores. Left out: the files that run the DAG,
# servers, browsers, builds of whole environments or mypy; tests marked slow,
# gcs (the emulator), browser or stack; tests that need a built synthetic source,
# an Airflow home or the emulator; and the few below that start Beam or Airflow
# in a subprocess (measured with --durations, each several seconds).
_HEAVY_FILES = {
    "test_benchmark_smoke.py",
    "test_compose.py",
    "test_dag.py",
    "test_dataflow_templates.py",
    "test_faults.py",
    "test_kills.py",
    "test_team_stack.py",
    "test_typecheck.py",
    "test_ui_browser.py",
    "test_ui_security.py",
    "test_worker_wheel.py",
}
_HEAVY_MARKERS = {"slow", "long", "gcs", "browser", "stack"}
_HEAVY_FIXTURES = {
    "gcs_emulator",
    "gcs_bucket",
    "proxy",
    "small_source",
    "source_copy",
    "template_home",
    "airflow_home",
}
# Over ~2.5 s each on a busy two-core machine (--durations): subprocesses, wheel
# builds, whole-ImageNet-shaped computations, module fixtures that build splits.
_SLOW_UNITS = {
    "tests/core/test_test_groups.py::test_an_xdist_group_runs_on_one_worker",
    "tests/building/test_build.py::test_reproduces_published_split_exactly",
    "tests/building/test_build.py::test_pythonhashseed_does_not_matter",
    "tests/building/test_build.py::test_source_order_does_not_matter",
    "tests/building/test_build.py::test_worker_count_does_not_matter",
    "tests/building/test_build.py::test_name_missing_from_source_fails_before_any_output",
    "tests/building/test_build.py::test_rerun_reuses_staged_shards",
    "tests/building/test_build.py::test_staged_shards_of_an_older_source_are_not_reused",
    "tests/building/test_dataflow.py::test_airflow_side_of_a_job_does_not_import_beam",
    "tests/building/test_dataflow.py::test_worker_package_is_beam_jobs_only",
    "tests/publishing/test_lock.py::test_processes_racing_for_one_output_with_one_run_id_one_wins",
    "tests/publishing/test_lock.py::test_a_renewed_lease_keeps_a_long_run_s_lock",
    "tests/publishing/test_lock.py::test_the_lock_module_needs_no_airflow",
    "tests/planning/test_protocols.py::test_the_facts_the_notices_state",
    "tests/planning/test_protocols.py::test_cli_lists_and_exports",
    "tests/publishing/test_publish.py::test_two_publisher_processes_on_a_local_path_keep_both_splits",
    "tests/source/test_synthetic.py::test_names_from_fixmatch_split_are_all_present",
    "tests/source/test_synthetic.py::test_imagenet_shape_totals",
    "tests/source/test_tfds_meta.py::test_tfds_source_published_and_read_back",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="only the fast tier (tests marked fast by tests/conftest.py): `make test-fast`",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("fast") and collection_path.name in _HEAVY_FILES:
        return True  # not even imported: their imports alone cost seconds
    return None


def _is_fast(item: pytest.Item) -> bool:
    if item.path.name in _HEAVY_FILES or item.nodeid.split("[")[0] in _SLOW_UNITS:
        return False
    if any(item.get_closest_marker(m) for m in _HEAVY_MARKERS):
        return False
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "gcs" in map(str, callspec.params.values()):
        return False  # a "gcs" parameter: the case on the emulator
    return not _HEAVY_FIXTURES & set(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the fast tier ``fast``; with ``--fast``, run only it."""
    fast = [item for item in items if _is_fast(item)]
    for item in fast:
        item.add_marker(pytest.mark.fast)
    if config.getoption("fast"):
        kept = set(map(id, fast))
        config.hook.pytest_deselected(items=[i for i in items if id(i) not in kept])
        items[:] = fast
