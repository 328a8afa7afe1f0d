"""The benchmark's targets: each one's threshold, value, MET or MISSED, and why.

One function per target (or per family of rows, such as "every dataset"),
each a pure function of the run's figures (``Run``: results.json's
``datasets``, ``jobs`` after ``benchmarks.figures.derive``, and ``totals``),
returning rows ``{"target", "value", "met", "detail"}``: the target's text
names its threshold, ``detail`` the figures behind the value. ``TARGETS``
lists them in the order of the RESULTS.md table; ``evaluate`` runs them all.
Changing a target is changing its function (and its test in
``tests/test_benchmark_targets.py``), without running a benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from benchmarks import dag
from benchmarks.figures import is_batch, same_split
from benchmarks.measure import MB
from benchmarks.report import fmt

GIB = 1024**3

TARGET_SPEEDUP = 5.0  # the product's six outputs + validation copy vs the seed's, wall
AIM_SPEEDUP = 10.0
TARGET_READ_AMP = 1.2
TARGET_RSS = 1 * GIB
TARGET_FLAT = 1.25  # peak RSS on BYTES / on half BYTES, per job: "flat" if at most this
TARGET_RAW = 3.0
TARGET_DAG = {"count": 5.0, "bytes": 3.0}  # first run vs the seed's six outputs
AIM_DAG = 10.0
TARGET_ADD_SEED_S = 15.0
TARGET_ADD_SEED_X = 3.0

Row = dict[str, Any]
Job = dict[str, Any]


@dataclass(frozen=True)
class Run:
    """What the targets are computed from (the keys of results.json) and how the run was made."""

    datasets: Mapping[str, Mapping[str, Any]]
    jobs: list[Job]
    totals: Mapping[str, Mapping[str, Any]]
    skip_seed: bool = False
    cold: bool = False

    def role(self, role: str) -> str | None:
        """The dataset of ``role`` (count, bytes, bytes_half) in this run, if any."""
        return {v["role"]: k for k, v in self.datasets.items()}.get(role)

    def find(self, **match: Any) -> Job | None:
        """The first job whose fields equal ``match``."""
        return next((j for j in self.jobs if all(j.get(k) == v for k, v in match.items())), None)


def row(target: str, value: Any, met: bool | None, detail: str) -> Row:
    return {"target": target, "value": value, "met": met, "detail": detail}


# ---------------------------------------------------------------------- the DAG end to end


def dag_end_to_end(run: Run) -> list[Row]:
    """Per dataset and way of running the DAG (a real scheduler, ``dags test``):
    the whole DAG's first run against the seed, then adding one seed against a
    plain copy of its bytes (both read from ``benchmarks.dag.rows``)."""
    out: list[Row] = []
    for r in dag.rows(run.jobs, dict(run.datasets)):
        if r["how"] == "team stack":  # reported beside dags test (benchmarks.dag.table), no target
            continue
        role = run.datasets[r["dataset"]]["role"]
        where = ", ".join(
            f"{k} {v:.0f} s"
            for k, v in sorted(r["task_seconds"].items(), key=lambda kv: -kv[1])[:4]
        )
        timed = "trigger to manifest" if r["how"] == "scheduler" else "the whole dags test process"
        if len(r.get("repeats") or []) > 1:
            each = ", ".join(f"{x:.1f}" for x in r["repeats"])
            timed += f", the median of {len(r['repeats'])} runs: {each} s"
        if r["case"] == "first run" and role in TARGET_DAG and r["ratio"]:
            target = TARGET_DAG[role]
            out.append(
                row(
                    f"{r['dataset']}: the whole DAG ({r['how']}, first run) >= "
                    f"{target:.0f}x faster than the seed's six outputs"
                    + (f" (aim {AIM_DAG:.0f}x)" if role == "count" else ""),
                    round(r["ratio"], 2),
                    r["ratio"] >= target,
                    f"DAG {r['wall_seconds']:.1f} s ({timed}; the run "
                    f"{r['run_seconds'] or 0:.1f} s) vs seed "
                    f"{r['reference_seconds']:.0f} s; largest tasks: {where}",
                )
            )
        if r["case"] == "add one seed" and role == "count" and r["reference_seconds"]:
            x = r["wall_seconds"] / r["reference_seconds"]
            out.append(
                row(
                    f"{r['dataset']}: adding one seed ({r['how']}) <= {TARGET_ADD_SEED_S:.0f} s "
                    f"and <= {TARGET_ADD_SEED_X:.0f}x a copy of its bytes + one "
                    "Python start-up",
                    f"{r['wall_seconds']:.1f} s, {x:.1f}x",
                    r["wall_seconds"] <= TARGET_ADD_SEED_S and x <= TARGET_ADD_SEED_X,
                    f"{r['reference']} {r['reference_seconds']:.1f} s; "
                    f"largest tasks: {where}; DAG timed: {timed}",
                )
            )
    return out


def process_rss(run: Run) -> list[Row]:
    """COUNT and BYTES: the largest single process of everything the product ran
    (its CLIs and the DAG), exact (getrusage), against 1 GiB."""
    out: list[Row] = []
    for ds, info in run.datasets.items():
        if info["role"] not in ("count", "bytes"):
            continue
        mine = [
            j
            for j in run.jobs
            if j["dataset"] == ds and j["side"] in ("product", "dag") and j.get("max_rss_process")
        ]
        if not mine:
            continue
        worst = max(mine, key=lambda j: j["max_rss_process"])
        kinds = worst.get("rss_by_process") or {}
        top = max(kinds.items(), key=lambda kv: kv[1]) if kinds else (worst["name"], 0)
        out.append(
            row(
                f"{ds}: peak RSS of every process the product runs <= 1 GiB",
                f"{worst['max_rss_process'] / MB:,.0f} MiB",
                worst["max_rss_process"] <= TARGET_RSS,
                f"largest in {worst['name']} ({top[0]}, sampled {top[1] / MB:,.0f} MiB)",
            )
        )
    return out


# ---------------------------------------------------------------------- against the seed


def builds_vs_seed(run: Run) -> list[Row]:
    """COUNT: the product's builds one after another against the seed's six outputs."""
    count = run.role("count")
    if not count or run.skip_seed:
        return []
    t = run.totals[count]
    sp, spc = t["speedup_builds_wall_seconds"], t["speedup_builds_cpu_seconds"]
    extra = (
        (" (seed splits " + ", ".join(t["seed_extrapolated_splits"]) + " extrapolated)")
        if t["seed_extrapolated_splits"]
        else ""
    )
    return [
        row(
            f"COUNT: six outputs + validation copy >= {TARGET_SPEEDUP:.0f}x faster than the seed's "
            f"six outputs (aim {AIM_SPEEDUP:.0f}x), wall",
            None if sp is None else round(sp, 2),
            None if sp is None else sp >= TARGET_SPEEDUP,
            f"product {t['product_builds_plus_validation_copy']['wall_seconds']:.0f} s vs seed "
            f"{t['seed_builds']['wall_seconds']:.0f} s; CPU-seconds ratio "
            f"{spc if spc is None else round(spc, 2)}; end to end incl. validate+plan "
            f"{fmt(t['speedup_end_to_end_without_verify_wall_seconds'], 2)}x, "
            f"incl. verification too {fmt(t['speedup_end_to_end_wall_seconds'], 2)}x{extra}",
        )
    ]


def parallel_builds_vs_seed(run: Run) -> list[Row]:
    """COUNT: the same, the product's builds N at a time as the DAG runs them."""
    count = run.role("count")
    if not count or run.skip_seed or not run.totals[count].get("product_builds_parallel"):
        return []
    t = run.totals[count]
    pp = t["product_builds_parallel"]
    spp = t["speedup_builds_parallel_wall_seconds"]
    return [
        row(
            f"COUNT: the same, the product's builds run as the DAG runs them ({pp['stage']}), "
            f">= {TARGET_SPEEDUP:.0f}x (aim {AIM_SPEEDUP:.0f}x), wall",
            None if spp is None else round(spp, 2),
            None if spp is None else spp >= TARGET_SPEEDUP,
            f"product {pp['wall_seconds']:.0f} s (peak RSS of the concurrent builds "
            f"{pp['peak_rss_tree'] / MB:,.0f} MiB) vs seed {t['seed_builds']['wall_seconds']:.0f} s "
            "(one split at a time, as the seed's shell loop)",
        )
    ]


