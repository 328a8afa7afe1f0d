"""The typed contracts between tasks and jobs (``beam_jobs.core``): each
round-trips through its dict, and the dict is the JSON earlier versions wrote
(same keys, same order), so the XComs, sidecars and stats stay compatible."""

from __future__ import annotations

import json

import pytest

from beam_jobs.core import PlanSummary, ShardStats, SplitSpec

SUMMARY = {
    "split": "train128116.3",
    "kind": "supervised",
    "seed": 3,
    "fraction": "0.1",
    "sampling": "stratified",
    "num_examples": 128116,
    "num_shards": 102,
    "shard_lengths": [1256] * 102,
    "plan_uri": "gs://bkt/ssl/_work/plans/p.csv",
    "plan_sha256": "ab" * 32,
    "plan_source": "planned",
    "class_counts": {"n01": 128},
}


def test_split_spec_of_a_plan_is_the_xcom_the_plan_task_wrote():
    spec = SplitSpec.planned(
        PlanSummary.from_dict(SUMMARY),
        action="build",
        reason="its plan changed",
        catalog_dir="gs://bkt/ssl/_work/catalog/5160864c129f5846",
        layout="tfds:imagenet2012",
    )
    # The dict tasks.plan built before the dataclass, key for key, in order.
    assert json.dumps(spec.to_dict()) == json.dumps(
        {
            "split": "train128116.3",
            "kind": "supervised",
            "action": "build",
            "reason": "its plan changed",
            "plan_uri": "gs://bkt/ssl/_work/plans/p.csv",
            "plan_sha256": "ab" * 32,
            "catalog_dir": "gs://bkt/ssl/_work/catalog/5160864c129f5846",
            "num_examples": 128116,
            "num_shards": 102,
            "seed": 3,
            "layout": "tfds:imagenet2012",
        }
    )
    assert SplitSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert not spec.is_copy


def test_split_spec_of_the_validation_copy():
    spec = SplitSpec.validation(
        action="skip", reason="up to date", catalog_dir="/o/_work/c", layout="common"
    )
    assert json.dumps(spec.to_dict()) == json.dumps(
        {
            "split": "validation",
            "kind": "validation",
            "action": "skip",
            "reason": "up to date",
            "plan_uri": None,
            "plan_sha256": None,
            "catalog_dir": "/o/_work/c",
            "num_examples": None,
            "num_shards": None,
            "seed": None,
            "layout": "common",
        }
    )
    assert SplitSpec.from_dict(spec.to_dict()) == spec and spec.is_copy
    # A spec written before the source layout was recorded reads as the common layout.
    old = {k: v for k, v in spec.to_dict().items() if k != "layout"}
    assert SplitSpec.from_dict(old).layout == "common"


PLANNED = ShardStats(
    shard=4,
    path="/o/train-00004-of-00010",
    staged="/o/_work/s/t/x",
    num_records=12,
    num_bytes=3456,
    crc32c="0a1b2c3d",
    bytes_read=3500,
    first="n01_1.JPEG",
    last="n02_9.JPEG",
)
COPIED = ShardStats(
    shard=0,
    path="/o/validation-00000-of-00001",
    staged="/o/_work/s/v/x",
    num_records=5,
    num_bytes=100,
    crc32c="ffffffff",
    bytes_read=100,
    source="/src/validation-00000-of-00001",
)


@pytest.mark.parametrize(
    "stats, wire",
    [
        (
            PLANNED,
            '{"shard": 4, "path": "/o/train-00004-of-00010", "staged": "/o/_work/s/t/x", '
            '"num_records": 12, "num_bytes": 3456, "crc32c": "0a1b2c3d", "bytes_read": 3500, '
            '"first": "n01_1.JPEG", "last": "n02_9.JPEG"}',
        ),
        (
            ShardStats(0, "/o/a", "/o/b", 0, 0, "00000000", 0),
            '{"shard": 0, "path": "/o/a", "staged": "/o/b", "num_records": 0, "num_bytes": 0, '
            '"crc32c": "00000000", "bytes_read": 0, "first": null, "last": null}',
        ),
        (
            COPIED,
            '{"shard": 0, "path": "/o/validation-00000-of-00001", "staged": "/o/_work/s/v/x", '
            '"num_records": 5, "num_bytes": 100, "crc32c": "ffffffff", "bytes_read": 100, '
            '"source": "/src/validation-00000-of-00001"}',
        ),
    ],
)
def test_shard_stats_are_the_sidecar_the_build_wrote(stats, wire):
    assert json.dumps(stats.to_dict()) == wire
    assert json.dumps(stats.sidecar()) == wire
    assert ShardStats.from_dict(json.loads(wire)) == stats


def test_a_reused_shard_says_so_and_its_sidecar_does_not():
    import dataclasses

    reused = dataclasses.replace(PLANNED, reused=True)
    d = reused.to_dict()
    assert list(d)[-1] == "reused" and d["reused"] is True
    assert ShardStats.from_dict(d) == reused
    assert reused.sidecar() == PLANNED.to_dict()
