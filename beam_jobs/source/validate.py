"""Beam job: validate an ImageNet TFRecord source and write its catalog.

Reads every ``train-*`` shard under ``--source_uri`` (local path or gs://) and
checks each record: the framing and both CRC32Cs, that it parses as a
``tf.train.Example``, and its required features (non-empty ``image/encoded``,
``image/filename``, ``image/class/label`` in range, ``image/class/synset`` when
present). Across the set: file names follow ``train-SSSSS-of-NNNNN`` with one
``N``, no gaps; file names are unique; each label has one synset; an optional
expected total.

A source prepared by TensorFlow Datasets (``--layout=tfds:imagenet2012``,
detected from the file names when ``--layout`` is not given) is checked the
same way: shards ``imagenet2012-train.tfrecord-SSSSS-of-NNNNN``, features
``image``, ``file_name`` and ``label``, labels ``0..num_classes-1``. The report
records the layout (``"layout": "common"`` or ``"tfds:imagenet2012"``).

Writes to ``--catalog_dir``:
  * ``catalog.parquet``: one row per record (see ``beam_jobs.source.catalog.SCHEMA``),
    sorted by filename, only when the source is valid;
  * ``report.json``: counts per shard, totals, class histogram, and problems
    (the first few of each kind, each naming file and byte offset).

Exits 0 when the source is valid, 1 when it is not (the problems are printed),
2 on bad arguments. One Beam element per source shard, not per record. A shard
whose records are all plainly well-formed takes a fast path (framing checked a
chunk at a time, each record's fields read in one pass, text checks once per
chunk); any other shard is read again record by record, which finds and names
every problem, so the report is the same either way.

Example::

    python -m beam_jobs.source.validate --source_uri=/data/imagenet \\
        --catalog_dir=/data/ssl/_work/catalog --num_classes=1000 --expected_total=1281167
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs import __version__, layout, storage
from beam_jobs.core import CatalogReport
from beam_jobs.pipeline import (
    DATAFLOW_RUNNERS,
    counters,
    make_options,
    new_pipeline,
    setup_logging,
    stage_template,
)
from beam_jobs.process import freeze_heap_at_exit
from beam_jobs.progress import Progress, mark_done, progress_dir
from beam_jobs.source.catalog import (
    CATALOG_DICTIONARY,
    CATALOG_FILE,
    REPORT_FILE,
    SCHEMA,
    SHARD_RE,
    fingerprint,
    read_arrow,
    shard_name,
    write_arrow,
    write_table,
)
from beam_jobs.source.example_proto import (
    COMMON_KEYS,
    ExampleError,
    RecordKeys,
    image_columns,
    parse_image_record,
    record_keys,
)
from beam_jobs.source.tfrecord import HEADER_LEN, OVERHEAD, RecordError, scan_batches, scan_framed
from beam_jobs.storage import FileInfo

log = logging.getLogger("beam_jobs.source.validate")

EXAMPLES_PER_KIND = 10
PARTS_DIR = "_parts"
# A shard's catalog rows (its part file): the catalog's columns but ``file``, the
# shard's own path on every row, which finalize adds from the shard's index.
PART_SCHEMA = pa.schema([f for f in SCHEMA if f.name != "file"])


@dataclass(frozen=True)
class Checks:
    """What a valid record must satisfy."""

    label_min: int = 1
    label_max: int = 1000  # inclusive
    keys: RecordKeys = COMMON_KEYS  # the features' keys in the source's layout

    def label_ok(self, label: int) -> bool:
        return self.label_min <= label <= self.label_max


class Problems:
    """Problems by kind: a total count and the first few examples of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def add(self, kind: str, message: str, **where: Any) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_PER_KIND:
            self.examples[kind].append({"message": message, **where})

    def merge(self, other: dict[str, Any]) -> None:
        for kind, entry in other.items():
            self.counts[kind] += entry["count"]
            room = EXAMPLES_PER_KIND - len(self.examples[kind])
            self.examples[kind].extend(entry["examples"][: max(room, 0)])

    def to_json(self) -> dict[str, Any]:
        return {
            kind: {"count": self.counts[kind], "examples": self.examples[kind]}
            for kind in sorted(self.counts)
        }

    def __bool__(self) -> bool:
        return bool(self.counts)


