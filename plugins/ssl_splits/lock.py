"""One writer per output folder: a lock object under the work folder.

``max_active_runs=1`` keeps two runs of the DAG in one Airflow from
overlapping (the second waits in the queue). The lock covers what that cannot:
a second Airflow, ``airflow dags test`` processes, or a run of another DAG
pointed at the same output folder. A run takes ``{work_uri}/lock.json`` in
its first task and releases it in a teardown task that runs whatever
happened; a second run fails at once and says who holds the lock, since when,
and how to clear it if that run is dead.

Creation is atomic: ``if_generation_match=0`` on GCS; locally a complete
file hard-linked to the lock's name (never an empty lock a racing reader
could take for stale). A lock older than ``ttl`` (a crashed run that never
released it) is taken over, conditionally on the generation that was read
(locally: under an flock, after reading it again), so two runs cannot both
take over the same stale lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import uuid
from typing import Any

from beam_jobs import storage
from beam_jobs.layout import lock_uri

GUARD_SUFFIX = ".guard"  # local only: serialises takeovers of a stale lock (flock)
DEFAULT_TTL = dt.timedelta(hours=24)


try:  # fail the task at once: retrying cannot help while the other run goes on
    from airflow.sdk.exceptions import AirflowFailException as _Base
except ImportError:  # pragma: no cover - used without Airflow
    _Base = RuntimeError  # type: ignore[misc,assignment]


class LockHeld(_Base):
    """Another run is writing this output folder."""


def _body(run_id: str, dag_id: str, output_uri: str) -> str:
    return json.dumps({"run_id": run_id, "dag_id": dag_id, "output_uri": output_uri,
                       "host": socket.gethostname(), "pid": os.getpid(),
                       "acquired_at": dt.datetime.now(dt.timezone.utc).isoformat()})


def _age(holder: dict[str, Any]) -> dt.timedelta:
    try:
        return dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(holder["acquired_at"])
    except (KeyError, ValueError):
        return DEFAULT_TTL * 2  # unreadable: treat as stale


def _held(uri: str, holder: dict[str, Any]) -> LockHeld:
    return LockHeld(
        f"{holder.get('output_uri', 'this output folder')} is being written by run "
        f"{holder.get('run_id')} of {holder.get('dag_id')} (since {holder.get('acquired_at')}, "
        f"host {holder.get('host')}); this run stops here to avoid mixing files. Wait for that "
        f"run to finish, or delete {uri} if it is dead."
    )


def acquire(work_uri: str, *, run_id: str, dag_id: str, output_uri: str,
            ttl: dt.timedelta = DEFAULT_TTL) -> str:
    """Take the lock for ``run_id`` (idempotent for the same run: task retries)."""
    uri = lock_uri(work_uri)
    body = _body(run_id, dag_id, output_uri)
    if storage.is_gcs(uri):
        from google.api_core import exceptions as gexc

        bucket, name = storage.split_gcs(uri)
        blob = storage.gcs_client().bucket(bucket).blob(name)
        try:
            blob.upload_from_string(body, content_type="application/json", if_generation_match=0,
                                    retry=storage._retry())
            return uri
        except gexc.PreconditionFailed:
            pass
        blob.reload(retry=storage._retry())
        generation = blob.generation
        holder = json.loads(blob.download_as_bytes(retry=storage._retry()))
        if holder.get("run_id") == run_id:
            return uri
        if _age(holder) < ttl:
            raise _held(uri, holder)
        try:
            blob.upload_from_string(body, content_type="application/json",
                                    if_generation_match=generation, retry=storage._retry())
        except gexc.PreconditionFailed:
            raise _held(uri, json.loads(blob.download_as_bytes())) from None
        return uri
    os.makedirs(os.path.dirname(uri), exist_ok=True)
    for _ in range(3):
        if _create_local(uri, body):
            return uri
        seen = _read_local(uri)
        if seen is None:
            continue  # released meanwhile: try again
        if _ours_or_held(uri, seen, run_id, ttl):
            return uri
        # Stale: remove it under a guard (flock) that every taker of a stale
        # lock holds, after checking it is still the lock that was read; a
        # fresh lock is never removed. Creation itself needs no guard.
        with open(f"{uri}{GUARD_SUFFIX}", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            now = _read_local(uri)
            if now is None:
                continue
            if now != seen and _ours_or_held(uri, now, run_id, ttl):
                return uri
            os.remove(uri)
    raise _held(uri, {})


def _read_local(uri: str) -> str | None:
    """A local lock's text, or None if there is none."""
    try:
        with open(uri, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _ours_or_held(uri: str, text: str, run_id: str, ttl: dt.timedelta) -> bool:
    """True if the lock ``text`` is ``run_id``'s own (a retry); raise
    LockHeld if another run's lock is younger than ``ttl``; False if it is
    stale (or unreadable)."""
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        holder = {}
    if holder.get("run_id") == run_id:
        return True
    if _age(holder) < ttl:
        raise _held(uri, holder)
    return False


def _create_local(uri: str, body: str) -> bool:
    """Create ``uri`` holding ``body``, atomically and complete (never an
    empty or half-written lock that a racing reader could take for stale):
    write a private file, then hard-link it to the lock's name, which fails
    if the name exists. True if this call created it."""
    tmp = f"{uri}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(body)
    try:
        os.link(tmp, uri)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def release(work_uri: str, *, run_id: str) -> bool:
    """Release the lock if ``run_id`` holds it; never touch another run's lock."""
    uri = lock_uri(work_uri)
    try:
        holder = json.loads(storage.read_text(uri))
    except FileNotFoundError:
        return False
    if holder.get("run_id") != run_id:
        return False
    storage.delete([uri])
    return True
