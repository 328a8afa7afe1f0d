"""Beam job: build one split's shards from its plan, copying records byte for byte.

Plan mode (a labelled split or the reshuffle)::

    python -m beam_jobs.building.build --split=train128116.1 \\
        --plan_uri=/data/ssl/_work/plans/train128116.1.csv \\
        --catalog_dir=/data/ssl/_work/catalog/5160864c129f5846 \\
        --output_uri=/data/ssl

Copy mode (the validation set, copied beside the splits as the seed's
procedure does)::

    python -m beam_jobs.building.build --split=validation --copy_from=/data/imagenet --output_uri=/data/ssl

What it guarantees:

* Output ``{output_uri}/{split}-SSSSS-of-NNNNN`` holds exactly the planned
  records in planned order, each byte-identical to its source record (the
  framed bytes are copied; nothing is parsed or re-serialized).
* It reads only what the split needs: one ranged read per record, at the
  offset and length the catalog recorded (read amplification ~1.0). Every
  record read is checked against the catalog (framed length, both CRC32Cs,
  the stored data CRC), so a source changed since validation fails the job.
* Memory is bounded by a batch of records (``BATCH_BYTES``, 1 MiB, or one
  record if it is larger), not by the shard, the split or the dataset.
* The job never writes a published name: shards go to a staging folder
  ``{work_uri}/staging/{split}/{token}/`` (each file appears only when
  complete), with a small sidecar per finished shard. They take their final
  names only when the DAG's ``publish_manifest`` has seen them verified
  (``beam_jobs.publishing.commit``). A killed job leaves nothing partial anywhere a
  reader looks; rerunning it reuses the shards already staged (byte-identical:
  the bytes are a function of the plan and the catalog's records, which name
  the staging folder through ``token``).
* Per-shard stats (records, bytes, CRC32C of the file, bytes fetched from the
  source) go to ``{work_uri}/stats/{split}.json`` for the verifier and the
  manifest; they are written last and say the staged split is complete.

Exit codes: 0 built, 1 the plan or the source is unusable (the message says
which names, files or records), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import sys
import threading
import time
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from beam_jobs import __version__, storage
from beam_jobs.building import split_job
from beam_jobs.building.split_job import SplitJob
from beam_jobs.core import BuildStats, ShardStats, StagedShard
from beam_jobs.faults import failpoint
from beam_jobs.layout import (
    ShardSetError,
    file_pattern,
    journal_uri,
    records_uri,
    shard_name,
    shard_set,
    staging_dir,
    staging_root,
    stats_uri,
)
from beam_jobs.pipeline import (
    counters,
    job_name,
    make_options,
    new_pipeline,
    setup_logging,
    stage_template,
)
from beam_jobs.planning.algorithm import PlanError, catalog_positions, parse_plan_table
from beam_jobs.process import freeze_heap_at_exit
from beam_jobs.progress import Progress, mark_done, progress_dir
from beam_jobs.source.catalog import REPORT_FILE, read_catalog, read_table, write_table
from beam_jobs.source.tfrecord import RecordError, Writer, check_records, iter_framed
from beam_jobs.storage import RangeReader, crc32c_hex

log = logging.getLogger("beam_jobs.building.build")


class BuildError(RuntimeError):
    """The split cannot be built as planned; the message says why."""


# --------------------------------------------------------------------------- reading records


# Records are read, checked and written in batches of about this many bytes:
# per-record Python work stays a pread (or ranged GET), two slices and a CRC,
# the rest is vectorised over the batch; memory stays a batch, never the
# shard. Measured side by side (COUNT's 1 KB and BYTES' 110 KB records), 1 MiB
# is as fast as 4 MiB for small records and faster for large ones, whose
# batches then stay in the CPU caches.
BATCH_BYTES = 1024 * 1024


# One local worker's throughput (benchmarks/RESULTS.md, 2 cores): ~700 MB/s
# of 110 KB records, ~170,000 records/s of 1 KB ones.
WORKER_BYTES_PER_S = 700e6
WORKER_RECORDS_PER_S = 170e3


def estimated_seconds(num_bytes: int, num_records: int | None) -> float:
    """One local worker's time for a build, roughly: decides between an
    in-process DirectRunner and one worker process per core."""
    return num_bytes / WORKER_BYTES_PER_S + (num_records or 0) / WORKER_RECORDS_PER_S


def batches(lengths: np.ndarray, max_bytes: int) -> Iterator[tuple[int, int]]:
    """Cut rows with these byte lengths into consecutive [lo, hi) runs of at
    most ``max_bytes`` (at least one row each)."""
    n = len(lengths)
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    lo = 0
    while lo < n:
        base = int(ends[lo - 1]) if lo else 0
        hi = int(np.searchsorted(ends, base + max_bytes, side="right"))
        hi = max(hi, lo + 1)
        yield lo, hi
        lo = hi


# Ranged GETs in flight per shard on gs://. Each takes tens of milliseconds, so
# many must be in flight; one worker process's reads of ~112 KB records stop
# getting faster at 48-64, where the client's CPU per GET is the limit. 64 also
# keeps a faster core busy; more only costs CPU (threads contend for the GIL).
GCS_READ_THREADS = 64


def default_read_threads(uri: str) -> int:
    """GCS ranged reads are latency-bound: many in flight. Local reads: one."""
    return GCS_READ_THREADS if storage.is_gcs(uri) else 1


# --------------------------------------------------------------------------- the build table


def build_table(
    plan_uri: str, catalog_dir: str, source_uri: str | None = None
) -> tuple[pa.Table, list[str], str]:
    """Join a plan file with the catalog: one row per output record, sorted by
    (shard, index), with the source file, offset, length and data CRC.

    ``source_uri``: the folder the source is in now. The catalog names each
    file where validation read it; a catalog is keyed by the source's
    fingerprint (base names and identities, not the folder), so the same files
    moved or copied with ``cp -a`` share it, and they are read by base name
    from ``source_uri``. None: read them where validation did.

    Returns the table, the source files it reads, and the plan's sha256.
    Raises PlanError (missing names, malformed file) before anything is written.
    """
    raw = _read_plan(plan_uri)
    sha = hashlib.sha256(raw).hexdigest()
    records = records_uri(catalog_dir, sha)
    if storage.exists(records):
        # The plan task joined this plan with this catalog already: read its
        # rows only, not the whole catalog (the verifier joins independently).
        plan = joined = read_table(records, read_dictionary=["file"])
    else:
        plan = parse_plan_table(raw, plan_uri)
        joined = _join_catalog(plan, catalog_dir, plan_uri)
    files, file_ids = _file_ids(joined.column("file"), source_uri)
    table = pa.table(
        {
            "shard": plan.column("shard"),
            "index": plan.column("index"),
            "filename": plan.column("filename"),
            "file_id": file_ids,
            "offset": joined.column("offset"),
            "length": joined.column("length"),
            "data_crc": joined.column("data_crc"),
        }
    )
    return table, files, sha


def _read_plan(plan_uri: str) -> bytes:
    """The plan file's bytes; raises PlanError unless it exists and is UTF-8 text."""
    try:
        raw = storage.read_bytes(plan_uri)
        raw.decode("utf-8")
    except FileNotFoundError:
        raise PlanError(f"plan file {plan_uri} does not exist") from None
    except UnicodeDecodeError as err:
        raise PlanError(f"{plan_uri}: not UTF-8 text ({err})") from None
    return raw


