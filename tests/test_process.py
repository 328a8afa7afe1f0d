"""beam_jobs.process: how a job's process ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_CHILD = textwrap.dedent(
    """
    import atexit, gc, logging, sys
    from beam_jobs.process import exit_job

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

    def at_exit():
        print("atexit ran, frozen", gc.get_freeze_count() > 0)
    atexit.register(at_exit)
    print("unflushed line", end="")  # left in stdout's buffer
    logging.getLogger("job").info("a log line")
    exit_job(int(sys.argv[1]))
    """
)


@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_job_keeps_the_exit_code_atexit_and_the_flushes(code):
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    assert "unflushed line" in proc.stdout
    assert "atexit ran, frozen True" in proc.stdout
    assert "a log line" in proc.stderr


def test_the_jobs_end_with_exit_job():
    """The modules Airflow starts as jobs end through exit_job (a plain sys.exit
    would make every job pay the collections at shutdown again)."""
    for name in ("validate", "build", "verify"):
        text = (ROOT / "beam_jobs" / f"{name}.py").read_text()
        assert text.rstrip().endswith('if __name__ == "__main__":\n    exit_job(main())'), name
