"""What flows between the DAG's tasks and the Beam jobs, as frozen dataclasses.

Each has one ``to_dict`` (the JSON it travels as: an XCom, a sidecar file, a
PCollection element) and one ``from_dict``; the dicts are the ones earlier
versions wrote, key for key and in the same order, so a run in flight across
an upgrade reads what the previous version wrote. Both sides import this
module: the Airflow side (``ssl_splits``) and the jobs Beam workers run.

* :class:`SplitSpec`: the plan task's decision for one split, handed to its
  mapped build and verify tasks and to ``publish_manifest`` (an XCom).
* :class:`ShardStats`: one staged shard, as the build's DoFns emit it and as
  its sidecar ``shard-NNNNN.json`` in the staging folder keeps it.
* :class:`SourceDescription`: the source as ``check_params`` found it (an XCom).
* :class:`CatalogReport`: the validation job's ``report.json`` beside the catalog.
* :class:`PlanSummary`: one written plan (``{plan}.json`` beside the plan file).
* :class:`BuildStats`: a staged split, the build's ``stats/{split}.json``.
* :class:`VerifyReport`: the verifier's verdict, ``verify/{split}.json``.
* :class:`Manifest`: the manifest document; its parts :class:`SplitEntry`
  (with :class:`ManifestShard`, :class:`PlanRef`, :class:`VerificationRef`,
  :class:`BuildProvenance`), :class:`SourceSection` and
  :class:`PublicationProvenance`.
* :class:`PublishResult`: what ``publish_manifest`` returns (an XCom).
* :class:`SplitSwitch` and :class:`Publication`: the publication journal
  (``_ssl_splits/publishing.json``, ``beam_jobs.publishing.commit``).
* :class:`Lease` and :class:`LockHolder`: the output folder's lock, as the
  run holds it (an XCom) and as its lock file keeps it
  (``beam_jobs.publishing.lock``).

Documents read from storage may have been written by older versions (or be
hand-made in tests) and lack optional keys: their ``from_dict`` takes what is
there and leaves the rest at its default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from beam_jobs.layout import COMMON

VALIDATION = "validation"  # the kind (and split name) of the copied validation set

_T = TypeVar("_T")


def _known(cls: type[_T], d: dict[str, Any], **override: Any) -> _T:
    """``cls`` from the keys of ``d`` that are its fields (absent ones take their
    defaults), with ``override`` for the fields converted by the caller."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{**{k: v for k, v in d.items() if k in names}, **override})


