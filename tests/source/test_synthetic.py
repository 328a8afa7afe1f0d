"""The synthetic ImageNet generator: determinism, class sizes, shards,
names taken from FixMatch split files, real JPEGs, bad specs, gs://."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from support.common import REFERENCE, run_module

from beam_jobs import storage
from beam_jobs.source import synthetic
from beam_jobs.source.catalog import SHARD_RE
from beam_jobs.source.example_proto import parse_features, parse_image_record
from beam_jobs.source.synthetic import Spec, generate, layout
from beam_jobs.source.tfrecord import iter_records

SPLIT1 = REFERENCE / "files2shards_train_size128116_split1.txt"
SMALL = Spec(
    num_classes=6,
    min_per_class=8,
    max_per_class=14,
    train_shards=5,
    validation_shards=2,
    validation_per_class=3,
    image_size=4,
    image_pool=8,
    seed=11,
)


def shard_files(folder: Path, prefix: str) -> list[Path]:
    return sorted(folder.glob(f"{prefix}-*"))


def read_payloads(path) -> list[bytes]:
    with storage.open_read(str(path)) as f:
        return list(iter_records(f, str(path)))


def read_shard(path) -> list[dict]:
    return [parse_features(r) for r in read_payloads(path)]


# --------------------------------------------------------------------------- determinism


def test_same_spec_writes_byte_identical_shards(tmp_path):
    # One process and a pool of two: the worker count must not matter either.
    generate(SMALL, str(tmp_path / "a"), workers=1)
    generate(SMALL, str(tmp_path / "b"), workers=2)
    a = sorted((tmp_path / "a").iterdir())
    b = sorted((tmp_path / "b").iterdir())
    names = [p.name for p in a]
    assert names == [p.name for p in b]
    assert len([n for n in names if n.startswith(("train-", "validation-"))]) == 7
    for pa_, pb in zip(a, b):
        if pa_.name == "synthetic.json":  # holds output_uri and timing
            continue
        assert pa_.read_bytes() == pb.read_bytes(), pa_.name


def test_layout_is_a_pure_function_of_the_spec():
    assert layout(SMALL) == layout(replace(SMALL))
    assert layout(SMALL) != layout(replace(SMALL, seed=12))


def test_different_seed_writes_different_data(tmp_path):
    generate(SMALL, str(tmp_path / "a"), workers=1)
    generate(replace(SMALL, seed=12), str(tmp_path / "b"), workers=1)
    for name in ("train-00000-of-00005", "validation-00000-of-00002"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()
    names_a = {
        r["image/filename"][0] for p in shard_files(tmp_path / "a", "train") for r in read_shard(p)
    }
    names_b = {
        r["image/filename"][0] for p in shard_files(tmp_path / "b", "train") for r in read_shard(p)
    }
    assert names_a != names_b


# --------------------------------------------------------------------------- class sizes


@pytest.mark.parametrize(
    "spec",
    [
        Spec(),
        Spec(num_classes=50, min_per_class=5, max_per_class=20, seed=3),
        Spec(num_classes=200, min_per_class=73, max_per_class=130, seed=1),
    ],
    ids=["default", "50x5-20", "200x73-130"],
)
def test_class_sizes_within_bounds_and_uneven(spec):
    lay = layout(spec)
    sizes = lay.class_sizes()
    assert len(sizes) == spec.num_classes
    assert all(spec.min_per_class <= s <= spec.max_per_class for s in sizes), sizes
    assert len(set(sizes)) > 1, "class sizes should be uneven like ImageNet's"
    full = sum(s == spec.max_per_class for s in sizes)
    assert full == round(spec.num_classes * spec.full_class_share)
    assert lay.train_total == sum(sizes)


@pytest.mark.parametrize("total", [400, 401, 470, 599, 600])
def test_exact_train_total(total):
    # 10 classes of 40..60: every total from 400 to 600 is possible.
    spec = Spec(train_total=total)
    lay = layout(spec)
    assert lay.train_total == total
    sizes = lay.class_sizes()
    assert all(40 <= s <= 60 for s in sizes), sizes
    if 400 < total < 600:
        assert len(set(sizes)) > 1


def test_imagenet_shape_totals():
    lay = layout(synthetic.imagenet_spec(validation_shards=4))
    sizes = lay.class_sizes()
    assert lay.train_total == synthetic.IMAGENET_TRAIN_TOTAL
    assert len(sizes) == 1000 and min(sizes) >= 732 and max(sizes) == 1300
    assert len(lay.train) == 1024
    assert sum(len(s) for s in lay.validation) == 50_000


def test_labels_follow_sorted_synsets_and_names_are_unique():
    lay = layout(Spec(num_classes=30, seed=5))
    synsets = [c.synset for c in lay.classes]
    assert synsets == sorted(synsets) and len(set(synsets)) == 30
    assert [c.label for c in lay.classes] == list(range(1, 31))
    names = [n for shard in lay.train for n, _ in shard]
    assert len(names) == len(set(names))
    for shard in lay.train:
        for name, c in shard:
            assert name.startswith(lay.classes[c].synset + "_") and name.endswith(".JPEG")
    val = [n for shard in lay.validation for n, _ in shard]
    assert val == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, len(val) + 1)]


# --------------------------------------------------------------------------- shards


@pytest.mark.parametrize("train_shards, validation_shards", [(1, 0), (3, 1), (7, 4)])
def test_shard_counts_names_and_balance(tmp_path, train_shards, validation_shards):
    spec = replace(SMALL, train_shards=train_shards, validation_shards=validation_shards)
    summary = generate(spec, str(tmp_path), workers=1)
    lay = layout(spec)
    train = shard_files(tmp_path, "train")
    val = shard_files(tmp_path, "validation")
    assert [p.name for p in train] == [
        f"train-{i:05d}-of-{train_shards:05d}" for i in range(train_shards)
    ]
    assert [p.name for p in val] == [
        f"validation-{i:05d}-of-{validation_shards:05d}" for i in range(validation_shards)
    ]
    for p in train + val:
        assert SHARD_RE.match(p.name)
    counts = [len(read_shard(p)) for p in train]
    assert sum(counts) == lay.train_total == summary["train_records"]
    assert max(counts) - min(counts) <= 1
    assert counts == sorted(counts, reverse=True), "the first N mod S shards are the longer ones"
    val_total = sum(len(read_shard(p)) for p in val)
    assert val_total == (spec.num_classes * spec.validation_per_class if validation_shards else 0)
    assert summary["train_shards"] == train_shards
    assert summary["validation_shards"] == validation_shards
    assert summary["bytes"] == sum(p.stat().st_size for p in train + val)
    on_disk = json.loads((tmp_path / "synthetic.json").read_text())
    assert on_disk["train_records"] == lay.train_total


def test_records_match_layout(tmp_path):
    generate(SMALL, str(tmp_path), workers=1)
    lay = layout(SMALL)
    for prefix, shards in (("train", lay.train), ("validation", lay.validation)):
        for path, rows in zip(shard_files(tmp_path, prefix), shards, strict=True):
            got = [parse_image_record(r) for r in read_payloads(path)]
            want = [(name, lay.classes[c].label, lay.classes[c].synset) for name, c in rows]
            assert [(r.filename, r.label, r.synset) for r in got] == want


# --------------------------------------------------------------------------- names_from


@pytest.fixture(scope="module")
def fixmatch_source(tmp_path_factory):
    spec = Spec(
        num_classes=1000,
        min_per_class=131,
        max_per_class=133,
        image_size=1,
        image_pool=4,
        train_shards=16,
        validation_shards=0,
        names_from=(str(SPLIT1),),
    )
    out = tmp_path_factory.mktemp("fixmatch_source")
    generate(spec, str(out), workers=2)
    return spec, out


def test_names_from_fixmatch_split_are_all_present(fixmatch_source):
    _, out = fixmatch_source
    wanted = [line.split(",", 1)[0] for line in SPLIT1.read_text().splitlines() if line]
    assert len(wanted) == 128_116
    found = []
    for path in shard_files(out, "train"):
        with open(path, "rb") as f:
            found.extend(parse_image_record(r) for r in iter_records(f, str(path)))
    names = [r.filename for r in found]
    assert len(names) == len(set(names)), "names must stay unique"
    assert set(wanted) <= set(names)
    # Every class got a few names beyond the split's, within the spec's bounds.
    per_class = Counter(r.synset for r in found)
    wanted_per_class = Counter(n.split("_", 1)[0] for n in wanted)
    assert set(per_class) == set(wanted_per_class)
    assert all(131 <= n <= 133 for n in per_class.values())
    # Each name is filed under its own synset, with one label per synset.
    assert all(r.filename.split("_", 1)[0] == r.synset for r in found)
    labels = {r.synset: r.label for r in found}
    assert sorted(labels.values()) == list(range(1, 1001))
    assert [labels[s] for s in sorted(labels)] == list(range(1, 1001))


def test_names_from_keeps_every_given_name_even_beyond_max(tmp_path):
    given = {"n00000001": [5, 9, 12, 40, 41], "n00000002": [7]}
    lines = [f"{s}_{k}.JPEG,0,{i}" for s, ks in given.items() for i, k in enumerate(ks)]
    (tmp_path / "names.txt").write_text("\n".join(lines) + "\n\n")
    spec = Spec(
        num_classes=3,
        min_per_class=2,
        max_per_class=3,
        train_shards=2,
        names_from=(str(tmp_path / "names.txt"),),
    )
    lay = layout(spec)
    by_synset: dict[str, list[str]] = {}
    for shard in lay.train:
        for name, c in shard:
            by_synset.setdefault(lay.classes[c].synset, []).append(name)
    assert sorted(by_synset["n00000001"]) == sorted(
        f"n00000001_{k}.JPEG" for k in given["n00000001"]
    )
    assert "n00000002_7.JPEG" in by_synset["n00000002"]
    assert 2 <= len(by_synset["n00000002"]) <= 3
    (other,) = set(by_synset) - set(given)
    assert 2 <= len(by_synset[other]) <= 3
    names = [n for ns in by_synset.values() for n in ns]
    assert len(names) == len(set(names))
    # An exact total counts the given names: 5 (all given) + 2..3 + 2..3.
    for total in (9, 10, 11):
        lay = layout(replace(spec, train_total=total))
        assert lay.train_total == total
        assert max(lay.class_sizes()) == 5
    with pytest.raises(ValueError, match=r"possible: 9\.\.11"):
        layout(replace(spec, train_total=12))


def test_names_from_needs_enough_classes():
    with pytest.raises(ValueError, match=r"names_from holds 1000 synsets but num_classes=10"):
        layout(Spec(num_classes=10, names_from=(str(SPLIT1),)))


def test_names_from_rejects_names_without_synset(tmp_path):
    bad = tmp_path / "split.txt"
    bad.write_text("n01440764_1.JPEG,0,0\nnosynset.JPEG,0,1\n")
    with pytest.raises(ValueError, match=r"split.txt line 2: the name has no synset prefix") as e:
        layout(Spec(names_from=(str(bad),)))
    assert "nosynset" not in str(e.value), "by line, never the file's text"


# --------------------------------------------------------------------------- JPEGs


def test_records_hold_real_jpegs_of_the_stated_size(tmp_path):
    from PIL import Image

    spec = replace(SMALL, image_size=13, image_pool=3)
    generate(spec, str(tmp_path), workers=1)
    paths = shard_files(tmp_path, "train") + shard_files(tmp_path, "validation")
    records = [r for p in paths for r in read_shard(p)]
    assert len(records) == layout(spec).train_total + 6 * 3
    distinct = set()
    for r in records:
        encoded = r["image/encoded"][0]
        distinct.add(encoded)
        with Image.open(io.BytesIO(encoded)) as img:
            img.load()
            assert img.format == "JPEG" == r["image/format"][0].decode()
            assert img.size == (r["image/width"][0], r["image/height"][0]) == (13, 13)
            assert img.mode == "RGB" == r["image/colorspace"][0].decode()
    assert len(distinct) == 3


# --------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize(
    "spec, message",
    [
        (Spec(train_total=399), r"train_total=399 is impossible .*possible: 400\.\.600"),
        (Spec(train_total=601), r"train_total=601 is impossible .*possible: 400\.\.600"),
        (Spec(min_per_class=61), r"min_per_class <= max_per_class"),
        (Spec(min_per_class=0), r"min_per_class <= max_per_class"),
        (Spec(num_classes=0), r"num_classes must be >= 1"),
        (Spec(train_shards=0), r"train_shards must be >= 1"),
        (Spec(validation_shards=-1), r"validation_shards >= 0"),
        (Spec(image_size=0), r"image_size and image_pool must be >= 1"),
        (Spec(full_class_share=1.5), r"full_class_share must be in \[0, 1\]"),
    ],
    ids=[
        "total-low",
        "total-high",
        "min>max",
        "min0",
        "classes0",
        "shards0",
        "valshards",
        "size0",
        "share",
    ],
)
def test_infeasible_specs_raise(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        layout(spec)
    with pytest.raises(ValueError, match=message):
        generate(spec, str(tmp_path / "out"), workers=1)
    assert not (tmp_path / "out").exists(), "nothing is written for an impossible spec"


def test_cli_reports_infeasible_spec(tmp_path):
    out = tmp_path / "out"
    proc = run_module(
        "beam_jobs.source.synthetic",
        f"--output_uri={out}",
        "--num_classes=10",
        "--min_per_class=40",
        "--max_per_class=60",
        "--train_total=10",
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: train_total=10 is impossible" in proc.stderr
    assert not out.exists()


def test_cli_writes_a_dataset(tmp_path):
    out = tmp_path / "out"
    proc = run_module(
        "beam_jobs.source.synthetic",
        f"--output_uri={out}",
        "--num_classes=4",
        "--min_per_class=5",
        "--max_per_class=7",
        "--train_shards=3",
        "--validation_shards=1",
        "--image_size=2",
        "--seed=4",
        "--workers=1",
    )
    assert proc.returncode == 0, proc.stderr
    spec = Spec(
        num_classes=4,
        min_per_class=5,
        max_per_class=7,
        train_shards=3,
        validation_shards=1,
        image_size=2,
        seed=4,
    )
    lay = layout(spec)
    assert f"wrote {lay.train_total} train records in 3 shards" in proc.stdout
    # The CLI and the library write the same bytes for the same spec.
    generate(spec, str(tmp_path / "lib"), workers=1)
    written = shard_files(out, "train") + shard_files(out, "validation")
    assert len(written) == 4
    for p in written:
        assert p.read_bytes() == (tmp_path / "lib" / p.name).read_bytes()


# --------------------------------------------------------------------------- gs://


@pytest.mark.gcs
def test_generate_to_gcs(gcs_bucket, tmp_path):
    uri = f"{gcs_bucket}/imagenet"
    summary = generate(SMALL, uri, workers=2)
    generate(SMALL, str(tmp_path), workers=1)
    listed = storage.list_files(f"{uri}/*")
    local = sorted(p.name for p in tmp_path.iterdir())
    assert [storage.basename(f.path) for f in listed] == local
    for f in listed:
        name = storage.basename(f.path)
        if name == "synthetic.json":
            assert json.loads(storage.read_text(f.path))["output_uri"] == uri
            continue
        assert storage.read_bytes(f.path) == (tmp_path / name).read_bytes(), name
    assert summary["train_records"] == layout(SMALL).train_total


# --------------------------------------------------------------------------- TFDS layout (issue 15)


def test_tfds_layout_writes_the_same_records_under_tfds_names_and_features(tmp_path):
    from beam_jobs.source.example_proto import TFDS_KEYS

    common, tfds = tmp_path / "common", tmp_path / "tfds"
    generate(SMALL, str(common), workers=1)
    summary = generate(replace(SMALL, layout="tfds:imagenet2012"), str(tfds), workers=2)
    assert summary["layout"] == "tfds:imagenet2012"
    lay = layout(SMALL)
    assert sorted(p.name for p in tfds.iterdir()) == sorted(
        [f"imagenet2012-train.tfrecord-{i:05d}-of-00005" for i in range(5)]
        + [f"imagenet2012-validation.tfrecord-{i:05d}-of-00002" for i in range(2)]
        + ["dataset_info.json", "features.json", "label.labels.txt", "synthetic.json"]
    )
    for prefix, n in (("train", 5), ("validation", 2)):
        for i in range(n):
            theirs = read_payloads(tfds / f"imagenet2012-{prefix}.tfrecord-{i:05d}-of-{n:05d}")
            ours = read_payloads(common / f"{prefix}-{i:05d}-of-{n:05d}")
            assert len(theirs) == len(ours)
            for t, o in zip(theirs, ours):
                feats = parse_features(t)
                assert sorted(feats) == ["file_name", "image", "label"]  # imagenet2012's
                old = parse_features(o)
                assert feats["image"] == old["image/encoded"]
                assert feats["label"] == [old["image/class/label"][0] - 1]  # 0-based
                assert parse_image_record(t, TFDS_KEYS).filename == parse_image_record(o).filename
    assert (tfds / "label.labels.txt").read_text().split() == [c.synset for c in lay.classes]
    info = json.loads((tfds / "dataset_info.json").read_text())
    assert info["name"] == "imagenet2012"
    assert [(s["name"], s["filepathTemplate"]) for s in info["splits"]] == [
        ("train", "imagenet2012-train.tfrecord-{SHARD_X_OF_Y}"),
        ("validation", "imagenet2012-validation.tfrecord-{SHARD_X_OF_Y}"),
    ]
    feats = json.loads((tfds / "features.json").read_text())["featuresDict"]["features"]
    assert feats["label"]["classLabel"] == {"numClasses": "6"}


def test_cli_tfds_layout_and_bad_layouts(tmp_path):
    out = run_module(
        "beam_jobs.source.synthetic",
        f"--output_uri={tmp_path / 'd'}",
        "--layout=tfds",
        "--num_classes=3",
        "--min_per_class=4",
        "--max_per_class=5",
        "--train_shards=2",
        "--validation_shards=1",
        "--workers=1",
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "d" / "imagenet2012-train.tfrecord-00001-of-00002").exists()
    out = run_module(
        "beam_jobs.source.synthetic", f"--output_uri={tmp_path / 'e'}", "--layout=tfds:X"
    )
    assert out.returncode == 2 and "must be snake_case" in out.stderr


def test_names_from_shipped_lists_and_name_lists(tmp_path):
    from beam_jobs.planning.protocols import read_text

    lay = layout(
        Spec(
            num_classes=1000,
            min_per_class=1,
            max_per_class=20,
            names_from=("published:simclr/1percent",),
        )
    )
    names = {n for shard in lay.train for n, _ in shard}
    assert set(read_text("published:simclr/1percent").split()) <= names
    lst = tmp_path / "names.txt"  # a name list: one file name per line
    lst.write_text("n01000001_5.JPEG\nn01000002_7.JPEG\n")
    small = layout(
        Spec(
            num_classes=3, min_per_class=2, max_per_class=3, train_shards=2, names_from=(str(lst),)
        )
    )
    assert {"n01000001_5.JPEG", "n01000002_7.JPEG"} <= {n for s in small.train for n, _ in s}
