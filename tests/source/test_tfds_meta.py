"""TFDS metadata for the published splits: pure units, then splits built by
the real jobs read back with ``tfds.builder_from_directory``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import built_splits as bs

from beam_jobs import storage
from beam_jobs.source import tfds_meta as tm
from beam_jobs.source.example_proto import TFDS_KEYS, parse_image_record
from beam_jobs.source.tfrecord import iter_records


def entry(folder: str, split: str, lengths: list[int]) -> dict:
    n = len(lengths)
    return {
        "num_examples": sum(lengths),
        "num_shards": n,
        "file_pattern": f"{folder}/{split}-*-of-{n:05d}",
        "shards": [
            {
                "path": f"{folder}/{split}-{i:05d}-of-{n:05d}",
                "num_records": r,
                "num_bytes": 100 * r,
                "crc32c": "00000000",
            }
            for i, r in enumerate(lengths)
        ],
    }


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("train128116.1", "train128116_1"),
        ("train128116.5", "train128116_5"),
        ("train12811.3", "train12811_3"),
        ("train", "train"),
        ("validation", "validation"),
    ],
)
def test_split_names_map_dots_to_underscores(ours, theirs):
    assert tm.tfds_split_name(ours) == theirs


def test_split_infos_keep_our_file_names_and_counts():
    doc = {
        "splits": {
            "train10.2": entry("/o", "train10.2", [4, 3, 3]),
            "train": entry("/o", "train", [7]),
        }
    }
    infos = tm.split_infos(doc, "/o/")
    assert infos == [
        {
            "name": "train",
            "numShards": "1",
            "shardLengths": ["7"],
            "numBytes": "700",
            "filepathTemplate": "train-{SHARD_X_OF_Y}",
        },
        {
            "name": "train10_2",
            "numShards": "3",
            "shardLengths": ["4", "3", "3"],
            "numBytes": "1000",
            "filepathTemplate": "train10.2-{SHARD_X_OF_Y}",
        },
    ]
    info = tm.dataset_info(doc, "/o")
    assert info["fileFormat"] == "tfrecord" and info["sizeInBytes"] == "1700"
    assert "train10.2 -> train10_2" in info["description"]


def test_names_that_collide_or_files_elsewhere_are_refused(tmp_path):
    both = {
        "splits": {
            "train1.1": entry("/o", "train1.1", [1]),
            "train1_1": entry("/o", "train1_1", [1]),
        }
    }
    with pytest.raises(tm.TfdsMetadataError, match="would both be the TFDS split 'train1_1'"):
        tm.split_infos(both, "/o")
    elsewhere = {"splits": {"train1.1": entry("/elsewhere", "train1.1", [1])}}
    with pytest.raises(
        tm.TfdsMetadataError,
        match=rf"train1\.1: shard 0 is /elsewhere/train1\.1-"
        rf"00000-of-00001, not {tmp_path}/train1\.1",
    ):
        tm.write_tfds_metadata(elsewhere, str(tmp_path), features=tm.REQUIRED_FEATURES)
    with pytest.raises(tm.TfdsMetadataError, match="no TFDS name"):
        tm.tfds_split_name("train 1")
    assert list(tmp_path.iterdir()) == [], "nothing is written when a split cannot be described"


def test_features_nest_by_slash():
    cfg = tm.features_config(["image/encoded", "image/class/label", "image/filename"])
    image = cfg["featuresDict"]["features"]["image"]["featuresDict"]["features"]
    assert sorted(image) == ["class", "encoded", "filename"]
    assert image["encoded"]["image"]["encodingFormat"] == "jpeg"
    assert image["class"]["featuresDict"]["features"]["label"]["tensor"]["dtype"] == "int64"
    with pytest.raises(tm.TfdsMetadataError, match="no TFDS description for feature 'x/y'"):
        tm.features_config(["x/y"])


# --------------------------------------------------------------------------- read by TFDS


@pytest.fixture(scope="module")
def published(small_source, tmp_path_factory):
    """Seed 1, the reshuffle and the validation copy, built, verified and published."""
    out = tmp_path_factory.mktemp("tfds") / "out"
    p = bs.params(str(small_source), str(out), seeds=[1], unsupervised=True, copy_validation=True)
    run, _ = bs.full_run(p, tmp_path_factory.mktemp("catalogs"))
    return run, bs.manifest(run)


def names_in(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out += [parse_image_record(r).filename for r in iter_records(f, p)]
    return out


def test_tfds_reads_every_published_split_in_place(published):
    import tensorflow_datasets as tfds

    run, doc = published
    assert sorted(doc["splits"]) == ["train", "train97.1", "validation"]
    written = tm.write_tfds_metadata(doc, run.output_uri)
    assert written == [f"{run.output_uri}/features.json", f"{run.output_uri}/dataset_info.json"]
    assert not [p for p in Path(run.output_uri).iterdir() if ".tmp-" in p.name]

    builder = tfds.builder_from_directory(run.output_uri)
    assert sorted(builder.info.splits) == ["train", "train97_1", "validation"]
    for split, e in doc["splits"].items():
        info = builder.info.splits[tm.tfds_split_name(split)]
        assert info.num_examples == e["num_examples"]
        assert info.shard_lengths == [s["num_records"] for s in e["shards"]]
        assert [str(p) for p in info.filepaths] == [s["path"] for s in e["shards"]]
        names = []
        in_order = tfds.ReadConfig(interleave_cycle_length=1)  # one shard after the other
        for ex in tfds.as_numpy(
            builder.as_dataset(
                split=tm.tfds_split_name(split), shuffle_files=False, read_config=in_order
            )
        ):
            img = ex["image"]
            names.append(img["filename"].decode())
            assert img["encoded"].shape == (8, 8, 3) and img["encoded"].dtype.name == "uint8"
            assert 1 <= img["class"]["label"] <= 10
            assert img["class"]["synset"].decode().startswith("n")
        assert len(names) == e["num_examples"]
        assert names == names_in([s["path"] for s in e["shards"]]), "planned order, every record"
        default = builder.as_dataset(split=tm.tfds_split_name(split))  # shards interleaved
        assert sorted(ex["image"]["filename"].decode() for ex in tfds.as_numpy(default)) == sorted(
            names
        )
    first = [
        ex["image"]["filename"].decode()
        for ex in tfds.as_numpy(builder.as_dataset(split="train97_1[:10]", shuffle_files=False))
    ]
    assert first == names_in([doc["splits"]["train97.1"]["shards"][0]["path"]])[:10]


def test_optional_features_are_described_only_when_asked_or_present(published):
    import tensorflow_datasets as tfds

    run, doc = published
    assert tm.present_features(doc) == list(tm.REQUIRED_FEATURES) + [
        "image/class/synset",
        "image/class/text",
        "image/height",
        "image/width",
        "image/channels",
        "image/colorspace",
        "image/format",
    ]
    tm.write_tfds_metadata(doc, run.output_uri, features=tm.REQUIRED_FEATURES)
    builder = tfds.builder_from_directory(run.output_uri)
    ex = next(iter(tfds.as_numpy(builder.as_dataset(split="train97_1"))))
    assert sorted(ex["image"]) == ["class", "encoded", "filename"]
    assert sorted(ex["image"]["class"]) == ["label"]


@pytest.mark.gcs
def test_written_to_gcs_next_to_the_shards(published, gcs_bucket):
    _, doc = published
    folder = f"{gcs_bucket}/ssl"
    e = json.loads(json.dumps(doc["splits"]["train97.1"]))
    for s in e["shards"]:
        gs = f"{folder}/{storage.basename(s['path'])}"
        storage.write_bytes(gs, Path(s["path"]).read_bytes())
        s["path"] = gs
    gdoc = {**doc, "output_uri": folder, "splits": {"train97.1": e}}
    written = tm.write_tfds_metadata(gdoc, folder + "/")
    assert written == [f"{folder}/features.json", f"{folder}/dataset_info.json"]
    info = json.loads(storage.read_text(written[1]))
    assert info["splits"] == tm.split_infos(gdoc, folder)
    # The features were read from the first record on GCS: the same as locally.
    assert json.loads(storage.read_text(written[0])) == tm.features_config(tm.present_features(doc))


# --------------------------------------------------------------------------- a TFDS-prepared source


def tfds_entry(folder: str, split: str, lengths: list[int]) -> dict:
    e = entry(folder, split, lengths)
    name = split.replace(".", "_")
    n = len(lengths)
    for i, s in enumerate(e["shards"]):
        s["path"] = f"{folder}/imagenet2012-{name}.tfrecord-{i:05d}-of-{n:05d}"
    e["layout"] = "tfds:imagenet2012"
    return e


def test_tfds_source_splits_keep_tfds_file_names():
    doc = {
        "source": {"layout": "tfds:imagenet2012", "label_range": [0, 999]},
        "splits": {
            "train12811.simclr": tfds_entry("/o", "train12811.simclr", [2, 2]),
            "train": tfds_entry("/o", "train", [3]),
        },
    }
    assert [(s["name"], s["filepathTemplate"]) for s in tm.split_infos(doc, "/o")] == [
        ("train", "imagenet2012-train.tfrecord-{SHARD_X_OF_Y}"),
        ("train12811_simclr", "imagenet2012-train12811_simclr.tfrecord-{SHARD_X_OF_Y}"),
    ]
    info = tm.dataset_info(doc, "/o")
    assert info["name"] == "imagenet2012"
    assert info["supervisedKeys"] == {
        "tuple": {"items": [{"featureKey": "image"}, {"featureKey": "label"}]}
    }
    feats = tm.features_config(tm.TFDS_REQUIRED_FEATURES, kind="tfds", num_classes=1000)
    flat = feats["featuresDict"]["features"]
    assert sorted(flat) == ["file_name", "image", "label"]
    assert flat["label"]["classLabel"] == {"numClasses": "1000"}
    assert tm.source_num_classes(doc) == 1000
    # A split named in the other layout's way is not where TFDS would look.
    wrong = {**doc, "splits": {"train": entry("/o", "train", [3])}}
    with pytest.raises(tm.TfdsMetadataError, match="not /o/imagenet2012-train.tfrecord-00000"):
        tm.split_infos(wrong, "/o")
    mixed = {
        "splits": {
            "train": {**entry("/o", "train", [1]), "layout": "common"},
            "x": tfds_entry("/o", "x", [1]),
        }
    }
    with pytest.raises(tm.TfdsMetadataError, match="sources of different layouts"):
        tm.split_infos(mixed, "/o")


@pytest.fixture(scope="module")
def tfds_published(tmp_path_factory):
    """A TFDS-layout source: seed 1, a name list, the reshuffle and the validation
    copy, built, verified and published in-process as the DAG does."""
    from support.common import small_spec

    from beam_jobs.source.synthetic import generate

    root = tmp_path_factory.mktemp("tfds_source")
    src = root / "imagenet2012" / "5.1.0"
    generate(small_spec(layout="tfds:imagenet2012"), str(src), workers=1)
    names = []
    for p in sorted(src.glob("imagenet2012-train.tfrecord-*")):
        with open(p, "rb") as f:
            names += [parse_image_record(r, TFDS_KEYS).filename for r in iter_records(f, str(p))]
    (root / "names.txt").write_text("\n".join(names[::9]) + "\n")
    p = bs.params(
        str(src),
        str(root / "out"),
        seeds=[1],
        unsupervised=True,
        copy_validation=True,
        name_lists={"every9th": str(root / "names.txt")},
    )
    run, result = bs.full_run(p)
    return run, bs.manifest(run), result, src, names[::9], p


def test_tfds_source_published_and_read_back(tfds_published):
    import tensorflow_datasets as tfds

    run, doc, result, src, listed, _ = tfds_published
    named = f"train{len(listed)}.every9th"
    assert sorted(doc["splits"]) == sorted(["train", "train97.1", named, "validation"])
    assert doc["source"]["layout"] == "tfds:imagenet2012"
    out = Path(run.output_uri)
    assert result["tfds_metadata"] == [
        str(out / n) for n in ("label.labels.txt", "features.json", "dataset_info.json")
    ]
    # The validation copy: the source's files byte for byte, under the same names.
    for s in doc["splits"]["validation"]["shards"]:
        assert Path(s["path"]).read_bytes() == (src / Path(s["path"]).name).read_bytes()
    builder = tfds.builder_from_directory(str(out))
    assert sorted(builder.info.splits) == sorted(
        ["train", "train97_1", named.replace(".", "_"), "validation"]
    )
    assert builder.info.features["label"].names == (src / "label.labels.txt").read_text().split()
    in_order = tfds.ReadConfig(interleave_cycle_length=1)
    for split, e in doc["splits"].items():
        got = [
            ex["file_name"].decode()
            for ex in tfds.as_numpy(
                builder.as_dataset(
                    split=tm.tfds_split_name(split), shuffle_files=False, read_config=in_order
                )
            )
        ]
        want = []
        for s in e["shards"]:
            with open(s["path"], "rb") as f:
                want += [
                    parse_image_record(r, TFDS_KEYS).filename for r in iter_records(f, s["path"])
                ]
        assert got == want and len(got) == e["num_examples"]
    assert sorted(
        n for s in doc["splits"][named]["shards"] for n in names_in_tfds(s["path"])
    ) == sorted(listed)
    # load_split checks the files under the split's glob in this layout.
    from beam_jobs.publishing.manifest import load_split

    split = load_split(run.manifest_uri, named)
    assert split.paths == [s["path"] for s in doc["splits"][named]["shards"]]
    stray = out / f"imagenet2012-{named.replace('.', '_')}.tfrecord-stray"
    stray.write_bytes(b"")
    try:
        with pytest.raises(
            Exception, match="unexpected file .*tfrecord-stray matches the split's glob"
        ):
            load_split(run.manifest_uri, named)
    finally:
        stray.unlink()


def names_in_tfds(path: str) -> list[str]:
    with open(path, "rb") as f:
        return [parse_image_record(r, TFDS_KEYS).filename for r in iter_records(f, path)]


def test_verification_in_the_tfds_layout_finds_strays_missing_and_reordered(
    tfds_published, monkeypatch
):
    """A new build of a split of a TFDS source, staged and not yet published:
    the verifier looks for its shards under the TFDS names."""
    from beam_jobs.source.tfrecord import frame
    from beam_jobs.verification import verify as verify_mod
    from beam_jobs.verification.verify import VerificationFailed

    run, doc, _, _, _, _ = tfds_published
    split = "train97.1"
    stats_path = Path(run.work_uri) / "stats" / f"{split}.json"
    saved_stats = stats_path.read_bytes()
    published = {s["path"]: Path(s["path"]).read_bytes() for s in doc["splits"][split]["shards"]}
    stats = bs.build(run, split)
    staging = Path(stats["staging"])
    try:
        paths = [s["staged"] for s in stats["shards"]]
        assert [Path(p).name for p in paths] == [
            f"imagenet2012-train97_1.tfrecord-{i:05d}-of-00003" for i in range(3)
        ]
        assert bs.verify(run, split, deep=True)["ok"]
        first = Path(paths[0])
        original = first.read_bytes()
        stray = first.with_name("imagenet2012-train97_1.tfrecord-00003-of-00004")
        common = first.with_name("train97.1-00000-of-00003")  # the other layout's name: not ours
        first.unlink()
        stray.write_bytes(original)
        common.write_bytes(original)
        with pytest.raises(VerificationFailed) as err:
            bs.verify(run, split, deep=False)
        msg = str(err.value)
        assert f"{split}: shard 0 is missing: {first}" in msg
        assert f"{split}: stray file {stray} among the staged shards" in msg
        assert str(common) not in msg
        # Records swapped: the exact check sees the shard; the deep one names the record.
        stray.unlink()
        common.unlink()
        recs = names_and_payloads(original)
        first.write_bytes(b"".join(frame(p) for _, p in [recs[1], recs[0], *recs[2:]]))
        with pytest.raises(VerificationFailed, match=rf"{split}: shard 0 CRC32C is"):
            bs.verify(run, split, deep=False)
        monkeypatch.setattr(verify_mod, "exact_findings", lambda *a, **k: [])
        with pytest.raises(
            VerificationFailed,
            match=rf"{split}: shard 0 index 0 holds "
            rf"{recs[1][0]}, the plan says {recs[0][0]}",
        ):
            bs.verify(run, split, deep=True)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        stats_path.write_bytes(saved_stats)
    # The published split was never touched.
    assert {p: Path(p).read_bytes() for p in published} == published


def names_and_payloads(data: bytes) -> list[tuple[str, bytes]]:
    import io

    from beam_jobs.source.tfrecord import iter_framed

    return [
        (parse_image_record(item.data, TFDS_KEYS).filename, item.data)
        for item in iter_framed(io.BytesIO(data), "<shard>")
    ]


def test_a_rerun_in_the_tfds_layout_skips_what_is_up_to_date(tfds_published):
    run, doc, _, _, _, params = tfds_published
    again = bs.start(params)
    assert again.source["action"] == "cached" and again.source["layout"] == "tfds:imagenet2012"
    assert {s["split"]: s["action"] for s in again.specs} == dict.fromkeys(doc["splits"], "skip")
    assert {s["layout"] for s in again.specs} == {"tfds:imagenet2012"}


def test_an_output_folder_keeps_one_layout(tfds_published, small_source):
    from ssl_splits.tasks import TaskError

    run, _, _, _, _, _ = tfds_published
    with pytest.raises(
        TaskError,
        match=r"holds splits of a source in the tfds:imagenet2012 "
        r"layout .* this source is in the common layout: write "
        "it to another output_uri",
    ):
        bs.start(bs.params(str(small_source), run.output_uri, seeds=[1]))