def check_listing(
    files: list[FileInfo], prefix: str, source_uri: str
) -> tuple[list[FileInfo], Problems]:
    """Check shard names: ``{prefix}-SSSSS-of-NNNNN``, one N, indices 0..N-1."""
    problems = Problems()
    pattern = storage.join(source_uri, f"{prefix}-*")
    if not files:
        problems.add(
            "no_files",
            f"no files match {pattern}: is source_uri the folder that "
            f"holds {prefix}-00000-of-NNNNN ... (or, prepared by TensorFlow "
            "Datasets, imagenet2012-train.tfrecord-00000-of-NNNNN ...)?",
            file=pattern,
        )
        return [], problems
    shards: list[FileInfo] = []
    counts: dict[int, list[str]] = defaultdict(list)
    seen: dict[int, str] = {}
    for f in files:
        name = storage.basename(f.path)
        m = SHARD_RE.match(name)
        if not m or m.group("prefix") != prefix:
            problems.add(
                "bad_name",
                f"{f.path}: matches {prefix}-* but is not named "
                f"{prefix}-SSSSS-of-NNNNN (a stray file?)",
                file=f.path,
            )
            continue
        idx, count = int(m.group("index")), int(m.group("count"))
        counts[count].append(name)
        if idx >= count:
            problems.add(
                "bad_name",
                f"{f.path}: shard index {idx} is not below its count {count}",
                file=f.path,
            )
            continue
        seen[idx] = f.path
        shards.append(f)
    if len(counts) > 1:
        summary = ", ".join(
            f"-of-{c:05d} ({len(n)} files, e.g. {n[0]})" for c, n in sorted(counts.items())
        )
        problems.add(
            "shard_count", f"{pattern}: shards disagree on their total: {summary}", file=pattern
        )
    elif counts:
        (count,) = counts
        missing = [i for i in range(count) if i not in seen]
        for i in missing:
            problems.add(
                "missing_shard",
                f"{storage.join(source_uri, shard_name(prefix, i, count))} is missing "
                f"({len(missing)} of {count} shards missing)",
                file=storage.join(source_uri, shard_name(prefix, i, count)),
            )
    return shards, problems


class ValidateShard(beam.DoFn):
    """Read one source shard: check every record, write its catalog part."""

    def __init__(
        self, parts_dir: str, checks: Checks, total_shards: int, progress: str | None = None
    ) -> None:
        self.parts_dir = parts_dir
        self.checks = checks
        self.total_shards = total_shards
        self.progress = progress  # marker folder (beam_jobs.progress)
        self.records = Metrics.counter("ssl_splits", "records_read")
        self.bytes = Metrics.counter("ssl_splits", "bytes_read")
        self.bad = Metrics.counter("ssl_splits", "bad_records")
        self.done = Metrics.counter("ssl_splits", "shards_done")

    def setup(self) -> None:
        setup_logging()
        freeze_heap_at_exit()

    def process(self, element: dict[str, Any]) -> Iterator[dict[str, Any]]:
        out = validate_shard(
            element,
            self.parts_dir,
            self.checks,
            self.total_shards,
            self.records,
            self.bytes,
            self.bad,
        )
        mark_done(
            self.progress, element["index"], out["records"] + out["bad_records"], out["bytes"]
        )
        yield out
        self.done.inc()


