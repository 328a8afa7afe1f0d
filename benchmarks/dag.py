"""What the user waits for: the DAG from trigger to published manifest.

For one dataset, in the same benchmark run as the seed reference:

* **first run**: ``bin/airflow dags test ssl_imagenet_splits`` with the default
  conf (five seeded 10% splits, the reshuffle, the validation copy) on a
  source this Airflow has never seen (a fresh output folder and a fresh
  AIRFLOW_HOME with a migrated database): validate, plan, seven builds,
  seven verifications, publish;
* **add one seed**: the same folder, the next seed (``"seeds": [6]`` after
  1..5) with ``"unsupervised": false``
  (the validation copy is up to date and skipped);
* the reference for "add one seed": ``cp`` of that split's published shards
  to a new folder plus one Python start-up (``python -c pass``), the least a
  tool that writes those bytes pays.

How the DAG runs: ``airflow dags test`` runs every task in one process, one
after another (no scheduler, no parallel builds); the Beam jobs are its
subprocesses (DirectRunner). This is the measurement users reproduce with one
command; a scheduler with the default parallelism would overlap up to three
builds (on 2 cores, the CPU-bound builds gain little from it).

The wall time is the whole ``dags test`` process (Airflow's own start-up
included: what a user of ``make demo`` waits for); the run's own duration
(DagRun start to end) and each task's time come from its log. Memory: every
process of the tree (benchmarks.measure), so the largest single process
(Airflow, a Beam launcher, a DirectRunner worker) is known.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.measure import run_measured

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "ssl_imagenet_splits"

_END_TASK = re.compile(r"^(\S+?)Z? .*\[DAG TEST\] end task task_id=(\S+) map_index=(\S+)")
_RUN = re.compile(r"DagRun Finished: .*run_duration=([0-9.]+), state=(\w+)")


def task_times(log: str) -> dict[str, Any]:
    """Per task (mapped ones summed), seconds between one task's end and the next's."""
    import datetime as dt

    ends = []
    for line in log.splitlines():
        m = _END_TASK.match(line)
        if m:
            ends.append((dt.datetime.fromisoformat(m.group(1)), m.group(2)))
    out: dict[str, float] = {}
    for (t0, _), (t1, task) in zip(ends, ends[1:]):
        out[task] = round(out.get(task, 0.0) + (t1 - t0).total_seconds(), 2)
    run = _RUN.search(log)
    return {
        "tasks": out,
        "run_seconds": float(run.group(1)) if run else None,
        "state": run.group(2) if run else None,
    }


def _airflow_env(bench: Any, home: Path) -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.airflow_env import airflow_env, migrated_home  # the tests' isolated Airflow

    migrated_home(home)
    env = airflow_env(home)
    for k in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE"):  # the benchmark's bytecode choice
        env.pop(k, None)
        if k in bench.env:
            env[k] = bench.env[k]
    return env


def run(bench: Any, ds: Any, src: Path, runs: Path) -> None:
    """Measure the DAG on ``src`` (a dataset of ``bench``); rows go to ``bench.jobs``."""
    home = runs / "airflow"
    out = runs / "dag-out"
    for p in (home, out):
        shutil.rmtree(p, ignore_errors=True)
    env = _airflow_env(bench, home)
    seeds = [int(s) for s in bench.args.seeds]  # the seed reference's splits too
    new_seed = max(seeds) + 1
    base = {
        "source_uri": str(src),
        "output_uri": str(out),
        "num_classes": ds.num_classes,
        "seeds": seeds,
    }
    cases = [
        ("first run", base),
        ("add one seed", {**base, "seeds": [new_seed], "unsupervised": False}),
    ]
    for case, conf in cases:
        bench.set_cache(src)
        name = f"dag {case}"
        log = bench.logs / ds.name / (name.replace(" ", "_") + ".log")
        print(f"  [{ds.name}] {name} ...", end=" ", flush=True)
        m = run_measured(
            name,
            [str(ROOT / "bin" / "airflow"), "dags", "test", DAG_ID, "--conf", json.dumps(conf)],
            cwd=str(ROOT),
            env=env,
            log_path=log,
            timeout=bench.args.job_timeout,
        )
        text = Path(m.log).read_text(errors="replace")
        times = task_times(text)
        print(
            f"{m.wall_seconds:.1f} s (run {times['run_seconds']} s, {times['state']}), largest "
            f"process {(m.max_rss_process or 0) / 2**20:,.0f} MiB",
            flush=True,
        )
        if m.returncode != 0 or times["state"] != "success":
            raise RuntimeError(f"{ds.name}: {name} failed; log {log}")
        manifest = json.loads((out / "manifest.json").read_text())
        bench.jobs.append(
            {
                "dataset": ds.name,
                "side": "dag",
                "stage": case,
                "split": None,
                "kind": None,
                **m.to_json(),
                "run_seconds": times["run_seconds"],
                "task_seconds": times["tasks"],
                "splits": sorted(manifest["splits"]),
                "records": sum(e["num_examples"] for e in manifest["splits"].values()),
                "bytes_read": None,
                "bytes_written": None,
                "mb_basis": "written",
            }
        )
    # The reference for one more seed: copy its bytes, start one Python.
    split = next(s for s in manifest["splits"] if s.endswith(f".{new_seed}"))
    files = [s["path"] for s in manifest["splits"][split]["shards"]]
    dst = runs / "cp-one-split"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    row = bench.job(
        ds.name,
        "raw",
        f"cp {split} + python start-up",
        None,
        ["sh", "-c", f"cp {' '.join(files)} {dst}/ && {sys.executable} -c pass"],
    )
    row.update(
        records=manifest["splits"][split]["num_examples"],
        bytes_read=sum(s["num_bytes"] for s in manifest["splits"][split]["shards"]),
        bytes_written=sum(s["num_bytes"] for s in manifest["splits"][split]["shards"]),
        mb_basis="written",
    )
    shutil.rmtree(dst, ignore_errors=True)


def rows(jobs: list[dict[str, Any]], data: dict[str, Any]) -> list[dict[str, Any]]:
    """The end-to-end table: per dataset and case, the DAG against its reference."""
    out = []
    for ds in data:
        seed = [
            j
            for j in jobs
            if j["dataset"] == ds and j["side"] == "seed" and j["stage"] in ("build", "copy")
        ]
        seed_wall = sum(j["wall_seconds"] for j in seed) if seed else None
        for case in ("first run", "add one seed"):
            d = next(
                (
                    j
                    for j in jobs
                    if j["dataset"] == ds and j["side"] == "dag" and j["stage"] == case
                ),
                None,
            )
            if d is None:
                continue
            if case == "first run":
                ref_name, ref = "seed reference, six outputs + validation copy", seed_wall
            else:
                r = next(
                    (
                        j
                        for j in jobs
                        if j["dataset"] == ds
                        and j["side"] == "raw"
                        and j["stage"].startswith("cp train")
                        and j["stage"].endswith("python start-up")
                    ),
                    None,
                )
                ref_name, ref = (r["stage"], r["wall_seconds"]) if r else ("-", None)
            out.append(
                {
                    "dataset": ds,
                    "case": case,
                    "wall_seconds": d["wall_seconds"],
                    "run_seconds": d.get("run_seconds"),
                    "reference": ref_name,
                    "reference_seconds": ref,
                    "ratio": (ref / d["wall_seconds"]) if ref else None,
                    "largest_process_mib": (d.get("max_rss_process") or 0) / 2**20,
                    "task_seconds": d.get("task_seconds") or {},
                }
            )
    return out


def table(rs: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | case | DAG wall s (run s) | reference | reference s | speed-up | "
        "largest process MiB | where the time went (s) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rs:
        tasks = ", ".join(f"{k} {v:.1f}" for k, v in r["task_seconds"].items() if v >= 0.5)
        ratio = (
            f"{r['ratio']:.2f}x"
            if r["ratio"] and r["case"] == "first run"
            else (f"{1 / r['ratio']:.2f}x the reference" if r["ratio"] else "-")
        )
        lines.append(
            f"| {r['dataset']} | {r['case']} | {r['wall_seconds']:.1f} "
            f"({r['run_seconds'] or 0:.1f}) | {r['reference']} | "
            f"{r['reference_seconds'] or 0:.1f} | {ratio} | "
            f"{r['largest_process_mib']:,.0f} | {tasks} |"
        )
    return "\n".join(lines)
