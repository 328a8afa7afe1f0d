"""One writer per output folder: a leased lock object under the work folder.

``max_active_runs=1`` keeps two runs of the DAG in one Airflow from
overlapping (the second waits in the queue). The lock covers what that cannot:
a second Airflow, ``airflow dags test`` processes, or a run of another DAG
pointed at the same output folder. A run takes ``{work_uri}/lock.json`` in
its first task and releases it in a teardown task that runs whatever
happened; a second run fails at once and says who holds the lock, until when,
and how to clear it if that run is dead.

**A lease, renewed while the run is alive.** The lock says until when it
holds (``expires_at``: a lease of ``SSL_SPLITS_LOCK_LEASE_SECONDS``, default
300). Every task of the run renews it when it starts and, from a background
thread, every fifth of the lease while it runs (:func:`holding`), so a build
that runs for hours keeps it; a run killed without its teardown (an
OOM-killed worker) stops renewing and blocks the folder for one lease, not
longer. A lock whose lease lapsed is taken over. A run whose lock was taken
over (or removed) fails its next task, or the running one when it ends, with
:class:`LockLost` naming the run that holds it now.

**A run that ran in one process.** ``airflow dags test`` (``dag.test()``)
runs the whole DAG run inside its own process; the lock then records that
process (host, boot, pid namespace, pid and its start time). When that
process is gone (a SIGKILLed ``dags test``), a run on the same machine takes
the folder at once instead of waiting for the lease.

**Atomic and conditional.** Creation: ``if_generation_match=0`` on GCS;
locally a complete file hard-linked to the lock's name (never an empty lock a
racing reader could take for stale). Takeovers, renewals and releases are
conditional on the lock still being the one that was read: on GCS the
object's generation (``if_generation_match`` on the write or the delete, and
on the download after the metadata read); locally a compare-and-swap under an
flock on ``lock.json.guard``. So two runs cannot both take over one lapsed
lock, and a release never deletes a lock another run took over meanwhile. A
lock that disappears between its metadata read and its download is free.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterator

from beam_jobs import storage
from beam_jobs.layout import lock_uri

log = logging.getLogger(__name__)

GUARD_SUFFIX = ".guard"  # local only: serialises takeovers, renewals, releases (flock)
LEASE_ENV = "SSL_SPLITS_LOCK_LEASE_SECONDS"
DEFAULT_LEASE = dt.timedelta(minutes=5)
RENEWALS_PER_LEASE = 5  # a renewal every fifth of the lease while a task runs
LEGACY_TTL = dt.timedelta(hours=24)  # a lock written before leases (no expires_at)
_ATTEMPTS = 8  # re-reads when the lock keeps changing under a conditional write


try:  # fail the task at once: retrying cannot help while the other run goes on
    from airflow.sdk.exceptions import AirflowFailException as _Base
except ImportError:  # pragma: no cover - used without Airflow
    _Base = RuntimeError  # type: ignore[misc,assignment]


class LockHeld(_Base):
    """Another run is writing this output folder."""


class LockLost(_Base):
    """This run no longer holds the output folder's lock: taken over or removed."""


def lease_from_env() -> dt.timedelta:
    """The lease (``SSL_SPLITS_LOCK_LEASE_SECONDS``, default 300 s)."""
    raw = os.environ.get("SSL_SPLITS_LOCK_LEASE_SECONDS")
    if not raw:
        return DEFAULT_LEASE
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{LEASE_ENV}={raw!r}: give the lease in seconds, e.g. 300") from None
    if seconds <= 0:
        raise ValueError(f"{LEASE_ENV}={raw!r}: the lease must be positive")
    return dt.timedelta(seconds=seconds)


# --------------------------------------------------------------------------- who holds it


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
        return proc.create_time()
    except psutil.NoSuchProcess:
        return None


def _body(
    run_id: str, dag_id: str, output_uri: str, lease: dt.timedelta, in_process: bool
) -> dict[str, Any]:
    now = _now()
    body: dict[str, Any] = {
        "run_id": run_id,
        "dag_id": dag_id,
        "output_uri": output_uri,
        **_machine(),
        "pid": os.getpid(),
        "in_process": in_process,
        "acquired_at": now.isoformat(),
        "renewed_at": now.isoformat(),
        "expires_at": (now + lease).isoformat(),
        "lease_seconds": lease.total_seconds(),
    }
    if in_process:
        try:
            body["pid_started"] = _started(os.getpid())
        except ImportError:  # pragma: no cover - psutil comes with Airflow
            body["in_process"] = False
    return body