def _without_none(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``d`` without those of ``keys`` whose value is None (keys written only when known)."""
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


@dataclass(frozen=True)
class SplitSpec:
    """One split of a run, as the plan task decided it (``ssl_splits.tasks.plan``).

    ``action`` is ``build`` or ``skip`` (``reason`` says why:
    ``ssl_splits.rerun``). A planned split (labelled, the reshuffle, a name
    list) has its plan; the validation copy has none (``kind`` "validation").
    """

    split: str
    kind: str  # supervised | unsupervised (beam_jobs.planning.algorithm) | validation
    action: str
    reason: str
    plan_uri: str | None
    plan_sha256: str | None
    catalog_dir: str
    num_examples: int | None
    num_shards: int | None
    seed: int | None
    layout: str = COMMON  # the source's layout: it names the split's files

    @classmethod
    def planned(
        cls, summary: PlanSummary, *, action: str, reason: str, catalog_dir: str, layout: str
    ) -> SplitSpec:
        """A planned split's spec, from its plan summary (``plans.plan_summary``)."""
        return cls(
            split=summary.split,
            kind=summary.kind,
            action=action,
            reason=reason,
            plan_uri=summary.plan_uri,
            plan_sha256=summary.plan_sha256,
            catalog_dir=catalog_dir,
            num_examples=summary.num_examples,
            num_shards=summary.num_shards,
            seed=summary.seed,
            layout=layout,
        )

    @classmethod
    def validation(cls, *, action: str, reason: str, catalog_dir: str, layout: str) -> SplitSpec:
        """The validation copy's spec: copied whole from the source, no plan."""
        return cls(
            split=VALIDATION,
            kind=VALIDATION,
            action=action,
            reason=reason,
            plan_uri=None,
            plan_sha256=None,
            catalog_dir=catalog_dir,
            num_examples=None,
            num_shards=None,
            seed=None,
            layout=layout,
        )

    def rebuilt(self, reason: str) -> SplitSpec:
        """This spec, built whatever its decision was (``reason`` says why)."""
        return dataclasses.replace(self, action="build", reason=reason)

    @property
    def is_copy(self) -> bool:
        """The validation set: copied from the source, not built from a plan."""
        return self.kind == VALIDATION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # the fields' order is the XCom's key order

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitSpec:
        return cls(**d)


@dataclass(frozen=True)
class ShardStats:
    """One shard a build staged: where it is staged and will be published,
    what it holds, and what reading its records cost.

    A shard built from a plan records its first and last record's file name;
    a copied one (the validation set) the source file it copies. ``reused``:
    an earlier attempt staged it (this one read nothing for it); never in a
    sidecar.
    """

    shard: int
    path: str  # the published name it takes once verified
    staged: str
    num_records: int
    num_bytes: int
    crc32c: str  # of the whole file, 8 hex digits
    bytes_read: int = 0  # sidecars of old builds may lack it
    first: str | None = None
    last: str | None = None
    source: str | None = None
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "shard": self.shard,
            "path": self.path,
            "staged": self.staged,
            "num_records": self.num_records,
            "num_bytes": self.num_bytes,
            "crc32c": self.crc32c,
            "bytes_read": self.bytes_read,
        }
        if self.source is None:
            d.update(first=self.first, last=self.last)
        else:
            d["source"] = self.source
        if self.reused:
            d["reused"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardStats:
        return cls(**d)

    def sidecar(self) -> dict[str, Any]:
        """What the staging folder's ``shard-NNNNN.json`` keeps (``reused`` is per attempt)."""
        return dataclasses.replace(self, reused=False).to_dict()


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class SourceDescription:
    """The source as storage describes it, no data read (``check_params``'s XCom):
    its fingerprint, its catalog folder, its validation files, and whether a
    valid catalog of exactly this source exists (``action`` "cached") or the
    validation job must run (``action`` "run"; ``reason`` says why)."""

    source_uri: str
    fingerprint: str
    catalog_dir: str
    layout: str
    num_train_files: int
    action: str
    reason: str
    validation_files: int
    validation_fingerprint: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # the fields' order is the XCom's key order

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceDescription:
        return _known(cls, d)


@dataclass(frozen=True)
class CatalogReport:
    """The validation job's verdict on a source (``report.json`` beside its catalog).

    ``shards`` lists the source files with their identities (``path``,
    ``size``, ``crc32c``, ``generation``, ``mtime_ns``) and what validation
    found in each (``records``, ``bad_records``). ``seconds`` and ``metrics``
    are the job's own measurements, not in the file it writes."""

    ok: bool
    source_uri: str
    source_fingerprint: str
    total_records: int
    num_shards: int
    num_classes: int
    layout: str = COMMON  # reports of old versions have none: common
    catalog_uri: str | None = None
    created_at: str | None = None
    code_version: str | None = None
    checks: dict[str, int | None] = field(default_factory=dict)  # label_min, label_max
    bad_records: int | None = None
    total_bytes: int | None = None
    class_histogram: dict[str, int] = field(default_factory=dict)
    synsets: dict[str, str] = field(default_factory=dict)
    shards: list[dict[str, Any]] = field(default_factory=list)
    problems: dict[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    seconds: float | None = None
    metrics: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema_version": self.schema_version,
            "ok": self.ok,
            "source_uri": self.source_uri,
            "layout": self.layout,
            "source_fingerprint": self.source_fingerprint,
            "catalog_uri": self.catalog_uri,
            "created_at": self.created_at,
            "code_version": self.code_version,
            "checks": self.checks,
            "total_records": self.total_records,
            "bad_records": self.bad_records,
            "total_bytes": self.total_bytes,
            "num_shards": self.num_shards,
            "num_classes": self.num_classes,
            "class_histogram": self.class_histogram,
            "synsets": self.synsets,
            "shards": self.shards,
            "problems": self.problems,
            "seconds": self.seconds,
            "metrics": self.metrics,
        }
        return _without_none(d, "seconds", "metrics")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CatalogReport:
        return _known(cls, d)

    @classmethod
    def from_json(cls, text: str) -> CatalogReport:
        return cls.from_dict(json.loads(text))

    def serves(
        self, fingerprint: str, *, num_classes: int, layout: str, expected_total: int | None
    ) -> bool:
        """Is this a passed validation of exactly this source, with these checks?"""
        label_count = self.checks.get("label_max", 0) - self.checks.get("label_min", 1) + 1  # type: ignore[operator]
        return (
            self.ok
            and self.source_fingerprint == fingerprint
            and label_count == num_classes
            and self.layout == layout
            and expected_total in (None, self.total_records)
        )

    def source_section(self, uri: str, fingerprint: str, report_uri: str) -> SourceSection:
        """The manifest's ``source``: this validated source, read from ``uri``."""
        return SourceSection(
            uri=uri,
            fingerprint=fingerprint,
            layout=self.layout,
            label_range=[self.checks.get("label_min"), self.checks.get("label_max")],
            num_records=self.total_records,
            num_shards=self.num_shards,
            num_classes=self.num_classes,
            num_bytes=self.total_bytes,
            bad_records=self.bad_records,
            validation_report_uri=report_uri,
            catalog_uri=self.catalog_uri,
            files=[SourceFile.of_shard(s) for s in self.shards],
        )


# --------------------------------------------------------------------------- plan, build, verify


@dataclass(frozen=True)
class PlanSummary:
    """One written plan (``beam_jobs.planning.plans.write_plans``), also kept as
    ``{plan}.json`` beside the plan file for ``publish_manifest``."""

    split: str
    kind: str
    seed: int | None
    fraction: str | None  # exact decimal or "n/N"
    sampling: str | None
    num_examples: int
    num_shards: int
    shard_lengths: list[int]
    plan_uri: str
    plan_sha256: str
    plan_source: str  # "computed" or the URI of a published plan file
    class_counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict()) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanSummary:
        return _known(cls, d)

    @classmethod
    def from_json(cls, text: str) -> PlanSummary:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class StagedShard:
    """One shard of a staged split as the build's stats list it."""

    path: str  # the published name it takes once verified
    staged: str
    num_records: int
    num_bytes: int
    crc32c: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StagedShard:
        return _known(cls, d)


