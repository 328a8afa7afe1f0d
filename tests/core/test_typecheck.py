"""The packages type-check: mypy with the configuration in pyproject.toml
(``[tool.mypy]``: beam_jobs and plugins/ssl_splits), as ``make typecheck`` runs it.

The cache lives under TMPDIR, shared by runs: about 20 s of CPU cold (most of
it reading Airflow's and Beam's own annotations), a second or two warm.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.common import ROOT


def mypy_cache_dir() -> str:
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ssl-splits-mypy-{os.getuid()}")


@pytest.mark.timeout(300)
def test_the_packages_type_check():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", mypy_cache_dir()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, f"mypy found type errors:\n{proc.stdout}{proc.stderr}"
    assert proc.stdout.startswith("Success: no issues found"), proc.stdout
