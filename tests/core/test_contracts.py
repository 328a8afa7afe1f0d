"""The typed contracts between tasks and jobs (``beam_jobs.core``): each
round-trips through its dict, and the dict is the JSON earlier versions wrote
(same keys, same order), so the XComs, sidecars and stats stay compatible."""

from __future__ import annotations

import json

import pytest

from beam_jobs.core import (
    BuildStats,
    CatalogReport,
    Lease,
    LockHolder,
    Manifest,
    PlanSummary,
    PublishResult,
    ShardStats,
    SourceDescription,
    SplitEntry,
    SplitSpec,
    VerifiedShard,
    VerifyReport,
)

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


def _same_json(doc, expected) -> None:
    """The same JSON text: the same keys, in the same order, with the same values."""
    assert json.dumps(doc) == json.dumps(expected)


def test_plan_summary_is_the_summary_the_planner_wrote():
    s = PlanSummary.from_dict(SUMMARY)
    _same_json(s.to_dict(), SUMMARY)
    assert PlanSummary.from_json(s.to_json()) == s


BUILD_META_PLANNED = {
    "job_name": "ssl-train10-1",
    "layout": "common",
    "plan_uri": "/w/plans/p.csv",
    "plan_sha256": "ab" * 32,
    "catalog_dir": "/w/catalog/c",
    "source_files": 3,
    "source_uri": "/src",
    "runner": "DirectRunner",
}
BUILD_META_COPY = {
    "job_name": "ssl-validation",
    "layout": "common",
    "copied_from": "/src",
    "source_fingerprint": "cd" * 32,
    "runner": "DirectRunner",
}


@pytest.mark.parametrize("meta", [BUILD_META_PLANNED, BUILD_META_COPY, {}])
def test_build_stats_are_the_stats_file_the_build_wrote(meta):
    d = {
        **meta,
        "split": "train10.1",
        "num_shards": 1,
        "num_examples": 10,
        "num_bytes": 100,
        "bytes_read": 120,
        "bytes_written": 100,
        "shards_reused": 0,
        "staging": "/w/staging/train10.1/t",
        "file_pattern": "/o/train10.1-*-of-00001",
        "shards": [
            {
                "path": "/o/train10.1-00000-of-00001",
                "staged": "/w/staging/train10.1/t/train10.1-00000-of-00001",
                "num_records": 10,
                "num_bytes": 100,
                "crc32c": "0badc0de",
            }
        ],
        "built_at": "2026-01-01T00:00:00+00:00",
        "code_version": "1.0",
    }
    stats = BuildStats.from_json(json.dumps(d))
    _same_json(stats.to_dict(), d)
    assert stats.read_from == (meta.get("source_uri") or meta.get("copied_from"))


def test_verify_report_and_its_shards():
    shard = {
        "path": "/o/a-00000-of-00001",
        "num_records": 10,
        "num_bytes": 100,
        "crc32c": "0badc0de",
        "staged": "/w/s/a-00000-of-00001",
        "mtime_ns": 7,
    }
    d = {
        "split": "a",
        "ok": True,
        "mode": "exact",
        "findings": [],
        "num_findings": 0,
        "num_shards": 1,
        "num_examples": 10,
        "plan_sha256": "ab" * 32,
        "stats_uri": "/w/stats/a.json",
        "stats_sha256": "cd" * 32,
        "built_at": "2026-01-01T00:00:00+00:00",
        "verified_at": "2026-01-01T00:00:05+00:00",
        "seconds": 0.5,
        "bytes_read": 0,
        "metrics": {},
        "shards": [shard],
        "code_version": "1.0",
    }
    report = VerifyReport.from_json(json.dumps(d))
    _same_json(report.to_dict(), d)
    # Under its published name, with what a reader checks it by (no staged name).
    assert report.shards[0].published().to_dict() == {
        k: shard[k] for k in ("path", "num_records", "num_bytes", "crc32c", "mtime_ns")
    }
    assert "mtime_ns" not in VerifiedShard(**{**shard, "mtime_ns": None}).to_dict()