def validate_shard(
    element: dict[str, Any],
    parts_dir: str,
    checks: Checks,
    total_shards: int,
    records_counter: Any = None,
    bytes_counter: Any = None,
    bad_counter: Any = None,
) -> dict[str, Any]:
    """Validate one shard; the pure core of :class:`ValidateShard`.

    A shard whose records are all plainly well-formed (:func:`fast_rows`)
    takes the fast path; any other is read again record by record
    (:func:`careful_rows`), which finds and names every problem."""
    t0 = time.monotonic()
    path, index = element["path"], element["index"]
    fast = fast_rows(path, checks)
    if fast is not None:
        table, end = fast
        problems, n_ok, n_bad = Problems(), table.num_rows, 0
    else:
        table, problems, n_ok, n_bad, end = careful_rows(path, checks)
    if not problems and end != element["size"]:
        problems.add(
            "size_changed",
            f"{path}: read {end} bytes but the listing said "
            f"{element['size']}: the file changed during validation",
            file=path,
        )
    part = storage.join(parts_dir, f"part-{index:05d}.arrow")
    # An intermediate file (a lost part only means validating again), sorted by
    # filename: finalize's sort of the whole set merges these runs.
    write_arrow(part, table.take(pc.sort_indices(table.column("filename"))))
    if records_counter is not None:
        records_counter.inc(n_ok + n_bad)
        bytes_counter.inc(end)
        bad_counter.inc(n_bad)
    log.debug(
        "validated %s: %d records (%d bad) in %.2f s [shard %d of %d]%s",
        storage.basename(path),
        n_ok + n_bad,
        n_bad,
        time.monotonic() - t0,
        index + 1,
        total_shards,
        "" if fast is not None else " (record by record)",
    )
    return {
        "path": path,
        "index": index,
        "records": n_ok,
        "bad_records": n_bad,
        "bytes": end,
        "problems": problems.to_json(),
        "part": part,
    }


_INT32 = np.iinfo(np.int32)


def fast_rows(path: str, checks: Checks) -> tuple[pa.Table, int] | None:
    """A shard's catalog rows (:data:`PART_SCHEMA`) and its length, if every record in it is
    plainly well-formed (framing, CRCs, :func:`example_proto.image_columns`,
    labels in range); None at the first record that is not.

    What :func:`careful_rows` returns for such a shard, with the per-record
    work cut to the scan and the Example parse: the columns are built and
    checked a chunk at a time."""
    if not (_INT32.min <= checks.label_min and checks.label_max <= _INT32.max):
        return None
    offsets: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    crcs: list[np.ndarray] = []
    names: list[pa.Array] = []
    labels: list[np.ndarray] = []
    synsets: list[pa.Array] = []
    with storage.open_read(path) as f:
        for batch in scan_batches(f, path):
            if isinstance(batch, RecordError) or not batch.crc_ok.all():
                return None
            cols = image_columns(batch.data, checks.keys)
            if cols is None:
                return None
            if len(cols.label) and (
                int(cols.label.min()) < checks.label_min or int(cols.label.max()) > checks.label_max
            ):
                return None
            offsets.append(batch.offsets)
            lengths.append(batch.lengths)
            crcs.append(batch.data_crc)
            names.append(cols.filename)
            labels.append(cols.label)
            synsets.append(cols.synset)
    if not offsets:
        return PART_SCHEMA.empty_table(), 0
    offset, length = np.concatenate(offsets), np.concatenate(lengths)
    table = pa.table(
        [
            pa.concat_arrays(names),
            pa.array(np.concatenate(labels).astype(np.int32)),
            pa.concat_arrays(synsets),
            pa.array(np.arange(len(offset), dtype=np.int32)),
            pa.array(offset),
            pa.array(length),
            pa.array(np.concatenate(crcs)),
        ],
        schema=PART_SCHEMA,
    )
    return table, int(offset[-1] + length[-1])


