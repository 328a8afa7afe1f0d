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
checks each destination again when it publishes (``ssl_splits.commit``).

Everything here reads listings and small documents only, never a shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from beam_jobs import layout, storage
from beam_jobs.tfds_meta import DATASET_INFO_FILE, FEATURES_FILE, LABEL_NAMES_FILE

TFDS_FILES = (FEATURES_FILE, DATASET_INFO_FILE, LABEL_NAMES_FILE)
MAX_RECORD_BYTES = 1 << 20


class ForeignFiles(RuntimeError):
    """Files the product did not write sit under names it would write."""

    def __init__(self, output_uri: str, paths: list[str], why: str = "") -> None:
        shown = "\n".join(f"  {p}" for p in paths[:50])
        more = f"\n  ... and {len(paths) - 50} more" if len(paths) > 50 else ""
        super().__init__(
            f"{len(paths)} file(s) in {output_uri} sit under names this run would write, and "
            f"the product's records (its manifest, journal, TFDS record) do not say it wrote "
            f"them{why}:\n{shown}{more}\nNothing was built, deleted or replaced. Move these "
            "files elsewhere (or delete them yourself if they are yours to delete), or choose "
            "another output_uri; then trigger the DAG again."
        )
        self.paths = paths


@dataclass(frozen=True)
class Recorded:
    """One file as a record describes it."""

    path: str
    num_bytes: int
    crc32c: str | None = None
    mtime_ns: int | None = None
    version: str | None = None  # for TFDS files: the exact version written


def matches(info: storage.FileInfo | None, rec: Recorded) -> bool:
    """Does the record ``rec`` make ``info`` the product's? Same path, and the
    exact version where the record has one."""
    if info is None or info.path != rec.path:
        return False
    return rec.version is None or info.version == rec.version


def inside(output_uri: str, path: str) -> bool:
    """Is ``path`` a shard name directly inside ``output_uri``? (A record naming
    any other path gives the product no right to it.)"""
    folder, _, name = path.rpartition("/")
    return (
        storage.normalize(folder) == storage.normalize(output_uri)
        and layout.parse_shard_name(name) is not None
    )


def _shard_record(s: dict[str, Any]) -> Recorded | None:
    try:
        return Recorded(str(s["path"]), int(s["num_bytes"]), s.get("crc32c"), s.get("mtime_ns"))
    except (KeyError, TypeError, ValueError):
        return None


def manifest_records(manifest: dict[str, Any] | None) -> list[Recorded]:
    """Every shard a manifest says the product published."""
    out = []
    for entry in ((manifest or {}).get("splits") or {}).values():
        for s in (entry or {}).get("shards") or []:
            rec = _shard_record(s) if isinstance(s, dict) else None
            if rec is not None:
                out.append(rec)
    return out


def journal_records(journal: dict[str, Any] | None) -> list[Recorded]:
    """Every file a journal names: the shards it places (as staged, verified)
    and the published files it replaces or removes (as they were)."""
    out = []
    for sw in ((journal or {}).get("splits") or {}).values():
        for s in sw.get("shards") or []:
            rec = _shard_record(s)
            if rec is not None:
                out.append(rec)
            old = s.get("replaces")
            if isinstance(old, dict):
                rec = _shard_record({"path": s.get("path"), **old})
                if rec is not None:
                    out.append(rec)
        for old in sw.get("stale") or []:
            if isinstance(old, dict):
                rec = _shard_record(old)
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


def tfds_records(output_uri: str) -> list[Recorded]:
    """The TFDS metadata files the product wrote into ``output_uri``."""
    doc = read_json(layout.tfds_record_uri(output_uri)) or {}
    out = []
    for name, v in (doc.get("files") or {}).items():
        if name in TFDS_FILES and isinstance(v, dict):
            out.append(Recorded(storage.join(output_uri, name), int(v.get("num_bytes") or 0)))
    return out


def record_tfds(output_uri: str, uris: Iterable[str]) -> None:
    """Record the TFDS metadata files just written (by name in the output folder)."""
    files = {}
    for uri in uris:
        info = storage.stat(uri)
        if info is not None and storage.basename(uri) in TFDS_FILES:
            files[storage.basename(uri)] = {"version": info.version, "num_bytes": info.size}
    storage.write_text(
        layout.tfds_record_uri(output_uri),
        json.dumps({"files": files}, indent=1) + "\n",
        "application/json",
    )


def is_our_manifest(doc: dict[str, Any] | None, output_uri: str) -> bool:
    """A manifest of this product for this output folder."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("splits"), dict)
        and "schema_version" in doc
        and storage.normalize(str(doc.get("output_uri") or output_uri))
        == storage.normalize(output_uri)
    )


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
    manifest: dict[str, Any] | None,
    tfds: bool = True,
) -> list[str]:
    """Files under names a run would write for splits with these file
    ``prefixes`` (every shard count: a rebuild removes the old count's files),
    the TFDS metadata files (``tfds``) and the manifest, that the product's
    records do not say it wrote. Listings and small documents only."""
    journal = read_json(layout.journal_uri(output_uri))
    records = [
        r
        for r in manifest_records(manifest) + journal_records(journal)
        if inside(output_uri, r.path)
    ]
    found: list[str] = []
    for prefix in sorted(set(prefixes)):
        found += unowned(layout.split_files(output_uri, prefix), records)
    if tfds:
        infos = [storage.stat(storage.join(output_uri, name)) for name in TFDS_FILES]
        found += unowned([i for i in infos if i is not None], tfds_records(output_uri))
    if manifest is None and storage.exists(manifest_uri):
        found.append(manifest_uri)
    elif manifest is not None and not is_our_manifest(manifest, output_uri):
        found.append(manifest_uri)
    return sorted(set(found))


def check_no_foreign(
    *,
    output_uri: str,
    manifest_uri: str,
    prefixes: Iterable[str],
    manifest: dict[str, Any] | None,
    tfds: bool = True,
) -> None:
    """Raise ForeignFiles naming every foreign file (see :func:`foreign_files`)."""
    found = foreign_files(
        output_uri=output_uri,
        manifest_uri=manifest_uri,
        prefixes=prefixes,
        manifest=manifest,
        tfds=tfds,
    )
    if found:
        raise ForeignFiles(output_uri, found)
