"""Build or skip: the rerun decision for one split, from its published manifest entry.

A pure function of plain values (no storage, no Airflow): the plan task
(``ssl_splits.tasks.plan``) calls it per split with the entry the manifest
holds for it, and passes the one check that needs storage (do the published
files still match the entry?) as ``file_problems``, which is only called when
everything else says the split is up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

BUILD: Literal["build"] = "build"
SKIP: Literal["skip"] = "skip"


@dataclass(frozen=True)
class Decision:
    """What the plan task does with a split, and why (the spec's ``action`` and ``reason``)."""

    action: Literal["build", "skip"]
    reason: str


def rerun_decision(
    entry: Mapping[str, Any] | None,
    *,
    plan_sha256: str | None,
    source_fingerprint: str | None,
    force: bool,
    num_shards: int | None = None,
    file_problems: Callable[[], Sequence[str]] = lambda: (),
) -> Decision:
    """Build or skip one split.

    ``entry``: the split's published manifest entry (None: not published).
    ``plan_sha256``/``num_shards``: this run's plan of it (None for the
    validation copy, which has no plan). ``source_fingerprint``: the source
    it is made from now. ``file_problems``: how the published files differ
    from ``entry`` (storage metadata), asked last.
    """
    if force:
        return Decision(BUILD, "force is set")
    if entry is None:
        return Decision(BUILD, "not in the manifest yet")
    if plan_sha256 is not None and (entry.get("plan") or {}).get("sha256") != plan_sha256:
        return Decision(BUILD, "its plan changed")
    if entry.get("source_fingerprint") != source_fingerprint:
        return Decision(BUILD, "the source changed")
    if num_shards is not None and entry.get("num_shards") != num_shards:
        return Decision(
            BUILD,
            f"its shard count changed ({entry.get('num_shards')} published, {num_shards} planned)",
        )
    problems = file_problems()
    if problems:
        return Decision(BUILD, f"published files do not match the manifest: {problems[0]}")
    return Decision(SKIP, "up to date: its verified files already match this plan and source")