def careful_rows(path: str, checks: Checks) -> tuple[pa.Table, Problems, int, int, int]:
    """A shard read record by record: its catalog rows (the good records,
    :data:`PART_SCHEMA`), its problems, the numbers of good and bad records,
    and the byte offset where the last good record ends."""
    problems = Problems()
    cols: dict[str, list[Any]] = {name: [] for name in PART_SCHEMA.names}
    n_ok = n_bad = 0
    end = 0
    with storage.open_read(path) as f:
        for rec_index, item in enumerate(scan_framed(f, path)):
            if isinstance(item, RecordError):
                n_bad += 1
                problems.add(item.kind, str(item), file=path, offset=item.offset, record=rec_index)
                if item.fatal:
                    break
                continue
            end = item.offset + item.length
            try:
                rec = parse_image_record(item.data, checks.keys)
            except ExampleError as err:
                n_bad += 1
                problems.add(
                    err.kind,
                    f"{path} at byte offset {item.offset} (record {rec_index}): {err.detail}",
                    file=path,
                    offset=item.offset,
                    record=rec_index,
                )
                continue
            if not checks.label_ok(rec.label):
                n_bad += 1
                problems.add(
                    "label_range",
                    f"{path} at byte offset {item.offset} (record {rec_index}): "
                    f"label {rec.label} is outside "
                    f"{checks.label_min}..{checks.label_max}",
                    file=path,
                    offset=item.offset,
                    record=rec_index,
                )
                continue
            n_ok += 1
            cols["filename"].append(rec.filename)
            cols["label"].append(rec.label)
            cols["synset"].append(rec.synset)
            cols["record"].append(rec_index)
            cols["offset"].append(item.offset)
            cols["length"].append(item.length)
            cols["data_crc"].append(item.data_crc)
    return pa.table(cols, schema=PART_SCHEMA), problems, n_ok, n_bad, end


def report_duplicates(table: pa.Table, problems: Problems) -> None:
    """Add a ``duplicate_filename`` problem for each name ``table`` holds more
    than once (the first few, in the order of their first rows, each with the
    file and offset of every copy)."""
    names = table.column("filename")
    counts = pc.value_counts(names)
    dup_mask = pc.greater(counts.field("counts"), 1)
    dups = pc.filter(counts.field("values"), dup_mask)
    n_dups = len(dups)
    for name in dups.to_pylist()[:EXAMPLES_PER_KIND]:
        rows = table.filter(pc.equal(table.column("filename"), name))
        where = [
            f"{f} at byte offset {o}"
            for f, o in zip(rows.column("file").to_pylist(), rows.column("offset").to_pylist())
        ]
        # Where, not the name: messages never quote a source file's content.
        problems.add(
            "duplicate_filename",
            f"a file name appears {rows.num_rows} times: " + "; ".join(where),
            file=rows.column("file")[0].as_py(),
            offset=rows.column("offset")[0].as_py(),
        )
    problems.counts["duplicate_filename"] += max(0, n_dups - EXAMPLES_PER_KIND)


@contextlib.contextmanager
def system_memory_pool() -> Iterator[None]:
    """Arrow allocates from the C library's allocator inside. For finalize's
    few large tables (the whole catalog, then sorted) Arrow's default,
    mimalloc, returns the memory to the OS and faults it in again: on COUNT
    ~1 s of system time and 140 MiB more peak RSS than with the C library's
    allocator."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def finalize(
    summaries: list[dict[str, Any]],
    catalog_dir: str,
    source_uri: str,
    files: list[dict[str, Any]],
    fp: str,
    expected_total: int | None,
    checks: Checks,
    layout_spec: str = layout.COMMON,
    label_names: list[str] | None = None,
) -> dict[str, Any]:
    """Merge the shards' results: catalog, cross-shard checks, report.

    ``label_names``: class names by label (a TFDS source's ``label.labels.txt``)
    for records that carry no synset of their own."""
    with system_memory_pool():
        summaries = sorted(summaries, key=lambda s: s["index"])
        problems = Problems()
        for s in summaries:
            problems.merge(s["problems"])
        table, shard = merge_parts(summaries)
        total = table.num_rows
        catalog = sorted_catalog(table, shard, problems)
        labels, synsets = labels_and_synsets(table, label_names, problems)
        bad_records = sum(s["bad_records"] for s in summaries)
        if expected_total is not None and total + bad_records != expected_total:
            problems.add(
                "total",
                f"expected {expected_total:,} records, found {total + bad_records:,}",
                file=source_uri,
            )

        ok = not problems
        catalog_uri = storage.join(catalog_dir, CATALOG_FILE)
        write_catalog(catalog if ok else None, catalog_dir, fp, source_uri)
        report = build_report(
            ok=ok,
            source_uri=source_uri,
            fp=fp,
            files=files,
            summaries=summaries,
            total=total,
            labels=labels,
            synsets=synsets,
            problems=problems,
            checks=checks,
            catalog_uri=catalog_uri if ok else None,
            layout_spec=layout_spec,
        )
        storage.write_text(
            storage.join(catalog_dir, REPORT_FILE),
            json.dumps(report, indent=1) + "\n",
            "application/json",
        )
        return report


def merge_parts(summaries: list[dict[str, Any]]) -> tuple[pa.Table, pa.Array]:
    """The shards' parts (``summaries`` sorted by shard) as one table with a
    ``file`` column, and each row's shard (index into ``summaries``)."""
    tables = [read_arrow(s["part"]) for s in summaries]
    sizes = [t.num_rows for t in tables]
    # One chunk: the parts are sorted runs, which one sort merges fast. The file
    # column is a dictionary of the shards' paths: an index per row to merge
    # and sort, not a string.
    table = (pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()).combine_chunks()
    del tables
    shard = pa.array(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))
    paths = pa.array([s["path"] for s in summaries], pa.string())
    table = table.add_column(
        SCHEMA.get_field_index("file"),
        "file",
        pa.DictionaryArray.from_arrays(shard, paths),
    )
    return table, shard


