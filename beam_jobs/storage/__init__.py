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
registered in ``schemes.BACKENDS``; ``tests/storage/test_storage.py`` runs the same
contract tests on every backend.

Wildcards (``*``, ``?``, ``[...]``) are allowed in the last path component of
:func:`list_files` patterns only.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import IO, Callable, Iterable, Iterator

from beam_jobs.storage.base import (
    MISSING,
    READ_CHUNK,
    AtomicWriter,
    Backend,
    FileInfo,
    PreconditionFailed,
    StorageError,
    crc32c_hex,
)
from beam_jobs.storage.gcs import PREFIX as GCS_PREFIX
from beam_jobs.storage.gcs import (
    UPLOAD_CHUNK,
    crc32c_from_gcs,
    gcs_client,
    retry_deadline,
    split_gcs,
    use_client,
)
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


def read_versioned(uri: str, max_bytes: int = 64 << 20) -> tuple[bytes, FileInfo]:
    """The whole file and the FileInfo of exactly the version read (its
    ``version`` is what :func:`write_if`, :func:`delete_if` and :func:`place`
    compare); FileNotFoundError when missing, StorageError when larger than
    ``max_bytes`` (nothing read)."""
    return backend(uri).read_versioned(uri, max_bytes)


# --------------------------------------------------------------------------- conditional operations


def write_if(
    uri: str, data: bytes, *, if_version: str, content_type: str = "application/json"
) -> FileInfo:
    """Create (``if_version=MISSING``) or replace a whole file only if it is at
    ``if_version``, atomically with the check; PreconditionFailed otherwise."""
    return backend(uri).write_if(uri, data, content_type, if_version)


def delete_if(uri: str, *, if_version: str) -> bool:
    """Delete a file only if it is at ``if_version`` (PreconditionFailed
    otherwise); False when it does not exist."""
    return backend(uri).delete_if(uri, if_version)


def occupied(uri: str) -> bool:
    """Is anything at all under this name (a file, a folder, a link)?"""
    return backend(uri).occupied(uri)


def place_concurrency(uri: str) -> int:
    """How many placements into ``uri``'s storage to run at once."""
    return backend(uri).place_concurrency


def carry(uri: str) -> Callable[[], AbstractContextManager[None]]:
    """A context manager factory that lets another thread use ``uri``'s storage
    as this thread does (its client and credentials)."""
    return backend(uri).carry()


def clock(probe_uri: str) -> float:
    """The storage's own time (seconds since the epoch), read by writing
    ``probe_uri``: what leases are judged by, whatever this machine's clock says."""
    return backend(probe_uri).clock(probe_uri)


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


def place(
    src: str, dst: str, *, source_generation: int | None = None, if_version: str | None = None
) -> None:
    """Give the file ``src`` the name ``dst`` (replacing what is there), atomically
    for readers of ``dst``: they see the old file or the new one, never a part.

    Locally ``rename(2)``, which keeps the file's modification time, the
    identity a manifest records (across file systems: a copy that keeps it,
    then a rename). On GCS a server-side copy (rewrite), only of the object
    generation given (a replaced source fails with 412 instead of being
    published); ``src`` stays until the caller deletes it.

    ``if_version``: only if ``dst`` is at that version (``MISSING``: absent),
    checked atomically with the placement; PreconditionFailed otherwise.
    """
    source = backend(src)
    if backend(dst) is not source:
        raise ValueError(f"cannot place {src} at {dst}: both must be local or both gs://")
    source.place(src, dst, source_generation, if_version)


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
    "MISSING",
    "PreconditionFailed",
    "carry",
    "clock",
    "occupied",
    "place_concurrency",
    "delete_if",
    "read_versioned",
    "retry_deadline",
    "write_if",
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
]
