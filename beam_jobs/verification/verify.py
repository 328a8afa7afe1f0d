"""Verify a staged split against its plan before anything is published.

The build job leaves a split's shards in its staging folder
(``{work_uri}/staging/{split}/{token}/``); this check decides whether they
may take their published names.

**Exact, from metadata** (always; no Beam job, no record data moved on GCS).
A framed record's CRC32C follows from its length and the data CRC in its
footer, and a shard's CRC32C is the combination of its records' in order
(``beam_jobs.source.crc32c_combine``). From the plan and the catalog alone this
predicts, for every shard, its record count, its size and its CRC32C as if
it held exactly the planned records, byte-identical to the source, in the
planned order. These are compared with what storage reports for each staged
object: the CRC32C GCS computes server-side (a local file's CRC32C is
computed here, reading it once). A swapped, dropped, duplicated, foreign or
changed record changes a shard's size or CRC32C; a missing or stray shard
shows in the listing. Also compared: the build's own stats, which must agree
with both.

For the copied validation set the prediction is each source file's size and
CRC32C (a byte-identical copy has the same).

**Deep** (``--deep``, the DAG's ``deep_verify: always``): additionally a Beam
job re-reads every staged record (``beam_jobs.verification.deep``): both framing
CRCs, the planned file name at every position, the data CRC against the
catalog's. It names the record that differs where the exact check can only
name the shard.

The report (``{work_uri}/verify/{split}.json``) lists every verified shard
with the identity storage gave it (size, CRC32C, and generation on GCS or
mtime locally): ``publish_manifest`` publishes exactly those objects, and
only if they are still those.

CLI (exit 0 verified, 1 failed: the report names split, shard and what differs)::

    python -m beam_jobs.verification.verify --split=train128116.1 --output_uri=/data/ssl \\
        --plan_uri=... --catalog_dir=... [--deep]
    python -m beam_jobs.verification.verify --split=validation --output_uri=/data/ssl --copy_from=/data/imagenet
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_jobs import __version__, storage
from beam_jobs.building import split_job
from beam_jobs.building.split_job import SplitJob
from beam_jobs.core import VerifiedShard, VerifyReport
from beam_jobs.faults import failpoint
from beam_jobs.layout import (
    ShardSetError,
    report_uri,
    shard_name,
    shard_set,
    split_files,
    stats_uri,
)
from beam_jobs.logs import setup_logging
from beam_jobs.planning.algorithm import PlanError, parse_plan_table
from beam_jobs.planning.arrays import from_numpy, to_numpy
from beam_jobs.process import freeze_heap_at_exit
from beam_jobs.source.catalog import read_catalog
from beam_jobs.source.crc32c_combine import shard_crcs
from beam_jobs.storage import crc32c_hex

log = logging.getLogger("beam_jobs.verification.verify")

MAX_FINDINGS = 20


class VerificationFailed(RuntimeError):
    """The split does not match its plan; the message lists what differs."""


@dataclass(frozen=True)
class Expected:
    """What each shard of a split must be: record counts (None when only the
    bytes are known, as for a copy), sizes and CRC32Cs (8 hex digits)."""

    num_records: list[int] | None
    sizes: list[int]
    crc32c: list[str]


def catalog_rows(names: pa.ChunkedArray | pa.Array, catalog_names: pa.ChunkedArray) -> np.ndarray:
    """The catalog row of each of ``names`` (distinct, as a parsed plan's),
    -1 where a name is not in the catalog (whose names are distinct too).

    The hash table is built on ``names``, the catalog's names only probe it:
    a 10% split's plan hashes a tenth of what the catalog would (pure)."""
    at = pc.index_in(catalog_names, value_set=names)  # plan position of each catalog row
    rows = np.full(len(names), -1, np.int64)
    rows[to_numpy(pc.drop_null(at))] = to_numpy(pc.indices_nonzero(pc.is_valid(at)))
    return rows


def planned_records(plan_uri: str, catalog_dir: str) -> tuple[pa.Table, str]:
    """The plan's rows (shard, index, filename) sorted by position, with each
    source record's framed length and data CRC from the catalog; and the plan
    file's sha256. Names missing from the catalog are a PlanError."""
    try:
        raw = storage.read_bytes(plan_uri)
    except FileNotFoundError:
        raise PlanError(f"plan file {plan_uri} does not exist") from None
    plan = parse_plan_table(raw, plan_uri)
    catalog = read_catalog(catalog_dir, ["filename", "length", "data_crc"])
    rows = catalog_rows(plan.column("filename"), catalog.column("filename"))
    missing = int(np.count_nonzero(rows < 0))
    if missing:
        raise PlanError(f"plan {plan_uri}: {missing:,} names are not in the catalog {catalog_dir}")
    table = plan
    for column in ("length", "data_crc"):
        values = to_numpy(catalog.column(column))[rows]
        table = table.append_column(column, from_numpy(values, catalog.schema.field(column).type))
    return table, hashlib.sha256(raw).hexdigest()


def expected_from_plan(table: pa.Table) -> Expected:
    """Every shard's count, size and CRC32C if it holds exactly the planned
    records in order (pure; ``table`` as from :func:`planned_records`)."""
    shard = to_numpy(table.column("shard"))
    num_shards = int(shard.max()) + 1 if len(shard) else 0
    counts = np.bincount(shard, minlength=num_shards)
    starts = np.concatenate([[0], np.cumsum(counts)])
    sizes, crcs = shard_crcs(
        to_numpy(table.column("length")), to_numpy(table.column("data_crc")), starts
    )
    return Expected(counts.tolist(), sizes.tolist(), [crc32c_hex(int(c)) for c in crcs])


def expected_from_copy(src: str, split: str) -> Expected:
    """A byte-identical copy of the source's ``split`` shards has their sizes and CRC32Cs."""
    try:
        files = shard_set(src, split)
    except ShardSetError as err:
        raise VerificationFailed(f"{split}: cannot check the copy: {err}") from None
    return Expected(
        None, [f.size for f in files], [f.crc32c or storage.file_crc32c(f.path) for f in files]
    )


def observe(
    paths: list[str], folder: str, split: str
) -> tuple[dict[str, storage.FileInfo], dict[str, str], list[str], int]:
    """What storage says of the staged shards: FileInfo by path, CRC32C by
    path (GCS: metadata; locally computed, reading the file), files under the
    staged split's glob that are not among ``paths``, and the bytes read."""
    listed = {f.path: f for f in split_files(folder, split)}
    crcs: dict[str, str] = {}
    read = 0
    for i, path in enumerate(paths):
        info = listed.get(path)
        if info is not None:
            if info.crc32c is not None:
                crcs[path] = info.crc32c
            else:
                crcs[path] = storage.file_crc32c(path)
                read += info.size
        failpoint("verify.shard")
        if len(paths) >= 20 and i and i % (len(paths) // 10) == 0:
            log.info("%s: checked %d/%d shards", split, i, len(paths))
    strays = sorted(set(listed) - set(paths))
    return listed, crcs, strays, read


def exact_findings(
    split: str,
    stats: dict[str, Any],
    expected: Expected,
    listed: dict[str, storage.FileInfo],
    crcs: dict[str, str],
    strays: list[str],
    prefix: str | None = None,
) -> list[str]:
    """Compare the staged shards (and the build's stats) with the prediction
    (pure; ``prefix``: the split's file prefix in its source's layout)."""
    findings: list[str] = []
    num_shards = len(expected.sizes)
    shards = stats["shards"]
    if len(shards) != num_shards:
        findings.append(
            f"{split}: the build staged {len(shards)} shards, the plan has {num_shards}"
        )
    for path in strays:
        findings.append(f"{split}: stray file {path} among the staged shards")
    for s, entry in enumerate(shards[:num_shards]):
        path = entry["staged"]
        want = shard_name(prefix or split, s, num_shards)
        if storage.basename(path) != want or storage.basename(entry["path"]) != want:
            findings.append(f"{split}: the build recorded {path} as shard {s} ({want})")
            continue
        if expected.num_records is not None and entry["num_records"] != expected.num_records[s]:
            findings.append(
                f"{split}: shard {s} has {entry['num_records']} records, the plan "
                f"{expected.num_records[s]}"
            )
        info = listed.get(path)
        if info is None:
            findings.append(f"{split}: shard {s} is missing: {path}")
            continue
        if info.size != expected.sizes[s]:
            findings.append(
                f"{split}: shard {s} is {info.size} bytes, its planned records make "
                f"{expected.sizes[s]}: {path}"
            )
        elif crcs[path] != expected.crc32c[s]:
            findings.append(
                f"{split}: shard {s} CRC32C is {crcs[path]} in storage, its planned "
                f"records give {expected.crc32c[s]} (a record is out of place, "
                f"changed or not planned; deep_verify: always names it): {path}"
            )
        elif entry["num_bytes"] != info.size or entry["crc32c"] != crcs[path]:
            findings.append(
                f"{split}: shard {s} is as planned but the build recorded "
                f"{entry['num_bytes']} bytes, CRC32C {entry['crc32c']}: {path}"
            )
        if len(findings) >= MAX_FINDINGS * 10:
            break
    return findings


def verified_shards(
    stats: dict[str, Any], listed: dict[str, storage.FileInfo], crcs: dict[str, str]
) -> list[VerifiedShard]:
    """The report's record of each verified staged object: the manifest entry's
    shard (final path, records, bytes, CRC32C) plus the staged object's identity."""
    return [
        VerifiedShard(
            path=entry["path"],
            num_records=entry["num_records"],
            num_bytes=listed[entry["staged"]].size,
            crc32c=crcs[entry["staged"]],
            staged=entry["staged"],
            generation=listed[entry["staged"]].generation,
            mtime_ns=listed[entry["staged"]].mtime_ns,
        )
        for entry in stats["shards"]
    ]


# --------------------------------------------------------------------------- the job


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, SplitJob, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.verification.verify",
        description="Verify a staged split against its plan and the build's stats.",
        epilog="Any other --flag is a Beam pipeline option (used with --deep).",
    )
    split_job.add_args(p)
    p.add_argument(
        "--deep", action="store_true", help="also re-read every staged record (a Beam job)"
    )
    return split_job.parse(p, argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Verify a staged split; return the report (also written). Raises
    :class:`VerificationFailed`."""
    setup_logging()
    args, job, beam_args = parse_args(argv)
    work, split, prefix, names = job.work_uri, job.split, job.prefix, job.naming
    t0 = time.monotonic()
    failpoint("verify.start")
    # A report from an earlier verification must not outlive this one: if this
    # run fails before it writes its own (no stats, another plan, a crash), the
    # publish step finds no report and refuses the split.
    storage.delete([report_uri(work, split)])
    spath = stats_uri(work, split)
    stats_bytes = read_stats(spath, split)
    stats = json.loads(stats_bytes)
    expected, plan_table, verified_plan = expectation(args, job, stats)
    staged = [e["staged"] for e in stats["shards"]]
    listed, crcs, strays, bytes_read = observe(staged, stats["staging"], prefix)
    findings = exact_findings(split, stats, expected, listed, crcs, strays, prefix)
    metrics: dict[str, int] = {}
    mode = "exact"
    if args.deep and not findings:
        from beam_jobs.verification.deep import run_deep

        mode = "deep"
        deep = run_deep(split, work, stats, plan_table, beam_args, names.kind)
        if deep.staged:  # template mode: the deep job was described, not run
            return {**deep.staged, "split": split}
        metrics = deep.metrics
        findings.extend(deep.findings)
        bytes_read += int(metrics.get("bytes_read", 0))
    report = VerifyReport(
        split=split,
        ok=not findings,
        mode=mode,
        findings=findings[:200],
        num_findings=len(findings),
        num_shards=stats["num_shards"],
        num_examples=stats["num_examples"],
        plan_sha256=verified_plan,
        stats_uri=spath,
        # Which build this verdict is about (its stats file, byte for byte).
        stats_sha256=hashlib.sha256(stats_bytes).hexdigest(),
        built_at=stats.get("built_at"),
        verified_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - t0, 3),
        bytes_read=bytes_read,
        metrics=metrics,
        shards=verified_shards(stats, listed, crcs) if not findings else [],
        code_version=__version__,
    )
    storage.write_text(report_uri(work, split), report.to_json(), "application/json")
    announce(split, findings, stats, report)
    return report.to_dict()


def announce(split: str, findings: list[str], stats: dict[str, Any], report: VerifyReport) -> None:
    """Raise VerificationFailed with the first findings, or print the verdict."""
    if findings:
        msg = f"{split}: verification FAILED ({len(findings)} problems):\n  " + "\n  ".join(
            findings[:MAX_FINDINGS]
        )
        raise VerificationFailed(msg)
    print(
        f"{split}: verified ({report.mode}): {stats['num_examples']:,} records in "
        f"{stats['num_shards']} staged shards are exactly as planned "
        f"({(report.bytes_read or 0) / 1e6:,.1f} MB read, {report.seconds:.1f} s)",
        flush=True,
    )


def read_stats(spath: str, split: str) -> bytes:
    """The build's stats file, byte for byte; raises VerificationFailed if
    there is none."""
    if not storage.exists(spath):
        raise VerificationFailed(f"{split}: no build stats at {spath}: was the split built?")
    return storage.read_bytes(spath)


def expectation(
    args: argparse.Namespace, job: SplitJob, stats: dict[str, Any]
) -> tuple[Expected, pa.Table | None, str | None]:
    """What the staged shards must hold: from the plan (plan mode; with the
    planned records and the plan's sha256, which must be the one the build
    used) or from the source shards (copy mode; None, None)."""
    split = job.split
    if not args.plan_uri:
        assert job.copy_from is not None
        return expected_from_copy(job.copy_from, job.prefix), None, None
    try:
        plan_table, verified_plan = planned_records(args.plan_uri, args.catalog_dir)
    except PlanError as err:
        raise VerificationFailed(f"{split}: {err}") from None
    if verified_plan != stats.get("plan_sha256"):
        raise VerificationFailed(
            f"{split}: the build used plan "
            f"{(stats.get('plan_sha256') or 'none')[:16]}, "
            f"not {args.plan_uri} ({verified_plan[:16]})"
        )
    return expected_from_plan(plan_table), plan_table, verified_plan


def main(argv: list[str] | None = None) -> int:
    freeze_heap_at_exit()
    try:
        run(argv)
    except VerificationFailed as err:
        # Every failure says why on stdout (the Airflow task log), also those
        # found before any shard is looked at (no stats, another plan).
        print(err, flush=True)
        return 1
    return 0


__all__ = ["Expected", "VerificationFailed", "exact_findings", "expected_from_plan", "run"]

if __name__ == "__main__":
    sys.exit(main())
