"""Verify a built split against its plan before anything is published.

Shallow checks (no data read on GCS, which reports every object's CRC32C):
exactly the ``S`` shard files with the contract's names and nothing stray
under the split's glob; each file's size and CRC32C equal what the build job
recorded; each shard's record count and the total equal the plan.

Deep checks (a Beam job, one element per shard, so the data never streams
through an Airflow worker): re-read every record, check both framing CRCs,
that the record at (shard, index) is the planned file name, and that its data
CRC equals the source record's (from the catalog): byte identity to the
source without reading the source again. For the copied validation set, each
shard's CRC32C must equal its source file's.

CLI (exit 0 verified, 1 failed: the report names split, shard and what differs)::

    python -m beam_jobs.verify --split=train128116.1 --output_uri=/data/ssl \\
        --plan_uri=... --catalog_dir=... [--deep]
    python -m beam_jobs.verify --split=validation --output_uri=/data/ssl --copy_from=/data/imagenet --deep
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
import time
import uuid
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_jobs import __version__, storage
from beam_jobs.catalog import SHARD_RE, read_catalog, shard_name
from beam_jobs.example_proto import (
    COMMON_KEYS,
    ExampleError,
    RecordKeys,
    parse_image_record,
    record_keys,
)
from beam_jobs.layout import VERIFY_DIR, naming, report_uri, stats_uri, work_default
from beam_jobs.pipeline import counters, job_name, make_options, setup_logging
from beam_jobs.planner import parse_plan_table
from beam_jobs.progress import Progress, mark_done, progress_dir
from beam_jobs.tfrecord import RecordError, iter_framed

log = logging.getLogger("beam_jobs.verify")

MAX_FINDINGS = 20


class VerificationFailed(RuntimeError):
    """The split does not match its plan; the message lists what differs."""


def shallow_findings(split: str, output_uri: str, stats: dict[str, Any],
                     planned_lengths: list[int] | None, prefix: str | None = None) -> list[str]:
    """Compare the files under the split's glob with the build stats and plan.
    ``prefix``: the split's file prefix in its source's layout (default the split)."""
    findings: list[str] = []
    prefix = prefix or split
    num_shards = int(stats["num_shards"])
    expected = {storage.join(output_uri, shard_name(prefix, s, num_shards)): s
                for s in range(num_shards)}
    listed = {f.path: f for f in storage.list_files(storage.join(output_uri, f"{prefix}-*"))}
    for path in sorted(set(listed) - set(expected)):
        m = SHARD_RE.match(storage.basename(path))
        if m is None or m.group("prefix") == prefix:
            findings.append(f"{split}: stray file {path} under the split's glob {prefix}-*")
    for path, s in sorted(expected.items(), key=lambda kv: kv[1]):
        if path not in listed:
            findings.append(f"{split}: shard {s} is missing: {path}")
    if planned_lengths is not None:
        if len(planned_lengths) != num_shards:
            findings.append(f"{split}: built {num_shards} shards, the plan has {len(planned_lengths)}")
        if sum(planned_lengths) != stats["num_examples"]:
            findings.append(f"{split}: built {stats['num_examples']} records, the plan has "
                            f"{sum(planned_lengths)}")
    for s, entry in enumerate(stats["shards"]):
        path = storage.join(output_uri, shard_name(prefix, s, num_shards))
        if storage.basename(entry["path"]) != storage.basename(path):
            findings.append(f"{split}: the build recorded {entry['path']} as shard {s}")
            continue
        if planned_lengths is not None and s < len(planned_lengths) \
                and entry["num_records"] != planned_lengths[s]:
            findings.append(f"{split}: shard {s} has {entry['num_records']} records, the plan "
                            f"{planned_lengths[s]}")
        info = listed.get(path)
        if info is None:
            continue
        if info.size != entry["num_bytes"]:
            findings.append(f"{split}: shard {s} is {info.size} bytes, the build wrote "
                            f"{entry['num_bytes']}: {path}")
            continue
        # GCS reports each object's CRC32C; a local file is read to compute it.
        actual = info.crc32c if info.crc32c is not None else storage.file_crc32c(path)
        if actual != entry["crc32c"]:
            findings.append(f"{split}: shard {s} CRC32C is {actual} in storage, the build "
                            f"wrote {entry['crc32c']}: {path}")
    return findings


# --------------------------------------------------------------------------- deep


def _planned_shard(plan_table: pa.Table | None, starts: np.ndarray | None, shard: int) -> tuple[list[str], list[int]] | None:
    if plan_table is None or starts is None:
        return None
    lo, hi = int(starts[shard]), int(starts[shard + 1])
    rows = plan_table.slice(lo, hi - lo)
    return rows.column("filename").to_pylist(), rows.column("data_crc").to_pylist()


def deep_check_shard(path: str, shard: int, split: str, expected_crc: str | None,
                     planned: tuple[list[str], list[int]] | None,
                     keys: RecordKeys = COMMON_KEYS) -> dict[str, Any]:
    """Re-read one shard: CRCs, count, file CRC32C, planned names and data CRCs."""
    import google_crc32c

    findings: list[str] = []
    crc = 0
    count = 0
    names, data_crcs = planned if planned is not None else (None, None)
    with storage.open_read(path) as f:
        # Hash the bytes as read, through a small wrapper, so the file is read once.
        class Tee:
            def read(self, n: int) -> bytes:
                nonlocal crc
                b = f.read(n)
                crc = google_crc32c.extend(crc, b)
                return b

        for item in iter_framed(Tee(), path):  # type: ignore[arg-type]
            if isinstance(item, RecordError):
                findings.append(f"{split}: shard {shard} record {count}: {item}")
                if item.fatal:
                    break
                count += 1
                continue
            if names is not None:
                if count >= len(names):
                    findings.append(f"{split}: shard {shard} has more records than the plan's "
                                    f"{len(names)} (extra record at byte offset {item.offset})")
                    break
                try:
                    got = parse_image_record(item.data, keys).filename
                except ExampleError as err:
                    got = f"<unparseable: {err}>"
                if got != names[count]:
                    findings.append(f"{split}: shard {shard} index {count} holds {got}, the plan "
                                    f"says {names[count]}")
                elif data_crcs is not None and item.data_crc != data_crcs[count]:
                    findings.append(f"{split}: shard {shard} index {count} ({got}) differs from "
                                    f"the source record")
            count += 1
            if len(findings) >= MAX_FINDINGS:
                break
    if names is not None and count < len(names) and len(findings) < MAX_FINDINGS:
        findings.append(f"{split}: shard {shard} has {count} records, the plan {len(names)}")
    file_crc = f"{crc & 0xFFFFFFFF:08x}"
    if expected_crc is not None and not findings and file_crc != expected_crc:
        findings.append(f"{split}: shard {shard} CRC32C {file_crc} != expected {expected_crc}: {path}")
    return {"shard": shard, "path": path, "num_records": count, "crc32c": file_crc,
            "findings": findings}


_PLANS: dict[str, tuple[pa.Table, np.ndarray]] = {}


class DeepCheck(beam.DoFn):
    def __init__(self, split: str, table_uri: str | None, num_shards: int,
                 progress: str | None = None, keys: RecordKeys = COMMON_KEYS) -> None:
        self.progress = progress  # marker folder (beam_jobs.progress)
        self.keys = keys  # the records' feature keys in the source's layout
        self.split = split
        self.table_uri = table_uri
        self.num_shards = num_shards
        self.records = Metrics.counter("ssl_splits", "records_verified")
        self.bad = Metrics.counter("ssl_splits", "bad_records")
        self.bytes = Metrics.counter("ssl_splits", "bytes_read")

    def setup(self) -> None:
        setup_logging()

    def process(self, element: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from beam_jobs.catalog import read_table

        planned = None
        if self.table_uri:
            if self.table_uri not in _PLANS:
                t = read_table(self.table_uri)
                _PLANS.clear()
                _PLANS[self.table_uri] = (t, np.searchsorted(t.column("shard").to_numpy(),
                                                             np.arange(self.num_shards + 1)))
            table, starts = _PLANS[self.table_uri]
            planned = _planned_shard(table, starts, element["shard"])
        out = deep_check_shard(element["path"], element["shard"], self.split,
                               element.get("crc32c"), planned, self.keys)
        self.records.inc(out["num_records"])
        self.bad.inc(len(out["findings"]))
        self.bytes.inc(int(element.get("num_bytes") or 0))
        mark_done(self.progress, element["shard"], out["num_records"],
                  int(element.get("num_bytes") or 0))
        log.info("%s: verified shard %d/%d: %d records%s", self.split, element["shard"] + 1,
                 self.num_shards, out["num_records"],
                 f", {len(out['findings'])} problems" if out["findings"] else "")
        yield out


def plan_table_with_crcs(plan_uri: str, catalog_dir: str) -> pa.Table:
    """Plan rows (shard, index, filename) with each source record's data CRC."""
    plan = parse_plan_table(storage.read_bytes(plan_uri), plan_uri)
    catalog = read_catalog(catalog_dir, ["filename", "data_crc"])
    return plan.join(catalog, keys="filename", join_type="left outer").sort_by(
        [("shard", "ascending"), ("index", "ascending")])


