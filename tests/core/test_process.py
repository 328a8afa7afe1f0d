"""beam_jobs.process: a job's processes exit without the collector's passes at
shutdown (about 0.4 s per process that imported Beam)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from beam_jobs.building import build
from beam_jobs.building.build import CopyShard, ShardTarget, WriteShard
from beam_jobs.verification import deep as deep_verify
from beam_jobs.verification import verify
from beam_jobs.verification.deep import DeepCheck

ROOT = Path(__file__).resolve().parent.parent

CYCLE_PROBE = textwrap.dedent(
    """
    import gc, sys
    from beam_jobs.process import freeze_heap_at_exit
    gc.disable()
    class Cycle:
        def __del__(self):
            print("collected at exit", flush=True)
    c = Cycle()
    c.self = c
    del c
    if sys.argv[1:] == ["freeze"]:
        freeze_heap_at_exit()
        freeze_heap_at_exit()
    """
)


def test_freeze_heap_at_exit_leaves_the_heap_to_the_os():
    plain = subprocess.run([sys.executable, "-c", CYCLE_PROBE], capture_output=True, text=True)
    frozen = subprocess.run(
        [sys.executable, "-c", CYCLE_PROBE, "freeze"], capture_output=True, text=True
    )
    assert plain.returncode == frozen.returncode == 0, plain.stderr + frozen.stderr
    assert plain.stdout == "collected at exit\n"  # what exiting costs without it
    assert frozen.stdout == ""


EXIT_PROBE = textwrap.dedent(
    """
    import atexit, gc, logging, sys
    from beam_jobs.process import freeze_heap_at_exit

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    freeze_heap_at_exit()

    def at_exit():  # registered later, so it runs first
        print("atexit ran", flush=True)
    atexit.register(at_exit)
    print("unflushed line", end="")  # left in stdout's buffer
    logging.getLogger("job").info("a log line")
    sys.exit(int(sys.argv[1]))
    """
)


@pytest.mark.parametrize("code", [0, 1, 3])
def test_an_exit_keeps_its_code_its_atexit_handlers_and_its_flushes(code):
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, str(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    assert "atexit ran" in proc.stdout and "unflushed line" in proc.stdout
    assert "a log line" in proc.stderr


def test_build_and_verify_processes_freeze_their_heap_at_exit(monkeypatch, tmp_path):
    calls: list[str] = []
    for module in (build, verify, deep_verify):
        name = module.__name__.rsplit(".", 1)[1]
        monkeypatch.setattr(module, "freeze_heap_at_exit", lambda n=name: calls.append(n))
    out = str(tmp_path)
    WriteShard(out, [], ShardTarget("s", 1, out, out, 1)).setup()  # a worker of a build
    CopyShard("validation", out, out).setup()  # a worker of the validation copy
    DeepCheck("s", None, 1).setup()  # a worker of a deep verification
    assert calls == ["build", "build", "deep"]
    for module in (build, verify):  # the launchers
        with pytest.raises(SystemExit):
            module.main(["--no-such-flag"])
    assert calls == ["build", "build", "deep", "build", "verify"]
