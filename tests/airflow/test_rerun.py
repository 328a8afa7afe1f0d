"""The rerun decision (``ssl_splits.rerun``): build or skip a split from its
published manifest entry, as a pure function of plain values."""

from __future__ import annotations

import pytest
from ssl_splits.rerun import Decision, rerun_decision

PLAN = "a" * 64
SOURCE = "f" * 64


def published(plan: str = PLAN, source: str = SOURCE, num_shards: int = 3) -> dict:
    """A manifest entry as publish_manifest writes it (the fields the decision reads)."""
    return {
        "kind": "labelled",
        "num_shards": num_shards,
        "shards": [
            {"path": f"/out/train3.1-{i:05d}-of-{num_shards:05d}"} for i in range(num_shards)
        ],
        "plan": {"uri": "/out/_work/plans/train3.1.csv", "sha256": plan},
        "source_fingerprint": source,
    }


def no_problems() -> list[str]:
    return []


@pytest.mark.parametrize(
    "entry, plan, source, shards, force, action, reason",
    [
        pytest.param(
            None, PLAN, SOURCE, 3, False, "build", "not in the manifest yet", id="nothing_published"
        ),
        pytest.param(
            published(), PLAN, SOURCE, 3, False, "skip", "up to date", id="same_plan_published"
        ),
        pytest.param(
            published(), "b" * 64, SOURCE, 3, False, "build", "its plan changed", id="plan_changed"
        ),
        pytest.param(
            published(),
            PLAN,
            "e" * 64,
            3,
            False,
            "build",
            "the source changed",
            id="source_changed",
        ),
        pytest.param(
            published(num_shards=3),
            PLAN,
            SOURCE,
            4,
            False,
            "build",
            "its shard count changed (3 published, 4 planned)",
            id="shard_count_changed",
        ),
        pytest.param(published(), PLAN, SOURCE, 3, True, "build", "force is set", id="force"),
        pytest.param(None, PLAN, SOURCE, 3, True, "build", "force is set", id="force_unpublished"),
        # The validation copy: no plan, no planned shard count; its source decides.
        pytest.param(
            published(plan="x"),
            None,
            SOURCE,
            None,
            False,
            "skip",
            "up to date",
            id="validation_unchanged",
        ),
        pytest.param(
            published(),
            None,
            "e" * 64,
            None,
            False,
            "build",
            "the source changed",
            id="validation_source_changed",
        ),
    ],
)
def test_rerun_decision(entry, plan, source, shards, force, action, reason):
    d = rerun_decision(
        entry,
        plan_sha256=plan,
        source_fingerprint=source,
        force=force,
        num_shards=shards,
        file_problems=no_problems,
    )
    assert isinstance(d, Decision)
    assert d.action == action and reason in d.reason, d


def test_files_that_differ_from_the_manifest_rebuild_naming_the_file():
    d = rerun_decision(
        published(),
        plan_sha256=PLAN,
        source_fingerprint=SOURCE,
        force=False,
        num_shards=3,
        file_problems=lambda: ["missing shard /out/train3.1-00001-of-00003", "another"],
    )
    assert d == Decision(
        "build",
        "published files do not match the manifest: missing shard /out/train3.1-00001-of-00003",
    )


@pytest.mark.parametrize(
    "entry, plan, source, force",
    [
        (None, PLAN, SOURCE, False),
        (published(), PLAN, SOURCE, True),
        (published(), "b" * 64, SOURCE, False),
        (published(), PLAN, "e" * 64, False),
    ],
)
def test_storage_is_asked_only_when_the_metadata_says_up_to_date(entry, plan, source, force):
    def fail() -> list[str]:
        raise AssertionError("the published files were checked for a split that is rebuilt")

    assert (
        rerun_decision(
            entry, plan_sha256=plan, source_fingerprint=source, force=force, file_problems=fail
        ).action
        == "build"
    )
