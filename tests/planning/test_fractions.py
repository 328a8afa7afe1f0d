"""Several fractions in one run (issue 20): the ``fractions`` param (resolve,
the trigger form's schema), planning every seed at each fraction
(``beam_jobs.planning.plans``), how the splits of one seed nest across fractions, the
plan CLI, and the "Add seeds" form of a manifest with several fractions.

The DAG end to end (one run builds FixMatch's three sizes for several seeds,
read back with the consumer's own file patterns) is in ``test_dag.py``.
"""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pytest

from beam_jobs.planning import algorithm as split_algorithm
from beam_jobs.planning import plans as plan_cli
from beam_jobs.planning.algorithm import PlanError, class_quotas, default_num_shards, split_size
from beam_jobs.source.catalog import CATALOG_FILE, REPORT_FILE, SCHEMA, write_table
from beam_jobs.source.synthetic import Spec, layout

OK = {"source_uri": "/data/imagenet", "output_uri": "/data/ssl"}
FIXMATCH_FRACTIONS = ("0.1", "0.05", "0.01")
SOURCE_SHARDS = 64  # the catalog's report says so: default shard counts differ per split


# --------------------------------------------------------------------------- the param


@pytest.mark.parametrize(
    "params, fraction, fractions",
    [
        ({}, "0.1", []),  # as every run before
        ({"fraction": 0.05}, "0.05", []),
        ({"fractions": []}, "0.1", []),
        ({"fractions": [""]}, "0.1", []),  # the form's box, left empty
        ({"fractions": [0.1, 0.05, 0.01]}, "0.1", ["0.1", "0.05", "0.01"]),  # --conf
        ({"fractions": ["0.1", " .05", "", "0.010 "]}, "0.1", ["0.1", "0.05", "0.01"]),  # the form
        ({"fractions": [0.01, 0.1]}, "0.01", ["0.01", "0.1"]),  # in the order given
        ({"fractions": [1, 0.5]}, "1", ["1", "0.5"]),
        ({"fractions": [0.05]}, "0.05", ["0.05"]),  # one: the same as fraction 0.05
        (
            {"fraction": 0.05, "fractions": [0.1, 0.05]},
            "0.1",
            ["0.1", "0.05"],
        ),  # fraction among them
        ({"protocol": "fixmatch", "fractions": [0.1]}, "0.1", ["0.1"]),
        ({"protocol": "simclr", "fractions": []}, "0.1", []),
        (
            {"fractions": [0.1, 0.05], "name_lists": {"mine": "/l/names.txt"}},
            "0.1",
            ["0.1", "0.05"],
        ),
        ({"fractions": [0.1, 0.05], "seeds": [3], "sharding_files": {}}, "0.1", ["0.1", "0.05"]),
    ],
)
def test_resolve_fractions(params, fraction, fractions):
    from ssl_splits.config import RunConfig, resolve

    cfg = resolve({**OK, **params})
    assert (cfg.fraction, cfg.fractions) == (fraction, fractions)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # the XCom round trip
    old = {k: v for k, v in cfg.to_dict().items() if k != "fractions"}  # an XCom of before
    assert (RunConfig.from_dict(old).fraction, RunConfig.from_dict(old).fractions) == (
        cfg.fraction,
        [],
    )


@pytest.mark.parametrize(
    "params, message",
    [
        ({"fractions": 0.1}, r"^fractions must be a list of numbers in \(0, 1\], got 0.1$"),
        ({"fractions": [0.1, 0]}, r"^fractions: item 2 \(0\): 0 is not in \(0, 1\]"),
        ({"fractions": [1.5]}, r"^fractions: item 1 \(1.5\): 1.5 is not in \(0, 1\]"),
        ({"fractions": ["5%"]}, r"^fractions: item 1 \('5%'\): '5%' is not a decimal number"),
        ({"fractions": ["0.1,0.05"]}, r"^fractions: item 1 \('0.1,0.05'\)"),
        ({"fractions": ["."]}, r"^fractions: item 1 \('.'\): '.' is not a decimal number"),
        ({"fractions": [True]}, r"^fractions: item 1 \(True\): True is not a number"),
        ({"fractions": [0.1, "0.10"]}, r"^fractions must not repeat: 0.1 and '0.10' are the same"),
        ({"fractions": [0.5] + [i / 100 for i in range(1, 11)]}, r"^fractions: at most 10, got 11"),
        (
            {"fraction": 0.05, "fractions": [0.1, 0.01]},
            r"^fraction=0.05 and fractions=\[0.1, 0.01\]: with fractions set, fraction is not used",
        ),
        (
            {"protocol": "fixmatch", "fractions": [0.1, 0.05, 0.01]},
            r"^fractions=\[0.1, 0.05, 0.01\]: protocol fixmatch reproduces FixMatch's published 10%",
        ),
        ({"protocol": "fixmatch", "fractions": [0.05]}, r"^fractions=\[0.05\]: protocol fixmatch"),
        (
            {"protocol": "simclr", "fractions": [0.1, 0.01]},
            r"^fractions=\[0.1, 0.01\] does not apply to protocol simclr",
        ),
        ({"protocol": "simclr_1pct", "fractions": [0.01]}, r"^fractions=\[0.01\] does not apply"),
        (
            {"seeds": [3], "sharding_files": {"3": "/p/split3.txt"}, "fractions": [0.1, 0.01]},
            r"^sharding_files and fractions=\[0.1, 0.01\] do not go together",
        ),
    ],
)
def test_resolve_refuses_fractions_that_make_no_sense(params, message):
    from ssl_splits.config import ConfigError, resolve

    with pytest.raises(ConfigError, match=message):
        resolve({**OK, **params})


