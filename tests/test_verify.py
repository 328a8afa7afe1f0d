"""The verifier (``beam_jobs.verify``) on splits built by the real jobs, and
what the DAG's publish step does with its verdict.

Every tampering is undone after its test (the split is built once per module).
Shallow damage (a record dropped, a byte flipped, a stray or missing shard)
is caught from storage metadata and the build's stats; damage that a buggy
build would have recorded in its own stats (records reordered, re-encoded,
corrupt) only by the deep re-read, which compares every record with the plan
and the source catalog.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import built_splits as bs
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from beam_jobs import storage
from beam_jobs.catalog import CATALOG_FILE, read_table, write_table
from beam_jobs.example_proto import build_example, parse_features
from beam_jobs.layout import report_uri, stats_uri
from beam_jobs.storage import crc32c_hex
from beam_jobs.tfrecord import frame, iter_framed
from beam_jobs.verify import VerificationFailed

SPLIT = "train97.1"
SHARD = 1  # the shard the tests damage (of 3)


def shard_path(run: bs.Run, shard: int = SHARD, of: int = 3) -> str:
    return storage.join(run.output_uri, f"{SPLIT}-{shard:05d}-of-{of:05d}")


def framed_records(path: str) -> list[bytes]:
    with storage.open_read(path) as f:
        return [item.data for item in iter_framed(f, path)]


def write_records(path: str, payloads: list[bytes], raw: list[bytes] | None = None) -> None:
    storage.write_bytes(path, b"".join(raw) if raw is not None else
                        b"".join(frame(p) for p in payloads))


def restate(run: bs.Run, shard: int = SHARD) -> None:
    """Rewrite the build's stats for ``shard`` to describe the file as it is now:
    what a buggy build that wrote the wrong bytes would have recorded."""
    import google_crc32c

    spath = stats_uri(run.work_uri, SPLIT)
    stats = json.loads(storage.read_text(spath))
    data = storage.read_bytes(shard_path(run, shard))
    stats["shards"][shard].update(num_bytes=len(data),
                                  crc32c=crc32c_hex(google_crc32c.value(data)))
    stats["num_bytes"] = sum(s["num_bytes"] for s in stats["shards"])
    storage.write_text(spath, json.dumps(stats))


def refuses_to_publish(run: bs.Run) -> None:
    """The DAG's publish step refuses the split; the manifest is untouched."""
    from ssl_splits.publish import versions_folder
    from ssl_splits.tasks import TaskError

    before = storage.read_bytes(run.manifest_uri)
    versions = storage.list_tree(versions_folder(run.manifest_uri))
    with pytest.raises(TaskError, match=rf"{SPLIT} (failed verification|has no verification "
                                        r"report): not publishing it"):
        bs.publish(run, "manual__tampered")
    assert storage.read_bytes(run.manifest_uri) == before
    assert storage.list_tree(versions_folder(run.manifest_uri)) == versions


@pytest.fixture(scope="module")
def local(small_source, tmp_path_factory) -> bs.Run:
    """Seeds 1 and 2 planned, built, verified (deep) and published on a local disk."""
    out = tmp_path_factory.mktemp("verify") / "out"
    run, result = bs.full_run(bs.params(str(small_source), str(out)),
                              tmp_path_factory.mktemp("catalogs"))
    assert result["changed"] == [SPLIT, "train97.2"]
    return run


@pytest.fixture
def run(local: bs.Run):
    """The module's run; every file under its output folder is restored afterwards."""
    root = Path(local.output_uri)
    saved = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    yield local
    for p in root.rglob("*"):
        if p.is_file() and p not in saved:
            p.unlink()
    for p, data in saved.items():
        if not p.exists() or p.read_bytes() != data:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


def test_a_built_split_verifies_deep_and_shallow(run):
    deep = bs.verify(run, SPLIT, deep=True)
    assert deep["ok"] and deep["mode"] == "deep" and deep["findings"] == []
    assert deep["num_examples"] == 97 and deep["num_shards"] == 3
    assert deep["metrics"].get("records_verified") == 97
    assert deep["plan_sha256"] == run.spec(SPLIT)["plan_sha256"]
    assert json.loads(storage.read_text(report_uri(run.work_uri, SPLIT))) == deep
    stats = storage.read_bytes(stats_uri(run.work_uri, SPLIT))
    assert deep["stats_sha256"] == hashlib.sha256(stats).hexdigest()
    assert deep["built_at"] == json.loads(stats)["built_at"]
    shallow = bs.verify(run, SPLIT, deep=False)
    assert shallow["ok"] and shallow["mode"] == "shallow"