def _join_catalog(plan: pa.Table, catalog_dir: str, plan_uri: str) -> pa.Table:
    """The catalog's file, offset, length and data CRC of each planned name, in
    the plan's order (``catalog_positions``: a PlanError if one is missing)."""
    catalog = read_catalog(catalog_dir, ["filename", "file", "offset", "length", "data_crc"])
    pos = catalog_positions(
        plan.column("filename"),
        catalog.column("filename"),
        plan.column("shard"),
        plan.column("index"),
        plan_uri,
    )
    return catalog.select(["file", "offset", "length", "data_crc"]).take(pos)


def _file_ids(file_column: pa.ChunkedArray, source_uri: str | None) -> tuple[list[str], pa.Array]:
    """The sorted source files, and each record's index into them (its file
    read by base name from ``source_uri`` when given).

    No Python object per record: dictionary-encode, then renumber the (small)
    dictionary."""
    encoded = pc.dictionary_encode(file_column).combine_chunks()
    seen = encoded.dictionary.to_pylist()
    if source_uri is not None:
        seen = [storage.join(source_uri, storage.basename(f)) for f in seen]
    files = sorted(seen)
    where = {f: i for i, f in enumerate(files)}
    rank = np.array([where[f] for f in seen], dtype=np.int32)
    return files, pa.array(rank[encoded.indices.to_numpy(zero_copy_only=False)], pa.int32())


