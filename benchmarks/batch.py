"""Run several commands, at most N at a time (as the DAG runs its build tasks:
``SSL_SPLITS_MAX_PARALLEL_BUILDS``, default 3), and fail if any fails.

    python -m benchmarks.batch N COMMANDS.json     # a JSON list of argv lists
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main(argv: list[str]) -> int:
    n, spec = int(argv[0]), Path(argv[1])
    commands = json.loads(spec.read_text())
    t0 = time.monotonic()

    def run(cmd: list[str]) -> int:
        rc = subprocess.call(cmd)
        print(
            f"batch: exit {rc} after {time.monotonic() - t0:.1f} s: {' '.join(cmd[:4])} ...",
            flush=True,
        )
        return rc

    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(run, commands))
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
