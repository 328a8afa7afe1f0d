"""tf.train.Example without TensorFlow: round trip, wire compatibility with
TensorFlow's own class, and every ExampleError kind."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from beam_jobs.source.example_proto import (
    TFDS_KEYS,
    ExampleError,
    ImageRecord,
    build_example,
    image_columns,
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
    from beam_jobs.source.example_proto import Example

    ex = Example()
    ex.ParseFromString(build_example(image_features()))
    ex.features.feature["image/filename"].Clear()
    with pytest.raises(ExampleError) as info:
        parse_image_record(ex.SerializeToString())
    assert info.value.kind == "wrong_type"
    assert "empty" in str(info.value)


# --------------------------------------------------------------------------- image_columns
#
# The validation job's fast path: whenever image_columns vouches for a batch,
# each record's fields are what parse_image_record returns; anything else it
# declines (None), and the job parses record by record.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _entry(key: bytes, feature: bytes) -> bytes:
    """One serialized Features map entry (key, Feature bytes)."""
    body = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(body)) + body


def _with_entries(example: bytes, *entries: bytes) -> bytes:
    """``example`` with more map entries appended to its Features."""
    length, pos = 0, 1
    for shift in range(0, 64, 7):
        length |= (example[pos] & 0x7F) << shift
        pos += 1
        if not example[pos - 1] & 0x80:
            break
    features = example[pos : pos + length] + b"".join(entries)
    return b"\x0a" + _varint(len(features)) + features


def _entry_value_twice(key: bytes, first: bytes, second: bytes) -> bytes:
    """A map entry whose value field comes twice."""
    body = b"\x0a" + _varint(len(key)) + key
    for feature in (first, second):
        body += b"\x12" + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(body)) + body


def _bytes_feature(*values: bytes) -> bytes:
    items = b"".join(b"\x0a" + _varint(len(v)) + v for v in values)
    return b"\x0a" + _varint(len(items)) + items


ODD_BUT_VALID = {
    "extra features of every kind": build_example(
        image_features(**{"x/bytes": [b"a", b""], "x/floats": [1.5, -2.0], "x/ints": [1, 2, 3]})
    ),
    "no synset": build_example(image_features(**{"image/class/synset": None})),
    "empty synset value": build_example(image_features(**{"image/class/synset": b""})),
    "unicode file name": build_example(
        image_features(**{"image/filename": "d\u00e9j\u00e0/\u6f22 \U0001f600.JPEG"})
    ),
    "space and tab in the name": build_example(
        image_features(**{"image/filename": b"a b\tc.JPEG"})
    ),
    "one-byte image": build_example(image_features(**{"image/encoded": b"\x00"})),
    "negative label": build_example(image_features(**{"image/class/label": -5})),
    "large label": build_example(image_features(**{"image/class/label": 2**40})),
    "only the required features": build_example(
        {"image/encoded": JPEG, "image/filename": b"a.JPEG", "image/class/label": 1}
    ),
    # The same key twice in the map: the last entry wins (protobuf's rule).
    "file name entry repeated": _with_entries(
        build_example(image_features()), _entry(b"image/filename", _bytes_feature(b"z.JPEG"))
    ),
    # Entries in another order than deterministic serialization gives.
    "entries out of order": _with_entries(
        build_example({"image/class/label": 7, "image/filename": b"b.JPEG"}),
        _entry(b"image/encoded", _bytes_feature(JPEG)),
    ),
    # An unknown field after the features (kept by protobuf, ignored here).
    "unknown field": build_example(image_features()) + b"\x10\x01",
}

# Valid for parse_image_record, but not plainly well-formed: declined.
VALID_BUT_DECLINED = {
    "non-UTF-8 synset": build_example(image_features(**{"image/class/synset": b"n\xff\xfe"})),
}


@pytest.mark.parametrize("data", ODD_BUT_VALID.values(), ids=list(ODD_BUT_VALID))
def test_image_columns_agree_with_parse_image_record(data):
    rec = parse_image_record(data)
    cols = image_columns([data])
    assert cols is not None
    assert cols.filename.to_pylist() == [rec.filename]
    assert cols.label.tolist() == [rec.label]
    assert cols.synset.to_pylist() == [rec.synset]


def test_image_columns_of_a_batch_agree_with_parse_image_record():
    datas = list(ODD_BUT_VALID.values()) * 3
    cols = image_columns(datas)
    assert cols is not None
    recs = [parse_image_record(d) for d in datas]
    assert cols.filename.to_pylist() == [r.filename for r in recs]
    assert cols.label.tolist() == [r.label for r in recs]
    assert cols.synset.to_pylist() == [r.synset for r in recs]
    assert cols.filename.type == pa.string() and cols.synset.type == pa.string()
    assert cols.label.dtype == np.int64


def test_image_columns_with_tfds_keys():
    data = build_example({"image": JPEG, "file_name": b"n0_1.JPEG", "label": 0, "extra": 3})
    rec = parse_image_record(data, TFDS_KEYS)
    cols = image_columns([data], TFDS_KEYS)
    assert cols is not None
    assert (cols.filename.to_pylist(), cols.label.tolist(), cols.synset.to_pylist()) == (
        [rec.filename],
        [rec.label],
        [""],
    )
    # TFDS keys do not read image/class/synset, whatever it holds.
    odd = build_example(
        {"image": JPEG, "file_name": b"a.JPEG", "label": 2, "image/class/synset": 5}
    )
    assert image_columns([odd], TFDS_KEYS).synset.to_pylist() == [""]  # type: ignore[union-attr]
    # Common records in a TFDS-layout source: declined (missing_feature record by record).
    assert image_columns([build_example(image_features())], TFDS_KEYS) is None


ENTRY_VALUE_TWICE = _with_entries(
    build_example(image_features(**{"image/filename": None})),
    # One map entry whose value field comes twice: protobuf merges them, so the
    # name has two values (wrong_type), though the last value alone is fine.
    _entry_value_twice(b"image/filename", _bytes_feature(b"a.J"), _bytes_feature(b"b.J")),
)


@pytest.mark.parametrize(
    "data",
    [c[1] for c in ERROR_CASES] + list(VALID_BUT_DECLINED.values()) + [ENTRY_VALUE_TWICE],
    ids=[c[0] for c in ERROR_CASES] + list(VALID_BUT_DECLINED) + ["entry value twice"],
)
def test_image_columns_decline_what_is_not_plainly_well_formed(data):
    good = build_example(image_features())
    assert image_columns([good, data, good]) is None
    assert image_columns([data]) is None


def test_entry_value_twice_is_wrong_type():
    with pytest.raises(ExampleError) as info:
        parse_image_record(ENTRY_VALUE_TWICE)
    assert info.value.kind == "wrong_type" and "2 values" in str(info.value)


def test_image_columns_never_disagree_with_parse_image_record_on_damaged_bytes():
    """Random bit flips, byte changes and cuts of valid records: image_columns
    either declines or gives exactly parse_image_record's fields (which then
    must not raise)."""
    import random

    rng = random.Random(16)
    bases = list(ODD_BUT_VALID.values())
    vouched = 0
    for _ in range(3000):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[pos] ^= 1 << rng.randrange(8)
            else:
                data[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)) :]
        cols = image_columns([bytes(data)])
        if cols is None:
            continue
        vouched += 1
        rec = parse_image_record(bytes(data))
        assert (cols.filename.to_pylist(), cols.label.tolist(), cols.synset.to_pylist()) == (
            [rec.filename],
            [rec.label],
            [rec.synset],
        )
    assert vouched > 100  # the damage often hits only the image bytes


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
