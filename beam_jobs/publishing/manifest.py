"""The manifest: what exists, how it was made, checksums; and a reader for it.

The manifest is one JSON document, published (by the Airflow DAG) only after
every split it describes was verified. It is the single commit point that
training jobs read: files under the output folder without a manifest entry
are not part of the dataset.

Schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "output_uri": "gs://bucket/ssl",
      "updated_at": "2026-11-24T10:00:00+00:00",
      "source": {"uri", "fingerprint", "num_records", "num_shards", "files": [...],
                 "validation_report_uri", "catalog_uri"},
      "splits": {
        "train128116.1": {
          "kind": "supervised" | "unsupervised" | "validation",
          "seed", "fraction", "sampling",
          "num_examples", "num_shards", "file_pattern",
          "shards": [{"path", "num_records", "num_bytes", "crc32c"}],  # crc32c: 8 hex digits
          "class_counts": {"n01440764": 130, ...},
          "plan": {"uri", "sha256", "source", "algorithm"},
          "source_fingerprint": "...",
          "verification": {"mode", "verified_at", "report_uri"},
          "provenance": {"code_version", "runner", "job_name", "job_id",
                         "dag_id", "run_id", "built_at", "published_at"}
        }
      },
      "provenance": {"code_version", "dag_id", "run_id", "published_at"}
    }

In code the document is a ``beam_jobs.core.Manifest`` (:func:`read`, and
:func:`merge` for a publication); :func:`load` gives the JSON itself.

Reading a split from training code::

    from beam_jobs.publishing.manifest import load_split
    import tensorflow as tf

    split = load_split("gs://bucket/ssl/manifest.json", "train128116.1")  # checks the files
    ds = tf.data.TFRecordDataset(split.paths, num_parallel_reads=tf.data.AUTOTUNE)
    assert split.num_examples == 128116
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from beam_jobs import storage
from beam_jobs.core import MANIFEST_SCHEMA_VERSION, Manifest
from beam_jobs.layout import glob_strays, journal_uri, parse_shard_name, split_glob

SCHEMA_VERSION = MANIFEST_SCHEMA_VERSION
MANIFEST_NAME = "manifest.json"


class ManifestError(RuntimeError):
    """The manifest is missing, unreadable, or disagrees with storage."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def merge(
    current: Manifest | None,
    *,
    output_uri: str,
    splits: dict[str, dict[str, Any]],
    source: dict[str, Any] | None,
    provenance: dict[str, Any],
    work_uri: str | None = None,
) -> Manifest:
    """A new manifest: ``current`` with the given split entries replaced.

    Pure (copies what it keeps). Other splits' entries are kept exactly as they
    were, so rebuilding one seed changes only that split's entry (plus the
    top-level ``source``, ``updated_at`` and ``provenance``); ``source`` None
    keeps the current source section.
    """
    base = current or Manifest(output_uri=output_uri, splits={})
    if (base.schema_version or SCHEMA_VERSION) > SCHEMA_VERSION:
        raise ManifestError(
            f"manifest schema_version {base.schema_version} is newer than "
            f"this code's {SCHEMA_VERSION}; upgrade before publishing"
        )
    return Manifest(
        output_uri=output_uri,
        splits=copy.deepcopy(dict(sorted({**base.splits, **splits}.items()))),
        work_uri=work_uri if work_uri is not None else base.work_uri,
        source=copy.deepcopy(source if source is not None else base.source),
        provenance=copy.deepcopy(provenance),
        updated_at=provenance.get("published_at") or now(),
        other=copy.deepcopy(base.other),
    )


def dumps(manifest: Manifest) -> str:
    return json.dumps(manifest.to_dict(), indent=1, sort_keys=False) + "\n"


def load(uri: str) -> dict[str, Any]:
    """Read a manifest (local path or gs://) as the JSON it is: what training
    code reads (:func:`load_split` checks one split against storage).
    ManifestError as :func:`read`."""
    doc = _parse(uri)
    problem = Manifest.shape_problem(doc)
    if problem is not None:
        raise ManifestError(f"{uri} is not a manifest of this product: {problem}")
    return doc


