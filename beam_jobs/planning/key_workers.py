"""The split algorithm's SHA-256 keys of a whole catalog, computed in parallel:
this process and one worker process per extra core each compute a share.

The keys are :func:`beam_jobs.planning.algorithm.hash_keys`'s values; this
module only spreads the work. Workers run ``python -m beam_jobs.planning.keys``
(standard library only), fed the names' bytes through a pipe: no fork of the
calling process, which may be an Airflow task with threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

import numpy as np
import pyarrow as pa

from beam_jobs.planning.algorithm import offsets_and_data, share_keys, string_array

# Below this many names the keys are computed in this process; above, this
# process and one worker per extra core each compute a share: SHA-256 of 1.28M
# names takes ~0.7 s of Python per (purpose, seed), and a run needs one pass per
# seed plus the reshuffle.
PARALLEL_MIN_NAMES = 200_000

Job = tuple[str, int]  # (purpose, seed)


def precompute_keys(
    names: Sequence[str] | pa.Array | pa.ChunkedArray,
    jobs: Sequence[Job],
    workers: int | None = None,
) -> dict[Job, np.ndarray]:
    """``hash_keys(names, purpose, seed)`` for every ``(purpose, seed)`` of
    ``jobs``: the same values, with many names computed in shares by this
    process and one worker process per extra core."""
    jobs = list(dict.fromkeys(jobs))
    if not jobs:
        return {}
    arr = string_array(names)
    n = len(arr)
    workers = workers or min(os.cpu_count() or 1, 8)
    shares = max(1, min(workers, n)) if n >= PARALLEL_MIN_NAMES else 1
    offsets, data = offsets_and_data(arr)
    bounds = [n * k // shares for k in range(shares + 1)]
    procs: list[subprocess.Popen] = []
    try:
        for lo, hi in zip(bounds[1:], bounds[2:]):  # share 0 is this process's
            procs.append(_start_worker(jobs, offsets, data, lo, hi))
        out = {job: np.empty(n, dtype=np.uint64) for job in jobs}
        for job, keys in zip(jobs, share_keys(offsets, data, bounds[0], bounds[1], jobs)):
            out[job][bounds[0] : bounds[1]] = keys
        for proc, lo, hi in zip(procs, bounds[1:], bounds[2:]):
            part = _worker_keys(proc, hi - lo, len(jobs))
            for k, job in enumerate(jobs):
                out[job][lo:hi] = part[k]
            del part
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def _start_worker(
    jobs: list[Job], offsets: np.ndarray, data: pa.Buffer, lo: int, hi: int
) -> subprocess.Popen:
    """A worker computing the keys of names ``lo..hi``, fed their bytes
    (``beam_jobs.planning.keys``'s protocol); it starts hashing at once."""
    argv = [sys.executable, "-m", "beam_jobs.planning.keys", *(f"{p}:{s}" for p, s in jobs)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        a, b = int(offsets[lo]), int(offsets[hi])
        proc.stdin.write((hi - lo).to_bytes(8, "little") + (b - a).to_bytes(8, "little"))
        proc.stdin.write((offsets[lo : hi + 1] - a).tobytes())
        proc.stdin.write(memoryview(data)[a:b])
        proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _worker_keys(proc: subprocess.Popen, count: int, num_jobs: int) -> np.ndarray:
    """A worker's keys, one row per job; RuntimeError if it failed."""
    assert proc.stdout is not None
    raw = proc.stdout.read()
    if proc.wait() != 0 or len(raw) != 8 * count * num_jobs:
        raise RuntimeError(
            f"computing plan keys in a subprocess failed (exit {proc.returncode}, "
            f"{len(raw)} bytes for {count} names x {num_jobs} keys)"
        )
    return np.frombuffer(raw, dtype=">u8").reshape(num_jobs, count)
