"""`make test` runs on two workers with ``--dist loadgroup``: the tests of one
``xdist_group`` share a worker, so a module fixture they share (a DAG run, a
generated source) is made once. pytest 9.2 silently broke that with
pytest-xdist 3.8 (pytest-xdist#1386: every test went to its own worker), hence
the pin in requirements.in; this test fails if the grouping is lost again."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GROUPED = """
import pytest

@pytest.mark.xdist_group("one")
@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    pass

@pytest.mark.parametrize("i", range(6))
def test_free(i):
    pass
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v"]
        + ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ran = re.findall(r"\[(gw\d)\] .*PASSED .*::(test_\w+)\[", out.stdout)
    assert len(ran) == 12, out.stdout[-2000:]
    workers = {w for w, name in ran if name == "test_grouped"}
    assert len(workers) == 1, f"the group ran on {sorted(workers)}:\n{out.stdout[-2000:]}"
