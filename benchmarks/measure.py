"""Run one job in a subprocess and measure it: wall time, CPU time, memory.

How memory is measured (both numbers are reported):

* ``peak_rss_tree``: the job's process and all its descendants (DirectRunner
  worker processes included) are polled with psutil every ``poll`` seconds;
  at each poll their resident set sizes are summed; the peak of that sum is
  reported. A spike shorter than the poll interval can be missed.
* ``max_rss_process``: the kernel's high-water mark (``ru_maxrss``) of the
  largest single process of the tree, exact: each job runs under a small
  wrapper (``python -m benchmarks.measure``) that waits for it and reads
  ``getrusage(RUSAGE_CHILDREN)``, which covers every descendant that was
  waited for. The same call gives the job's CPU seconds (user + system); the
  poller also sums each process's CPU time as last seen, and the larger of
  the two is reported (a worker that is killed rather than waited for is
  missing from rusage).

``io_read_bytes`` / ``io_write_bytes`` are ``rchar`` / ``wchar`` (bytes through
read/write syscalls, page-cache hits and sockets included) of the whole tree,
from the wrapper's ``/proc/self/io`` (which includes every reaped descendant's)
after the job minus before. They include the modules each Python process
imports (about 40 MB for Beam + pyarrow, 90 MB with TensorFlow) and socket
traffic between a DirectRunner and its worker processes (the seed's shuffle),
so they bound the data read and written from above. ``disk_read_bytes`` is
``read_bytes`` of the same counters: what the tree made the kernel read from
the block device (page-cache hits excluded, readahead included): about 0 when
the source is page-cache hot, the physical reads with ``--cold``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MB = 1024 * 1024


@dataclass
class Measured:
    name: str
    argv: list[str]
    returncode: int
    wall_seconds: float
    cpu_seconds: float | None
    peak_rss_tree: int  # bytes, sampled sum over the process tree
    max_rss_process: int | None  # bytes, kernel high-water mark of the largest process
    max_processes: int  # most processes alive at once in the tree
    io_read_bytes: int  # rchar summed over the tree (see module doc)
    io_write_bytes: int  # wchar summed over the tree
    log: str
    disk_read_bytes: int | None = None  # read_bytes of the tree: from the device, not the cache
    rss_by_process: dict = field(default_factory=dict)  # kind of process -> its peak RSS
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def process_tree(*roots):  # psutil.Process, ... -> list[psutil.Process]
    """The roots that are still running and all their descendants, from one
    pass over the process table whatever the number of roots; parents come
    before their children."""
    import psutil

    children: dict[int | None, list] = {}
    alive: set[int] = set()
    for p in psutil.process_iter(["ppid"]):
        alive.add(p.pid)
        children.setdefault(p.info["ppid"], []).append(p)
    out: list = []
    todo = [root for root in roots if root.pid in alive and root.is_running()]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p.pid, ()))
    return out


def run_measured(
    name: str,
    argv: list[str],
    *,
    cwd: str | os.PathLike,
    env: dict[str, str],
    log_path: str | os.PathLike,
    poll: float = 0.1,
    timeout: float | None = None,
) -> Measured:
    """Run ``argv`` (under the rusage wrapper), poll its process tree, return the figures."""
    import psutil

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd, rusage_path = tempfile.mkstemp(prefix="rusage-", suffix=".json")
    os.close(fd)
    wrapped = [sys.executable, "-m", "benchmarks.measure", rusage_path, "--", *argv]
    io_read: dict[int, int] = {}
    io_write: dict[int, int] = {}
    cpu: dict[int, float] = {}
    rss: dict[int, tuple[str, int]] = {}
    t0 = time.monotonic()
    with open(log_path, "wb") as logf:
        logf.write(("$ " + " ".join(argv) + "\n").encode())
        logf.flush()
        proc = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        try:
            peak, max_procs = _poll(proc, root, poll, timeout, t0, cpu, io_read, io_write, rss)
        except BaseException:  # e.g. Ctrl-C: do not leave the job running
            _kill_tree(root)
            proc.wait()
            raise
    wall = time.monotonic() - t0
    try:
        usage = json.loads(Path(rusage_path).read_text() or "{}")
    except (OSError, ValueError):
        usage = {}
    finally:
        Path(rusage_path).unlink(missing_ok=True)
    for d in (io_read, io_write, cpu):
        d.pop(proc.pid, None)
    by_kind: dict[str, int] = {}
    for (
        kind,
        r,
    ) in rss.values():  # e.g. {"python -m beam_jobs.building.build": ..., "beam worker": ...}
        by_kind[kind] = max(by_kind.get(kind, 0), r)
    # rusage covers descendants that were waited for (exact); the sampled sum
    # covers the others up to their last poll. Take the larger.
    cpu_seconds = max(usage.get("cpu_seconds") or 0.0, sum(cpu.values())) or None
    return Measured(
        name=name,
        argv=list(argv),
        returncode=proc.returncode,
        wall_seconds=round(wall, 3),
        cpu_seconds=round(cpu_seconds, 3) if cpu_seconds else None,
        peak_rss_tree=peak,
        max_rss_process=usage.get("max_rss_bytes"),
        max_processes=max_procs,
        io_read_bytes=usage["rchar"] if "rchar" in usage else sum(io_read.values()),
        io_write_bytes=usage["wchar"] if "wchar" in usage else sum(io_write.values()),
        log=str(log_path),
        rss_by_process=by_kind,
        disk_read_bytes=usage.get("read_bytes"),
    )


def _kill_tree(root) -> None:
    import psutil

    for p in reversed(process_tree(root)):
        try:
            p.kill()
        except psutil.Error:
            pass


def kind_of_process(p) -> str:
    """A short name for a process of a job: ``launcher``, ``beam worker``, or its program."""
    try:
        cmd = p.cmdline()
    except Exception:  # noqa: BLE001 - gone, or no permission
        return "?"
    text = " ".join(cmd)
    if "sdk_worker_main" in text:
        return "beam worker"
    if "-m" in cmd and cmd.index("-m") + 1 < len(cmd):
        return "python -m " + cmd[cmd.index("-m") + 1]
    return Path(cmd[0]).name if cmd else "?"


def _poll(proc, root, poll, timeout, t0, cpu, io_read, io_write, rss) -> tuple[int, int]:
    """Sample the tree until the job ends; return (peak summed RSS, most processes)."""
    import psutil

    peak = 0
    max_procs = 0
    while True:
        total = 0
        procs = process_tree(root)
        for p in procs:
            try:
                with p.oneshot():
                    r = p.memory_info().rss
                    io = p.io_counters()
                    t = p.cpu_times()
                total += r
                if p.pid != root.pid:
                    kind, best = rss.get(p.pid) or (kind_of_process(p), 0)
                    rss[p.pid] = (kind, max(best, r))
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
                io_read[p.pid] = max(io_read.get(p.pid, 0), io.read_chars)
                io_write[p.pid] = max(io_write.get(p.pid, 0), io.write_chars)
            except psutil.Error:
                pass
        # The wrapper itself is small and constant: do not count it.
        try:
            total -= root.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, total)
        max_procs = max(max_procs, len(procs) - 1)
        try:
            proc.wait(timeout=poll)
            return peak, max_procs
        except subprocess.TimeoutExpired:
            if timeout is not None and time.monotonic() - t0 > timeout:
                _kill_tree(root)
                proc.wait()
                return peak, max_procs


def _self_io() -> dict[str, int]:
    try:
        with open("/proc/self/io") as f:
            return {k: int(v) for k, v in (line.split(": ") for line in f if ": " in line)}
    except OSError:
        return {}


def _wrapper(argv: list[str]) -> int:
    """``python -m benchmarks.measure OUT.json -- cmd ...``: run cmd, write its rusage."""
    out, sep, *cmd = argv
    if sep != "--" or not cmd:
        print("usage: python -m benchmarks.measure OUT.json -- command ...", file=sys.stderr)
        return 2
    before = _self_io()
    rc = subprocess.call(cmd)
    after = _self_io()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(out).write_text(
        json.dumps(
            {
                "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3),
                "max_rss_bytes": ru.ru_maxrss * 1024,  # Linux reports KiB
                # A process's /proc/self/io includes its reaped children's, recursively.
                "rchar": after.get("rchar", 0) - before.get("rchar", 0),
                "wchar": after.get("wchar", 0) - before.get("wchar", 0),
                # bytes the tree made the kernel fetch from the block device (0 on page-cache hits;
                # includes readahead)
                "read_bytes": after.get("read_bytes", 0) - before.get("read_bytes", 0),
            }
        )
    )
    return rc


if __name__ == "__main__":
    sys.exit(_wrapper(sys.argv[1:]))
