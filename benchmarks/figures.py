"""The figures derived from the measured jobs: rates, ratios and totals.

Pure functions over the rows ``benchmarks.bench.Bench`` records (one dict per
job: ``dataset``, ``side`` product/seed/raw/dag, ``stage``, ``split``,
``kind``, the measurement of ``benchmarks.measure`` and the job's own counts).
``derive`` adds each job's rates and ratios in place; ``totals`` sums them per
dataset. Both go to ``results.json`` under the same keys as before the split
of ``benchmarks.run``, so that figures compare across runs.
"""

from __future__ import annotations

from typing import Any

Job = dict[str, Any]


def _rate(n: float | None, secs: float | None) -> float | None:
    if not n or not secs:
        return None
    return n / secs


def derive(jobs: list[Job]) -> None:
    """Per-job rates, read amplification, ratios against the seed and the raw copy."""
    by = {}
    for j in jobs:
        by[(j["dataset"], j["side"], j["stage"], j["split"])] = j
    for j in jobs:
        rec, wall = j.get("records"), j.get("wall_seconds")
        j["records_per_s"] = _rate(rec, wall)
        basis = j.get("bytes_written") if j.get("mb_basis") == "written" else j.get("bytes_read")
        j["mb_per_s"] = _rate(basis / 1e6, wall) if basis else None
        if j["stage"] in ("build", "copy") and j.get("bytes_written"):
            j["read_amplification"] = j["bytes_read"] / j["bytes_written"]
            j["disk_read_amplification"] = (
                j["disk_read_bytes"] / j["bytes_written"]
                if j.get("disk_read_bytes") is not None
                else None
            )
        else:
            j["read_amplification"] = j["disk_read_amplification"] = None
        raw = by.get((j["dataset"], "raw", "cp -r source", None))
        if raw and j["stage"] in ("build", "copy") and j.get("bytes_written"):
            raw_rate = raw["bytes_written"] / raw["wall_seconds"]
            j["x_raw_copy"] = wall / (j["bytes_written"] / raw_rate)
        else:
            j["x_raw_copy"] = None
        if j["side"] == "product" and j["stage"] in ("build", "copy"):
            seed = by.get((j["dataset"], "seed", j["stage"], j["split"]))
            j["seed_speedup"] = (seed["wall_seconds"] / wall) if seed else None
            j["seed_speedup_cpu"] = (
                (seed["cpu_seconds"] / j["cpu_seconds"])
                if seed and seed.get("cpu_seconds") and j.get("cpu_seconds")
                else None
            )
        else:
            j["seed_speedup"] = j["seed_speedup_cpu"] = None


def _sum(jobs: list[Job], key: str) -> float | None:
    vals: list[Any] = [j.get(key) for j in jobs]
    return None if not vals or any(v is None for v in vals) else sum(vals)


def totals(jobs: list[Job], datasets: dict[str, Any]) -> dict[str, Any]:
    """Per dataset: the product's and the seed's builds and end to end, and their ratios."""
    out: dict[str, Any] = {}
    for ds in datasets:
        mine = [j for j in jobs if j["dataset"] == ds]
        pb = [j for j in mine if j["side"] == "product" and j["stage"] == "build"]
        pc = [j for j in mine if j["side"] == "product" and j["stage"] == "copy"]
        sb = [j for j in mine if j["side"] == "seed" and j["stage"] == "build"]
        sc = [j for j in mine if j["side"] == "seed" and j["stage"] == "copy"]
        pall = [j for j in mine if j["side"] == "product" and not is_batch(j)]
        d: dict[str, Any] = {
            "product_builds_plus_validation_copy": {
                k: _sum(pb + pc, k) for k in ("wall_seconds", "cpu_seconds")
            },
            "product_end_to_end": {k: _sum(pall, k) for k in ("wall_seconds", "cpu_seconds")},
            "product_end_to_end_without_verify": {
                k: _sum([j for j in pall if j["stage"] != "verify"], k)
                for k in ("wall_seconds", "cpu_seconds")
            },
            "seed_builds": {k: _sum(sb, k) for k in ("wall_seconds", "cpu_seconds")},
            "seed_builds_plus_validation_copy": {
                k: _sum(sb + sc, k) for k in ("wall_seconds", "cpu_seconds")
            },
            "seed_extrapolated_splits": [j["split"] for j in sb if j.get("extrapolated")],
        }
        par = [j for j in mine if j["side"] == "product" and is_batch(j)]
        if par:
            d["product_builds_parallel"] = {
                "stage": par[0]["stage"],
                "wall_seconds": par[0]["wall_seconds"],
                "cpu_seconds": par[0]["cpu_seconds"],
                "peak_rss_tree": par[0]["peak_rss_tree"],
            }
            s_wall = d["seed_builds"]["wall_seconds"]
            d["speedup_builds_parallel_wall_seconds"] = (
                s_wall / par[0]["wall_seconds"] if s_wall and sb else None
            )
        for key in ("wall_seconds", "cpu_seconds"):
            s, p = d["seed_builds"][key], d["product_builds_plus_validation_copy"][key]
            d[f"speedup_builds_{key}"] = s / p if s and p and sb else None
            e = d["product_end_to_end_without_verify"][key]
            d[f"speedup_end_to_end_without_verify_{key}"] = s / e if s and e and sb else None
            e = d["product_end_to_end"][key]
            d[f"speedup_end_to_end_{key}"] = s / e if s and e and sb else None
        out[ds] = d
    return out


def is_batch(j: Job) -> bool:
    """The product's builds run N at a time: several jobs, not one."""
    return j["stage"].startswith("builds, ")


def same_split(a: Job, b: Job) -> bool:
    """Jobs of the same role on two datasets: the same split kind and seed."""
    if a["split"] == b["split"]:
        return True
    if a["split"] and b["split"] and a["kind"] == b["kind"] == "10%":
        return a["split"].rsplit(".", 1)[-1] == b["split"].rsplit(".", 1)[-1]
    return False