def sorted_catalog(table: pa.Table, shard: pa.Array, problems: Problems) -> pa.Table:
    """The catalog's rows, sorted by filename; adds a problem for each name
    that is not unique across the whole set (no name may equal the next)."""
    catalog = table.take(pc.sort_indices(table.column("filename")))
    sorted_names = catalog.column("filename")
    if table.num_rows > 1 and pc.any(pc.equal(sorted_names[1:], sorted_names[:-1])).as_py():
        # Reported in the order the records come in the source: by shard, then record.
        report_duplicates(
            table.append_column("_shard", shard).sort_by(
                [("_shard", "ascending"), ("record", "ascending")]
            ),
            problems,
        )
    return catalog


def labels_and_synsets(
    table: pa.Table, label_names: list[str] | None, problems: Problems
) -> tuple[Counter[int], dict[int, set[str]]]:
    """Records per label, and the synsets that come with each label (from the
    records, else from ``label_names``); adds a problem for each label with
    more than one."""
    labels: Counter[int] = Counter(
        dict(zip(*(c.to_pylist() for c in pc.value_counts(table.column("label")).flatten())))
    )
    pairs = table.select(["label", "synset"]).group_by(["label", "synset"]).aggregate([])
    synsets: dict[int, set[str]] = defaultdict(set)
    for label, synset in zip(pairs.column("label").to_pylist(), pairs.column("synset").to_pylist()):
        if synset:
            synsets[label].add(synset)
    for label in labels if label_names else ():
        if not synsets.get(label) and 0 <= label < len(label_names or ()):
            synsets[label] = {label_names[label]}  # type: ignore[index]
    for label in sorted(synsets):
        if len(synsets[label]) > 1:
            problems.add(
                "label_synset",
                f"label {label} comes with {len(synsets[label])} different synsets "
                "(records' synset features, or the line of label.labels.txt)",
                label=label,
            )
    return labels, synsets


def write_catalog(catalog: pa.Table | None, catalog_dir: str, fp: str, source_uri: str) -> None:
    """Write the catalog (None: delete any earlier one, the source has
    problems); delete the shards' parts and the records tables joined with an
    earlier catalog in this folder (plan.write_records)."""
    catalog_uri = storage.join(catalog_dir, CATALOG_FILE)
    storage.delete_tree(layout.records_dir(catalog_dir))
    if catalog is not None:
        file = catalog.column("file").cast(pa.string())
        write_table(
            catalog_uri,
            catalog.set_column(SCHEMA.get_field_index("file"), SCHEMA.field("file"), file),
            {"source_fingerprint": fp, "source_uri": source_uri},
            use_dictionary=CATALOG_DICTIONARY,
        )
    else:
        storage.delete([catalog_uri])
    storage.delete_tree(storage.join(catalog_dir, PARTS_DIR))


