"""The split planner (pure): shard-count rule, dealing, stratified quotas,
determinism, the documented algorithm re-derived independently, published
plan file checks, and the plan CLI on a tiny hand-written catalog."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from support.common import REFERENCE

from beam_jobs import storage
from beam_jobs.planning import algorithm as split_algorithm
from beam_jobs.planning import key_workers
from beam_jobs.planning import plans as plan_cli
from beam_jobs.planning.algorithm import (
    MAX_SHARD_COUNT,
    PlanError,
    class_quotas,
    default_num_shards,
    exact_fraction,
    parse_plan_text,
    shard_sizes,
    sorted_catalog,
    split_size,
    supervised_plan,
    unsupervised_plan,
)
from beam_jobs.planning.inputs import read_plan_file
from beam_jobs.source.catalog import CATALOG_FILE, REPORT_FILE, SCHEMA, write_table
from beam_jobs.source.synthetic import Spec, layout

SPLIT1 = REFERENCE / "files2shards_train_size128116_split1.txt"
SPLIT1_SHA = "d897658efd96e71ebf79042287a0975e6215f5b9e772a275e25aad050f554666"
IMAGENET_TRAIN, IMAGENET_SHARDS = 1_281_167, 1024


# --------------------------------------------------------------------------- pure pieces


@pytest.mark.parametrize(
    "n, source_shards, source_records, expected",
    [
        (128_116, IMAGENET_SHARDS, IMAGENET_TRAIN, 102),  # FixMatch's published 10% splits
        (IMAGENET_TRAIN, IMAGENET_SHARDS, IMAGENET_TRAIN, 1024),  # the full reshuffle
        (64_058, IMAGENET_SHARDS, IMAGENET_TRAIN, 51),  # 5%
        (12_811, IMAGENET_SHARDS, IMAGENET_TRAIN, 10),  # 1%
        (100, 40, 1000, 4),
        (99, 40, 1000, 3),  # floor, not round
        (5, 8, 1000, 1),  # max(1, 0)
        (0, 8, 1000, 1),
        (10, 8, 0, 1),  # no source: one shard
    ],
)
def test_default_num_shards(n, source_shards, source_records, expected):
    assert default_num_shards(n, source_shards, source_records) == expected


@pytest.mark.parametrize(
    "n, num_shards, expected",
    [
        (10, 3, [4, 3, 3]),
        (9, 3, [3, 3, 3]),
        (11, 3, [4, 4, 3]),
        (2, 5, [1, 1, 0, 0, 0]),
        (7, 1, [7]),
        (0, 2, [0, 0]),
    ],
)
def test_shard_sizes_first_n_mod_s_one_longer(n, num_shards, expected):
    assert shard_sizes(n, num_shards) == expected


def test_shard_sizes_of_the_published_splits():
    sizes = shard_sizes(128_116, 102)
    assert sizes == [1257] * 4 + [1256] * 98  # NOTICE.md: shards 0-3 hold 1,257
    assert sum(sizes) == 128_116


@pytest.mark.parametrize("num_shards", [0, -1])
def test_shard_sizes_rejects_no_shards(num_shards):
    with pytest.raises(PlanError, match="num_shards must be >= 1"):
        shard_sizes(10, num_shards)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0.1", Fraction(1, 10)),
        (0.1, Fraction(1, 10)),  # the decimal written, not the nearest binary float
        (" 0.05 ", Fraction(1, 20)),
        ("1/3", Fraction(1, 3)),
        (1, Fraction(1)),
        (Fraction(2, 7), Fraction(2, 7)),
    ],
)
def test_exact_fraction(value, expected):
    assert exact_fraction(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "must be in"),
        (0, "must be in"),
        ("1.5", "must be in"),
        ("-0.1", "must be in"),
        ("ten percent", "is not a number"),
        ("1/0", "is not a number"),
    ],
)
def test_exact_fraction_rejects(value, message):
    with pytest.raises(PlanError, match=message):
        exact_fraction(value)


@pytest.mark.parametrize(
    "total, fraction, expected",
    [
        (IMAGENET_TRAIN, "0.1", 128_116),
        (IMAGENET_TRAIN, "0.05", 64_058),
        (IMAGENET_TRAIN, "0.01", 12_811),
        (30, "0.1", 3),  # 30 * float(0.1) = 3.0000000000000004, floor is still exact
        (29, "0.1", 2),
    ],
)
def test_split_size_is_floor_of_exact_product(total, fraction, expected):
    assert split_size(total, exact_fraction(fraction)) == expected


def rule_quotas(class_sizes: dict[int, int], fraction: Fraction) -> dict[int, int]:
    """The documented per-class rule, written independently of the planner:
    floor(N_c * f) each, then one more to the largest remainders (ties to the
    smaller label) until the total is floor(N * f)."""
    n = math.floor(sum(class_sizes.values()) * fraction)
    out = {}
    rem = []
    for label in sorted(class_sizes):
        exact = class_sizes[label] * fraction
        out[label] = exact.numerator // exact.denominator
        rem.append((exact - out[label], label))
    left = n - sum(out.values())
    rem.sort(key=lambda t: (-t[0], t[1]))
    for _, label in rem[:left]:
        out[label] += 1
    return out


@pytest.mark.parametrize(
    "sizes, fraction, expected",
    [
        # Ties (all remainders 0.5): the smaller labels win, whatever the dict order.
        ({4: 5, 3: 25, 2: 15, 1: 15}, Fraction(1, 10), {1: 2, 2: 2, 3: 2, 4: 0}),
        # n = 5, floors sum to 4: the largest remainder (19 -> 1.9) beats 17 -> 1.7, 12, 11.
        ({1: 11, 2: 12, 3: 19, 4: 17}, Fraction(1, 10), {1: 1, 2: 1, 3: 2, 4: 1}),
        # A larger remainder beats a smaller label: 18 -> 0.9 over 2 x 0.5.
        ({1: 5, 2: 5, 3: 9}, Fraction(1, 10), {1: 0, 2: 0, 3: 1}),
        # Exact: no remainders.
        ({1: 10, 2: 20}, Fraction(1, 10), {1: 1, 2: 2}),
    ],
)
def test_class_quotas_table(sizes, fraction, expected):
    n = split_size(sum(sizes.values()), fraction)
    got = class_quotas(sizes, fraction, n)
    assert got == expected
    assert got == rule_quotas(sizes, fraction)
    assert sum(got.values()) == n


# --------------------------------------------------------------------------- stratified / uniform


@pytest.fixture(scope="module")
def uneven():
    """A synthetic set with ImageNet-like uneven classes (a few thousand records)."""
    lay = layout(
        Spec(
            num_classes=120,
            min_per_class=12,
            max_per_class=60,
            full_class_share=0.6,
            train_shards=40,
            seed=5,
        )
    )
    names = [n for shard in lay.train for n, _ in shard]
    labels = [lay.classes[c].label for shard in lay.train for _, c in shard]
    return names, labels


def test_uneven_fixture_is_uneven(uneven):
    names, labels = uneven
    sizes = Counter(labels)
    assert 3000 < len(names) < 8000
    assert len(set(sizes.values())) > 10  # many distinct class sizes
    # Remainders differ between classes, so the largest-remainder step matters.
    assert len({(s * Fraction(1, 10)) % 1 for s in sizes.values()}) > 5


def test_stratified_per_class_counts_follow_the_rule(uneven):
    names, labels = uneven
    sizes = dict(Counter(labels))
    expected = rule_quotas(sizes, Fraction(1, 10))
    label_of = dict(zip(names, labels))
    total = split_size(len(names), Fraction(1, 10))
    assert sum(expected.values()) == total == len(names) // 10
    per_seed = []
    for seed in range(1, 6):
        plan = supervised_plan(
            sorted_catalog(names, labels), seed=seed, fraction="0.1", source_shards=40
        )
        assert plan.num_examples == total
        assert plan.split == f"train{total}.{seed}"
        got = Counter(label_of[n] for n in plan.names.tolist())
        assert {c: got.get(c, 0) for c in sizes} == expected
        assert plan.class_counts == {str(c): k for c, k in expected.items() if k}
        per_seed.append(set(plan.names.tolist()))
    # Five seeds are independent draws: any two share about 10% of their records.
    for a, b in itertools.combinations(per_seed, 2):
        assert 0.05 * total <= len(a & b) <= 0.15 * total, len(a & b)


def test_stratified_takes_smallest_select_keys_inside_each_class(uneven):
    names, labels = uneven
    plan = supervised_plan(sorted_catalog(names, labels), seed=3, fraction="0.1")
    chosen = set(plan.names.tolist())
    by_class: dict[int, list[str]] = {}
    for n, c in zip(names, labels):
        by_class.setdefault(c, []).append(n)
    for c, members in by_class.items():
        ranked = sorted(members, key=lambda n: (ref_key("select", 3, n), n))
        k = sum(1 for n in members if n in chosen)
        assert set(ranked[:k]) == chosen & set(members), c


def test_uniform_total_and_not_stratified(uneven):
    names, labels = uneven
    total = len(names) // 10
    label_of = dict(zip(names, labels))
    strat = supervised_plan(sorted_catalog(names, labels), seed=1, fraction="0.1")
    uni = supervised_plan(sorted_catalog(names, labels), seed=1, fraction="0.1", sampling="uniform")
    assert uni.num_examples == total
    assert uni.sampling == "uniform"
    # The n smallest select keys overall.
    ranked = sorted(names, key=lambda n: (ref_key("select", 1, n), n))
    assert set(uni.names.tolist()) == set(ranked[:total])
    uni_counts = Counter(label_of[n] for n in uni.names.tolist())
    strat_counts = Counter(label_of[n] for n in strat.names.tolist())
    assert uni_counts != strat_counts


def test_count_instead_of_fraction(uneven):
    names, labels = uneven
    plan = supervised_plan(sorted_catalog(names, labels), seed=2, count=500, num_shards=7)
    assert plan.num_examples == 500
    assert plan.fraction == f"500/{len(names)}"
    assert plan.shard_lengths() == shard_sizes(500, 7)
    expected = rule_quotas(dict(Counter(labels)), Fraction(500, len(names)))
    label_of = dict(zip(names, labels))
    got = Counter(label_of[n] for n in plan.names.tolist())
    assert {c: got.get(c, 0) for c in expected} == expected


def test_default_shard_count_and_dealing(uneven):
    names, labels = uneven
    plan = supervised_plan(sorted_catalog(names, labels), seed=1, fraction="0.1", source_shards=40)
    n = plan.num_examples
    S = default_num_shards(n, 40, len(names))
    assert S == (n * 40) // len(names) and S > 1
    assert plan.num_shards == S
    assert plan.shard_lengths() == shard_sizes(n, S)
    # Sorted by (shard, index), indices 0..len-1 in every shard, blocks contiguous.
    assert np.all(np.diff(plan.shards) >= 0)
    for s, length in enumerate(shard_sizes(n, S)):
        assert plan.indices[plan.shards == s].tolist() == list(range(length))
    unsup = unsupervised_plan(sorted_catalog(names), seed=0, source_shards=40)
    assert unsup.num_shards == 40 and unsup.num_examples == len(names)
    assert sorted(unsup.names.tolist()) == sorted(names)
    assert unsup.shard_lengths() == shard_sizes(len(names), 40)


@pytest.mark.parametrize("sampling", ["stratified", "uniform"])
def test_plan_ignores_input_order(uneven, sampling):
    names, labels = uneven
    a = supervised_plan(
        sorted_catalog(names, labels), seed=4, fraction="0.1", sampling=sampling, source_shards=40
    )
    rows = list(zip(names, labels))
    random.Random(99).shuffle(rows)
    b = supervised_plan(
        sorted_catalog([r[0] for r in rows], [r[1] for r in rows]),
        seed=4,
        fraction="0.1",
        sampling=sampling,
        source_shards=40,
    )
    assert a.names.tolist() == b.names.tolist()
    assert a.shards.tolist() == b.shards.tolist()
    assert a.indices.tolist() == b.indices.tolist()
    assert a.sha256() == b.sha256()
    ua = unsupervised_plan(sorted_catalog(names), seed=7, num_shards=9)
    ub = unsupervised_plan(sorted_catalog([r[0] for r in rows]), seed=7, num_shards=9)
    assert ua.to_csv_bytes() == ub.to_csv_bytes()


def test_seed_changes_the_plan(uneven):
    names, labels = uneven
    a = supervised_plan(sorted_catalog(names, labels), seed=1, fraction="0.1")
    b = supervised_plan(sorted_catalog(names, labels), seed=2, fraction="0.1")
    assert a.sha256() != b.sha256()
    assert (
        unsupervised_plan(sorted_catalog(names), seed=0).sha256()
        != unsupervised_plan(sorted_catalog(names), seed=1).sha256()
    )


# --------------------------------------------------------------------------- the documented algorithm


def ref_key(purpose: str, seed: int, name: str) -> int:
    """Step 2 of the documented algorithm, from its text."""
    digest = hashlib.sha256(f"ssl-imagenet-splits:v1:{purpose}:{seed}:{name}".encode())
    return int.from_bytes(digest.digest()[:8], "big")


def ref_plan(
    records,
    *,
    seed,
    fraction=None,
    count=None,
    sampling="stratified",
    num_shards=None,
    source_shards=1,
    key=ref_key,
):
    """The module docstring / README algorithm, re-derived with hashlib and sorted()."""
    N = len(records)
    if count is None:
        f = Fraction(str(fraction))
        n = math.floor(N * f)
    else:
        f, n = Fraction(count, N), count
    sel = {name: (key("select", seed, name), name) for name, _ in records}
    if sampling == "uniform":
        chosen = sorted(sel, key=sel.get)[:n]
    else:
        sizes = Counter(label for _, label in records)
        quotas = rule_quotas(dict(sizes), f)
        chosen = []
        for label in sorted(sizes):
            members = sorted((nm for nm, lb in records if lb == label), key=sel.get)
            chosen += members[: quotas[label]]
    ordered = sorted(chosen, key=lambda nm: (key("order", seed, nm), nm))
    S = num_shards or max(1, n * source_shards // N)
    return deal(ordered, S)


def deal(ordered, S):
    n = len(ordered)
    rows, pos = [], 0
    for s in range(S):
        size = n // S + (1 if s < n % S else 0)
        rows += [(ordered[pos + i], s, i) for i in range(size)]
        pos += size
    return rows


def plan_rows(plan):
    return list(zip(plan.names.tolist(), plan.shards.tolist(), plan.indices.tolist()))


@pytest.fixture(scope="module")
def few():
    """A few dozen records, four uneven classes, names that sort differently by
    code point than by any locale (capitals, accents)."""
    rng = random.Random(3)
    records = []
    for label, size in ((1, 7), (2, 13), (3, 19), (4, 21)):
        for k in range(size):
            stem = rng.choice(["n0", "N0", "é0", "z0"])
            records.append((f"{stem}{label}_{k * 37 % 101}.JPEG", label))
    rng.shuffle(records)
    assert len({r[0] for r in records}) == len(records) == 60
    return records


@pytest.mark.parametrize(
    "kw",
    [
        {"seed": 1, "fraction": "0.25", "num_shards": 4},
        {"seed": 2, "fraction": "0.1", "num_shards": 2},
        {"seed": 3, "fraction": "0.5", "source_shards": 8},  # default S = floor(30 * 8 / 60) = 4
        {"seed": 4, "count": 17, "num_shards": 5},
        {"seed": 5, "fraction": "0.3", "sampling": "uniform", "num_shards": 3},
    ],
)
def test_supervised_matches_independent_reimplementation(few, kw):
    names = [r[0] for r in few]
    labels = [r[1] for r in few]
    got = supervised_plan(sorted_catalog(names, labels), **kw)
    assert plan_rows(got) == ref_plan(few, **kw)


@pytest.mark.parametrize("seed, S", [(0, 1), (0, 7), (11, 60)])
def test_unsupervised_matches_independent_reimplementation(few, seed, S):
    names = [r[0] for r in few]
    ordered = sorted(names, key=lambda nm: (ref_key("order", seed, nm), nm))
    assert plan_rows(unsupervised_plan(sorted_catalog(names), seed=seed, num_shards=S)) == deal(
        ordered, S
    )


def test_key_ties_are_broken_by_name_in_code_point_order(few):
    # Ties never happen with SHA-256 in practice; force them to test the documented rule.
    def tied(names, purpose, seed):
        return np.zeros(len(names), dtype=np.uint64)

    names = [r[0] for r in few]
    labels = [r[1] for r in few]

    def flat(purpose, seed, name):
        return 0

    for kw in (
        {"seed": 1, "fraction": "0.25", "num_shards": 3},
        {"seed": 1, "fraction": "0.25", "num_shards": 3, "sampling": "uniform"},
    ):
        got = plan_rows(supervised_plan(sorted_catalog(names, labels), keys=tied, **kw))
        assert got == ref_plan(few, key=flat, **kw)
    uni = supervised_plan(
        sorted_catalog(names, labels), seed=1, fraction="0.25", sampling="uniform", keys=tied
    )
    assert uni.names.tolist() == sorted(names)[:15]  # "N0..." < "n0..." < "z0..." < "é0..."


def test_hash_keys_are_the_documented_keys(few):
    names = [r[0] for r in few]
    for purpose in ("select", "order"):
        keys = split_algorithm.hash_keys(names, purpose, 42)
        assert keys.dtype == np.uint64
        assert [int(k) for k in keys] == [ref_key(purpose, 42, n) for n in names]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"seed": 1}, "exactly one of fraction and count"),
        ({"seed": 1, "fraction": "0.1", "count": 3}, "exactly one of fraction and count"),
        ({"seed": 1, "count": 0}, r"count must be in 1\.\.60"),
        ({"seed": 1, "count": 61}, r"count must be in 1\.\.60"),
        ({"seed": 1, "fraction": "0.01"}, "is 0 records"),
        ({"seed": 1, "fraction": "0.1", "sampling": "random"}, "sampling must be one of"),
        ({"seed": 1, "fraction": "0.1", "num_shards": 7}, r"num_shards must be in 1\.\.6"),
    ],
)
def test_supervised_plan_rejects(few, kw, message):
    with pytest.raises(PlanError, match=message):
        supervised_plan(sorted_catalog([r[0] for r in few], [r[1] for r in few]), **kw)


def test_plans_reject_duplicate_names_and_empty_catalogs():
    with pytest.raises(PlanError, match="duplicate file name in the catalog: b"):
        supervised_plan(sorted_catalog(["a", "b", "c", "b"], [1, 1, 2, 2]), seed=1, fraction="0.5")
    with pytest.raises(PlanError, match="duplicate file name in the catalog: a"):
        unsupervised_plan(sorted_catalog(["a", "a"]))
    with pytest.raises(PlanError, match="catalog is empty"):
        unsupervised_plan(sorted_catalog([]))


# --------------------------------------------------------------------------- plan files


def test_csv_round_trip(few):
    plan = supervised_plan(
        sorted_catalog([r[0] for r in few], [r[1] for r in few]),
        seed=1,
        fraction="0.5",
        num_shards=4,
    )
    data = plan.to_csv_bytes()
    assert data.decode().splitlines()[0] == f"{plan.names[0]},0,0"
    assert plan.sha256() == hashlib.sha256(data).hexdigest()
    names, shards, indices = parse_plan_text(data.decode(), "mem")
    assert plan_rows(plan) == list(zip(names.tolist(), shards.tolist(), indices.tolist()))


def test_read_published_plan_file():
    plan = read_plan_file(str(SPLIT1), seed=1)
    assert plan.split == "train128116.1"
    assert plan.num_examples == 128_116 and plan.num_shards == 102
    assert plan.shard_lengths() == [1257] * 4 + [1256] * 98
    assert plan.sampling == "published" and plan.source == str(SPLIT1)
    # Written back, the plan is the published file byte for byte.
    assert plan.to_csv_bytes() == SPLIT1.read_bytes()
    assert plan.sha256() == SPLIT1_SHA
    assert plan.names[0] == "n01770081_5195.JPEG"


def test_plan_file_rows_come_back_sorted_by_position():
    text = "c,1,0\r\nb,0,1\r\n\r\na,0,0\n  \nd , 1 , 1\n"
    names, shards, indices = parse_plan_text(text, "mem")
    assert names.tolist() == ["a", "b", "c", "d"]
    assert shards.tolist() == [0, 0, 1, 1]
    assert indices.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    "text, pattern",
    [
        pytest.param("", r"mem: the plan file is empty", id="empty"),
        pytest.param("\n  \n\n", r"mem: the plan file is empty", id="blank-lines-only"),
        pytest.param(
            "a,0,0\nb;0;1\n",
            r"line 2: expected 3 comma-separated fields \(filename,shard,index\), found 1$",
            id="wrong-separator",
        ),
        pytest.param(
            "a,0,0,x\n", r"line 1: expected 3 comma-separated fields .*, found 4", id="four-fields"
        ),
        pytest.param(
            "filename,shard,index\na,0,0\n",
            r"line 1: the shard \(field 2\) is not a non-negative integer",
            id="header",
        ),
        pytest.param(
            "a,0,0\nb,0,x\n",
            r"line 2: the index \(field 3\) is not a non-negative integer",
            id="not-a-number",
        ),
        pytest.param("a,-1,0\n", r"line 1: the shard .*not a non-negative", id="negative"),
        pytest.param(",0,0\n", r"line 1: the file name \(field 1\) is empty", id="no-name"),
        pytest.param(
            "a,0,0\nb,\u00b2,1\n",
            r"line 2: the shard \(field 2\) is not a non-negative integer",
            id="unicode-digit",
        ),
        pytest.param(
            f"a,0,0\nb,{MAX_SHARD_COUNT},0\n",
            rf"line 2: the shard is too large \(at most {MAX_SHARD_COUNT - 1}\)",
            id="shard-too-large",
        ),
        pytest.param(
            f"a,0,0\nb,0,{2**31}\n",
            rf"line 2: the index is too large \(at most {2**31 - 1}\)",
            id="index-too-large",
        ),
        pytest.param(
            "a,0,0\nb,0,1\na,1,0\n",
            r"lines 1 and 3 give the same file name",
            id="duplicate-name",
        ),
        pytest.param(
            "a,0,0\nb,0,0\n",
            r"position shard 0 index 0 is used twice \(lines 1 and 2\)",
            id="duplicate-position",
        ),
        pytest.param(
            "a,0,0\nb,2,0\n", r"shards must be 0\.\.2; missing shard\(s\) \[1\]", id="shard-gap"
        ),
        pytest.param(
            "a,1,0\nb,1,1\n",
            r"shards must be 0\.\.1; missing shard\(s\) \[0\]",
            id="shards-not-from-0",
        ),
        pytest.param(
            "a,0,0\nb,0,2\n",
            r"indices in shard 0 must be 0\.\.1 without gaps; index 1 is missing "
            r"\(line 2 has index 2\)",
            id="index-gap",
        ),
        pytest.param(
            "a,0,0\nb,1,1\n",
            r"indices in shard 1 .*index 0 is missing \(line 2",
            id="index-not-from-0",
        ),
    ],
)
def test_plan_file_checks(text, pattern):
    with pytest.raises(PlanError) as err:
        parse_plan_text(text, "mem")
    assert re.search(pattern, str(err.value)), str(err.value)
    assert str(err.value).startswith("mem: ")


def test_plan_table_checks_in_arrow_what_the_text_parser_checks():
    """Well-formed lines are parsed in Arrow; a name twice (the lines otherwise
    well-formed) is still the text parser's error, with line numbers."""
    table = split_algorithm.parse_plan_table(b"c,1,0\nb,0,1\na,0,0\nd,1,1\n", "mem")
    assert table.column("filename").to_pylist() == ["a", "b", "c", "d"]
    with pytest.raises(PlanError, match=r"(?s)mem: .*lines 1 and 3 give the same file name"):
        split_algorithm.parse_plan_table(b"a,0,0\nb,0,1\na,1,0\n", "mem")


