"""tf.train.Example without TensorFlow: round trip, wire compatibility with
TensorFlow's own class, and every ExampleError kind."""

from __future__ import annotations

import os

import pytest

from beam_jobs.example_proto import (
    ExampleError,
    ImageRecord,
    build_example,
    parse_features,
    parse_image_record,
)

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00fake jpeg body\xff\xd9"


def image_features(**overrides):
    """The common converter's features for one record; None drops a feature."""
    feats = {
        "image/height": 8,
        "image/width": 8,
        "image/colorspace": b"RGB",
        "image/channels": 3,
        "image/class/label": 417,
        "image/class/synset": b"n02692877",
        "image/class/text": b"airship, dirigible",
        "image/format": b"JPEG",
        "image/filename": b"n02692877_1234.JPEG",
        "image/encoded": JPEG,
    }
    feats.update(overrides)
    return {k: v for k, v in feats.items() if v is not None}


# A mix of every value kind build_example accepts.
MIXED = {
    "bytes": b"\x00\x01\xff",
    "str": "h\u00e9llo",
    "int": -7,
    "big": 2**40 + 3,
    "float": 0.5,
    "bytes_list": [b"a", b"", b"ccc"],
    "int_list": [1, -2, 3],
    "float_list": [1.5, -2.25],
    "str_list": ["x", "y"],
}


def _expected_values(value):
    values = value if isinstance(value, list) else [value]
    return [v.encode("utf-8") if isinstance(v, str) else v for v in values]


# --------------------------------------------------------------------------- round trip


def test_build_parse_round_trip():
    data = build_example(image_features())
    rec = parse_image_record(data)
    assert rec == ImageRecord(
        filename="n02692877_1234.JPEG", label=417, synset="n02692877", encoded_len=len(JPEG)
    )
    feats = parse_features(data)
    assert feats["image/encoded"] == [JPEG]
    assert feats["image/height"] == [8]
    assert feats["image/class/text"] == [b"airship, dirigible"]
    assert set(feats) == set(image_features())


def test_parse_features_every_kind():
    feats = parse_features(build_example(MIXED))
    assert feats == {k: _expected_values(v) for k, v in MIXED.items()}


def test_build_is_deterministic_and_independent_of_insertion_order():
    a = build_example(MIXED)
    b = build_example(dict(reversed(list(MIXED.items()))))
    assert a == b == build_example(MIXED)


def test_synset_is_optional():
    rec = parse_image_record(build_example(image_features(**{"image/class/synset": None})))
    assert rec.synset == ""
    assert rec.label == 417


@pytest.mark.parametrize(
    "name", ["n01440764_10026.JPEG", "ILSVRC2012_val_00000001.JPEG", "dir/sub/\u00e9t\u00e9.jpg"]
)
def test_filenames_kept_exactly(name):
    rec = parse_image_record(build_example(image_features(**{"image/filename": name})))
    assert rec.filename == name


# --------------------------------------------------------------------------- errors


ERROR_CASES = [
    # (id, record bytes, kind, text the message must contain)
    (
        "missing filename",
        build_example(image_features(**{"image/filename": None})),
        "missing_feature",
        "image/filename",
    ),
    (
        "missing encoded",
        build_example(image_features(**{"image/encoded": None})),
        "missing_feature",
        "image/encoded",
    ),
    (
        "missing label",
        build_example(image_features(**{"image/class/label": None})),
        "missing_feature",
        "image/class/label",
    ),
    (
        "filename is int64",
        build_example(image_features(**{"image/filename": 5})),
        "wrong_type",
        "image/filename",
    ),
    (
        "label is bytes",
        build_example(image_features(**{"image/class/label": b"417"})),
        "wrong_type",
        "image/class/label",
    ),
    (
        "label is float",
        build_example(image_features(**{"image/class/label": 417.0})),
        "wrong_type",
        "image/class/label",
    ),
    (
        "two labels",
        build_example(image_features(**{"image/class/label": [1, 2]})),
        "wrong_type",
        "2 values",
    ),
    (
        "two filenames",
        build_example(image_features(**{"image/filename": [b"a.JPEG", b"b.JPEG"]})),
        "wrong_type",
        "image/filename",
    ),
    (
        "synset is int64",
        build_example(image_features(**{"image/class/synset": 3})),
        "wrong_type",
        "image/class/synset",
    ),
    (
        "empty image",
        build_example(image_features(**{"image/encoded": b""})),
        "empty_image",
        "image/encoded",
    ),
    (
        "not an example: text",
        b"this is not a protocol buffer",
        "not_an_example",
        "tf.train.Example",
    ),
    ("not an example: jpeg", JPEG, "not_an_example", "tf.train.Example"),
    (
        "not an example: truncated",
        build_example(image_features())[:-5],
        "not_an_example",
        "tf.train.Example",
    ),
    (
        "non-UTF-8 filename",
        build_example(image_features(**{"image/filename": b"n0_\xff\xfe.JPEG"})),
        "bad_filename",
        "UTF-8",
    ),
    (
        "empty filename",
        build_example(image_features(**{"image/filename": b""})),
        "bad_filename",
        "empty",
    ),
    (
        "comma in filename",
        build_example(image_features(**{"image/filename": b"a,b.JPEG"})),
        "bad_filename",
        "','",
    ),
    (
        "newline in filename",
        build_example(image_features(**{"image/filename": b"a\nb.JPEG"})),
        "bad_filename",
        "newline",
    ),
    ("empty message", b"", "missing_feature", "image/encoded"),
]


