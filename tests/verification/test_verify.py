"""The verifier (``beam_jobs.verification.verify``) on splits built (staged) by the real
jobs, and what the DAG's publish step does with its verdict.

The exact check predicts every shard's size and CRC32C from the plan and the
catalog and compares them with storage's: it must catch a record swapped,
foreign, dropped, duplicated or changed, and a stray or missing shard,
reading no record data on GCS. The deep check (a Beam job) re-reads every
record and names the one that differs.

Every tampering is undone after its test (the splits are built once per module).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import built_splits as bs

from beam_jobs import storage
from beam_jobs.layout import report_uri, stats_uri
from beam_jobs.source.catalog import CATALOG_FILE, read_table, write_table
from beam_jobs.source.example_proto import build_example, parse_features
from beam_jobs.source.tfrecord import frame, iter_framed
from beam_jobs.storage import crc32c_hex
from beam_jobs.verification.verify import VerificationFailed

SPLIT = "train97.1"
OTHER = "train97.2"
SHARD = 1  # the shard the tests damage (of 3)


def stats(run: bs.Run, split: str = SPLIT) -> dict:
    return json.loads(storage.read_text(stats_uri(run.work_uri, split)))


def staged(run: bs.Run, shard: int = SHARD, split: str = SPLIT) -> str:
    return stats(run, split)["shards"][shard]["staged"]


def framed_records(path: str) -> list[bytes]:
    """The whole framed records of a TFRecord file, in order."""
    data = storage.read_bytes(path)
    with storage.open_read(path) as f:
        return [data[item.offset : item.offset + item.length] for item in iter_framed(f, path)]


def write_framed(path: str, records: list[bytes]) -> None:
    storage.write_bytes(path, b"".join(records))


def refuses_to_publish(run: bs.Run) -> None:
    """The DAG's publish step refuses the split; the manifest and every
    published name are untouched."""
    from ssl_splits.tasks import TaskError

    from beam_jobs.publishing.publish import versions_folder

    before = storage.read_bytes(run.manifest_uri) if storage.exists(run.manifest_uri) else None
    published = storage.list_files(storage.join(run.output_uri, "train*"))
    versions = storage.list_tree(versions_folder(run.manifest_uri))
    with pytest.raises(
        TaskError,
        match=rf"{SPLIT} (failed verification|has no verification "
        r"report): not publishing it",
    ):
        bs.publish(run, "manual__tampered")
    after = storage.read_bytes(run.manifest_uri) if storage.exists(run.manifest_uri) else None
    assert after == before
    assert storage.list_files(storage.join(run.output_uri, "train*")) == published
    assert storage.list_tree(versions_folder(run.manifest_uri)) == versions


@pytest.fixture(scope="module")
def local(small_source, tmp_path_factory) -> bs.Run:
    """Seeds 1 and 2 planned and built (staged, not yet verified) on a local disk."""
    out = tmp_path_factory.mktemp("verify") / "out"
    run = bs.start(bs.params(str(small_source), str(out)), tmp_path_factory.mktemp("catalogs"))
    for split in run.supervised():
        bs.build(run, split)
    return run


@pytest.fixture
def run(local: bs.Run):
    """The module's run; every file under its output folder is restored afterwards."""
    root = Path(local.output_uri)
    saved = root.parent / f"saved-{uuid.uuid4().hex[:8]}"
    shutil.copytree(root, saved)
    yield local
    shutil.rmtree(root)
    shutil.move(saved, root)


def test_a_staged_split_verifies_exactly_and_deep(run):
    exact = bs.verify(run, SPLIT, deep=False)
    assert exact["ok"] and exact["mode"] == "exact" and exact["findings"] == []
    assert exact["num_examples"] == 97 and exact["num_shards"] == 3
    assert exact["plan_sha256"] == run.spec(SPLIT)["plan_sha256"]
    assert json.loads(storage.read_text(report_uri(run.work_uri, SPLIT))) == exact
    stats_bytes = storage.read_bytes(stats_uri(run.work_uri, SPLIT))
    assert exact["stats_sha256"] == hashlib.sha256(stats_bytes).hexdigest()
    st = json.loads(stats_bytes)
    # Each verified shard: its published name, and the staged object's identity.
    for shard, built in zip(exact["shards"], st["shards"]):
        data = Path(built["staged"]).read_bytes()
        assert shard["path"] == built["path"] and shard["staged"] == built["staged"]
        assert shard["num_bytes"] == len(data)
        assert shard["crc32c"] == crc32c_hex(int(__import__("google_crc32c").value(data)))
        assert shard["mtime_ns"] == Path(built["staged"]).stat().st_mtime_ns
    # Locally the staged files are read once for their CRC32C; nothing else.
    assert exact["bytes_read"] == st["num_bytes"]
    deep = bs.verify(run, SPLIT, deep=True)
    assert deep["ok"] and deep["mode"] == "deep"
    assert deep["metrics"].get("records_verified") == 97