def read_amplification(run: Run) -> list[Row]:
    """Per dataset: source bytes read per byte written by a 10% split's build;
    measured with strace where traced, else the job's own count (the worst split)."""
    out: list[Row] = []
    for ds in run.datasets:
        tens = [
            j
            for j in run.jobs
            if j["dataset"] == ds
            and j["side"] == "product"
            and j["stage"] == "build"
            and j["kind"] == "10%"
        ]
        if not tens:
            continue
        worst = max(tens, key=lambda j: j["read_amplification"])
        seed = [
            j
            for j in run.jobs
            if j["dataset"] == ds
            and j["side"] == "seed"
            and j["stage"] == "build"
            and j["kind"] == "10%"
            and not j.get("extrapolated")
        ]
        seed_amp = max((j["read_amplification"] for j in seed), default=None)
        seed_traced = [
            j["read_amplification_strace"]
            for j in seed
            if j.get("read_amplification_strace") is not None
        ]
        disk = max((j.get("disk_read_amplification") or 0) for j in tens)
        traced = [j for j in tens if j.get("read_amplification_strace") is not None]
        if traced:
            t = traced[0]
            value = t["read_amplification_strace"]
            how = (
                f"measured with strace on {t['split']}: {t['source_bytes_read_strace']:,} bytes "
                f"of source in {t['source_read_calls_strace']:,} reads for "
                f"{t['bytes_written']:,} written; the job's own count: "
                f"{worst['read_amplification']:.2f} (worst of {len(tens)})"
            )
        else:
            value = worst["read_amplification"]
            how = f"the job's own count, worst of {len(tens)} splits ({worst['split']})"
        out.append(
            row(
                f"{ds}: read amplification of a 10% split <= {TARGET_READ_AMP}",
                round(value, 3),
                value <= TARGET_READ_AMP,
                f"{how}; seed reference: {fmt(seed_amp, 2)}"
                + (f" (strace: {seed_traced[0]:.2f})" if seed_traced else "")
                + "; from the disk (block device, readahead and 4 KiB pages included): "
                + f"{disk:.2f}"
                + ("" if run.cold else " (page cache hot, so ~0)"),
            )
        )
    return out


