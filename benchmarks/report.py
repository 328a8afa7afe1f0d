"""The figures of a run: ratios (seed time / product time), targets, and their tables.

Pure functions over the rows ``benchmarks.jobs`` and ``benchmarks.dag`` record
(one dict per job: ``dataset``, ``side`` product/seed/raw/dag, ``stage``,
``split``, ``kind``, the ``benchmarks.measure`` figures, the job's own counts),
so that ``tests/benchmarks/test_benchmark_targets.py`` checks them without a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.dag import HOWS

Job = dict[str, Any]
Row = dict[str, Any]
MIB = 2**20
TARGET_SPEEDUP, AIM_SPEEDUP = 5.0, 10.0  # six outputs + validation copy vs the seed's
TARGET_DAG = {"count": 5.0, "bytes": 3.0}  # the DAG's first run vs the seed's outputs
TARGET_ADD_SEED_S, TARGET_ADD_SEED_X = 15.0, 3.0
TARGET_READ_AMP, TARGET_RSS, TARGET_FLAT, TARGET_RAW = 1.2, 2**30, 1.25, 3.0


def find(jobs: list[Job], **match: Any) -> list[Job]:
    """The jobs whose fields equal ``match``."""
    return [j for j in jobs if all(j.get(k) == v for k, v in match.items())]


def _wall(jobs: list[Job], key: str = "wall_seconds") -> float | None:
    vals = [j.get(key) for j in jobs]
    return sum(v for v in vals if v is not None) if vals and None not in vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def totals(jobs: list[Job], ds: str) -> dict[str, Any]:
    """One dataset's inner jobs: the seed's six outputs against the product's builds and
    validation copy, one after another and N at a time (wall and CPU)."""
    seed = find(jobs, dataset=ds, side="seed", stage="build")
    mine = find(jobs, dataset=ds, side="product", stage="build")
    mine += find(jobs, dataset=ds, side="product", stage="copy")
    par = [j for j in find(jobs, dataset=ds, side="product") if j.get("parallel")]
    out = {"seed_s": _wall(seed), "product_s": _wall(mine)}
    out["seed_cpu_s"], out["product_cpu_s"] = _wall(seed, "cpu_seconds"), _wall(mine, "cpu_seconds")
    out["ratio"] = _ratio(out["seed_s"], out["product_s"])
    out["cpu_ratio"] = _ratio(out["seed_cpu_s"], out["product_cpu_s"])
    out["parallel_s"] = par[0]["wall_seconds"] if par else None
    out["parallel_ratio"] = _ratio(out["seed_s"], out["parallel_s"]) if seed else None
    out["parallel"] = par[0]["parallel"] if par else None
    return out


def dag_rows(jobs: list[Job], datasets: Mapping[str, Any]) -> list[Row]:
    """Per dataset, way of running the DAG and case: its time against its reference
    (first run: the seed's six outputs + validation copy; add one seed: cp + python)."""
    out = []
    for ds in datasets:
        seed = find(jobs, dataset=ds, side="seed")
        cp = [j for j in find(jobs, dataset=ds, side="raw") if j["stage"].endswith("start-up")]
        refs = {"first run": _wall(seed) if seed else None}
        refs["add one seed"] = cp[0]["wall_seconds"] if cp else None
        dags_test = {j["stage"]: j["wall_seconds"] for j in find(jobs, dataset=ds, how="dags test")}
        for how in HOWS:
            for d in find(jobs, dataset=ds, side="dag", how=how):
                ref = refs.get(d["stage"])
                r = {"dataset": ds, "how": how, "case": d["stage"], "dag_s": d["wall_seconds"]}
                r.update(run_s=d.get("run_seconds"), reference_s=ref, repeats=d.get("repeats"))
                r.update(ratio=_ratio(ref, d["wall_seconds"]), tasks=d.get("task_seconds") or {})
                r["largest_mib"] = (d.get("max_rss_process") or 0) / MIB
                r["vs_dags_test"] = _ratio(d["wall_seconds"], dags_test.get(d["stage"]))
                out.append(r)
    return out


def _row(target: str, value: Any, met: bool | None, detail: str) -> Row:
    return {"target": target, "value": value, "met": met, "detail": detail}


def dag_targets(jobs: list[Job], datasets: Mapping[str, Any]) -> list[Row]:
    """The whole DAG's first run against the seed (COUNT >= 5x, BYTES >= 3x), and adding
    one seed on COUNT (<= 15 s and <= 3x a copy of its bytes + a Python start-up)."""
    out = []
    for r in dag_rows(jobs, datasets):
        role = datasets[r["dataset"]]["role"]
        name = f"{r['dataset']}: the whole DAG ({r['how']}, {r['case']})"
        if r["how"] == "team stack" or not r["ratio"]:
            continue
        if r["case"] == "first run" and role in TARGET_DAG:
            t = TARGET_DAG[role]
            detail = f"DAG {r['dag_s']:.1f} s vs seed {r['reference_s']:.1f} s"
            out.append(
                _row(
                    f"{name} >= {t:.0f}x faster than the seed", r["ratio"], r["ratio"] >= t, detail
                )
            )
        if r["case"] == "add one seed" and role == "count":
            x, s = 1 / r["ratio"], r["dag_s"]
            met = s <= TARGET_ADD_SEED_S and x <= TARGET_ADD_SEED_X
            text = (
                f"{name} <= {TARGET_ADD_SEED_S:.0f} s and <= {TARGET_ADD_SEED_X:.0f}x cp + python"
            )
            out.append(
                _row(text, f"{s:.1f} s, {x:.1f}x", met, f"reference {r['reference_s']:.2f} s")
            )
    return out


def memory_targets(jobs: list[Job], datasets: Mapping[str, Any]) -> list[Row]:
    """COUNT and BYTES: the largest single process the product runs (its CLIs and the DAG)
    <= 1 GiB; BYTES: every product job's process tree <= 1 GiB."""
    out = []
    for ds, info in datasets.items():
        mine = [j for j in jobs if j["dataset"] == ds and j["side"] in ("product", "dag")]
        mine = [j for j in mine if j.get("max_rss_process")]
        if info["role"] in ("count", "bytes") and mine:
            w = max(mine, key=lambda j: j["max_rss_process"])
            v = w["max_rss_process"]
            text = f"{ds}: peak RSS of every process the product runs <= 1 GiB"
            out.append(_row(text, f"{v / MIB:,.0f} MiB", v <= TARGET_RSS, f"in {w['name']}"))
        tree = [j for j in find(jobs, dataset=ds, side="product") if not j.get("parallel")]
        if info["role"] == "bytes" and tree:
            w = max(tree, key=lambda j: j["peak_rss_tree"])
            v = w["peak_rss_tree"]
            text = f"{ds}: peak RSS (process tree) of every product job <= 1 GiB"
            out.append(_row(text, f"{v / MIB:,.0f} MiB", v <= TARGET_RSS, f"in {w['name']}"))
    return out


def inner_targets(jobs: list[Job], datasets: Mapping[str, Any]) -> list[Row]:
    """COUNT: the builds and validation copy vs the seed's six outputs (one after another,
    and N at a time); every dataset: a 10% split's read amplification."""
    out = []
    for ds, info in datasets.items():
        t = totals(jobs, ds)
        if info["role"] == "count" and t["ratio"]:
            text = f"{ds}: six outputs + validation copy >= {TARGET_SPEEDUP:.0f}x faster than the seed's"
            detail = (
                f"{t['product_s']:.1f} s vs {t['seed_s']:.1f} s; CPU {t['cpu_ratio'] or 0:.2f}x"
            )
            out.append(_row(text, t["ratio"], t["ratio"] >= TARGET_SPEEDUP, detail))
        if info["role"] == "count" and t["parallel_ratio"]:
            text = f"{ds}: the same, builds {t['parallel']} at a time, >= {TARGET_SPEEDUP:.0f}x"
            ok = t["parallel_ratio"] >= TARGET_SPEEDUP
            out.append(_row(text, t["parallel_ratio"], ok, f"{t['parallel_s']:.1f} s"))
        tens = [j for j in find(jobs, dataset=ds, side="product", stage="build", kind="10%")]
        amps = [(read_amplification(j) or 0, j["split"]) for j in tens]
        if amps:
            v, split = max(amps)
            text = f"{ds}: read amplification of a 10% split <= {TARGET_READ_AMP}"
            out.append(_row(text, v, v <= TARGET_READ_AMP, f"worst: {split} (the build's count)"))
    return out


def bytes_targets(jobs: list[Job], datasets: Mapping[str, Any]) -> list[Row]:
    """Half BYTES to BYTES: every product job's peak RSS grows <= 1.25x; BYTES: the
    reshuffle within 3x of ``cp -r`` of the source."""
    role = {v["role"]: k for k, v in datasets.items()}
    big, half = role.get("bytes"), role.get("bytes_half")
    out = []
    if big and half:
        growth = []
        for j in find(jobs, dataset=big, side="product"):
            h = find(jobs, dataset=half, side="product", stage=j["stage"], kind=j.get("kind"))
            h = [k for k in h if _same_split(k["split"], j["split"])]
            if h and h[0]["peak_rss_tree"] and not j.get("parallel"):
                growth.append((j["peak_rss_tree"] / h[0]["peak_rss_tree"], j["name"]))
        if growth:
            v, name = max(growth)
            text = f"peak RSS flat from {half} to {big}: every product job <= {TARGET_FLAT}x"
            out.append(_row(text, v, v <= TARGET_FLAT, f"largest growth: {name}"))
    rs = find(jobs, dataset=big, side="product", stage="build", split="train") if big else []
    cp = find(jobs, dataset=big, stage="cp -r source") if big else []
    if rs and cp:
        v = rs[0]["wall_seconds"] / cp[0]["wall_seconds"]
        fs = find(jobs, dataset=big, stage="copy train-* + fsync each")
        detail = f"{rs[0]['wall_seconds']:.1f} s vs {cp[0]['wall_seconds']:.1f} s"
        if fs:
            detail += f"; vs a copy that fsyncs each file {rs[0]['wall_seconds'] / fs[0]['wall_seconds']:.2f}x"
        out.append(
            _row(f"{big}: reshuffle within {TARGET_RAW:.0f}x of cp -r", v, v <= TARGET_RAW, detail)
        )
    return out


TARGETS: tuple[Callable[[list[Job], Mapping[str, Any]], list[Row]], ...] = (
    dag_targets,
    memory_targets,
    inner_targets,
    bytes_targets,
)


def evaluate(jobs: list[Job], datasets: Mapping[str, Any]) -> list[Row]:
    """Every target's rows, in table order."""
    return [r for target in TARGETS for r in target(jobs, datasets)]


def _same_split(a: str | None, b: str | None) -> bool:
    """The same split on two datasets: equal names, or 10% splits of the same seed."""
    return a == b or bool(a and b and a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1])


