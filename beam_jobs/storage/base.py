"""What a storage backend is: the operations every scheme implements.

A backend serves the URIs of one scheme (``local.py``: absolute paths;
``gcs.py``: ``gs://``). The function API in ``beam_jobs.storage`` picks one
by the URI's scheme and delegates; nothing else in the project talks to a
backend directly. A backend's guarantees, which the contract tests
(``tests/storage/test_storage.py``) check on every backend alike:

* whole-file writes and :class:`AtomicWriter` streams are atomic: readers see
  the old file or the new one, and a failed writer leaves nothing under the
  final name;
* :meth:`Backend.place` gives a file a new name atomically for readers of that
  name (a manifest's identity of it, size and mtime or generation, kept);
* a missing file is ``None`` from :meth:`Backend.stat`, ``FileNotFoundError``
  from whole-file reads, ``False`` from :meth:`Backend.delete`;
* ranged reads return exactly the bytes asked for, or raise
  :class:`StorageError` naming the file and offset, and count what they
  fetched from storage;
* conditional operations (:meth:`Backend.write_if`, :meth:`Backend.delete_if`,
  :meth:`Backend.place` with ``if_version``) act only when the file is at the
  version the caller names (:data:`MISSING`: it must not exist), atomically
  with that check, or raise :class:`PreconditionFailed` and change nothing.
  GCS checks generations server-side; locally every conditional operation on a
  folder holds that folder's ``flock`` while it compares and renames;
* :meth:`Backend.clock` is the storage's own time (what it stamps on a write),
  so that leases are judged by one clock whatever the callers' clocks say.

The commit protocol (``beam_jobs.publishing.lock``, ``beam_jobs.publishing.publish``,
``beam_jobs.publishing.commit``) is written against these operations only.
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import IO, Callable, ClassVar, Iterable, Mapping, Sequence

# Whole-file streams read in chunks of this size (a multiple of GCS's 256 KiB).
READ_CHUNK = 8 * 1024 * 1024


class StorageError(RuntimeError):
    """A storage operation failed after retries; the message names the URI."""


class PreconditionFailed(StorageError):
    """A conditional operation found the file at another version than the one
    named (or present where it had to be missing): nothing was changed."""


# The version that means "this file must not exist" (GCS's generation 0).
MISSING = "0"


def crc32c_hex(value: int) -> str:
    """A CRC32C as the project writes it: 8 lowercase hex digits."""
    return f"{value & 0xFFFFFFFF:08x}"


@dataclass(frozen=True)
class FileInfo:
    """What storage says about one file, without reading it.

    ``crc32c`` (8 hex digits, of the whole object) and ``generation`` are set
    for gs:// objects; ``mtime_ns`` for local files. ``version`` is what the
    conditional operations compare (the generation on GCS; inode, modification
    time and size locally, the time of a conditional replacement always later
    than the one it replaces: a replaced file always has another one);
    ``modified`` the storage's time of the last write (seconds since the epoch,
    the storage's clock).
    """

    path: str
    size: int
    crc32c: str | None = None
    generation: int | None = None
    mtime_ns: int | None = None
    version: str | None = None
    modified: float | None = None

    def identity(self) -> str:
        """A string that changes when the file's content is replaced."""
        if self.generation is not None:
            return f"{self.size}:{self.crc32c}:{self.generation}"
        return f"{self.size}:{self.mtime_ns}"


class AtomicWriter(abc.ABC):
    """A write stream that makes ``uri`` appear only when closed without error.

    Leaving the ``with`` block by an exception (or :meth:`abort`) discards
    everything, so a failed or killed writer never leaves a partial file under
    the final name. Each backend says how (a temporary file renamed into place;
    a resumable upload finalized on close).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.closed = False

    @abc.abstractmethod
    def write(self, data: bytes) -> int: ...

    @abc.abstractmethod
    def writelines(self, chunks: Iterable[bytes]) -> None: ...

    @abc.abstractmethod
    def flush(self) -> None:
        """Push buffered bytes on (a no-op where that would cost a request)."""

    def close(self) -> None:
        """Finish the file: it appears under its final name."""
        if not self.closed:
            self.closed = True
            self._commit()

    def abort(self) -> None:
        """Discard what was written; the final name is left untouched."""
        if not self.closed:
            self.closed = True
            self._discard()

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _discard(self) -> None: ...

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# Called by a RangeSource with (bytes fetched, requests made).
Count = Callable[[int, int], None]


class RangeSource(abc.ABC):
    """Ranged reads of one backend's files for one :class:`~beam_jobs.storage.RangeReader`.

    A source may keep per-file state (open descriptors) until :meth:`close`,
    must be safe to share between threads, and reports every fetch to
    ``count``: the bytes it really asked storage for, retried attempts
    included.
    """

    # True when read_batch is one tight loop that threads would not speed up
    # (local preads); False when each read waits on the network.
    batched: ClassVar[bool] = False

    def __init__(self, count: Count) -> None:
        self._count = count

    @abc.abstractmethod
    def read(self, uri: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``, or StorageError naming both."""

    def read_batch(
        self,
        uris: Sequence[str],
        file_ids: Sequence[int],
        offsets: Sequence[int],
        lengths: Sequence[int],
    ) -> list[bytes]:
        """``read(uris[file_ids[i]], offsets[i], lengths[i])`` for every i, in order."""
        return [self.read(uris[f], o, n) for f, o, n in zip(file_ids, offsets, lengths)]

    @abc.abstractmethod
    def close(self) -> None:
        """Release per-file state."""