# The build job's description of itself, written before its totals (None: not known
# to this build, not written): a planned split names its plan, a copy its source.
_BUILD_META = (
    "job_name",
    "layout",
    "plan_uri",
    "plan_sha256",
    "catalog_dir",
    "source_files",
    "source_uri",
    "copied_from",
    "source_fingerprint",
    "runner",
)


@dataclass(frozen=True)
class BuildStats:
    """A staged split, complete (``{work_uri}/stats/{split}.json``): written last by
    the build (``beam_jobs.building.build.finish``); the verifier checks it and
    ``publish_manifest`` publishes from it. Stats of old builds or tests may
    lack what they did not know."""

    split: str
    staging: str
    file_pattern: str
    shards: list[StagedShard] = field(default_factory=list)
    num_shards: int | None = None
    num_examples: int | None = None
    num_bytes: int | None = None
    bytes_read: int | None = None  # this attempt's (reused shards read nothing now)
    bytes_written: int | None = None
    shards_reused: int | None = None
    built_at: str | None = None
    code_version: str | None = None
    job_name: str | None = None
    layout: str | None = None
    plan_uri: str | None = None
    plan_sha256: str | None = None
    catalog_dir: str | None = None
    source_files: int | None = None
    source_uri: str | None = None  # where a planned split's records were read
    copied_from: str | None = None  # the folder a copied split comes from
    source_fingerprint: str | None = None
    runner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _BUILD_META if getattr(self, k) is not None}
        d.update(
            split=self.split,
            num_shards=self.num_shards,
            num_examples=self.num_examples,
            num_bytes=self.num_bytes,
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
            shards_reused=self.shards_reused,
            staging=self.staging,
            file_pattern=self.file_pattern,
            shards=[s.to_dict() for s in self.shards],
            built_at=self.built_at,
            code_version=self.code_version,
        )
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildStats:
        return _known(cls, d, shards=[StagedShard.from_dict(s) for s in d.get("shards") or []])

    @classmethod
    def from_json(cls, text: str | bytes) -> BuildStats:
        return cls.from_dict(json.loads(text))

    @property
    def read_from(self) -> str | None:
        """Where the build read its records: the source folder or the copied one."""
        return self.source_uri or self.copied_from


@dataclass(frozen=True)
class VerifiedShard:
    """A verified staged object (the verify report's): the manifest entry's
    shard (final path, records, bytes, CRC32C) plus the staged object's
    identity (its generation on GCS, its modification time locally)."""

    path: str
    num_records: int
    num_bytes: int
    crc32c: str
    staged: str | None = None
    generation: int | None = None
    mtime_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), "generation", "mtime_ns")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerifiedShard:
        return _known(cls, d)

    def published(self) -> ManifestShard:
        """The manifest's record of this shard under its final name."""
        return ManifestShard(
            self.path, self.num_records, self.num_bytes, self.crc32c, self.mtime_ns
        )


