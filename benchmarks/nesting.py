"""How the labelled splits of one seed relate across fractions, measured.

    python -m benchmarks.nesting [--seeds 1,2,3,4,5] [--fractions 0.1,0.05,0.01]

Plans every seed at every fraction with the product's planner (algorithm v1,
the code the DAG runs) on two catalogs, and counts, for each seed and each
pair of fractions, the records of the smaller split that are not in the
larger one (0: nested):

* a synthetic ImageNet (``beam_jobs.source.synthetic.imagenet_spec``: 1,281,167
  names in 1,000 classes of ImageNet's uneven sizes), only its names and
  labels (no file is written);
* the names in FixMatch's five published 10% files (their union: 524,182
  names, classes from their synsets), as a catalog of real ImageNet names.

It also measures the published label sets themselves: how FixMatch's five
10% splits overlap (across seeds), and whether SimCLR's 1% subset lies inside
its 10% one (across sizes). About a minute on one core. The README's "How a
split is derived" quotes the results.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from fractions import Fraction
from typing import Any, Sequence

from beam_jobs.planning import algorithm as split_algorithm
from beam_jobs.planning import protocols
from beam_jobs.planning.plans import nesting
from beam_jobs.source.synthetic import imagenet_spec, layout, read_names_files

FIXMATCH = tuple(f"published:fixmatch/split{s}" for s in range(1, 6))


def measure(
    names: Sequence[str],
    labels: Sequence[int],
    *,
    seeds: Sequence[int],
    fractions: Sequence[str],
    sampling: str,
) -> dict[str, Any]:
    """Plan each (seed, fraction); count, per seed and pair of fractions, the smaller
    split's records outside the larger one; and the classes whose quota shrinks as the
    fraction grows (the only way v1's splits of one seed can fail to nest)."""
    order = sorted(range(len(names)), key=names.__getitem__)
    names = [names[i] for i in order]
    labels = [labels[i] for i in order]
    outside: list[int] = []
    sizes: dict[str, int] = {}
    for seed in seeds:
        keys = split_algorithm.hash_keys(names, "select", seed)
        plans = [
            split_algorithm.plan_supervised(
                names, labels, seed=seed, fraction=f, sampling=sampling, select_keys=keys
            )
            for f in fractions
        ]
        sizes.update({f: p.num_examples for f, p in zip(fractions, plans)})
        for a, b in itertools.combinations(plans, 2):
            small, large = sorted((a, b), key=lambda p: p.num_examples)
            outside += [r["outside"] for r in nesting([small, large])]
    class_sizes: dict[int, int] = {}
    for lab in labels:
        class_sizes[lab] = class_sizes.get(lab, 0) + 1
    shrinking = 0
    if sampling == "stratified":
        quotas = {
            f: split_algorithm.class_quotas(class_sizes, Fraction(f), sizes[f]) for f in fractions
        }
        for a, b in itertools.combinations(sorted(fractions, key=Fraction), 2):
            shrinking += sum(quotas[a][c] > quotas[b][c] for c in class_sizes)
    return {
        "records": len(names),
        "classes": len(class_sizes),
        "class_sizes": (min(class_sizes.values()), max(class_sizes.values())),
        "sizes": sizes,
        "pairs": len(outside),
        "outside": sum(outside),
        "shrinking_quotas": shrinking,
    }


def published_facts() -> dict[str, Any]:
    """FixMatch's splits across seeds; SimCLR's 1% against its 10%."""
    fix = [
        {line.split(",", 1)[0] for line in protocols.read_text(ref).splitlines() if line}
        for ref in FIXMATCH
    ]
    shared = [len(a & b) for a, b in itertools.combinations(fix, 2)]
    one = set(protocols.read_text("published:simclr/1percent").split())
    ten = set(protocols.read_text("published:simclr/10percent").split())
    return {
        "fixmatch_pairs_shared": (min(shared), max(shared)),
        "fixmatch_split_size": len(fix[0]),
        "simclr_1pct_outside_10pct": len(one - ten),
        "simclr_1pct": len(one),
    }


def catalogs() -> dict[str, tuple[list[str], list[int]]]:
    lay = layout(imagenet_spec())
    recs = [r for shard in lay.train for r in shard]
    out = {"synthetic ImageNet": ([n for n, _ in recs], [c + 1 for _, c in recs])}
    by_synset = read_names_files(FIXMATCH)
    synsets = sorted(by_synset)
    out["FixMatch's published names"] = (
        [n for s in synsets for n in sorted(by_synset[s])],
        [i + 1 for i, s in enumerate(synsets) for _ in by_synset[s]],
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nesting", description=__doc__)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--fractions", default="0.1,0.05,0.01")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    fractions = [f.strip() for f in a.fractions.split(",")]
    print(
        "| catalog | records (classes, class sizes) | sampling | split sizes | seed x pair "
        "of fractions | records of a smaller split outside the larger | class quotas that "
        "shrink as the fraction grows |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for title, (names, labels) in catalogs().items():
        for sampling in ("stratified", "uniform"):
            t0 = time.perf_counter()
            r = measure(names, labels, seeds=seeds, fractions=fractions, sampling=sampling)
            lo, hi = r["class_sizes"]
            print(
                f"| {title} | {r['records']:,} ({r['classes']:,}, {lo:,}..{hi:,}) | {sampling} "
                f"| {', '.join(f'{n:,}' for n in r['sizes'].values())} | {r['pairs']} "
                f"| {r['outside']} | {r['shrinking_quotas']} |",
                flush=True,
            )
            print(f"  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    f = published_facts()
    lo, hi = f["fixmatch_pairs_shared"]
    print(
        f"\nFixMatch's five published 10% splits ({f['fixmatch_split_size']:,} names each): "
        f"any two share {lo:,}..{hi:,} names (independent draws across seeds)."
    )
    print(
        f"SimCLR's 1% subset ({f['simclr_1pct']:,} names): "
        f"{f['simclr_1pct_outside_10pct']:,} of them outside its 10% subset "
        f"({'nested' if not f['simclr_1pct_outside_10pct'] else 'not nested'} across sizes)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