# ---------------------------------------------------------------------- BYTES: memory, raw copy


def job_rss(run: Run) -> list[Row]:
    """BYTES: the peak RSS of every product job's process tree against 1 GiB."""
    big = run.role("bytes")
    if not big:
        return []
    prod = [
        j for j in run.jobs if j["dataset"] == big and j["side"] == "product" and not is_batch(j)
    ]
    worst = max(prod, key=lambda j: j["peak_rss_tree"])
    seed = [
        j
        for j in run.jobs
        if j["dataset"] == big and j["side"] == "seed" and not j.get("extrapolated")
    ]
    seed_worst = max(seed, key=lambda j: j["peak_rss_tree"]) if seed else None
    return [
        row(
            f"{big}: peak RSS (process tree) of every product job <= 1 GiB",
            f"{worst['peak_rss_tree'] / MB:,.0f} MiB",
            worst["peak_rss_tree"] <= TARGET_RSS,
            f"largest: {worst['name']}; seed reference's largest: "
            + (
                f"{seed_worst['peak_rss_tree'] / MB:,.0f} MiB ({seed_worst['name']})"
                if seed_worst
                else "n/a"
            ),
        )
    ]


def rss_flat(run: Run) -> list[Row]:
    """Half BYTES to BYTES (2x the data): every product job's peak RSS grows at
    most TARGET_FLAT times, job by job (the same stage and split kind and seed)."""
    big, half = run.role("bytes"), run.role("bytes_half")
    if not big or not half:
        return []
    ratios: list[tuple[float, str]] = []
    seed_ratios: list[tuple[float, str]] = []
    for j in run.jobs:
        if j["dataset"] != big or j.get("extrapolated") or is_batch(j):
            continue
        h = next(
            (
                k
                for k in run.jobs
                if k["dataset"] == half
                and k["side"] == j["side"]
                and k["stage"] == j["stage"]
                and same_split(k, j)
            ),
            None,
        )
        if h is None or not h["peak_rss_tree"]:
            continue
        r = (j["peak_rss_tree"] / h["peak_rss_tree"], j["name"])
        (ratios if j["side"] == "product" else seed_ratios if j["side"] == "seed" else []).append(r)
    if not ratios:
        return []
    w = max(ratios)
    sw = max(seed_ratios) if seed_ratios else None
    return [
        row(
            f"peak RSS flat from {half} to {big} (2x data): every product job's ratio "
            f"<= {TARGET_FLAT}",
            round(w[0], 2),
            w[0] <= TARGET_FLAT,
            f"largest growth: {w[1]}; seed reference's largest: "
            + (f"{sw[0]:.2f}x ({sw[1]})" if sw else "n/a"),
        )
    ]