def build_report(
    *,
    ok: bool,
    source_uri: str,
    fp: str,
    files: list[dict[str, Any]],
    summaries: list[dict[str, Any]],
    total: int,
    labels: Counter[int],
    synsets: dict[int, set[str]],
    problems: Problems,
    checks: Checks,
    catalog_uri: str | None,
    layout_spec: str = layout.COMMON,
) -> dict[str, Any]:
    by_path = {s["path"]: s for s in summaries}
    return CatalogReport(
        ok=ok,
        source_uri=source_uri,
        layout=layout_spec,
        source_fingerprint=fp,
        catalog_uri=catalog_uri,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        code_version=__version__,
        checks={"label_min": checks.label_min, "label_max": checks.label_max},
        total_records=total,
        bad_records=sum(s["bad_records"] for s in summaries),
        total_bytes=sum(s["bytes"] for s in summaries),
        num_shards=len(files),
        num_classes=len(labels),
        class_histogram={str(k): labels[k] for k in sorted(labels)},
        synsets={str(k): sorted(v)[0] for k, v in sorted(synsets.items()) if v},
        shards=[
            {
                **f,
                "records": by_path.get(f["path"], {}).get("records"),
                "bad_records": by_path.get(f["path"], {}).get("bad_records"),
            }
            for f in files
        ],
        problems=problems.to_json(),
    ).to_dict()


def format_report(report: dict[str, Any]) -> str:
    """A readable summary of a validation report."""
    lines = []
    status = "VALID" if report["ok"] else "INVALID"
    lines.append(
        f"source {report['source_uri']}: {status} ({report.get('layout', 'common')} layout)"
    )
    lines.append(
        f"  {report['total_records']:,} records in {report['num_shards']} shards, "
        f"{report['total_bytes'] / 1e6:,.1f} MB, {report['num_classes']} classes"
    )
    hist = report.get("class_histogram") or {}
    if hist:
        sizes = list(hist.values())
        lines.append(
            f"  class sizes {min(sizes):,}..{max(sizes):,} (mean {sum(sizes) / len(sizes):,.1f})"
        )
    lines.append(f"  fingerprint {report['source_fingerprint'][:16]}")
    if report.get("catalog_uri"):
        lines.append(f"  catalog {report['catalog_uri']}")
    for kind, entry in report["problems"].items():
        lines.append(f"  problem {kind}: {entry['count']}")
        for ex in entry["examples"][:3]:
            lines.append(f"    - {ex['message']}")
    return "\n".join(lines)


class ValidationFailed(RuntimeError):
    """The source is not valid; the message lists the problems."""


