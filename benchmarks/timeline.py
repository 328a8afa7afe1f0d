"""Where a product build's wall time went, from its own log lines.

``beam_jobs.building.build`` logs (with timestamps) when it has prepared its record
table (``building ...``), when the pipeline starts (``starting: ...``), each
tenth of the shards done (``progress ...``), promotion (``complete: ...``) and
the end (``done: ...``), and prints its run time (``... in 43.5 s ->``) at the
very end. With the job's wall time measured outside, that gives::

    startup      process start -> run(): Python, imports, argument parsing
    prepare      run() -> "building": read plan + catalog, join, checks, record table
    pipeline     "starting" -> "complete": runner and worker start-up, all the
                 shards, promotion (renames, stats)
    teardown     "complete" -> "done": the runner stopping its workers
    other        the rest (printing the summary, the wrapper)

and, when logged, ``first_progress``: seconds from "starting" to the first
progress line (about a tenth of the shards done: start-up cost shows there),
and ``steady_mb_per_s``: bytes written from the first progress line to
"complete" over that time (approximate: progress is polled about once a second).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO beam_jobs\.build: (.*)$")
_RUN = re.compile(r" in ([\d.]+) s -> ")
_DONE_BYTES = re.compile(r"records, ([\d.,]+) (B|kB|MB|GB|TB)/")
_UNIT = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
_TOTAL = re.compile(r"complete: .* records, ([\d.]+) MB")


def _t(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def build_phases(log: str | Path, wall: float) -> dict[str, float] | None:
    """Phase durations (seconds) of one build, or None if the log lacks the lines."""
    marks: dict[str, float] = {}
    run_s = None
    for line in Path(log).read_text(errors="replace").splitlines():
        m = _TS.match(line)
        if m:
            t, msg = _t(m.group(1)), m.group(2)
            if ": building " in msg:
                marks.setdefault("building", t)
            elif ": starting: " in msg:
                marks.setdefault("starting", t)
            elif ": progress " in msg:
                if "first_progress" not in marks:
                    marks["first_progress"] = t
                    b = _DONE_BYTES.search(msg)
                    if b:
                        marks["first_progress_bytes"] = (
                            float(b.group(1).replace(",", "")) * _UNIT[b.group(2)]
                        )
            elif ": complete: " in msg:
                marks["complete"] = t
                b = _TOTAL.search(msg)
                if b:
                    marks["total_bytes"] = float(b.group(1)) * 1e6
            elif ": done: " in msg:
                marks["done"] = t
            continue
        r = _RUN.search(line)
        if r:
            run_s = float(r.group(1))
    need = ("building", "starting", "complete", "done")
    if run_s is None or any(k not in marks for k in need):
        return None
    run_start = marks["done"] - run_s  # the run time is printed right after "done"
    phases = {
        "startup": wall - run_s,
        "prepare": marks["building"] - run_start,
        "pipeline": marks["complete"] - marks["starting"],
        "teardown": marks["done"] - marks["complete"],
    }
    phases["other"] = wall - sum(phases.values())
    out = {k: round(max(v, 0.0), 2) for k, v in phases.items()}
    if "first_progress" in marks and marks["first_progress"] < marks["complete"]:
        out["first_progress"] = round(marks["first_progress"] - marks["starting"], 2)
        span = marks["complete"] - marks["first_progress"]
        if "first_progress_bytes" in marks and "total_bytes" in marks and span >= 0.5:
            out["steady_mb_per_s"] = round(
                (marks["total_bytes"] - marks["first_progress_bytes"]) / 1e6 / span, 1
            )
    return out


PHASES = ("startup", "prepare", "pipeline", "teardown", "other")
