"""Ranged reads of (file, offset, length): how the build fetches exactly its records."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Sequence

from beam_jobs.storage import schemes
from beam_jobs.storage.base import Backend, RangeSource


class RangeReader:
    """Ranged reads of (file, offset, length) with per-file handles reused.

    Each scheme's backend supplies the reads (local files: ``os.pread`` on
    cached descriptors; GCS: one ranged GET per read, pinned to the generation
    when one is given, so a source replaced since validation is read as it
    was, or fails loudly). Safe to share between threads.

    ``bytes_fetched`` counts what the reader really asked storage for: the
    bytes every local ``pread`` returned, and for GCS every ranged GET that
    succeeded plus, for each attempt that failed and was retried, the bytes
    it asked for (the lineage's ``bytes_read``).
    """

    def __init__(self, generations: dict[str, int] | None = None) -> None:
        self._generations = generations or {}
        self._sources: dict[Backend, RangeSource] = {}
        self._by_uri: dict[str, RangeSource] = {}  # resolved once per file
        self._lock = threading.Lock()  # guards the sources and the pool
        self._pool: cf.ThreadPoolExecutor | None = None
        self._pool_threads = 0
        self._count_lock = threading.Lock()
        self.bytes_fetched = 0
        self.requests = 0

    def _count(self, nbytes: int, requests: int) -> None:
        with self._count_lock:
            self.bytes_fetched += nbytes
            self.requests += requests

    def _source(self, uri: str) -> RangeSource:
        """This reader's source of ranged reads for ``uri``'s backend (made once)."""
        source = self._by_uri.get(uri)
        if source is None:
            backend = schemes.backend(uri)
            with self._lock:
                source = self._sources.get(backend)
                if source is None:
                    source = backend.ranges(self._generations, self._count)
                    self._sources[backend] = source
                self._by_uri[uri] = source
        return source

    def read(self, uri: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes of ``uri`` at ``offset``; a short read
        raises StorageError naming the file and offset."""
        return self._source(uri).read(uri, offset, length)

    def read_many(
        self,
        uris: Sequence[str],
        file_ids: Sequence[int],
        offsets: Sequence[int],
        lengths: Sequence[int],
        threads: int = 1,
    ) -> list[bytes]:
        """``read(uris[file_ids[i]], offsets[i], lengths[i])`` for every i, in
        order. Files of one backend whose reads are a tight loop (local
        preads) and ``threads`` <= 1: one batch call, no per-record Python
        beyond it. Otherwise (GCS, or more threads asked for) ``threads``
        reads in flight."""
        if not len(file_ids):
            return []
        sources = {self._source(uris[f]) for f in set(file_ids)}
        if threads <= 1 and len(sources) == 1:
            (source,) = sources
            if source.batched:
                return source.read_batch(uris, file_ids, offsets, lengths)
        pool = self._executor(max(1, threads))
        return list(
            pool.map(lambda a: self.read(uris[a[0]], a[1], a[2]), zip(file_ids, offsets, lengths))
        )

    def _executor(self, threads: int) -> cf.ThreadPoolExecutor:
        """A thread pool kept for the reader's lifetime (not one per batch)."""
        with self._lock:
            if self._pool is None or self._pool_threads != threads:
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="range-read")
                self._pool_threads = threads
            return self._pool

    def close(self) -> None:
        """Close every source's files and the thread pool."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            for source in self._sources.values():
                source.close()
            self._sources.clear()
            self._by_uri.clear()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
