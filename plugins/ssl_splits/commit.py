"""Publication: verified staged shards take their published names, then the manifest commits.

The build job only ever writes a split's shards to its staging folder; the
verifier checks those staged objects exactly; this module, called by the
DAG's ``publish_manifest`` task, is the only code that writes a published
shard name. One publication (all the splits one run built) goes through
these steps, each a failpoint of the kill tests:

1. **check**: every staged object is still the one verified (size and CRC32C,
   plus generation on GCS or modification time locally). Nothing changes if
   not.
2. **journal** (``{work_uri}/publishing.json``, written atomically): the new
   manifest entries, which staged object goes to which name, and the files of
   an earlier build with another shard count that go away. From here on the
   publication is rolled forward, never back.
3. **switch**: each staged shard is placed under its final name (locally a
   ``rename(2)``; on GCS a server-side copy of exactly the verified
   generation), then the other-count files are deleted.
4. **commit**: the manifest takes the new entries (``ssl_splits.publish``:
   an atomic replace; on GCS with a generation precondition).
5. **clean**: the journal and the staged copies go.

What a reader sees if this stops (crash, kill, lost machine) at any point:
every split not in the journal is untouched. A split in the journal is, in
step 2, still entirely its old files; during 3 and 4 its final names hold a
mix of old and new shards (all verified, each file complete: a rename or an
object copy replaces a file whole) and its manifest entry still describes the
old build, so ``load_split`` refuses it, saying that a publication of it was
interrupted; after 4 it is entirely new and published. The next run of the
DAG (its ``plan`` task, and ``publish_manifest`` itself when retried) reads
the journal and finishes the publication from where it stopped:
:func:`recover`.

How long the mixed window lasts for a reader who globs ``{split}-*`` while a
publication runs: locally one rename per shard (microseconds each); on GCS
one server-side copy per shard, 16 at a time (a rewrite within a bucket and
location is a metadata operation), then the manifest write.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from beam_jobs import layout, storage
from beam_jobs.faults import failpoint
from beam_jobs.manifest import merge
from ssl_splits.publish import Published, PublishError, VersionNotWritten, publish

log = logging.getLogger(__name__)

GCS_COPY_THREADS = 16


class PublicationError(RuntimeError):
    """A verified build cannot be published as it is; says which file and why."""


@dataclass(frozen=True)
class SplitSwitch:
    """One split of a publication: its new manifest entry, where each of its
    shards is staged (and the staged object's verified identity), and the
    files of an earlier build that go away."""

    split: str
    entry: dict[str, Any]
    shards: list[dict[str, Any]]  # {path, staged, num_bytes, crc32c, generation | mtime_ns}
    staging: str
    stale: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "shards": self.shards,
            "staging": self.staging,
            "stale": self.stale,
        }

    @classmethod
    def from_dict(cls, split: str, d: dict[str, Any]) -> SplitSwitch:
        return cls(split, d["entry"], d["shards"], d["staging"], d["stale"])


@dataclass(frozen=True)
class Publication:
    """Everything needed to finish a publication, from its journal alone."""

    run_id: str
    started_at: str
    manifest_uri: str
    output_uri: str
    work_uri: str
    splits: dict[str, SplitSwitch]
    source: dict[str, Any] | None
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "manifest_uri": self.manifest_uri,
            "output_uri": self.output_uri,
            "work_uri": self.work_uri,
            "splits": {k: v.to_dict() for k, v in sorted(self.splits.items())},
            "source": self.source,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Publication:
        return cls(
            d["run_id"],
            d["started_at"],
            d["manifest_uri"],
            d["output_uri"],
            d["work_uri"],
            {k: SplitSwitch.from_dict(k, v) for k, v in d["splits"].items()},
            d.get("source"),
            d["provenance"],
        )


# --------------------------------------------------------------------------- identities


def _same_object(info: storage.FileInfo | None, want: dict[str, Any], *, staged: bool) -> bool:
    """Is ``info`` the object described by ``want`` (a journal's shard)? A
    staged object must be the very one verified (its generation on GCS, its
    modification time locally); a final one must hold the same bytes (GCS:
    size and CRC32C; locally size and the modification time a rename keeps)."""
    if info is None or info.size != want["num_bytes"]:
        return False
    if info.crc32c is not None:
        if info.crc32c != want["crc32c"]:
            return False
        return not staged or want.get("generation") in (None, info.generation)
    return want.get("mtime_ns") in (None, info.mtime_ns)


def switch_split(sw: SplitSwitch) -> list[str]:
    """Place every staged shard of ``sw`` under its final name (skipping those
    already there), then remove the stale files. Returns what could not be
    placed (empty when the split is switched)."""
    todo = []
    lost = []
    for shard in sw.shards:
        if _same_object(storage.stat(shard["path"]), shard, staged=False):
            continue
        if not _same_object(storage.stat(shard["staged"]), shard, staged=True):
            lost.append(
                f"{shard['staged']} is gone or changed and {shard['path']} does not hold it"
            )
            continue
        todo.append(shard)
    if lost:
        return lost

    def place(shard: dict[str, Any]) -> None:
        storage.place(shard["staged"], shard["path"], source_generation=shard.get("generation"))
        failpoint("publish.placed")

    if todo and storage.is_gcs(todo[0]["path"]):
        with cf.ThreadPoolExecutor(GCS_COPY_THREADS, thread_name_prefix="publish") as pool:
            list(pool.map(place, todo))
    else:
        for shard in todo:
            place(shard)
    storage.delete(sw.stale)
    return []


# --------------------------------------------------------------------------- the protocol


def prepare(
    *,
    run_id: str,
    manifest_uri: str,
    output_uri: str,
    work_uri: str,
    entries: dict[str, dict[str, Any]],
    shards: dict[str, list[dict[str, Any]]],
    stagings: dict[str, str],
    source: dict[str, Any] | None,
    provenance: dict[str, Any],
) -> Publication:
    """A publication of verified builds: ``entries`` (new manifest entries by
    split), ``shards`` (the verification report's staged objects by split),
    ``stagings`` (their folders). Lists each split's stale files now."""
    splits = {}
    for name, entry in entries.items():
        keep = {s["path"] for s in entry["shards"]}
        # The split's file prefix as its shards are named (the source's layout).
        prefix = layout.parse_shard_name(storage.basename(entry["shards"][0]["path"]))[0]  # type: ignore[index]
        stale = [f.path for f in layout.split_files(output_uri, prefix) if f.path not in keep]
        journal_shards = []
        for s in shards[name]:
            j = {k: s[k] for k in ("path", "staged", "num_bytes", "crc32c")}
            for k in ("generation", "mtime_ns"):
                if s.get(k) is not None:
                    j[k] = s[k]
            journal_shards.append(j)
        splits[name] = SplitSwitch(name, entry, journal_shards, stagings[name], stale)
    return Publication(
        run_id,
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        manifest_uri,
        output_uri,
        work_uri,
        splits,
        source,
        provenance,
    )


def check_staged(pub: Publication) -> None:
    """Raise PublicationError unless every staged object is still the one verified."""
    problems = []
    for sw in pub.splits.values():
        for shard in sw.shards:
            if not _same_object(storage.stat(shard["staged"]), shard, staged=True):
                problems.append(
                    f"{sw.split}: {shard['staged']} changed or disappeared since it was verified"
                )
    if problems:
        raise PublicationError(
            "; ".join(problems[:5]) + "; nothing was published (run the "
            "DAG again to rebuild and verify)"
        )


def execute(pub: Publication) -> Published:
    """Steps 2 to 5 for a prepared, checked publication. Raises PublishError
    saying how far it got when storage fails on the way."""
    journal = layout.journal_uri(pub.work_uri)
    try:
        storage.write_text(journal, json.dumps(pub.to_dict(), indent=1) + "\n", "application/json")
    except Exception as err:  # noqa: BLE001 (reported with what it means)
        raise PublishError(
            f"could not publish {pub.manifest_uri}: writing the publication journal {journal} "
            f"failed ({_cause(err)}). Nothing was changed: the manifest is unchanged and no "
            "published file was touched; the task can be retried."
        ) from err
    failpoint("publish.journaled")
    result = _finish(pub)
    assert result is not None  # every split was switched, or _finish raised
    return result


def _cause(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {str(cause)[:300]}"


def _finish(pub: Publication) -> Published | None:
    """Steps 3 to 5 (also what recovery does): switch, commit, clean."""
    names = ", ".join(sorted(pub.splits))
    journal = layout.journal_uri(pub.work_uri)
    done = {}
    try:
        for name, sw in pub.splits.items():
            lost = switch_split(sw)
            if lost:
                log.warning(
                    "%s cannot be published: %s; its old manifest entry stays and the "
                    "next run rebuilds it",
                    name,
                    "; ".join(lost[:3]),
                )
            else:
                done[name] = sw
    except Exception as err:  # noqa: BLE001 (reported with what it means)
        raise PublishError(
            f"publishing {names} to {pub.manifest_uri} stopped while their shards were taking "
            f"their published names ({_cause(err)}). The manifest is unchanged; some of these "
            f"splits' files may already be the new, verified ones, so load_split refuses them "
            f"until the publication is finished: a retry of this task or the next run does "
            f"that from the journal {journal}."
        ) from err
    failpoint("publish.switched")
    result = None
    if done:
        entries = {name: sw.entry for name, sw in done.items()}
        try:
            result = publish(
                pub.manifest_uri,
                lambda current: merge(
                    current,
                    output_uri=pub.output_uri,
                    splits=entries,
                    source=pub.source,
                    provenance=pub.provenance,
                    work_uri=pub.work_uri,
                ),
            )
        except VersionNotWritten:
            # Committed: its message says so. The journal stays, so a retry of this task
            # (or the next run) publishes the same entries again, with the copy.
            raise
        except PublishError as err:
            raise PublishError(
                f"{err} The shards of {names} already have their published names (verified); "
                f"load_split refuses these splits until the manifest is committed: a retry of "
                f"this task or the next run does that from the journal {journal}."
            ) from err
        failpoint("publish.committed")
    try:
        storage.delete([journal])
        for sw in done.values():
            storage.delete_tree(sw.staging)
    except Exception as err:  # noqa: BLE001 (the publication itself is complete)
        log.warning(
            "published %s, but could not clean up (%s): the journal %s and staged "
            "copies may stay until the next run",
            names,
            _cause(err),
            journal,
        )
    if len(done) < len(pub.splits):
        raise PublicationError(
            f"published {', '.join(sorted(done)) or 'nothing'}; not "
            f"{', '.join(sorted(set(pub.splits) - set(done)))}: their staged shards are gone "
            "(run the DAG again to rebuild them)"
        )
    return result


def recover(work_uri: str) -> list[str]:
    """Finish a publication that was interrupted (its journal is still there):
    place what was not placed, commit the manifest, clean up. Returns the
    splits it published (empty when there was nothing to do)."""
    try:
        d = json.loads(storage.read_text(layout.journal_uri(work_uri)))
    except FileNotFoundError:
        return []
    pub = Publication.from_dict(d)
    log.warning(
        "finishing the publication of %s that run %s started at %s and did not finish",
        ", ".join(sorted(pub.splits)),
        pub.run_id,
        pub.started_at,
    )
    try:
        _finish(pub)
    except PublicationError as err:
        log.warning("%s", err)
    return sorted(s for s in pub.splits)


__all__ = [
    "Publication",
    "PublicationError",
    "SplitSwitch",
    "check_staged",
    "execute",
    "prepare",
    "recover",
    "switch_split",
]