def _renewed(holder: dict[str, Any], lease: dt.timedelta) -> dict[str, Any]:
    now = _now()
    return {
        **holder,
        "renewed_at": now.isoformat(),
        "expires_at": (now + lease).isoformat(),
        "lease_seconds": lease.total_seconds(),
    }


def _expires(holder: dict[str, Any]) -> dt.datetime:
    try:
        if "expires_at" in holder:
            return dt.datetime.fromisoformat(holder["expires_at"])
        return dt.datetime.fromisoformat(holder["acquired_at"]) + LEGACY_TTL
    except (KeyError, TypeError, ValueError):
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)  # unreadable: lapsed


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


def _free_because(holder: dict[str, Any]) -> str | None:
    """Why another run's lock may be taken over (None: it holds)."""
    if _process_gone(holder):
        return (
            f"its process {holder.get('pid')} on this host, which ran the whole DAG run "
            "(airflow dags test), is gone"
        )
    if _expires(holder) <= _now():
        return f"its lease lapsed at {holder.get('expires_at') or holder.get('acquired_at')}"
    return None


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"run {holder.get('run_id')} of {holder.get('dag_id')} (host {holder.get('host')}, "
        f"since {holder.get('acquired_at')})"
    )


def _held(uri: str, holder: dict[str, Any]) -> LockHeld:
    if not holder:
        return LockHeld(
            f"{uri} kept changing while this run tried to take it (other runs "
            "starting at the same time?); this run stops here. Trigger it again."
        )
    return LockHeld(
        f"{holder.get('output_uri', 'this output folder')} is being written by "
        f"{_describe(holder)}; its lease runs until {holder.get('expires_at')} and is renewed "
        f"while that run is alive. This run stops here to avoid mixing files. Wait for that run "
        f"to finish; a run that died without releasing the lock frees the folder when its lease "
        f"lapses (or delete {uri} if you are sure it is dead)."
    )


def _lost(uri: str, run_id: str, holder: dict[str, Any] | None) -> LockLost:
    if holder is None:
        what = f"{uri} was removed (deleted by hand, or released by a run that had taken it over)"
    else:
        what = (
            f"{_describe(holder)} holds it now: it took it over when this run's lease was "
            "not renewed in time (this run's tasks were not running, or could not reach "
            "storage)"
        )
    return LockLost(
        f"run {run_id} no longer holds {uri}: {what}. This run stops here so that two runs "
        "never write one output folder at once; nothing of it is published. Trigger it again "
        "when the folder is free."
    )


def _parse(text: str | bytes) -> dict[str, Any]:
    try:
        holder = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _ours(holder: dict[str, Any], run_id: str) -> bool:
    return holder.get("run_id") == run_id


# --------------------------------------------------------------------------- GCS


def _gcs_blob(uri: str) -> Any:  # a google.cloud.storage.Blob
    bucket, name = storage.split_gcs(uri)
    return storage.gcs_client().bucket(bucket).blob(name)


def _gcs_read(blob: Any) -> tuple[int, dict[str, Any]] | None:
    """(generation, holder) of the lock, or None when there is none (also when
    it disappears between the metadata read and the download)."""
    from google.api_core import exceptions as gexc

    for _ in range(_ATTEMPTS):
        try:
            blob.reload(retry=storage._retry())
            generation = int(blob.generation)
            data = blob.download_as_bytes(if_generation_match=generation, retry=storage._retry())
        except gexc.NotFound:
            return None  # released meanwhile: free
        except gexc.PreconditionFailed:
            continue  # replaced between the metadata read and the download: read again
        return generation, _parse(data)
    raise _held(blob.name, {})


def _gcs_write(blob: Any, holder: dict[str, Any], generation: int) -> bool:
    """Write ``holder`` if the lock is still at ``generation`` (0: absent)."""
    from google.api_core import exceptions as gexc

    try:
        blob.upload_from_string(
            json.dumps(holder),
            content_type="application/json",
            if_generation_match=generation,
            retry=storage._retry(),
        )
        return True
    except gexc.PreconditionFailed:
        return False