def reshuffle_vs_raw(run: Run) -> list[Row]:
    """BYTES: the reshuffle's wall time against ``cp -r`` of the source (the
    physical bound), with cp of train-* and a copy that fsyncs each file for context."""
    big = run.role("bytes")
    rs = run.find(dataset=big, side="product", stage="build", split="train") if big else None
    cp = run.find(dataset=big, stage="cp -r source") if big else None
    if not rs or not cp:
        return []
    cpt = run.find(dataset=big, stage="cp train-*")
    cps = run.find(dataset=big, stage="copy train-* + fsync each")
    r = rs["wall_seconds"] / cp["wall_seconds"]
    return [
        row(
            f"{big}: reshuffle within {TARGET_RAW:.0f}x of the raw copy (cp -r of the source)",
            round(r, 2),
            r <= TARGET_RAW,
            f"reshuffle {rs['wall_seconds']:.1f} s vs cp -r {cp['wall_seconds']:.1f} s; "
            + (
                f"vs cp of train-* only ({cpt['wall_seconds']:.1f} s): "
                f"{rs['wall_seconds'] / cpt['wall_seconds']:.2f}x; "
                if cpt
                else ""
            )
            + (
                f"vs a copy of train-* that fsyncs each file as the product does "
                f"({cps['wall_seconds']:.1f} s): {rs['wall_seconds'] / cps['wall_seconds']:.2f}x"
                if cps
                else ""
            )
            + _steady_note(rs, cp),
        )
    ]


def _steady_note(build: Job, cp: Job) -> str:
    """The reshuffle's steady state against cp's rate, without the fixed costs."""
    ph = build.get("phases") or {}
    fixed = sum(ph.get(k, 0) for k in ("startup", "teardown", "other")) + (
        ph.get("first_progress") or 0
    )
    rate = ph.get("steady_mb_per_s")
    out = f"; fixed costs (startup, worker start-up to first progress, teardown) {fixed:.1f} s"
    if rate:
        cp_rate = cp["bytes_written"] / 1e6 / cp["wall_seconds"]
        out += (
            f"; steady state {rate:,.0f} MB/s vs cp -r {cp_rate:,.0f} MB/s ({cp_rate / rate:.2f}x)"
        )
    return out


# ---------------------------------------------------------------------- all of them

TARGETS: tuple[Callable[[Run], list[Row]], ...] = (
    dag_end_to_end,
    process_rss,
    builds_vs_seed,
    parallel_builds_vs_seed,
    read_amplification,
    job_rss,
    rss_flat,
    reshuffle_vs_raw,
)


def evaluate(run: Run, *, quick: bool = False) -> list[Row]:
    """Every target's rows, in table order; with ``quick``, each detail says the
    sizes are too small for the targets to mean anything."""
    rows = [r for target in TARGETS for r in target(run)]
    if quick:
        for r in rows:
            r["detail"] = "QUICK sizes, not meaningful for the targets. " + r["detail"]
    return rows
