"""One writer per output folder: a leased, fenced lock in the output folder.

``max_active_runs=1`` keeps two runs of the DAG in one Airflow from
overlapping (the second waits in the queue). The lock covers what that cannot:
a second Airflow, ``airflow dags test`` processes, a run of another DAG, or a
run with another ``work_uri``, pointed at the same output folder.

**Whose it is.** The lock is ``{output_uri}/_ssl_splits/lock.json``: it belongs
to the output folder, wherever the run's work folder is. Each attempt to take
it draws a random *token*; the token, not the run id, is the owner (two
deployments can both have a run ``scheduled__2026-01-01T00:00:00+00:00``). The
DAG's ``acquire_lock`` task returns the :class:`Lease` (uri, token, lease) as
its XCom, and every later task of the run holds the lock with it.

**Conditional writes only** (``beam_jobs.storage``: ``write_if`` /
``delete_if`` against the version read; GCS generation preconditions; locally
an exclusive hard link and an atomic rename under the folder's ``flock``).
Creating it succeeds only if there is none; renewing, taking over and
releasing succeed only if it is still the version that was read. Two takers
of one lapsed lock: one wins. A release never deletes a lock another run took.

**A lease judged by the storage's clock.** The lock says for how long it holds
(``lease_seconds``, from ``SSL_SPLITS_LOCK_LEASE_SECONDS``, default 900). A
taker judges expiry by the storage's own time: the lock's last write (its
``modified`` stamp) plus the lease, against the storage's time now
(``storage.clock``: a write of ``_ssl_splits/clock``), never by its own clock.
The holder, conversely, counts its lease from *before* it sent its last renewal,
on its monotonic clock. Neither needs the machines' clocks to agree.

**Fenced publishing.** A run's tasks renew the lease when they start and every
fifth of the lease while they run (:func:`holding`); a renewal that fails is
logged as an error at once, and the task fails when its body ends
(:class:`LockLost`). Every publishing step (each shard's new name, each
deletion, the manifest commit) first calls :meth:`Fence.check`: the lock must
still be this token's, and at least a third of the lease must be left, which
the lease's minimum (three storage retry deadlines) makes longer than any one
step can take. So a writer whose lease lapsed, or whose lock was taken over,
publishes nothing more and says so; a taker, which waits for the lease to
lapse on the storage's clock, cannot act while such a step is in flight.
Each step is also conditional on its destination (a shard's name is placed
only over the version this run saw, the manifest committed only over the
generation it read), so two writers can never leave mixed shards.

**A run that ran in one process.** ``airflow dags test`` (``dag.test()``) runs
a whole DAG run in its own process; the lock then records that process (host,
boot, pid namespace, pid and start time). When that process is gone (a
SIGKILLed ``dags test``), a run on the same machine takes the folder at once
instead of waiting for the lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterator

from beam_jobs import storage
from beam_jobs.core import Lease, LockHolder
from beam_jobs.layout import clock_uri, lock_uri

log = logging.getLogger(__name__)

LEASE_ENV = "SSL_SPLITS_LOCK_LEASE_SECONDS"
DEFAULT_LEASE = dt.timedelta(minutes=15)
RENEWALS_PER_LEASE = 5  # a renewal every fifth of the lease while a task runs
LEASE_PER_DEADLINE = 3  # the lease is at least three storage retry deadlines
MAX_LOCK_BYTES = 64 * 1024  # a lock file is a small JSON document
CONFIRM_EVERY = 2.0  # seconds: Fence.check reads the lock again at most this often
_ATTEMPTS = 8  # re-reads when the lock keeps changing under a conditional write


try:  # fail the task at once: retrying cannot help while the other run goes on
    from airflow.sdk.exceptions import AirflowFailException as _Base
except ImportError:  # pragma: no cover - used without Airflow
    _Base = RuntimeError  # type: ignore[misc,assignment]


class LockHeld(_Base):
    """Another run is writing this output folder."""


class LockLost(_Base):
    """This run no longer holds the output folder's lock: taken over, removed,
    lapsed, or not renewed."""


def lease_from_env() -> dt.timedelta:
    """The lease (``SSL_SPLITS_LOCK_LEASE_SECONDS``, default 900 s), at least
    three storage retry deadlines (``SSL_SPLITS_GCS_RETRY_DEADLINE``)."""
    raw = os.environ.get(LEASE_ENV)
    lease = DEFAULT_LEASE
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"{LEASE_ENV}={raw!r}: give the lease in seconds, e.g. 900") from None
        if seconds <= 0:
            raise ValueError(f"{LEASE_ENV}={raw!r}: the lease must be positive")
        lease = dt.timedelta(seconds=seconds)
    check_lease(lease)
    return lease


def check_lease(lease: dt.timedelta) -> None:
    """ValueError unless the lease outlasts any one publishing step."""
    deadline = storage.retry_deadline()
    if lease.total_seconds() < LEASE_PER_DEADLINE * deadline:
        raise ValueError(
            f"a lock lease of {lease.total_seconds():.0f} s is too short for a storage retry "
            f"deadline of {deadline:.0f} s (SSL_SPLITS_GCS_RETRY_DEADLINE): a publishing step "
            f"must be able to finish within the lease; set {LEASE_ENV} to at least "
            f"{LEASE_PER_DEADLINE * deadline:.0f}"
        )


# --------------------------------------------------------------------------- who holds it


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.readline().strip() or None
    except OSError:
        return None


def _machine() -> dict[str, Any]:
    """What tells this machine, and this process namespace, from others."""
    try:
        pid_ns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    boot = _read_first_line("/proc/sys/kernel/random/boot_id")
    if boot is None:
        try:
            import psutil

            boot = f"boot-time:{int(psutil.boot_time())}"
        except Exception:  # noqa: BLE001 - no way to tell boots apart: no fast path
            boot = None
    return {"host": socket.gethostname(), "boot_id": boot, "pid_ns": pid_ns}


def _started(pid: int) -> float | None:
    """A process's start time (seconds since the epoch), or None if it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.NoSuchProcess:
        return None


