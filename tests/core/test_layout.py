"""Output names in both source layouts (beam_jobs.layout.Naming) and the
detection of a source folder's layout (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_jobs import layout, storage
from beam_jobs.layout import Naming

TFDS = Naming("tfds", "imagenet2012")


@pytest.mark.parametrize(
    "naming, split, prefix, first",
    [
        (Naming(), "train128116.3", "train128116.3", "train128116.3-00000-of-00102"),
        (Naming(), "train", "train", "train-00000-of-00102"),
        (
            TFDS,
            "train128116.3",
            "imagenet2012-train128116_3.tfrecord",
            "imagenet2012-train128116_3.tfrecord-00000-of-00102",
        ),
        (
            TFDS,
            "train12811.simclr",
            "imagenet2012-train12811_simclr.tfrecord",
            "imagenet2012-train12811_simclr.tfrecord-00000-of-00102",
        ),
        (
            TFDS,
            "train",
            "imagenet2012-train.tfrecord",
            "imagenet2012-train.tfrecord-00000-of-00102",
        ),
        (
            TFDS,
            "validation",
            "imagenet2012-validation.tfrecord",
            "imagenet2012-validation.tfrecord-00000-of-00102",
        ),
    ],
)
def test_names_per_layout(naming, split, prefix, first):
    assert naming.file_prefix(split) == prefix
    assert naming.shard_name(split, 0, 102) == first
    assert layout.parse_shard_name(first) == (prefix, 0, 102)
    assert naming.split_glob("/o", split) == f"/o/{prefix}-*"
    assert naming.file_pattern("/o", split, 102) == f"/o/{prefix}-*-of-00102"
    assert Naming.from_spec(naming.spec) == naming


def test_common_layout_functions_are_unchanged():
    assert layout.shard_name("train", 7, 1024) == "train-00007-of-01024"
    assert layout.naming(None) == layout.naming("common") == Naming()
    assert TFDS.spec == "tfds:imagenet2012" and Naming().spec == "common"


def test_split_globs_never_take_another_splits_files(tmp_path):
    for naming in (Naming(), TFDS):
        folder = tmp_path / naming.kind
        folder.mkdir()
        for split, n in (
            ("train", 4),
            ("train128116.1", 2),
            ("train12811.simclr", 1),
            ("validation", 2),
        ):
            for i in range(n):
                (folder / naming.shard_name(split, i, n)).write_bytes(b"")
        (folder / f"{naming.file_prefix('train')}-stray").write_bytes(b"")
        train = naming.split_files(str(folder), "train")
        assert [Path(f.path).name for f in train] == [
            naming.shard_name("train", i, 4) for i in range(4)
        ]
        listed = storage.list_files(naming.split_glob(str(folder), "train"))
        assert sorted(
            Path(p).name for p in naming.glob_strays(str(folder), "train", listed)
        ) == sorted(
            [f"{naming.file_prefix('train')}-stray"]
            + [naming.shard_name("train", i, 4) for i in range(4)]
        )
        other = layout.parse_shard_name(naming.shard_name("train128116.1", 0, 2))
        assert other is not None and other[0] != naming.file_prefix("train")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tfds", "expected common or tfds:DATASET"),
        ("s3:imagenet", "expected common or tfds:DATASET"),
        ("tfds:ImageNet", "must be snake_case"),
    ],
)
def test_bad_layout_specs(spec, message):
    with pytest.raises(layout.LayoutError, match=message):
        Naming.from_spec(spec)


def test_tfds_split_names():
    assert layout.tfds_split_name("train128116.1") == "train128116_1"
    with pytest.raises(ValueError, match="no TFDS name"):
        layout.tfds_split_name("train 1")


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    "files, expected",
    [
        (["train-00000-of-00002", "train-00001-of-00002", "validation-00000-of-00001"], "common"),
        (
            ["imagenet2012-train.tfrecord-00000-of-00002", "dataset_info.json", "label.labels.txt"],
            "tfds:imagenet2012",
        ),
        (["imagenet2012_subset-train.tfrecord-00000-of-00001"], "tfds:imagenet2012_subset"),
        ([], "common"),  # nothing to detect: validation says no shards were found
        (["README.txt"], "common"),
    ],
)
def test_detect_source(tmp_path, files, expected):
    assert layout.detect_source(str(touch(tmp_path / "src", *files))).spec == expected


def test_detect_source_refuses_ambiguous_folders(tmp_path):
    both = touch(
        tmp_path / "both", "train-00000-of-00001", "imagenet2012-train.tfrecord-00000-of-00001"
    )
    with pytest.raises(
        layout.LayoutError,
        match=r"holds both layouts: train-00000-of-00001 "
        r"\(common converters\) and imagenet2012-train",
    ):
        layout.detect_source(str(both))
    two = touch(
        tmp_path / "two", "a-train.tfrecord-00000-of-00001", "b-train.tfrecord-00000-of-00001"
    )
    with pytest.raises(layout.LayoutError, match="TFDS shards of several datasets"):
        layout.detect_source(str(two))


@pytest.mark.gcs
def test_detect_source_on_gcs(gcs_bucket):
    for name in ("imagenet2012-train.tfrecord-00000-of-00001", "features.json"):
        storage.write_bytes(f"{gcs_bucket}/tfds/{name}", b"")
    storage.write_bytes(f"{gcs_bucket}/common/train-00000-of-00001", b"")
    assert layout.detect_source(f"{gcs_bucket}/tfds").spec == "tfds:imagenet2012"
    assert layout.detect_source(f"{gcs_bucket}/common").spec == "common"