class ValidateSource(beam.PTransform):
    """Source shards (``{"path", "index", "size"}``) -> the validation report.

    Each shard is validated on its own (framing, CRCs, Example features,
    labels; its catalog rows go to a part file), then ``finalize`` merges the
    parts into the catalog and checks what needs the whole set (unique names,
    one synset per label, the expected total). The Reshuffle after the shards
    lets a runner spread them over workers instead of fusing them onto one.
    """

    def __init__(
        self,
        catalog_dir: str,
        source_uri: str,
        shards: list[dict[str, Any]],
        fp: str,
        expected_total: int | None,
        checks: Checks,
        layout_spec: str = layout.COMMON,
        label_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.catalog_dir, self.source_uri, self.shards = catalog_dir, source_uri, shards
        self.fp, self.expected_total, self.checks = fp, expected_total, checks
        self.layout_spec, self.label_names = layout_spec, label_names

    def expand(self, shards: beam.PCollection) -> beam.PCollection:
        parts_dir = storage.join(self.catalog_dir, PARTS_DIR)
        return (
            shards
            | "Spread" >> beam.Reshuffle()
            | "ValidateShard"
            >> beam.ParDo(
                ValidateShard(
                    parts_dir,
                    self.checks,
                    len(self.shards),
                    progress_dir(self.catalog_dir, "validate"),
                )
            )
            | "Collect" >> beam.combiners.ToList().without_defaults()
            | "Finalize"
            >> beam.Map(
                finalize,
                self.catalog_dir,
                self.source_uri,
                self.shards,
                self.fp,
                self.expected_total,
                self.checks,
                self.layout_spec,
                self.label_names,
            )
        )


LABEL_NAMES_FILE = "label.labels.txt"


def read_label_names(source_uri: str, naming: layout.Naming) -> list[str] | None:
    """A TFDS source's class names by label (``label.labels.txt``, which TFDS
    writes beside the shards: the synsets, for imagenet2012), if it has one;
    read and checked by :func:`beam_jobs.source.tfds_meta.read_label_names`."""
    if naming.kind != layout.TFDS:
        return None
    from beam_jobs.source.tfds_meta import read_label_names as read_checked

    return read_checked(source_uri)


# One local worker's CPU to validate, roughly (2-core machine, fast path):
# ~7.5 us per record (COUNT's 1 KB records, with finalize's share) and
# ~1.15 ns per byte (BYTES' 110 KB records: CRC32C, copies, reads).
SECONDS_PER_RECORD = 7.5e-6
SECONDS_PER_BYTE = 1.15e-9
# Bytes of the first shard read to estimate the mean record size.
SAMPLE_BYTES = 1024 * 1024


def estimated_seconds(shard_files: list[FileInfo]) -> float | None:
    """One local worker's time to validate these shards, roughly (None if the
    first shard does not tell): decides between an in-process DirectRunner
    and one worker process per core (``pipeline.make_options``). The record
    count is the total size over the mean framed size of the first shard's
    first records (its first megabyte; one small read)."""
    if not shard_files:
        return None
    total = sum(f.size for f in shard_files)
    try:
        with storage.open_read(shard_files[0].path) as f:
            head = f.read(SAMPLE_BYTES)
    except OSError:
        return None
    sizes, off = [], 0
    while off + HEADER_LEN <= len(head):
        framed = int.from_bytes(head[off : off + 8], "little") + OVERHEAD
        sizes.append(framed)
        off += framed
        if off > len(head):  # a record longer than the sample: its header tells its size
            break
    if not sizes:
        return None
    records = total / (sum(sizes) / len(sizes))
    return records * SECONDS_PER_RECORD + total * SECONDS_PER_BYTE


def dataflow(beam_args: list[str]) -> bool:
    """Whether these Beam options run the job on Dataflow (where no local
    worker count is chosen: nothing to estimate)."""
    return PipelineOptions(beam_args).view_as(StandardOptions).runner in DATAFLOW_RUNNERS


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.source.validate",
        description=__doc__.split("\n\n")[0],
        epilog="Any other --flag is a Beam pipeline option (--runner, --project, --region, "
        "--temp_location, --direct_num_workers, ...).",
    )
    p.add_argument(
        "--source_uri",
        required=True,
        help="folder with train-SSSSS-of-NNNNN, or TFDS's "
        "imagenet2012-train.tfrecord-SSSSS-of-NNNNN (absolute path or gs://)",
    )
    p.add_argument("--catalog_dir", required=True, help="where catalog.parquet and report.json go")
    p.add_argument(
        "--layout",
        default=None,
        help="the source's layout: common or tfds:DATASET (default: from the file names)",
    )
    p.add_argument(
        "--num_classes",
        type=int,
        default=1000,
        help="labels must lie in label_offset .. label_offset+num_classes-1 (default 1000)",
    )
    p.add_argument(
        "--label_offset",
        type=int,
        default=None,
        help="smallest valid label (default 1 for the common converter, 0 for TFDS)",
    )
    p.add_argument(
        "--expected_total",
        type=int,
        default=None,
        help="fail unless the source holds exactly this many records (1281167 for ImageNet)",
    )
    p.add_argument(
        "--prefix",
        default=None,
        help="shard name prefix (default train, or the layout's: imagenet2012-train.tfrecord)",
    )
    return p.parse_known_args(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the job; return the report. Raises :class:`ValidationFailed` if invalid."""
    setup_logging()
    args, beam_args = parse_args(argv)
    source = storage.normalize(args.source_uri)
    catalog_dir = storage.normalize(args.catalog_dir)
    naming = layout.naming(args.layout) if args.layout else layout.detect_source(source)
    checks = label_checks(args, naming)
    prefix = args.prefix or naming.file_prefix("train")
    files = storage.list_files(storage.join(source, f"{prefix}-*"))
    shard_files, problems = check_listing(files, prefix, source)
    fp = fingerprint(shard_files)
    shards = [shard_entry(f) for f in shard_files]
    log.info(
        "validating %d shards under %s (%s layout, fingerprint %s)",
        len(shards),
        source,
        naming.spec,
        fp[:16],
    )
    if problems:
        report = report_listing_problems(source, catalog_dir, fp, shards, problems, checks, naming)
    else:
        options = make_options(
            beam_args,
            default_job_name="ssl-validate",
            work_bytes=sum(f.size for f in shard_files),
            work_seconds=None if dataflow(beam_args) else estimated_seconds(shard_files),
        )
        t0 = time.monotonic()
        p = new_pipeline(options)
        label_names = read_label_names(source, naming)
        validate = ValidateSource(
            catalog_dir, source, shards, fp, args.expected_total, checks, naming.spec, label_names
        )
        _ = p | "Shards" >> beam.Create(shards) | "Validate" >> validate
        staged = stage_template(p, options, "validate")
        if staged:
            return staged
        report = run_validation(p, catalog_dir, shard_files, t0)
    print(format_report(report), flush=True)
    if report.get("metrics"):
        print(f"validate: metrics {json.dumps(report['metrics'], sort_keys=True)}", flush=True)
    if not report["ok"]:
        raise ValidationFailed(format_report(report))
    return report


def label_checks(args: argparse.Namespace, naming: layout.Naming) -> Checks:
    """The record checks: labels in ``label_offset`` (by default 0 for TFDS,
    1 for the common layout) .. +num_classes-1, and the layout's feature keys."""
    offset = (
        args.label_offset
        if args.label_offset is not None
        else (0 if naming.kind == layout.TFDS else 1)
    )
    return Checks(
        label_min=offset, label_max=offset + args.num_classes - 1, keys=record_keys(naming.kind)
    )


def shard_entry(f: FileInfo) -> dict[str, Any]:
    """A shard file as the job's element (and the report's ``files`` entry)."""
    return {
        "path": f.path,
        "index": int(SHARD_RE.match(storage.basename(f.path)).group("index")),  # type: ignore[union-attr]
        "size": f.size,
        "crc32c": f.crc32c,
        "generation": f.generation,
        "mtime_ns": f.mtime_ns,
    }


def report_listing_problems(
    source: str,
    catalog_dir: str,
    fp: str,
    shards: list[dict[str, Any]],
    problems: Problems,
    checks: Checks,
    naming: layout.Naming,
) -> dict[str, Any]:
    """The shards' names are not one complete set: no record is read. Write
    (and return) a failed report, and delete any earlier catalog."""
    report = build_report(
        ok=False,
        source_uri=source,
        fp=fp,
        files=shards,
        summaries=[],
        total=0,
        labels=Counter(),
        synsets={},
        problems=problems,
        checks=checks,
        catalog_uri=None,
        layout_spec=naming.spec,
    )
    storage.delete([storage.join(catalog_dir, CATALOG_FILE)])
    storage.write_text(
        storage.join(catalog_dir, REPORT_FILE),
        json.dumps(report, indent=1) + "\n",
        "application/json",
    )
    return report


def run_validation(
    p: beam.Pipeline, catalog_dir: str, shard_files: list[FileInfo], t0: float
) -> dict[str, Any]:
    """Run the validation pipeline, with progress lines; return the report it
    wrote, with the job's time (since ``t0``) and Beam counters."""
    with Progress(
        "validate",
        progress_dir(catalog_dir, "validate"),
        len(shard_files),
        total_bytes=sum(f.size for f in shard_files),
        logger=log,
    ):
        result = p.run()
        result.wait_until_finish()
    report = json.loads(storage.read_text(storage.join(catalog_dir, REPORT_FILE)))
    seconds = time.monotonic() - t0
    report["seconds"] = round(seconds, 3)
    report["metrics"] = counters(result)
    log.info(
        "validation of %d records took %.1f s (%.0f records/s)",
        report["total_records"],
        seconds,
        report["total_records"] / max(seconds, 1e-9),
    )
    return report


def main(argv: list[str] | None = None) -> int:
    freeze_heap_at_exit()
    try:
        run(argv)
    except ValidationFailed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