class Backend(abc.ABC):
    """The operations on one scheme's files. All take full URIs of that scheme;
    wildcards (``*``, ``?``, ``[...]``) only in the last component of
    :meth:`list_files` patterns."""

    # How many placements (:meth:`place`) a caller should run at once: 1 where
    # each is a local rename; more where each waits on a server.
    place_concurrency: ClassVar[int] = 1

    def carry(self) -> Callable[[], AbstractContextManager[None]]:
        """What another thread needs to use this backend as the calling thread
        does (its client and credentials): a context manager factory to enter
        there. Nothing by default."""
        return nullcontext

    @abc.abstractmethod
    def normalize(self, uri: str) -> str:
        """The canonical spelling of ``uri`` (no trailing slash)."""

    # ------------------------------------------------------------------ metadata

    @abc.abstractmethod
    def stat(self, uri: str) -> FileInfo | None:
        """FileInfo for ``uri``, or None when it does not exist."""

    @abc.abstractmethod
    def list_files(self, pattern: str) -> list[FileInfo]:
        """Files matching ``pattern``, sorted by path (none when the folder is absent;
        a file renamed or deleted while the folder is listed may be left out,
        never an error)."""

    @abc.abstractmethod
    def file_crc32c(self, uri: str) -> str:
        """CRC32C of a whole file (8 hex digits)."""

    # ------------------------------------------------------------------ whole files and streams

    @abc.abstractmethod
    def read_bytes(self, uri: str) -> bytes:
        """The whole file; FileNotFoundError when it does not exist."""

    @abc.abstractmethod
    def read_versioned(self, uri: str, max_bytes: int) -> tuple[bytes, FileInfo]:
        """The whole file and the FileInfo of exactly the version read;
        FileNotFoundError when it does not exist, StorageError when it is
        larger than ``max_bytes`` (nothing read then)."""

    # ------------------------------------------------------------------ conditional operations

    @abc.abstractmethod
    def write_if(self, uri: str, data: bytes, content_type: str, if_version: str) -> FileInfo:
        """Create (``if_version`` = :data:`MISSING`) or replace (the version
        read) a whole file, atomically and only if it is at ``if_version``;
        PreconditionFailed otherwise. Returns the new file's FileInfo."""

    @abc.abstractmethod
    def delete_if(self, uri: str, if_version: str) -> bool:
        """Delete a file only if it is at ``if_version`` (PreconditionFailed
        otherwise); False when it does not exist."""

    @abc.abstractmethod
    def occupied(self, uri: str) -> bool:
        """Is anything at all under this name: a file, a folder, a link (even
        one to nothing)? A name that is occupied but has no :meth:`stat` is
        not a file the product can own."""

    @abc.abstractmethod
    def clock(self, probe_uri: str) -> float:
        """The storage's time now (seconds since the epoch), as it stamps a
        write: ``probe_uri`` (a file of the caller's) is written to read it."""

    @abc.abstractmethod
    def write_bytes(self, uri: str, data: bytes, content_type: str, durable: bool) -> None:
        """Write a whole file atomically (``durable``: survive a power loss too)."""

    @abc.abstractmethod
    def open_read(self, uri: str, buffer_size: int) -> IO[bytes]:
        """A buffered binary stream over a whole file; FileNotFoundError when missing."""

    @abc.abstractmethod
    def open_write(self, uri: str) -> AtomicWriter:
        """A stream that creates (or replaces) ``uri`` only when closed cleanly."""

    @abc.abstractmethod
    def ranges(self, generations: Mapping[str, int], count: Count) -> RangeSource:
        """A source of ranged reads, pinned to ``generations`` where the scheme has them."""

    # ------------------------------------------------------------------ moving files

    @abc.abstractmethod
    def delete(self, uri: str) -> bool:
        """Delete one file; False when it did not exist."""

    @abc.abstractmethod
    def delete_tree(self, prefix_uri: str) -> int:
        """Delete everything under a folder; return how many files were deleted."""

    @abc.abstractmethod
    def list_tree(self, prefix_uri: str) -> list[str]:
        """Every file under a folder, recursively, sorted."""

    @abc.abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Copy one file within this backend; ``dst`` appears whole or not at all."""

    @abc.abstractmethod
    def place(
        self, src: str, dst: str, source_generation: int | None, if_version: str | None = None
    ) -> None:
        """Give ``src`` the name ``dst`` atomically for readers of ``dst``, keeping
        the identity a manifest records; only ``source_generation`` of ``src``
        where the scheme has generations; only if ``dst`` is at ``if_version``
        (:data:`MISSING`: absent) when one is given, else PreconditionFailed."""

    def rename(self, src: str, dst: str) -> None:
        """Move one file within this backend (by default: copy, then delete)."""
        self.copy(src, dst)
        self.delete(src)
