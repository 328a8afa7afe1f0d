"""The plan step: a run's requests -> plans -> plan files (``filename,shard,index``)
and each plan's catalog rows; also a CLI. The algorithm itself is
:mod:`beam_jobs.planning.algorithm` (pure functions).

Examples::

    # the five seeded 10% splits and the reshuffle, into plans/
    python -m beam_jobs.planning.plans --catalog_dir=/data/ssl/_work/catalog/5160864c129f5846 \\
        --out_dir=/data/ssl/_work/plans --seeds=1,2,3,4,5 --unsupervised

    # every seed at 10%, 5% and 1% (what FixMatch's ImageNet trainer reads)
    python -m beam_jobs.planning.plans --catalog_dir=... --out_dir=... --fraction=0.1,0.05,0.01

    # check a published FixMatch file against the catalog and keep it as the plan of seed 3
    python -m beam_jobs.planning.plans --catalog_dir=... --out_dir=... --seeds=3 \\
        --sharding_file=3=/path/files2shards_train_size128116_split3.txt

    # a built-in protocol: FixMatch's five published splits, or SimCLR's 1%/10% subsets
    python -m beam_jobs.planning.plans --catalog_dir=... --out_dir=... --protocol=fixmatch
    python -m beam_jobs.planning.plans --catalog_dir=... --out_dir=... --protocol=simclr

    # a list of file names (one per line) -> the split train{N}.mysubset
    python -m beam_jobs.planning.plans --catalog_dir=... --out_dir=... --seeds= \\
        --name_list=mysubset=gs://bucket/names.txt

Prints one line per plan: split, examples, shards, sha256 and the file; with
several fractions, then (to stderr) how the splits of each seed nest.
The algorithm is in ``beam_jobs.planning.algorithm`` and in the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_jobs import access, defaults, storage
from beam_jobs.core import PlanSummary
from beam_jobs.layout import plan_file, records_uri
from beam_jobs.planning import protocols
from beam_jobs.planning.algorithm import (
    Plan,
    PlanError,
    SortedCatalog,
    catalog_positions,
    check_label,
    exact_fraction,
    named_plan,
    published_plan,
    sorted_catalog,
    split_size,
    supervised_plan,
    unsupervised_plan,
)
from beam_jobs.planning.inputs import read_name_list, read_plan_file
from beam_jobs.planning.key_workers import precompute_keys
from beam_jobs.source.catalog import (
    CATALOG_FILE,
    REPORT_FILE,
    read_catalog,
    read_table,
    write_table,
)

log = logging.getLogger("beam_jobs.planning.plans")


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: the DAG's params, in planner terms."""

    seeds: tuple[int, ...] = defaults.SEEDS
    fraction: str | None = defaults.FRACTION
    count: int | None = None
    sampling: str = defaults.SAMPLING
    num_shards: int | None = None
    unsupervised: bool = True
    unsupervised_seed: int = 0
    unsupervised_shards: int | None = None
    sharding_files: tuple[tuple[int, str], ...] = ()
    name_lists: tuple[tuple[str, str], ...] = ()  # (label, uri): split train{N}.{label}
    protocol: str = protocols.SEEDED
    # Several fractions: every seed at each, one split train{N}.{seed} per (fraction, seed),
    # in this order; ``fraction`` is then not used. Empty: ``fraction`` (or ``count``) alone.
    fractions: tuple[str, ...] = ()

    def sizes(self) -> list[tuple[str | None, int | None]]:
        """``(fraction, count)`` of each size the seeded splits are drawn at."""
        if not self.fractions:
            return [(self.fraction, self.count)]
        if self.count is not None:
            raise PlanError("give a count or fractions, not both")
        return [(f, None) for f in self.fractions]


def expand_protocol(req: PlanRequest) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """The sharding files per seed and the name lists a request's protocol and
    its own files amount to (pure). ``fixmatch`` gives each seed its published
    file (seeds must be 1..5); the SimCLR protocols add their name lists. The
    rules are the protocol's (:mod:`beam_jobs.planning.protocols`); the DAG's
    ``resolve`` applies them to the params first, this applies them to any request."""
    proto = protocols.protocol(req.protocol)
    files = dict(req.sharding_files)
    problem = protocols.unpublished_seeds(proto, req.seeds) or protocols.seeds_given_twice(
        proto, req.seeds, files
    )
    if problem:
        raise PlanError(problem)
    if proto.sharding:
        files.update(proto.published_files(req.seeds))
    if len(req.sizes()) > 1:
        drawn = set(files) & set(req.seeds)
        if problem := protocols.files_at_several_sizes(drawn, list(req.fractions)):
            raise PlanError(problem)
    lists = [(check_label(label), uri) for label, uri in req.name_lists]
    lists += [(label, protocols.LISTS[key].ref) for label, key in proto.name_lists]
    return files, lists


