"""What the product owns in an output folder: only what its own records say it wrote.

The records are the manifest (every published split's shards, with their size
and CRC32C, and locally the modification time their rename kept), the
journal of a publication in progress (the shards it places and the files it
replaces), and ``_ssl_splits/tfds.json`` (the TFDS metadata files it wrote,
with their versions). A file under a name the product would write is *ours*
only if a record names its path (a published shard that was damaged since is
still the product's to repair; the TFDS record names its files relative to the
output folder, so a folder copied elsewhere keeps them) and that path is a
shard name or a TFDS metadata file of the output folder itself; anything
else under such a name is *foreign*: the product never deletes, replaces or
overwrites it. :func:`foreign_files` lists them before any build,
so that a run stops before it has done anything (``tasks.plan``); the commit
checks each destination again when it publishes (``beam_jobs.publishing.commit``).

Everything here reads listings and small documents only, never a shard.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable

from beam_jobs import layout, storage
from beam_jobs.core import Manifest
from beam_jobs.source.tfds_meta import DATASET_INFO_FILE, FEATURES_FILE, LABEL_NAMES_FILE

TFDS_FILES = (FEATURES_FILE, DATASET_INFO_FILE, LABEL_NAMES_FILE)
MAX_RECORD_BYTES = 1 << 20


try:  # fail the task at once: retrying cannot help while the files are there
    from airflow.sdk.exceptions import AirflowFailException as _Base
except ImportError:  # pragma: no cover - used without Airflow
    _Base = RuntimeError  # type: ignore[misc,assignment]


class ForeignFiles(_Base):
    """Files the product did not write sit under names it would write."""

    def __init__(
        self, output_uri: str, paths: list[str], why: str = "", done: str = "built, deleted"
    ) -> None:
        shown = "\n".join(f"  {p}" for p in paths[:50])
        more = f"\n  ... and {len(paths) - 50} more" if len(paths) > 50 else ""
        super().__init__(
            f"{len(paths)} file(s) in {output_uri} sit under names this run would write, and "
            f"the product's records (its manifest, journal, TFDS record) do not say it wrote "
            f"them{why}:\n{shown}{more}\nNothing was {done} or replaced. Move these "
            "files elsewhere (or delete them yourself if they are yours to delete), or choose "
            "another output_uri; then trigger the DAG again."
        )
        self.paths = paths


class JournalRefused(_Base):
    """The output folder's publication journal cannot be acted on: it no longer
    reads as the product wrote it, or it names places this run does not write
    (``beam_jobs.publishing.commit.journal_problem``)."""

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(
            f"the publication journal {uri} cannot be acted on: {problem}. It is this "
            "product's record of a publication an earlier run started and did not finish. "
            "Nothing was placed, replaced or deleted. If an earlier run used another "
            "manifest_uri or work_uri, trigger the DAG with those to finish it; if the "
            "journal was edited, restore it, or move it away to give that publication up "
            "(the next run then names any of its files that are left as not the product's)."
        )


PATH, IDENTITY, VERSION = "path", "identity", "version"


@dataclass(frozen=True)
class Recorded:
    """One file as a record describes it, and how much of it must still hold
    for the file to be the product's (``mode``):

    * ``path``: a shard the manifest published: the product's by name (one
      damaged since is the product's to repair);
    * ``identity``: a file the product wrote and has not published yet (a
      journal's placed shard, a TFDS metadata file): its size, and its CRC32C
      on GCS or modification time locally, must still be the ones recorded;
    * ``version``: a file a journal found and will replace or remove: exactly
      the version it saw.
    """

    path: str
    num_bytes: int
    crc32c: str | None = None
    mtime_ns: int | None = None
    version: str | None = None
    mode: str = PATH


def matches(info: storage.FileInfo | None, rec: Recorded) -> bool:
    """Does the record ``rec`` make the file ``info`` the product's?"""
    if info is None or info.path != rec.path:
        return False
    if rec.mode == VERSION:
        return rec.version is not None and info.version == rec.version
    if rec.mode == IDENTITY:
        if info.size != rec.num_bytes:
            return False
        if info.crc32c is not None:
            return info.crc32c == rec.crc32c
        return rec.mtime_ns is not None and info.mtime_ns == rec.mtime_ns
    return True


def inside(output_uri: str, path: str) -> bool:
    """Is ``path`` a shard name directly inside ``output_uri``? (A record naming
    any other path gives the product no right to it.)"""
    folder, _, name = path.rpartition("/")
    return (
        storage.normalize(folder) == storage.normalize(output_uri)
        and layout.parse_shard_name(name) is not None
    )


def _shard_record(s: Any, mode: str) -> Recorded | None:
    if not isinstance(s, dict):
        return None
    try:
        return Recorded(
            str(s["path"]),
            int(s["num_bytes"]),
            s.get("crc32c"),
            s.get("mtime_ns"),
            s.get("version"),
            mode,
        )
    except (KeyError, TypeError, ValueError):
        return None


def manifest_records(manifest: Any) -> list[Recorded]:
    """Every shard a manifest says the product published (by path)."""
    out = []
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    for entry in splits.values() if isinstance(splits, dict) else []:
        shards = entry.get("shards") if isinstance(entry, dict) else None
        for s in shards if isinstance(shards, list) else []:
            rec = _shard_record(s, PATH)
            if rec is not None:
                out.append(rec)
    return out


def journal_records(journal: dict[str, Any] | None) -> list[Recorded]:
    """Every file a journal names: the shards it places (as staged and
    verified: size and CRC32C or modification time) and the published files
    it replaces or removes (exactly the version it saw)."""
    out = []
    splits = (journal or {}).get("splits")
    for sw in splits.values() if isinstance(splits, dict) else []:
        if not isinstance(sw, dict):
            continue
        for s in sw.get("shards") or []:
            rec = _shard_record(s, IDENTITY)
            if rec is not None:
                out.append(rec)
            old = s.get("replaces") if isinstance(s, dict) else None
            if isinstance(old, dict):
                rec = _shard_record({**old, "path": s.get("path")}, VERSION)
                if rec is not None:
                    out.append(rec)
        for old in sw.get("stale") or []:
            rec = _shard_record(old, VERSION)
            if rec is not None:
                out.append(rec)
    return out


def read_json(uri: str) -> dict[str, Any] | None:
    """A small JSON document of the product's own, or None when there is none
    (or it is not a JSON object)."""
    try:
        data, _ = storage.read_versioned(uri, MAX_RECORD_BYTES)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def tfds_files(output_uri: str) -> list[storage.FileInfo]:
    """The TFDS metadata files in ``output_uri``, each with its CRC32C (small
    files: read locally, from metadata on GCS), so that a record matches them
    wherever the folder was copied."""
    out = []
    for name in TFDS_FILES:
        info = storage.stat(storage.join(output_uri, name))
        if info is not None:
            out.append(dataclasses.replace(info, crc32c=storage.file_crc32c(info.path)))
    return out


def foreign_tfds(output_uri: str) -> list[str]:
    """The TFDS metadata files in ``output_uri`` the product did not write."""
    return unowned(tfds_files(output_uri), tfds_records(output_uri))


def tfds_records(output_uri: str) -> list[Recorded]:
    """The TFDS metadata files the product wrote into ``output_uri``."""
    doc = read_json(layout.tfds_record_uri(output_uri)) or {}
    out = []
    files = doc.get("files")
    for name, v in files.items() if isinstance(files, dict) else []:
        if name in TFDS_FILES:
            rec = _shard_record({**v, "path": storage.join(output_uri, name)}, IDENTITY)
            if rec is not None:
                out.append(rec)
    return out


def record_tfds(output_uri: str, uris: Iterable[str]) -> None:
    """Record the TFDS metadata files just written (by name in the output folder)."""
    files = {}
    for uri in uris:
        info = storage.stat(uri)
        if info is not None and storage.basename(uri) in TFDS_FILES:
            files[storage.basename(uri)] = {
                "num_bytes": info.size,
                "crc32c": storage.file_crc32c(uri),  # small files: the same on every backend
            }
    storage.write_text(
        layout.tfds_record_uri(output_uri),
        json.dumps({"files": files}, indent=1) + "\n",
        "application/json",
    )


def is_our_manifest(doc: Manifest | Any, output_uri: str) -> bool:
    """A manifest of this product for this output folder: its schema version,
    this folder as its ``output_uri``, and splits shaped as it writes them.
    ``doc``: a Manifest, or whatever JSON document is at the manifest's name."""
    if isinstance(doc, Manifest):
        doc = doc.to_dict()
    if not isinstance(doc, dict) or "schema_version" not in doc:
        return False
    splits = doc.get("splits")
    if not isinstance(splits, dict) or not isinstance(doc.get("output_uri"), str):
        return False
    if storage.normalize(doc["output_uri"]) != storage.normalize(output_uri):
        return False
    return all(
        isinstance(e, dict)
        and isinstance(e.get("shards"), list)
        and all(isinstance(s, dict) for s in e["shards"])
        for e in splits.values()
    )


def product_records(
    output_uri: str, manifest: Any, journal: dict[str, Any] | None
) -> list[Recorded]:
    """The product's records of files directly in ``output_uri``: the shards of
    its manifest (only a manifest of this product for this folder vouches) and
    of its journal."""
    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()
    published = manifest_records(manifest) if is_our_manifest(manifest, output_uri) else []
    return [r for r in published + journal_records(journal) if inside(output_uri, r.path)]


def unowned(files: Iterable[storage.FileInfo], records: Iterable[Recorded]) -> list[str]:
    """The files no record describes as they are."""
    by_path: dict[str, list[Recorded]] = {}
    for rec in records:
        by_path.setdefault(rec.path, []).append(rec)
    return sorted(f.path for f in files if not any(matches(f, r) for r in by_path.get(f.path, [])))


def foreign_files(
    *,
    output_uri: str,
    manifest_uri: str,
    prefixes: Iterable[str],
    manifest: Any,
    destinations: Iterable[str] = (),
    tfds: bool = True,
) -> list[str]:
    """Files under names a run would write for splits with these file
    ``prefixes`` (every shard count: a rebuild removes the old count's files),
    anything at all (a folder, a link) at its exact ``destinations``, the TFDS
    metadata files (``tfds``) and the manifest, that the product's records do
    not say it wrote. ``manifest``: what is at ``manifest_uri`` (None: nothing
    readable); one that is not this product's manifest of this folder is
    foreign itself and vouches for nothing. Listings and small documents only."""
    records = product_records(output_uri, manifest, read_json(layout.journal_uri(output_uri)))
    found: list[str] = []
    files: set[str] = set()
    for prefix in sorted(set(prefixes)):
        listed = layout.split_files(output_uri, prefix)  # regular files only
        files |= {f.path for f in listed}
        found += unowned(listed, records)
    for path in destinations:
        if path not in files and storage.occupied(path):
            found.append(path)  # not a regular file: a folder, a (dangling) link
    if tfds:
        found += foreign_tfds(output_uri)
    if not is_our_manifest(manifest, output_uri) and storage.occupied(manifest_uri):
        found.append(manifest_uri)
    return sorted(set(found))


def check_no_foreign(**kw: Any) -> None:
    """Raise ForeignFiles naming every foreign file (:func:`foreign_files`'s arguments)."""
    found = foreign_files(**kw)
    if found:
        raise ForeignFiles(kw["output_uri"], found)
