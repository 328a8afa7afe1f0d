"""Publish the manifest: atomically, fenced, without losing a concurrent
publisher's splits, keeping every published version true to its bytes.

Written against the storage contract only (``beam_jobs.storage``): read the
manifest and the version read (``read_versioned``), apply the update, and
commit with ``write_if`` on that version (:data:`storage.MISSING` when there is
none). If another publisher committed in between, the write fails its
precondition: re-read, re-apply, retry with backoff. On GCS that is a
generation precondition; locally a compare-and-rename under the folder's
``flock``. Right before each commit the run's lock is checked
(``beam_jobs.publishing.lock.Fence.check``): a writer that lost its lease commits nothing.

After the commit, the same document is also written, create-only, as
``{manifest stem}.versions/{UTC time}-{generation or sha}.json``. If that copy
cannot be written, :class:`VersionNotWritten` says that the manifest *was*
published and that only its copy is missing. Every other PublishError means
the manifest is unchanged.

**Versions true to bytes.** A rebuild replaces a split's published files. Each
earlier version that describes that split with other bytes then says so: its
entry gains ``replaced`` (when, by which version) and the document a top-level
``superseded_by``, so that nobody takes an old version's shard list for files
that still exist (:func:`mark_replaced`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from beam_jobs import storage
from beam_jobs.core import Manifest
from beam_jobs.publishing.lock import Fence, LockLost
from beam_jobs.publishing.manifest import ManifestError, dumps

log = logging.getLogger(__name__)

Update = Callable[[Manifest | None], Manifest]
MAX_MANIFEST_BYTES = 256 << 20


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
    manifest: Manifest


def versions_folder(uri: str) -> str:
    stem = uri[: -len(".json")] if uri.endswith(".json") else uri
    return f"{stem}.versions"


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _cause(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {str(cause)[:300]}"


def _read(uri: str) -> tuple[Manifest | None, str]:
    """The manifest at ``uri`` and the version read (MISSING when there is none)."""
    try:
        data, info = storage.read_versioned(uri, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return None, storage.MISSING
    try:
        doc = Manifest.from_dict(json.loads(data))
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        doc = None
    if doc is None:
        raise PublishError(
            f"{uri} exists and is not a manifest of this product: not replacing it. Move it "
            "elsewhere or choose another manifest_uri."
        )
    return doc, info.version or storage.MISSING


def publish(
    uri: str, update: Update, *, fence: Fence | None = None, attempts: int = 8
) -> Published:
    """Apply ``update`` (current manifest or None -> new manifest) and commit it,
    conditionally on the version read and, with ``fence``, on the run's lock."""
    for attempt in range(1, attempts + 1):
        try:
            current, version = _read(uri)
            doc = _updated(uri, update, current)
            text = dumps(doc)
            if fence is not None:
                fence.check(f"the commit of {uri}")
            info = storage.write_if(uri, text.encode(), if_version=version)
        except storage.PreconditionFailed:
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
        except (PublishError, LockLost):
            raise
        except Exception as err:  # noqa: BLE001 - storage failed after its retries
            raise PublishError(
                f"could not publish {uri}: storage kept failing ({_cause(err)}); retried with "
                f"backoff for {storage.retry_deadline():.0f} s. The manifest is unchanged; the "
                "task can be retried."
            ) from err
        tag = (
            str(info.generation)
            if info.generation is not None
            else hashlib.sha256(text.encode()).hexdigest()[:12]
        )
        version_uri = storage.join(versions_folder(uri), f"{_stamp()}-{tag}.json")
        published = Published(uri, version_uri, info.generation, attempt, doc)
        _write_version(published, f"generation {tag}" if info.generation else f"sha256 {tag}")
        return published
    raise PublishError(
        f"could not publish {uri}: it kept changing under {attempts} attempts "
        "(another publisher?); the manifest is unchanged by this run"
    )


def _updated(uri: str, update: Update, current: Manifest | None) -> Manifest:
    """``update(current)``; PublishError saying why if it refuses ``current``
    (a ManifestError: written by a newer version of the product)."""
    try:
        return update(current)
    except ManifestError as err:
        raise PublishError(f"not publishing {uri}: {err}; the manifest is unchanged") from None


def _write_version(published: Published, which: str) -> None:
    """Write the versioned copy of a manifest just committed (create-only);
    if that fails, say so truthfully: the manifest *was* published."""
    try:
        storage.write_if(
            published.version_uri,
            dumps(published.manifest).encode(),
            if_version=storage.MISSING,
        )
    except Exception as err:  # noqa: BLE001 - any storage failure, reported as what it means
        raise VersionNotWritten(
            f"{published.uri} was published ({which}; splits: "
            f"{', '.join(sorted(published.manifest.splits))}), but its versioned copy "
            f"{published.version_uri} was not written ({_cause(err)}). Readers of the manifest "
            f"see the new version; only its copy under {versions_folder(published.uri)} is "
            "missing. Retrying the task publishes the same splits again (a new version, with its "
            f"copy); or copy {published.uri} to {published.version_uri} by hand.",
            published,
        ) from err


# --------------------------------------------------------------------------- versions true to bytes


def _files(entry: Any) -> set[tuple[Any, Any, Any]]:
    shards = entry.get("shards") if isinstance(entry, dict) else None
    return {
        (s.get("path"), s.get("num_bytes"), s.get("crc32c"))
        for s in shards or []
        if isinstance(s, dict)
    }


def replaced_in(old: Manifest, new: Manifest) -> list[str]:
    """The splits of ``old`` whose files ``new`` describes with other bytes
    (pure: two manifests in, split names out)."""
    out = []
    for name, entry in old.splits.items():
        now = new.splits.get(name)
        if now is not None and "replaced" not in entry:
            if _files(entry) != _files(now):
                out.append(name)
    return sorted(out)


def mark_replaced(published: Published, *, fence: Fence | None = None) -> list[str]:
    """Mark every earlier version of the manifest whose splits' files this
    publication replaced; returns the versions marked. Each is rewritten
    conditionally on the version read (a concurrent change is left alone)."""
    marked = []
    at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for f in storage.list_files(storage.join(versions_folder(published.uri), "*.json")):
        if f.path == published.version_uri:
            continue
        try:
            data, info = storage.read_versioned(f.path, MAX_MANIFEST_BYTES)
            doc = Manifest.from_dict(json.loads(data))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            continue  # ValueError: not JSON (JSONDecodeError), or not a manifest
        names = replaced_in(doc, published.manifest)
        if not names:
            continue
        replaced = {
            "at": at,
            "by_version": published.version_uri,
            "note": "a later build replaced this split's files: the shards listed here "
            "no longer exist as described (their names now hold other bytes)",
        }
        doc = dataclasses.replace(
            doc,
            splits={
                n: {**e, "replaced": replaced} if n in names else e for n, e in doc.splits.items()
            },
            other={**doc.other, "superseded_by": published.version_uri},
        )
        if fence is not None:
            fence.check(f"marking {f.path}")
        try:
            storage.write_if(f.path, dumps(doc).encode(), if_version=info.version or "")
        except storage.PreconditionFailed:
            continue
        marked.append(f.path)
    if marked:
        log.info("marked %d earlier manifest version(s) as replaced", len(marked))
    return marked
