"""Local files: absolute paths, through the OS directly.

Atomicity comes from ``rename(2)``: every write goes to ``<name>.tmp-XXXXXXXX``
in the same folder and is renamed into place, so readers see the old file or
the new one. A file's identity is its size and modification time (which
:meth:`LocalBackend.place` keeps).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import functools
import os
import posixpath
import shutil
import threading
import uuid
from typing import IO, Iterable, Iterator, Mapping, Sequence

import google_crc32c

from beam_jobs.storage.base import (
    MISSING,
    READ_CHUNK,
    AtomicWriter,
    Backend,
    Count,
    FileInfo,
    PreconditionFailed,
    RangeSource,
    StorageError,
    crc32c_hex,
)


def _tmp_name(uri: str) -> str:
    """A private name beside ``uri`` (same file system, so rename is atomic)."""
    return f"{uri}.tmp-{uuid.uuid4().hex[:8]}"


def _make_parent(uri: str) -> None:
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)


def _from_stat(path: str, st: os.stat_result) -> FileInfo:
    return FileInfo(
        path=path,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        version=f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}",
        modified=st.st_mtime_ns / 1e9,
    )


def _info(path: str) -> FileInfo:
    return _from_stat(path, os.stat(path))


def _durable_copy_beside(src: str, dst: str) -> str:
    """A copy of ``src`` beside ``dst`` (same file system) that keeps its
    modification time, fsynced; its name."""
    tmp = _tmp_name(dst)
    shutil.copy2(src, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    return tmp


def _link_new(src: str, dst: str) -> None:
    """Give ``src`` the new name ``dst`` only if nothing is there: a hard link
    (which fails if the name is taken by anything), then the old name removed;
    across file systems a copy that keeps the modification time, linked the same way."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise PreconditionFailed(f"{dst} exists: nothing was changed") from None
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        tmp = _durable_copy_beside(src, dst)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            raise PreconditionFailed(f"{dst} exists: nothing was changed") from None
        finally:
            os.remove(tmp)
    os.remove(src)


@contextlib.contextmanager
def folder_guard(folder: str) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file beside the
    user's files): every conditional operation in a folder holds it while it
    compares and renames, so the comparison and the change are one step for
    every writer that goes through this backend."""
    os.makedirs(folder or ".", exist_ok=True)
    fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _expect(uri: str, if_version: str) -> FileInfo | None:
    """PreconditionFailed unless ``uri`` is at ``if_version`` (call under the
    guard); the file as it is (None when missing)."""
    try:
        info: FileInfo | None = _info(uri)
    except FileNotFoundError:
        info = None
    _require_version(uri, info, if_version)
    return info


def _require_version(uri: str, info: FileInfo | None, if_version: str) -> None:
    """PreconditionFailed unless ``info`` (``uri`` as it is; None: missing)
    is at ``if_version``."""
    found = (info.version if info is not None else None) or MISSING
    if found != if_version:
        what = (
            "exists"
            if if_version == MISSING
            else ("does not exist" if found == MISSING else "was replaced")
        )
        raise PreconditionFailed(
            f"{uri} {what}: expected version {if_version}, found {found}; nothing was changed"
        )


class LocalWriter(AtomicWriter):
    """Writes ``<uri>.tmp-XXXX``; on close, fsync and rename it into place."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        _make_parent(uri)
        self._tmp = _tmp_name(uri)
        self._f = open(self._tmp, "wb", buffering=1 << 20)

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self._f.writelines(chunks)

    def flush(self) -> None:
        self._f.flush()

    def _commit(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.uri)

    def _discard(self) -> None:
        self._f.close()
        try:
            os.remove(self._tmp)
        except FileNotFoundError:
            pass


