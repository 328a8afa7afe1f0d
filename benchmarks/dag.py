"""What the user waits for: the DAG from trigger to published manifest.

For one dataset, in the same run as the seed reference and on the same seeds
(so the same plans), the default conf (the seeds' 10% splits, the reshuffle,
the validation copy), three ways:

* ``dags test`` (``run_dags_test``): ``bin/airflow dags test`` runs every task
  in one process (what ``make demo`` does); timed as the whole process, the
  run's own duration and each task's time from its log. Cases: the *first
  run* (a fresh output folder and Airflow database), then *add one seed*
  (``"seeds": [next]``, ``"unsupervised": false`` on the published folder),
  whose reference is ``cp`` of that split's shards plus one ``python -c pass``.
* the SQLite scheduler (``run_scheduler``): Airflow's four components as
  ``bin/airflow`` processes (``tests/support/airflow_server.py``) with the
  LocalExecutor at Airflow's default parallelism, started and warmed up by one
  small run before the timing; a run is triggered over REST and timed from
  the trigger to the end of ``publish_manifest`` (the task instances' own
  times; the run's state polled every 2 s). The first run is repeated
  ``--dag_repeats`` times on fresh folders; the median is the figure.
* the team stack (``run_team_stack``, COUNT only): docker-compose.yaml's stack
  as processes (``tests/support/team_stack.py``: Postgres, the components
  apart, the trigger with the admin's token), the first run once, timed as
  under the scheduler.

Memory under a scheduler: every process under the components, sampled every
0.5 s in one pass over the process table, each one's peak from the kernel's
high-water mark (VmHWM); CPU: their CPU time during the run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import product
from benchmarks.measure import MIB, Measured, kind_of_process, process_tree, run_measured

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "ssl_imagenet_splits"
WARM_UP_CLASSES = 10
HOWS = ("scheduler", "team stack", "dags test")  # the rows' order in the report

_END_TASK = re.compile(r"^(\S+?)Z? .*\[DAG TEST\] end task task_id=(\S+) map_index=(\S+)")
_RUN = re.compile(r"DagRun Finished: .*run_duration=([0-9.]+), state=(\w+)")


def task_times(log: str) -> dict[str, Any]:
    """From a ``dags test`` log: per task (mapped ones summed), the seconds between
    one task's end and the next's; the run's duration and state."""
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


