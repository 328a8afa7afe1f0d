"""Profile a job with py-spy (all its processes) and summarize where time goes.

``py-spy record --subprocesses -f raw`` writes one line per distinct stack:
``process PID:"cmd";frame;frame;... COUNT``. Samples are taken at ``rate`` Hz
per thread that is running (idle threads are not sampled), so COUNT / rate is
CPU-ish seconds. The summary gives seconds per process, per category
(imports, the job's own work, Beam's runner machinery, ...), and the top
functions by self and inclusive time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")

IMPORT = re.compile(r"_find_and_load|<frozen importlib")

# A sample's category: "import" if module loading is anywhere on its stack;
# otherwise the first of these that matches a frame, innermost frame first.
CATEGORIES: list[tuple[str, re.Pattern]] = [
    (
        "read records (RangeReader.read, pread, file reads)",
        re.compile(r"RangeReader\.read|read_batch|open_read|iter_framed|_read_exact|readinto"),
    ),
    ("check framing / CRC32C", re.compile(r"check_framed|crc32c|parse_header|masked_crc")),
    (
        "write shards (Writer, write/close/rename, sidecars)",
        re.compile(
            r"Writer\.write|write_framed|AtomicWriter|open_write|write_bytes|write_text|rename|"
            r"rmtree|delete_tree|file_crc32c"
        ),
    ),
    (
        "numpy sort/search on arrays of Python str (argsort, searchsorted, unique)",
        re.compile(r"_wrapfunc \(numpy|_arraysetops|argsort|searchsorted"),
    ),
    (
        "plan/catalog tables (parse plan, read catalog, join, parquet)",
        re.compile(
            r"build_table|parse_plan_text|read_catalog|read_table|write_table|_load_build_table|"
            r"plan_table_with_crcs|pyarrow|numpy"
        ),
    ),
    (
        "planner (hash keys, quotas, plan CSV)",
        re.compile(
            r"hash_keys|_canonical|plan_supervised|plan_unsupervised|class_quotas|to_csv_bytes|"
            r"Plan\.sha256|_deal|make_plans|write_plans"
        ),
    ),
    (
        "per-record Python in write_shard (loop, fetch, bookkeeping)",
        re.compile(r"write_shard|ordered_map|fetch \(beam_jobs|WriteShard"),
    ),
    (
        "validate/verify record parsing",
        re.compile(r"validate_shard|deep_check_shard|parse_image_record|example_proto"),
    ),
    (
        "Beam runner machinery (bundles, gRPC, coders, pickling)",
        re.compile(r"apache_beam|grpc|pickle|dill"),
    ),
    (
        "threads blocked in Condition.wait / gRPC serving (mostly waiting, not CPU)",
        re.compile(r"threading\.py|queue\.py|selectors|concurrent"),
    ),
]


def categorize(funcs: list[str]) -> str:
    if not funcs:
        return "native threads (no Python frame: gRPC, Arrow, ...)"
    if any(IMPORT.search(f) for f in funcs):
        return "import (module loading, incl. compiling .py without a bytecode cache)"
    for f in reversed(funcs):
        for name, pattern in CATEGORIES:
            if pattern.search(f):
                return name
    return "other"


def record(
    argv: list[str], out: Path, *, cwd: str, env: dict[str, str], log: Path, rate: int = 100
) -> int:
    """Run ``argv`` under py-spy; raw stacks go to ``out``. Returns the exit code."""
    py_spy = shutil.which("py-spy", path=env.get("PATH")) or str(Path(argv[0]).parent / "py-spy")
    cmd = [
        py_spy,
        "record",
        "--subprocesses",
        "-f",
        "raw",
        "-r",
        str(rate),
        "-o",
        str(out),
        "--",
        *argv,
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        return subprocess.call(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)


def _process_label(frame: str) -> str:
    m = re.match(r'process \d+:"(.*)"', frame)
    cmd = m.group(1) if m else frame
    if not cmd:
        return ""
    if "sdk_worker_main" in cmd:
        return "Beam worker processes (sdk_worker_main)"
    if "-m " in cmd:
        return "launcher: python -m " + cmd.split("-m ", 1)[1].split(" ", 1)[0]
    return cmd[:60]


def summarize(raw: Path, rate: int = 100, top: int = 15) -> dict:
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    procs: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    proc_cats: dict[str, Counter[str]] = {}
    total = 0
    rows = []
    pid_label: dict[str, str] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        # With --subprocesses a stack starts with its process and the parents
        # that started it ("process PID:cmd" frames); the innermost one is it.
        pframes = [f for f in frames if f.startswith("process ")]
        funcs = [_LINE.sub(")", f) for f in frames if not f.startswith("process ")]
        pid = pframes[-1].split(":", 1)[0] if pframes else "?"
        label = _process_label(pframes[-1]) if pframes else ""
        if not label:  # py-spy sometimes misses a command line
            mod = next(
                (
                    m.group(1)
                    for f in funcs
                    if (m := re.match(r"<module> \((beam_jobs/\w+)\.py\)", f))
                ),
                None,
            )
            if mod:
                label = "launcher: python -m " + mod.replace("/", ".")
        if label:
            pid_label.setdefault(pid, label)
        rows.append((pid, len(pframes), funcs, int(n)))
    for pid, depth, funcs, count in rows:
        label = pid_label.get(pid) or (
            "launcher" if depth <= 1 else "Beam worker processes (sdk_worker_main)"
        )
        total += count
        procs[label] += count
        if funcs:
            self_t[funcs[-1]] += count
        for f in set(funcs):
            incl[f] += count
        cat = categorize(funcs)
        cats[cat] += count
        proc_cats.setdefault(label, Counter())[cat] += count

    def secs(c: int) -> float:
        return round(c / rate, 2)

    return {
        "samples": total,
        "rate_hz": rate,
        "sampled_seconds": secs(total),
        "by_process": {k: secs(v) for k, v in procs.most_common()},
        "by_category": {k: secs(v) for k, v in cats.most_common()},
        "by_process_category": {
            p: {k: secs(v) for k, v in c.most_common()} for p, c in proc_cats.items()
        },
        "top_self": [(k, secs(v)) for k, v in self_t.most_common(top)],
        "top_inclusive": [
            (k, secs(v))
            for k, v in incl.most_common(top * 3)
            if not k.startswith(("_run_module_as_main", "_run_code", "<module> (<frozen"))
        ][: top * 2],
    }


def format_summary(title: str, s: dict) -> str:
    lines = [
        f"#### {title}",
        "",
        (
            f"{s['samples']:,} samples at {s['rate_hz']} Hz = {s['sampled_seconds']:.1f} s of "
            "busy threads, all processes."
        ),
        "",
        "| where | seconds | share |",
        "| --- | ---: | ---: |",
    ]
    tot = max(s["sampled_seconds"], 1e-9)
    for proc, v in s["by_process"].items():
        lines.append(f"| **{proc}** | **{v:.1f}** | **{100 * v / tot:.0f}%** |")
        for k, c in s["by_process_category"].get(proc, {}).items():
            if c >= 0.1:
                lines.append(f"| &nbsp;&nbsp;{k} | {c:.1f} | {100 * c / tot:.0f}% |")
    lines += ["", "Top functions by self time:", "", "| function | self s |", "| --- | ---: |"]
    for k, v in s["top_self"][:10]:
        lines.append(f"| `{k}` | {v:.1f} |")
    return "\n".join(lines) + "\n"
