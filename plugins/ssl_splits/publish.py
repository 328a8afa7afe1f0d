"""Publish the manifest: atomically, without losing a concurrent publisher's
splits, keeping every published version.

On GCS (google-cloud-storage): read the manifest and its generation, apply
the update, write with ``if_generation_match`` = that generation (0 when
there is none). If another publisher committed in between, GCS answers 412:
re-read, re-apply, retry with backoff. A single-request upload replaces the
object atomically. After the commit, the same document is also written as
``{manifest stem}.versions/{UTC time}-{generation}.json``.

On a local path: the same read-modify-write under an exclusive ``flock`` on
``{manifest}.lock``, committed with ``rename(2)``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from beam_jobs import storage
from beam_jobs.manifest import dumps

log = logging.getLogger(__name__)

Update = Callable[[dict[str, Any] | None], dict[str, Any]]


class PublishError(RuntimeError):
    """The manifest could not be published; the old one is unchanged."""


@dataclass(frozen=True)
class Published:
    uri: str
    version_uri: str
    generation: int | None
    attempts: int
    manifest: dict[str, Any]


def versions_folder(uri: str) -> str:
    stem = uri[:-len(".json")] if uri.endswith(".json") else uri
    return f"{stem}.versions"


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def publish(uri: str, update: Update, *, attempts: int = 8) -> Published:
    """Apply ``update`` (current manifest or None -> new manifest) and commit it."""
    if storage.is_gcs(uri):
        from google.api_core import exceptions as gexc

        try:
            return _publish_gcs(uri, update, attempts)
        except (gexc.RetryError, gexc.GoogleAPIError, ConnectionError) as err:
            cause = getattr(err, "cause", None) or err
            raise PublishError(
                f"could not publish {uri}: Cloud Storage kept failing "
                f"({type(cause).__name__}: {str(cause)[:300]}); retried with backoff for "
                f"{os.environ.get('SSL_SPLITS_GCS_RETRY_DEADLINE') or 300} s. The manifest is "
                "unchanged; the task can be retried."
            ) from err
    return _publish_local(uri, update)


def _publish_gcs(uri: str, update: Update, attempts: int) -> Published:
    from google.api_core import exceptions as gexc

    bucket_name, name = storage.split_gcs(uri)
    bucket = storage.gcs_client().bucket(bucket_name)
    retry = storage._retry()
    for attempt in range(1, attempts + 1):
        blob = bucket.blob(name)
        try:
            blob.reload(retry=retry)
            generation = int(blob.generation)
            current = json.loads(blob.download_as_bytes(if_generation_match=generation, retry=retry))
        except gexc.NotFound:
            generation, current = 0, None
        except gexc.PreconditionFailed:
            continue  # replaced between reload and download: read again
        doc = update(current)
        text = dumps(doc)
        try:
            # Conditional, so safe to retry on transient errors (the library's
            # default policy retries only conditional writes).
            # no-cache: readers of a public bucket must not see an old manifest
            # from an edge cache.
            blob.cache_control = "no-cache"
            blob.upload_from_string(text, content_type="application/json",
                                    if_generation_match=generation, retry=retry)
        except gexc.PreconditionFailed:
            wait = min(5.0, 0.1 * 2 ** attempt) * (0.5 + random.random())
            log.info("manifest %s changed while publishing (attempt %d/%d); re-reading in %.1f s",
                     uri, attempt, attempts, wait)
            time.sleep(wait)
            continue
        new_generation = int(blob.generation) if blob.generation is not None else None
        version = storage.join(versions_folder(uri), f"{_stamp()}-{new_generation}.json")
        storage.write_text(version, text, "application/json")
        return Published(uri, version, new_generation, attempt, doc)
    raise PublishError(f"could not publish {uri}: it kept changing under {attempts} attempts "
                       "(another publisher?); the manifest is unchanged by this run")


def _publish_local(uri: str, update: Update) -> Published:
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    with open(f"{uri}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(storage.read_text(uri)) if os.path.exists(uri) else None
            doc = update(current)
            text = dumps(doc)
            storage.write_text(uri, text, "application/json")
            sha = hashlib.sha256(text.encode()).hexdigest()[:12]
            version = storage.join(versions_folder(uri), f"{_stamp()}-{sha}.json")
            storage.write_text(version, text, "application/json")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return Published(uri, version, None, 1, doc)
