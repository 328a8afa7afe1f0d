"""Publication: verified staged shards take their published names, then the manifest commits.

The build job only ever writes a split's shards to its staging folder; the
verifier checks those staged objects exactly; this module, called by the
DAG's ``publish_manifest`` task, is the only code that writes a published
shard name. One publication (all the splits one run built) goes through
these steps, each a failpoint of the kill tests:

1. **check**: every staged object is still the one verified (size and CRC32C,
   plus generation on GCS or modification time locally). Nothing changes if
   not.
   Every destination name is either free or holds a file the product's
   records say it wrote (``beam_jobs.publishing.ownership``); a foreign file stops the
   publication here, naming it.
2. **journal** (``{output_uri}/_ssl_splits/publishing.json``, written
   atomically): the new manifest entries, which staged object goes to which
   name and which version of that name it replaces, and the files of the
   earlier build (from its manifest entry, never from a listing) that go
   away. From here on the publication is rolled forward, never back.
3. **switch**: each staged shard is placed under its final name (locally a
   ``rename(2)``; on GCS a server-side copy of exactly the verified
   generation), each only over the version the journal recorded for that
   name; then the earlier build's other files are deleted, each only if it
   is still the version recorded.
4. **commit**: the manifest takes the new entries (``beam_jobs.publishing.publish``:
   a conditional replace of the version read); earlier manifest versions
   whose files were replaced say so.
5. **clean**: the journal and the staged copies go.

Every step of 2-4 is fenced: it first checks that this run still holds the
output folder's lock with enough lease left (``beam_jobs.publishing.lock.Fence``), so a
writer that lost its lease publishes nothing more.

What a reader sees if this stops (crash, kill, lost machine) at any point:
every split not in the journal is untouched. A split in the journal is, in
step 2, still entirely its old files; during 3 and 4 its final names hold a
mix of old and new shards (all verified, each file complete: a rename or an
object copy replaces a file whole) and its manifest entry still describes the
old build, so ``load_split`` refuses it, saying that a publication of it was
interrupted; after 4 it is entirely new and published. The next run of the
DAG (its ``plan`` task, and ``publish_manifest`` itself when retried) reads
the journal and finishes the publication from where it stopped:
:func:`recover`. A split whose staged shards are gone cannot be finished:
recovery then fails loudly (:class:`UnfinishedSplits`), naming it, and keeps
its journal entry (so its files stay the product's) until a run rebuilds it.

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
import re
from typing import Any

from beam_jobs import layout, storage
from beam_jobs.core import Manifest, Publication, SplitSwitch
from beam_jobs.faults import failpoint
from beam_jobs.publishing.lock import Fence, LockLost
from beam_jobs.publishing.manifest import MANIFEST_NAME, entry_shape, merge
from beam_jobs.publishing.ownership import (
    ForeignFiles,
    JournalRefused,
    Recorded,
    inside,
    matches,
    product_records,
    read_json,
)
from beam_jobs.publishing.publish import (
    Published,
    PublishError,
    VersionNotWritten,
    mark_replaced,
    publish,
)

log = logging.getLogger(__name__)


class PublicationError(RuntimeError):
    """A verified build cannot be published as it is; says which file and why."""


class UnfinishedSplits(PublicationError):
    """A journaled publication could not be finished for these splits (their
    staged shards are gone); their journal entries are kept."""

    def __init__(self, message: str, splits: list[str]) -> None:
        super().__init__(message)
        self.splits = splits


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


def _identity(info: storage.FileInfo) -> dict[str, Any]:
    """What a journal records of a published file it replaces or removes."""
    out: dict[str, Any] = {"version": info.version, "num_bytes": info.size}
    if info.crc32c is not None:
        out["crc32c"] = info.crc32c
    if info.mtime_ns is not None:
        out["mtime_ns"] = info.mtime_ns
    return out


def _check(fence: Fence | None, step: str) -> None:
    if fence is not None:
        fence.check(step)


def switch_split(sw: SplitSwitch, fence: Fence | None = None) -> list[str]:
    """Place every staged shard of ``sw`` under its final name (skipping those
    already there), each only over the version of that name the journal
    recorded; then remove the earlier build's files that are still as
    recorded. Returns what could not be placed (empty when the split is switched)."""
    todo, lost = _to_place(sw)
    if lost:
        return lost
    _place_all(todo, fence)
    _remove_stale(sw, fence)
    return []


def _to_place(sw: SplitSwitch) -> tuple[list[dict[str, Any]], list[str]]:
    """The shards still to place (their final names do not hold them yet), and
    what cannot be placed: staged shards gone or changed."""
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
    return todo, lost


def _place_all(todo: list[dict[str, Any]], fence: Fence | None) -> None:
    """:func:`_place` of every shard, in threads where the storage gains from it."""
    threads = storage.place_concurrency(todo[0]["path"]) if todo else 1
    if threads > 1:
        carry = storage.carry(todo[0]["path"])

        def place_here(shard: dict[str, Any]) -> None:
            with carry():
                _place(shard, fence)

        with cf.ThreadPoolExecutor(threads, thread_name_prefix="publish") as pool:
            list(pool.map(place_here, todo))
    else:
        for shard in todo:
            _place(shard, fence)


def _place(shard: dict[str, Any], fence: Fence | None) -> None:
    """One staged shard under its final name, over the version the journal
    recorded only; ForeignFiles if another file took the name meanwhile."""
    old = shard.get("replaces")
    path = shard["path"]
    _check(fence, f"placing {path}")
    # Over the version the journal recorded; a name emptied since holds nothing to lose.
    expect = old["version"] if isinstance(old, dict) else storage.MISSING
    if expect != storage.MISSING and not storage.occupied(path):
        expect = storage.MISSING
    try:
        storage.place(
            shard["staged"],
            path,
            source_generation=shard.get("generation"),
            if_version=expect,
        )
    except storage.PreconditionFailed:
        if not _same_object(storage.stat(shard["staged"]), shard, staged=True):
            raise  # the staged object changed: reported as a storage failure
        raise ForeignFiles(
            storage.dirname(path),
            [path],
            " (it appeared while this run published; this split's publication stops "
            "here and its journal finishes it once the file is moved)",
            done="written over",
        ) from None
    failpoint("publish.placed")


def _remove_stale(sw: SplitSwitch, fence: Fence | None) -> None:
    """Remove the earlier build's files the journal recorded that are still as
    recorded (a file changed since is someone else's now: left, with a warning)."""
    for old in sw.stale:
        _check(fence, f"removing {old['path']}")
        try:
            storage.delete_if(old["path"], if_version=str(old.get("version") or ""))
        except storage.PreconditionFailed:
            log.warning(
                "left %s in place: it is no longer the file of the earlier build of %s "
                "that the journal recorded (someone else's now)",
                old["path"],
                sw.split,
            )


# --------------------------------------------------------------------------- the protocol


def _destination(path: str, records: list[Recorded]) -> dict[str, Any] | None:
    """What a final name holds now: None when it is free, its identity when it
    is a file the records say the product wrote; ForeignFiles otherwise."""
    info = storage.stat(path)
    if info is None:
        if storage.occupied(path):
            raise ForeignFiles(storage.dirname(path), [path])  # a folder, a link
        return None
    if any(matches(info, r) for r in records):
        return _identity(info)
    raise ForeignFiles(storage.dirname(path), [path])


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
    previous: Manifest | None = None,
) -> Publication:
    """A publication of verified builds: ``entries`` (new manifest entries by
    split), ``shards`` (the verification report's staged objects by split),
    ``stagings`` (their folders); ``previous`` the manifest as it is. Each
    final name must be free or the product's own (else ForeignFiles, naming
    every such file); the earlier build's files that go away come from its
    manifest entry (or an unfinished journal's), never from a listing."""
    journal = read_json(layout.journal_uri(output_uri))
    records = product_records(output_uri, previous, journal)
    kept: dict[str, SplitSwitch] = {}
    if journal:
        kept = {
            k: v
            for k, v in Publication.from_dict(journal).splits.items()
            if k not in entries and v.lost
        }
    splits = {}
    foreign: list[str] = []
    for name, entry in entries.items():
        journal_shards = _journal_shards(shards[name], records, foreign)
        stale = _stale(name, entry, previous, journal, records)
        splits[name] = SplitSwitch(name, entry, journal_shards, stagings[name], stale)
    if foreign:
        raise ForeignFiles(
            output_uri,
            sorted(set(foreign)),
            " (they appeared during this run, after its check)",
            done="published",
        )
    return Publication(
        run_id,
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        manifest_uri,
        output_uri,
        work_uri,
        splits,
        source,
        provenance,
        kept,
    )


