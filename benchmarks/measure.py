"""Run one job in a subprocess and measure it: wall time, CPU time, memory.

* ``peak_rss_tree``: the job's process and all its descendants (DirectRunner
  worker processes included), polled with psutil every ``poll`` seconds, their
  resident sets summed; the peak of that sum (a spike shorter than the poll
  interval can be missed).
* ``max_rss_process``: the kernel's high-water mark (``ru_maxrss``) of the
  largest single process of the tree, exact: each job runs under a small
  wrapper (``python -m benchmarks.measure OUT.json -- cmd ...``) that waits
  for it and reads ``getrusage(RUSAGE_CHILDREN)``. The same call gives the
  job's CPU seconds (user + system); the poller also sums each process's CPU
  time as last seen, and the larger of the two is reported (a worker that is
  killed rather than waited for is missing from rusage).

The wrapper also runs several commands at most N at a time
(``python -m benchmarks.measure OUT.json --parallel N COMMANDS.json``, a JSON
list of argv lists): the product's builds as the DAG runs them.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


@dataclass
class Measured:
    """One measured job (or one timed DAG run)."""

    name: str
    returncode: int
    wall_seconds: float
    cpu_seconds: float | None
    peak_rss_tree: int  # bytes, sampled sum over the process tree
    max_rss_process: int | None  # bytes, kernel high-water mark of the largest process
    log: str
    rss_by_process: dict[str, int] = field(default_factory=dict)  # kind of process -> peak

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def process_tree(*roots: Any) -> list[Any]:
    """The roots (``psutil.Process``) still running and all their descendants, from
    one pass over the process table; parents come before their children."""
    import psutil

    children: dict[int | None, list[Any]] = {}
    alive: set[int] = set()
    for p in psutil.process_iter(["ppid"]):
        alive.add(p.pid)
        children.setdefault(p.info["ppid"], []).append(p)
    out: list[Any] = []
    todo = [root for root in roots if root.pid in alive and root.is_running()]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p.pid, ()))
    return out


def kind_of_process(p: Any) -> str:
    """A short name for a process of a job: ``beam worker``, ``python -m X`` or its program."""
    try:
        cmd = p.cmdline()
    except Exception:  # noqa: BLE001 - gone, or no permission
        return "?"
    if "sdk_worker_main" in " ".join(cmd):
        return "beam worker"
    if "-m" in cmd and cmd.index("-m") + 1 < len(cmd):
        return "python -m " + cmd[cmd.index("-m") + 1]
    return Path(cmd[0]).name if cmd else "?"


def kill_tree(root: Any) -> None:
    """SIGKILL a process and every descendant, children first."""
    import psutil

    for p in reversed(process_tree(root)):
        try:
            p.kill()
        except psutil.Error:
            pass


class _Poll:
    """The samples of one job's process tree: summed RSS, each process's peak and CPU."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.peak = 0
        self.cpu: dict[int, float] = {}
        self.rss: dict[int, tuple[str, int]] = {}

    def sample(self) -> None:
        import psutil

        total = 0
        for p in process_tree(self.root):
            if p.pid == self.root.pid:  # the wrapper: small and constant, not counted
                continue
            try:
                with p.oneshot():
                    r = p.memory_info().rss
                    t = p.cpu_times()
            except psutil.Error:
                continue
            total += r
            kind, best = self.rss.get(p.pid) or (kind_of_process(p), 0)
            self.rss[p.pid] = (kind, max(best, r))
            self.cpu[p.pid] = max(self.cpu.get(p.pid, 0.0), t.user + t.system)
        self.peak = max(self.peak, total)

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, r in self.rss.values():
            out[kind] = max(out.get(kind, 0), r)
        return out


def run_measured(
    name: str,
    argv: list[str],
    *,
    cwd: str | os.PathLike[str],
    env: dict[str, str],
    log_path: str | os.PathLike[str],
    poll: float = 0.1,
    timeout: float | None = None,
) -> Measured:
    """Run ``argv`` under the rusage wrapper, poll its process tree, return the figures."""
    import psutil

    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    fd, usage_path = tempfile.mkstemp(prefix="rusage-", suffix=".json")
    os.close(fd)
    t0 = time.monotonic()
    with open(log, "wb") as logf:
        logf.write(("$ " + " ".join(argv) + "\n").encode())
        logf.flush()
        wrapped = [sys.executable, "-m", "benchmarks.measure", usage_path, "--", *argv]
        proc = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT)
        polls = _Poll(psutil.Process(proc.pid))
        try:
            _wait(proc, polls, poll, None if timeout is None else t0 + timeout)
        except BaseException:  # e.g. Ctrl-C: do not leave the job running
            kill_tree(polls.root)
            proc.wait()
            raise
    wall = time.monotonic() - t0
    try:
        usage = json.loads(Path(usage_path).read_text() or "{}")
    except (OSError, ValueError):
        usage = {}
    finally:
        Path(usage_path).unlink(missing_ok=True)
    cpu = max(usage.get("cpu_seconds") or 0.0, sum(polls.cpu.values())) or None
    return Measured(
        name=name,
        returncode=proc.returncode,
        wall_seconds=round(wall, 3),
        cpu_seconds=round(cpu, 3) if cpu else None,
        peak_rss_tree=polls.peak,
        max_rss_process=usage.get("max_rss_bytes"),
        log=str(log),
        rss_by_process=polls.by_kind(),
    )


def _wait(proc: subprocess.Popen[bytes], polls: _Poll, poll: float, deadline: float | None) -> None:
    """Sample the tree until the job ends, or kill it at ``deadline``."""
    while True:
        polls.sample()
        try:
            proc.wait(timeout=poll)
            return
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() > deadline:
                kill_tree(polls.root)
                proc.wait()
                return


def _parallel(n: int, commands: Iterable[list[str]]) -> int:
    """Run ``commands`` at most ``n`` at a time; the worst exit code."""
    t0 = time.monotonic()

    def run(cmd: list[str]) -> int:
        rc = subprocess.call(cmd)
        print(f"exit {rc} after {time.monotonic() - t0:.1f} s: {' '.join(cmd[:4])}", flush=True)
        return rc

    with ThreadPoolExecutor(n) as pool:
        return max(pool.map(run, commands), default=0)


def _wrapper(argv: list[str]) -> int:
    """``OUT.json -- cmd ...`` or ``OUT.json --parallel N COMMANDS.json``: run, write rusage."""
    out, mode, *rest = argv
    if mode == "--" and rest:
        rc = subprocess.call(rest)
    elif mode == "--parallel" and len(rest) == 2:
        rc = _parallel(int(rest[0]), json.loads(Path(rest[1]).read_text()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = {
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3),
        "max_rss_bytes": ru.ru_maxrss * 1024,  # Linux reports KiB
    }
    Path(out).write_text(json.dumps(usage))
    return rc


if __name__ == "__main__":
    sys.exit(_wrapper(sys.argv[1:]))
