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