def _journal_shards(
    shards: list[dict[str, Any]], records: list[Recorded], foreign: list[str]
) -> list[dict[str, Any]]:
    """What the journal records of a split's staged shards, each with what its
    final name holds now (``replaces``); final names holding a file the
    product did not write are added to ``foreign``."""
    journal_shards = []
    for s in shards:
        j = {k: s[k] for k in ("path", "staged", "num_bytes", "crc32c")}
        for k in ("generation", "mtime_ns"):
            if s.get(k) is not None:
                j[k] = s[k]
        try:
            j["replaces"] = _destination(s["path"], records)
        except ForeignFiles as err:
            foreign += err.paths
        journal_shards.append(j)
    return journal_shards


def _stale(
    name: str,
    entry: dict[str, Any],
    previous: Manifest | None,
    journal: dict[str, Any] | None,
    records: list[Recorded],
) -> list[dict[str, Any]]:
    """The earlier build's files of split ``name`` that the new entry does not
    keep and that are still the product's, from its manifest entry and an
    unfinished journal's (never from a listing), with their identity."""
    keep = {s["path"] for s in entry["shards"]}
    old_paths = _shard_paths(previous.splits.get(name) if previous else None)
    if journal and name in (journal.get("splits") or {}):
        old_paths |= _shard_paths(journal["splits"][name])
    stale = []
    for path in sorted(p for p in old_paths - keep if isinstance(p, str)):
        info = storage.stat(path)
        if info is not None and any(matches(info, r) for r in records):
            stale.append({"path": path, **_identity(info)})
    return stale