def check_list_locations(files: dict[int, str], name_lists: list[tuple[str, str]]) -> None:
    """The deployment's rules for the files params name (``beam_jobs.access``:
    the allowed roots, never the Airflow home), applied again here before any is
    read: the DAG's ``resolve()`` checked them, this covers the CLI and any other
    caller. Shipped ``published:...`` lists are the product's own."""
    roots = access.allowed_roots()
    named = [(f"sharding file of seed {seed}", uri) for seed, uri in sorted(files.items())]
    named += [(f"name list {label}", uri) for label, uri in name_lists]
    for what, uri in named:
        if not protocols.is_ref(uri):
            try:
                where = uri if access.is_gcs(uri) else os.path.abspath(uri)  # CLI: relative ok
                access.check_location(what, where, roots)
            except access.AccessError as err:
                raise PlanError(str(err)) from None


@dataclass(frozen=True)
class RunCatalog:
    """What every plan of a run starts from: the catalog in name order, the
    source's shard count and its class names (label -> synset)."""

    cat: SortedCatalog
    source_shards: int
    class_names: dict[int, str]

    @property
    def total(self) -> int:
        return len(self.cat)


def read_run_catalog(catalog_dir: str) -> RunCatalog:
    """The validation job's catalog (file names and labels, sorted by name
    here unless in that order already) and report."""
    start = time.perf_counter()
    table = read_catalog(catalog_dir, ["filename", "label"])
    # In name order once here (only checked when the catalog is in that order
    # already), so every plan of the run starts from it.
    cat = sorted_catalog(table.column("filename"), table.column("label"))
    del table
    report = json.loads(storage.read_text(storage.join(catalog_dir, REPORT_FILE)))
    log.info(
        "plan: catalog of %s records read (%s) in %.1f s",
        f"{len(cat):,}",
        "in name order" if cat.rows is None else "sorted by name here",
        time.perf_counter() - start,
    )
    return RunCatalog(
        cat,
        source_shards=int(report["num_shards"]),
        class_names={int(k): v for k, v in report.get("synsets", {}).items()},
    )


def make_plans(catalog_dir: str, req: PlanRequest) -> list[Plan]:
    """All plans a request asks for (pure given the catalog): the seeded splits
    (computed, or published files), the name lists' splits, the reshuffle."""
    files, name_lists = expand_protocol(req)
    check_list_locations(files, name_lists)
    run = read_run_catalog(catalog_dir)
    sizes = req.sizes()
    check_sizes(sizes, run.total)
    keys = precompute_run_keys(req, files, run)
    start = time.perf_counter()
    plans = seeded_plans(req, files, run, keys)
    plans += [named_list_plan(req, run, label, uri) for label, uri in name_lists]
    if req.unsupervised:
        plans.append(
            unsupervised_plan(
                run.cat,
                seed=req.unsupervised_seed,
                num_shards=req.unsupervised_shards,
                source_shards=run.source_shards,
                order_keys=keys.pop(("order", req.unsupervised_seed)),
            )
        )
    del keys, run
    check_distinct_splits(plans)
    log.info(
        "plan: %d plan(s) in %.1f s: %s",
        len(plans),
        time.perf_counter() - start,
        ", ".join(f"{p.split} ({p.num_examples:,} in {p.num_shards})" for p in plans),
    )
    return plans


def precompute_run_keys(
    req: PlanRequest, files: dict[int, str], run: RunCatalog
) -> dict[tuple[str, int], np.ndarray]:
    """Every full pass of SHA-256 keys the plans need, in parallel (the rest is
    cheap); the select keys of a seed do not depend on the fraction: one pass
    serves all its fractions."""
    jobs = [("select", s) for s in req.seeds if s not in files] + (
        [("order", req.unsupervised_seed)] if req.unsupervised else []
    )
    start = time.perf_counter()
    keys = precompute_keys(run.cat.names, jobs)
    if keys:
        log.info(
            "plan: keys for %d passes over %s names in %.1f s",
            len(keys),
            f"{run.total:,}",
            time.perf_counter() - start,
        )
    return keys


