"""Storage access for absolute local paths and ``gs://`` URIs.

Why not only ``apache_beam.io.filesystems``: the pipeline needs things Beam's
filesystem layer does not expose well. Ranged reads of single records (Beam's
GCS reader buffers 16 MB per seek, which would read ~150x too much for a
110 KB record), object generations and CRC32C metadata (to fingerprint a
source and verify shards without reading them), and conditional writes (GCS
generation preconditions for the manifest). So ``gs://`` goes through
google-cloud-storage, whose built-in retry policy (exponential backoff on 429,
5xx and dropped connections) applies to every call here; local paths use the
OS directly. With ``STORAGE_EMULATOR_HOST`` set, google-cloud-storage talks to
that emulator anonymously (used by the tests).

All functions take full URIs. Wildcards (``*``, ``?``, ``[...]``) are allowed
in the last path component of :func:`list_files` patterns only.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import contextlib
import errno
import fnmatch
import functools
import logging
import os
import posixpath
import shutil
import threading
import uuid
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Sequence

import google_crc32c

log = logging.getLogger(__name__)

GCS_PREFIX = "gs://"
# Resumable upload chunk (must be a multiple of 256 KiB): bounds writer memory.
UPLOAD_CHUNK = 16 * 1024 * 1024
READ_CHUNK = 8 * 1024 * 1024
_local = threading.local()


class StorageError(RuntimeError):
    """A storage operation failed after retries; the message names the URI."""


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_PREFIX)


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len(GCS_PREFIX):].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, name


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
    if is_gcs(uri):
        bucket, name = split_gcs(uri)
        return f"{GCS_PREFIX}{bucket}/{name.strip('/')}".rstrip("/")
    return posixpath.normpath(os.path.abspath(uri)) if uri else uri


# --------------------------------------------------------------------------- GCS client


def gcs_client():  # -> google.cloud.storage.Client
    """A google-cloud-storage client for this thread (created on first use).

    Credentials: application-default credentials (on Dataflow and GCE, the
    worker's service account; on an Airflow worker, what the
    ``google_cloud_default`` connection provides through the environment).
    With ``STORAGE_EMULATOR_HOST`` set, anonymous access to that emulator.
    """
    client = getattr(_local, "client", None)
    if client is None:
        from google.cloud import storage

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                credentials=AnonymousCredentials(),
                project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test-project"),
            )
        else:
            client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)
        _local.client = client
    return client


@contextlib.contextmanager
def use_client(client) -> Iterator[None]:
    """Use ``client`` (a google.cloud.storage.Client) for gs:// in this thread,
    e.g. one made from an Airflow connection, instead of default credentials."""
    old = getattr(_local, "client", None)
    _local.client = client
    try:
        yield
    finally:
        _local.client = old


def _blob(uri: str, generation: int | None = None):
    bucket, name = split_gcs(uri)
    return gcs_client().bucket(bucket).blob(name, generation=generation)


def _retry(on_error=None):
    """google-cloud-storage's retry policy (exponential backoff with jitter on
    429, 5xx, timeouts and dropped connections), giving up after
    ``SSL_SPLITS_GCS_RETRY_DEADLINE`` seconds (default 300). ``on_error`` is
    called with each error that is retried."""
    from google.api_core.retry import Retry
    from google.cloud.storage.retry import DEFAULT_RETRY

    deadline = float(os.environ.get("SSL_SPLITS_GCS_RETRY_DEADLINE") or 300)
    retry = DEFAULT_RETRY.with_timeout(deadline).with_delay(initial=0.5, maximum=10.0)
    if on_error is None:
        return retry
    return Retry(predicate=retry._predicate, initial=retry._initial, maximum=retry._maximum,
                 multiplier=retry._multiplier, timeout=retry._timeout, on_error=on_error)


def crc32c_from_gcs(b64: str | None) -> str | None:
    """GCS's base64 big-endian CRC32C -> our 8-hex-digit form."""
    if not b64:
        return None
    return base64.b64decode(b64).hex()


