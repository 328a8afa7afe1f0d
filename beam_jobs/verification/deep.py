"""The deep check: a Beam job that re-reads every staged record of a split.

Run by ``beam_jobs.verification.verify --deep`` (the DAG's ``deep_verify: always``) after
the exact check from metadata passed. One element per shard, so the data
never streams through the Airflow worker, and on Dataflow the shards spread
over workers. Per record: both framing CRCs, the planned file name at its
position, and its data CRC against the source record's (from the catalog:
byte identity to the source without reading the source again). The exact
check already proves the same bytes; this one names the record that differs
and reads the Examples themselves.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_jobs import storage
from beam_jobs.layout import verify_dir
from beam_jobs.pipeline import (
    counters,
    job_name,
    make_options,
    new_pipeline,
    setup_logging,
    stage_template,
)
from beam_jobs.process import freeze_heap_at_exit
from beam_jobs.progress import Progress, mark_done, progress_dir
from beam_jobs.source.catalog import read_table, write_table
from beam_jobs.source.example_proto import (
    COMMON_KEYS,
    ExampleError,
    RecordKeys,
    parse_image_record,
    record_keys,
)
from beam_jobs.source.tfrecord import Framed, RecordError, iter_framed

MAX_FINDINGS = 20

Planned = tuple[list[str], list[int]]


class _CrcTee:
    """Reads through to a file and hashes the bytes as read (CRC32C), so that
    the file is read once."""

    def __init__(self, f: Any) -> None:
        import google_crc32c

        self._f = f
        self._extend = google_crc32c.extend
        self.crc = 0
        self.nbytes = 0

    def read(self, n: int) -> bytes:
        b = self._f.read(n)
        self.crc = self._extend(self.crc, b)
        self.nbytes += len(b)
        return b


def _unplanned(item: Framed, name: str, data_crc: int | None, keys: RecordKeys) -> str | None:
    """What is wrong with a staged record where the plan puts ``name`` (whose
    source record has this data CRC; None: not known), or None."""
    try:
        got = parse_image_record(item.data, keys).filename
    except ExampleError as err:
        got = f"<unparseable: {err}>"
    if got != name:
        return f"holds {got}, the plan says {name}"
    if data_crc is not None and item.data_crc != data_crc:
        return f"({got}) differs from the source record"
    return None


def deep_check_shard(
    path: str,
    shard: int,
    split: str,
    expected_crc: str | None,
    planned: Planned | None,
    keys: RecordKeys = COMMON_KEYS,
) -> dict[str, Any]:
    """Re-read one shard: CRCs, count, file CRC32C, planned names and data CRCs."""
    findings: list[str] = []
    count = 0
    names, data_crcs = planned if planned is not None else (None, None)
    with storage.open_read(path) as f:
        tee = _CrcTee(f)
        for item in iter_framed(tee, path):
            if isinstance(item, RecordError):
                findings.append(f"{split}: shard {shard} record {count}: {item}")
                if item.fatal:
                    break
                count += 1
                continue
            if names is not None:
                if count >= len(names):
                    findings.append(
                        f"{split}: shard {shard} has more records than the plan's "
                        f"{len(names)} (extra record at byte offset {item.offset})"
                    )
                    break
                planned_crc = data_crcs[count] if data_crcs is not None else None
                finding = _unplanned(item, names[count], planned_crc, keys)
                if finding:
                    findings.append(f"{split}: shard {shard} index {count} {finding}")
            count += 1
            if len(findings) >= MAX_FINDINGS:
                break
    if names is not None and count < len(names) and len(findings) < MAX_FINDINGS:
        findings.append(f"{split}: shard {shard} has {count} records, the plan {len(names)}")
    crc, nbytes = tee.crc, tee.nbytes
    file_crc = f"{crc & 0xFFFFFFFF:08x}"
    if expected_crc is not None and not findings and file_crc != expected_crc:
        findings.append(
            f"{split}: shard {shard} CRC32C {file_crc} != expected {expected_crc}: {path}"
        )
    return {
        "shard": shard,
        "path": path,
        "num_records": count,
        "crc32c": file_crc,
        "bytes_read": nbytes,
        "findings": findings,
    }


# One plan table per worker process, shared by the DoFn instances and threads
# of that process (Dataflow runs several DoFn threads per process): loaded
# under a lock, keyed by its URI, which is unique per verification.
_PLANS: dict[str, tuple[pa.Table, np.ndarray]] = {}
_PLANS_LOCK = threading.Lock()


def _plan(uri: str, num_shards: int) -> tuple[pa.Table, np.ndarray]:
    with _PLANS_LOCK:
        if uri not in _PLANS:
            t = read_table(uri)
            _PLANS.clear()  # keep one: a worker verifies one split at a time
            _PLANS[uri] = (
                t,
                np.searchsorted(t.column("shard").to_numpy(), np.arange(num_shards + 1)),
            )
        return _PLANS[uri]


class DeepCheck(beam.DoFn):
    """One staged shard in, its deep-check result out."""

    def __init__(
        self,
        split: str,
        table_uri: str | None,
        num_shards: int,
        progress: str | None = None,
        keys: RecordKeys = COMMON_KEYS,
    ) -> None:
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
        freeze_heap_at_exit()

    def process(self, element: dict[str, Any]) -> Iterator[dict[str, Any]]:
        planned = None
        if self.table_uri:
            table, starts = _plan(self.table_uri, self.num_shards)
            lo, hi = int(starts[element["shard"]]), int(starts[element["shard"] + 1])
            rows = table.slice(lo, hi - lo)
            planned = (rows.column("filename").to_pylist(), rows.column("data_crc").to_pylist())
        out = deep_check_shard(
            element["path"], element["shard"], self.split, element.get("crc32c"), planned, self.keys
        )
        self.records.inc(out["num_records"])
        self.bad.inc(len(out["findings"]))
        self.bytes.inc(out["bytes_read"])
        mark_done(self.progress, element["shard"], out["num_records"], out["bytes_read"])
        yield out


class DeepVerify(beam.PTransform):
    """Shards (``{"path", "shard", "crc32c"}``) -> one deep-check result each,
    by ``check``.

    The Reshuffle after Create lets a runner spread the shards over workers
    instead of fusing them onto the one that created them."""

    def __init__(self, check: DeepCheck) -> None:
        super().__init__()
        self._fn = check

    def expand(self, shards: beam.PCollection) -> beam.PCollection:
        return shards | "Spread" >> beam.Reshuffle() | "DeepCheck" >> beam.ParDo(self._fn)


@dataclass(frozen=True)
class DeepResult:
    """The deep job's findings and counters; or, in template mode, what was staged."""

    findings: list[str]
    metrics: dict[str, int]
    staged: dict[str, Any] | None = None