def test_deep_check_dofn_reports_each_shard(run):
    """The DoFn alone, as Beam tests do: shards in, one result per shard out."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from beam_jobs.verify import DeepCheck

    stats = json.loads(storage.read_text(stats_uri(run.work_uri, SPLIT)))
    flip_byte(run)  # shard 1 now differs from what the build recorded
    elements = [{"path": s["path"], "shard": i, "crc32c": s["crc32c"]}
                for i, s in enumerate(stats["shards"])]
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(bs.BEAM)) as p:
        out = (p | beam.Create(elements) | beam.ParDo(DeepCheck(SPLIT, None, 3))
               | beam.Map(lambda r: (r["shard"], r["num_records"], len(r["findings"]) > 0)))
        assert_that(out, equal_to([(0, 33, False), (1, 32, True), (2, 32, False)]))


def drop_record(run):
    path = shard_path(run)
    records = framed_records(path)
    write_records(path, records[:5] + records[6:])


def flip_byte(run):
    path = shard_path(run)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(path).write_bytes(bytes(data))


def add_stray_shard(run):
    Path(shard_path(run, 3, 4)).write_bytes(Path(shard_path(run, 0)).read_bytes())


def delete_shard(run):
    Path(shard_path(run)).unlink()


SHALLOW = {
    "drop a record": (
        drop_record,
        rf"{SPLIT}: shard 1 is \d+ bytes, the build wrote \d+: .*{SPLIT}-00001-of-00003"),
    "flip a byte": (
        flip_byte,
        (rf"{SPLIT}: shard 1 CRC32C is [0-9a-f]{{8}} in storage, the build wrote [0-9a-f]{{8}}: "
         rf".*{SPLIT}-00001-of-00003")),
    "add a stray shard": (
        add_stray_shard, rf"{SPLIT}: stray file .*/{SPLIT}-00003-of-00004 under the split's glob"),
    "delete a shard": (delete_shard, rf"{SPLIT}: shard 1 is missing: .*{SPLIT}-00001-of-00003"),
}


@pytest.mark.parametrize("damage", list(SHALLOW))
def test_damage_fails_verification_and_publishing(run, damage):
    tamper, finding = SHALLOW[damage]
    tamper(run)
    with pytest.raises(VerificationFailed, match=rf"{SPLIT}: verification FAILED") as err:
        bs.verify(run, SPLIT, deep=True)
    assert any(re.search(finding, line) for line in str(err.value).splitlines()), \
        str(err.value)
    report = json.loads(storage.read_text(report_uri(run.work_uri, SPLIT)))
    assert report["ok"] is False and report["num_findings"] >= 1
    refuses_to_publish(run)


def swap_records(run):
    path = shard_path(run)
    records = framed_records(path)
    records[0], records[1] = records[1], records[0]
    write_records(path, records)
    return rf"{SPLIT}: shard 1 index 0 holds \S+, the plan says \S+"


def reencode_record(run):
    """Same file name, same features, other bytes: the seed pipeline's re-serialization."""
    path = shard_path(run)
    records = framed_records(path)
    features = parse_features(records[2])
    features["image/extra"] = [b"re-encoded"]
    records[2] = build_example(features)
    write_records(path, records)
    name = features["image/filename"][0].decode()
    return rf"{SPLIT}: shard 1 index 2 \({name}\) differs from the source record"


def corrupt_record_data(run):
    path = shard_path(run)
    data = bytearray(Path(path).read_bytes())
    data[40] ^= 0xFF  # inside record 0's payload; its framing CRC no longer matches
    Path(path).write_bytes(bytes(data))
    return rf"{SPLIT}: shard 1 record 0: .*data_crc: data CRC32C mismatch"


@pytest.mark.parametrize("tamper", [swap_records, reencode_record, corrupt_record_data],
                         ids=["records reordered", "record re-encoded", "record corrupt"])
def test_only_the_deep_check_sees_what_a_buggy_build_recorded_as_written(run, tamper):
    finding = tamper(run)
    restate(run)
    assert bs.verify(run, SPLIT, deep=False)["ok"], "the stats agree with the files"
    with pytest.raises(VerificationFailed) as err:
        bs.verify(run, SPLIT, deep=True)
    assert re.search(finding, str(err.value)), str(err.value)
    refuses_to_publish(run)


def test_deep_check_uses_the_current_catalog_not_a_cached_one(run):
    """A source re-validated with another record under the same name: the same
    plan, checked again in the same process, compares with the new catalog."""
    bs.verify(run, SPLIT, deep=True)
    catalog = storage.join(run.spec(SPLIT)["catalog_dir"], CATALOG_FILE)
    table = read_table(catalog)
    name = parse_features(framed_records(shard_path(run))[3])["image/filename"][0].decode()
    crcs = pc.if_else(pc.equal(table.column("filename"), name),
                      pa.scalar(12345, pa.uint32()), table.column("data_crc"))
    write_table(catalog, table.set_column(table.schema.get_field_index("data_crc"), "data_crc",
                                          crcs))
    with pytest.raises(VerificationFailed, match=rf"shard 1 index 3 \({name}\) differs from the "
                                                 r"source record"):
        bs.verify(run, SPLIT, deep=True)