def build_token(plan_sha: str, table: pa.Table, files: list[str]) -> str:
    """Name of the staging folder: a function of the plan *and* of the source
    records it copies (file, offset, length, data CRC), so that shards staged
    from an older source (replaced and validated again since) are never reused."""
    h = hashlib.sha256(plan_sha.encode())
    h.update("\n".join(files).encode("utf-8"))
    for col in ("file_id", "offset", "length", "data_crc"):
        h.update(np.ascontiguousarray(table.column(col).to_numpy()).tobytes())
    return h.hexdigest()[:16]


def check_source_unchanged(catalog_dir: str, files: Iterable[str]) -> None:
    """Fail if a source shard the build reads changed since validation (size,
    and CRC32C and generation on GCS; mtime locally)."""
    report = json.loads(storage.read_text(storage.join(catalog_dir, REPORT_FILE)))
    known = {storage.basename(s["path"]): s for s in report["shards"]}  # the source may move
    changed = []
    for path in files:
        then = known.get(storage.basename(path))
        now = storage.stat(path)
        if then is None or now is None:
            changed.append(
                f"{path}: {'missing now' if now is None else 'not in the validation report'}"
            )
            continue
        then_info = storage.FileInfo(
            path, then["size"], then.get("crc32c"), then.get("generation"), then.get("mtime_ns")
        )
        if then_info.identity() != now.identity():
            changed.append(f"{path}: was {then_info.identity()}, now {now.identity()}")
    if changed:
        raise BuildError(
            f"{len(changed)} source shard(s) changed since validation (re-run validation): "
            + "; ".join(changed[:5])
        )


# --------------------------------------------------------------------------- writing shards


_TABLES: dict[str, tuple[pa.Table, np.ndarray]] = {}
_TABLES_LOCK = threading.Lock()


def _load_build_table(uri: str, num_shards: int) -> tuple[pa.Table, np.ndarray]:
    """The build table, read once per worker process (runners may create many
    DoFn instances; the table is immutable, named by the plan's hash)."""
    with _TABLES_LOCK:
        if uri not in _TABLES:
            table = read_table(uri)
            starts = np.searchsorted(table.column("shard").to_numpy(), np.arange(num_shards + 1))
            _TABLES.clear()  # keep one: a worker builds one split at a time
            _TABLES[uri] = (table, starts)
        return _TABLES[uri]


@dataclasses.dataclass(frozen=True)
class ShardTarget:
    """Where one split's shards are written and how their records are read:
    what :class:`WriteShard` (a build's DoFn) and :func:`write_shard` (one
    shard) share. ``prefix``: the split's file prefix in the source's layout
    (``beam_jobs.layout``; None: the split's name)."""

    split: str
    num_shards: int
    output_uri: str
    staging: str
    read_threads: int
    prefix: str | None = None


