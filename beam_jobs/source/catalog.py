"""The catalog: one row per source record, and the source fingerprint.

The validation job writes ``catalog.parquet`` (schema :data:`SCHEMA`, rows
sorted by ``filename``, which is unique) next to ``report.json``. Every later
stage reads records through it: the planner needs names and labels, the build
job needs each record's file, byte offset and framed length for ranged reads,
and the verifier compares output records with
the ``data_crc`` stored in the source framing (so byte identity is checked
without re-reading the source).
"""

from __future__ import annotations

import hashlib
import io
from typing import Iterable

import pyarrow as pa
import pyarrow.ipc  # noqa: F401 (pa.ipc)
import pyarrow.parquet as pq

from beam_jobs import storage
from beam_jobs.layout import SHARD_RE, shard_name  # noqa: F401 (re-exported)
from beam_jobs.storage import FileInfo

CATALOG_FILE = "catalog.parquet"
REPORT_FILE = "report.json"

SCHEMA = pa.schema(
    [
        pa.field("filename", pa.string(), nullable=False),  # image/filename
        pa.field("label", pa.int32(), nullable=False),  # image/class/label
        pa.field("synset", pa.string(), nullable=False),  # image/class/synset or ""
        # source shard URI where validation read it; the build reads it by base name
        # from the run's source folder (the same files may have moved since)
        pa.field("file", pa.string(), nullable=False),
        pa.field("record", pa.int32(), nullable=False),  # index of the record in its shard
        pa.field("offset", pa.int64(), nullable=False),  # byte offset of the framed record
        pa.field("length", pa.int64(), nullable=False),  # framed length (data + 16)
        pa.field("data_crc", pa.uint32(), nullable=False),  # masked CRC32C from the footer
    ]
)


def fingerprint(files: Iterable[FileInfo]) -> str:
    """sha256 over the source shards' names and identities.

    For gs:// the identity is size, CRC32C and generation (any rewrite changes
    the generation); for local files size and mtime (nanoseconds). Paths enter
    by base name, so the same objects copied to another folder keep their
    fingerprint only if their identity does (GCS copies get new generations;
    local ``mv`` and ``cp -a`` keep sizes and mtimes): a catalog, keyed by the
    fingerprint, then serves the source wherever it is now.
    """
    lines = sorted(f"{storage.basename(f.path)}\t{f.identity()}" for f in files)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def table_to_parquet_bytes(
    table: pa.Table,
    metadata: dict[str, str] | None = None,
    use_dictionary: bool | list[str] = True,
) -> bytes:
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=use_dictionary)
    return buf.getvalue()


# The catalog's columns worth dictionary-encoding in Parquet: not the unique
# file names (the writer would build a dictionary only to give it up).
CATALOG_DICTIONARY = ["label", "synset", "file"]


def write_table(
    uri: str,
    table: pa.Table,
    metadata: dict[str, str] | None = None,
    durable: bool = True,
    use_dictionary: bool | list[str] = True,
) -> None:
    """Write a Parquet file atomically to a local path or gs:// (``durable``:
    fsync a local file before it takes its name; ``use_dictionary``: all
    columns dictionary-encoded, or these)."""
    storage.write_bytes(
        uri, table_to_parquet_bytes(table, metadata, use_dictionary), durable=durable
    )


def read_table(
    uri: str, columns: list[str] | None = None, read_dictionary: list[str] | None = None
) -> pa.Table:
    """Read a Parquet file from a local path or gs://. ``read_dictionary``:
    columns kept dictionary-encoded (a few source file names repeated per
    record, not one string object each). One file, read as such: not through
    ``pq.read_table``'s datasets, whose first use imports pandas (~0.4 s of every
    process's first read; 3x the time of reading ImageNet's catalog columns)."""
    source = io.BytesIO(storage.read_bytes(uri)) if storage.is_gcs(uri) else uri
    return pq.ParquetFile(source, read_dictionary=read_dictionary).read(columns=columns)


def write_arrow(uri: str, table: pa.Table) -> None:
    """An intermediate table as an uncompressed Arrow IPC file (several times
    faster to write and read than Parquet; not durable: no fsync)."""
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    storage.write_bytes(uri, sink.getvalue(), durable=False)


def read_arrow(uri: str) -> pa.Table:
    return pa.ipc.open_file(pa.py_buffer(storage.read_bytes(uri))).read_all()


def read_catalog(catalog_dir: str, columns: list[str] | None = None) -> pa.Table:
    return read_table(storage.join(catalog_dir, CATALOG_FILE), columns=columns)