def test_a_failed_verification_leaves_no_earlier_ok_report_behind(run):
    assert bs.verify(run, SPLIT)["ok"]
    other = run.spec("train97.2")["plan_uri"]
    args = [a if not a.startswith("--plan_uri=") else f"--plan_uri={other}"
            for a in bs.job_args(run, run.spec(SPLIT))]
    from beam_jobs import verify

    with pytest.raises(VerificationFailed, match=rf"{SPLIT}: the build used plan [0-9a-f]{{16}}, "
                                                 rf"not {other}"):
        verify.run(args)
    assert not storage.exists(report_uri(run.work_uri, SPLIT))
    refuses_to_publish(run)


def test_a_report_that_did_not_check_the_plan_is_not_accepted_for_publishing(run):
    from ssl_splits.tasks import TaskError

    args = [a for a in bs.job_args(run, run.spec(SPLIT)) if not a.startswith("--plan_uri=")]
    from beam_jobs import verify

    report = verify.run(args)
    assert report["ok"] and report["plan_sha256"] is None
    with pytest.raises(TaskError, match=rf"{SPLIT}: the verified build is not of this run's plan"):
        bs.publish(run, "manual__unchecked")


def test_cli_says_why_when_it_fails_before_looking_at_shards(run, capsys):
    from beam_jobs import verify

    args = ["--split=train97.9", f"--output_uri={run.output_uri}", f"--work_uri={run.work_uri}"]
    assert verify.main(args) == 1
    assert "train97.9: no build stats at" in capsys.readouterr().out


def test_cli_exits_1_and_names_split_shard_and_difference(run):
    from conftest import run_module

    flip_byte(run)
    args = [a for a in bs.job_args(run, run.spec(SPLIT)) if a not in bs.BEAM]
    proc = run_module("beam_jobs.verify", *args, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{SPLIT}: verification FAILED (1 problems)" in proc.stdout
    assert f"{SPLIT}: shard 1 CRC32C is" in proc.stdout


# --------------------------------------------------------------------------- on GCS


@pytest.fixture(scope="module")
def gcs(gcs_emulator, small_source, tmp_path_factory) -> bs.Run:
    """Seed 1 built, verified and published on the emulator."""
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    storage.gcs_client().create_bucket(bucket)
    run, _ = bs.full_run(bs.params(str(small_source), f"gs://{bucket}/ssl", seeds=[1]),
                         tmp_path_factory.mktemp("catalogs"))
    return run


@pytest.fixture
def no_data_reads(monkeypatch):
    """Record every URI whose bytes are read through beam_jobs.storage."""
    reads: list[str] = []
    for name in ("open_read", "read_bytes", "iter_chunks"):
        real = getattr(storage, name)

        def spy(uri, *a, _real=real, **k):
            reads.append(uri)
            return _real(uri, *a, **k)

        monkeypatch.setattr(storage, name, spy)
    real_range = storage.RangeReader.read
    monkeypatch.setattr(storage.RangeReader, "read",
                        lambda self, uri, *a: reads.append(uri) or real_range(self, uri, *a))
    return reads


@pytest.mark.gcs
def test_gcs_shard_with_right_size_but_other_bytes_is_caught_from_metadata(gcs, no_data_reads):
    path = shard_path(gcs)
    original = storage.read_bytes(path)
    generation = storage.stat(gcs.manifest_uri).generation
    storage.write_bytes(path, bytes(b ^ 0x5A for b in original))  # same size
    no_data_reads.clear()
    try:
        with pytest.raises(VerificationFailed, match=rf"{SPLIT}: shard 1 CRC32C is [0-9a-f]{{8}} "
                                                     rf"in storage, the build wrote"):
            bs.verify(gcs, SPLIT, deep=False)  # as on Dataflow: storage checksums only
        shards = [shard_path(gcs, i) for i in range(3)]
        assert not set(no_data_reads) & set(shards), "no shard was read"
        refuses_to_publish(gcs)
        assert storage.stat(gcs.manifest_uri).generation == generation
    finally:
        storage.write_bytes(path, original)
    assert bs.verify(gcs, SPLIT, deep=False)["ok"]


@pytest.mark.gcs
def test_gcs_missing_and_stray_shards(gcs):
    path, stray = shard_path(gcs), shard_path(gcs, 3, 4)
    original = storage.read_bytes(path)
    storage.delete([path])
    storage.write_bytes(stray, original)
    try:
        with pytest.raises(VerificationFailed) as err:
            bs.verify(gcs, SPLIT, deep=True)
        msg = str(err.value)
        assert f"{SPLIT}: shard 1 is missing: {path}" in msg
        assert f"{SPLIT}: stray file {stray}" in msg
        refuses_to_publish(gcs)
    finally:
        storage.delete([stray])
        storage.write_bytes(path, original)
    assert bs.verify(gcs, SPLIT, deep=True)["ok"]