def _utc(stamp: str | None) -> float | None:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def task_spans(tis: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Per task (its mapped instances together): seconds from the first one's
    start to the last one's end; and when each task ended, from ``t0``."""
    spans: dict[str, tuple[float, float]] = {}
    for ti in tis:
        start, end = _utc(ti.get("start_date")), _utc(ti.get("end_date"))
        if start is None or end is None:
            continue
        lo, hi = spans.get(ti["task_id"], (start, end))
        spans[ti["task_id"]] = (min(lo, start), max(hi, end))
    ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
    return {
        "tasks": {k: round(hi - lo, 2) for k, (lo, hi) in ordered},
        "ended_at": {k: round(hi - t0, 2) for k, (lo, hi) in ordered},
    }


def _support() -> None:
    """Make the tests' Airflow harnesses (``tests/support``) importable."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))


def _with_bytecode_choice(bench: Any, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the benchmark's bytecode settings (``benchmarks.jobs``)."""
    for k in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE"):
        env.pop(k, None)
        if k in bench.env:
            env[k] = bench.env[k]
    return env


def _cases(bench: Any, ds: Any, src: Path, out: Path) -> list[tuple[str, dict[str, Any]]]:
    """The first run (the seed reference's seeds, so the same splits), then the next
    seed alone on the published folder."""
    seeds = [int(s) for s in bench.args.seeds]
    base = {"source_uri": str(src), "output_uri": str(out), "num_classes": ds.num_classes}
    base["seeds"] = seeds
    more = {**base, "seeds": [max(seeds) + 1], "unsupervised": False}
    return [("first run", base), ("add one seed", more)]


def _dag_row(
    dataset: str, how: str, case: str, m: Measured, out: Path, **timing: Any
) -> dict[str, Any]:
    """A row of ``bench.jobs`` for one timed DAG run, with what its manifest published."""
    manifest = json.loads((out / "manifest.json").read_text())
    splits = manifest["splits"]
    row: dict[str, Any] = {"dataset": dataset, "side": "dag", "how": how, "stage": case}
    row.update(split=None, **m.to_json(), **timing, splits=sorted(splits))
    row["records"] = sum(e["num_examples"] for e in splits.values())
    return row


def run_dags_test(bench: Any, ds: Any, src: Path, runs: Path) -> None:
    """Both cases with ``dags test`` (a fresh Airflow home), then the reference of
    "add one seed"; rows go to ``bench.jobs``."""
    _support()
    from support.airflow_env import airflow_env, migrated_home

    home, out = runs / "airflow", runs / "dag-out"
    for p in (home, out):
        shutil.rmtree(p, ignore_errors=True)
    env = _with_bytecode_choice(bench, airflow_env(migrated_home(home)))
    for case, conf in _cases(bench, ds, src, out):
        bench.set_cache(src)
        log = bench.logs / ds.name / f"dag_{case.replace(' ', '_')}.log"
        print(f"  [{ds.name}] dag {case} (dags test) ...", end=" ", flush=True)
        argv = [str(ROOT / "bin" / "airflow"), "dags", "test", DAG_ID, "--conf", json.dumps(conf)]
        m = run_measured(f"dag {case}", argv, cwd=ROOT, env=env, log_path=log)
        times = task_times(Path(m.log).read_text(errors="replace"))
        print(
            f"{m.wall_seconds:.1f} s (run {times['run_seconds']} s, {times['state']})", flush=True
        )
        if m.returncode != 0 or times["state"] != "success":
            raise RuntimeError(f"{ds.name}: dag {case} failed; log {log}")
        row = _dag_row(ds.name, "dags test", case, m, out, run_seconds=times["run_seconds"])
        row["task_seconds"] = times["tasks"]
        bench.jobs.append(row)
    manifest = json.loads((out / "manifest.json").read_text())
    _copy_one_split(bench, ds, runs, manifest, max(conf["seeds"]))


def _copy_one_split(bench: Any, ds: Any, runs: Path, manifest: dict[str, Any], seed: int) -> None:
    """The reference for one more seed: ``cp`` of its published shards, one Python start-up."""
    split = next(s for s in manifest["splits"] if s.endswith(f".{seed}"))
    files = [s["path"] for s in manifest["splits"][split]["shards"]]
    dst = runs / "cp-one-split"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    argv = ["sh", "-c", f"cp {' '.join(files)} {dst}/ && {sys.executable} -c pass"]
    row = bench.job(ds.name, "raw", f"cp {split} + python start-up", None, argv)
    row.update(records=manifest["splits"][split]["num_examples"])
    shutil.rmtree(dst, ignore_errors=True)


def _kind(p: Any) -> str:
    """A short name for a process under Airflow's components."""
    try:
        text = " ".join(p.cmdline())
    except Exception:  # noqa: BLE001 - gone, or no permission
        return "?"
    if "airflow_main.py" in text:
        rest = text.split("airflow_main.py", 1)[1].split()
        return "airflow " + (rest[0] if rest else "")
    if text.startswith("airflow worker -- LocalExecutor"):
        return "airflow executor worker"
    if text.startswith("airflow "):  # a task's supervisor or the task itself (their titles)
        return "airflow task"
    return kind_of_process(p)


def _rss_and_peak(pid: int) -> tuple[int, int]:
    """A process's resident set now and its peak so far (VmRSS, VmHWM)."""
    now = peak = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith(b"VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, max(now, peak)


class _Sampler:
    """Every process under Airflow's components, every ``poll`` seconds, in a thread:
    each one's peak RSS (the kernel's high-water mark) and CPU time."""

    def __init__(self, roots: list[int], poll: float = 0.5) -> None:
        import psutil

        self.roots = [psutil.Process(pid) for pid in roots]
        self.poll = poll
        self.rss: dict[int, tuple[str, int]] = {}
        self.cpu: dict[int, float] = {}
        self.cpu_at_start: dict[int, float] = {}
        self.peak_tree = 0  # the largest sum of all their RSS at one sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sampler:
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        import psutil

        total = 0
        for p in process_tree(*self.roots):
            try:
                t = p.cpu_times()
                r, peak = _rss_and_peak(p.pid)
            except (psutil.Error, OSError):
                continue
            total += r
            if first:
                self.cpu_at_start[p.pid] = t.user + t.system
            kind, best = self.rss.get(p.pid) or (_kind(p), 0)
            self.rss[p.pid] = (kind, max(best, peak))
            self.cpu[p.pid] = max(self.cpu.get(p.pid, 0.0), t.user + t.system)
        self.peak_tree = max(self.peak_tree, total)

    def measured(self, name: str, wall: float, log: str) -> Measured:
        """The run's figures: CPU time of the processes during it, their peaks."""
        cpu = sum(u - self.cpu_at_start.get(pid, 0.0) for pid, u in self.cpu.items())
        by_kind: dict[str, int] = {}
        for kind, r in self.rss.values():
            by_kind[kind] = max(by_kind.get(kind, 0), r)
        largest = max(by_kind.values(), default=0)
        return Measured(name, 0, wall, round(cpu, 1), self.peak_tree, largest, log, by_kind)


def _timed_run(
    bench: Any, af: Any, ds: Any, how: str, case: str, conf: dict[str, Any]
) -> dict[str, Any]:
    """Trigger one run on the running Airflow ``af``, wait for it; its row, timed from
    the trigger to publish_manifest's end (the task instances' own times)."""
    bench.set_cache(Path(conf["source_uri"]))
    print(f"  [{ds.name}] dag {case} ({how}) ...", end=" ", flush=True)
    with _Sampler([p.pid for p in af.procs.values()]) as sampler:
        t0 = time.time()
        run_id = af.trigger(conf)
        run = af.wait_run(run_id, timeout=bench.args.job_timeout, poll=2.0)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    spans = task_spans(af.api(path, limit=100)["task_instances"], t0)
    published = spans["ended_at"].get("publish_manifest")
    ended = _utc(run.get("end_date"))
    if run.get("state") != "success" or published is None:
        raise RuntimeError(f"{ds.name}: dag {case} ({how}): {run.get('state')}; logs {af.logs}")
    m = sampler.measured(f"dag {case} ({how})", published, str(af.logs))
    print(
        f"manifest after {published} s, largest process {(m.max_rss_process or 0) / MIB:,.0f} MiB"
    )
    row = _dag_row(ds.name, how, case, m, Path(conf["output_uri"]), task_seconds=spans["tasks"])
    row.update(run_seconds=round(ended - t0, 2) if ended else None, task_ended_at=spans["ended_at"])
    return row


def _warm_up(bench: Any, af: Any, base: Path, ds: Any) -> None:
    """One small run before the timing, as a deployment that is up has served (the API
    server initialises its versioned routes on its first requests)."""
    af.wait_ready(timeout=300)
    if bench.args.quick:  # a smoke run: its figures mean nothing, so no warm-up run
        print("ready (no warm-up run: --quick)", flush=True)
        return
    product.generate_small(str(base / "warm-up-source"), WARM_UP_CLASSES)
    conf = {"source_uri": str(base / "warm-up-source"), "output_uri": str(base / "warm-up-out")}
    warm = af.wait_run(af.trigger({**conf, "num_classes": WARM_UP_CLASSES}), timeout=600, poll=0.5)
    if warm.get("state") != "success":
        raise RuntimeError(f"{ds.name}: the warm-up run failed; logs {af.logs}")
    print("ready", flush=True)


def _median_of(bench: Any, af: Any, ds: Any, base: Path, conf: dict[str, Any]) -> dict[str, Any]:
    """The first run ``--dag_repeats`` times, each on a fresh folder (the last on
    ``conf``'s, which "add one seed" extends); the median run, every run listed."""
    n = max(1, bench.args.dag_repeats)
    rows = []
    for k in range(n):
        where = conf["output_uri"] if k == n - 1 else str(base / f"out-repeat-{k + 1}")
        rows.append(
            _timed_run(bench, af, ds, "scheduler", "first run", {**conf, "output_uri": where})
        )
        if k < n - 1:
            shutil.rmtree(where, ignore_errors=True)
    row = dict(sorted(rows, key=lambda j: j["wall_seconds"])[n // 2])
    row["repeats"] = [j["wall_seconds"] for j in rows]
    return row


def run_scheduler(bench: Any, ds: Any, src: Path, runs: Path) -> None:
    """Both cases on a running Airflow (SQLite, LocalExecutor); rows ``how: scheduler``."""
    _support()
    from support.airflow_env import migrated_home
    from support.airflow_server import Airflow

    base = runs / "scheduler"
    shutil.rmtree(base, ignore_errors=True)
    af = Airflow(migrated_home(base / "airflow"), base / "airflow-logs", parallelism=None)
    _with_bytecode_choice(bench, af.env)
    print(f"  [{ds.name}] dag under a scheduler: starting Airflow ...", end=" ", flush=True)
    af.start()
    try:
        _warm_up(bench, af, base, ds)
        (_, first), (case, more) = _cases(bench, ds, src, base / "out")
        bench.jobs.append(_median_of(bench, af, ds, base, first))
        bench.jobs.append(_timed_run(bench, af, ds, "scheduler", case, more))
    finally:
        af.stop()


def run_team_stack(bench: Any, ds: Any, src: Path, runs: Path) -> None:
    """The first run on docker-compose.yaml's stack as processes (Postgres, REST with
    the admin's token), once after a warm-up run; a row ``how: team stack``."""
    _support()
    from support.team_stack import Stack

    base = runs / "team-stack"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    stack = Stack(base, extra_allowed_roots=[str(src.parent), str(runs)])
    _with_bytecode_choice(bench, stack.env)
    print(f"  [{ds.name}] dag on the team stack: starting it ...", end=" ", flush=True)
    try:
        stack.init()
        stack.start()
        _warm_up(bench, stack, base, ds)
        case, conf = _cases(bench, ds, src, base / "out")[0]
        bench.jobs.append(_timed_run(bench, stack, ds, "team stack", case, conf))
    finally:
        stack.remove()
