"""Run a script's ``main(argv)`` many times, each in a fresh process, without
paying its imports each time: a server process imports the script (and what it
names) once, then forks one child per run.

Each child is a new process in its own session and process group (as
``subprocess.run(..., start_new_session=True)`` starts one): it takes the
run's whole environment, writes its stdout and stderr to files, runs
``main(argv)`` and exits with its code after the ``atexit`` handlers, as a
process of its own would. A failpoint's ``killpg`` kills the child's group
only; the server reports how the child ended (``-9`` for SIGKILL). The server
itself never runs ``main``: every child starts from the state right after the
imports. (The kill matrix, tests/airflow/test_kills.py, runs about fifty such runs:
about 2.7 s of CPU each for the imports alone.)
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path


class Forkserver:
    """``run(argv, env)`` is ``subprocess.run([python, script, *argv], env=env,
    start_new_session=True, capture_output=True, text=True)``, in a forked child."""

    def __init__(self, python: str, script: str, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [python, __file__, script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=cwd,
            bufsize=0,
        )
        self.script = script
        self._pending = b""  # replies read from the pipe but not yet returned
        ready = self._reply(timeout=300)
        assert ready.get("ready"), ready

    def _reply(self, timeout: float) -> dict:
        """The server's next reply line (unbuffered reads: two replies may arrive at once)."""
        assert self.proc.stdout is not None
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            chunk = os.read(fd, 65536) if left > 0 and select.select([fd], [], [], left)[0] else b""
            if not chunk:
                raise RuntimeError(
                    f"forkserver for {self.script}: no reply (exit {self.proc.poll()})"
                )
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float = 600
    ) -> subprocess.CompletedProcess:
        assert self.proc.stdin is not None
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"argv": argv, "env": env, "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            pid = self._reply(timeout=60)["pid"]
            try:
                status = self._reply(timeout=timeout)["status"]
            except RuntimeError:
                os.killpg(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired([self.script, *argv], timeout) from None
            return subprocess.CompletedProcess(
                [self.script, *argv],
                os.waitstatus_to_exitcode(status),
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _child(main, request: dict) -> None:
    """In the forked child: become a process of its own, run, exit. Never returns."""
    code = 1
    try:
        os.setsid()
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = main(request["argv"]) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001  (a process's uncaught exception: traceback, exit 1)
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(script: str) -> None:
    spec = importlib.util.spec_from_file_location("__forkserver_main__", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for name in getattr(module, "PRELOAD", ()):
        importlib.import_module(name)
    reply = sys.stdout
    print(json.dumps({"ready": True}), file=reply, flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            _child(module.main, json.loads(line))
        print(json.dumps({"pid": pid}), file=reply, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status}), file=reply, flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1])