def read_amplification(j: Job) -> float | None:
    """Bytes of the source read per byte written (a build's own counts)."""
    return _ratio(j.get("bytes_read"), j.get("bytes_written"))


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def ratio_table(jobs: list[Job], datasets: Mapping[str, Any]) -> str:
    """Seed time / product time, side by side: the inner jobs and what the user waits for."""
    lines = [
        "| dataset | what | product s | seed s | seed / product |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for ds in datasets:
        for j in find(jobs, dataset=ds, side="product", stage="build"):
            s = find(jobs, dataset=ds, side="seed", stage="build", split=j["split"])
            sw = s[0]["wall_seconds"] if s else None
            ratio = _x(_ratio(sw, j["wall_seconds"]))
            lines.append(
                f"| {ds} | build {j['split']} | {j['wall_seconds']:.1f} | {sw or 0:.1f} | {ratio} |"
            )
        t = totals(jobs, ds)
        if t["product_s"]:
            lines.append(
                f"| {ds} | **six outputs + validation copy** | {t['product_s']:.1f} | "
                f"{t['seed_s'] or 0:.1f} | **{_x(t['ratio'])}** (CPU {_x(t['cpu_ratio'])}) |"
            )
        if t["parallel_s"]:
            lines.append(
                f"| {ds} | builds {t['parallel']} at a time | {t['parallel_s']:.1f} | "
                f"{t['seed_s'] or 0:.1f} | {_x(t['parallel_ratio'])} |"
            )
        for r in dag_rows(jobs, datasets):
            if r["dataset"] == ds and r["case"] == "first run":
                lines.append(
                    f"| {ds} | **DAG, trigger to manifest ({r['how']})** | {r['dag_s']:.1f} | "
                    f"{r['reference_s'] or 0:.1f} | **{_x(r['ratio'])}** |"
                )
    return "\n".join(lines)


def dag_table(rows: list[Row]) -> str:
    """The DAG end to end: each way and case, its reference, memory and per-task times."""
    lines = [
        "| dataset | how | case | DAG s (run s) | reference s | ratio | vs dags test | "
        "largest process MiB | where the time went (s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        timed = f"{r['dag_s']:.1f} ({r['run_s'] or 0:.1f})"
        if len(r["repeats"] or []) > 1:
            timed += "; median of " + ", ".join(f"{x:.1f}" for x in r["repeats"])
        ratio = (
            f"{r['ratio']:.2f}x faster"
            if r["case"] == "first run" and r["ratio"]
            else (f"{1 / r['ratio']:.1f}x the reference" if r["ratio"] else "-")
        )
        tasks = ", ".join(f"{k} {v:.1f}" for k, v in r["tasks"].items() if v >= 0.5)
        lines.append(
            f"| {r['dataset']} | {r['how']} | {r['case']} | {timed} | {r['reference_s'] or 0:.2f} "
            f"| {ratio} | {_x(r['vs_dags_test'])} | {r['largest_mib']:,.0f} | {tasks} |"
        )
    return "\n".join(lines)


def job_table(jobs: list[Job]) -> str:
    """Every job: wall, CPU, memory (tree and largest process), rate, read amplification."""
    lines = [
        "| dataset | job | wall s | CPU s | peak RSS tree MiB | largest process MiB | "
        "records/s | read amp |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for j in jobs:
        rate = (j.get("records") or 0) / j["wall_seconds"] if j["wall_seconds"] else 0
        amp = read_amplification(j) if j["stage"] == "build" else None
        lines.append(
            f"| {j['dataset']} | {j['name']} | {j['wall_seconds']:.1f} | {j.get('cpu_seconds') or 0:.1f} "
            f"| {j['peak_rss_tree'] / MIB:,.0f} | {(j.get('max_rss_process') or 0) / MIB:,.0f} "
            f"| {rate:,.0f} | {'-' if amp is None else f'{amp:.2f}'} |"
        )
    return "\n".join(lines)


def target_table(rows: list[Row]) -> str:
    lines = ["| target | value | met | detail |", "| --- | ---: | --- | --- |"]
    for r in rows:
        v = f"{r['value']:.2f}" if isinstance(r["value"], float) else str(r["value"])
        met = "MET" if r["met"] else "MISSED"
        lines.append(f"| {r['target']} | {v} | {met} | {r['detail']} |")
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    """The Markdown of one run: ratios, the DAG end to end, targets, every job."""
    jobs, data = result["jobs"], result["datasets"]
    m = result["meta"]
    return "\n\n".join(
        [
            f"Run {m['started_at']}, {m['total_seconds']:.0f} s, on {m['cpus']} CPUs, "
            f"commit {m['git_commit']}" + (" (QUICK sizes: not meaningful)" if m["quick"] else ""),
            "### Ratios: seed time / product time\n\n" + ratio_table(jobs, data),
            "### What the user waits for: the DAG end to end\n\n" + dag_table(dag_rows(jobs, data)),
            "### Targets\n\n" + target_table(result["targets"]),
            "### Jobs\n\n" + job_table(jobs),
        ]
    )


def write_section(md: Path, body: str, begin: str, end: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``md`` (or start the file)."""
    text = md.read_text() if md.exists() else "# Benchmark results\n\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text.split(begin, 1)[1]:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
