"""CLI: write split plans (``filename,shard,index`` files) from a catalog.

Examples::

    # the five seeded 10% splits and the reshuffle, into plans/
    python -m beam_jobs.plan --catalog_dir=/data/ssl/_work/catalog/5160864c129f5846 \\
        --out_dir=/data/ssl/_work/plans --seeds=1,2,3,4,5 --unsupervised

    # check a published FixMatch file against the catalog and keep it as the plan of seed 3
    python -m beam_jobs.plan --catalog_dir=... --out_dir=... --seeds=3 \\
        --sharding_file=3=/path/files2shards_train_size128116_split3.txt

Prints one line per plan: split, examples, shards, sha256 and the file.
The algorithm is in ``beam_jobs.planner`` and in the README.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from beam_jobs import storage
from beam_jobs.catalog import REPORT_FILE, read_catalog
from beam_jobs.layout import plan_file
from beam_jobs.planner import (
    Plan,
    PlanError,
    check_names_exist,
    plan_supervised,
    plan_unsupervised,
    read_plan_file,
    with_class_counts,
)


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: the DAG's params, in planner terms."""

    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    fraction: str | None = "0.1"
    count: int | None = None
    sampling: str = "stratified"
    num_shards: int | None = None
    unsupervised: bool = True
    unsupervised_seed: int = 0
    unsupervised_shards: int | None = None
    sharding_files: tuple[tuple[int, str], ...] = ()


def make_plans(catalog_dir: str, req: PlanRequest) -> list[Plan]:
    """All plans a request asks for (pure given the catalog)."""
    # Sorted once here, so each plan only checks the order (see planner._canonical).
    table = read_catalog(catalog_dir, ["filename", "label", "synset"]).sort_by("filename")
    report = json.loads(storage.read_text(storage.join(catalog_dir, REPORT_FILE)))
    source_shards = int(report["num_shards"])
    names = table.column("filename").to_pylist()
    labels = table.column("label").to_numpy()
    class_names = {int(k): v for k, v in report.get("synsets", {}).items()}
    files = dict(req.sharding_files)
    plans: list[Plan] = []
    name_to_class: dict[str, str] | None = None
    for seed in req.seeds:
        if seed in files:
            plan = read_plan_file(files[seed], seed=seed)
            check_names_exist(plan, names)
            if name_to_class is None:
                name_to_class = {
                    n: class_names.get(int(lab), str(int(lab))) for n, lab in zip(names, labels)
                }
            plans.append(with_class_counts(plan, name_to_class))
        else:
            plans.append(plan_supervised(
                names, labels, seed=seed, fraction=req.fraction, count=req.count,
                sampling=req.sampling, num_shards=req.num_shards, source_shards=source_shards,
                class_names=class_names,
            ))
    if req.unsupervised:
        plans.append(plan_unsupervised(names, seed=req.unsupervised_seed,
                                       num_shards=req.unsupervised_shards,
                                       source_shards=source_shards))
    return plans


def plan_summary(plan: Plan, uri: str) -> dict[str, Any]:
    return {
        "split": plan.split, "kind": plan.kind, "seed": plan.seed, "fraction": plan.fraction,
        "sampling": plan.sampling, "num_examples": plan.num_examples,
        "num_shards": plan.num_shards, "shard_lengths": plan.shard_lengths(),
        "plan_uri": uri, "plan_sha256": plan.sha256(), "plan_source": plan.source,
        "class_counts": plan.class_counts,
    }


def write_plans(plans: list[Plan], out_dir: str) -> list[dict[str, Any]]:
    """Write each plan as ``{out_dir}/{split}.{sha16}.csv`` (content-addressed,
    so a plan file never changes under a running build); return summaries."""
    out = []
    for plan in plans:
        data = plan.to_csv_bytes()
        sha = plan.sha256()
        uri = plan_file(out_dir, plan.split, sha)
        if not storage.exists(uri):
            storage.write_bytes(uri, data, "text/csv")
        out.append(plan_summary(plan, uri))
    return out


def parse_sharding_files(values: list[str]) -> tuple[tuple[int, str], ...]:
    out = []
    for v in values:
        seed, sep, uri = v.partition("=")
        if not sep or not seed.strip().isdigit():
            raise PlanError(f"--sharding_file takes SEED=URI, got {v!r}")
        out.append((int(seed), uri.strip()))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m beam_jobs.plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog_dir", required=True, help="the validation job's output folder")
    p.add_argument("--out_dir", required=True, help="where the plan files go")
    p.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds (default 1..5)")
    p.add_argument("--fraction", default="0.1", help="share per labelled split (default 0.1)")
    p.add_argument("--count", type=int, help="absolute size per labelled split (instead of fraction)")
    p.add_argument("--sampling", default="stratified", choices=["stratified", "uniform"])
    p.add_argument("--num_shards", type=int, help="shards per labelled split (default: scaled)")
    p.add_argument("--unsupervised", action="store_true", help="also plan the reshuffle 'train'")
    p.add_argument("--unsupervised_seed", type=int, default=0)
    p.add_argument("--sharding_file", action="append", default=[],
                   help="SEED=URI of a published filename,shard,index file (repeatable)")
    a = p.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in a.seeds.split(",") if s.strip())
        req = PlanRequest(
            seeds=seeds, fraction=None if a.count else a.fraction, count=a.count,
            sampling=a.sampling, num_shards=a.num_shards, unsupervised=a.unsupervised,
            unsupervised_seed=a.unsupervised_seed,
            sharding_files=parse_sharding_files(a.sharding_file),
        )
        summaries = write_plans(make_plans(a.catalog_dir, req), a.out_dir)
    except (PlanError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for s in summaries:
        print(f"{s['split']}\t{s['num_examples']}\t{s['num_shards']}\t{s['plan_sha256']}\t{s['plan_uri']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