def _write_plan_table(work: str, split: str, plan_table: pa.Table) -> str:
    """Write the planned records (shard, index, filename, data CRC) for the
    workers to read; return where."""
    # A name of its own per run: workers cache the table by its URI, and the
    # same plan checked against a re-validated catalog must not be compared
    # with the old catalog's CRCs.
    table_uri = storage.join(verify_dir(work), f"{split}.{uuid.uuid4().hex[:16]}.parquet")
    write_table(table_uri, plan_table.select(["shard", "index", "filename", "data_crc"]))
    return table_uri


def run_deep(
    split: str,
    work: str,
    stats: dict[str, Any],
    plan_table: pa.Table | None,
    beam_args: list[str],
    layout_kind: str = "common",
) -> DeepResult:
    """Run the deep check of a staged split (or stage it as a Dataflow template)."""
    table_uri = _write_plan_table(work, split, plan_table) if plan_table is not None else None
    elements = [
        {"path": e["staged"], "shard": i, "crc32c": e["crc32c"]}
        for i, e in enumerate(stats["shards"])
    ]
    options = make_options(
        beam_args,
        default_job_name=job_name("ssl-verify", split),
        work_bytes=int(stats.get("num_bytes") or 0),
    )
    results_path = storage.join(verify_dir(work), f"{split}.deep.json")

    def collect(results: list[dict[str, Any]]) -> None:
        storage.write_text(results_path, json.dumps(sorted(results, key=lambda r: r["shard"])))

    p = new_pipeline(options)
    (
        p
        | "Shards" >> beam.Create(elements)
        | "Verify"
        >> DeepVerify(
            DeepCheck(
                split,
                table_uri,
                len(elements),
                progress_dir(work, "verify", split),
                record_keys(layout_kind),
            )
        )
        | "Collect" >> beam.combiners.ToList().without_defaults()
        | "Write" >> beam.Map(collect)
    )
    staged = stage_template(p, options, "verify")
    if staged:  # template mode: the plan table stays for the job to read when launched
        return DeepResult([], {}, staged)
    with Progress(
        split,
        progress_dir(work, "verify", split),
        len(elements),
        total_records=int(stats["num_examples"]),
        total_bytes=int(stats.get("num_bytes") or 0),
        logger=None,
    ):
        result = p.run()
        result.wait_until_finish()
    metrics = counters(result)
    deep = json.loads(storage.read_text(results_path))
    storage.delete([results_path] + ([table_uri] if table_uri else []))
    return DeepResult([f for r in deep for f in r["findings"]], metrics)