# --------------------------------------------------------------------------- the job


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.verify",
        description="Verify a built split against its plan and the build's stats.",
        epilog="Any other --flag is a Beam pipeline option (used with --deep).",
    )
    p.add_argument("--split", required=True)
    p.add_argument("--output_uri", required=True)
    p.add_argument("--work_uri", help="default {output_uri}/_work")
    p.add_argument("--plan_uri", help="the split's plan (labelled splits and the reshuffle)")
    p.add_argument("--catalog_dir", help="the source catalog (deep mode compares data CRCs)")
    p.add_argument("--copy_from", help="source folder of a copied split (validation)")
    p.add_argument("--layout", default=None,
                   help="the source's layout, common (default) or tfds:DATASET (the split's "
                        "file names and record features)")
    p.add_argument("--deep", action="store_true", help="re-read every record (a Beam job)")
    return p.parse_known_args(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    setup_logging()
    args, beam_args = parse_args(argv)
    output = storage.normalize(args.output_uri)
    work = storage.normalize(args.work_uri or work_default(output))
    split = args.split
    names = naming(args.layout)
    prefix = names.file_prefix(split)  # the split's file names in its source's layout
    t0 = time.monotonic()
    # A report from an earlier verification must not outlive this one: if this
    # run fails before it writes its own (no stats, another plan, a crash), the
    # publish step finds no report and refuses the split.
    storage.delete([report_uri(work, split)])
    spath = stats_uri(work, split)
    if not storage.exists(spath):
        raise VerificationFailed(f"{split}: no build stats at {spath}: was the split built?")
    stats_bytes = storage.read_bytes(spath)
    stats = json.loads(stats_bytes)
    planned_lengths: list[int] | None = None
    plan_table = None
    # The plan this run checks the split against (the report says so; the
    # publish step accepts a report only for the run's own plan).
    verified_plan: str | None = None
    if args.plan_uri:
        verified_plan = hashlib.sha256(storage.read_bytes(args.plan_uri)).hexdigest()
        if verified_plan != stats.get("plan_sha256"):
            raise VerificationFailed(f"{split}: the build used plan "
                                     f"{(stats.get('plan_sha256') or 'none')[:16]}, "
                                     f"not {args.plan_uri} ({verified_plan[:16]})")
        if args.catalog_dir:
            plan_table = plan_table_with_crcs(args.plan_uri, args.catalog_dir)
            shards_col = plan_table.column("shard").to_numpy()
        else:
            shards_col = parse_plan_table(storage.read_bytes(args.plan_uri),
                                          args.plan_uri).column("shard").to_numpy()
        planned_lengths = np.bincount(shards_col, minlength=int(shards_col.max()) + 1).tolist()
    findings = shallow_findings(split, output, stats, planned_lengths, prefix)
    source_crcs: dict[int, str] = {}
    if args.copy_from:
        for f in storage.list_files(storage.join(args.copy_from, f"{prefix}-*")):
            m = SHARD_RE.match(storage.basename(f.path))
            if m and m.group("prefix") == prefix:
                source_crcs[int(m.group("index"))] = storage.file_crc32c(f.path)
        for s, entry in enumerate(stats["shards"]):
            if source_crcs.get(s) != entry["crc32c"]:
                findings.append(f"{split}: shard {s} CRC32C {entry['crc32c']} differs from its "
                                f"source's {source_crcs.get(s)}")
    metrics: dict[str, int] = {}
    mode = "deep" if args.deep else "shallow"
    if args.deep and not findings:
        table_uri = None
        if plan_table is not None:
            # A name of its own per run: workers cache the table by its URI
            # (_PLANS), and the same plan checked against a re-validated
            # catalog must not be compared with the old catalog's CRCs.
            table_uri = storage.join(work, VERIFY_DIR,
                                     f"{split}.{uuid.uuid4().hex[:16]}.parquet")
            from beam_jobs.catalog import write_table

            write_table(table_uri, plan_table.select(["shard", "index", "filename", "data_crc"]))
        elements = [{"path": storage.join(output, shard_name(prefix, i, stats["num_shards"])),
                     "shard": i, "crc32c": e["crc32c"], "num_bytes": e.get("num_bytes")}
                    for i, e in enumerate(stats["shards"])]
        options = make_options(beam_args, default_job_name=job_name("ssl-verify", split),
                               work_bytes=int(stats.get("num_bytes") or 0))
        p = beam.Pipeline(options=options)
        results_path = storage.join(work, VERIFY_DIR, f"{split}.deep.json")

        def collect(results: list[dict[str, Any]]) -> None:
            storage.write_text(results_path, json.dumps(sorted(results, key=lambda r: r["shard"])))

        (
            p
            | "Shards" >> beam.Create(elements)
            | "Spread" >> beam.Reshuffle()
            | "DeepCheck" >> beam.ParDo(DeepCheck(split, table_uri, len(elements),
                                                  progress_dir(work, "verify", split),
                                                  record_keys(names.kind)))
            | "Collect" >> beam.combiners.ToList()
            | "Write" >> beam.Map(collect)
        )
        with Progress(split, progress_dir(work, "verify", split), len(elements),
                      total_records=int(stats["num_examples"]),
                      total_bytes=int(stats.get("num_bytes") or 0), logger=log):
            result = p.run()
            result.wait_until_finish()
        metrics = counters(result)
        deep = json.loads(storage.read_text(results_path))
        storage.delete([results_path] + ([table_uri] if table_uri else []))
        for r in deep:
            findings.extend(r["findings"])
    report = {
        "split": split,
        "ok": not findings,
        "mode": mode,
        "findings": findings[:200],
        "num_findings": len(findings),
        "num_shards": stats["num_shards"],
        "num_examples": stats["num_examples"],
        "plan_sha256": verified_plan,
        "stats_uri": spath,
        # Which build this verdict is about (its stats file, byte for byte).
        "stats_sha256": hashlib.sha256(stats_bytes).hexdigest(),
        "built_at": stats.get("built_at"),
        "verified_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 3),
        "metrics": metrics,
        "code_version": __version__,
    }
    storage.write_text(report_uri(work, split), json.dumps(report, indent=1) + "\n",
                       "application/json")
    if metrics:
        print(f"{split}: metrics {json.dumps(metrics, sort_keys=True)}", flush=True)
    if findings:
        msg = f"{split}: verification FAILED ({len(findings)} problems):\n  " + "\n  ".join(findings[:20])
        raise VerificationFailed(msg)
    print(f"{split}: verified ({mode}): {stats['num_examples']:,} records in "
          f"{stats['num_shards']} shards match the plan", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except VerificationFailed as err:
        # Every failure says why on stdout (the Airflow task log), also those
        # found before any shard is looked at (no stats, another plan).
        print(err, flush=True)
        return 1
    return 0


__all__ = ["VerificationFailed", "deep_check_shard", "report_uri", "run",
           "shallow_findings"]

if __name__ == "__main__":
    sys.exit(main())