def _acquire_gcs(uri: str, body: dict[str, Any], lease: dt.timedelta) -> None:
    blob = _gcs_blob(uri)
    run_id = body["run_id"]
    for _ in range(_ATTEMPTS):
        if _gcs_write(blob, body, 0):
            return
        seen = _gcs_read(blob)
        if seen is None:
            continue  # released meanwhile: create it again
        generation, holder = seen
        if _ours(holder, run_id):  # a retry of this run's task: renew
            if _gcs_write(blob, _renewed(holder, lease), generation):
                return
            continue
        why = _free_because(holder)
        if why is None:
            raise _held(uri, holder)
        if _gcs_write(blob, body, generation):
            log.warning("took over %s from %s: %s", uri, _describe(holder), why)
            return
        # Changed since it was read (another taker, or its holder renewed): read again.
    raise _held(uri, {})


def _renew_gcs(uri: str, run_id: str, lease: dt.timedelta) -> dict[str, Any]:
    blob = _gcs_blob(uri)
    for _ in range(_ATTEMPTS):
        seen = _gcs_read(blob)
        if seen is None:
            raise _lost(uri, run_id, None)
        generation, holder = seen
        if not _ours(holder, run_id):
            raise _lost(uri, run_id, holder)
        new = _renewed(holder, lease)
        if _gcs_write(blob, new, generation):
            return new
        # Another task of this run renewed it at the same moment: read again.
    raise _held(uri, {})


def _release_gcs(uri: str, run_id: str) -> bool:
    from google.api_core import exceptions as gexc

    blob = _gcs_blob(uri)
    for _ in range(_ATTEMPTS):
        seen = _gcs_read(blob)
        if seen is None:
            return False
        generation, holder = seen
        if not _ours(holder, run_id):
            return False
        try:
            blob.delete(if_generation_match=generation, retry=storage._retry())
            return True
        except gexc.PreconditionFailed:
            continue  # changed since it was read: taken over, or renewed; read again
        except gexc.NotFound:
            return False
    return False


# --------------------------------------------------------------------------- local


