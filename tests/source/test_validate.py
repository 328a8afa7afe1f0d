"""The validation job: a good source passes and its catalog points at every
record exactly; each kind of bad source fails, naming the file and the
problem; the same on gs:// (emulator); the per-shard DoFn as a Beam transform."""

from __future__ import annotations

import json
import shutil
import struct
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from support.common import run_module, small_spec

from beam_jobs import storage
from beam_jobs.source import validate
from beam_jobs.source.catalog import (
    CATALOG_FILE,
    REPORT_FILE,
    SCHEMA,
    fingerprint,
    read_arrow,
    read_catalog,
)
from beam_jobs.source.example_proto import build_example, parse_features, parse_image_record
from beam_jobs.source.synthetic import Spec, layout
from beam_jobs.source.tfrecord import Writer, crc32c, iter_records, mask
from beam_jobs.source.validate import Checks, ValidateShard, ValidationFailed

FAST = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


# --------------------------------------------------------------------------- helpers


def spec_of(source: Path) -> Spec:
    """The spec the generator recorded in synthetic.json."""
    raw = json.loads((source / "synthetic.json").read_text())["spec"]
    return Spec(**{**raw, "names_from": tuple(raw["names_from"])})


def shard(source: Path, i: int, n: int = 8) -> Path:
    return source / f"train-{i:05d}-of-{n:05d}"


def walk(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, framed bytes) of each record, by reading the length fields:
    independent of beam_jobs.source.tfrecord."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, data[pos : pos + length + 16]))
        pos += length + 16
    assert pos == len(data)
    return out


def rewrite_record(path: Path, index: int, mutate) -> int:
    """Rewrite one record's features (framing stays valid); return its offset."""
    with open(path, "rb") as f:
        payloads = list(iter_records(f, str(path)))
    feats = parse_features(payloads[index])
    mutate(feats)
    payloads[index] = build_example(feats)
    with open(path, "wb") as f:
        w = Writer(f)
        for p in payloads:
            w.write(p)
    return walk(path.read_bytes())[index][0]


def run_job(source, catalog_dir, *extra: str) -> dict:
    return validate.run(
        [
            f"--source_uri={source}",
            f"--catalog_dir={catalog_dir}",
            "--num_classes=10",
            *FAST,
            *extra,
        ]
    )


def read_report(catalog_dir) -> dict:
    return json.loads(storage.read_text(storage.join(str(catalog_dir), REPORT_FILE)))


@pytest.fixture(scope="module")
def good_run(small_source, tmp_path_factory):
    """One validation of the shared small source (read-only), reused by the checks below."""
    catalog_dir = tmp_path_factory.mktemp("catalog")
    report = run_job(small_source, catalog_dir)
    return report, catalog_dir


# --------------------------------------------------------------------------- (a) good source


def test_good_source_passes(good_run, small_source):
    report, catalog_dir = good_run
    assert report["ok"] is True
    assert report["problems"] == {}
    assert report["bad_records"] == 0
    assert (catalog_dir / CATALOG_FILE).exists()
    assert report["catalog_uri"] == str(catalog_dir / CATALOG_FILE)
    assert read_report(catalog_dir)["ok"] is True
    assert not (catalog_dir / validate.PARTS_DIR).exists(), "part files are cleaned up"


