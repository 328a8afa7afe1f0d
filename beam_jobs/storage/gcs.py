"""Google Cloud Storage: ``gs://bucket/name``, through google-cloud-storage.

Why not Beam's ``gs://`` filesystem: the jobs need ranged reads of single
records (Beam's GCS reader buffers 16 MB per seek, which would read ~150x too
much for a 110 KB record), object generations and CRC32C metadata (to
fingerprint a source and verify shards without reading them), and
conditional writes. Every call here carries the library's retry policy
(:func:`retry`); atomicity comes from GCS itself: single-request and
resumable uploads create the object only when complete, and a server-side
rewrite replaces it at once.

google-cloud-storage is imported on first use, so importing storage stays
cheap where no gs:// URI is touched. With ``STORAGE_EMULATOR_HOST`` set, the
client talks to that emulator anonymously (used by the tests).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import logging
import os
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, cast

from beam_jobs.storage.base import (
    MISSING,
    AtomicWriter,
    Backend,
    Count,
    FileInfo,
    PreconditionFailed,
    RangeSource,
    StorageError,
)

if TYPE_CHECKING:
    from google.api_core.retry import Retry

log = logging.getLogger(__name__)

PREFIX = "gs://"
# Resumable upload chunk (must be a multiple of 256 KiB): bounds writer memory.
UPLOAD_CHUNK = 16 * 1024 * 1024
_local = threading.local()


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not uri.startswith(PREFIX):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len(PREFIX) :].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, name


def crc32c_from_gcs(b64: str | None) -> str | None:
    """GCS's base64 big-endian CRC32C -> our 8-hex-digit form."""
    if not b64:
        return None
    return base64.b64decode(b64).hex()


# --------------------------------------------------------------------------- client, retries, errors


def gcs_client() -> Any:  # google.cloud.storage.Client (the library ships no type hints)
    """A google-cloud-storage client for this thread (created on first use).

    Credentials: application-default credentials (on Dataflow and GCE, the
    worker's service account; on an Airflow worker, what the
    ``google_cloud_default`` connection provides through the environment).
    With ``STORAGE_EMULATOR_HOST`` set, anonymous access to that emulator.
    """
    client = getattr(_local, "client", None)
    if client is None:
        import google.cloud.storage as gcs

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = gcs.Client(
                credentials=AnonymousCredentials(),
                project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test-project"),
            )
        else:
            client = gcs.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)
        _local.client = client
    return client


@contextlib.contextmanager
def use_client(client: Any) -> Iterator[None]:
    """Use ``client`` (a google.cloud.storage.Client) for gs:// in this thread,
    e.g. one made from an Airflow connection, instead of default credentials;
    ``None``: a fresh default client (made on first use)."""
    old = getattr(_local, "client", None)
    _local.client = client
    try:
        yield
    finally:
        _local.client = old


def retry_deadline() -> float:
    """How long a storage call retries before it fails (``SSL_SPLITS_GCS_RETRY_DEADLINE``,
    seconds, default 300): the longest one step of the commit protocol can take."""
    return float(os.environ.get("SSL_SPLITS_GCS_RETRY_DEADLINE") or 300)


def retry(on_error: Callable[[Exception], None] | None = None) -> Retry:
    """google-cloud-storage's retry policy (exponential backoff with jitter on
    429, 5xx, timeouts and dropped connections), giving up after
    ``SSL_SPLITS_GCS_RETRY_DEADLINE`` seconds (default 300). ``on_error`` is
    called with each error that is retried."""
    from google.api_core.retry import Retry
    from google.cloud.storage.retry import DEFAULT_RETRY

    policy = DEFAULT_RETRY.with_timeout(retry_deadline()).with_delay(initial=0.5, maximum=10.0)
    if on_error is None:
        return cast("Retry", policy)
    return Retry(
        predicate=policy._predicate,
        initial=policy._initial,
        maximum=policy._maximum,
        multiplier=policy._multiplier,
        timeout=policy._timeout,
        on_error=on_error,
    )