PROVENANCE = {
    "code_version": "1.0",
    "runner": "DirectRunner",
    "job_name": "ssl-a",
    "job_id": None,
    "dag_id": "d",
    "run_id": "r",
    "built_at": "2026-01-01T00:00:00+00:00",
    "published_at": "2026-01-01T00:01:00+00:00",
    "source_uri": "/src",
    "bytes_read": 1,
    "bytes_written": 2,
    "shards_reused": 0,
}
VERIFICATION = {
    "mode": "exact",
    "verified_at": "2026-01-01T00:00:05+00:00",
    "report_uri": "/w/verify/a.json",
    "seconds": 0.5,
    "bytes_read": 0,
    "stats_sha256": "cd" * 32,
    "metrics": {},
}
SHARDS = [
    {"path": "/o/a-00000-of-00001", "num_records": 10, "num_bytes": 100, "crc32c": "0badc0de"}
]


def test_manifest_entry_of_a_planned_split_is_the_entry_publish_wrote():
    d = {
        "kind": "supervised",
        "layout": "common",
        "seed": 1,
        "fraction": "0.1",
        "sampling": "stratified",
        "num_examples": 10,
        "num_shards": 1,
        "file_pattern": "/o/a-*-of-00001",
        "shards": SHARDS,
        "class_counts": {"n1": 10},
        "plan": {"uri": "/w/p.csv", "sha256": "ab" * 32, "source": "computed", "algorithm": "x"},
        "source_fingerprint": "f" * 64,
        "verification": VERIFICATION,
        "provenance": PROVENANCE,
    }
    entry = SplitEntry.from_dict(d)
    _same_json(entry.to_dict(), d)


def test_manifest_entry_of_the_validation_copy_is_the_entry_publish_wrote():
    d = {
        "kind": "validation",
        "layout": "common",
        "num_examples": 10,
        "num_shards": 1,
        "file_pattern": "/o/validation-*-of-00001",
        "shards": [{**SHARDS[0], "mtime_ns": 3}],
        "copied_from": "/src",
        "source_fingerprint": None,
        "verification": VERIFICATION,
        "provenance": PROVENANCE,
    }
    _same_json(SplitEntry.from_dict(d).to_dict(), d)


def test_catalog_report_and_the_manifest_source_section():
    d = {
        "schema_version": 1,
        "ok": True,
        "source_uri": "/src",
        "layout": "common",
        "source_fingerprint": "f" * 64,
        "catalog_uri": "/w/catalog/c/catalog.parquet",
        "created_at": "2026-01-01T00:00:00+00:00",
        "code_version": "1.0",
        "checks": {"label_min": 0, "label_max": 9},
        "total_records": 30,
        "bad_records": 0,
        "total_bytes": 3000,
        "num_shards": 1,
        "num_classes": 10,
        "class_histogram": {"0": 3},
        "synsets": {"0": "n1"},
        "shards": [
            {
                "path": "/src/train-00000-of-00001",
                "size": 3000,
                "mtime_ns": 5,
                "records": 30,
                "bad_records": 0,
            }
        ],
        "problems": {},
    }
    report = CatalogReport.from_json(json.dumps(d))
    _same_json(report.to_dict(), d)
    assert report.serves("f" * 64, num_classes=10, layout="common", expected_total=None)
    assert not report.serves("f" * 64, num_classes=1000, layout="common", expected_total=None)
    assert not report.serves("f" * 64, num_classes=10, layout="common", expected_total=31)
    # A report of an old version: no layout (the common one), no total_bytes.
    old = CatalogReport.from_dict(
        {k: v for k, v in d.items() if k not in ("layout", "total_bytes")}
    )
    assert old.layout == "common" and old.total_bytes is None
    section = report.source_section("/src", "f" * 64, "/w/catalog/c/report.json").to_dict()
    _same_json(
        section,
        {
            "uri": "/src",
            "fingerprint": "f" * 64,
            "layout": "common",
            "label_range": [0, 9],
            "num_records": 30,
            "num_shards": 1,
            "num_classes": 10,
            "num_bytes": 3000,
            "bad_records": 0,
            "validation_report_uri": "/w/catalog/c/report.json",
            "catalog_uri": "/w/catalog/c/catalog.parquet",
            "files": [
                {
                    "name": "train-00000-of-00001",
                    "size": 3000,
                    "crc32c": None,
                    "generation": None,
                    "mtime_ns": 5,
                }
            ],
        },
    )


