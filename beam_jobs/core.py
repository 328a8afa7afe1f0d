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
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from beam_jobs.layout import COMMON

VALIDATION = "validation"  # the kind (and split name) of the copied validation set


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
        cls, summary: dict[str, Any], *, action: str, reason: str, catalog_dir: str, layout: str
    ) -> SplitSpec:
        """A planned split's spec, from its plan summary (``plan.plan_summary``)."""
        return cls(
            split=summary["split"],
            kind=summary["kind"],
            action=action,
            reason=reason,
            plan_uri=summary["plan_uri"],
            plan_sha256=summary["plan_sha256"],
            catalog_dir=catalog_dir,
            num_examples=summary["num_examples"],
            num_shards=summary["num_shards"],
            seed=summary["seed"],
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