@pytest.mark.parametrize(
    "value, ok",
    [
        ([0.1, 0.05, 0.01], True),
        (["0.1", "0.05", ""], True),
        ([" .5 "], True),
        ([], True),
        ([1], True),
        ([0], False),
        ([1.5], False),
        (["5%"], False),
        (["0.1,0.05"], False),
        (["x"], False),
        ([0.1] * 11, False),
    ],
)
def test_the_fractions_schema_takes_the_form_text_box_and_json_numbers(value, ok):
    """What Airflow checks when a run is triggered: the param's JSON schema."""
    from airflow.sdk.exceptions import ParamValidationError
    from ssl_splits.form import params

    param = params()["fractions"]
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_the_form_shows_fractions_as_a_text_box_beside_fraction():
    from ssl_splits.form import params

    form = params()
    schema = form["fractions"].schema
    assert form["fractions"].value == []
    assert schema["type"] == "array" and "type" not in schema["items"]  # a text box
    assert "section" not in schema  # with the common params
    names = list(form)
    assert names.index("fractions") == names.index("fraction") + 1
    assert "train64058.{seed}" in form["fractions"].description


# --------------------------------------------------------------------------- planning


def write_catalog(
    folder: Path, names: list[str], labels: list[int], source_shards: int = SOURCE_SHARDS
) -> str:
    """catalog.parquet + report.json as the validation job writes them."""
    n = len(names)
    table = pa.table(
        {
            "filename": names,
            "label": labels,
            "synset": [f"n{c:08d}" for c in labels],
            "file": [
                f"/src/train-{i % source_shards:05d}-of-{source_shards:05d}" for i in range(n)
            ],
            "record": [i // source_shards for i in range(n)],
            "offset": [100 * (i // source_shards) for i in range(n)],
            "length": [100] * n,
            "data_crc": [0] * n,
        },
        schema=SCHEMA,
    )
    write_table(str(folder / CATALOG_FILE), table)
    synsets = {str(c): f"n{c:08d}" for c in sorted(set(labels))}
    (folder / REPORT_FILE).write_text(json.dumps({"num_shards": source_shards, "synsets": synsets}))
    return str(folder)


@pytest.fixture(scope="module")
def source():
    """A synthetic ImageNet's names and labels: 20 classes of 40..60 records."""
    lay = layout(Spec(num_classes=20, min_per_class=40, max_per_class=60, train_shards=8, seed=3))
    records = [r for shard in lay.train for r in shard]
    return [n for n, _ in records], [c + 1 for _, c in records]


@pytest.fixture
def catalog(source, tmp_path):
    return write_catalog(tmp_path, *source)


def _sets(plans):
    return {p.split: set(p.names.tolist()) for p in plans}


def test_one_request_plans_every_seed_at_every_fraction(catalog, source):
    names, labels = source
    total = len(names)
    req = plan_cli.PlanRequest(seeds=(1, 2), fractions=FIXMATCH_FRACTIONS, unsupervised=True)
    plans = plan_cli.make_plans(catalog, req)
    n = {f: split_size(total, Fraction(f)) for f in FIXMATCH_FRACTIONS}
    assert len(set(n.values())) == 3 and min(n.values()) > 0
    assert [p.split for p in plans] == [
        f"train{n[f]}.{s}" for f in FIXMATCH_FRACTIONS for s in (1, 2)
    ] + ["train"]
    class_sizes = {c: labels.count(c) for c in set(labels)}
    for p in plans[:-1]:
        fraction = p.fraction
        assert p.num_examples == n[fraction] == int(p.split[5:].split(".")[0])
        # Stratified: the quotas of the documented rule, per class.
        quotas = class_quotas(class_sizes, Fraction(fraction), n[fraction])
        assert p.class_counts == {f"n{c:08d}": k for c, k in quotas.items() if k}
        # num_shards: the default rule per split.
        assert p.num_shards == default_num_shards(n[fraction], SOURCE_SHARDS, total)
    assert len({p.num_shards for p in plans[:-1]}) == 3  # 6, 3 and 1 shards here
    assert plans[-1].split == "train" and plans[-1].num_examples == total
    # Each split is the plan a run of that fraction alone makes, byte for byte.
    for fraction in FIXMATCH_FRACTIONS:
        alone = plan_cli.make_plans(
            catalog, plan_cli.PlanRequest(seeds=(1, 2), fraction=fraction, unsupervised=False)
        )
        together = [p for p in plans if p.fraction == fraction]
        assert [p.to_csv_bytes() for p in alone] == [p.to_csv_bytes() for p in together]
    # The splits of one seed are nested: 1% inside 5% inside 10%.
    sets = _sets(plans)
    for s in (1, 2):
        small, mid, large = (sets[f"train{n[f]}.{s}"] for f in ("0.01", "0.05", "0.1"))
        assert small < mid < large
    assert sets[f"train{n['0.1']}.1"] != sets[f"train{n['0.1']}.2"]  # seeds: other draws
    assert plan_cli.nesting(plans) == [
        {"seed": s, "smaller": f"train{n[a]}.{s}", "larger": f"train{n[b]}.{s}", "outside": 0}
        for s in (1, 2)
        for a, b in (("0.01", "0.05"), ("0.05", "0.1"))
    ]
    assert plan_cli.nesting_lines(plans)[0] == (
        f"seed 1: train{n['0.01']}.1 in train{n['0.05']}.1 in train{n['0.1']}.1 (nested)"
    )


def test_uniform_sampling_nests_too(catalog):
    plans = plan_cli.make_plans(
        catalog,
        plan_cli.PlanRequest(
            seeds=(4,), fractions=("0.3", "0.2", "0.1"), sampling="uniform", unsupervised=False
        ),
    )
    sets = list(_sets(plans).values())
    assert sets[2] < sets[1] < sets[0]
    assert all(r["outside"] == 0 for r in plan_cli.nesting(plans))


def test_num_shards_applies_to_each_split(catalog, source):
    total = len(source[0])
    plans = plan_cli.make_plans(
        catalog,
        plan_cli.PlanRequest(
            seeds=(1,), fractions=FIXMATCH_FRACTIONS, num_shards=4, unsupervised=False
        ),
    )
    assert [p.num_shards for p in plans] == [4, 4, 4]
    # More shards than the 1% split has records: refused, naming its fraction and seed.
    n01 = split_size(total, Fraction("0.01"))
    with pytest.raises(
        PlanError,
        match=rf"^fraction 0.01, seed 1: num_shards must be in "
        rf"1..{n01}, got {n01 + 1}",
    ):
        plan_cli.make_plans(
            catalog,
            plan_cli.PlanRequest(
                seeds=(1,), fractions=FIXMATCH_FRACTIONS, num_shards=n01 + 1, unsupervised=False
            ),
        )


def test_two_fractions_of_one_size_are_refused(catalog, source):
    total = len(source[0])
    n = split_size(total, Fraction("0.1"))
    close = f"{float(Fraction(n, total) + Fraction(1, 10 * total)):.12f}"  # a hair above n / N
    assert split_size(total, Fraction(close)) == n and Fraction(close) != Fraction("0.1")
    with pytest.raises(
        PlanError,
        match=rf"^fractions 0.1 and {close} both give {n:,} of the "
        rf"catalog's {total:,} records .* the splits "
        rf"train{n}\.{{seed}}: drop one of them$",
    ):
        plan_cli.make_plans(catalog, plan_cli.PlanRequest(seeds=(1,), fractions=("0.1", close)))


def test_published_files_and_counts_do_not_mix_with_several_fractions(catalog, tmp_path):
    with pytest.raises(
        PlanError,
        match=r"seeds \[3\] have a published file, which is one split "
        "of one size: they cannot be drawn at the fractions "
        "0.1, 0.01",
    ):
        plan_cli.make_plans(
            catalog,
            plan_cli.PlanRequest(
                seeds=(2, 3), fractions=("0.1", "0.01"), sharding_files=((3, str(tmp_path / "x")),)
            ),
        )
    with pytest.raises(PlanError, match=r"seeds \[1\] have a published file"):
        plan_cli.make_plans(
            catalog,
            plan_cli.PlanRequest(seeds=(1,), fractions=("0.1", "0.01"), protocol="fixmatch"),
        )
    with pytest.raises(PlanError, match="give a count or fractions, not both"):
        plan_cli.PlanRequest(fraction=None, count=10, fractions=("0.1", "0.01")).sizes()


def test_nesting_breaks_only_where_a_class_quota_shrinks(tmp_path):
    """The one way algorithm v1's splits of one seed fail to nest: a class whose
    largest-remainder quota is smaller at the larger fraction. Classes of 3, 5 and 5
    records at 0.5 and 0.55: 6 records as (2, 2, 2), then 7 as (1, 3, 3)."""
    names = [f"n{c}_{k}.JPEG" for c, size in ((1, 3), (2, 5), (3, 5)) for k in range(size)]
    labels = [int(n[1]) for n in names]
    assert class_quotas({1: 3, 2: 5, 3: 5}, Fraction("0.5"), 6) == {1: 2, 2: 2, 3: 2}
    assert class_quotas({1: 3, 2: 5, 3: 5}, Fraction("0.55"), 7) == {1: 1, 2: 3, 3: 3}
    catalog = write_catalog(tmp_path, names, labels, source_shards=1)
    plans = plan_cli.make_plans(
        catalog, plan_cli.PlanRequest(seeds=(1,), fractions=("0.55", "0.5"), unsupervised=False)
    )
    assert plan_cli.nesting(plans) == [
        {"seed": 1, "smaller": "train6.1", "larger": "train7.1", "outside": 1}
    ]
    assert plan_cli.nesting_lines(plans) == [
        "seed 1: train6.1 in train7.1 (NOT nested: 1 of train6.1 not in train7.1)"
    ]
    outside = _sets(plans)["train6.1"] - _sets(plans)["train7.1"]
    assert len(outside) == 1 and outside.pop().startswith("n1_")  # the shrinking class's
    # Uniform sampling has no quotas: nested, always.
    uniform = plan_cli.make_plans(
        catalog,
        plan_cli.PlanRequest(
            seeds=(1,), fractions=("0.55", "0.5"), sampling="uniform", unsupervised=False
        ),
    )
    assert plan_cli.nesting(uniform)[0]["outside"] == 0


@pytest.mark.parametrize("smaller, larger", [("0.01", "0.05"), ("0.05", "0.1"), ("0.01", "0.1")])
def test_fixmatchs_three_sizes_always_nest_on_imagenet(smaller, larger):
    """A class's quota at the larger fraction is at least floor(N_c * larger), and at
    the smaller at most floor(N_c * smaller) + 1: no quota shrinks when the first
    exceeds the second, for every class size ImageNet has (732..1,300), so the splits
    of one seed nest whatever the class sizes (the README quotes the
    measured splits)."""
    lo, hi = Fraction(smaller), Fraction(larger)
    for size in range(732, 1301):
        assert math.floor(size * hi) >= math.floor(size * lo) + 1, size


def test_select_keys_shared_across_fractions_give_the_same_plan(source):
    names, labels = source
    canonical = sorted(range(len(names)), key=names.__getitem__)
    names = [names[i] for i in canonical]
    labels = [labels[i] for i in canonical]
    keys = split_algorithm.hash_keys(names, "select", 7)
    for fraction in FIXMATCH_FRACTIONS:
        a = split_algorithm.supervised_plan(
            split_algorithm.sorted_catalog(names, labels), seed=7, fraction=fraction
        )
        b = split_algorithm.supervised_plan(
            split_algorithm.sorted_catalog(names, labels),
            seed=7,
            fraction=fraction,
            select_keys=keys,
        )
        assert a.to_csv_bytes() == b.to_csv_bytes()


def test_plan_cli_takes_several_fractions(catalog, source, tmp_path, capsys):
    total = len(source[0])
    out = tmp_path / "plans"
    rc = plan_cli.main(
        [f"--catalog_dir={catalog}", f"--out_dir={out}", "--seeds=1,2", "--fraction=0.1,0.05,0.01"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    n = [split_size(total, Fraction(f)) for f in FIXMATCH_FRACTIONS]
    splits = [line.split("\t")[0] for line in captured.out.splitlines()]
    assert splits == [f"train{k}.{s}" for k in n for s in (1, 2)]
    assert captured.err.splitlines() == [
        f"seed {s}: train{n[2]}.{s} in train{n[1]}.{s} in train{n[0]}.{s} (nested)" for s in (1, 2)
    ]
    rc = plan_cli.main(
        [f"--catalog_dir={catalog}", f"--out_dir={out}", "--count=10", "--fraction=0.1,0.05"]
    )
    assert rc == 1 and "--count and several --fraction values" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Splits view


def test_add_seeds_of_a_manifest_with_several_fractions_asks_for_all_of_them():
    from ssl_splits.prefill import add_seeds_conf, rebuild_conf

    def entry(seed, fraction, n):
        return {
            "kind": "supervised",
            "seed": seed,
            "fraction": fraction,
            "sampling": "stratified",
            "num_examples": n,
            "num_shards": 1,
        }

    sizes = {"0.1": 46, "0.05": 23, "0.01": 4}
    doc = {
        "output_uri": "/o",
        "source": {"uri": "/s"},
        "splits": {f"train{n}.{s}": entry(s, f, n) for f, n in sizes.items() for s in (1, 2)},
    }
    conf = add_seeds_conf(doc, "/o/manifest.json")
    assert conf["seeds"] == [3] and conf["fractions"] == [0.1, 0.05, 0.01]
    assert "fraction" not in conf
    # A fraction published for fewer seeds than the others is not asked for again.
    del doc["splits"]["train4.2"]
    conf = add_seeds_conf(doc, "/o/manifest.json")
    assert conf["fractions"] == [0.1, 0.05] and "fraction" not in conf
    # Rebuild one (fraction, seed): that split alone, at its fraction.
    conf = rebuild_conf(doc, "train23.2", "/o/manifest.json")
    assert (conf["seeds"], conf["fraction"], conf["force"]) == ([2], 0.05, True)
    assert "fractions" not in conf


def measure_nesting(
    names: list[str],
    labels: list[int],
    *,
    seeds: tuple[int, ...],
    fractions: tuple[str, ...],
    sampling: str,
) -> dict:
    """Plan each (seed, fraction) with the planner the DAG runs; count, per seed and pair
    of fractions, the smaller split's records outside the larger one, and the classes
    whose quota shrinks as the fraction grows (the only way v1's splits of one seed can
    fail to nest). The counting of the former ``benchmarks/nesting.py``, whose figures
    the README quotes."""
    order = sorted(range(len(names)), key=names.__getitem__)
    names, labels = [names[i] for i in order], [labels[i] for i in order]
    outside: list[int] = []
    sizes: dict[str, int] = {}
    for seed in seeds:
        keys = split_algorithm.hash_keys(names, "select", seed)
        plans = [
            split_algorithm.supervised_plan(
                split_algorithm.sorted_catalog(names, labels),
                seed=seed,
                fraction=f,
                sampling=sampling,
                select_keys=keys,
            )
            for f in fractions
        ]
        sizes.update({f: p.num_examples for f, p in zip(fractions, plans)})
        for a, b in itertools.combinations(plans, 2):
            small, large = sorted((a, b), key=lambda p: p.num_examples)
            outside += [r["outside"] for r in plan_cli.nesting([small, large])]
    class_sizes: dict[int, int] = {}
    for lab in labels:
        class_sizes[lab] = class_sizes.get(lab, 0) + 1
    shrinking = 0
    if sampling == "stratified":
        quotas = {f: class_quotas(class_sizes, Fraction(f), sizes[f]) for f in fractions}
        for a, b in itertools.combinations(sorted(fractions, key=Fraction), 2):
            shrinking += sum(quotas[a][c] > quotas[b][c] for c in class_sizes)
    return {
        "records": len(names),
        "classes": len(class_sizes),
        "sizes": sizes,
        "pairs": len(outside),
        "outside": sum(outside),
        "shrinking_quotas": shrinking,
    }


def test_the_nesting_measurement_counts_what_it_says(source):
    """The nesting measurement, whose figures the README quotes, on small catalogs."""

    names, labels = source
    r = measure_nesting(
        names, labels, seeds=(1, 2), fractions=FIXMATCH_FRACTIONS, sampling="stratified"
    )
    assert (r["records"], r["classes"], r["pairs"]) == (len(names), 20, 6)
    assert r["sizes"] == {f: split_size(len(names), Fraction(f)) for f in FIXMATCH_FRACTIONS}
    assert (r["outside"], r["shrinking_quotas"]) == (0, 0)
    # The counter-example above: one class's quota shrinks, one record is outside.
    names = [f"n{c}_{k}.JPEG" for c, size in ((1, 3), (2, 5), (3, 5)) for k in range(size)]
    r = measure_nesting(
        names,
        [int(n[1]) for n in names],
        seeds=(1,),
        fractions=("0.5", "0.55"),
        sampling="stratified",
    )
    assert (r["pairs"], r["outside"], r["shrinking_quotas"]) == (1, 1, 1)
