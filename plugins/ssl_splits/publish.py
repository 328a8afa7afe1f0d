"""Publish the manifest: atomically, without losing a concurrent publisher's
splits, keeping every published version.

On GCS (google-cloud-storage): read the manifest and its generation, apply
the update, write with ``if_generation_match`` = that generation (0 when
there is none). If another publisher committed in between, GCS answers 412:
re-read, re-apply, retry with backoff. A single-request upload replaces the
object atomically. After the commit, the same document is also written as
``{manifest stem}.versions/{UTC time}-{generation}.json``; if that copy
cannot be written, :class:`VersionNotWritten` says that the manifest *was*
published (at which generation) and that only its copy is missing. Every
other PublishError means the manifest is unchanged.

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
    """The manifest could not be published; the old one is unchanged (except
    for :class:`VersionNotWritten`, whose message says what was published)."""


class VersionNotWritten(PublishError):
    """The manifest was published, but its versioned copy was not written."""

    def __init__(self, message: str, published: "Published") -> None:
        super().__init__(message)
        self.published = published


@dataclass(frozen=True)
class Published:
    uri: str
    version_uri: str
    generation: int | None
    attempts: int
    manifest: dict[str, Any]


def versions_folder(uri: str) -> str:
    stem = uri[: -len(".json")] if uri.endswith(".json") else uri
    return f"{stem}.versions"


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def publish(uri: str, update: Update, *, attempts: int = 8) -> Published:
    """Apply ``update`` (current manifest or None -> new manifest) and commit it."""
    if storage.is_gcs(uri):
        from google.api_core import exceptions as gexc

        try:
            committed = _publish_gcs(uri, update, attempts)
        except (gexc.RetryError, gexc.GoogleAPIError, ConnectionError) as err:
            raise PublishError(
                f"could not publish {uri}: Cloud Storage kept failing ({_cause(err)}); retried "
                f"with backoff for {os.environ.get('SSL_SPLITS_GCS_RETRY_DEADLINE') or 300} s. "
                "The manifest is unchanged; the task can be retried."
            ) from err
        _write_version(committed, f"generation {committed.generation}")
        return committed
    return _publish_local(uri, update)


def _cause(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {str(cause)[:300]}"


def _write_version(published: Published, which: str) -> None:
    """Write the versioned copy of a manifest just committed; if that fails,
    say so truthfully: the manifest *was* published."""
    try:
        storage.write_text(published.version_uri, dumps(published.manifest), "application/json")
    except Exception as err:  # noqa: BLE001 - any storage failure, reported as what it means
        raise VersionNotWritten(
            f"{published.uri} was published ({which}; splits: "
            f"{', '.join(sorted(published.manifest.get('splits', {})))}), but its versioned copy "
            f"{published.version_uri} was not written ({_cause(err)}). Readers of the manifest "
            f"see the new version; only its copy under {versions_folder(published.uri)} is "
            "missing. Retrying the task publishes the same splits again (a new version, with its "
            f"copy); or copy {published.uri} to {published.version_uri} by hand.",
            published,
        ) from err


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
            current = json.loads(
                blob.download_as_bytes(if_generation_match=generation, retry=retry)
            )
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
            blob.upload_from_string(
                text, content_type="application/json", if_generation_match=generation, retry=retry
            )
        except gexc.PreconditionFailed:
            wait = min(5.0, 0.1 * 2**attempt) * (0.5 + random.random())
            log.info(
                "manifest %s changed while publishing (attempt %d/%d); re-reading in %.1f s",
                uri,
                attempt,
                attempts,
                wait,
            )
            time.sleep(wait)
            continue
        new_generation = int(blob.generation) if blob.generation is not None else None
        version = storage.join(versions_folder(uri), f"{_stamp()}-{new_generation}.json")
        return Published(uri, version, new_generation, attempt, doc)  # committed
    raise PublishError(
        f"could not publish {uri}: it kept changing under {attempts} attempts "
        "(another publisher?); the manifest is unchanged by this run"
    )


def _publish_local(uri: str, update: Update) -> Published:
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    with open(f"{uri}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(storage.read_text(uri)) if os.path.exists(uri) else None
            doc = update(current)
            text = dumps(doc)
            try:
                storage.write_text(uri, text, "application/json")  # rename(2): all or nothing
            except OSError as err:
                raise PublishError(
                    f"could not publish {uri}: {err}. The manifest is unchanged; "
                    "the task can be retried."
                ) from err
            sha = hashlib.sha256(text.encode()).hexdigest()[:12]
            version = storage.join(versions_folder(uri), f"{_stamp()}-{sha}.json")
            published = Published(uri, version, None, 1, doc)
            _write_version(published, f"sha256 {sha}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return published