def _read_local(uri: str) -> str | None:
    """A local lock's text, or None if there is none."""
    try:
        with open(uri, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _private_copy(uri: str, holder: dict[str, Any]) -> str:
    tmp = f"{uri}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(holder))
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _create_local(uri: str, holder: dict[str, Any]) -> bool:
    """Create ``uri`` holding ``holder``, atomically and complete (never an
    empty or half-written lock that a racing reader could take for stale):
    write a private file, then hard-link it to the lock's name, which fails
    if the name exists. True if this call created it."""
    tmp = _private_copy(uri, holder)
    try:
        os.link(tmp, uri)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def _replace_local(uri: str, holder: dict[str, Any]) -> None:
    """Replace an existing lock (under the guard): ``rename(2)``, so the name
    never goes missing and a creator's hard link keeps failing meanwhile."""
    tmp = _private_copy(uri, holder)
    try:
        os.replace(tmp, uri)
    except BaseException:
        os.remove(tmp)
        raise


@contextlib.contextmanager
def _guard(uri: str) -> Iterator[None]:
    """Every change of an existing local lock happens under this flock."""
    with open(f"{uri}{GUARD_SUFFIX}", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def _acquire_local(uri: str, body: dict[str, Any], lease: dt.timedelta) -> None:
    os.makedirs(os.path.dirname(uri), exist_ok=True)
    run_id = body["run_id"]
    for _ in range(_ATTEMPTS):
        if _create_local(uri, body):
            return
        seen = _read_local(uri)
        if seen is None:
            continue  # released meanwhile: try again
        holder = _parse(seen)
        why = None
        if not _ours(holder, run_id):
            why = _free_because(holder)
            if why is None:
                raise _held(uri, holder)
        # Ours (a retry: renew) or free (take over): compare and swap under the guard.
        with _guard(uri):
            if _read_local(uri) != seen:
                continue  # changed since it was read: decide again
            _replace_local(uri, _renewed(holder, lease) if why is None else body)
        if why is not None:
            log.warning("took over %s from %s: %s", uri, _describe(holder), why)
        return
    raise _held(uri, {})


def _renew_local(uri: str, run_id: str, lease: dt.timedelta) -> dict[str, Any]:
    with _guard(uri):
        seen = _read_local(uri)
        if seen is None:
            raise _lost(uri, run_id, None)
        holder = _parse(seen)
        if not _ours(holder, run_id):
            raise _lost(uri, run_id, holder)
        new = _renewed(holder, lease)
        _replace_local(uri, new)
        return new


def _release_local(uri: str, run_id: str) -> bool:
    if _read_local(uri) is None:
        return False
    with _guard(uri):
        seen = _read_local(uri)
        if seen is None or not _ours(_parse(seen), run_id):
            return False
        os.remove(uri)
        return True


# --------------------------------------------------------------------------- API


def acquire(
    work_uri: str,
    *,
    run_id: str,
    dag_id: str,
    output_uri: str,
    lease: dt.timedelta | None = None,
    in_process: bool = False,
) -> str:
    """Take the lock for ``run_id`` (idempotent for the same run: a task retry
    renews it). ``in_process``: this process runs the whole DAG run
    (``dag.test()``), so the lock is free as soon as it is gone.

    Raises LockHeld naming the run that holds it."""
    uri = lock_uri(work_uri)
    lease = lease or lease_from_env()
    body = _body(run_id, dag_id, output_uri, lease, in_process)
    if storage.is_gcs(uri):
        _acquire_gcs(uri, body, lease)
    else:
        _acquire_local(uri, body, lease)
    return uri


def renew(work_uri: str, *, run_id: str, lease: dt.timedelta | None = None) -> dict[str, Any]:
    """Extend ``run_id``'s lease, if it still holds the lock; return the lock.

    Raises LockLost naming the run that took it over (or saying it was removed)."""
    uri = lock_uri(work_uri)
    lease = lease or lease_from_env()
    if storage.is_gcs(uri):
        return _renew_gcs(uri, run_id, lease)
    return _renew_local(uri, run_id, lease)


def release(work_uri: str, *, run_id: str) -> bool:
    """Release the lock if ``run_id`` holds it; never touch another run's lock
    (one taken over since it was read stays)."""
    uri = lock_uri(work_uri)
    if storage.is_gcs(uri):
        return _release_gcs(uri, run_id)
    return _release_local(uri, run_id)


@contextlib.contextmanager
def holding(
    work_uri: str, *, run_id: str, lease: dt.timedelta | None = None, every: float | None = None
) -> Iterator[None]:
    """Run the body holding the lock: renew it now (raises LockLost if this run
    lost it), then from a background thread every ``every`` seconds (default:
    a fifth of the lease). If the lock is lost meanwhile, the body goes on
    (a Beam job is not interrupted) and LockLost is raised when it ends."""
    lease = lease or lease_from_env()
    every = every if every is not None else lease.total_seconds() / RENEWALS_PER_LEASE
    renew(work_uri, run_id=run_id, lease=lease)
    client = storage.gcs_client() if storage.is_gcs(work_uri) else None
    stop = threading.Event()
    lost: list[LockLost] = []

    def keep() -> None:
        with storage.use_client(client) if client is not None else contextlib.nullcontext():
            while not stop.wait(every):
                try:
                    renew(work_uri, run_id=run_id, lease=lease)
                except LockLost as err:
                    log.error("%s", err)
                    lost.append(err)
                    return
                except Exception as err:  # noqa: BLE001 - a transient failure: try again
                    log.warning(
                        "could not renew the lock %s (trying again in %.0f s): %s",
                        lock_uri(work_uri),
                        every,
                        err,
                    )

    thread = threading.Thread(target=keep, name=f"lock-lease-{run_id}", daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 60)
    if lost:
        raise lost[0]
    log.debug("held %s for %.0f s", lock_uri(work_uri), time.monotonic() - t0)


def runs_whole_dag_in_process(dag_run: Any) -> bool:
    """True if this task runs inside the process that runs its whole DAG run:
    ``dag.test()`` / ``airflow dags test`` without an executor.

    Airflow 3.3 runs such a task through ``InProcessTestSupervisor``, whose
    comms object (``InProcessSupervisorComms``) it installs as the task
    runner's ``SUPERVISOR_COMMS``; a worker's task talks to a separate
    supervisor process instead (and ``dags test --use-executor`` runs tasks
    through an executor). ``airflow tasks test`` runs one task in-process too
    but exits after it: it sets ``AIRFLOW_TEST_MODE``, and its DAG run was not
    created by ``dag.test()`` (triggering user ``dag_test``)."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if (
        type(comms).__name__ != "InProcessSupervisorComms"
        or type(comms).__module__ != "airflow.sdk.execution_time.supervisor"
    ):
        return False
    if os.environ.get("AIRFLOW_TEST_MODE") == "True":
        return False
    return getattr(dag_run, "triggering_user_name", None) == "dag_test"
