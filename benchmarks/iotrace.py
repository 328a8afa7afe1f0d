"""Count the bytes a job (all its processes) reads from the source files, with strace.

The product's build reports ``bytes_read`` itself (the planned record
lengths); this is an independent measurement: every ``read``/``pread64``
(and vector variants) of every process and thread of the job is traced with
the path of its file descriptor (``strace -f -y``), and the bytes returned by
the calls on files under the source folder are summed. Imports, the catalog,
the plan, sockets and the outputs are not counted. Tracing slows the job, so
its time is not used for anything.

    python -m benchmarks.iotrace SOURCE_DIR OUT.json -- command ...
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CALLS = "read,pread64,readv,preadv,preadv2"
# 123 pread64(5</src/train-00001-of-01024>, ..., 960, 1234) = 960
_DONE = re.compile(r"^(\d+)\s+(read|pread64|readv|preadv|preadv2)\((\d+)<([^>]*)>.*\)\s+=\s+(\d+)")
_START = re.compile(
    r"^(\d+)\s+(read|pread64|readv|preadv|preadv2)\((\d+)<([^>]*)>.*<unfinished \.\.\.>"
)
_RESUMED = re.compile(
    r"^(\d+)\s+<\.\.\. (read|pread64|readv|preadv|preadv2) resumed>.*\)\s+=\s+(\d+)"
)


def available() -> bool:
    return shutil.which("strace") is not None


def trace(argv: list[str], source: str, *, cwd: str, env: dict[str, str], log: Path) -> dict:
    """Run ``argv`` under strace; return bytes read from files under ``source``."""
    source = str(Path(source).resolve()).rstrip("/") + "/"
    with tempfile.TemporaryDirectory(prefix="iotrace-") as tmp:
        out = Path(tmp) / "strace.txt"
        cmd = [
            "strace",
            "-f",
            "-qq",
            "-y",
            "-s",
            "0",
            "--seccomp-bpf",
            "-e",
            f"trace={_CALLS}",
            "-e",
            "signal=none",
            "-o",
            str(out),
            "--",
            *argv,
        ]
        with open(log, "wb") as f:
            rc = subprocess.call(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        total = calls = 0
        files: set[str] = set()
        pending: dict[str, str] = {}
        with open(out, errors="replace") as f:
            for line in f:
                m = _DONE.match(line)
                if m:
                    path, n = m.group(4), int(m.group(5))
                else:
                    s = _START.match(line)
                    if s:
                        pending[s.group(1)] = s.group(4)
                        continue
                    r = _RESUMED.match(line)
                    if not r:
                        continue
                    path, n = pending.pop(r.group(1), ""), int(r.group(3))
                if path.startswith(source):
                    total += n
                    calls += 1
                    files.add(path)
    return {
        "returncode": rc,
        "source_bytes_read": total,
        "read_calls": calls,
        "source_files_read": len(files),
    }


def main(argv: list[str]) -> int:
    source, out, sep, *cmd = argv
    if sep != "--" or not cmd:
        print(__doc__, file=sys.stderr)
        return 2
    res = trace(cmd, source, cwd=".", env=None, log=Path(out).with_suffix(".log"))  # type: ignore[arg-type]
    Path(out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return res["returncode"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