def _shard_paths(entry: Any) -> set[Any]:
    """The ``path`` of each shard an entry (as read from storage) lists."""
    shards = entry.get("shards") if isinstance(entry, dict) else None
    return (
        {s.get("path") for s in shards if isinstance(s, dict)}
        if isinstance(shards, list)
        else set()
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


def _write_journal(pub: Publication, splits: dict[str, SplitSwitch], fence: Fence | None) -> str:
    journal = layout.journal_uri(pub.output_uri)
    _check(fence, f"writing the journal {journal}")
    doc = {**pub.to_dict(), "splits": {k: v.to_dict() for k, v in sorted(splits.items())}}
    storage.write_text(journal, json.dumps(doc, indent=1) + "\n", "application/json")
    return journal


def execute(pub: Publication, fence: Fence | None = None) -> Published:
    """Steps 2 to 5 for a prepared, checked publication. Raises PublishError
    saying how far it got when storage fails on the way, LockLost when this
    run lost the output folder's lock on the way."""
    try:
        _write_journal(pub, {**pub.kept, **pub.splits}, fence)
    except LockLost:
        raise
    except Exception as err:  # noqa: BLE001 (reported with what it means)
        raise PublishError(
            f"could not publish {pub.manifest_uri}: writing the publication journal "
            f"{layout.journal_uri(pub.output_uri)} failed ({_cause(err)}). Nothing was changed: "
            "the manifest is unchanged and no published file was touched; the task can be "
            "retried."
        ) from err
    failpoint("publish.journaled")
    result = _finish(pub, fence)
    assert result is not None  # every split was switched, or _finish raised
    return result


def _cause(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {str(cause)[:300]}"


def _finish(pub: Publication, fence: Fence | None) -> Published | None:
    """Steps 3 to 5 (also what recovery does): switch, commit, clean."""
    done, lost = _switch_all(pub, fence)
    failpoint("publish.switched")
    result = _commit(pub, done, fence) if done else None
    unfinished = {**pub.kept, **{k: _lost(v) for k, v in pub.splits.items() if k in lost}}
    _clean_up(pub, done, unfinished, fence)
    if unfinished:
        raise _unfinished(pub, sorted(unfinished), lost)
    return result


def _switch_all(
    pub: Publication, fence: Fence | None
) -> tuple[dict[str, SplitSwitch], dict[str, list[str]]]:
    """Step 3: :func:`switch_split` of every split; the splits switched, and
    why the others could not be. PublishError if storage fails on the way."""
    done = {}
    lost: dict[str, list[str]] = {}
    try:
        for name, sw in pub.splits.items():
            problems = switch_split(sw, fence)
            if problems:
                lost[name] = problems
            else:
                done[name] = sw
    except (LockLost, ForeignFiles):
        raise
    except Exception as err:  # noqa: BLE001 (reported with what it means)
        raise PublishError(
            f"publishing {_names(pub)} to {pub.manifest_uri} stopped while their shards were "
            f"taking their published names ({_cause(err)}). The manifest is unchanged; some of "
            f"these splits' files may already be the new, verified ones, so load_split refuses "
            f"them until the publication is finished: a retry of this task or the next run "
            f"does that from the journal {layout.journal_uri(pub.output_uri)}."
        ) from err
    return done, lost


def _commit(pub: Publication, done: dict[str, SplitSwitch], fence: Fence | None) -> Published:
    """Step 4: the manifest with the switched splits' entries, committed; then
    earlier manifest versions marked as replaced (best effort)."""
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
            fence=fence,
        )
    except VersionNotWritten:
        # Committed: its message says so. The journal stays, so a retry of this task
        # (or the next run) publishes the same entries again, with the copy.
        raise
    except PublishError as err:
        raise PublishError(
            f"{err} The shards of {_names(pub)} already have their published names (verified); "
            f"load_split refuses these splits until the manifest is committed: a retry of "
            f"this task or the next run does that from the journal "
            f"{layout.journal_uri(pub.output_uri)}."
        ) from err
    failpoint("publish.committed")
    try:
        mark_replaced(result, fence=fence)
    except LockLost:
        raise
    except Exception as err:  # noqa: BLE001 (the publication itself is complete)
        log.warning("could not mark earlier manifest versions as replaced: %s", _cause(err))
    return result


def _clean_up(
    pub: Publication,
    done: dict[str, SplitSwitch],
    unfinished: dict[str, SplitSwitch],
    fence: Fence | None,
) -> None:
    """Step 5 (best effort): the journal rewritten with the unfinished splits
    only, or deleted; the switched splits' staging folders deleted."""
    journal = layout.journal_uri(pub.output_uri)
    try:
        if unfinished:
            _write_journal(pub, unfinished, fence)
        else:
            storage.delete([journal])
        for sw in done.values():
            storage.delete_tree(sw.staging)
    except LockLost:
        raise
    except Exception as err:  # noqa: BLE001 (the publication itself is complete)
        log.warning(
            "published %s, but could not clean up (%s): the journal %s and staged "
            "copies may stay until the next run",
            _names(pub),
            _cause(err),
            journal,
        )


def _names(pub: Publication) -> str:
    """The publication's splits, for messages."""
    return ", ".join(sorted(pub.splits))


def _lost(sw: SplitSwitch) -> SplitSwitch:
    return SplitSwitch(sw.split, sw.entry, sw.shards, sw.staging, sw.stale, lost=True)


def _unfinished(pub: Publication, splits: list[str], why: dict[str, list[str]]) -> UnfinishedSplits:
    detail = "; ".join(f"{k}: {'; '.join(v[:2])}" for k, v in sorted(why.items()))
    return UnfinishedSplits(
        f"the publication of {', '.join(splits)} into {pub.output_uri} (run {pub.run_id}, "
        f"started {pub.started_at}) cannot be finished: its verified staged shards are gone"
        f"{' (' + detail + ')' if detail else ''}. Its published names may hold a mix of old "
        "and new verified shards, and its manifest entry still describes the earlier build, so "
        "load_split refuses it. The journal keeps it (its files stay the product's). Rebuild "
        f"it: trigger the DAG for {', '.join(splits)} with force (e.g. the seeds of these "
        "splits); that run publishes it anew.",
        splits,
    )


# A split name as the product writes one (seeds, fractions, name-list labels).
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def journal_problem(
    d: dict[str, Any], output_uri: str, manifest_uri: str, work_uri: str
) -> str | None:
    """Why the journal ``d`` of ``output_uri`` must not be acted on by a run that
    publishes ``manifest_uri`` from ``work_uri`` (names keys and places, never
    quotes a value); None if it may. Every file it would place, replace or
    remove must be a shard name directly in the output folder, and every
    staged object the shard of the same name in its split's staging folder
    under this run's work folder: a journal edited to point elsewhere moves
    or deletes nothing."""
    try:
        pub = Publication.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return f"it does not read as a publication journal ({type(err).__name__})"
    for key, want in (
        ("output_uri", output_uri),
        ("manifest_uri", manifest_uri),
        ("work_uri", work_uri),
    ):
        got = getattr(pub, key)
        if not isinstance(got, str) or storage.normalize(got) != storage.normalize(want):
            return f"its {key} is not this run's ({want})"
    for i, (name, sw) in enumerate(sorted(pub.splits.items())):
        problem = _switch_problem(name, sw, output_uri, work_uri)
        if problem is not None:
            return f"its split {i + 1} of {len(pub.splits)}: {problem}"
    return None


def _switch_problem(name: str, sw: SplitSwitch, output_uri: str, work_uri: str) -> str | None:
    """:func:`journal_problem` of one split's entry."""
    if not isinstance(name, str) or not _SPLIT_NAME.fullmatch(name) or ".." in name:
        return "its name is not a split name"
    if not isinstance(sw.entry, dict) or entry_shape(sw.entry) is not None:
        return "its manifest entry does not read"
    root = storage.normalize(layout.staging_root(work_uri, name))
    staging = sw.staging if isinstance(sw.staging, str) else ""
    if storage.normalize(staging) != staging or storage.dirname(staging) != root:
        return f"its staging folder is not one in {root}"
    if not isinstance(sw.shards, list) or not isinstance(sw.stale, list):
        return "its shards or stale files are not lists"
    for i, shard in enumerate(sw.shards):
        path = shard.get("path") if isinstance(shard, dict) else None
        if not isinstance(path, str) or not _shard_in(output_uri, path):
            return f"its shard {i} is not a shard name in {output_uri}"
        if shard.get("staged") != storage.join(staging, storage.basename(path)):
            return f"its shard {i} is not staged in its staging folder"
        if not isinstance(shard.get("num_bytes"), int) or isinstance(shard["num_bytes"], bool):
            return f"its shard {i}'s num_bytes is not a whole number"
    for i, old in enumerate(sw.stale):
        if not _shard_in(output_uri, old.get("path") if isinstance(old, dict) else None):
            return f"its stale file {i} is not a shard name in {output_uri}"
    return None


def _shard_in(output_uri: str, path: Any) -> bool:
    """Is ``path`` a shard name directly in ``output_uri``, written exactly as the
    product writes one (no ``.``/``..`` steps a link could redirect)?"""
    return (
        isinstance(path, str)
        and inside(output_uri, path)
        and path == storage.join(output_uri, storage.basename(path))
    )


def recover(
    output_uri: str,
    fence: Fence | None = None,
    *,
    rebuilding: frozenset[str] = frozenset(),
    manifest_uri: str | None = None,
    work_uri: str | None = None,
) -> list[str]:
    """Finish a publication that was interrupted (its journal is still there):
    place what was not placed, commit the manifest, clean up. Returns the
    splits it published (empty when there was nothing to do). Raises
    UnfinishedSplits naming every split it could not finish, unless this run
    rebuilds each of them (``rebuilding``): then their journal entries stay
    until this run's own publication replaces them, and it says so.

    ``manifest_uri`` and ``work_uri``: the run's (default: the output folder's
    defaults). JournalRefused, touching nothing, if the journal does not read
    or names other places (:func:`journal_problem`)."""
    uri = layout.journal_uri(output_uri)
    d = read_json(uri)
    if d is None:
        return []
    manifest_uri = manifest_uri or storage.join(output_uri, MANIFEST_NAME)
    work_uri = work_uri or layout.work_default(output_uri)
    problem = journal_problem(d, output_uri, manifest_uri, work_uri)
    if problem is not None:
        raise JournalRefused(uri, problem)
    pub = Publication.from_dict(d)
    todo = {k: v for k, v in pub.splits.items() if not v.lost}
    kept = {k: v for k, v in pub.splits.items() if v.lost}
    pub = Publication(
        pub.run_id,
        pub.started_at,
        pub.manifest_uri,
        pub.output_uri,
        pub.work_uri,
        todo,
        pub.source,
        pub.provenance,
        kept,
    )
    if todo:
        log.warning(
            "finishing the publication of %s that run %s started at %s and did not finish",
            ", ".join(sorted(todo)),
            pub.run_id,
            pub.started_at,
        )
    try:
        _finish(pub, fence)
    except UnfinishedSplits as err:
        if set(err.splits) <= set(rebuilding):
            log.error("%s This run rebuilds them.", err)
        else:
            raise
    return sorted(todo)


__all__ = [
    "JournalRefused",
    "Publication",
    "PublicationError",
    "SplitSwitch",
    "UnfinishedSplits",
    "check_staged",
    "execute",
    "prepare",
    "recover",
    "switch_split",
]