@functools.cache
def _max_open_files() -> int:
    """How many source files a reader keeps open (more are opened for one
    batch at a time): half the process's soft limit on descriptors (ImageNet
    has 1,024 train shards)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 1 << 16
    return max(16, soft // 2)


class LocalRanges(RangeSource):
    """``os.pread`` on cached descriptors: one call per record in a tight loop
    (no per-record Python beyond it), which threads would not speed up.
    Counts the bytes every pread returned."""

    batched = True

    def __init__(self, count: Count) -> None:
        super().__init__(count)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()  # guards the descriptor cache

    def read(self, uri: str, offset: int, length: int) -> bytes:
        return self.read_batch([uri], [0], [offset], [length])[0]

    def read_batch(
        self,
        uris: Sequence[str],
        file_ids: Sequence[int],
        offsets: Sequence[int],
        lengths: Sequence[int],
    ) -> list[bytes]:
        """One ``pread`` per record, on cached descriptors (or ones opened for
        this call when the cache is full); a short read names the file and offset."""
        fds: dict[int, int] = {}
        temps: list[int] = []
        for f in set(file_ids):
            fd = self._cached_fd(uris[f])
            if fd is None:
                fd = os.open(uris[f], os.O_RDONLY)
                temps.append(fd)
            fds[f] = fd
        try:
            pread = os.pread
            out = [pread(fds[f], n, o) for f, o, n in zip(file_ids, offsets, lengths)]
        finally:
            for fd in temps:
                os.close(fd)
        self._count(sum(map(len, out)), len(out))
        if sum(map(len, out)) != sum(lengths):  # pread never returns more than asked
            for i, (data, n) in enumerate(zip(out, lengths)):
                if len(data) != n:
                    raise StorageError(
                        f"{uris[file_ids[i]]}: short read at offset "
                        f"{offsets[i]}: wanted {n} bytes, got {len(data)}"
                    )
        return out

    def _cached_fd(self, uri: str) -> int | None:
        """The cached descriptor of a file, opened and cached if there is room;
        None when the cache is full (the caller opens the file for the batch at
        hand). Cached descriptors are never closed before ``close``, so a
        thread never reads from a descriptor closed under it."""
        fd = self._fds.get(uri)
        if fd is None:
            with self._lock:
                fd = self._fds.get(uri)
                if fd is None and len(self._fds) < _max_open_files():
                    fd = os.open(uri, os.O_RDONLY)
                    self._fds[uri] = fd
        return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class LocalBackend(Backend):
    """Absolute local paths."""

    def normalize(self, uri: str) -> str:
        """Absolute, ``..`` and ``//`` collapsed, no trailing slash."""
        return posixpath.normpath(os.path.abspath(uri)) if uri else uri

    # ------------------------------------------------------------------ metadata

    def stat(self, uri: str) -> FileInfo | None:
        try:
            return _info(uri)
        except FileNotFoundError:
            return None

    def list_files(self, pattern: str) -> list[FileInfo]:
        folder, _, glob = pattern.rstrip("/").rpartition("/")
        folder = folder or "/"
        out = []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.is_file() and fnmatch.fnmatchcase(entry.name, glob):
                        try:
                            out.append(_info(entry.path))
                        except FileNotFoundError:
                            pass  # renamed or deleted since the folder was read: not there now
        except (FileNotFoundError, NotADirectoryError):
            return []  # no such folder (or it was removed while being read)
        return sorted(out, key=lambda f: f.path)

    def file_crc32c(self, uri: str) -> str:
        """By reading the file (local files have no stored checksum)."""
        crc = 0
        with open(uri, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                crc = google_crc32c.extend(crc, chunk)
        return crc32c_hex(crc)

    # ------------------------------------------------------------------ whole files and streams

    def read_bytes(self, uri: str) -> bytes:
        with open(uri, "rb") as f:
            return f.read()

    def read_versioned(self, uri: str, max_bytes: int) -> tuple[bytes, FileInfo]:
        """One open file: its ``fstat`` and its bytes are of the same version
        (a replacement renames another inode into place)."""
        with open(uri, "rb") as f:
            info = _from_stat(uri, os.fstat(f.fileno()))
            if info.size > max_bytes:
                raise StorageError(f"{uri} is {info.size} bytes, more than {max_bytes} expected")
            return f.read(max_bytes + 1), info

    # ------------------------------------------------------------------ conditional operations

    def write_if(self, uri: str, data: bytes, content_type: str, if_version: str) -> FileInfo:
        """Under the folder's guard: compare, then a complete temporary file
        hard-linked to a missing name (fails if the name exists meanwhile) or
        renamed over the expected version."""
        tmp = _tmp_name(uri)
        _make_parent(uri)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            with folder_guard(os.path.dirname(uri)):
                current = _expect(uri, if_version)
                # A version is inode, modification time and size; a freed inode is
                # reused at once, and a coarse clock repeats times: the new file's
                # time is made later than the one it replaces, so versions never repeat.
                old = current.mtime_ns if current is not None else None
                if old is not None and os.stat(tmp).st_mtime_ns <= old:
                    os.utime(tmp, ns=(old + 1, old + 1))
                if if_version == MISSING:
                    try:
                        os.link(tmp, uri)
                    except FileExistsError:
                        raise PreconditionFailed(f"{uri} exists: nothing was changed") from None
                else:
                    os.replace(tmp, uri)
                return _info(uri)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def delete_if(self, uri: str, if_version: str) -> bool:
        with folder_guard(os.path.dirname(uri)):
            try:
                info = _info(uri)  # one stat: missing, or its version is checked
            except FileNotFoundError:
                return False
            _require_version(uri, info, if_version)
            os.remove(uri)
            return True

    def occupied(self, uri: str) -> bool:
        return os.path.lexists(uri)

    def clock(self, probe_uri: str) -> float:
        """The file system's time: the modification time it stamps on a write
        (the server's on a network file system)."""
        _make_parent(probe_uri)
        with open(probe_uri, "wb") as f:
            f.write(b"clock\n")
            f.flush()
            return os.fstat(f.fileno()).st_mtime_ns / 1e9

    def write_bytes(self, uri: str, data: bytes, content_type: str, durable: bool) -> None:
        """A temporary file renamed into place; ``durable``: fsync before the
        rename (off for small bookkeeping files that can be recomputed)."""
        _make_parent(uri)
        tmp = _tmp_name(uri)
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, uri)

    def open_read(self, uri: str, buffer_size: int) -> IO[bytes]:
        return open(uri, "rb", buffering=buffer_size)

    def open_write(self, uri: str) -> AtomicWriter:
        return LocalWriter(uri)

    def ranges(self, generations: Mapping[str, int], count: Count) -> RangeSource:
        return LocalRanges(count)  # a local file has no generations to pin

    # ------------------------------------------------------------------ moving files

    def delete(self, uri: str) -> bool:
        try:
            os.remove(uri)
            return True
        except FileNotFoundError:
            return False

    def delete_tree(self, prefix_uri: str) -> int:
        if not os.path.isdir(prefix_uri):
            return 0
        n = sum(len(files) for _, _, files in os.walk(prefix_uri))
        shutil.rmtree(prefix_uri)
        return n

    def list_tree(self, prefix_uri: str) -> list[str]:
        out: list[str] = []
        for root, _, files in os.walk(prefix_uri):
            out.extend(os.path.join(root, f) for f in files)
        return sorted(out)

    def copy(self, src: str, dst: str) -> None:
        _make_parent(dst)
        tmp = _tmp_name(dst)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

    def place(
        self, src: str, dst: str, source_generation: int | None, if_version: str | None = None
    ) -> None:
        """``rename(2)``, which keeps the modification time; across file
        systems a copy that keeps it (fsynced), renamed into place, then the
        source removed. With ``if_version``: under the destination folder's
        guard, only if ``dst`` is at that version."""
        _make_parent(dst)
        guard = (
            folder_guard(os.path.dirname(dst))
            if if_version is not None
            else contextlib.nullcontext()
        )
        with guard:
            if if_version is not None:
                _expect(dst, if_version)
            if if_version == MISSING:
                _link_new(src, dst)  # fails if anything (even a dangling link) is there
                return
            try:
                os.replace(src, dst)
            except OSError as err:
                if err.errno != errno.EXDEV:
                    raise
                os.replace(_durable_copy_beside(src, dst), dst)
                os.remove(src)

    def rename(self, src: str, dst: str) -> None:
        """Atomic ``rename(2)``."""
        _make_parent(dst)
        os.replace(src, dst)