@dataclass(frozen=True)
class VerifyReport:
    """The verifier's verdict on one staged split (``{work_uri}/verify/{split}.json``).

    ``stats_sha256`` names the build it is about (its stats file, byte for
    byte); ``shards`` the verified objects, none unless ``ok``."""

    split: str
    ok: bool
    mode: str  # exact | deep
    stats_sha256: str
    verified_at: str
    plan_sha256: str | None = None
    findings: list[str] = field(default_factory=list)
    num_findings: int = 0
    num_shards: int | None = None
    num_examples: int | None = None
    stats_uri: str | None = None
    built_at: str | None = None
    seconds: float | None = None
    bytes_read: int | None = None
    metrics: dict[str, int] = field(default_factory=dict)
    shards: list[VerifiedShard] = field(default_factory=list)
    code_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "ok": self.ok,
            "mode": self.mode,
            "findings": self.findings,
            "num_findings": self.num_findings,
            "num_shards": self.num_shards,
            "num_examples": self.num_examples,
            "plan_sha256": self.plan_sha256,
            "stats_uri": self.stats_uri,
            "stats_sha256": self.stats_sha256,
            "built_at": self.built_at,
            "verified_at": self.verified_at,
            "seconds": self.seconds,
            "bytes_read": self.bytes_read,
            "metrics": self.metrics,
            "shards": [s.to_dict() for s in self.shards],
            "code_version": self.code_version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerifyReport:
        return _known(
            cls,
            d,
            shards=[VerifiedShard.from_dict(s) for s in d.get("shards") or []],
            metrics=d.get("metrics") or {},
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> VerifyReport:
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class ManifestShard:
    """One published shard as a manifest entry lists it (``mtime_ns``: locally)."""

    path: str
    num_records: int
    num_bytes: int
    crc32c: str
    mtime_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), "mtime_ns")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManifestShard:
        return _known(cls, d)


@dataclass(frozen=True)
class PlanRef:
    """A planned split's plan, as its manifest entry names it."""

    uri: str | None
    sha256: str | None
    source: str
    algorithm: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanRef:
        return _known(cls, d)


@dataclass(frozen=True)
class VerificationRef:
    """How a published split was verified (its entry's ``verification``)."""

    mode: str
    verified_at: str
    report_uri: str
    stats_sha256: str | None = None
    seconds: float | None = None
    bytes_read: int | None = None
    metrics: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "verified_at": self.verified_at,
            "report_uri": self.report_uri,
            "seconds": self.seconds,
            "bytes_read": self.bytes_read,
            "stats_sha256": self.stats_sha256,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerificationRef:
        return _known(cls, d, metrics=d.get("metrics") or {})


@dataclass(frozen=True)
class BuildProvenance:
    """Who built and published a split, how, and what it cost (its entry's ``provenance``)."""

    code_version: str
    runner: str | None = None
    job_name: str | None = None
    job_id: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    built_at: str | None = None
    published_at: str | None = None
    source_uri: str | None = None
    bytes_read: int | None = None
    bytes_written: int | None = None
    shards_reused: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildProvenance:
        return _known(cls, d)