def test_catalog_matches_generator_layout(good_run, small_source):
    _, catalog_dir = good_run
    lay = layout(spec_of(small_source))
    table = read_catalog(str(catalog_dir))
    assert table.schema.equals(SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == lay.train_total
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    assert sorted(by_file) == [str(shard(small_source, i)) for i in range(8)]
    for i, planned in enumerate(lay.train):
        got = sorted(by_file[str(shard(small_source, i))], key=lambda r: r["record"])
        assert [r["record"] for r in got] == list(range(len(planned)))
        assert [(r["filename"], r["label"], r["synset"]) for r in got] == [
            (name, lay.classes[c].label, lay.classes[c].synset) for name, c in planned
        ]
    # validation-* files are not part of the training catalog
    assert not any("validation-" in f for f in by_file)


def test_catalog_rows_address_exact_framed_records(good_run, small_source):
    _, catalog_dir = good_run
    rows = read_catalog(str(catalog_dir)).to_pylist()
    framed_at = {}
    for i in range(8):
        path = shard(small_source, i)
        for offset, framed in walk(path.read_bytes()):
            framed_at[(str(path), offset)] = framed
    assert len(framed_at) == len(rows)
    with storage.RangeReader() as reader:
        for r in rows:
            got = reader.read(r["file"], r["offset"], r["length"])
            assert got == framed_at[(r["file"], r["offset"])]
            (footer,) = struct.unpack("<I", got[-4:])
            assert r["data_crc"] == footer == mask(crc32c(got[12:-4]))
            assert parse_image_record(got[12:-4]).filename == r["filename"]


def test_report_counts_and_histogram(good_run, small_source):
    report, catalog_dir = good_run
    lay = layout(spec_of(small_source))
    assert report["total_records"] == lay.train_total
    assert report["num_shards"] == 8
    assert report["num_classes"] == 10
    want_hist = Counter(lay.classes[c].label for s in lay.train for _, c in s)
    assert report["class_histogram"] == {str(k): v for k, v in sorted(want_hist.items())}
    assert report["synsets"] == {str(c.label): c.synset for c in lay.classes}
    sizes = {
        str(shard(small_source, i)): (shard(small_source, i).stat().st_size, len(s))
        for i, s in enumerate(lay.train)
    }
    assert [(s["path"], s["size"], s["records"], s["bad_records"]) for s in report["shards"]] == [
        (p, size, n, 0) for p, (size, n) in sizes.items()
    ]
    assert report["total_bytes"] == sum(size for size, _ in sizes.values())
    assert report["metrics"]["records_read"] == lay.train_total
    assert report["metrics"]["shards_done"] == 8
    files = storage.list_files(str(small_source / "train-*"))
    assert report["source_fingerprint"] == fingerprint(files)
    meta = pq.read_schema(catalog_dir / CATALOG_FILE).metadata
    assert meta[b"source_fingerprint"].decode() == fingerprint(files)
    assert meta[b"source_uri"].decode() == str(small_source)


def test_expected_total(small_source, tmp_path):
    total = layout(spec_of(small_source)).train_total
    assert run_job(small_source, tmp_path / "ok", f"--expected_total={total}")["ok"]
    with pytest.raises(ValidationFailed, match=f"expected {total + 1:,} records, found {total:,}"):
        run_job(small_source, tmp_path / "bad", f"--expected_total={total + 1}")


def test_label_offset_and_num_classes(small_source, tmp_path):
    """Labels 1..10 are out of range when the job expects 0..9."""
    with pytest.raises(ValidationFailed, match="label 10 is outside 0..9"):
        run_job(small_source, tmp_path, "--label_offset=0")
    assert "label_range" in read_report(tmp_path)["problems"]


# --------------------------------------------------------------------------- (b) bad sources
#
# Each case damages a private copy of the source and returns what the report
# must say: (kind, file the problem names, byte offset or None, text in the message).


def flip_data_byte(src: Path):
    path = shard(src, 2)
    offset, framed = walk(path.read_bytes())[3]
    data = bytearray(path.read_bytes())
    data[offset + 12 + len(framed) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "data_crc", path, offset, "data CRC32C mismatch"


def truncate_last_record(src: Path):
    path = shard(src, 7)
    offset, _ = walk(path.read_bytes())[-1]
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    return "truncated_record", path, offset, "file ends"


def drop_filename(src: Path):
    path = shard(src, 1)
    offset = rewrite_record(path, 4, lambda f: f.pop("image/filename"))
    return "missing_feature", path, offset, "no 'image/filename' feature"


def duplicate_filename(src: Path):
    first = shard(src, 0)
    with open(first, "rb") as f:
        name = parse_features(list(iter_records(f))[2])["image/filename"][0]
    first_offset = walk(first.read_bytes())[2][0]
    second = shard(src, 5)
    second_offset = rewrite_record(second, 0, lambda f: f.update({"image/filename": [name]}))
    # Where the copies are, not the name (messages never quote a source file's content).
    assert name
    text = (
        f"a file name appears 2 times: {first} at byte offset {first_offset}; "
        f"{second} at byte offset {second_offset}"
    )
    return "duplicate_filename", first, first_offset, text


def label_too_high(src: Path):
    path = shard(src, 3)
    offset = rewrite_record(path, 1, lambda f: f.update({"image/class/label": [11]}))
    return "label_range", path, offset, "label 11 is outside 1..10"


def label_zero(src: Path):
    path = shard(src, 6)
    offset = rewrite_record(path, 0, lambda f: f.update({"image/class/label": [0]}))
    return "label_range", path, offset, "label 0 is outside 1..10"


def second_synset_for_a_label(src: Path):
    path = shard(src, 4)
    rewrite_record(path, 2, lambda f: f.update({"image/class/synset": [b"n99999999"]}))
    return "label_synset", None, None, "comes with 2 different synsets"


def empty_folder(src: Path):
    for p in src.iterdir():
        p.unlink()
    return "no_files", src / "train-*", None, "no files match"


def stray_text_file(src: Path):
    path = src / "train-notes.txt"
    path.write_text("notes about the data\n")
    return "bad_name", path, None, "is not named train-SSSSS-of-NNNNN"


def shard_of_another_prefix(src: Path):
    """``train-*`` also matches a backup of another split's shard."""
    path = src / "train-backup-00000-of-00008"
    shutil.copyfile(shard(src, 0), path)
    return "bad_name", path, None, "is not named train-SSSSS-of-NNNNN"


def garbage_with_shard_name(src: Path):
    path = shard(src, 4)
    path.write_bytes(b"this is a text file that someone saved under a shard name\n" * 4)
    return "length_crc", path, 0, "length field fails its CRC32C check"


def missing_shard(src: Path):
    path = shard(src, 3)
    path.unlink()
    return "missing_shard", path, None, "is missing (1 of 8 shards missing)"


def shard_count_disagrees(src: Path):
    shard(src, 7).rename(src / "train-00007-of-00009")
    return "shard_count", src / "train-*", None, "-of-00009 (1 files, e.g. train-00007-of-00009)"


def index_beyond_count(src: Path):
    path = shard(src, 8, 8)
    shutil.copyfile(shard(src, 0), path)
    return "bad_name", path, None, "shard index 8 is not below its count 8"


BAD_SOURCES = [
    flip_data_byte,
    truncate_last_record,
    drop_filename,
    duplicate_filename,
    label_too_high,
    label_zero,
    second_synset_for_a_label,
    empty_folder,
    stray_text_file,
    shard_of_another_prefix,
    garbage_with_shard_name,
    missing_shard,
    shard_count_disagrees,
    index_beyond_count,
]


@pytest.mark.parametrize("damage", BAD_SOURCES, ids=lambda f: f.__name__)
def test_bad_source_fails_naming_file_and_problem(damage, source_copy, tmp_path):
    kind, path, offset, text = damage(source_copy)
    catalog_dir = tmp_path / "catalog"
    with pytest.raises(ValidationFailed) as info:
        run_job(source_copy, catalog_dir)
    message = str(info.value)
    assert "INVALID" in message and f"problem {kind}: 1" in message
    assert text in message
    report = read_report(catalog_dir)
    assert report["ok"] is False
    assert list(report["problems"]) == [kind], report["problems"]
    (example,) = report["problems"][kind]["examples"]
    assert text in example["message"]
    if path is not None:
        assert example["file"] == str(path)
        assert str(path) in message
    if offset is not None:
        assert example["offset"] == offset
        assert f"byte offset {offset}" in example["message"]
    assert not (catalog_dir / CATALOG_FILE).exists(), "no catalog for an invalid source"
    assert report["catalog_uri"] is None


def test_failed_run_removes_an_older_catalog(source_copy, tmp_path):
    assert run_job(source_copy, tmp_path)["ok"]
    assert (tmp_path / CATALOG_FILE).exists()
    flip_data_byte(source_copy)
    with pytest.raises(ValidationFailed):
        run_job(source_copy, tmp_path)
    assert not (tmp_path / CATALOG_FILE).exists()


def test_many_problems_are_counted_and_examples_capped(source_copy, tmp_path):
    """Every record of two shards damaged: all counted, a few examples kept."""
    n_bad = 0
    for i in (1, 6):
        path = shard(source_copy, i)
        records = walk(path.read_bytes())
        data = bytearray(path.read_bytes())
        for offset, _framed in records:
            data[offset + 20] ^= 0xFF
        path.write_bytes(bytes(data))
        n_bad += len(records)
    with pytest.raises(ValidationFailed, match=f"problem data_crc: {n_bad}"):
        run_job(source_copy, tmp_path)
    report = read_report(tmp_path)
    assert report["problems"]["data_crc"]["count"] == n_bad
    assert len(report["problems"]["data_crc"]["examples"]) == validate.EXAMPLES_PER_KIND
    assert report["bad_records"] == n_bad


# --------------------------------------------------------------------------- CLI


def test_cli_good_source_default_options(small_source, tmp_path):
    """As users run it: no Beam flags (DirectRunner, one worker process per core)."""
    proc = run_module(
        "beam_jobs.source.validate",
        f"--source_uri={small_source}",
        f"--catalog_dir={tmp_path}",
        "--num_classes=10",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    total = layout(spec_of(small_source)).train_total
    assert f"source {small_source}: VALID" in proc.stdout
    assert f"{total:,} records in 8 shards" in proc.stdout
    assert read_catalog(str(tmp_path)).num_rows == total


def test_cli_bad_source_exits_1_naming_file_and_offset(source_copy, tmp_path):
    _, path, offset, _ = flip_data_byte(source_copy)
    proc = run_module(
        "beam_jobs.source.validate",
        f"--source_uri={source_copy}",
        f"--catalog_dir={tmp_path}",
        "--num_classes=10",
        *FAST,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"source {source_copy}: INVALID" in proc.stdout
    assert f"{path} at byte offset {offset}: data_crc" in proc.stdout
    assert not (tmp_path / CATALOG_FILE).exists()


def test_bad_arguments_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        validate.main([f"--catalog_dir={tmp_path}"])
    assert info.value.code == 2
    assert "--source_uri" in capsys.readouterr().err


def test_launcher_and_workers_freeze_their_heap_at_exit(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr(validate, "freeze_heap_at_exit", lambda: calls.append("frozen"))
    ValidateShard(str(tmp_path), Checks(), 1).setup()
    assert calls == ["frozen"]
    with pytest.raises(SystemExit):
        validate.main([f"--catalog_dir={tmp_path}"])
    assert calls == ["frozen", "frozen"]


# --------------------------------------------------------------------------- (c) gs://


def upload_train(small_source: Path, uri: str) -> None:
    for p in sorted(small_source.glob("train-*")):
        storage.write_bytes(f"{uri}/{p.name}", p.read_bytes())


@pytest.mark.gcs
def test_gcs_source_and_catalog(small_source, gcs_bucket):
    src, cat = f"{gcs_bucket}/imagenet", f"{gcs_bucket}/work/catalog"
    upload_train(small_source, src)
    report = run_job(src, cat)
    assert report["ok"] is True
    lay = layout(spec_of(small_source))
    assert report["total_records"] == lay.train_total
    assert read_report(cat)["source_fingerprint"] == report["source_fingerprint"]
    assert all(s["generation"] and s["crc32c"] for s in report["shards"])
    assert report["source_fingerprint"] == fingerprint(storage.list_files(f"{src}/train-*"))
    assert storage.list_tree(f"{cat}/{validate.PARTS_DIR}") == []
    table = read_catalog(cat)
    assert table.num_rows == lay.train_total
    rows = table.to_pylist()
    assert {r["file"] for r in rows} == {f"{src}/train-{i:05d}-of-00008" for i in range(8)}
    generations = {s["path"]: s["generation"] for s in report["shards"]}
    local = {p.name: p.read_bytes() for p in small_source.glob("train-*")}
    with storage.RangeReader(generations) as reader:
        for r in rows[::7]:
            got = reader.read(r["file"], r["offset"], r["length"])
            want = local[storage.basename(r["file"])][r["offset"] : r["offset"] + r["length"]]
            assert got == want
            assert parse_image_record(got[12:-4]).filename == r["filename"]


@pytest.mark.gcs
def test_gcs_bad_source_fails(source_copy, gcs_bucket):
    _, path, offset, _ = flip_data_byte(source_copy)
    src, cat = f"{gcs_bucket}/imagenet", f"{gcs_bucket}/catalog"
    upload_train(source_copy, src)
    with pytest.raises(ValidationFailed) as info:
        run_job(src, cat)
    gs_path = f"{src}/{path.name}"
    assert f"{gs_path} at byte offset {offset}: data_crc" in str(info.value)
    report = read_report(cat)
    assert report["problems"]["data_crc"]["examples"][0]["file"] == gs_path
    assert not storage.exists(f"{cat}/{CATALOG_FILE}")


# --------------------------------------------------------------------------- ValidateShard


def _element(path: Path, index: int) -> dict:
    return {"path": str(path), "index": index, "size": path.stat().st_size}


def test_validate_shard_transform(source_copy, tmp_path):
    """ValidateShard in a TestPipeline: one summary per shard, parts written."""
    lay = layout(spec_of(source_copy))
    _, bad_path, bad_offset, _ = flip_data_byte(source_copy)  # shard 2, record 3
    parts = str(tmp_path / "parts")
    elements = [_element(shard(source_copy, i), i) for i in range(8)]
    expected = [
        (i, len(s) - (1 if i == 2 else 0), 1 if i == 2 else 0, ["data_crc"] if i == 2 else [])
        for i, s in enumerate(lay.train)
    ]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(elements) | beam.ParDo(ValidateShard(parts, Checks(1, 10), 8))
        assert_that(
            out
            | "Counts"
            >> beam.Map(
                lambda s: (s["index"], s["records"], s["bad_records"], sorted(s["problems"]))
            ),
            equal_to(expected),
            label="CheckCounts",
        )
        assert_that(
            out
            | "Offsets"
            >> beam.FlatMap(
                lambda s: [
                    (ex["file"], ex["offset"])
                    for e in s["problems"].values()
                    for ex in e["examples"]
                ]
            ),
            equal_to([(str(bad_path), bad_offset)]),
            label="CheckWhere",
        )
    # Each shard wrote its catalog part with one row per good record.
    for i, (_, n_ok, _, _) in enumerate(expected):
        assert read_arrow(f"{parts}/part-{i:05d}.arrow").num_rows == n_ok
    # labels of good records, summed over shards (shard 2 lost one)
    assert sorted(_part_labels(parts, 8).items()) == sorted(_labels_without_bad(lay))


def _part_labels(parts: str, n: int) -> Counter:
    """The label histogram of the rows in part files 0..n-1."""
    return Counter(
        label
        for i in range(n)
        for label in read_arrow(f"{parts}/part-{i:05d}.arrow").column("label").to_pylist()
    )


def _labels_without_bad(lay):
    """Label histogram of the good records after flip_data_byte (shard 2, record 3)."""
    hist: Counter[int] = Counter()
    for i, s in enumerate(lay.train):
        for k, (_, c) in enumerate(s):
            if (i, k) != (2, 3):
                hist[lay.classes[c].label] += 1
    return list(hist.items())


def test_validate_shard_label_check_transform(small_source, tmp_path):
    """Narrower label bounds: records outside are bad, reported with their offsets."""
    path = shard(small_source, 0)
    lay = layout(spec_of(small_source))
    offsets = [o for o, _ in walk(path.read_bytes())]
    want_bad = [
        (str(path), offsets[k]) for k, (_, c) in enumerate(lay.train[0]) if lay.classes[c].label > 5
    ][: validate.EXAMPLES_PER_KIND]
    n_bad = sum(lay.classes[c].label > 5 for _, c in lay.train[0])
    assert 0 < n_bad < len(lay.train[0])
    with test_pipeline.TestPipeline() as p:
        out = (
            p
            | beam.Create([_element(path, 0)])
            | beam.ParDo(ValidateShard(str(tmp_path), Checks(1, 5), 1))
        )
        assert_that(
            out
            | beam.Map(
                lambda s: (s["records"], s["bad_records"], s["problems"]["label_range"]["count"])
            ),
            equal_to([(len(lay.train[0]) - n_bad, n_bad, n_bad)]),
            label="Counts",
        )
        assert_that(
            out
            | beam.FlatMap(
                lambda s: [
                    (e["file"], e["offset"]) for e in s["problems"]["label_range"]["examples"]
                ]
            ),
            equal_to(want_bad),
            label="Where",
        )


def test_validate_shard_notices_a_file_that_changed_size(small_source, tmp_path):
    """The listing's size no longer matches what was read: the file changed."""
    path = shard(small_source, 1)
    element = {**_element(path, 1), "size": path.stat().st_size + 100}
    summary = validate.validate_shard(element, str(tmp_path), Checks(1, 10), 8)
    assert list(summary["problems"]) == ["size_changed"]
    (example,) = summary["problems"]["size_changed"]["examples"]
    assert example["file"] == str(path)
    assert f"read {path.stat().st_size} bytes" in example["message"]
    # the same shard with its true size is fine
    summary = validate.validate_shard(_element(path, 1), str(tmp_path), Checks(1, 10), 8)
    assert summary["problems"] == {} and summary["bytes"] == path.stat().st_size


# --------------------------------------------------------------------------- fast and careful paths
#
# validate_shard takes fast_rows for a shard whose records are all plainly
# well-formed and careful_rows (record by record, naming every problem) for
# any other: the same rows for what both accept, and every problem found.


def _rows(table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["record"])


def test_fast_and_careful_rows_agree_on_good_shards(small_source):
    for i in range(8):
        path = str(shard(small_source, i))
        fast_table, fast_end = validate.fast_rows(path, Checks(1, 10))
        table, problems, n_ok, n_bad, end = validate.careful_rows(path, Checks(1, 10))
        assert not problems and n_bad == 0 and n_ok == fast_table.num_rows
        assert fast_table.schema.equals(validate.PART_SCHEMA)
        assert _rows(fast_table) == _rows(table)
        assert fast_end == end == shard(small_source, i).stat().st_size


def test_fast_rows_agree_on_odd_but_valid_records(source_copy):
    """Extra features, no synset, an empty synset, a unicode name, the
    boundary labels: still the fast path, with the careful path's rows."""
    path = shard(source_copy, 3)
    rewrite_record(path, 0, lambda f: f.update({"x/floats": [1.5, 2.5], "x/ints": [1, 2]}))
    rewrite_record(path, 1, lambda f: f.pop("image/class/synset"))
    rewrite_record(path, 2, lambda f: f.update({"image/class/synset": [b""]}))
    rewrite_record(path, 3, lambda f: f.update({"image/filename": ["\u00e9t\u00e9 \u6f22.JPEG"]}))
    rewrite_record(path, 4, lambda f: f.update({"image/class/label": [1]}))
    rewrite_record(path, 5, lambda f: f.update({"image/class/label": [10]}))
    fast = validate.fast_rows(str(path), Checks(1, 10))
    assert fast is not None
    table, problems, *_ = validate.careful_rows(str(path), Checks(1, 10))
    assert not problems
    assert _rows(fast[0]) == _rows(table)
    assert [r["synset"] for r in _rows(table)[1:3]] == ["", ""]


DECLINED = [
    # (what is wrong with record 5 of shard 2, the problem kind)
    (lambda f: f.pop("image/filename"), "missing_feature"),
    (lambda f: f.update({"image/filename": [b"a,b.JPEG"]}), "bad_filename"),
    (lambda f: f.update({"image/filename": [b"a\xff.JPEG"]}), "bad_filename"),
    (lambda f: f.update({"image/filename": [b""]}), "bad_filename"),
    (lambda f: f.update({"image/class/label": [11]}), "label_range"),
    (lambda f: f.update({"image/class/label": [1, 2]}), "wrong_type"),
    (lambda f: f.update({"image/class/synset": [3]}), "wrong_type"),
    (lambda f: f.update({"image/encoded": [b""]}), "empty_image"),
    # Valid, but not plainly: the careful path keeps it (replacement characters).
    (lambda f: f.update({"image/class/synset": [b"n\xff"]}), None),
]


@pytest.mark.parametrize("mutate, kind", DECLINED)
def test_a_shard_the_fast_path_declines_is_read_record_by_record(source_copy, mutate, kind):
    path = shard(source_copy, 2)
    offset = rewrite_record(path, 5, mutate)
    assert validate.fast_rows(str(path), Checks(1, 10)) is None
    summary = validate.validate_shard(
        _element(path, 2), str(source_copy / "parts"), Checks(1, 10), 8
    )
    _, problems, n_ok, n_bad, _ = validate.careful_rows(str(path), Checks(1, 10))
    assert summary["problems"] == problems.to_json()
    assert (summary["records"], summary["bad_records"]) == (n_ok, n_bad)
    if kind is None:
        assert summary["problems"] == {} and n_bad == 0
    else:
        assert list(summary["problems"]) == [kind]
        (example,) = summary["problems"][kind]["examples"]
        assert (example["file"], example["offset"], example["record"]) == (str(path), offset, 5)


def test_framing_damage_is_read_record_by_record(source_copy):
    _, path, offset, _ = flip_data_byte(source_copy)
    assert validate.fast_rows(str(path), Checks(1, 10)) is None
    summary = validate.validate_shard(
        _element(path, 2), str(source_copy / "parts"), Checks(1, 10), 8
    )
    (example,) = summary["problems"]["data_crc"]["examples"]
    assert (example["offset"], example["record"]) == (offset, 3)


def _shard_of(path: Path, sizes: list[int]) -> None:
    with open(path, "wb") as f:
        w = Writer(f)
        for n in sizes:
            w.write(b"x" * n)


def test_estimated_seconds_from_the_first_records(tmp_path):
    """Records = total size / mean framed size of the first shard's first
    records: many small records cost more than a few large ones."""
    _shard_of(tmp_path / "train-00000-of-00002", [1000] * 100)
    _shard_of(tmp_path / "train-00001-of-00002", [984] * 50)
    files = storage.list_files(str(tmp_path / "train-*"))
    total = sum(f.size for f in files)
    want = total / 1016 * validate.SECONDS_PER_RECORD + total * validate.SECONDS_PER_BYTE
    assert validate.estimated_seconds(files) == pytest.approx(want)
    # One record longer than the sample: its header gives the size.
    big = tmp_path / "big"
    big.mkdir()
    _shard_of(big / "train-00000-of-00001", [validate.SAMPLE_BYTES * 3])
    (f,) = storage.list_files(str(big / "train-*"))
    assert validate.estimated_seconds([f]) == pytest.approx(
        validate.SECONDS_PER_RECORD + f.size * validate.SECONDS_PER_BYTE
    )
    assert validate.estimated_seconds([]) is None


def test_dataflow_options_are_not_estimated():
    assert validate.dataflow(["--runner=DataflowRunner", "--project=p"])
    assert not validate.dataflow([])
    assert not validate.dataflow(["--runner=DirectRunner"])


# --------------------------------------------------------------------------- a TFDS-prepared source


@pytest.fixture(scope="module")
def tfds_source(tmp_path_factory) -> Path:
    """The small source's records in the layout TensorFlow Datasets prepares."""
    from beam_jobs.source.synthetic import generate

    out = tmp_path_factory.mktemp("tfds_source")
    generate(small_spec(layout="tfds:imagenet2012"), str(out), workers=1)
    return out


def tfds_shard(source: Path, i: int, n: int = 8) -> Path:
    return source / f"imagenet2012-train.tfrecord-{i:05d}-of-{n:05d}"


def test_tfds_source_is_detected_and_validated(tfds_source, good_run, tmp_path):
    from beam_jobs.source.example_proto import TFDS_KEYS

    report = run_job(tfds_source, tmp_path / "catalog")  # layout from the file names
    assert report["ok"] and report["layout"] == "tfds:imagenet2012"
    assert report["checks"] == {"label_min": 0, "label_max": 9}
    assert [Path(s["path"]).name for s in report["shards"]] == [
        tfds_shard(tfds_source, i).name for i in range(8)
    ]
    # The same records as the common layout's (same spec), labels one lower, and the
    # classes' synsets from the source's label.labels.txt.
    common_report, common_dir = good_run
    tfds_rows = read_catalog(str(tmp_path / "catalog")).to_pylist()
    common_rows = read_catalog(str(common_dir)).to_pylist()
    assert sorted((r["filename"], r["label"] + 1, r["record"]) for r in tfds_rows) == sorted(
        (r["filename"], r["label"], r["record"]) for r in common_rows
    )
    assert {int(k) + 1: v for k, v in report["synsets"].items()} == {
        int(k): v for k, v in common_report["synsets"].items()
    }
    assert report["class_histogram"] == {
        str(int(k) - 1): v for k, v in common_report["class_histogram"].items()
    }
    with storage.RangeReader() as reader:
        for r in tfds_rows[:50]:
            rec = reader.read(r["file"], r["offset"], r["length"])[12:-4]
            assert parse_image_record(rec, TFDS_KEYS).filename == r["filename"]


@pytest.mark.parametrize(
    "damage, kind, where",
    [
        (lambda f: f.update({"label": [10]}), "label_range", "label 10 is outside 0..9"),
        (lambda f: f.pop("file_name"), "missing_feature", "no 'file_name' feature"),
        (lambda f: f.update({"image": [b""]}), "empty_image", "'image' is empty"),
    ],
)
def test_tfds_bad_records_fail_naming_file_and_offset(tfds_source, tmp_path, damage, kind, where):
    src = tmp_path / "src"
    shutil.copytree(tfds_source, src)
    path = tfds_shard(src, 3)
    offset = rewrite_record(path, 2, damage)
    with pytest.raises(ValidationFailed):
        run_job(src, tmp_path / "catalog", "--layout=tfds:imagenet2012")
    report = read_report(tmp_path / "catalog")
    assert list(report["problems"]) == [kind]
    (example,) = report["problems"][kind]["examples"]
    assert example["file"] == str(path) and example["offset"] == offset
    assert where in example["message"]
    assert not (tmp_path / "catalog" / CATALOG_FILE).exists()


def test_tfds_source_missing_shard_and_a_prefix_with_no_shards(tfds_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tfds_source, src)
    tfds_shard(src, 5).unlink()
    with pytest.raises(ValidationFailed):
        run_job(src, tmp_path / "c1")
    (example,) = read_report(tmp_path / "c1")["problems"]["missing_shard"]["examples"]
    assert example["file"] == str(tfds_shard(src, 5))
    # A prefix that names no shard of this source.
    with pytest.raises(ValidationFailed):
        run_job(src, tmp_path / "c2", "--layout=tfds:imagenet2012", "--prefix=train")
    assert read_report(tmp_path / "c2")["problems"]["no_files"]["count"] == 1


def test_common_records_in_a_tfds_source_are_refused(small_source, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        shutil.copy(shard(small_source, i), tfds_shard(src, i))
    with pytest.raises(ValidationFailed):
        run_job(src, tmp_path / "catalog")
    report = read_report(tmp_path / "catalog")
    assert report["layout"] == "tfds:imagenet2012"
    assert list(report["problems"]) == ["missing_feature"]
    assert "no 'image' feature" in report["problems"]["missing_feature"]["examples"][0]["message"]


def test_validate_shard_transform_with_tfds_keys(tfds_source, tmp_path):
    """ValidateShard in a TestPipeline on TFDS records: names and 0-based labels."""
    from beam_jobs.source.example_proto import TFDS_KEYS

    lay = layout(spec_of(tfds_source))
    elements = [_element(tfds_shard(tfds_source, i), i) for i in range(2)]
    want = [(i, len(lay.train[i]), 0) for i in range(2)]
    with test_pipeline.TestPipeline() as p:
        out = (
            p
            | beam.Create(elements)
            | beam.ParDo(ValidateShard(str(tmp_path), Checks(0, 9, TFDS_KEYS), 2))
        )
        assert_that(
            out | beam.Map(lambda s: (s["index"], s["records"], s["bad_records"])),
            equal_to(want),
            label="Counts",
        )
    assert _part_labels(str(tmp_path), 2) == Counter(
        lay.classes[c].label - 1 for i in range(2) for _, c in lay.train[i]
    )
    part = read_arrow(f"{tmp_path}/part-00000.arrow")
    # The shard's path is not on every row: finalize adds it from the shard's index.
    assert part.schema.equals(validate.PART_SCHEMA) and "file" not in part.schema.names
    names = part.column("filename").to_pylist()
    # A part's rows come sorted by name, each with its record's index in the shard.
    assert names == sorted(n for n, _ in lay.train[0])
    by_record = dict(zip(part.column("record").to_pylist(), names))
    assert [by_record[i] for i in range(len(names))] == [n for n, _ in lay.train[0]]


def test_validate_source_transform(source_copy, tmp_path):
    """The whole validation graph as a PTransform: shards in, one report out,
    the catalog written; a duplicated name across shards makes it invalid."""
    from beam_jobs.source.catalog import fingerprint
    from beam_jobs.source.validate import ValidateSource
    from beam_jobs.storage import list_files

    lay = layout(spec_of(source_copy))
    elements = [_element(shard(source_copy, i), i) for i in range(8)]
    catalog = str(tmp_path / "catalog")
    fp = fingerprint(list_files(f"{source_copy}/train-*"))
    with test_pipeline.TestPipeline() as p:
        out = (
            p
            | beam.Create(elements)
            | ValidateSource(catalog, str(source_copy), elements, fp, None, Checks(1, 10))
            | beam.Map(lambda r: (r["ok"], r["total_records"], r["num_shards"]))
        )
        assert_that(out, equal_to([(True, sum(len(s) for s in lay.train), 8)]))
    assert read_catalog(catalog).num_rows == sum(len(s) for s in lay.train)
    # The same records twice (shard 0 copied over shard 1): invalid, no catalog.
    (source_copy / shard(source_copy, 1).name).write_bytes(shard(source_copy, 0).read_bytes())
    elements = [_element(shard(source_copy, i), i) for i in range(8)]
    with test_pipeline.TestPipeline() as p:
        out = (
            p
            | beam.Create(elements)
            | ValidateSource(catalog, str(source_copy), elements, fp, None, Checks(1, 10))
            | beam.Map(lambda r: (r["ok"], sorted(r["problems"])))
        )
        assert_that(out, equal_to([(False, ["duplicate_filename"])]))
    assert not (tmp_path / "catalog" / "catalog.parquet").exists()
