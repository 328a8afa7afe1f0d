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

Two ways the DAG runs, both measured:

* ``dags test`` (``run``): ``bin/airflow dags test`` runs every task in one
  process, one after another (no scheduler, no parallel builds); the Beam jobs
  are its subprocesses (DirectRunner). What users reproduce with one command
  (``make demo``). The wall time is the whole process (Airflow's own start-up
  included); the run's own duration (DagRun start to end) and each task's
  time come from its log. Memory: every process of the tree
  (benchmarks.measure), so the largest single process (Airflow, a Beam
  launcher, a DirectRunner worker) is known.
* a real scheduler (``run_scheduler``): what a user who presses Trigger waits
  for. Airflow's four components (API server, scheduler with the
  LocalExecutor at the default parallelism, DAG processor, triggerer) run as
  ``bin/airflow`` processes (``tests/support/airflow_server.py``); the DAG
  runs its build tasks three at a time (``max_active_tis_per_dagrun``) and
  its verify tasks all at once. Airflow is started and has served one run
  (a 10-class synthetic source) before the timed runs, as a running
  deployment has: the API server's first request initialises its versioned
  routes (a few seconds, once per process). Each case is timed from the
  REST API's trigger call to the end of ``publish_manifest`` (the manifest
  is published: what training jobs wait for) and to the run's end
  (``release_lock`` frees the folder; what the UI shows as success). Per
  task, the span from the first of its instances' start to the last one's
  end. The first run is repeated (``--dag_repeats``, default 3; each on a
  fresh output folder, so each validates and builds everything) and the
  median is the figure, every run listed: one run of a near-threshold
  target says little on a shared machine. The run's state is polled every
  2 s (the times come from the task instances, so polling only finds the
  end: each poll costs the API server ~16 ms of CPU, and at 0.2 s the
  polling alone took ~5% of a run's CPU). Memory: every process under the
  four components, sampled every 0.5 s in one pass over the process table,
  each process's peak from the kernel's high-water mark (VmHWM: no peak
  between samples is missed; the largest single process); CPU: their CPU
  time during the case, and the sampler's own (``sampler_cpu_seconds``).
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

from benchmarks.measure import Measured, kind_of_process, process_tree, run_measured

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
    return _with_bytecode_choice(bench, airflow_env(home))


def _with_bytecode_choice(bench: Any, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the benchmark's bytecode settings (benchmarks.bench), not the caller's."""
    for k in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE"):
        env.pop(k, None)
        if k in bench.env:
            env[k] = bench.env[k]
    return env


def _cases(bench: Any, ds: Any, src: Path, out: Path) -> list[tuple[str, dict[str, Any]]]:
    """The two timed runs: the first run (the seed reference's seeds, so the same
    splits), then the next seed alone on the published folder."""
    seeds = [int(s) for s in bench.args.seeds]
    base = {
        "source_uri": str(src),
        "output_uri": str(out),
        "num_classes": ds.num_classes,
        "seeds": seeds,
    }
    return [
        ("first run", base),
        ("add one seed", {**base, "seeds": [max(seeds) + 1], "unsupervised": False}),
    ]


def _dag_job(
    dataset: str, how: str, case: str, m: Measured, manifest: dict[str, Any], **timing: Any
) -> dict[str, Any]:
    """A row of ``bench.jobs`` for one timed DAG run (``how``: ``dags test`` or
    ``scheduler``), with the splits and records its manifest published."""
    return {
        "dataset": dataset,
        "side": "dag",
        "how": how,
        "stage": case,
        "split": None,
        "kind": None,
        **m.to_json(),
        **timing,
        "splits": sorted(manifest["splits"]),
        "records": sum(e["num_examples"] for e in manifest["splits"].values()),
        "bytes_read": None,
        "bytes_written": None,
        "mb_basis": "written",
    }


def run(bench: Any, ds: Any, src: Path, runs: Path) -> None:
    """Measure the DAG on ``src`` (a dataset of ``bench``); rows go to ``bench.jobs``."""
    home = runs / "airflow"
    out = runs / "dag-out"
    for p in (home, out):
        shutil.rmtree(p, ignore_errors=True)
    env = _airflow_env(bench, home)
    cases = _cases(bench, ds, src, out)
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
            _dag_job(
                ds.name,
                "dags test",
                case,
                m,
                manifest,
                run_seconds=times["run_seconds"],
                task_seconds=times["tasks"],
            )
        )
    # The reference for one more seed: copy its bytes, start one Python.
    (new_seed,) = dict(cases)["add one seed"]["seeds"]
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


# ---------------------------------------------------------------- under a real scheduler

WARM_UP_CLASSES = 10
# The rows' order: what a user who triggers a run waits for first. "team stack":
# docker-compose.yaml's stack as processes (tests/support/team_stack.py): Postgres,
# a separate scheduler, triggered over REST; the COUNT dataset's first run only.
HOWS = ("scheduler", "team stack", "dags test")


def _kind(p: Any) -> str:
    """A short name for a process under Airflow's components."""
    try:
        cmd = p.cmdline()
    except Exception:  # noqa: BLE001 - gone, or no permission
        return "?"
    text = " ".join(cmd)
    if "airflow_main.py" in text:
        rest = text.split("airflow_main.py", 1)[1].split()
        return "airflow " + (rest[0] if rest else "")
    if text.startswith("airflow worker -- LocalExecutor"):
        return "airflow executor worker"
    if text.startswith("airflow "):  # a task's supervisor or the task itself (their titles)
        return "airflow task"
    return kind_of_process(p)


def _rss_and_peak(pid: int) -> tuple[int, int]:
    """A process's resident set now and its peak so far (VmRSS and VmHWM, the
    kernel's high-water mark: a peak between two samples is not missed)."""
    now = peak = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith(b"VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, max(now, peak)


class _Sampler:
    """Every process under Airflow's components, every ``poll`` seconds, in a
    thread: each one's peak RSS (the kernel's high-water mark) and CPU time
    (kept after it exits).

    The machine is the one being measured, so a sample is one pass over the
    process table (``process_tree`` of all four components at once, not one
    scan per component) and the sampler's own CPU time is kept
    (``own_cpu_seconds``) to be reported beside the figures it took."""

    def __init__(self, roots: list[int], poll: float = 0.5) -> None:
        import psutil

        self.roots = [psutil.Process(pid) for pid in roots]
        self.poll = poll
        self.rss: dict[int, tuple[str, int]] = {}
        self.cpu: dict[int, float] = {}
        self.cpu_at_start: dict[int, float] = {}
        self.io: dict[int, tuple[int, int]] = {}
        self.io_at_start: dict[int, tuple[int, int]] = {}
        self.peak_tree = 0  # the largest sum of all their RSS at one sample
        self.max_processes = 0
        self.own_cpu_seconds = 0.0
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
            t0 = time.thread_time()
            self._sample()
            self.own_cpu_seconds += time.thread_time() - t0

    def _sample(self, first: bool = False) -> None:
        import psutil

        total = count = 0
        for p in process_tree(*self.roots):
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    io = p.io_counters()
                r, peak = _rss_and_peak(p.pid)
            except (psutil.Error, OSError):
                continue
            total, count = total + r, count + 1
            used = t.user + t.system
            if first:
                self.cpu_at_start[p.pid] = used
                self.io_at_start[p.pid] = (io.read_chars, io.write_chars)
            kind, best = self.rss.get(p.pid) or (_kind(p), 0)
            self.rss[p.pid] = (kind, max(best, peak))
            self.cpu[p.pid] = max(self.cpu.get(p.pid, 0.0), used)
            self.io[p.pid] = (io.read_chars, io.write_chars)
        self.peak_tree = max(self.peak_tree, total)
        self.max_processes = max(self.max_processes, count)

    def cpu_seconds(self) -> float:
        """CPU time of the processes during the case, each as of its last
        sample (a process that lived less than a sample period is missed)."""
        return round(sum(u - self.cpu_at_start.get(pid, 0.0) for pid, u in self.cpu.items()), 1)

    def io_bytes(self) -> tuple[int, int]:
        """Bytes read and written (rchar, wchar) by the processes during the case."""
        read = write = 0
        for pid, (r, w) in self.io.items():
            r0, w0 = self.io_at_start.get(pid, (0, 0))
            read, write = read + r - r0, write + w - w0
        return read, write

    def largest(self) -> tuple[int, dict[str, int]]:
        by_kind: dict[str, int] = {}
        for kind, r in self.rss.values():
            by_kind[kind] = max(by_kind.get(kind, 0), r)
        return max(by_kind.values(), default=0), by_kind


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


def _scheduler_case(
    bench: Any, af: Any, dataset: str, src: Path, case: str, conf: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Trigger one run on the running Airflow ``af``, wait for it, and return its
    row (timed from the trigger to publish_manifest's end, from the task
    instances' own times; the run's state is polled every 2 s, so the polling
    adds little load to the machine being measured)."""
    bench.set_cache(src)
    out = Path(conf["output_uri"])
    print(f"  [{dataset}] dag {case} (scheduler) ...", end=" ", flush=True)
    with _Sampler([p.pid for p in af.procs.values()]) as sampler:
        t0 = time.time()
        run_id = af.trigger(conf)
        run = af.wait_run(run_id, timeout=timeout, poll=2.0)
    tis = af.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", limit=100)[
        "task_instances"
    ]
    spans = task_spans(tis, t0)
    published = spans["ended_at"].get("publish_manifest")
    ended = _utc(run.get("end_date"))
    largest, by_kind = sampler.largest()
    print(
        f"manifest after {published} s, run {run.get('state')} after "
        f"{(ended - t0) if ended else 0:.1f} s, largest process {largest / 2**20:,.0f} MiB",
        flush=True,
    )
    if run.get("state") != "success" or published is None:
        raise RuntimeError(
            f"{dataset}: dag {case} under the scheduler: {run.get('state')}; logs under {af.logs}"
        )
    manifest = json.loads((out / "manifest.json").read_text())
    io_read, io_write = sampler.io_bytes()
    m = Measured(
        name=f"dag {case} (scheduler)",
        argv=["POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json.dumps(conf)],
        returncode=0,
        wall_seconds=published,
        cpu_seconds=sampler.cpu_seconds(),
        peak_rss_tree=sampler.peak_tree,
        max_rss_process=largest,
        max_processes=sampler.max_processes,
        io_read_bytes=io_read,
        io_write_bytes=io_write,
        log=str(af.home / "logs"),
        rss_by_process=by_kind,
    )
    return _dag_job(
        dataset,
        "scheduler",
        case,
        m,
        manifest,
        run_seconds=round(ended - t0, 2) if ended else None,
        task_seconds=spans["tasks"],
        task_ended_at=spans["ended_at"],
        sampler_cpu_seconds=round(sampler.own_cpu_seconds, 2),
    )


def run_scheduler(bench: Any, ds: Any, src: Path, runs: Path) -> None:
    """The first run and "add one seed" triggered on a running Airflow
    (module docstring); rows go to ``bench.jobs`` with ``how: scheduler``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.airflow_env import migrated_home
    from support.airflow_server import Airflow

    from beam_jobs.source.synthetic import Spec, generate

    base_dir = runs / "scheduler"
    shutil.rmtree(base_dir, ignore_errors=True)
    out = base_dir / "out"
    af = Airflow(migrated_home(base_dir / "airflow"), base_dir / "airflow-logs", parallelism=None)
    _with_bytecode_choice(bench, af.env)
    timeout = bench.args.job_timeout or 3600
    print(f"  [{ds.name}] dag under a scheduler: starting Airflow ...", end=" ", flush=True)
    af.start()
    try:
        af.wait_ready(timeout=300)
        warm_src = base_dir / "warm-up-source"
        generate(
            Spec(
                num_classes=WARM_UP_CLASSES,
                min_per_class=20,
                max_per_class=30,
                train_shards=4,
                validation_shards=1,
                seed=3,
            ),
            str(warm_src),
            workers=1,
        )
        warm = af.wait_run(
            af.trigger(
                {
                    "source_uri": str(warm_src),
                    "output_uri": str(base_dir / "warm-up-out"),
                    "num_classes": WARM_UP_CLASSES,
                }
            ),
            timeout=600,
            poll=0.5,
        )
        if warm.get("state") != "success":
            raise RuntimeError(f"{ds.name}: the warm-up run failed; logs {af.logs}")
        print("ready", flush=True)
        repeats = max(1, bench.args.dag_repeats)
        for case, conf in _cases(bench, ds, src, out):
            # The first run is repeated on fresh folders (each a never-seen source to
            # that folder: validated again), the last one on ``out``, which "add one
            # seed" then extends; the median run is the row.
            n = repeats if case == "first run" else 1
            runs_of_case = []
            for k in range(n):
                where = out if k == n - 1 else base_dir / f"out-repeat-{k + 1}"
                runs_of_case.append(
                    _scheduler_case(
                        bench, af, ds.name, src, case, {**conf, "output_uri": str(where)}, timeout
                    )
                )
                if where != out:
                    shutil.rmtree(where, ignore_errors=True)
            ordered = sorted(runs_of_case, key=lambda j: j["wall_seconds"])
            row = dict(ordered[len(ordered) // 2])
            if n > 1:
                row["repeats"] = [
                    {"wall_seconds": j["wall_seconds"], "run_seconds": j["run_seconds"]}
                    for j in runs_of_case
                ]
            bench.jobs.append(row)
    finally:
        af.stop()


def run_team_stack(bench: Any, ds: Any, src: Path, runs: Path) -> None:
    """The first run (the seed's six outputs and the validation copy, the same plans)
    on docker-compose.yaml's stack run as processes: a real Postgres, the four
    components apart, the trigger over REST with the admin's token. Timed as
    ``run_scheduler`` times it (trigger to the end of publish_manifest), once,
    after a warm-up run; a row with ``how: team stack``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.team_stack import Stack

    from beam_jobs.source.synthetic import Spec, generate

    base = runs / "team-stack"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    stack = Stack(base, extra_allowed_roots=[str(src.parent), str(runs)])
    _with_bytecode_choice(bench, stack.env)
    print(f"  [{ds.name}] dag on the team stack: starting it ...", end=" ", flush=True)
    try:
        stack.init()
        stack.start()
        stack.wait_ready(timeout=300)
        warm_src = base / "warm-up-source"
        generate(  # as run_scheduler's warm-up: the API server's first requests, once
            Spec(num_classes=WARM_UP_CLASSES, min_per_class=20, max_per_class=30, seed=3),
            str(warm_src),
            workers=1,
        )
        warm = stack.wait_run(
            stack.trigger(
                {
                    "source_uri": str(warm_src),
                    "output_uri": str(base / "warm-up-out"),
                    "num_classes": WARM_UP_CLASSES,
                }
            ),
            timeout=600,
        )
        if warm.get("state") != "success":
            raise RuntimeError(f"{ds.name}: the team stack's warm-up run failed; logs {stack.logs}")
        print("ready", flush=True)
        case, conf = _cases(bench, ds, src, base / "out")[0]
        row = _scheduler_case(
            bench, stack, ds.name, src, case, conf, bench.args.job_timeout or 3600
        )
        row.update(how="team stack", name=f"dag {case} (team stack)")
        bench.jobs.append(row)
    finally:
        stack.remove()


def rows(jobs: list[dict[str, Any]], data: dict[str, Any]) -> list[dict[str, Any]]:
    """The end-to-end table: per dataset, way of running and case, the DAG
    against its reference (the scheduler's rows first: what a user who
    triggers a run waits for)."""
    out = []
    for ds in data:
        seed = [
            j
            for j in jobs
            if j["dataset"] == ds and j["side"] == "seed" and j["stage"] in ("build", "copy")
        ]
        seed_wall = sum(j["wall_seconds"] for j in seed) if seed else None
        copy = next(
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
        references = {
            "first run": ("seed reference, six outputs + validation copy", seed_wall),
            "add one seed": (copy["stage"], copy["wall_seconds"]) if copy else ("-", None),
        }
        dags_test = {
            j["stage"]: j["wall_seconds"]
            for j in jobs
            if j["dataset"] == ds
            and j["side"] == "dag"
            and j.get("how", "dags test") == "dags test"
        }
        for how in HOWS:
            for case, (ref_name, ref) in references.items():
                d = next(
                    (
                        j
                        for j in jobs
                        if j["dataset"] == ds
                        and j["side"] == "dag"
                        and j.get("how", "dags test") == how
                        and j["stage"] == case
                    ),
                    None,
                )
                if d is None:
                    continue
                out.append(
                    {
                        "dataset": ds,
                        "how": how,
                        "case": case,
                        "wall_seconds": d["wall_seconds"],
                        "run_seconds": d.get("run_seconds"),
                        "cpu_seconds": d.get("cpu_seconds"),
                        "reference": ref_name,
                        "reference_seconds": ref,
                        "ratio": (ref / d["wall_seconds"]) if ref else None,
                        "largest_process_mib": (d.get("max_rss_process") or 0) / 2**20,
                        "task_seconds": d.get("task_seconds") or {},
                        "repeats": [x["wall_seconds"] for x in d.get("repeats") or []],
                        # this way's time over dags test's, same case (team stack vs dags test)
                        "vs_dags_test": (d["wall_seconds"] / dags_test[case])
                        if dags_test.get(case)
                        else None,
                    }
                )
    return out


def table(rs: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | how | case | DAG s | reference | reference s | speed-up | "
        "largest process MiB | where the time went (s) |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rs:
        tasks = ", ".join(f"{k} {v:.1f}" for k, v in r["task_seconds"].items() if v >= 0.5)
        ratio = (
            f"{r['ratio']:.2f}x"
            if r["ratio"] and r["case"] == "first run"
            else (f"{1 / r['ratio']:.2f}x the reference" if r["ratio"] else "-")
        )
        if r["how"] == "team stack" and r.get("vs_dags_test"):
            timed = (
                f"{r['wall_seconds']:.1f} (run ends {r['run_seconds'] or 0:.1f}; "
                f"{r['vs_dags_test']:.2f}x dags test's)"
            )
        elif r["how"] == "scheduler":
            timed = f"{r['wall_seconds']:.1f} (run ends {r['run_seconds'] or 0:.1f})"
            if len(r.get("repeats") or []) > 1:
                each = ", ".join(f"{x:.1f}" for x in r["repeats"])
                timed = f"{r['wall_seconds']:.1f}, median of {each} (run ends {r['run_seconds'] or 0:.1f})"
        else:
            timed = f"{r['wall_seconds']:.1f} (run {r['run_seconds'] or 0:.1f})"
        lines.append(
            f"| {r['dataset']} | {r['how']} | {r['case']} | {timed} | {r['reference']} | "
            f"{r['reference_seconds'] or 0:.1f} | {ratio} | "
            f"{r['largest_process_mib']:,.0f} | {tasks} |"
        )
    return "\n".join(lines)
