"""Progress of a Beam job in its launcher's log (and so in the Airflow task log).

Each finished shard leaves a marker, an empty file named
``{shard:05d}-{records}-{bytes}``, in a folder of the job's work area; the
launcher lists that folder while it waits for the pipeline (every second
locally, 10 s on gs://) and logs a line each time another tenth of the shards
is done (the last tenth at the latest when the pipeline has finished)::

    train128116.1: progress  30%: 31/102 shards, 38,930/128,116 records, 4.2/14.1 GB

and one summary line at the end (``... done: 102/102 shards, ... in 812.4 s``).

Why markers and not Beam counters: a DirectRunner pipeline reports its counters
only when it ends, and each of its worker processes counts on its own. A marker
is visible to the launcher whichever process or Dataflow worker wrote it, on
local disk and on gs:// alike. A shard retried by the runner writes the same
marker name again, so nothing is counted twice. Progress reporting never fails
a job: errors are logged as warnings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time

from beam_jobs import storage

log = logging.getLogger("beam_jobs.progress")

PROGRESS_DIR = "_progress"
MARKER_RE = re.compile(r"^(?P<shard>\d{5,})-(?P<records>\d+)-(?P<bytes>\d+)$")
HEARTBEAT_SECONDS = 300.0  # also log at least this often while shards keep finishing


def progress_dir(base_uri: str, job: str, name: str = "") -> str:
    """The marker folder of one job: ``{base_uri}/_progress/{job}[-{name}]``."""
    return storage.join(base_uri, PROGRESS_DIR, f"{job}-{name}" if name else job)


def mark_done(folder: str | None, shard: int, records: int, nbytes: int) -> None:
    """Record that ``shard`` is finished (called by the DoFn, on any worker)."""
    if not folder:
        return
    try:
        storage.write_bytes(
            storage.join(folder, f"{int(shard):05d}-{int(records)}-{int(nbytes)}"),
            b"",
            durable=False,
        )
    except Exception as err:  # noqa: BLE001 (progress must never fail the job)
        log.warning("could not write a progress marker in %s: %s", folder, err)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"  # pragma: no cover


class Progress:
    """Context manager around ``pipeline.run()`` / ``wait_until_finish()``.

    :param label: what the lines start with (the split, or ``validate``).
    :param folder: the marker folder (cleared on entry and on success).
    :param total_shards: shards the job processes (the unit of the 10% steps).
    :param total_records: records in all, when known before the job runs.
    :param total_bytes: bytes in all, when known.
    :param interval: seconds between listings (default 1 locally, 10 on gs://).
    """

    def __init__(
        self,
        label: str,
        folder: str,
        total_shards: int,
        total_records: int | None = None,
        total_bytes: int | None = None,
        interval: float | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.label = label
        self.folder = folder
        self.total_shards = max(0, int(total_shards))
        self.total_records = total_records
        self.total_bytes = total_bytes
        self.interval = (
            interval if interval is not None else (10.0 if storage.is_gcs(folder) else 1.0)
        )
        self.log = logger or log
        self.shards = self.records = self.bytes = 0
        self._step = -1  # last tenth logged
        self._last_line = 0.0
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ polling

    def poll(self) -> tuple[int, int, int]:
        """Shards, records and bytes done so far, from the markers."""
        done: dict[int, tuple[int, int]] = {}
        for f in storage.list_files(storage.join(self.folder, "*")):
            m = MARKER_RE.match(storage.basename(f.path))
            if m:
                done[int(m.group("shard"))] = (int(m.group("records")), int(m.group("bytes")))
        self.shards = len(done)
        self.records = sum(r for r, _ in done.values())
        self.bytes = sum(b for _, b in done.values())
        return self.shards, self.records, self.bytes

    def _counts(self) -> str:
        recs = (
            f"{self.records:,}/{self.total_records:,} records"
            if self.total_records is not None
            else f"{self.records:,} records"
        )
        size = (
            f"{_size(self.bytes)}/{_size(self.total_bytes)}"
            if self.total_bytes
            else _size(self.bytes)
        )
        return f"{self.shards:,}/{self.total_shards:,} shards, {recs}, {size}"

    def line(self) -> str:
        pct = 100 * self.shards // self.total_shards if self.total_shards else 100
        return f"{self.label}: progress {pct:3d}%: {self._counts()}"

    def summary(self) -> str:
        seconds = time.monotonic() - self._t0
        rate = f", {self.records / seconds:,.0f} records/s" if seconds > 0 and self.records else ""
        return f"{self.label}: done: {self._counts()} in {seconds:,.1f} s{rate}"

    def _maybe_log(self) -> None:
        try:
            self.poll()
        except Exception as err:  # noqa: BLE001
            self.log.warning(
                "%s: could not list progress markers in %s: %s", self.label, self.folder, err
            )
            return
        self._log_step()

    def _log_step(self) -> None:
        """Log a progress line if another tenth of the shards is done since the
        last one (or the heartbeat is due)."""
        step = 10 * self.shards // self.total_shards if self.total_shards else 10
        now = time.monotonic()
        if step > self._step or (
            self.shards and now - self._last_line >= HEARTBEAT_SECONDS and step < 10
        ):
            self._step = max(step, self._step)
            self._last_line = now
            self.log.info("%s", self.line())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._maybe_log()

    # ------------------------------------------------------------------ context

    def __enter__(self) -> Progress:
        self._t0 = self._last_line = time.monotonic()
        try:
            storage.delete_tree(self.folder)  # markers of an earlier, killed attempt
        except Exception as err:  # noqa: BLE001
            self.log.warning("%s: could not clear %s: %s", self.label, self.folder, err)
        self.log.info(
            "%s: starting: %d shards%s",
            self.label,
            self.total_shards,
            f", {self.total_records:,} records" if self.total_records is not None else "",
        )
        self._step = 0
        self._thread = threading.Thread(target=self._run, name="beam-jobs-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if exc_type is None:
            self._maybe_log()  # the last tenth (100%), if the thread had not seen it yet
            self.log.info("%s", self.summary())
            try:
                storage.delete_tree(self.folder)
                if not storage.is_gcs(self.folder):  # and _progress/, when empty
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.dirname(self.folder))
            except Exception as err:  # noqa: BLE001
                self.log.warning("%s: could not remove %s: %s", self.label, self.folder, err)
        else:
            self._maybe_log()
            self.log.info("%s: stopped by an error after %s", self.label, self._counts())