# --------------------------------------------------------------------------- what the exact check catches


def swap_records(run):
    """Two records exchanged inside a shard: same size, same records."""
    path = staged(run)
    records = framed_records(path)
    records[3], records[4] = records[4], records[3]
    write_framed(path, records)


def foreign_record(run):
    """A record of the other split in place of one of ours."""
    path = staged(run)
    records = framed_records(path)
    theirs = set(framed_records(staged(run, SHARD, OTHER)))
    foreign = next(r for r in sorted(theirs, key=len) if r not in set(records))
    records[5] = foreign
    write_framed(path, records)


def same_size_foreign(records: list[bytes], donor: bytes, i: int = 2) -> list[bytes]:
    """Record ``i`` replaced by a well-framed record of exactly its size whose
    payload comes from ``donor`` (another split's record): only a CRC can tell."""
    n = len(records[i]) - 16
    payload = (donor[12:-4] * (n // max(1, len(donor) - 16) + 1))[:n]
    assert frame(payload) != records[i]
    return records[:i] + [frame(payload)] + records[i + 1 :]


def foreign_record_same_size(run):
    path = staged(run)
    write_framed(
        path, same_size_foreign(framed_records(path), framed_records(staged(run, 0, OTHER))[0])
    )


def drop_record(run):
    path = staged(run)
    records = framed_records(path)
    write_framed(path, records[:5] + records[6:])


def duplicate_record(run):
    """Record 6 written twice in place of records 6 and 7."""
    path = staged(run)
    records = framed_records(path)
    records[7] = records[6]
    write_framed(path, records)


def flip_byte(run):
    path = staged(run)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(path).write_bytes(bytes(data))


def add_stray_shard(run):
    folder = stats(run)["staging"]
    Path(folder, f"{SPLIT}-00003-of-00004").write_bytes(Path(staged(run, 0)).read_bytes())


def delete_shard(run):
    Path(staged(run)).unlink()


SHARD1 = rf".*{re.escape(SPLIT)}-00001-of-00003"
SIZE = rf"{SPLIT}: shard 1 is \d+ bytes, its planned records make \d+: {SHARD1}"
CRC = (
    rf"{SPLIT}: shard 1 CRC32C is [0-9a-f]{{8}} in storage, its planned records give "
    rf"[0-9a-f]{{8}} \(a record is out of place, changed or not planned; deep_verify: always "
    rf"names it\): {SHARD1}"
)
DAMAGE = {
    "two records swapped": (swap_records, CRC),
    "a record of another split": (foreign_record, f"({SIZE}|{CRC})"),
    "a foreign record of the same size": (foreign_record_same_size, CRC),
    "a record dropped": (drop_record, SIZE),
    "a record duplicated": (duplicate_record, f"({SIZE}|{CRC})"),
    "one byte flipped": (flip_byte, CRC),
    "a stray shard": (
        add_stray_shard,
        rf"{SPLIT}: stray file .*/{SPLIT}-00003-of-00004 among the staged shards",
    ),
    "a missing shard": (delete_shard, rf"{SPLIT}: shard 1 is missing: {SHARD1}"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_exact_check_catches(run, damage):
    tamper, finding = DAMAGE[damage]
    tamper(run)
    with pytest.raises(VerificationFailed, match=rf"{SPLIT}: verification FAILED") as err:
        bs.verify(run, SPLIT, deep=False)
    assert any(re.fullmatch(finding, line.strip()) for line in str(err.value).splitlines()), str(
        err.value
    )
    report = json.loads(storage.read_text(report_uri(run.work_uri, SPLIT)))
    assert report["ok"] is False and report["num_findings"] >= 1 and report["shards"] == []
    refuses_to_publish(run)


def test_a_build_that_recorded_other_bytes_than_it_wrote_is_caught(run):
    """The staged files are right, the build's stats are not: the manifest
    would describe other files, so the check fails too."""
    spath = stats_uri(run.work_uri, SPLIT)
    st = json.loads(storage.read_text(spath))
    st["shards"][SHARD]["crc32c"] = "00000000"
    storage.write_text(spath, json.dumps(st))
    with pytest.raises(
        VerificationFailed,
        match=rf"{SPLIT}: shard 1 is as planned but the build "
        r"recorded \d+ bytes, CRC32C 00000000",
    ):
        bs.verify(run, SPLIT, deep=False)


def test_the_check_uses_the_current_catalog(run):
    """A source re-validated with another record under the same name: the same
    plan, checked again, compares with the new catalog (exact and deep)."""
    bs.verify(run, SPLIT, deep=True)
    catalog = storage.join(run.spec(SPLIT)["catalog_dir"], CATALOG_FILE)
    table = read_table(catalog)
    record = framed_records(staged(run))[3]
    name = parse_features(record[12:-4])["image/filename"][0].decode()
    crcs = pc.if_else(
        pc.equal(table.column("filename"), name),
        pa.scalar(12345, pa.uint32()),
        table.column("data_crc"),
    )
    write_table(
        catalog, table.set_column(table.schema.get_field_index("data_crc"), "data_crc", crcs)
    )
    with pytest.raises(VerificationFailed, match=rf"{SPLIT}: shard 1 CRC32C is"):
        bs.verify(run, SPLIT, deep=False)


# --------------------------------------------------------------------------- deep


def reencode_record(run):
    """Same file name, other bytes: the seed pipeline's re-serialization."""
    path = staged(run)
    records = framed_records(path)
    features = parse_features(records[2][12:-4])
    features["image/extra"] = [b"re-encoded"]
    records[2] = frame(build_example(features))
    write_framed(path, records)
    name = features["image/filename"][0].decode()
    return rf"{SPLIT}: shard 1 index 2 \({name}\) differs from the source record"


def swap_named(run):
    swap_records(run)
    return rf"{SPLIT}: shard 1 index 3 holds \S+, the plan says \S+"


def corrupt_record_data(run):
    path = staged(run)
    data = bytearray(Path(path).read_bytes())
    data[40] ^= 0xFF  # inside record 0's payload; its framing CRC no longer matches
    Path(path).write_bytes(bytes(data))
    return rf"{SPLIT}: shard 1 record 0: .*data_crc: data CRC32C mismatch"


@pytest.mark.parametrize(
    "tamper",
    [swap_named, reencode_record, corrupt_record_data],
    ids=["records reordered", "record re-encoded", "record corrupt"],
)
def test_the_deep_check_names_the_record(run, tamper, monkeypatch):
    """With the exact check's verdict set aside, the deep job alone finds the
    record at fault (it runs after the exact check passes)."""
    from beam_jobs.verification import verify

    finding = tamper(run)
    monkeypatch.setattr(verify, "exact_findings", lambda *a, **k: [])
    with pytest.raises(VerificationFailed) as err:
        bs.verify(run, SPLIT, deep=True)
    assert re.search(finding, str(err.value)), str(err.value)
    refuses_to_publish(run)


def test_deep_check_dofn_reports_each_shard(run):
    """The transform alone, as Beam tests do: shards in, one result per shard out."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from beam_jobs.verification.deep import DeepCheck, DeepVerify

    st = stats(run)
    flip_byte(run)  # shard 1 now differs from what the build recorded
    elements = [
        {"path": s["staged"], "shard": i, "crc32c": s["crc32c"]} for i, s in enumerate(st["shards"])
    ]
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(bs.BEAM)) as p:
        out = (
            p
            | beam.Create(elements)
            | DeepVerify(DeepCheck(SPLIT, None, 3))
            | beam.Map(lambda r: (r["shard"], r["num_records"], len(r["findings"]) > 0))
        )
        assert_that(out, equal_to([(0, 33, False), (1, 32, True), (2, 32, False)]))


# --------------------------------------------------------------------------- the report and the CLI


def test_a_failed_verification_leaves_no_earlier_ok_report_behind(run):
    assert bs.verify(run, SPLIT)["ok"]
    other = run.spec(OTHER)["plan_uri"]
    args = [
        a if not a.startswith("--plan_uri=") else f"--plan_uri={other}"
        for a in bs.job_args(run, run.spec(SPLIT))
    ]
    from beam_jobs.verification import verify

    with pytest.raises(
        VerificationFailed,
        match=rf"{SPLIT}: the build used plan [0-9a-f]{{16}}, "
        rf"not {other}",
    ):
        verify.run(args)
    assert not storage.exists(report_uri(run.work_uri, SPLIT))
    refuses_to_publish(run)


def test_cli_says_why_when_it_fails_before_looking_at_shards(run, capsys):
    from beam_jobs.verification import verify

    args = [
        "--split=train97.9",
        f"--output_uri={run.output_uri}",
        f"--work_uri={run.work_uri}",
        f"--plan_uri={run.spec(SPLIT)['plan_uri']}",
        f"--catalog_dir={run.spec(SPLIT)['catalog_dir']}",
    ]
    assert verify.main(args) == 1
    assert "train97.9: no build stats at" in capsys.readouterr().out


def test_cli_exits_1_and_names_split_shard_and_difference(run):
    from support.common import run_module

    flip_byte(run)
    args = [a for a in bs.job_args(run, run.spec(SPLIT)) if a not in bs.BEAM]
    proc = run_module("beam_jobs.verification.verify", *args, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{SPLIT}: verification FAILED (1 problems)" in proc.stdout
    assert f"{SPLIT}: shard 1 CRC32C is" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_the_exact_check_imports_neither_beam_nor_pandas(run):
    """In a scheduler's task process every verify task pays its own imports:
    the exact check must not pull in Apache Beam or pandas (pyarrow imports
    pandas, ~0.5 s, the first time it converts NumPy or Python values to or
    from Arrow: beam_jobs.planning.arrays)."""
    import subprocess
    import sys

    args = [a for a in bs.job_args(run, run.spec(SPLIT)) if a not in bs.BEAM]
    code = (
        "import json, sys\n"
        "from beam_jobs.verification import verify\n"
        f"report = verify.run({args!r})\n"
        "print(json.dumps([report['mode'], sorted(m for m in ('apache_beam', 'pandas') "
        "if m in sys.modules)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["exact", []], proc.stderr[-2000:]


# --------------------------------------------------------------------------- on GCS


@pytest.fixture(scope="module")
def gcs(gcs_emulator, small_source, tmp_path_factory) -> bs.Run:
    """Seeds 1 and 2 built (staged) on the emulator."""
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    storage.gcs_client().create_bucket(bucket)
    run = bs.start(
        bs.params(str(small_source), f"gs://{bucket}/ssl"), tmp_path_factory.mktemp("catalogs")
    )
    for split in run.supervised():
        bs.build(run, split)
    return run


@pytest.fixture
def record_reads(monkeypatch):
    """Every URI whose bytes are read through beam_jobs.storage."""
    reads: list[str] = []
    for name in ("open_read", "read_bytes", "iter_chunks"):
        real = getattr(storage, name)

        def spy(uri, *a, _real=real, **k):
            reads.append(uri)
            return _real(uri, *a, **k)

        monkeypatch.setattr(storage, name, spy)
    real_range = storage.RangeReader.read
    monkeypatch.setattr(
        storage.RangeReader,
        "read",
        lambda self, uri, *a: reads.append(uri) or real_range(self, uri, *a),
    )
    return reads


@pytest.mark.gcs
def test_gcs_exact_check_reads_no_record_data(gcs, record_reads):
    report = bs.verify(gcs, SPLIT, deep=False)
    assert report["ok"] and report["bytes_read"] == 0
    shards = set(s["staged"] for s in stats(gcs)["shards"])
    assert not set(record_reads) & shards, "no shard was read"
    assert all(s.get("generation") for s in report["shards"])


@pytest.mark.gcs
@pytest.mark.parametrize(
    "damage",
    [
        "two records swapped",
        "a foreign record of the same size",
        "a stray shard",
        "a missing shard",
    ],
)
def test_gcs_damage_is_caught_from_metadata(gcs, record_reads, damage):
    tamper, finding = DAMAGE[damage]
    path = staged(gcs)
    original = storage.read_bytes(path)
    folder = stats(gcs)["staging"]
    stray = storage.join(folder, f"{SPLIT}-00003-of-00004")
    if damage == "a stray shard":
        storage.write_bytes(stray, original)
    elif damage == "a missing shard":
        storage.delete([path])
    else:
        records = framed_records(path)
        if damage == "two records swapped":
            records[3], records[4] = records[4], records[3]
        else:
            records = same_size_foreign(records, framed_records(staged(gcs, 0, OTHER))[0])
        write_framed(path, records)
    record_reads.clear()
    try:
        with pytest.raises(VerificationFailed) as err:
            bs.verify(gcs, SPLIT, deep=False)
        assert any(re.fullmatch(finding, line.strip()) for line in str(err.value).splitlines()), (
            str(err.value)
        )
        shards = {s["staged"] for s in stats(gcs)["shards"]}
        assert not set(record_reads) & shards, "no shard was read"
        refuses_to_publish(gcs)
    finally:
        storage.delete([stray])
        storage.write_bytes(path, original)
    assert bs.verify(gcs, SPLIT, deep=False)["ok"]


def test_the_deep_checks_plan_table_is_loaded_once_per_process_under_threads(run, monkeypatch):
    """Dataflow runs several DoFn threads per worker process: they share one
    copy of the plan table, loaded once."""
    import threading
    import time

    from beam_jobs.source.catalog import write_table as write
    from beam_jobs.verification import deep as deep_verify

    table, _ = __import__("beam_jobs.verification.verify", fromlist=["x"]).planned_records(
        run.spec(SPLIT)["plan_uri"], run.spec(SPLIT)["catalog_dir"]
    )
    uri = str(Path(run.work_uri) / "plan-table.parquet")
    write(uri, table.select(["shard", "index", "filename", "data_crc"]))
    loads = []
    real = deep_verify.read_table

    def slow_read(u, *a, **k):
        loads.append(u)
        time.sleep(0.2)  # a slow (remote) read: every thread arrives meanwhile
        return real(u, *a, **k)

    monkeypatch.setattr(deep_verify, "read_table", slow_read)
    monkeypatch.setattr(deep_verify, "_PLANS", {})
    got = []
    threads = [
        threading.Thread(target=lambda: got.append(deep_verify._plan(uri, 3))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [uri]
    assert len(got) == 8 and all(g[0] is got[0][0] for g in got)


# --------------------------------------------------------------------------- the join


def test_catalog_rows_finds_each_planned_name_in_a_chunked_catalog():
    from beam_jobs.verification.verify import catalog_rows

    catalog = pa.chunked_array([["a.JPEG", "b.JPEG"], ["c.JPEG", "d.JPEG", "e.JPEG"]])
    names = pa.array(["e.JPEG", "a.JPEG", "x.JPEG", "c.JPEG"])
    assert catalog_rows(names, catalog).tolist() == [4, 0, -1, 2]
    assert catalog_rows(pa.array([], pa.string()), catalog).tolist() == []


def test_planned_records_takes_each_records_length_and_crc_by_name(tmp_path):
    """The plan's order (shard, index) with each name's own catalog values;
    a name the catalog lacks is a PlanError that counts them."""
    from beam_jobs.planning.algorithm import PlanError
    from beam_jobs.verification.verify import planned_records

    names = [f"n{i:03d}.JPEG" for i in range(50)]
    catalog = pa.table(
        {
            "filename": names,
            "length": pa.array([1000 + 7 * i for i in range(50)], pa.int64()),
            "data_crc": pa.array([(i * 2654435761) % 2**32 for i in range(50)], pa.uint32()),
        }
    )
    write_table(str(tmp_path / CATALOG_FILE), catalog)
    # 12 names out of catalog order in 3 shards, the file's lines not in plan order
    planned = [(names[(7 * k + 5) % 50], k % 3, k // 3) for k in range(11, -1, -1)]
    plan = tmp_path / "plan.csv"
    plan.write_text("".join(f"{n},{s},{x}\n" for n, s, x in planned))
    table, sha = planned_records(str(plan), str(tmp_path))
    assert sha == hashlib.sha256(plan.read_bytes()).hexdigest()
    want = sorted(planned, key=lambda r: (r[1], r[2]))
    assert table.column("filename").to_pylist() == [n for n, _, _ in want]
    assert table.column("shard").to_pylist() == [s for _, s, _ in want]
    row = {n: i for i, n in enumerate(names)}
    assert table.column("length").to_pylist() == [1000 + 7 * row[n] for n, _, _ in want]
    assert table.column("data_crc").type == pa.uint32()
    assert table.column("data_crc").to_pylist() == [
        catalog.column("data_crc")[row[n]].as_py() for n, _, _ in want
    ]
    plan.write_text("".join(f"{n},0,{i}\n" for i, n in enumerate(["n001.JPEG", "zz", "yy"])))
    with pytest.raises(PlanError, match=r"plan\.csv: 2 names are not in the catalog"):
        planned_records(str(plan), str(tmp_path))