def test_many_malformed_lines_give_a_short_message():
    text = "".join(f"n0_{i}.JPEG\t0\t{i}\n" for i in range(5000))  # tab-separated
    with pytest.raises(PlanError) as err:
        parse_plan_text(text, "mem")
    msg = str(err.value)
    assert "line 1: expected 3 comma-separated fields (filename,shard,index), found 1" in msg
    assert "JPEG" not in msg  # the lines' text is never quoted
    assert len(msg.splitlines()) <= 12, msg[:500]
    assert "5,000" in msg or "5000" in msg  # says how many in all


def test_read_plan_file_errors(tmp_path):
    with pytest.raises(PlanError, match="does not exist"):
        read_plan_file(str(tmp_path / "nope.csv"))
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("caf\xe9,0,0\n".encode("latin-1"))
    with pytest.raises(PlanError, match="not UTF-8"):
        read_plan_file(str(bad))


def test_parse_plan_table_refuses_bytes_that_are_not_utf8_by_position():
    """A plan file read by the build or the verifier (not through read_plan_file):
    a PlanError saying where, never the bytes."""
    raw = b"a,0,0\nb,0,1\nS3cr\xe9t,0,2\n"
    with pytest.raises(PlanError) as err:
        split_algorithm.parse_plan_table(raw, "plan.csv")
    assert str(err.value) == "plan.csv: not UTF-8 text (line 3, byte offset 16)"
    assert "S3cr" not in str(err.value)