def read(uri: str) -> Manifest:
    """Read a manifest (local path or gs://); ManifestError, naming ``uri`` and
    never quoting it, if it is missing or not a manifest."""
    try:
        return Manifest.from_dict(_parse(uri))
    except ValueError as err:
        raise ManifestError(f"{uri} is not a manifest of this product: {err}") from None


def _parse(uri: str) -> Any:
    """The JSON document at ``uri``; ManifestError if there is none or it is not JSON."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {uri}") from None
    except UnicodeDecodeError as err:
        raise ManifestError(f"{uri} is not UTF-8 text (byte {err.start}): not a manifest") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"{uri} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None


def read_or_none(uri: str) -> Manifest | None:
    """:func:`read`, or None if there is nothing at ``uri``."""
    try:
        return read(uri)
    except ManifestError:
        if storage.exists(uri):
            raise
        return None


@dataclass(frozen=True)
class SplitFiles:
    """A split as training code needs it."""

    name: str
    paths: list[str]
    num_examples: int
    shard_lengths: list[int]
    file_pattern: str
    entry: dict[str, Any]


# What a split's entry must hold to be read, and what its shards must (each key:
# its JSON type); crc32c (GCS) and mtime_ns (local) are checked when present.
_ENTRY_KEYS = {"num_examples": int, "num_shards": int, "file_pattern": str, "shards": list}
_SHARD_KEYS = {"path": str, "num_records": int, "num_bytes": int}
_OPTIONAL_SHARD_KEYS = {"crc32c": str, "mtime_ns": int}
_WHAT = {int: "a whole number >= 0", str: "a string", list: "a list"}


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, kind)


def entry_shape(entry: dict[str, Any]) -> str | None:
    """Why a split's manifest entry cannot be read, naming the key and never
    quoting a value (a manifest may be hand-edited, or not this product's);
    None if it reads."""
    for key, kind in _ENTRY_KEYS.items():
        if not _is(entry.get(key), kind):
            return f"its {key!r} is not {_WHAT[kind]}"
    for i, shard in enumerate(entry["shards"]):
        if not isinstance(shard, dict):
            return f"its shard {i} is not an object"
        for key, kind in _SHARD_KEYS.items():
            if not _is(shard.get(key), kind):
                return f"its shard {i}'s {key!r} is not {_WHAT[kind]}"
        for key, kind in _OPTIONAL_SHARD_KEYS.items():
            if shard.get(key) is not None and not _is(shard[key], kind):
                return f"its shard {i}'s {key!r} is not {_WHAT[kind]}"
    return None


def entry_problems(entry: dict[str, Any]) -> list[str]:
    """What differs between a split's manifest entry and the files under its
    glob, from storage metadata only: missing shards, sizes, CRC32C (GCS
    listings carry it), modification times (local files), and files a
    reader of the glob would take for the split's. An entry that cannot be
    read (:func:`entry_shape`) is a problem of its own."""
    shape = entry_shape(entry)
    if shape is not None:
        return [f"the manifest entry cannot be read: {shape}"]
    shards = entry["shards"]
    if not shards:
        return ["the manifest entry lists no shards"]
    folder = storage.dirname(shards[0]["path"])
    parsed = parse_shard_name(storage.basename(shards[0]["path"]))
    if parsed is None:
        return [f"{shards[0]['path']} is not a shard name"]
    split = parsed[0]
    listed_all = storage.list_files(split_glob(folder, split))
    listed = {f.path: f for f in listed_all}
    problems = []
    for s in shards:
        info = listed.get(s["path"])
        if info is None:
            problems.append(f"missing shard {s['path']}")
        elif info.size != s["num_bytes"]:
            problems.append(f"{s['path']} is {info.size} bytes, the manifest says {s['num_bytes']}")
        elif info.crc32c is not None:
            if info.crc32c != s.get("crc32c"):
                problems.append(
                    f"{s['path']} has CRC32C {info.crc32c}, the manifest says {s.get('crc32c')}"
                )
        elif s.get("mtime_ns") is not None:
            if info.mtime_ns != s["mtime_ns"]:
                problems.append(
                    f"{s['path']} was replaced or modified since it was published "
                    f"(modification time {info.mtime_ns}, the manifest says "
                    f"{s['mtime_ns']})"
                )
    paths = {s["path"] for s in shards}
    for extra in glob_strays(folder, split, [f for f in listed_all if f.path not in paths]):
        problems.append(f"unexpected file {extra} matches the split's glob")
    return problems


def pending_publication(doc: Manifest, manifest_uri: str) -> dict[str, Any] | None:
    """The journal of a publication into this manifest's folder that started
    and did not finish (``beam_jobs.publishing.commit``), if there is one."""
    output = doc.output_uri or storage.dirname(manifest_uri)
    try:
        journal = json.loads(storage.read_text(journal_uri(output)))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return journal if journal.get("manifest_uri") == manifest_uri else None


def load_split(manifest_uri: str, split: str, *, check: bool = True) -> SplitFiles:
    """Shard paths and expected counts of ``split``; with ``check`` (default),
    fail unless every shard exists as the manifest records it (size; CRC32C on
    GCS and modification time locally, from metadata: no data read) and
    nothing else matches the split's glob. A split caught in the middle of
    being replaced (a publication that was interrupted) is refused with a
    message saying so; the next run of the DAG completes it."""
    doc = read(manifest_uri)
    if split not in doc.splits:
        raise ManifestError(
            f"{manifest_uri} has no split {split!r}; it has "
            f"{', '.join(sorted(doc.splits)) or 'none'}"
        )
    entry = doc.splits[split]
    shape = entry_shape(entry)
    if shape is not None:
        raise ManifestError(f"{manifest_uri}: the entry of split {split} cannot be read: {shape}")
    paths = [s["path"] for s in entry["shards"]]
    lengths = [int(s["num_records"]) for s in entry["shards"]]
    if sum(lengths) != entry["num_examples"] or len(paths) != entry["num_shards"]:
        raise ManifestError(
            f"{manifest_uri}: split {split} is inconsistent: "
            f"{len(paths)} shards with {sum(lengths)} records, entry says "
            f"{entry['num_shards']} and {entry['num_examples']}"
        )
    if check:
        problems = entry_problems(entry)
        if problems:
            journal = pending_publication(doc, manifest_uri)
            if journal is not None and split in journal.get("splits", {}):
                raise ManifestError(
                    f"split {split} of {manifest_uri} is being replaced: run "
                    f"{journal.get('run_id')} started publishing a new build of it at "
                    f"{journal.get('started_at')} and did not finish; its files are no longer "
                    f"the ones the manifest describes. The next run of the DAG completes the "
                    f"publication. ({'; '.join(problems[:3])})"
                )
            raise ManifestError(
                f"split {split} of {manifest_uri} does not match storage: "
                + "; ".join(problems[:10])
            )
    return SplitFiles(
        name=split,
        paths=paths,
        num_examples=int(entry["num_examples"]),
        shard_lengths=lengths,
        file_pattern=entry["file_pattern"],
        entry=entry,
    )


def summary_lines(doc: Manifest) -> list[str]:
    """One line per split, for logs and the demo."""
    out = []
    for name, e in doc.splits.items():
        size = sum(s["num_bytes"] for s in e["shards"])
        extra = (
            f"seed {e.get('seed')}, "
            if e.get("kind") == "supervised" and e.get("seed") is not None
            else ""
        )
        out.append(
            f"{name:<22} {e['kind']:<12} {extra}{e['num_examples']:>9,} examples in "
            f"{e['num_shards']:>5} shards, {size / 1e6:,.1f} MB"
        )
    return out