def not_found() -> type[Exception]:
    """The error google-cloud-storage raises for a missing object or bucket,
    for ``except not_found():`` (imported only when an error is being matched)."""
    from google.api_core.exceptions import NotFound

    return NotFound


def _blob(uri: str, generation: int | None = None) -> Any:
    bucket, name = split_gcs(uri)
    return gcs_client().bucket(bucket).blob(name, generation=generation)


def precondition_failed() -> type[Exception]:
    """The error google-cloud-storage raises for 412, for ``except``."""
    from google.api_core.exceptions import PreconditionFailed as Failed

    return Failed


def _info(uri: str, blob: Any) -> FileInfo:
    generation = int(blob.generation) if blob.generation is not None else None
    return FileInfo(
        path=uri,
        size=int(blob.size or 0),
        crc32c=crc32c_from_gcs(blob.crc32c),
        generation=generation,
        version=str(generation) if generation is not None else None,
        modified=blob.updated.timestamp() if blob.updated is not None else None,
    )


def _rewrite(dst: Any, source: Any, **conditions: int) -> None:
    """Server-side copy of ``source`` to ``dst``, in as many calls as GCS needs
    (large objects across locations or storage classes take several)."""
    token, _, _ = dst.rewrite(source, retry=retry(), **conditions)
    while token is not None:
        token, _, _ = dst.rewrite(source, token=token, retry=retry(), **conditions)


# --------------------------------------------------------------------------- streams


