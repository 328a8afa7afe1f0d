"""Storage access for absolute local paths and ``gs://`` URIs: one function API.

Every function takes full URIs, picks the backend of the URI's scheme once
(:func:`backend`) and delegates to it, as Beam's ``FileSystems`` does:

    base.py    what a backend is: the operations, FileInfo, AtomicWriter, StorageError
    local.py   absolute paths, through the OS (atomic by rename(2))
    gcs.py     gs://, through google-cloud-storage (its retry policy on every call)
    schemes.py which backend serves which scheme
    ranges.py  RangeReader: ranged reads of single records, counted

Why not only ``apache_beam.io.filesystems``: see ``gcs.py``. Another scheme
is one new module with a :class:`~beam_jobs.storage.base.Backend` subclass,
registered in ``schemes.BACKENDS``; ``tests/test_storage.py`` runs the same
contract tests on every backend.

Wildcards (``*``, ``?``, ``[...]``) are allowed in the last path component of
:func:`list_files` patterns only.
"""

from __future__ import annotations

from typing import IO, Iterable, Iterator

from beam_jobs.storage.base import (
    READ_CHUNK,
    AtomicWriter,
    Backend,
    FileInfo,
    StorageError,
    crc32c_hex,
)
from beam_jobs.storage.gcs import PREFIX as GCS_PREFIX
from beam_jobs.storage.gcs import UPLOAD_CHUNK, crc32c_from_gcs, gcs_client, split_gcs, use_client
from beam_jobs.storage.gcs import retry as _retry
from beam_jobs.storage.ranges import RangeReader
from beam_jobs.storage.schemes import BACKENDS, backend


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_PREFIX)


# --------------------------------------------------------------------------- names (no I/O)


def join(base: str, *parts: str) -> str:
    """Join path components onto a local path or gs:// URI."""
    out = base
    for part in parts:
        if not part:
            continue
        out = out.rstrip("/") + "/" + part.lstrip("/")
    return out


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def dirname(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def normalize(uri: str) -> str:
    """Strip a trailing slash; make local paths absolute and collapse ``//``."""
    return backend(uri).normalize(uri)


# --------------------------------------------------------------------------- metadata


def list_files(pattern: str) -> list[FileInfo]:
    """Files matching ``pattern`` (wildcards in the last component), sorted by path."""
    return backend(pattern).list_files(pattern)


def stat(uri: str) -> FileInfo | None:
    """FileInfo for ``uri``, or None when it does not exist."""
    return backend(uri).stat(uri)


def exists(uri: str) -> bool:
    return stat(uri) is not None


def file_crc32c(uri: str) -> str:
    """CRC32C of a whole file: from metadata on GCS, by reading it locally."""
    return backend(uri).file_crc32c(uri)


# --------------------------------------------------------------------------- whole files


def read_bytes(uri: str) -> bytes:
    """The whole file; FileNotFoundError naming ``uri`` when it does not exist."""
    return backend(uri).read_bytes(uri)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(
    uri: str, data: bytes, content_type: str = "application/octet-stream", durable: bool = True
) -> None:
    """Write a whole file atomically: readers see the old file or the new one.

    ``durable`` (local files): fsync before the rename, so the file survives a
    power loss too; off for small bookkeeping files that can be recomputed.
    """
    backend(uri).write_bytes(uri, data, content_type, durable)


def write_text(uri: str, text: str, content_type: str = "text/plain", durable: bool = True) -> None:
    write_bytes(uri, text.encode("utf-8"), content_type, durable)


# --------------------------------------------------------------------------- streams


def open_read(uri: str, buffer_size: int = READ_CHUNK) -> IO[bytes]:
    """A buffered binary stream over a whole file (sequential reads)."""
    return backend(uri).open_read(uri, buffer_size)


def open_write(uri: str) -> AtomicWriter:
    """A binary stream that creates (or replaces) ``uri`` only when closed cleanly."""
    return backend(uri).open_write(uri)


def iter_chunks(uri: str, chunk: int = READ_CHUNK) -> Iterator[bytes]:
    with open_read(uri, chunk) as f:
        while data := f.read(chunk):
            yield data


# --------------------------------------------------------------------------- moving files


def delete(uris: Iterable[str]) -> int:
    """Delete files that exist; return how many were deleted."""
    return sum(backend(uri).delete(uri) for uri in uris)


def delete_tree(prefix_uri: str) -> int:
    """Delete everything under a folder (all objects with that prefix on GCS)."""
    return backend(prefix_uri).delete_tree(prefix_uri)


def list_tree(prefix_uri: str) -> list[str]:
    """Every file under a folder, recursively, sorted."""
    return backend(prefix_uri).list_tree(prefix_uri)


def copy(src: str, dst: str) -> None:
    """Copy one file. GCS to GCS is a server-side rewrite: no data through this
    process; between schemes, a stream that appears whole or not at all."""
    source, target = backend(src), backend(dst)
    if source is target:
        source.copy(src, dst)
        return
    with open_read(src) as fin, open_write(dst) as fout:
        while chunk := fin.read(READ_CHUNK):
            fout.write(chunk)


def place(src: str, dst: str, *, source_generation: int | None = None) -> None:
    """Give the file ``src`` the name ``dst`` (replacing what is there), atomically
    for readers of ``dst``: they see the old file or the new one, never a part.

    Locally ``rename(2)``, which keeps the file's modification time, the
    identity a manifest records (across file systems: a copy that keeps it,
    then a rename). On GCS a server-side copy (rewrite), only of the object
    generation given (a replaced source fails with 412 instead of being
    published); ``src`` stays until the caller deletes it.
    """
    source = backend(src)
    if backend(dst) is not source:
        raise ValueError(f"cannot place {src} at {dst}: both must be local or both gs://")
    source.place(src, dst, source_generation)


def rename(src: str, dst: str) -> None:
    """Move one file: atomic ``rename(2)`` locally, copy then delete on GCS."""
    source = backend(src)
    if backend(dst) is source:
        source.rename(src, dst)
    else:
        copy(src, dst)
        delete([src])


__all__ = [
    "BACKENDS",
    "GCS_PREFIX",
    "READ_CHUNK",
    "UPLOAD_CHUNK",
    "AtomicWriter",
    "Backend",
    "FileInfo",
    "RangeReader",
    "StorageError",
    "backend",
    "basename",
    "copy",
    "crc32c_from_gcs",
    "crc32c_hex",
    "delete",
    "delete_tree",
    "dirname",
    "exists",
    "file_crc32c",
    "gcs_client",
    "is_gcs",
    "iter_chunks",
    "join",
    "list_files",
    "list_tree",
    "normalize",
    "open_read",
    "open_write",
    "place",
    "read_bytes",
    "read_text",
    "rename",
    "split_gcs",
    "stat",
    "use_client",
    "write_bytes",
    "write_text",
    "_retry",
]