def _body(
    token: str, run_id: str, dag_id: str, output_uri: str, lease: dt.timedelta, in_process: bool
) -> LockHolder:
    now = _now_iso()
    started = None
    if in_process:
        try:
            started = _started(os.getpid())
        except ImportError:  # pragma: no cover - psutil comes with Airflow
            in_process = False
    return LockHolder(
        token=token,
        run_id=run_id,
        dag_id=dag_id,
        output_uri=output_uri,
        **_machine(),
        pid=os.getpid(),
        in_process=in_process,
        acquired_at=now,
        renewed_at=now,
        lease_seconds=lease.total_seconds(),
        pid_started=started,
    )


def _process_gone(holder: dict[str, Any]) -> bool:
    """True if the lock was taken by a process that ran the whole DAG run
    (``airflow dags test``) on this machine and that process is gone (its pid
    free, or reused by a process started later)."""
    if holder.get("in_process") is not True or not isinstance(holder.get("pid"), int):
        return False
    here = _machine()
    if None in (here["boot_id"], here["pid_ns"]) or any(
        holder.get(k) != here[k] for k in ("host", "boot_id", "pid_ns")
    ):
        return False
    try:
        started = _started(holder["pid"])
    except ImportError:  # pragma: no cover - psutil comes with Airflow
        return False
    if started is None:
        return True
    recorded = holder.get("pid_started")
    return isinstance(recorded, (int, float)) and abs(started - recorded) > 1.0


def _lease_of(holder: dict[str, Any]) -> float:
    value = holder.get("lease_seconds")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_LEASE.total_seconds()


def _expires(holder: dict[str, Any], info: storage.FileInfo) -> float:
    """When the lease lapses, on the storage's clock: its last write plus the lease."""
    return (info.modified or 0.0) + _lease_of(holder)


def _free_because(output_uri: str, holder: dict[str, Any], info: storage.FileInfo) -> str | None:
    """Why another run's lock may be taken over (None: it holds)."""
    if _process_gone(holder):
        return (
            f"its process {holder.get('pid')} on this host, which ran the whole DAG run "
            "(airflow dags test), is gone"
        )
    expires = _expires(holder, info)
    now = storage.clock(clock_uri(output_uri))
    if expires <= now:
        return f"its lease lapsed at {_iso(expires)} (the storage's clock: {_iso(now)})"
    return None


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"run {holder.get('run_id')} of {holder.get('dag_id')} (host {holder.get('host')}, "
        f"since {holder.get('acquired_at')})"
    )