def seeded_plans(
    req: PlanRequest,
    files: dict[int, str],
    run: RunCatalog,
    keys: dict[tuple[str, int], np.ndarray],
) -> list[Plan]:
    """The seeded splits, size by size: each seed's published file if it has
    one, else computed (a PlanError names the fraction and seed when there
    are several sizes)."""
    sizes = req.sizes()
    plans: list[Plan] = []
    for fraction, count in sizes:
        for seed in req.seeds:
            if seed in files:
                published = read_plan_file(files[seed], seed=seed, max_lines=run.total)
                plans.append(published_plan(published, run.cat, run.class_names))
                continue
            try:
                plans.append(
                    supervised_plan(
                        run.cat,
                        seed=seed,
                        fraction=fraction,
                        count=count,
                        sampling=req.sampling,
                        num_shards=req.num_shards,
                        source_shards=run.source_shards,
                        class_names=run.class_names,
                        select_keys=keys.get(("select", seed)),
                    )
                )
            except PlanError as err:
                if len(sizes) == 1:
                    raise
                raise PlanError(f"fraction {fraction}, seed {seed}: {err}") from None
    return plans


def named_list_plan(req: PlanRequest, run: RunCatalog, label: str, uri: str) -> Plan:
    """The split ``train{N}.{label}`` of a name list's records."""
    listed, lines = read_name_list(uri, max_lines=run.total)  # no more names than records
    return named_plan(
        listed,
        run.cat,
        label=label,
        origin=uri,
        list_lines=lines,
        num_shards=req.num_shards,
        source_shards=run.source_shards,
        class_names=run.class_names,
    )


def check_distinct_splits(plans: list[Plan]) -> None:
    """A PlanError if two plans would write the same split."""
    splits = [p.split for p in plans]
    twice = sorted({s for s in splits if splits.count(s) > 1})
    if twice:
        raise PlanError(
            f"two plans would write the same split {', '.join(twice)}: give the "
            "name lists different labels"
        )


def check_sizes(sizes: list[tuple[str | None, int | None]], total: int) -> None:
    """Refuse fractions that give one split size, hence one split name ``train{N}.{seed}``
    (``floor(N_total * f)`` equal for both): PlanError naming them and the size."""
    seen: dict[int, str] = {}
    for fraction, _ in sizes:
        if fraction is None:
            continue
        n = split_size(total, exact_fraction(fraction))
        if n in seen:
            raise PlanError(
                f"fractions {seen[n]} and {fraction} both give {n:,} of the catalog's "
                f"{total:,} records (floor(N x fraction)), so both would write the splits "
                f"train{n}.{{seed}}: drop one of them"
            )
        seen[n] = fraction


