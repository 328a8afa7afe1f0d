"""One writer per output folder: a lock object under the work folder.

``max_active_runs=1`` keeps two runs of the DAG in one Airflow from
overlapping (the second waits in the queue). The lock covers what that cannot:
a second Airflow, ``airflow dags test`` processes, or a run of another DAG
pointed at the same output folder. A run takes ``{work_uri}/lock.json`` in
its first task and releases it in a teardown task that runs whatever
happened; a second run fails at once and says who holds the lock, since when,
and how to clear it if that run is dead.

Creation is atomic: ``if_generation_match=0`` on GCS, ``O_CREAT|O_EXCL``
locally. A lock older than ``ttl`` (a crashed run that never released it) is
taken over, conditionally on the generation that was read, so two runs cannot
both take over the same stale lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from typing import Any

from beam_jobs import storage

LOCK_NAME = "lock.json"
DEFAULT_TTL = dt.timedelta(hours=24)


try:  # fail the task at once: retrying cannot help while the other run goes on
    from airflow.sdk.exceptions import AirflowFailException as _Base
except ImportError:  # pragma: no cover - used without Airflow
    _Base = RuntimeError  # type: ignore[misc,assignment]


class LockHeld(_Base):
    """Another run is writing this output folder."""


def lock_uri(work_uri: str) -> str:
    return storage.join(work_uri, LOCK_NAME)


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
    for _ in range(2):
        try:
            fd = os.open(uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(body)
            return uri
        except FileExistsError:
            try:
                holder = json.loads(storage.read_text(uri))
            except (FileNotFoundError, json.JSONDecodeError):
                holder = {}
            if holder.get("run_id") == run_id:
                return uri
            if _age(holder) < ttl:
                raise _held(uri, holder) from None
            # Stale: move it aside atomically; only one taker's rename succeeds.
            try:
                os.rename(uri, f"{uri}.stale-{os.getpid()}")
            except FileNotFoundError:
                pass
    raise _held(uri, {})


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
