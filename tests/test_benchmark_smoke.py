"""Smoke test of the benchmark harness (``python -m benchmarks.run --quick``).

Runs the quick COUNT dataset with one seed (product: validate, plan, two
builds, the validation copy, the builds again three at a time; the seed
reference on the same plans; the raw copies; the DAG with ``dags test`` and
under a real scheduler) in a temp dir and checks
results.json: its fields, sane figures, read amplification of the 10% split
(the job's count and, with strace installed, measured), and equal record
counts of the product's and the seed reference's outputs. About 2.5 minutes
on 2 cores (a third of it starting Airflow's components and their warm-up run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_quick_benchmark(tmp_path):
    repo_md = ROOT / "benchmarks" / "RESULTS.md"
    md_before = repo_md.stat().st_mtime_ns if repo_md.exists() else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "count",
            "--seeds",
            "1",
            "--skip-verify",
            "--no-profile",
            "--dag_repeats=2",
            f"--work_dir={tmp_path / 'bench'}",
            # share the (git-ignored) bytecode cache between runs: compiling Beam
            # and TensorFlow from source takes longer than the benchmark itself
            f"--pycache_dir={ROOT / '.bench' / 'pycache'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    for key in ("meta", "datasets", "jobs", "targets", "totals", "comparisons"):
        assert key in res, key
    assert res["meta"]["quick"] is True
    (ds,) = res["datasets"]
    assert res["datasets"][ds]["train_records"] == 20_000

    jobs = {j["name"]: j for j in res["jobs"]}
    for name in (
        "product validate",
        "product plan",
        "product build train",
        "seed build train",
        "product copy validation",
        "seed copy validation",
        "raw cp -r source",
        "raw cat train-* >/dev/null",
        "dag first run",
        "dag add one seed",
        "dag first run (scheduler)",
        "dag add one seed (scheduler)",
        "dag first run (team stack)",
    ):
        assert name in jobs, (name, sorted(jobs))
    # The DAG end to end: everything published on the first run, one split on the second.
    first, more = jobs["dag first run"], jobs["dag add one seed"]
    assert first["splits"] == sorted(
        ["train", "validation", next(s for s in first["splits"] if s.endswith(".1"))]
    )
    assert len(more["splits"]) == 4 and any(s.endswith(".2") for s in more["splits"])
    assert first["task_seconds"]["validate_source"] > 0 and first["run_seconds"] > 0
    assert (
        "validate_source" not in more["task_seconds"]
        or more["task_seconds"]["validate_source"] < first["task_seconds"]["validate_source"]
    )
    # The same under a real scheduler (trigger to manifest): the same splits,
    # its tasks' spans in order, the run ending after the manifest.
    sched, sched_more = jobs["dag first run (scheduler)"], jobs["dag add one seed (scheduler)"]
    assert sched["splits"] == first["splits"] and sched_more["splits"] == more["splits"]
    ended = sched["task_ended_at"]
    assert ended["validate_source"] < ended["plan"] < ended["build"] < ended["verify"]
    assert ended["verify"] < ended["publish_manifest"] == sched["wall_seconds"]
    assert sched["run_seconds"] >= sched["wall_seconds"] > 0
    assert "validate_source" not in sched_more["task_seconds"] or (
        sched_more["task_seconds"]["validate_source"] < sched["task_seconds"]["validate_source"]
    )
    # The first run twice, on fresh folders: the row is the median (of two, the slower).
    repeats = [x["wall_seconds"] for x in sched["repeats"]]
    assert len(repeats) == 2 and min(repeats) > 0 and sched["wall_seconds"] == max(repeats)
    assert "repeats" not in sched_more
    assert "median of" in (tmp_path / "bench" / "RESULTS.md").read_text()
    assert 0 <= sched["sampler_cpu_seconds"] < sched["cpu_seconds"]
    assert sched["max_rss_process"] > 50 * 2**20 and sched["cpu_seconds"] > 0
    assert any(k.startswith("python -m beam_jobs.building.build") for k in sched["rss_by_process"])
    assert any("(scheduler, first run)" in t["target"] for t in res["targets"])
    # The team's stack (Postgres, REST trigger): the same splits, beside dags test's time.
    team = jobs["dag first run (team stack)"]
    assert team["how"] == "team stack" and team["splits"] == first["splits"]
    assert team["task_ended_at"]["publish_manifest"] == team["wall_seconds"] > 0
    assert "x dags test's" in (tmp_path / "bench" / "RESULTS.md").read_text()
    assert any(n.startswith("raw cp train") and n.endswith("python start-up") for n in jobs)
    assert any("the whole DAG" in t["target"] for t in res["targets"])
    assert any("every process the product runs" in t["target"] for t in res["targets"])
    for j in res["jobs"]:
        assert j["returncode"] == 0
        assert j["wall_seconds"] > 0
        assert j["records"] and j["records"] > 0, j["name"]
        for field in (
            "cpu_seconds",
            "peak_rss_tree",
            "max_rss_process",
            "records_per_s",
            "mb_per_s",
            "bytes_read",
            "bytes_written",
            "read_amplification",
        ):
            assert field in j, (j["name"], field)
        if j["side"] in ("product", "seed") and j["stage"] != "copy":
            # Python + Beam: at least ~50 MiB, far below the machine
            assert 50 * 2**20 < j["peak_rss_tree"] < 8 * 2**30, (j["name"], j["peak_rss_tree"])
            assert j["max_rss_process"] <= j["peak_rss_tree"] * 1.5 + 2**27
            assert j["cpu_seconds"] and j["cpu_seconds"] > 0

    ten = [
        j
        for j in res["jobs"]
        if j["side"] == "product" and j["stage"] == "build" and j["kind"] == "10%"
    ]
    assert len(ten) == 1
    assert 0.99 <= ten[0]["read_amplification"] < 1.5
    if "read_amplification_strace" in ten[0]:  # measured (strace installed)
        assert 0.99 <= ten[0]["read_amplification_strace"] < 1.5
    assert ten[0]["seed_speedup"] and ten[0]["seed_speedup"] > 0
    seed_ten = jobs[f"seed build {ten[0]['split']}"]
    assert seed_ten["read_amplification"] > 5  # the seed reads the whole source per split
    assert jobs["product build train"]["read_amplification"] == pytest.approx(1.0, abs=0.01)

    comps = {c["split"]: c for c in res["comparisons"]}
    assert set(comps) == {ten[0]["split"], "train"}
    for c in comps.values():
        assert c["counts_equal"], c
        assert c["records_product"] == c["records_seed"] > 0
        # re-serialization keeps every feature (the seed reorders fields)
        assert c["differing_records_same_features"] == c["differing_records_parsed"]

    names = {t["target"] for t in res["targets"]}
    assert any("read amplification" in n for n in names)
    assert any("faster than the seed" in n for n in names)
    assert (tmp_path / "bench" / "RESULTS.md").read_text().count("| product build") >= 2
    # --quick never touches the committed results
    assert (repo_md.stat().st_mtime_ns if repo_md.exists() else None) == md_before
    print(f"quick benchmark: {seconds:.0f} s")