def test_published_plan_reports_count_and_first_missing_names():
    plan = split_algorithm.Plan(
        split="x",
        kind="supervised",
        names=np.asarray(["a", "zz1", "b", "zz2", "zz3", "zz4", "zz5", "zz6"], dtype=object),
        shards=np.zeros(8, np.int32),
        indices=np.arange(8, dtype=np.int32),
        num_shards=1,
        source="plan.csv",
    )
    names = ["a", "b"] + [f"zz{i}" for i in range(1, 7)]
    full = split_algorithm.sorted_catalog(names, [1, 2] + [3] * 6)
    checked = split_algorithm.published_plan(plan, full, {3: "n003"})
    assert checked.class_counts == {"1": 1, "2": 1, "n003": 6}
    with pytest.raises(PlanError) as err:
        split_algorithm.published_plan(
            plan, split_algorithm.sorted_catalog(["a", "b", "zz2"], [1, 2, 3])
        )
    msg = str(err.value)
    assert "plan plan.csv: 5 of 8 names are not in the source catalog" in msg
    # Named by position (a file's lines are never quoted): zz1, zz3, zz4, zz5, zz6.
    assert "e.g. the names at shard 0 index 1, shard 0 index 4, shard 0 index 5, " in msg
    assert "zz" not in msg


