"""Smoke test of the benchmark harness (``python -m benchmarks.run --quick``), end to end.

The quick COUNT dataset (2,000 tiny records) with one seed: the product's jobs and
the seed reference on the same plans, the builds three at a time, a raw copy, and
the DAG with ``dags test`` and under a real scheduler (SQLite), then the printed
ratios and results.json. The team stack (Postgres) runs too when
``BENCH_SMOKE_TEAM_STACK=1``. About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEAM_STACK = os.environ.get("BENCH_SMOKE_TEAM_STACK") == "1"

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(600)]


def run_quick(work: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "benchmarks.run", "--quick", "--only=count", "--seeds=1"]
    argv += [f"--work_dir={work}", "--skip-verify"]
    # share the (git-ignored) bytecode cache between runs: compiling Beam and
    # TensorFlow from source takes longer than the benchmark itself
    argv += [f"--pycache_dir={ROOT / '.bench' / 'pycache'}"]
    argv += [] if TEAM_STACK else ["--skip-team-stack"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        argv, cwd=work.parent, env=env, capture_output=True, text=True, timeout=580
    )


def test_quick_benchmark_prints_the_ratios(tmp_path):
    repo_md = ROOT / "benchmarks" / "RESULTS.md"
    md_before = repo_md.read_bytes() if repo_md.exists() else None
    proc = run_quick(tmp_path / "bench")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout

    # The ratios, seed time / product time, side by side: each build, the inner
    # jobs together, and the DAG from trigger to manifest, each a number.
    assert "### Ratios: seed time / product time" in out
    ratio = r"\| ([0-9.]+)x"
    for what in (
        r"build train200\.1",
        r"build train",
        r"\*\*six outputs \+ validation copy\*\*",
        r"builds 3 at a time",
        r"\*\*DAG, trigger to manifest \(dags test\)\*\*",
        r"\*\*DAG, trigger to manifest \(scheduler\)\*\*",
        *([r"\*\*DAG, trigger to manifest \(team stack\)\*\*"] if TEAM_STACK else []),
    ):
        m = re.search(rf"\| quick-count \| {what} \| [0-9.]+ \| [0-9.]+ \| \**{ratio[3:]}", out)
        assert m and float(m.group(1)) > 0, (what, out[-4000:])
    assert "### Targets" in out and ("MET" in out or "MISSED" in out)

    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert res["datasets"]["quick-count"]["train_records"] == 2000
    jobs = {j["name"]: j for j in res["jobs"]}
    for j in res["jobs"]:
        assert j["returncode"] == 0 and j["wall_seconds"] > 0, j["name"]
        if j["side"] in ("product", "seed") and j["stage"] != "copy":
            assert 30 * 2**20 < j["peak_rss_tree"] < 8 * 2**30, j["name"]
            assert j["max_rss_process"] and j["cpu_seconds"] > 0, j["name"]
    # The same plans: the product's and the seed's outputs hold the same records per shard.
    assert {c["split"] for c in res["comparisons"]} == {"train200.1", "train"}
    assert all(c["counts_equal"] and c["records_product"] > 0 for c in res["comparisons"])
    # Read amplification from the builds' own counts: the seed reads the whole source.
    ten = jobs["product build train200.1"]
    assert 0.99 <= ten["bytes_read"] / ten["bytes_written"] < 1.5
    seed = jobs["seed build train200.1"]
    assert seed["bytes_read"] / seed["bytes_written"] > 5

    # The DAG: everything on the first run, one more split on the second, each way.
    dags_test, sched = jobs["dag first run"], jobs["dag first run (scheduler)"]
    assert dags_test["splits"] == sched["splits"] == ["train", "train200.1", "validation"]
    assert len(jobs["dag add one seed (scheduler)"]["splits"]) == 4
    ended = sched["task_ended_at"]
    assert ended["validate_source"] < ended["build"] < ended["publish_manifest"]
    assert ended["publish_manifest"] == sched["wall_seconds"] <= sched["run_seconds"]
    assert any(k.startswith("python -m beam_jobs.building.build") for k in sched["rss_by_process"])
    assert ("dag first run (team stack)" in jobs) is TEAM_STACK

    # --quick writes its tables to the work dir, never to the committed results.
    assert "### Ratios" in (tmp_path / "bench" / "RESULTS.md").read_text()
    assert (repo_md.read_bytes() if repo_md.exists() else None) == md_before
