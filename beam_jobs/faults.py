"""Failpoints: named places where a test can have the process killed.

``failpoint("publish.placed")`` does nothing unless the environment
variable ``SSL_SPLITS_FAILPOINT`` names it, as ``name`` (the first time the
point is reached) or ``name@N`` (the N-th time, counted per process). Then
the whole process group gets SIGKILL, as an OOM killer or a lost machine
would do it: no ``finally`` block, no teardown, no flush runs. The kill tests
(``tests/airflow/test_kills.py``) start each run in its own process group and stop
it at every step boundary of the commit protocol this way.

``name~SECONDS`` instead pauses there (every time): a test that needs a run
to be in the middle of a step while something else happens holds it there.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter

ENV = "SSL_SPLITS_FAILPOINT"
_hits: Counter[str] = Counter()


def failpoint(name: str) -> None:
    """Kill the process group here if ``SSL_SPLITS_FAILPOINT`` says so."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    if "~" in spec:
        want, _, seconds = spec.partition("~")
        if want == name:
            time.sleep(float(seconds))
        return
    want, _, nth = spec.partition("@")
    if want != name:
        return
    _hits[name] += 1
    if _hits[name] < int(nth or 1):
        return
    print(f"failpoint {name}: killing process group {os.getpgrp()}", file=sys.stderr, flush=True)
    os.killpg(os.getpgrp(), signal.SIGKILL)