def _held(uri: str, holder: dict[str, Any], info: storage.FileInfo | None) -> LockHeld:
    if not holder or info is None:
        return LockHeld(
            f"{uri} kept changing while this run tried to take it (other runs "
            "starting at the same time?); this run stops here. Trigger it again."
        )
    return LockHeld(
        f"{holder.get('output_uri', 'this output folder')} is being written by "
        f"{_describe(holder)}; its lease runs until {_iso(_expires(holder, info))} (the "
        f"storage's clock) and is renewed while that run is alive. This run stops here to "
        f"avoid mixing files. Wait for that run to finish; a run that died without releasing "
        f"the lock frees the folder when its lease lapses (or delete {uri} if you are sure "
        "it is dead)."
    )


def _lost(lease: Lease, holder: dict[str, Any] | None, why: str = "") -> LockLost:
    if why:
        what = why
    elif holder is None:
        what = f"{lease.uri} was removed (deleted by hand, or released by a run that took it over)"
    else:
        what = (
            f"{_describe(holder)} holds it now: it took it over when this run's lease was "
            "not renewed in time (this run's tasks were not running, or could not reach "
            "storage)"
        )
    return LockLost(
        f"run {lease.run_id} no longer holds {lease.uri}: {what}. This run stops here so "
        "that two runs never write one output folder at once; nothing more of it is "
        "published. Trigger it again when the folder is free."
    )


def _read(uri: str) -> tuple[dict[str, Any], storage.FileInfo] | None:
    """(holder, the version read), or None when there is no lock."""
    try:
        data, info = storage.read_versioned(uri, MAX_LOCK_BYTES)
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        holder = {}
    return (holder if isinstance(holder, dict) else {}), info


def _write(uri: str, holder: dict[str, Any], if_version: str) -> storage.FileInfo:
    return storage.write_if(uri, json.dumps(holder).encode(), if_version=if_version)


# --------------------------------------------------------------------------- API


def acquire(
    output_uri: str,
    *,
    run_id: str,
    dag_id: str,
    lease: dt.timedelta | None = None,
    in_process: bool = False,
) -> Lease:
    """Take the output folder's lock with a new token. ``in_process``: this
    process runs the whole DAG run (``dag.test()``), so the lock is free as
    soon as it is gone. Raises LockHeld naming the run that holds it."""
    output_uri = storage.normalize(output_uri)
    uri = lock_uri(output_uri)
    lease = lease or lease_from_env()
    check_lease(lease)
    token = uuid.uuid4().hex
    body = _body(token, run_id, dag_id, output_uri, lease, in_process).to_dict()
    mine = Lease(uri, output_uri, token, run_id, lease.total_seconds())
    for _ in range(_ATTEMPTS):
        try:
            _write(uri, body, storage.MISSING)
            return mine
        except storage.PreconditionFailed:
            pass
        seen = _read(uri)
        if seen is None:
            continue  # released meanwhile: create it again
        holder, info = seen
        if holder.get("token") == token:
            return mine  # our create landed, its answer was lost and retried
        why = _free_because(output_uri, holder, info)
        if why is None:
            raise _held(uri, holder, info)
        try:
            _write(uri, body, info.version or storage.MISSING)
        except storage.PreconditionFailed:
            continue  # changed since it was read (another taker, or its holder renewed)
        log.warning("took over %s from %s: %s", uri, _describe(holder), why)
        return mine
    raise _held(uri, {}, None)


def renew(lease: Lease) -> storage.FileInfo:
    """Extend the lease if this token still holds the lock; the new version.

    Raises LockLost naming the run that took it over (or saying it was removed)."""
    for _ in range(_ATTEMPTS):
        seen = _read(lease.uri)
        if seen is None:
            raise _lost(lease, None)
        holder, info = seen
        if holder.get("token") != lease.token:
            raise _lost(lease, holder)
        try:
            return _write(lease.uri, {**holder, "renewed_at": _now_iso()}, info.version or "")
        except storage.PreconditionFailed:
            seen = _read(lease.uri)
            if seen is not None and seen[0].get("token") == lease.token:
                # Another task of this run renewed it after this one read it: the
                # lease was extended after this renewal began, which is all it asks.
                return seen[1]
            # Changed to another holder, or removed: said by the next read.
    raise _lost(lease, None, f"{lease.uri} kept changing under this run's renewals")


