"""Smoke test of the GCS verification benchmark (``python -m benchmarks.gcs_verify
--quick``): the quick COUNT on the GCS emulator, a 10% split built with ranged
GETs and verified exactly; the verification reads no record data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.gcs]


def test_quick_gcs_verification(tmp_path):
    md = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gcs_verify",
            "--quick",
            f"--work_dir={tmp_path}",
            f"--results_md={md}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "gcs_verify.json").read_text())
    assert r["records"] == 20_000 and r["split"] == "train2000.1"
    assert r["verify_record_bytes_fetched"] == 0
    read = r["verify_objects_read"]
    assert any(k.endswith("catalog.parquet") for k in read) and not any(
        "staging" in k for k in read
    ), read
    assert 0 < r["verify_bytes_fetched"] < 2_000_000
    assert r["build_seconds"] > 0 and r["verify_seconds"] > 0
    assert "Exact verification on GCS" in md.read_text()