def crc32c_hex(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class FileInfo:
    """What storage says about one file, without reading it.

    ``crc32c`` (8 hex digits, of the whole object) and ``generation`` are set
    for gs:// objects; ``mtime_ns`` for local files.
    """

    path: str
    size: int
    crc32c: str | None = None
    generation: int | None = None
    mtime_ns: int | None = None

    def identity(self) -> str:
        """A string that changes when the file's content is replaced."""
        if self.generation is not None:
            return f"{self.size}:{self.crc32c}:{self.generation}"
        return f"{self.size}:{self.mtime_ns}"


def _gcs_info(uri: str, blob) -> FileInfo:
    return FileInfo(
        path=uri,
        size=int(blob.size or 0),
        crc32c=crc32c_from_gcs(blob.crc32c),
        generation=int(blob.generation) if blob.generation is not None else None,
    )


def _local_info(path: str) -> FileInfo:
    st = os.stat(path)
    return FileInfo(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def list_files(pattern: str) -> list[FileInfo]:
    """Files matching ``pattern`` (wildcards in the last component), sorted by path."""
    folder, _, glob = pattern.rstrip("/").rpartition("/")
    if is_gcs(pattern):
        bucket, prefix = split_gcs(folder + "/")
        literal = glob
        for i, ch in enumerate(glob):
            if ch in "*?[":
                literal = glob[:i]
                break
        out = []
        try:
            blobs = gcs_client().list_blobs(
                bucket, prefix=prefix + literal, delimiter="/", retry=_retry()
            )
            for blob in blobs:
                name = blob.name[len(prefix):]
                if fnmatch.fnmatchcase(name, glob):
                    out.append(_gcs_info(f"{GCS_PREFIX}{bucket}/{blob.name}", blob))
        except Exception as err:
            if type(err).__name__ == "NotFound":
                raise StorageError(f"bucket of {pattern} does not exist") from None
            raise
        return sorted(out, key=lambda f: f.path)
    if not os.path.isdir(folder or "/"):
        return []
    out = []
    with os.scandir(folder or "/") as it:
        for entry in it:
            if entry.is_file() and fnmatch.fnmatchcase(entry.name, glob):
                out.append(_local_info(entry.path))
    return sorted(out, key=lambda f: f.path)


def stat(uri: str) -> FileInfo | None:
    """FileInfo for ``uri``, or None when it does not exist."""
    if is_gcs(uri):
        blob = _blob(uri)
        try:
            blob.reload(retry=_retry())
        except Exception as err:
            if type(err).__name__ == "NotFound":
                return None
            raise
        return _gcs_info(uri, blob)
    try:
        return _local_info(uri)
    except FileNotFoundError:
        return None


def exists(uri: str) -> bool:
    return stat(uri) is not None


def file_crc32c(uri: str) -> str:
    """CRC32C of a whole file: from metadata on GCS, by reading it locally."""
    if is_gcs(uri):
        info = stat(uri)
        if info is None or info.crc32c is None:
            raise StorageError(f"{uri}: no such object")
        return info.crc32c
    crc = 0
    with open(uri, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            crc = google_crc32c.extend(crc, chunk)
    return crc32c_hex(crc)


# --------------------------------------------------------------------------- whole files


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        try:
            return bytes(_blob(uri).download_as_bytes(retry=_retry(), checksum="crc32c"))
        except Exception as err:
            if type(err).__name__ == "NotFound":
                raise FileNotFoundError(uri) from None
            raise
    with open(uri, "rb") as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream",
                durable: bool = True) -> None:
    """Write a whole file atomically: readers see the old file or the new one.

    ``durable`` (local files): fsync before the rename, so the file survives a
    power loss too; off for small bookkeeping files that can be recomputed.
    """
    if is_gcs(uri):
        # Single-request uploads are atomic on GCS; crc32c is checked server-side.
        _blob(uri).upload_from_string(
            data, content_type=content_type, retry=_retry(), checksum="crc32c"
        )
        return
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    tmp = f"{uri}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, uri)


def write_text(uri: str, text: str, content_type: str = "text/plain", durable: bool = True) -> None:
    write_bytes(uri, text.encode("utf-8"), content_type, durable)


# --------------------------------------------------------------------------- streams


def open_read(uri: str, buffer_size: int = READ_CHUNK) -> IO[bytes]:
    """A buffered binary stream over a whole file (sequential reads)."""
    if is_gcs(uri):
        try:
            reader = _blob(uri).open("rb", chunk_size=buffer_size, retry=_retry())
        except Exception as err:
            if type(err).__name__ == "NotFound":
                raise FileNotFoundError(uri) from None
            raise
        return reader  # BlobReader is already buffered by chunk_size
    return open(uri, "rb", buffering=buffer_size)


class AtomicWriter:
    """A write stream that makes ``uri`` appear only when closed without error.

    Locally: writes ``<uri>.tmp-XXXX`` and renames it into place on close
    (``rename(2)`` is atomic). On GCS: a resumable upload, which creates the
    object only when finalized on close. Leaving the ``with`` block by an
    exception (or :meth:`abort`) discards everything, so a failed or killed
    writer never leaves a partial file under the final name.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._tmp: str | None = None
        if is_gcs(uri):
            self._f = _blob(uri).open(
                "wb", chunk_size=UPLOAD_CHUNK, retry=_retry(), ignore_flush=True
            )
        else:
            os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
            self._tmp = f"{uri}.tmp-{uuid.uuid4().hex[:8]}"
            self._f = open(self._tmp, "wb", buffering=1 << 20)
        self.closed = False

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self._f.writelines(chunks)

    def flush(self) -> None:
        if self._tmp is not None:
            self._f.flush()

    def close(self) -> None:
        """Finish the file: it appears under its final name."""
        if self.closed:
            return
        self.closed = True
        if self._tmp is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self.uri)
        else:
            self._f.close()

    def abort(self) -> None:
        """Discard what was written; the final name is left untouched."""
        if self.closed:
            return
        self.closed = True
        if self._tmp is not None:
            self._f.close()
            try:
                os.remove(self._tmp)
            except FileNotFoundError:
                pass
        else:
            # Cancel the resumable upload: the object is never created.
            try:
                self._f.terminate()
            except Exception as err:  # the session expires on its own anyway
                log.warning("could not cancel the upload of %s: %s", self.uri, err)

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_write(uri: str) -> AtomicWriter:
    """A binary stream that creates (or replaces) ``uri`` only when closed cleanly."""
    return AtomicWriter(uri)


@functools.cache
def _max_open_files() -> int:
    """How many source files a RangeReader keeps open (more are opened for
    one read or one batch at a time): half the process's soft limit on
    descriptors (ImageNet has 1,024 train shards)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 1 << 16
    return max(16, soft // 2)


class RangeReader:
    """Ranged reads of (file, offset, length) with per-file handles reused.

    Local files: ``os.pread`` on cached descriptors. GCS: one ranged GET per
    read (``Range: bytes=a-b``), pinned to the generation when one is given,
    so a source replaced since validation is read as it was, or fails loudly.
    Safe to share between threads.

    ``bytes_fetched`` counts what the reader really asked storage for: the
    bytes every local ``pread`` returned, and for GCS every ranged GET that
    succeeded plus, for each attempt that failed and was retried, the bytes
    it asked for (the lineage's ``bytes_read``).
    """

    def __init__(self, generations: dict[str, int] | None = None) -> None:
        self._generations = generations or {}
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()  # guards the descriptor cache and the pool
        self._pool: cf.ThreadPoolExecutor | None = None
        self._pool_threads = 0
        self._count_lock = threading.Lock()
        self.bytes_fetched = 0
        self.requests = 0

    def _count(self, nbytes: int, requests: int = 1) -> None:
        with self._count_lock:
            self.bytes_fetched += nbytes
            self.requests += requests

    def read(self, uri: str, offset: int, length: int) -> bytes:
        if is_gcs(uri):
            blob = _blob(uri, self._generations.get(uri))
            try:
                data = blob.download_as_bytes(
                    start=offset, end=offset + length - 1, checksum=None,
                    retry=_retry(on_error=lambda _err: self._count(length)),
                )
                self._count(len(data))
            except Exception as err:
                if type(err).__name__ == "NotFound":
                    raise StorageError(
                        f"{uri} (generation {self._generations.get(uri)}) no longer exists: "
                        "the source changed since it was validated"
                    ) from None
                raise
        else:
            return self._pread_many([uri], [0], [offset], [length])[0]
        if len(data) != length:
            raise StorageError(
                f"{uri}: short read at offset {offset}: wanted {length} bytes, got {len(data)}"
            )
        return bytes(data)

    def read_many(self, uris: Sequence[str], file_ids: Sequence[int], offsets: Sequence[int],
                  lengths: Sequence[int], threads: int = 1) -> list[bytes]:
        """``read(uris[file_ids[i]], offsets[i], lengths[i])`` for every i, in
        order. Local files: one ``pread`` each in a tight loop (no per-record
        Python call beyond it). GCS: ``threads`` ranged GETs in flight."""
        if not len(file_ids):
            return []
        if any(is_gcs(u) for u in uris) or threads > 1:
            pool = self._executor(max(1, threads))
            return list(pool.map(lambda a: self.read(uris[a[0]], a[1], a[2]),
                                 zip(file_ids, offsets, lengths)))
        return self._pread_many(uris, file_ids, offsets, lengths)

    def _pread_many(self, uris: Sequence[str], file_ids: Sequence[int], offsets: Sequence[int],
                    lengths: Sequence[int]) -> list[bytes]:
        """Local files: one ``pread`` per record in a tight loop, on cached
        descriptors (or ones opened for this call when the cache is full);
        a short read names the file and offset."""
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
                    raise StorageError(f"{uris[file_ids[i]]}: short read at offset "
                                       f"{offsets[i]}: wanted {n} bytes, got {len(data)}")
        return out

    def _executor(self, threads: int) -> cf.ThreadPoolExecutor:
        """A thread pool kept for the reader's lifetime (not one per batch)."""
        with self._lock:
            if self._pool is None or self._pool_threads != threads:
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="range-read")
                self._pool_threads = threads
            return self._pool

    def _cached_fd(self, uri: str) -> int | None:
        """The cached descriptor of a local file, opened and cached if there
        is room; None when the cache is full (the caller opens the file for
        the read at hand). Cached descriptors are never closed before
        ``close``, so a thread never reads from a descriptor closed under it."""
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
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- moving files


def delete(uris: Iterable[str]) -> int:
    """Delete files that exist; return how many were deleted."""
    n = 0
    for uri in uris:
        if is_gcs(uri):
            try:
                _blob(uri).delete(retry=_retry())
                n += 1
            except Exception as err:
                if type(err).__name__ != "NotFound":
                    raise
        else:
            try:
                os.remove(uri)
                n += 1
            except FileNotFoundError:
                pass
    return n


def delete_tree(prefix_uri: str) -> int:
    """Delete everything under a folder (all objects with that prefix on GCS)."""
    if is_gcs(prefix_uri):
        bucket, prefix = split_gcs(prefix_uri.rstrip("/") + "/")
        names = [
            f"{GCS_PREFIX}{bucket}/{b.name}"
            for b in gcs_client().list_blobs(bucket, prefix=prefix, retry=_retry())
        ]
        return delete(names)
    if os.path.isdir(prefix_uri):
        n = sum(len(files) for _, _, files in os.walk(prefix_uri))
        shutil.rmtree(prefix_uri)
        return n
    return 0


def list_tree(prefix_uri: str) -> list[str]:
    """Every file under a folder, recursively, sorted."""
    if is_gcs(prefix_uri):
        bucket, prefix = split_gcs(prefix_uri.rstrip("/") + "/")
        return sorted(
            f"{GCS_PREFIX}{bucket}/{b.name}"
            for b in gcs_client().list_blobs(bucket, prefix=prefix, retry=_retry())
        )
    out = []
    for root, _, files in os.walk(prefix_uri):
        out.extend(os.path.join(root, f) for f in files)
    return sorted(out)


def copy(src: str, dst: str) -> None:
    """Copy one file. GCS to GCS is a server-side rewrite: no data through this process."""
    if is_gcs(src) and is_gcs(dst):
        sb, sn = split_gcs(src)
        db, dn = split_gcs(dst)
        client = gcs_client()
        dst_blob = client.bucket(db).blob(dn)
        token, _, _ = dst_blob.rewrite(client.bucket(sb).blob(sn), retry=_retry())
        while token is not None:
            token, _, _ = dst_blob.rewrite(client.bucket(sb).blob(sn), token=token, retry=_retry())
        return
    if not is_gcs(src) and not is_gcs(dst):
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        tmp = f"{dst}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
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
    if is_gcs(src) and is_gcs(dst):
        sb, sn = split_gcs(src)
        db, dn = split_gcs(dst)
        client = gcs_client()
        source = client.bucket(sb).blob(sn, generation=source_generation)
        dst_blob = client.bucket(db).blob(dn)
        kw = {} if source_generation is None else {"if_source_generation_match": source_generation}
        token, _, _ = dst_blob.rewrite(source, retry=_retry(), **kw)
        while token is not None:
            token, _, _ = dst_blob.rewrite(source, token=token, retry=_retry(), **kw)
        return
    if is_gcs(src) or is_gcs(dst):
        raise ValueError(f"cannot place {src} at {dst}: both must be local or both gs://")
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        tmp = f"{dst}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        os.remove(src)


def rename(src: str, dst: str) -> None:
    """Move one file: atomic ``rename(2)`` locally, copy then delete on GCS."""
    if is_gcs(src) or is_gcs(dst):
        copy(src, dst)
        delete([src])
        return
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    os.replace(src, dst)


def iter_chunks(uri: str, chunk: int = READ_CHUNK) -> Iterator[bytes]:
    with open_read(uri, chunk) as f:
        while data := f.read(chunk):
            yield data


__all__ = [
    "AtomicWriter", "FileInfo", "RangeReader", "StorageError", "basename", "copy", "crc32c_hex", "delete",
    "delete_tree", "dirname", "place", "exists", "file_crc32c", "gcs_client", "is_gcs", "join",
    "list_files", "list_tree", "normalize", "open_read", "open_write", "read_bytes", "read_text",
    "rename", "split_gcs", "stat", "use_client", "write_bytes", "write_text",
]