@pytest.mark.parametrize(
    "data, kind, text", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_example_errors(data, kind, text):
    with pytest.raises(ExampleError) as info:
        parse_image_record(data)
    assert info.value.kind == kind
    assert text in str(info.value)
    assert isinstance(info.value, ValueError)


def test_feature_without_value_kind_is_wrong_type():
    """A feature present but with no list set (TF writes these for empty lists)."""
    from beam_jobs.example_proto import Example

    ex = Example()
    ex.ParseFromString(build_example(image_features()))
    ex.features.feature["image/filename"].Clear()
    with pytest.raises(ExampleError) as info:
        parse_image_record(ex.SerializeToString())
    assert info.value.kind == "wrong_type"
    assert "empty" in str(info.value)


# --------------------------------------------------------------------------- TensorFlow


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def _tf_example(tf, features):
    ex = tf.train.Example()
    for key, value in features.items():
        values = _expected_values(value)
        feat = ex.features.feature[key]
        if isinstance(values[0], bytes):
            feat.bytes_list.value.extend(values)
        elif isinstance(values[0], float):
            feat.float_list.value.extend(values)
        else:
            feat.int64_list.value.extend(values)
    return ex


CASES = {"image": image_features(), "mixed": MIXED}


@pytest.mark.xdist_group("tensorflow")
@pytest.mark.parametrize("case", sorted(CASES))
def test_bytes_equal_tensorflow_deterministic_serialization(tf, case):
    ours = build_example(CASES[case])
    theirs = _tf_example(tf, CASES[case]).SerializeToString(deterministic=True)
    assert ours == theirs


@pytest.mark.xdist_group("tensorflow")
@pytest.mark.parametrize("case", sorted(CASES))
def test_tensorflow_parses_ours_field_for_field(tf, case):
    parsed = tf.train.Example.FromString(build_example(CASES[case]))
    assert parsed == _tf_example(tf, CASES[case])
    fmap = parsed.features.feature
    assert set(fmap) == set(CASES[case])
    for key, value in CASES[case].items():
        kind = fmap[key].WhichOneof("kind")
        got = list(getattr(fmap[key], kind).value)
        assert got == _expected_values(value), key


@pytest.mark.xdist_group("tensorflow")
@pytest.mark.parametrize("case", sorted(CASES))
def test_we_parse_tensorflow_serialized(tf, case):
    # TensorFlow's default (non-deterministic) serialization: map order may differ.
    data = _tf_example(tf, CASES[case]).SerializeToString()
    assert parse_features(data) == {k: _expected_values(v) for k, v in CASES[case].items()}


@pytest.mark.xdist_group("tensorflow")
def test_image_record_from_tensorflow_and_tf_parse_single_example(tf):
    data = _tf_example(tf, image_features()).SerializeToString()
    assert parse_image_record(data) == ImageRecord(
        "n02692877_1234.JPEG", 417, "n02692877", len(JPEG)
    )
    # TensorFlow's graph-side parser reads our bytes too (what training jobs use).
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    }
    got = tf.io.parse_single_example(build_example(image_features()), spec)
    assert got["image/encoded"].numpy() == JPEG
    assert got["image/filename"].numpy() == b"n02692877_1234.JPEG"
    assert int(got["image/class/label"].numpy()) == 417