class WriteShard(beam.DoFn):
    """Write one output shard to staging from its planned records."""

    def __init__(
        self, table_uri: str, files: list[str], target: ShardTarget, progress: str | None = None
    ) -> None:
        self.progress = progress  # marker folder (beam_jobs.progress)
        self.table_uri = table_uri
        self.files = files
        self.target = target
        self.records = Metrics.counter("ssl_splits", "records_written")
        self.bytes_written = Metrics.counter("ssl_splits", "bytes_written")
        self.bytes_read = Metrics.counter("ssl_splits", "bytes_read")
        self.reused = Metrics.counter("ssl_splits", "shards_reused")

    def setup(self) -> None:
        setup_logging()
        freeze_heap_at_exit()
        # One reader per DoFn instance: source files stay open across shards
        # (a reshuffle shard reads from nearly every source file).
        self._reader = RangeReader()

    def teardown(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()

    def _rows(self, shard: int) -> pa.Table:
        table, starts = _load_build_table(self.table_uri, self.target.num_shards)
        lo, hi = int(starts[shard]), int(starts[shard + 1])
        return table.slice(lo, hi - lo)

    def process(self, shard: int) -> Iterator[dict[str, Any]]:
        stats = write_shard(shard, self._rows(shard), self.files, self.target, self._reader)
        if stats.get("reused"):
            self.reused.inc()
        else:
            self.records.inc(stats["num_records"])
            self.bytes_written.inc(stats["num_bytes"])
            self.bytes_read.inc(stats["bytes_read"])
        failpoint("build.shard")
        mark_done(self.progress, shard, stats["num_records"], stats["num_bytes"])
        yield stats


def _sidecar(staging: str, shard: int) -> str:
    return storage.join(staging, f"shard-{shard:05d}.json")


def _write_sidecar(staging: str, stats: ShardStats) -> None:
    """Keep a staged shard's stats beside it, for a later attempt to reuse it.
    Bookkeeping (no fsync): a lost sidecar only means the shard is rewritten."""
    storage.write_text(
        _sidecar(staging, stats.shard),
        json.dumps(stats.sidecar()) + "\n",
        "application/json",
        durable=False,
    )


def _reusable(staging: str, shard: int, name: str, final: str) -> ShardStats | None:
    """Stats of a shard a previous attempt finished, if its staged file is
    still there and intact by size and CRC32C (paths as they are now: the
    output folder may have been moved since)."""
    side = _sidecar(staging, shard)
    if not storage.exists(side):
        return None
    stats = ShardStats.from_dict(json.loads(storage.read_text(side)))
    staged = storage.join(staging, name)
    info = storage.stat(staged)
    if (
        info is not None
        and info.size == stats.num_bytes
        and storage.file_crc32c(staged) == stats.crc32c
    ):
        return dataclasses.replace(stats, staged=staged, path=final, reused=True)
    return None


def copy_records(
    rows: pa.Table,
    files: list[str],
    reader: RangeReader,
    staged: str,
    *,
    read_threads: int,
    what: str,
) -> Writer:
    """Write the framed records ``rows`` point at (file_id, offset, length,
    data_crc; ``index`` 0..n-1) to a new file ``staged``, in row order, in
    batches of ``BATCH_BYTES``: one ranged read per record, then each batch is
    checked against the catalog (framing, both CRC32Cs, the stored data CRC)
    before it is written. Returns the closed file's Writer (counts, CRC32C)."""
    file_ids = rows.column("file_id").to_numpy()
    offsets = rows.column("offset").to_numpy()
    lengths = rows.column("length").to_numpy()
    crcs = rows.column("data_crc").to_numpy().astype(np.uint32)
    indices = rows.column("index").to_numpy()
    if len(indices) and not np.array_equal(indices, np.arange(len(indices))):
        raise BuildError(f"{what}: rows are not indices 0..{len(indices) - 1}")
    with storage.open_write(staged) as f:
        w = Writer(f)
        batch_bytes = BATCH_BYTES
        if read_threads > 1 and len(lengths):
            # Remote reads are latency-bound: a batch keeps every thread busy
            # several times over, whatever the record size (bounded memory still).
            batch_bytes = max(BATCH_BYTES, 4 * read_threads * int(lengths.mean()))
        for lo, hi in batches(lengths, batch_bytes):
            records = reader.read_many(
                files,
                file_ids[lo:hi].tolist(),
                offsets[lo:hi].tolist(),
                lengths[lo:hi].tolist(),
                read_threads,
            )
            stored, bad, why = check_records(records, lengths[lo:hi])
            if bad < 0:
                differs = np.flatnonzero(stored != crcs[lo:hi])
                if len(differs):
                    bad, why = int(differs[0]), "its stored data CRC differs from the catalog's"
            if bad >= 0:
                i = lo + bad
                raise BuildError(
                    f"{what}: record {rows.column('filename')[i].as_py()} at "
                    f"{files[file_ids[i]]} offset {offsets[i]}: {why}; the source changed since "
                    "validation (validate it again)"
                )
            w.write_framed_batch(records)
    return w


def write_shard(
    shard: int,
    rows: pa.Table,
    files: list[str],
    target: ShardTarget,
    reader: RangeReader | None = None,
) -> dict[str, Any]:
    """Copy a shard's planned records into a staged file; return its stats.

    ``reader`` keeps source files open across calls (one is made and closed
    here if not given)."""
    split, num_shards, staging = target.split, target.num_shards, target.staging
    t0 = time.monotonic()
    name = shard_name(target.prefix or split, shard, num_shards)
    final = storage.join(target.output_uri, name)
    reused = _reusable(staging, shard, name, final)
    if reused is not None:
        log.debug(
            "%s: shard %d/%d already staged by an earlier attempt, reused",
            split,
            shard + 1,
            num_shards,
        )
        return reused.to_dict()
    staged = storage.join(staging, name)
    w, bytes_read = _copy_counting_reads(
        rows,
        files,
        reader,
        staged,
        read_threads=target.read_threads,
        what=f"{split}: shard {shard}",
    )
    names = rows.column("filename")
    stats = ShardStats(
        shard=shard,
        path=final,
        staged=staged,
        num_records=w.num_records,
        num_bytes=w.num_bytes,
        crc32c=crc32c_hex(w.crc32c),
        bytes_read=bytes_read,
        first=names[0].as_py() if len(names) else None,
        last=names[-1].as_py() if len(names) else None,
    )
    _write_sidecar(staging, stats)
    log.debug(
        "%s: shard %d/%d staged: %d records, %.1f MB in %.2f s",
        split,
        shard + 1,
        num_shards,
        w.num_records,
        w.num_bytes / 1e6,
        time.monotonic() - t0,
    )
    return stats.to_dict()


def _copy_counting_reads(
    rows: pa.Table,
    files: list[str],
    reader: RangeReader | None,
    staged: str,
    *,
    read_threads: int,
    what: str,
) -> tuple[Writer, int]:
    """:func:`copy_records` with ``reader`` (one made and closed here if None);
    returns the writer and the bytes the reader fetched for these rows
    (retried requests included)."""
    own_reader = reader is None
    reader = reader or RangeReader()
    fetched_before = reader.bytes_fetched
    try:
        w = copy_records(rows, files, reader, staged, read_threads=read_threads, what=what)
    finally:
        if own_reader:
            reader.close()
    return w, reader.bytes_fetched - fetched_before


class CopyShard(beam.DoFn):
    """Copy one whole shard (the validation set) to staging, counting and
    checking its records on the way."""

    def __init__(
        self,
        split: str,
        output_uri: str,
        staging: str,
        progress: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self.progress = progress  # marker folder (beam_jobs.progress)
        self.prefix = prefix  # the split's file prefix in the source's layout
        self.split = split
        self.output_uri = output_uri
        self.staging = staging

    def setup(self) -> None:
        setup_logging()
        freeze_heap_at_exit()

    def process(self, element: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stats = copy_shard(
            element,
            split=self.split,
            output_uri=self.output_uri,
            staging=self.staging,
            prefix=self.prefix,
        )
        mark_done(self.progress, element["shard"], stats["num_records"], stats["num_bytes"])
        failpoint("build.shard")
        yield stats


def copy_shard(
    element: dict[str, Any], *, split: str, output_uri: str, staging: str, prefix: str | None = None
) -> dict[str, Any]:
    src, shard, num_shards = element["path"], element["shard"], element["num_shards"]
    name = shard_name(prefix or split, shard, num_shards)
    final = storage.join(output_uri, name)
    reused = _reusable(staging, shard, name, final)
    if reused is not None:
        return reused.to_dict()
    staged = storage.join(staging, name)
    with storage.open_read(src) as fin, storage.open_write(staged) as fout:
        w = Writer(fout)
        for item in iter_framed(fin, src):
            if isinstance(item, RecordError):
                raise BuildError(f"{split}: cannot copy {src}: {item}")
            w.write(item.data)
    stats = ShardStats(
        shard=shard,
        path=final,
        staged=staged,
        num_records=w.num_records,
        num_bytes=w.num_bytes,
        crc32c=crc32c_hex(w.crc32c),
        bytes_read=w.num_bytes,
        source=src,
    )
    _write_sidecar(staging, stats)
    log.debug("%s: shard %d/%d copied: %d records", split, shard + 1, num_shards, w.num_records)
    return stats.to_dict()


# --------------------------------------------------------------------------- finishing


def finish(
    stats: list[dict[str, Any]],
    *,
    split: str,
    num_shards: int,
    output_uri: str,
    staging: str,
    expected: list[int] | None,
    meta: dict[str, Any],
    stats_path: str,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Check every shard is staged as planned and write the split's stats
    (``prefix``: the split's file prefix in its source's layout).

    The stats file is written last: it is what says the staged split is
    complete. Nothing is renamed here: the shards keep their staged names
    until ``publish_manifest`` has seen them verified.
    """
    shards = sorted((ShardStats.from_dict(s) for s in stats), key=lambda s: s.shard)
    _check_staged(shards, split, num_shards, expected)
    summary = BuildStats(
        **meta,
        split=split,
        num_shards=num_shards,
        num_examples=sum(s.num_records for s in shards),
        num_bytes=sum(s.num_bytes for s in shards),
        # Measured by the readers (this attempt's shards; reused shards read nothing now).
        bytes_read=sum(s.bytes_read for s in shards if not s.reused),
        bytes_written=sum(s.num_bytes for s in shards if not s.reused),
        shards_reused=sum(1 for s in shards if s.reused),
        staging=staging,
        file_pattern=file_pattern(output_uri, prefix or split, num_shards),
        shards=[
            StagedShard(s.path, s.staged, s.num_records, s.num_bytes, s.crc32c) for s in shards
        ],
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        code_version=__version__,
    ).to_dict()
    storage.write_text(stats_path, json.dumps(summary, indent=1) + "\n", "application/json")
    log.info(
        "%s: staged: %d shards, %d records, %.1f MB (%d shards reused)",
        split,
        num_shards,
        summary["num_examples"],
        summary["num_bytes"] / 1e6,
        summary["shards_reused"],
    )
    return summary


def _check_staged(
    shards: list[ShardStats], split: str, num_shards: int, expected: list[int] | None
) -> None:
    """Raise BuildError unless ``shards`` (sorted) are shards 0..num_shards-1
    holding the planned numbers of records (``expected``; None: not checked)."""
    got = [s.shard for s in shards]
    if got != list(range(num_shards)):
        raise BuildError(f"{split}: staged shards {got[:10]}... are not 0..{num_shards - 1}")
    if expected is not None:
        bad = [(s.shard, s.num_records, e) for s, e in zip(shards, expected) if s.num_records != e]
        if bad:
            raise BuildError(
                f"{split}: shard record counts differ from the plan "
                f"(shard, written, planned): {bad[:5]}"
            )


class StageSplit(beam.PTransform):
    """Shards (shard numbers for :class:`WriteShard`, source files for
    :class:`CopyShard`) -> the split's stats: every shard staged by ``fn``,
    checked against the plan, the stats written (:func:`finish`, whose
    keyword arguments this takes). The Reshuffle after the shards lets a
    runner spread them over workers instead of fusing them onto one."""

    def __init__(self, fn: beam.DoFn, **finish_kwargs: Any) -> None:
        super().__init__()
        self._fn = fn
        self._finish = finish_kwargs

    def expand(self, shards: beam.PCollection) -> beam.PCollection:
        kw = self._finish
        return (
            shards
            | "Spread" >> beam.Reshuffle()
            | type(self._fn).__name__ >> beam.ParDo(self._fn)
            | "Collect" >> beam.combiners.ToList().without_defaults()
            | "Finish" >> beam.Map(lambda stats: finish(stats, **kw))
        )


def clear_other_stagings(work: str, output: str, split: str, keep: str) -> None:
    """Remove staging folders of ``split`` left by builds of other plans or
    sources (interrupted or superseded), except ``keep`` and any folder a
    publication in progress still needs (its journal names it)."""
    pending: set[str] = set()
    try:
        journal = json.loads(storage.read_text(journal_uri(output)))
        pending = {sp.get("staging") for sp in journal.get("splits", {}).values()}
    except FileNotFoundError:
        pass
    root = staging_root(work, split)
    tokens = {storage.dirname(p) for p in storage.list_tree(root)}
    for folder in sorted(tokens - {keep} - pending):
        if storage.dirname(folder) == root:
            storage.delete_tree(folder)


def copy_sources(src: str, split: str) -> list[storage.FileInfo]:
    """The source files a copied split (the validation set) is made of, by
    shard index; raises BuildError unless they are one complete shard set."""
    try:
        return shard_set(src, split)
    except ShardSetError as err:
        raise BuildError(f"nothing to copy: {err}") from None


# --------------------------------------------------------------------------- the job


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, SplitJob, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.building.build",
        description="Build one split's TFRecord shards from its plan (records copied byte for "
        "byte with ranged reads), or copy the validation shards; they are staged "
        "under the work folder until the DAG publishes them.",
        epilog="Any other --flag is a Beam pipeline option (--runner, --project, --region, "
        "--temp_location, --direct_num_workers, ...).",
    )
    split_job.add_args(p)
    p.add_argument(
        "--source_uri",
        help="the source folder now, if it moved since validation "
        "(plan mode; default: where validation read it)",
    )
    p.add_argument(
        "--read_threads",
        type=int,
        default=0,
        help=f"ranged reads in flight per shard (default: {GCS_READ_THREADS} on gs://, 1 locally)",
    )
    p.add_argument(
        "--skip_source_check",
        action="store_true",
        help="do not compare the source shards with the validation report",
    )
    return split_job.parse(p, argv)


@dataclasses.dataclass
class Stage:
    """What a build stages: one element per shard for ``fn`` (a
    :class:`WriteShard` or a :class:`CopyShard`), where, and how much work it is."""

    elements: list[Any]
    fn: beam.DoFn
    num_shards: int
    staging: str
    expected: list[int] | None  # planned records per shard (None: a copy)
    work_bytes: int
    work_records: int | None


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the build; return the split's stats. Raises PlanError/BuildError."""
    setup_logging()
    args, job, beam_args = parse_args(argv)
    t0 = time.monotonic()
    meta: dict[str, Any] = {"job_name": job_name("ssl", job.split), "layout": job.naming.spec}
    stage = plan_stage(args, job, meta) if args.plan_uri else copy_stage(job, meta)
    p_options = make_options(
        beam_args,
        default_job_name=meta["job_name"],
        work_bytes=stage.work_bytes,
        work_seconds=estimated_seconds(stage.work_bytes, stage.work_records),
    )
    meta["runner"] = p_options.get_all_options()["runner"]
    p = new_pipeline(p_options)
    _ = p | "Shards" >> beam.Create(stage.elements) | "Stage" >> stage_split(job, stage, meta)
    staged = stage_template(p, p_options, "build")
    if staged:  # described for Dataflow, not run: nothing of an earlier build is touched
        return {**staged, "split": job.split}
    result = run_stage(p, job, stage)
    summary = json.loads(storage.read_text(stats_uri(job.work_uri, job.split)))
    print_done(job.split, summary, time.monotonic() - t0, counters(result))
    return summary


def plan_stage(args: argparse.Namespace, job: SplitJob, meta: dict[str, Any]) -> Stage:
    """Plan mode: the build table joined and written to staging, one
    :class:`WriteShard` element per shard; adds the plan's facts to ``meta``."""
    split = job.split
    source = storage.normalize(args.source_uri) if args.source_uri else None
    table, files, sha = build_table(args.plan_uri, args.catalog_dir, source)
    work_bytes = int(pc.sum(table.column("length")).as_py() or 0)
    if not args.skip_source_check:
        check_source_unchanged(args.catalog_dir, files)
    shards_col = table.column("shard").to_numpy()
    num_shards = int(shards_col.max()) + 1
    expected = np.bincount(shards_col, minlength=num_shards).tolist()
    staging = staging_dir(job.work_uri, split, build_token(sha, table, files))
    table_uri = storage.join(staging, "records.parquet")
    write_table(table_uri, table)
    threads = args.read_threads or default_read_threads(files[0])
    meta.update(
        plan_uri=args.plan_uri,
        plan_sha256=sha,
        catalog_dir=args.catalog_dir,
        source_files=len(files),
    )
    meta["source_uri"] = storage.dirname(files[0])  # where the records were read
    log.info(
        "%s: building %d records in %d shards from %d source files (%d read threads)",
        split,
        table.num_rows,
        num_shards,
        len(files),
        threads,
    )
    progress = progress_dir(job.work_uri, "build", split)
    target = ShardTarget(split, num_shards, job.output_uri, staging, threads, job.prefix)
    fn = WriteShard(table_uri, files, target, progress)
    return Stage(
        list(range(num_shards)), fn, num_shards, staging, expected, work_bytes, table.num_rows
    )


def copy_stage(job: SplitJob, meta: dict[str, Any]) -> Stage:
    """Copy mode (the validation set): one :class:`CopyShard` element per
    source shard; adds the source's fingerprint to ``meta``."""
    src = job.copy_from
    assert src is not None
    shards = copy_sources(src, job.prefix)
    num_shards = len(shards)
    fp = hashlib.sha256(
        "\n".join(f"{storage.basename(f.path)}\t{f.identity()}" for f in shards).encode()
    ).hexdigest()
    staging = staging_dir(job.work_uri, job.split, fp[:16])
    meta.update(copied_from=src, source_fingerprint=fp)
    elements = [
        {"path": f.path, "shard": i, "num_shards": num_shards} for i, f in enumerate(shards)
    ]
    progress = progress_dir(job.work_uri, "build", job.split)
    fn = CopyShard(job.split, job.output_uri, staging, progress, job.prefix)
    return Stage(elements, fn, num_shards, staging, None, sum(f.size for f in shards), None)


def stage_split(job: SplitJob, stage: Stage, meta: dict[str, Any]) -> StageSplit:
    """The graph's one transform: every shard staged, the split's stats written."""
    return StageSplit(
        stage.fn,
        split=job.split,
        num_shards=stage.num_shards,
        output_uri=job.output_uri,
        staging=stage.staging,
        expected=stage.expected,
        meta=meta,
        stats_path=stats_uri(job.work_uri, job.split),
        prefix=job.prefix,
    )


def run_stage(p: beam.Pipeline, job: SplitJob, stage: Stage) -> Any:
    """Run the pipeline, with progress lines, after clearing what an earlier
    build left; returns the pipeline result."""
    work, split = job.work_uri, job.split
    # Stats say a staged build is complete: an earlier build's must not outlive
    # the start of this one (if this one dies, verify finds no stats, not old ones).
    storage.delete([stats_uri(work, split)])
    clear_other_stagings(work, job.output_uri, split, keep=stage.staging)
    with Progress(
        split,
        progress_dir(work, "build", split),
        stage.num_shards,
        total_records=sum(stage.expected) if stage.expected is not None else None,
        total_bytes=stage.work_bytes,
        logger=log,
    ):
        result = p.run()
        result.wait_until_finish()
    return result


def print_done(
    split: str, summary: dict[str, Any], seconds: float, metrics: dict[str, Any]
) -> None:
    """The job's closing lines on stdout: what was staged, and its metrics."""
    print(
        f"{split}: {summary['num_examples']:,} records in {summary['num_shards']} shards "
        f"staged ({summary['bytes_written'] / 1e6:,.1f} MB written, "
        f"{summary['bytes_read'] / 1e6:,.1f} MB read, {summary['shards_reused']} shards "
        f"reused) in {seconds:.1f} s -> {summary['staging']} (published by publish_manifest "
        "once verified)",
        flush=True,
    )
    if metrics:
        print(f"{split}: metrics {json.dumps(metrics, sort_keys=True)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    freeze_heap_at_exit()
    try:
        run(argv)
    except (PlanError, BuildError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