# --------------------------------------------------------------------------- the plan CLI


@pytest.fixture
def tiny_catalog(tmp_path, few):
    """catalog.parquet + report.json as the validation job writes them (rows in
    an arbitrary order, spread over 6 source shards)."""
    cat = tmp_path / "catalog"
    rows = sorted(few, key=lambda r: hashlib.md5(r[0].encode()).hexdigest())
    n = len(rows)
    table = pa.table(
        {
            "filename": [r[0] for r in rows],
            "label": [r[1] for r in rows],
            "synset": [f"n{r[1]:08d}" for r in rows],
            "file": [f"/src/train-{i % 6:05d}-of-00006" for i in range(n)],
            "record": [i // 6 for i in range(n)],
            "offset": [100 * (i // 6) for i in range(n)],
            "length": [100] * n,
            "data_crc": [0] * n,
        },
        schema=SCHEMA,
    )
    write_table(str(cat / CATALOG_FILE), table)
    report = {"num_shards": 6, "synsets": {str(c): f"n{c:08d}" for c in range(1, 5)}}
    (cat / REPORT_FILE).write_text(json.dumps(report))
    return cat


def test_make_plans_and_write_plans(tiny_catalog, tmp_path, few):
    req = plan_cli.PlanRequest(seeds=(1, 2), fraction="0.5", unsupervised=True)
    plans = plan_cli.make_plans(str(tiny_catalog), req)
    assert [p.split for p in plans] == ["train30.1", "train30.2", "train"]
    names = [r[0] for r in few]
    labels = [r[1] for r in few]
    direct = supervised_plan(sorted_catalog(names, labels), seed=1, fraction="0.5", source_shards=6)
    assert plans[0].sha256() == direct.sha256()
    assert plans[0].num_shards == 3  # floor(30 * 6 / 60)
    assert plans[2].num_shards == 6
    assert plans[0].class_counts == {
        f"n{c:08d}": k for c, k in rule_quotas(dict(Counter(labels)), Fraction(1, 2)).items()
    }
    out = tmp_path / "plans"
    summaries = plan_cli.write_plans(plans, str(out))
    for plan, s in zip(plans, summaries):
        path = out / f"{plan.split}.{plan.sha256()[:16]}.csv"
        assert s.plan_uri == str(path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == s.plan_sha256 == plan.sha256()
        assert s.shard_lengths == shard_sizes(plan.num_examples, plan.num_shards)


def test_plan_cli_checks_published_files_against_the_catalog(tiny_catalog, tmp_path, few, capsys):
    good = supervised_plan(
        sorted_catalog([r[0] for r in few], [r[1] for r in few]),
        seed=9,
        fraction="0.25",
        num_shards=2,
    )
    good_file = tmp_path / "good.txt"
    good_file.write_bytes(good.to_csv_bytes())
    out = tmp_path / "plans"
    rc = plan_cli.main(
        [
            f"--catalog_dir={tiny_catalog}",
            f"--out_dir={out}",
            "--seeds=3",
            f"--sharding_file=3={good_file}",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out.split("\t")
    assert printed[0] == "train15.3" and printed[3] == good.sha256()
    # Kept as given: the plan file written is the published file, byte for byte.
    assert (out / f"train15.3.{good.sha256()[:16]}.csv").read_bytes() == good_file.read_bytes()

    bad_file = tmp_path / "bad.txt"
    lines = good.to_csv_bytes().decode().splitlines()
    lines[2] = "n99999999_1.JPEG," + lines[2].split(",", 1)[1]
    lines[5] = "n99999999_2.JPEG," + lines[5].split(",", 1)[1]
    bad_file.write_text("\n".join(lines) + "\n")
    rc = plan_cli.main(
        [
            f"--catalog_dir={tiny_catalog}",
            f"--out_dir={tmp_path / 'p2'}",
            "--seeds=3",
            f"--sharding_file=3={bad_file}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert (
        "2 of 15 names are not in the source catalog, e.g. the names at shard 0 index 2, "
        "shard 0 index 5" in err
    )
    assert "n99999999" not in err  # positions, never the file's text
    assert not (tmp_path / "p2").exists()


def test_plan_cli_rejects_bad_sharding_file_argument(tiny_catalog, tmp_path, capsys):
    rc = plan_cli.main(
        [f"--catalog_dir={tiny_catalog}", f"--out_dir={tmp_path}", "--sharding_file=/no/seed.txt"]
    )
    assert rc == 1
    assert "--sharding_file takes SEED=URI" in capsys.readouterr().err
    # ASCII digits only: str.isdigit() also takes '³' (int() refuses it) and '٣' (read as 3).
    for seed in ("³", "٣"):
        with pytest.raises(PlanError, match="--sharding_file takes SEED=URI"):
            plan_cli.parse_sharding_files([f"{seed}=/p/split3.txt"])


def test_storage_reads_plan_files_by_uri(tmp_path):
    # read_plan_file goes through storage (local paths here; gs:// in test_build).
    p = tmp_path / "p.csv"
    p.write_text("b,0,0\na,0,1\n")
    plan = read_plan_file(storage.normalize(str(p)), split="custom")
    assert plan.split == "custom" and plan.names.tolist() == ["b", "a"]


# --------------------------------------------------------------------------- name lists (issue 15)


@pytest.mark.parametrize(
    "text, names, lines",
    [
        ("a.JPEG\nb.JPEG\n", ["a.JPEG", "b.JPEG"], [1, 2]),
        ("a.JPEG\r\n\r\n  b.JPEG  \n", ["a.JPEG", "b.JPEG"], [1, 3]),  # CRLF, blank lines, spaces
        ("z\nA\né\n", ["z", "A", "é"], [1, 2, 3]),  # file order kept
    ],
)
def test_parse_name_list(text, names, lines):
    got, got_lines = split_algorithm.parse_name_list(text, "names.txt")
    assert got.tolist() == names and got_lines.tolist() == lines


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", r"names\.txt: the name list is empty"),
        ("\n  \n", r"names\.txt: the name list is empty"),
        (
            "a\nb\na\nc\nb\n",
            r"names\.txt: 2 duplicate name\(s\) in the name list: lines 1 and 3; "
            r"lines 2 and 5$",
        ),
        (
            "a\nn01_1.JPEG,0,0\n",
            r"names\.txt: malformed name list:\n  line 2: a file name must not contain ',' "
            r"\(a filename,shard,index file is a sharding file, not a name list\)$",
        ),
    ],
)
def test_name_list_checks(text, pattern):
    with pytest.raises(PlanError, match=pattern):
        split_algorithm.parse_name_list(text, "names.txt")


def test_many_comma_lines_are_counted():
    text = "".join(f"n{i},0,{i}\n" for i in range(30))
    with pytest.raises(PlanError, match=r"line 5: .*\n  \.\.\. 30 such lines in all"):
        split_algorithm.parse_name_list(text, "x")


def test_named_plan_takes_exactly_the_listed_records_in_order_key_order(few):
    names = [r[0] for r in few]
    labels = [r[1] for r in few]
    listed = [n for n in names if n.endswith(("1.JPEG", "3.JPEG", "5.JPEG"))][::-1]
    assert 5 < len(listed) < len(names)
    plan = split_algorithm.named_plan(
        listed,
        split_algorithm.sorted_catalog(names, labels),
        label="mine",
        origin="names.txt",
        num_shards=3,
    )
    assert plan.split == f"train{len(listed)}.mine" and plan.kind == "supervised"
    assert plan.seed is None and plan.sampling == "names" and plan.source == "names.txt"
    assert plan.fraction == f"{len(listed)}/{len(names)}"
    # The README's rule, re-derived: order key with seed 0 (ties by name), dealt into S shards.
    ordered = sorted(listed, key=lambda nm: (ref_key("order", 0, nm), nm))
    assert plan_rows(plan) == deal(ordered, 3)
    label_of = dict(zip(names, labels))
    assert plan.class_counts == {
        str(k): v for k, v in sorted(Counter(label_of[n] for n in listed).items())
    }
    # The same list in any order, or a shuffled catalog: the same plan.
    again = split_algorithm.named_plan(
        sorted(listed),
        split_algorithm.sorted_catalog(names[::-1], labels[::-1]),
        label="mine",
        origin="other.txt",
        num_shards=3,
    )
    assert again.sha256() == plan.sha256()
    # Default shard count: the source's shard size kept.
    default = split_algorithm.named_plan(
        listed,
        split_algorithm.sorted_catalog(names, labels),
        label="mine",
        origin="x",
        source_shards=12,
    )
    assert default.num_shards == max(1, len(listed) * 12 // len(names))


def test_named_plan_reports_missing_names_with_line_numbers(few):
    names = [r[0] for r in few]
    labels = [r[1] for r in few]
    text = "\n".join([names[0], "n99_1.JPEG", names[1], "", "n99_2.JPEG"]) + "\n"
    listed, lines = split_algorithm.parse_name_list(text, "names.txt")
    with pytest.raises(PlanError) as err:
        split_algorithm.named_plan(
            listed,
            split_algorithm.sorted_catalog(names, labels),
            label="mine",
            origin="names.txt",
            list_lines=lines,
        )
    assert str(err.value) == (
        "names.txt: 2 of 4 names are not in the source catalog (60 "
        "records), e.g. the names on lines 2, 5"
    )


@pytest.mark.parametrize("label", ["3", "Mine", "my.list", "", "a" * 33, "_x"])
def test_named_plan_rejects_labels_that_could_collide(few, label):
    with pytest.raises(PlanError, match="name list label"):
        split_algorithm.named_plan(
            [few[0][0]],
            split_algorithm.sorted_catalog([r[0] for r in few], [r[1] for r in few]),
            label=label,
            origin="x",
        )


def test_make_plans_with_protocols_and_name_lists(tiny_catalog, tmp_path, few):
    from beam_jobs.planning import protocols

    names = [r[0] for r in few]
    lst = tmp_path / "names.txt"
    lst.write_text("\n".join(names[:12]) + "\n")
    req = plan_cli.PlanRequest(
        seeds=(1,), fraction="0.5", unsupervised=False, name_lists=(("mine", str(lst)),)
    )
    plans = plan_cli.make_plans(str(tiny_catalog), req)
    assert [p.split for p in plans] == ["train30.1", "train12.mine"]
    assert sorted(plans[1].names.tolist()) == sorted(names[:12])
    assert plans[1].class_counts and set(plans[1].class_counts) <= {
        f"n{c:08d}" for c in range(1, 5)
    }

    # fixmatch: the seeds' published files (names not in this catalog: refused, named).
    files, lists = plan_cli.expand_protocol(plan_cli.PlanRequest(seeds=(2, 5), protocol="fixmatch"))
    assert files == {2: "published:fixmatch/split2", 5: "published:fixmatch/split5"}
    assert lists == []
    with pytest.raises(PlanError, match="128,116 of 128,116 names are not in the source catalog"):
        plan_cli.make_plans(
            str(tiny_catalog), plan_cli.PlanRequest(seeds=(2,), protocol="fixmatch")
        )
    with pytest.raises(
        PlanError, match=r"published splits for seeds \[1, 2, 3, 4, 5\] only, not \[7\]"
    ):
        plan_cli.expand_protocol(plan_cli.PlanRequest(seeds=(1, 7), protocol="fixmatch"))
    with pytest.raises(PlanError, match=r"seeds \[3\] have a sharding file and protocol fixmatch"):
        plan_cli.expand_protocol(
            plan_cli.PlanRequest(seeds=(3,), protocol="fixmatch", sharding_files=((3, "/x.txt"),))
        )
    _, lists = plan_cli.expand_protocol(plan_cli.PlanRequest(seeds=(), protocol="simclr"))
    assert lists == [
        ("simclr", "published:simclr/1percent"),
        ("simclr", "published:simclr/10percent"),
    ]
    with pytest.raises(protocols.PublishedDataError, match="unknown protocol 'nope'"):
        plan_cli.expand_protocol(plan_cli.PlanRequest(protocol="nope"))
    # Two lists of one size under one label would be one split: refused.
    with pytest.raises(PlanError, match="two plans would write the same split train12.mine"):
        plan_cli.make_plans(
            str(tiny_catalog),
            plan_cli.PlanRequest(
                seeds=(), unsupervised=False, name_lists=(("mine", str(lst)), ("mine", str(lst)))
            ),
        )


def test_plan_cli_name_list_and_protocol(tiny_catalog, tmp_path, few, capsys):
    names = [r[0] for r in few]
    lst = tmp_path / "names.txt"
    lst.write_text("\n".join(names[5:25]) + "\n")
    out = tmp_path / "plans"
    rc = plan_cli.main(
        [
            f"--catalog_dir={tiny_catalog}",
            f"--out_dir={out}",
            "--seeds=",
            f"--name_list=mine={lst}",
            "--num_shards=4",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    split, n, shards, sha, uri = capsys.readouterr().out.strip().split("\t")
    assert (split, n, shards) == ("train20.mine", "20", "4")
    rows = [line.split(",") for line in open(uri).read().splitlines()]
    assert sorted(r[0] for r in rows) == sorted(names[5:25])
    assert [int(r[1]) for r in rows] == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    # A SimCLR protocol plans no seeded split by default; its names are not in this catalog.
    rc = plan_cli.main(
        [f"--catalog_dir={tiny_catalog}", f"--out_dir={out}", "--protocol=simclr_1pct"]
    )
    err = capsys.readouterr().err
    assert (
        rc == 1
        and "published:simclr/1percent: 12,811 of 12,811 names are not in the "
        "source catalog (60 records), e.g. the names on lines 1, 2, 3, 4, 5"
        in err
    ), err
    rc = plan_cli.main([f"--catalog_dir={tiny_catalog}", f"--out_dir={out}", "--name_list=x"])
    assert rc == 1 and "--name_list takes LABEL=URI" in capsys.readouterr().err


def test_read_plan_file_of_a_shipped_list():
    plan = read_plan_file("published:fixmatch/split1", seed=1)
    assert plan.source == "published:fixmatch/split1" and plan.split == "train128116.1"
    assert plan.sha256() == SPLIT1_SHA and plan.to_csv_bytes() == SPLIT1.read_bytes()


def test_keys_computed_in_worker_processes_are_the_same(monkeypatch):
    """Many names: this process and one worker per extra core each compute a
    share of the SHA-256 keys (the workers fed the names' bytes through pipes);
    the keys are those of hash_keys, in order, whatever bytes the names hold."""
    odd = ["é😀.JPEG", "a\nb.JPEG", "c,d.JPEG", "", "x\x00y"]
    names = [f"n{i % 7:08d}_{i}.JPEG" for i in range(5003)] + odd
    jobs = [("select", 1), ("select", 2), ("order", 0), ("select", 1)]
    monkeypatch.setattr(key_workers, "PARALLEL_MIN_NAMES", 100)
    got = key_workers.precompute_keys(names, jobs, workers=3)
    assert sorted(got) == sorted(set(jobs))
    for (purpose, seed), keys in got.items():
        assert keys.dtype == np.uint64
        assert keys.tolist() == split_algorithm.hash_keys(names, purpose, seed).tolist()


def test_in_process_keys_and_sorts_are_the_reference_ones(uneven):
    """The fast paths planning takes compute what the documented definitions do:
    keys from Arrow's bytes (hash_keys's values) and the sort by key (stable:
    ties by position) with and without ties."""
    names = list(uneven[0]) + ["é😀.JPEG", "a\nb.JPEG", ""]
    for purpose, seed in (("select", 3), ("order", 0)):
        want = split_algorithm.hash_keys(names, purpose, seed)
        assert split_algorithm.fast_keys(names, purpose, seed).tolist() == want.tolist()
        assert split_algorithm.fast_keys(pa.array(names), purpose, seed).tolist() == want.tolist()
    rng = np.random.default_rng(1)
    for keys in (
        rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64),
        rng.integers(0, 40, 5000).astype(np.uint64),  # many ties
    ):
        got = split_algorithm._argsort_by_key(keys)
        assert got.tolist() == np.argsort(keys, kind="stable").tolist()


def test_csv_bytes_are_the_documented_lines(uneven, tiny_catalog):
    """Plan files (made in Arrow) are the lines ``f"{name},{shard},{index}\\n"``,
    for plans holding Arrow names (the planner's) or arrays of str."""
    names, labels = uneven
    plans = [
        unsupervised_plan(sorted_catalog(names), seed=4, num_shards=7),  # indices past 100
        supervised_plan(
            sorted_catalog(names, labels), seed=2, count=150, num_shards=13
        ),  # shards past 10
        split_algorithm.Plan(
            split="x",
            kind="supervised",
            names=np.asarray(["é😀.JPEG", "b", "a"], dtype=object),
            shards=np.asarray([0, 0, 1], np.int32),
            indices=np.asarray([0, 1, 0], np.int32),
            num_shards=2,
        ),
        *plan_cli.make_plans(str(tiny_catalog), plan_cli.PlanRequest(seeds=(1,))),
    ]
    for plan in plans:
        rows = zip(plan.names.tolist(), plan.shards.tolist(), plan.indices.tolist())
        want = "".join(f"{n},{s},{i}\n" for n, s, i in rows).encode()
        assert plan.to_csv_bytes() == want, plan.split
        assert plan.sha256() == hashlib.sha256(want).hexdigest()


def test_records_from_known_rows_are_those_of_a_lookup(tiny_catalog, tmp_path):
    """write_records takes the catalog rows a plan was made from; the files are
    byte for byte those of looking every name up (plans without rows). Rows
    that are not this catalog's (another catalog's order) are not used."""
    import dataclasses

    import pyarrow.parquet as pq

    from beam_jobs.layout import records_dir, records_uri

    req = plan_cli.PlanRequest(seeds=(1, 2), fraction="0.5", unsupervised=True)
    plans = plan_cli.make_plans(str(tiny_catalog), req)
    assert all(p.catalog_rows() is not None for p in plans)
    looked_up = [dataclasses.replace(p) for p in plans]  # the same plans, rows unknown
    assert all(p.catalog_rows() is None for p in looked_up)
    other = tmp_path / "other"
    shutil.copytree(tiny_catalog, other)
    # The same records in name order: the planner only checks the order then.
    table = pq.read_table(tiny_catalog / CATALOG_FILE)
    write_table(str(other / CATALOG_FILE), table.sort_by("filename"))
    plans_of_other = plan_cli.make_plans(str(other), req)
    for p, q in zip(plans_of_other, plans):
        assert p.sha256() == q.sha256()
        assert p.catalog_rows().tolist() != q.catalog_rows().tolist()
    assert len(plan_cli.write_records(plans, str(tiny_catalog))) == 3
    copy = tmp_path / "copy"
    shutil.copytree(tiny_catalog, copy)
    shutil.rmtree(records_dir(str(copy)))
    assert len(plan_cli.write_records(looked_up, str(copy))) == 3
    for name in sorted(os.listdir(records_dir(str(tiny_catalog)))):
        a = Path(records_dir(str(tiny_catalog)), name).read_bytes()
        assert a == Path(records_dir(str(copy)), name).read_bytes(), name
        # Dictionaries only where values repeat (not per-row names, offsets, CRCs).
        meta = pq.ParquetFile(Path(records_dir(str(copy)), name)).metadata.row_group(0)
        columns = [meta.column(i) for i in range(meta.num_columns)]
        assert {c.path_in_schema for c in columns if c.has_dictionary_page} == {"shard", "file"}
    # Plans of the first catalog written against the other: its rows, found by name.
    assert len(plan_cli.write_records(plans, str(other))) == 3
    by_name = {r["filename"]: r for r in table.to_pylist()}
    for p in plans_of_other:
        got = pq.read_table(records_uri(str(other), p.sha256()))
        assert got.column("filename").to_pylist() == p.names.tolist()
        for row in got.to_pylist():
            want = by_name[row["filename"]]
            assert (row["file"], row["offset"]) == (want["file"], want["offset"])
    # A name the catalog lacks: named by its place in the plan, never by its text.
    names = plans[0].names.copy()
    names[3] = "secret-name"
    stray = dataclasses.replace(plans[0], names=names)
    shard, index = int(stray.shards[3]), int(stray.indices[3])
    with pytest.raises(PlanError, match=rf"1 of {len(names)} names are not in the source ca") as e:
        plan_cli.write_records([stray], str(copy))
    assert f"e.g. the names at shard {shard} index {index}" in str(e.value)
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("share", [1.0, 0.3, 0.05, 0.0])
def test_lowest_keys_sorting_only_candidates_is_sorting_all(share):
    """Each group's quota of lowest keys, ties by position: the same positions
    whatever share of the key range is sorted first (groups short of their
    quota there, ties, a group taken whole, an empty quota)."""
    rng = np.random.default_rng(7)
    n = 5000
    keys = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    keys[rng.integers(0, n, 300)] = keys[rng.integers(0, n, 300)]  # ties
    keys[:50] = np.uint64(2**64 - 1)  # group 0's first members: above any share
    group = np.sort(rng.integers(0, 40, n))
    sizes = np.bincount(group, minlength=40)
    quotas = np.minimum(sizes, rng.integers(0, 60, 40))
    quotas[3] = sizes[3]
    quotas[5] = 0
    by_key_then_position = np.lexsort((np.arange(n), keys))
    want = np.concatenate(
        [by_key_then_position[group[by_key_then_position] == g][: quotas[g]] for g in range(40)]
    )
    got = split_algorithm.lowest_keys(keys, group, quotas, share)
    assert got.tolist() == want.tolist()