@dataclass(frozen=True)
class SplitEntry:
    """One split of the manifest (its ``splits[name]``; schema in
    ``beam_jobs.publishing.manifest``). A planned split has its plan (``plan``,
    ``seed``, ``fraction``, ``sampling``, ``class_counts``); the validation
    copy names the folder it was copied from (``copied_from``)."""

    kind: str
    layout: str
    num_examples: int
    num_shards: int
    file_pattern: str
    shards: list[ManifestShard]
    source_fingerprint: str | None
    verification: VerificationRef
    provenance: BuildProvenance
    plan: PlanRef | None = None
    seed: int | None = None
    fraction: str | None = None
    sampling: str | None = None
    class_counts: dict[str, int] | None = None
    copied_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "layout": self.layout}
        if self.plan is not None:
            d.update(seed=self.seed, fraction=self.fraction, sampling=self.sampling)
        d.update(
            num_examples=self.num_examples,
            num_shards=self.num_shards,
            file_pattern=self.file_pattern,
            shards=[s.to_dict() for s in self.shards],
        )
        if self.plan is not None:
            d.update(class_counts=self.class_counts, plan=self.plan.to_dict())
        else:
            d["copied_from"] = self.copied_from
        d.update(
            source_fingerprint=self.source_fingerprint,
            verification=self.verification.to_dict(),
            provenance=self.provenance.to_dict(),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitEntry:
        plan = d.get("plan")
        return _known(
            cls,
            {"layout": COMMON, "source_fingerprint": None, **d},
            shards=[ManifestShard.from_dict(s) for s in d.get("shards") or []],
            verification=VerificationRef.from_dict(d.get("verification") or {}),
            provenance=BuildProvenance.from_dict(d.get("provenance") or {}),
            plan=PlanRef.from_dict(plan) if plan else None,
        )


@dataclass(frozen=True)
class SourceFile:
    """One source file as the manifest's ``source.files`` records it."""

    name: str
    size: int
    crc32c: str | None = None
    generation: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def of_shard(cls, shard: dict[str, Any]) -> SourceFile:
        """From a validation report's shard (full path, its identities)."""
        base = shard["path"].rstrip("/").rsplit("/", 1)[-1]
        return cls(
            base, shard["size"], shard.get("crc32c"), shard.get("generation"), shard.get("mtime_ns")
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceFile:
        return _known(cls, d)


@dataclass(frozen=True)
class SourceSection:
    """The manifest's ``source``: the validated source its splits were built from."""

    uri: str
    fingerprint: str
    layout: str
    label_range: list[int | None]
    num_records: int
    num_shards: int
    num_classes: int
    num_bytes: int | None
    bad_records: int | None
    validation_report_uri: str
    catalog_uri: str | None
    files: list[SourceFile]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # the fields' order is the manifest's key order

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceSection:
        return _known(cls, d, files=[SourceFile.from_dict(f) for f in d.get("files") or []])


@dataclass(frozen=True)
class PublicationProvenance:
    """Who published the manifest last (its top-level ``provenance``)."""

    code_version: str
    dag_id: str | None
    run_id: str | None
    published_at: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PublicationProvenance:
        return _known(cls, d)


@dataclass(frozen=True)
class PublishResult:
    """What ``publish_manifest`` did (its XCom): the splits it changed, the
    manifest's splits now, and the manifest version it wrote (none, and no
    ``generation``, when there was nothing to publish)."""

    manifest_uri: str
    changed: list[str]
    splits: list[str]
    tfds_metadata: list[str]
    version_uri: str | None = None
    generation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "manifest_uri": self.manifest_uri,
            "version_uri": self.version_uri,
            "changed": self.changed,
            "splits": self.splits,
            "generation": self.generation,
            "tfds_metadata": self.tfds_metadata,
        }
        return d if self.version_uri is not None else _without_none(d, "generation")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PublishResult:
        return _known(cls, d)


MANIFEST_SCHEMA_VERSION = 1
# The manifest's top-level keys other than ``splits``, with their JSON types.
_MANIFEST_TYPES: dict[str, tuple[type, str]] = {
    "schema_version": (int, "an integer"),
    "output_uri": (str, "a string"),
    "work_uri": (str, "a string"),
    "source": (dict, "an object"),
    "provenance": (dict, "an object"),
    "updated_at": (str, "a string"),
}


@dataclass(frozen=True)
class Manifest:
    """The manifest document (schema in ``beam_jobs.publishing.manifest``), as
    read or about to be written. Its split entries, ``source`` and
    ``provenance`` stay the JSON they were published as: publishing a rebuild
    of one seed must keep the other splits' entries exactly as the version that
    wrote them (:meth:`entry` reads one as a :class:`SplitEntry`). ``other``:
    top-level keys this version does not write, kept as they are. A key the
    document lacks is None here and absent from its JSON again: whether it is
    the product's manifest (``publishing.ownership.is_our_manifest``) is
    judged on what is there."""

    output_uri: str | None
    splits: dict[str, dict[str, Any]]
    work_uri: str | None = None
    source: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    updated_at: str | None = None
    schema_version: int | None = MANIFEST_SCHEMA_VERSION
    other: dict[str, Any] = field(default_factory=dict)

    def entry(self, split: str) -> SplitEntry | None:
        """The published entry of ``split`` (None: not published)."""
        d = self.splits.get(split)
        return SplitEntry.from_dict(d) if d is not None else None

    @property
    def source_layout(self) -> str:
        """The layout of the source its splits were built from."""
        return str((self.source or {}).get("layout", COMMON))

    @staticmethod
    def shape_problem(d: Any) -> str | None:
        """Why the JSON document ``d`` is not shaped as a manifest (an object
        whose ``splits`` maps names to objects, its other keys of their types),
        naming the key and never quoting a value; None if it is."""
        splits = d.get("splits") if isinstance(d, dict) else None
        if not isinstance(splits, dict):
            return "it has no 'splits' object"
        if not all(isinstance(e, dict) for e in splits.values()):
            return "an entry of its 'splits' is not an object"
        for k, (kind, what) in _MANIFEST_TYPES.items():
            v = d.get(k)
            if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
                return f"its {k!r} is not {what}"
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        keys = ("schema_version", "output_uri", "splits", "work_uri", "source", "provenance")
        for k in (*keys, "updated_at"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return copy.deepcopy({**d, **self.other})

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """ValueError, naming the key (never quoting a value), unless ``d`` is
        shaped as a manifest (:meth:`shape_problem`)."""
        problem = cls.shape_problem(d)
        if problem is not None:
            raise ValueError(problem)
        d = copy.deepcopy(d)
        return cls(
            output_uri=d.get("output_uri"),
            splits=d["splits"],
            work_uri=d.get("work_uri"),
            source=d.get("source"),
            provenance=d.get("provenance"),
            updated_at=d.get("updated_at"),
            schema_version=d.get("schema_version"),
            other={k: v for k, v in d.items() if k != "splits" and k not in _MANIFEST_TYPES},
        )


# --------------------------------------------------------------------------- the journal and the lock


@dataclass(frozen=True)
class SplitSwitch:
    """One split of a publication: its new manifest entry, where each of its
    shards is staged (the staged object's verified identity, and the version of
    the final name it replaces), and the files of the earlier build that go away."""

    split: str
    entry: dict[str, Any]
    shards: list[
        dict[str, Any]
    ]  # {path, staged, num_bytes, crc32c, generation | mtime_ns, replaces}
    staging: str
    stale: list[dict[str, Any]]  # {path, version, num_bytes, crc32c, mtime_ns}
    lost: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "shards": self.shards,
            "staging": self.staging,
            "stale": self.stale,
            "lost": self.lost,
        }

    @classmethod
    def from_dict(cls, split: str, d: dict[str, Any]) -> SplitSwitch:
        stale = [s if isinstance(s, dict) else {"path": s} for s in d.get("stale") or []]
        return cls(split, d["entry"], d["shards"], d["staging"], stale, bool(d.get("lost")))


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
    kept: dict[str, SplitSwitch] = field(default_factory=dict)  # unfinished, from an older journal

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


@dataclass(frozen=True)
class Lease:
    """What a run holds the lock with (the ``acquire_lock`` task's XCom)."""

    uri: str
    output_uri: str
    token: str
    run_id: str
    lease_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "output_uri": self.output_uri,
            "token": self.token,
            "run_id": self.run_id,
            "lease_seconds": self.lease_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lease:
        return cls(d["uri"], d["output_uri"], d["token"], d["run_id"], float(d["lease_seconds"]))


@dataclass(frozen=True)
class LockHolder:
    """The output folder's lock file (``_ssl_splits/lock.json``): who holds it,
    from where, since when and for how long (``beam_jobs.publishing.lock``).
    ``host``, ``boot_id``, ``pid_ns``, ``pid`` and ``pid_started`` let a run on
    the same machine see that an in-process holder (``airflow dags test``) is
    gone. A lock file is read as a dict, whatever it holds (hand-edited,
    truncated): ``beam_jobs.publishing.lock`` reads each key defensively."""

    token: str
    run_id: str
    dag_id: str
    output_uri: str
    host: str
    boot_id: str | None
    pid_ns: str | None
    pid: int
    in_process: bool
    acquired_at: str
    renewed_at: str  # the writer's clock: for people; expiry uses the storage's
    lease_seconds: float
    pid_started: float | None = None  # in-process holders only

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.in_process:
            del d["pid_started"]
        return d


def job_name(*parts: str) -> str:
    """A Dataflow-legal job name: ``[a-z]([-a-z0-9]*[a-z0-9])?``, at most 63 chars."""
    raw = "-".join(p for p in parts if p).lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name or not name[0].isalpha():
        name = "ssl-" + name
    return name[:63].rstrip("-")


# The Beam jobs the DAG launches, by the name the operators and templates use.
JOB_MODULES = {
    "validate": "beam_jobs.source.validate",
    "build": "beam_jobs.building.build",
    "verify": "beam_jobs.verification.verify",
}