class GcsWriter(AtomicWriter):
    """A resumable upload in ``UPLOAD_CHUNK`` pieces: the object is created only
    when the upload is finalized on close; abort cancels the session."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._f = _blob(uri).open("wb", chunk_size=UPLOAD_CHUNK, retry=retry(), ignore_flush=True)

    def write(self, data: bytes) -> int:
        return cast(int, self._f.write(data))

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self._f.writelines(chunks)

    def flush(self) -> None:
        """Nothing: a flush mid-upload would cost a request (``ignore_flush``)."""

    def _commit(self) -> None:
        self._f.close()

    def _discard(self) -> None:
        try:
            self._f.terminate()
        except Exception as err:  # the session expires on its own anyway
            log.warning("could not cancel the upload of %s: %s", self.uri, err)


class GcsRanges(RangeSource):
    """One ranged GET per read (``Range: bytes=a-b``), pinned to the object's
    generation when one is given, so a source replaced since validation is
    read as it was, or fails loudly. Counts every GET that succeeded and, for
    each attempt that failed and was retried, the bytes it asked for."""

    def __init__(self, generations: Mapping[str, int], count: Count) -> None:
        super().__init__(count)
        self._generations = generations

    def read(self, uri: str, offset: int, length: int) -> bytes:
        generation = self._generations.get(uri)
        try:
            data = _blob(uri, generation).download_as_bytes(
                start=offset,
                end=offset + length - 1,
                checksum=None,
                retry=retry(on_error=lambda _err: self._count(length, 1)),
            )
            self._count(len(data), 1)
        except not_found():
            raise StorageError(
                f"{uri} (generation {generation}) no longer exists: "
                "the source changed since it was validated"
            ) from None
        if len(data) != length:
            raise StorageError(
                f"{uri}: short read at offset {offset}: wanted {length} bytes, got {len(data)}"
            )
        return bytes(data)

    def close(self) -> None:
        """Nothing to release: every read is its own request."""


# --------------------------------------------------------------------------- the backend


class GcsBackend(Backend):
    """``gs://bucket/name`` objects."""

    # A server-side copy within a bucket is a metadata operation that waits on GCS.
    place_concurrency = 16

    def carry(self) -> Callable[[], contextlib.AbstractContextManager[None]]:
        """The calling thread's credentials (e.g. from an Airflow connection),
        for another thread: a client of its own there, with the same
        credentials and project (a client's HTTP session is not shared)."""
        client = getattr(_local, "client", None)
        if client is None:
            return contextlib.nullcontext

        def enter() -> contextlib.AbstractContextManager[None]:
            import google.cloud.storage as gcs

            # google-cloud-core keeps a client's credentials as ``_credentials``.
            return use_client(gcs.Client(credentials=client._credentials, project=client.project))

        return enter

    def normalize(self, uri: str) -> str:
        bucket, name = split_gcs(uri)
        return f"{PREFIX}{bucket}/{name.strip('/')}".rstrip("/")

    # ------------------------------------------------------------------ metadata

    def stat(self, uri: str) -> FileInfo | None:
        blob = _blob(uri)
        try:
            blob.reload(retry=retry())
        except not_found():
            return None
        return _info(uri, blob)

    def list_files(self, pattern: str) -> list[FileInfo]:
        """One listing of the literal prefix of the last component, filtered."""
        folder, _, glob = pattern.rstrip("/").rpartition("/")
        bucket, prefix = split_gcs(folder + "/")
        literal = glob
        for i, ch in enumerate(glob):
            if ch in "*?[":
                literal = glob[:i]
                break
        out = []
        try:
            blobs = gcs_client().list_blobs(
                bucket, prefix=prefix + literal, delimiter="/", retry=retry()
            )
            for blob in blobs:
                if fnmatch.fnmatchcase(blob.name[len(prefix) :], glob):
                    out.append(_info(f"{PREFIX}{bucket}/{blob.name}", blob))
        except not_found():
            raise StorageError(f"bucket of {pattern} does not exist") from None
        return sorted(out, key=lambda f: f.path)

    def file_crc32c(self, uri: str) -> str:
        """From the object's metadata: nothing is read."""
        info = self.stat(uri)
        if info is None or info.crc32c is None:
            raise StorageError(f"{uri}: no such object")
        return info.crc32c

    # ------------------------------------------------------------------ whole files and streams

    def read_bytes(self, uri: str) -> bytes:
        try:
            return bytes(_blob(uri).download_as_bytes(retry=retry(), checksum="crc32c"))
        except not_found():
            raise FileNotFoundError(uri) from None

    def read_versioned(self, uri: str, max_bytes: int) -> tuple[bytes, FileInfo]:
        """The metadata, then the media of exactly that generation (read again
        when it was replaced in between)."""
        for _ in range(8):
            blob = _blob(uri)
            try:
                blob.reload(retry=retry())
                info = _info(uri, blob)
                if info.size > max_bytes:
                    raise StorageError(
                        f"{uri} is {info.size} bytes, more than {max_bytes} expected"
                    )
                data = blob.download_as_bytes(
                    if_generation_match=info.generation, retry=retry(), checksum="crc32c"
                )
            except not_found():
                raise FileNotFoundError(uri) from None
            except precondition_failed():
                continue  # replaced between the metadata read and the download
            return bytes(data), info
        raise StorageError(f"{uri} kept changing while it was read")

    def write_if(self, uri: str, data: bytes, content_type: str, if_version: str) -> FileInfo:
        """A single-request upload with ``ifGenerationMatch`` (0: must not exist).
        Conditional writes carry the commit protocol's documents (manifest, lock,
        journal), which readers must never get from a cache: ``no-cache``."""
        blob = _blob(uri)
        blob.cache_control = "no-cache"
        try:
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=int(if_version),
                retry=retry(),
                checksum="crc32c",
            )
        except precondition_failed():
            raise PreconditionFailed(
                f"{uri} is not at generation {if_version}"
                f"{' (it exists)' if if_version == MISSING else ''}: nothing was changed"
            ) from None
        return _info(uri, blob)

    def delete_if(self, uri: str, if_version: str) -> bool:
        try:
            _blob(uri).delete(if_generation_match=int(if_version), retry=retry())
            return True
        except not_found():
            return False
        except precondition_failed():
            if self.stat(uri) is None:
                return False  # gone meanwhile (or missing: some servers answer 412)
            raise PreconditionFailed(
                f"{uri} is not at generation {if_version}: not deleted"
            ) from None

    def occupied(self, uri: str) -> bool:
        """An object of that name, or objects under it as a folder."""
        if self.stat(uri) is not None:
            return True
        bucket, name = split_gcs(uri.rstrip("/") + "/")
        blobs = gcs_client().list_blobs(bucket, prefix=name, max_results=1, retry=retry())
        return any(True for _ in blobs)

    def clock(self, probe_uri: str) -> float:
        """The ``updated`` time GCS stamps on a small upload of ``probe_uri``."""
        blob = _blob(probe_uri)
        blob.upload_from_string(b"clock\n", content_type="text/plain", retry=retry())
        if blob.updated is None:
            blob.reload(retry=retry())
        return float(blob.updated.timestamp())

    def write_bytes(self, uri: str, data: bytes, content_type: str, durable: bool) -> None:
        """A single-request upload: atomic on GCS; CRC32C checked server-side."""
        _blob(uri).upload_from_string(
            data, content_type=content_type, retry=retry(), checksum="crc32c"
        )

    def open_read(self, uri: str, buffer_size: int) -> IO[bytes]:
        """Chunked ranged GETs of the generation live at open (its metadata
        read first, one request): a missing object fails here, as a local
        file does, and an object replaced while it is read fails its next
        chunk instead of mixing two versions."""
        blob = _blob(uri)
        try:
            blob.reload(retry=retry())
        except not_found():
            raise FileNotFoundError(uri) from None
        reader = blob.open("rb", chunk_size=buffer_size, retry=retry())
        return cast("IO[bytes]", reader)  # BlobReader is already buffered by chunk_size

    def open_write(self, uri: str) -> AtomicWriter:
        return GcsWriter(uri)

    def ranges(self, generations: Mapping[str, int], count: Count) -> RangeSource:
        return GcsRanges(generations, count)

    # ------------------------------------------------------------------ moving files

    def delete(self, uri: str) -> bool:
        try:
            _blob(uri).delete(retry=retry())
            return True
        except not_found():
            return False

    def _names_under(self, prefix_uri: str) -> list[str]:
        bucket, prefix = split_gcs(prefix_uri.rstrip("/") + "/")
        return [
            f"{PREFIX}{bucket}/{b.name}"
            for b in gcs_client().list_blobs(bucket, prefix=prefix, retry=retry())
        ]

    def delete_tree(self, prefix_uri: str) -> int:
        """Every object with the folder's prefix (GCS has no folders to remove)."""
        return sum(self.delete(uri) for uri in self._names_under(prefix_uri))

    def list_tree(self, prefix_uri: str) -> list[str]:
        return sorted(self._names_under(prefix_uri))

    def copy(self, src: str, dst: str) -> None:
        """A server-side rewrite: no data through this process."""
        _rewrite(_blob(dst), _blob(src))

    def place(
        self, src: str, dst: str, source_generation: int | None, if_version: str | None = None
    ) -> None:
        """A server-side rewrite of generation ``source_generation`` only (a
        replaced source fails with 412 instead of being published), onto
        generation ``if_version`` of ``dst`` only (``ifGenerationMatch``, 0:
        absent); ``src`` stays until the caller deletes it."""
        conditions = {}
        if source_generation is not None:
            conditions["if_source_generation_match"] = source_generation
        if if_version is not None:
            conditions["if_generation_match"] = int(if_version)
        try:
            _rewrite(_blob(dst), _blob(src, source_generation), **conditions)
        except precondition_failed():
            raise PreconditionFailed(
                f"cannot place {src} (generation {source_generation}) at {dst}: one of them "
                f"is not the object expected ({dst} at generation {if_version}); nothing "
                "was changed"
            ) from None