def release(lease: Lease) -> bool:
    """Release the lock if this token holds it; never touch another run's lock
    (one taken over since it was read stays)."""
    for _ in range(_ATTEMPTS):
        seen = _read(lease.uri)
        if seen is None:
            return False
        holder, info = seen
        if holder.get("token") != lease.token:
            return False
        try:
            return storage.delete_if(lease.uri, if_version=info.version or "")
        except storage.PreconditionFailed:
            continue  # renewed or taken over since it was read: read again
    return False


class Fence:
    """A held lease in one process: renewals, and the check every publishing
    step makes first (:meth:`check`). Thread-safe."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._mutex = threading.Lock()
        self._renewed = float("-inf")  # monotonic time before the last renewal was sent
        self._confirmed = float("-inf")
        self.lost: LockLost | None = None

    @property
    def margin(self) -> float:
        """The least lease a step may start with: a third of it (at least one
        storage retry deadline, :func:`check_lease`)."""
        return self.lease.lease_seconds / LEASE_PER_DEADLINE

    def remaining(self) -> float:
        """Seconds of lease left, counted from before the last renewal was sent."""
        return self.lease.lease_seconds - (time.monotonic() - self._renewed)

    def renew(self) -> None:
        """Renew now (LockLost if this token no longer holds the lock)."""
        with self._mutex:
            self._renew()

    def _renew(self) -> None:
        if self.lost is not None:
            raise self.lost
        started = time.monotonic()
        try:
            renew(self.lease)
        except LockLost as err:
            self.lost = err
            raise
        self._renewed = self._confirmed = started

    def check(self, step: str) -> None:
        """Before a publishing step: LockLost unless this token still holds the
        lock with at least :attr:`margin` of its lease left (renewed here if
        less is left)."""
        with self._mutex:
            if self.lost is not None:
                raise self.lost
            if self.remaining() < self.margin:
                try:
                    self._renew()
                except LockLost:
                    raise
                except Exception as err:  # noqa: BLE001 - storage failed: the lease is not sure
                    self.lost = _lost(
                        self.lease,
                        None,
                        f"its lease could not be renewed before {step} ({type(err).__name__}: "
                        f"{str(err)[:200]}) and too little of it is left to go on",
                    )
                    raise self.lost from err
            elif time.monotonic() - self._confirmed > CONFIRM_EVERY:
                seen = _read(self.lease.uri)
                if seen is None or seen[0].get("token") != self.lease.token:
                    self.lost = _lost(self.lease, seen[0] if seen else None)
                    raise self.lost
                self._confirmed = time.monotonic()


@contextlib.contextmanager
def holding(lease: Lease, *, every: float | None = None) -> Iterator[Fence]:
    """Run the body holding the lock: renewed now (raises LockLost if this
    token lost it), then from a background thread every ``every`` seconds
    (default: a fifth of the lease). A renewal that fails is logged as an
    error at once; if the lock is lost, or the lease runs out without a
    renewal, the body goes on (a Beam job is not interrupted), publishing
    steps refuse (:meth:`Fence.check`), and LockLost is raised when it ends."""
    fence = Fence(lease)
    fence.renew()
    every = every if every is not None else lease.lease_seconds / RENEWALS_PER_LEASE
    carry = storage.carry(lease.uri)
    stop = threading.Event()

    def keep() -> None:
        with carry():
            while not stop.wait(every):
                try:
                    fence.renew()
                except LockLost as err:
                    log.error("%s", err)
                    return
                except Exception as err:  # noqa: BLE001 - storage failed: say so loudly
                    left = fence.remaining()
                    log.error(
                        "could not renew the lock %s (%s: %s); %.0f s of its lease are left",
                        lease.uri,
                        type(err).__name__,
                        str(err)[:300],
                        left,
                    )
                    if left <= 0:
                        fence.lost = _lost(
                            lease, None, "its lease ran out while its renewals failed"
                        )
                        log.error("%s", fence.lost)
                        return

    thread = threading.Thread(target=keep, name=f"lock-lease-{lease.run_id}", daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        yield fence
    finally:
        stop.set()
        thread.join(timeout=every + 60)
    if fence.lost is not None:
        raise fence.lost
    if fence.remaining() <= 0:
        raise _lost(lease, None, "its lease ran out: the last renewals failed")
    log.debug("held %s for %.0f s", lease.uri, time.monotonic() - t0)