def test_the_manifest_keeps_what_it_does_not_know_and_reads_its_entries():
    entry = {
        "kind": "validation",
        "layout": "tfds:imagenet2012",
        "num_examples": 10,
        "num_shards": 1,
        "file_pattern": "/o/validation-*-of-00001",
        "shards": SHARDS,
        "copied_from": "/src",
        "source_fingerprint": None,
        "verification": VERIFICATION,
        "provenance": PROVENANCE,
        "replaced": {"at": "2026-01-02T00:00:00+00:00"},  # another version's key
    }
    d = {
        "schema_version": 1,
        "output_uri": "/o",
        "splits": {"validation": entry},
        "work_uri": "/o/_work",
        "source": {"uri": "/src", "layout": "tfds:imagenet2012"},
        "provenance": {"run_id": "r"},
        "updated_at": "2026-01-01T00:00:00+00:00",
        "superseded_by": "/o/manifest.versions/x.json",
    }
    doc = Manifest.from_dict(d)
    _same_json(doc.to_dict(), d)
    assert doc.other == {"superseded_by": "/o/manifest.versions/x.json"}
    assert doc.source_layout == "tfds:imagenet2012"
    assert doc.entry("validation") == SplitEntry.from_dict(entry)
    assert doc.entry("train") is None
    d["splits"]["validation"]["num_examples"] = 11
    assert doc.splits["validation"]["num_examples"] == 10, "from_dict copies"
    # What a document lacks stays absent (no schema_version: not the product's manifest).
    bare = Manifest.from_dict({"splits": {}, "output_uri": "/o"})
    assert (bare.schema_version, bare.source_layout) == (None, "common")
    assert bare.to_dict() == {"output_uri": "/o", "splits": {}}


@pytest.mark.parametrize(
    "doc, says",
    [
        ([], "no 'splits' object"),
        ({"splits": ["a"]}, "no 'splits' object"),
        ({"splits": {"a": "secret"}}, "an entry of its 'splits' is not an object"),
        ({"splits": {}, "schema_version": "secret"}, "'schema_version' is not an integer"),
        ({"splits": {}, "output_uri": ["secret"]}, "'output_uri' is not a string"),
        ({"splits": {}, "source": "secret"}, "'source' is not an object"),
        ({"splits": {}, "work_uri": {"secret": 1}}, "'work_uri' is not a string"),
    ],
)
def test_a_document_not_shaped_as_a_manifest_is_refused_without_quoting_it(doc, says):
    with pytest.raises(ValueError, match=says) as err:
        Manifest.from_dict(doc)
    assert "secret" not in str(err.value)


def test_publish_result_with_and_without_a_new_version():
    unchanged = PublishResult("/o/manifest.json", ["a"], ["a", "b"], [])
    assert unchanged.to_dict() == {
        "manifest_uri": "/o/manifest.json",
        "version_uri": None,
        "changed": ["a"],
        "splits": ["a", "b"],
        "tfds_metadata": [],
    }
    published = PublishResult("/o/manifest.json", ["a"], ["a"], ["/o/x.json"], "/o/v/1.json", 7)
    assert published.to_dict()["generation"] == 7
    assert PublishResult.from_dict(published.to_dict()) == published


def test_source_description_round_trips():
    d = {
        "source_uri": "/src",
        "fingerprint": "f" * 64,
        "catalog_dir": "/w/catalog/c",
        "layout": "common",
        "num_train_files": 1,
        "action": "run",
        "reason": "no catalog for this source yet",
        "validation_files": 0,
        "validation_fingerprint": None,
    }
    _same_json(SourceDescription.from_dict(d).to_dict(), d)


def test_lock_documents():
    lease = Lease("/o/_ssl_splits/lock.json", "/o", "t" * 32, "r", 600.0)
    assert Lease.from_dict(json.loads(json.dumps(lease.to_dict()))) == lease
    holder = LockHolder(
        token="t",
        run_id="r",
        dag_id="d",
        output_uri="/o",
        host="h",
        boot_id=None,
        pid_ns=None,
        pid=1,
        in_process=False,
        acquired_at="now",
        renewed_at="now",
        lease_seconds=600.0,
    )
    assert "pid_started" not in holder.to_dict()  # written by in-process holders only
    assert list(holder.to_dict())[:4] == ["token", "run_id", "dag_id", "output_uri"]