def nesting(plans: list[Plan]) -> list[dict[str, Any]]:
    """How the computed seeded splits of one seed and sampling relate across sizes (pure).

    For each seed with several sizes: each split against the next larger one,
    ``{"seed", "smaller", "larger", "outside"}`` with ``outside`` the number of
    the smaller split's records that are not in the larger (0: nested). Algorithm
    v1 takes, per class, the records with the smallest select keys, which do not
    depend on the fraction, so ``outside`` is 0 wherever no class's quota
    shrinks as the fraction grows (README, "How a split is derived").
    """
    groups: dict[tuple[int, str | None], list[Plan]] = {}
    for p in plans:
        if p.kind == "supervised" and p.source == "computed" and p.seed is not None:
            groups.setdefault((p.seed, p.sampling), []).append(p)
    out = []
    for (seed, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        group.sort(key=lambda p: p.num_examples)
        for small, large in zip(group, group[1:]):
            outside = len(set(small.names.tolist()) - set(large.names.tolist()))
            out.append(
                {"seed": seed, "smaller": small.split, "larger": large.split, "outside": outside}
            )
    return out


def nesting_lines(plans: list[Plan]) -> list[str]:
    """:func:`nesting` as one line per seed: ``train12811.1 in train64058.1 in train128116.1
    (nested)``, or how many records of a smaller split are not in the larger one."""
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for r in nesting(plans):
        by_seed.setdefault(r["seed"], []).append(r)
    lines = []
    for seed, rows in by_seed.items():
        chain = " in ".join([rows[0]["smaller"]] + [r["larger"] for r in rows])
        broken = [
            f"{r['outside']:,} of {r['smaller']} not in {r['larger']}" for r in rows if r["outside"]
        ]
        lines.append(
            f"seed {seed}: {chain} "
            + (f"(NOT nested: {'; '.join(broken)})" if broken else "(nested)")
        )
    return lines


def plan_summary(plan: Plan, uri: str) -> PlanSummary:
    return PlanSummary(
        split=plan.split,
        kind=plan.kind,
        seed=plan.seed,
        fraction=plan.fraction,
        sampling=plan.sampling,
        num_examples=plan.num_examples,
        num_shards=plan.num_shards,
        shard_lengths=plan.shard_lengths(),
        plan_uri=uri,
        plan_sha256=plan.sha256(),
        plan_source=plan.source,
        class_counts=plan.class_counts,
    )


def write_plans(plans: list[Plan], out_dir: str) -> list[PlanSummary]:
    """Write each plan as ``{out_dir}/{split}.{sha16}.csv`` (content-addressed,
    so a plan file never changes under a running build); return summaries."""
    start = time.perf_counter()
    out, written = [], 0
    for plan in plans:
        data = plan.to_csv_bytes(keep=False)
        sha = plan.sha256()
        uri = plan_file(out_dir, plan.split, sha)
        if not storage.exists(uri):
            storage.write_bytes(uri, data, "text/csv")
            written += 1
        out.append(plan_summary(plan, uri))
        del data
    log.info(
        "plan: %d plan file(s) written, %d kept (same content) in %.1f s",
        written,
        len(plans) - written,
        time.perf_counter() - start,
    )
    return out


RECORD_COLUMNS = ["filename", "file", "offset", "length", "data_crc"]  # filename first
# The records tables' columns worth dictionary-encoding in Parquet: the other
# columns are (nearly) unique per row, where a dictionary is built only to be
# given up (~25% of the write, and larger files that read slower).
RECORD_DICTIONARY = ["shard", "file"]


def write_records(plans: list[Plan], catalog_dir: str) -> list[str]:
    """For each plan, its rows joined with the catalog (shard, index, filename,
    file, offset, length, data CRC), written next to the catalog and named by
    the plan's sha256 (``layout.records_uri``): a build job reads only its
    split's rows, not the whole catalog (1.28M rows on ImageNet). The rows of a
    plan made from this catalog are known (``Plan.catalog_rows``); the names of
    any other are looked up. Existing files are kept
    (content-addressed)."""
    todo = [p for p in plans if not storage.exists(records_uri(catalog_dir, p.sha256()))]
    if not todo:
        return []
    start = time.perf_counter()
    catalog = read_table(
        storage.join(catalog_dir, CATALOG_FILE), columns=RECORD_COLUMNS, read_dictionary=["file"]
    )
    rows = plan_catalog_rows(todo, catalog.column("filename"))
    # The names at those rows are the plans' own: only the other columns are taken.
    catalog = catalog.drop_columns(["filename"])
    out = []
    for p, r in zip(todo, rows):
        # One plan's rows at a time (the reshuffle alone is all 1.28M rows on ImageNet).
        out.append(write_plan_records(p, catalog.take(r), catalog_dir))
    log.info(
        "plan: catalog rows of %d plan(s) written in %.1f s", len(out), time.perf_counter() - start
    )
    return out


def plan_catalog_rows(plans: list[Plan], filenames: pa.ChunkedArray) -> list[pa.Array]:
    """Each plan's rows in the catalog, name by name: known for a plan made
    from this very catalog (checked, cheaply), else joined with it
    (``catalog_positions``: a PlanError if a name is not in the catalog)."""
    rows = []
    for p in plans:
        known = p.catalog_rows()
        if known is not None and len(known) and int(known.max()) < len(filenames):
            taken = pa.array(known, pa.int64())
            # Made from this very catalog: its names are at those rows.
            if pc.all(pc.equal(filenames.take(taken), p.names_arrow())).as_py():
                rows.append(taken)
                continue
        pos = catalog_positions(p.names_arrow(), filenames, p.shards, p.indices, p.source)
        rows.append(pos.cast(pa.int64()))
    return rows


def write_plan_records(plan: Plan, part: pa.Table, catalog_dir: str) -> str:
    """One plan's records table (``part``: its catalog rows but the names), written."""
    table = pa.table(
        {
            "shard": pa.array(plan.shards, pa.int32()),
            "index": pa.array(plan.indices, pa.int32()),
            "filename": plan.names_arrow(),
            **{c: part.column(c) for c in RECORD_COLUMNS[1:]},
        }
    )
    uri = records_uri(catalog_dir, plan.sha256())
    write_table(uri, table, {"plan_sha256": plan.sha256()}, use_dictionary=RECORD_DICTIONARY)
    return uri


def parse_sharding_files(values: list[str]) -> tuple[tuple[int, str], ...]:
    out = []
    for v in values:
        seed, sep, uri = v.partition("=")
        if not sep or not (seed.strip().isascii() and seed.strip().isdigit()):
            raise PlanError(f"--sharding_file takes SEED=URI, got {v!r}")
        out.append((int(seed), uri.strip()))
    return tuple(out)


def parse_name_lists(values: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        label, sep, uri = v.partition("=")
        if not sep or not uri.strip():
            raise PlanError(f"--name_list takes LABEL=URI, got {v!r}")
        out.append((check_label(label.strip()), uri.strip()))
    return tuple(out)


def argument_parser() -> argparse.ArgumentParser:
    """The CLI's options (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.planning.plans", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--catalog_dir", required=True, help="the validation job's output folder")
    p.add_argument("--out_dir", required=True, help="where the plan files go")
    p.add_argument(
        "--protocol",
        default=protocols.SEEDED,
        choices=list(protocols.PROTOCOLS),
        help="seeded draws (default), FixMatch's published splits for the seeds, or "
        "SimCLR's subsets (see python -m beam_jobs.planning.protocols)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help=f"comma-separated seeds (default {','.join(map(str, defaults.SEEDS))}; none "
        "with a SimCLR protocol)",
    )
    p.add_argument(
        "--fraction",
        default=defaults.FRACTION,
        help=f"share per labelled split (default {defaults.FRACTION}); several, comma-separated "
        "(0.1,0.05,0.01): every seed at each",
    )
    p.add_argument(
        "--count", type=int, help="absolute size per labelled split (instead of fraction)"
    )
    p.add_argument("--sampling", default=defaults.SAMPLING, choices=list(defaults.SAMPLINGS))
    p.add_argument("--num_shards", type=int, help="shards per labelled split (default: scaled)")
    p.add_argument("--unsupervised", action="store_true", help="also plan the reshuffle 'train'")
    p.add_argument("--unsupervised_seed", type=int, default=0)
    p.add_argument(
        "--sharding_file",
        action="append",
        default=[],
        help="SEED=URI of a published filename,shard,index file (repeatable)",
    )
    p.add_argument(
        "--name_list",
        action="append",
        default=[],
        help="LABEL=URI of a file with one image file name per line: the split "
        "train{N}.{LABEL} of exactly those records (repeatable)",
    )
    return p


def request_from_args(a: argparse.Namespace) -> PlanRequest:
    """The request the CLI's options make (a PlanError if they do not go together)."""
    uses_seeds = protocols.protocol(a.protocol).uses_seeds
    seeds_text = (
        a.seeds
        if a.seeds is not None
        else (",".join(map(str, defaults.SEEDS)) if uses_seeds else "")
    )
    seeds = tuple(int(s) for s in seeds_text.split(",") if s.strip())
    fractions = tuple(f.strip() for f in a.fraction.split(",") if f.strip())
    if a.count and len(fractions) > 1:
        raise PlanError("--count and several --fraction values do not go together")
    return PlanRequest(
        seeds=seeds,
        fraction=None if a.count else fractions[0],
        count=a.count,
        fractions=fractions if len(fractions) > 1 else (),
        sampling=a.sampling,
        num_shards=a.num_shards,
        unsupervised=a.unsupervised,
        unsupervised_seed=a.unsupervised_seed,
        sharding_files=parse_sharding_files(a.sharding_file),
        name_lists=parse_name_lists(a.name_list),
        protocol=a.protocol,
    )


def main(argv: list[str] | None = None) -> int:
    """The CLI: plan, write the plan files and records, print one line per plan."""
    a = argument_parser().parse_args(argv)
    try:
        req = request_from_args(a)
        plans = make_plans(a.catalog_dir, req)
        summaries = write_plans(plans, a.out_dir)
        write_records(plans, a.catalog_dir)
    except (PlanError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for s in summaries:
        print(f"{s.split}\t{s.num_examples}\t{s.num_shards}\t{s.plan_sha256}\t{s.plan_uri}")
    for line in nesting_lines(plans) if req.fractions else []:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
