"""TFRecord framing: round trip, masked CRC32C, offsets, every error kind,
and agreement with TensorFlow's own writer and reader."""

from __future__ import annotations

import io
import os
import struct

import google_crc32c
import pytest

from beam_jobs.source import tfrecord
from beam_jobs.source.tfrecord import (
    HEADER_LEN,
    OVERHEAD,
    Framed,
    RecordError,
    Writer,
    check_framed,
    frame,
    iter_framed,
    iter_records,
    masked_crc32c,
)

# Payloads of assorted sizes, including empty and one larger than a typical
# read buffer chunk boundary.
PAYLOADS = [b"", b"a", b"hello tfrecord", bytes(range(256)) * 3, os.urandom(70_000), b"\x00" * 17]


def _crc32c_reference(data: bytes) -> int:
    """Bitwise CRC32C (Castagnoli, reflected polynomial 0x82F63B78): slow but
    independent of google-crc32c."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _file_of(payloads: list[bytes]) -> bytes:
    return b"".join(frame(p) for p in payloads)


def _offsets(payloads: list[bytes]) -> list[int]:
    out, pos = [], 0
    for p in payloads:
        out.append(pos)
        pos += len(p) + OVERHEAD
    return out


def _read_all(buf: bytes, path: str = "mem://shard") -> list[Framed | RecordError]:
    return list(iter_framed(io.BufferedReader(io.BytesIO(buf)), path))


# --------------------------------------------------------------------------- CRC


@pytest.mark.parametrize(
    "data, expected",
    [
        # The standard CRC-32C check value and RFC 3720 (iSCSI) B.4 vectors.
        (b"123456789", 0xE3069283),
        (b"\x00" * 32, 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
        (b"", 0x00000000),
    ],
)
def test_crc32c_known_values(data, expected):
    assert tfrecord.crc32c(data) == expected
    assert _crc32c_reference(data) == expected


@pytest.mark.parametrize(
    "crc, expected",
    [
        # masked = rotr(crc, 15) + 0xA282EAD8 (mod 2**32), worked by hand.
        (0x00000000, 0xA282EAD8),
        (0x00000001, 0xA284EAD8),  # bit 0 rotates to bit 17
        (0x00008000, 0xA282EAD9),  # bit 15 rotates to bit 0
        (0xFFFFFFFF, 0xA282EAD7),  # wraps modulo 2**32
        (0x80000000, 0xA283EAD8),  # bit 31 rotates to bit 16
    ],
)
def test_mask_known_values(crc, expected):
    assert tfrecord.mask(crc) == expected


def test_masked_crc32c_is_mask_of_crc():
    data = b"123456789"
    assert tfrecord.masked_crc32c(data) == tfrecord.mask(_crc32c_reference(data))


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_frame_layout(payload):
    framed = frame(payload)
    assert len(framed) == len(payload) + OVERHEAD
    (length,) = struct.unpack("<Q", framed[:8])
    assert length == len(payload)
    (len_crc,) = struct.unpack("<I", framed[8:12])
    assert len_crc == tfrecord.mask(_crc32c_reference(framed[:8]))
    assert framed[12 : 12 + len(payload)] == payload
    (data_crc,) = struct.unpack("<I", framed[-4:])
    assert data_crc == tfrecord.mask(_crc32c_reference(payload))


def test_round_trip_with_offsets(tmp_path):
    path = tmp_path / "shard"
    path.write_bytes(_file_of(PAYLOADS))
    with open(path, "rb") as f:
        items = list(iter_framed(f, str(path)))
    assert all(isinstance(i, Framed) for i in items), items
    assert [i.data for i in items] == PAYLOADS
    assert [i.offset for i in items] == _offsets(PAYLOADS)
    assert [i.length for i in items] == [len(p) + OVERHEAD for p in PAYLOADS]
    raw = path.read_bytes()
    for item in items:
        # offset/length address exactly the framed record in the file
        assert raw[item.offset : item.offset + item.length] == frame(item.data)
        assert (
            item.data_crc
            == struct.unpack("<I", raw[item.offset + item.length - 4 : item.offset + item.length])[
                0
            ]
        )
    with open(path, "rb") as f:
        assert list(iter_records(f, str(path))) == PAYLOADS


def test_iter_framed_start_offset():
    buf = _file_of(PAYLOADS)
    skip = _offsets(PAYLOADS)[2]
    f = io.BytesIO(buf)
    f.seek(skip)
    items = list(iter_framed(f, "x", start=skip))
    assert [i.offset for i in items] == _offsets(PAYLOADS)[2:]
    assert [i.data for i in items] == PAYLOADS[2:]


def test_empty_file_has_no_records():
    assert _read_all(b"") == []


def test_check_framed_accepts_each_record():
    buf = _file_of(PAYLOADS)
    for off, payload in zip(_offsets(PAYLOADS), PAYLOADS):
        got = check_framed(buf[off : off + len(payload) + OVERHEAD], "p", off)
        assert (got.offset, got.length, got.data) == (off, len(payload) + OVERHEAD, payload)


# --------------------------------------------------------------------------- errors


def _flip(buf: bytes, pos: int) -> bytes:
    return buf[:pos] + bytes([buf[pos] ^ 0x40]) + buf[pos + 1 :]


def test_truncated_header():
    buf = _file_of(PAYLOADS[:3]) + frame(b"next")[:5]
    items = _read_all(buf, "/data/train-00001-of-00002")
    assert [i.data for i in items[:-1]] == PAYLOADS[:3]
    err = items[-1]
    assert isinstance(err, RecordError)
    assert (err.kind, err.fatal, err.offset) == (
        "truncated_header",
        True,
        len(_file_of(PAYLOADS[:3])),
    )
    assert "/data/train-00001-of-00002" in str(err)
    assert f"byte offset {err.offset}" in str(err)


@pytest.mark.parametrize("cut", [1, 4, 5, 100])
def test_truncated_record(cut):
    payloads = [b"first", b"x" * 200]
    buf = _file_of(payloads)[:-cut]
    items = _read_all(buf, "shard")
    assert isinstance(items[0], Framed) and items[0].data == b"first"
    err = items[1]
    assert isinstance(err, RecordError)
    assert (err.kind, err.fatal, err.offset) == ("truncated_record", True, _offsets(payloads)[1])
    assert len(items) == 2


@pytest.mark.parametrize("pos", [0, 7, 8, 11], ids=["len0", "len7", "crc0", "crc3"])
def test_length_crc_is_fatal(pos):
    offsets = _offsets(PAYLOADS)
    buf = _flip(_file_of(PAYLOADS), offsets[2] + pos)
    items = _read_all(buf)
    assert [i.data for i in items[:2]] == PAYLOADS[:2]
    err = items[2]
    assert isinstance(err, RecordError)
    assert (err.kind, err.fatal, err.offset) == ("length_crc", True, offsets[2])
    assert len(items) == 3, "nothing can be read after a bad length"


@pytest.mark.parametrize("where", ["data_start", "data_end", "footer"])
def test_data_crc_is_not_fatal_and_reading_continues(where):
    offsets = _offsets(PAYLOADS)
    bad = 3
    start = offsets[bad] + HEADER_LEN
    pos = {
        "data_start": start,
        "data_end": start + len(PAYLOADS[bad]) - 1,
        "footer": start + len(PAYLOADS[bad]) + 2,
    }[where]
    items = _read_all(_flip(_file_of(PAYLOADS), pos), "shard-3")
    assert len(items) == len(PAYLOADS)
    err = items[bad]
    assert isinstance(err, RecordError)
    assert (err.kind, err.fatal, err.offset) == ("data_crc", False, offsets[bad])
    assert "shard-3" in str(err) and f"byte offset {offsets[bad]}" in str(err)
    good = [i for k, i in enumerate(items) if k != bad]
    assert all(isinstance(i, Framed) for i in good)
    assert [i.data for i in good] == PAYLOADS[:bad] + PAYLOADS[bad + 1 :]
    assert [i.offset for i in good] == offsets[:bad] + offsets[bad + 1 :]


def test_too_long_length_is_fatal():
    length = struct.pack("<Q", tfrecord.MAX_RECORD_LEN + 1)
    header = length + struct.pack("<I", tfrecord.masked_crc32c(length))
    items = _read_all(frame(b"ok") + header + b"\x00" * 64)
    assert items[0].data == b"ok"
    err = items[1]
    assert (err.kind, err.fatal, err.offset) == ("too_long", True, len(frame(b"ok")))


def test_iter_records_raises_first_problem():
    offsets = _offsets(PAYLOADS)
    buf = _flip(_file_of(PAYLOADS), offsets[1] + HEADER_LEN)
    with pytest.raises(RecordError) as info:
        list(iter_records(io.BytesIO(buf), "p"))
    assert (info.value.kind, info.value.offset) == ("data_crc", offsets[1])


@pytest.mark.parametrize(
    "mutate, kind",
    [
        (lambda b: b[:-1], "truncated_record"),
        (lambda b: b + b"\x00", "truncated_record"),
        (lambda b: b[:6], "truncated_header"),
        (lambda b: _flip(b, 3), "length_crc"),
        (lambda b: _flip(b, HEADER_LEN + 1), "data_crc"),
    ],
    ids=["short", "long", "header", "length_crc", "data_crc"],
)
def test_check_framed_errors(mutate, kind):
    with pytest.raises(RecordError) as info:
        check_framed(mutate(frame(b"payload bytes")), "gs://b/train-00000-of-00001", 1234)
    assert info.value.kind == kind
    assert info.value.offset == 1234
    assert "gs://b/train-00000-of-00001 at byte offset 1234" in str(info.value)


# --------------------------------------------------------------------------- Writer


def test_writer_counts_and_crc(tmp_path):
    path = tmp_path / "out"
    copied = frame(b"copied as is")
    with open(path, "wb") as f:
        w = Writer(f)
        for p in PAYLOADS:
            w.write(p)
        w.write_framed(copied)
    raw = path.read_bytes()
    assert raw == _file_of(PAYLOADS) + copied
    assert w.num_records == len(PAYLOADS) + 1
    assert w.num_bytes == len(raw)
    assert w.crc32c == int(google_crc32c.value(raw))


def test_writer_empty():
    w = Writer(io.BytesIO())
    assert (w.num_records, w.num_bytes, w.crc32c) == (0, 0, 0)


# --------------------------------------------------------------------------- TensorFlow


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


@pytest.mark.xdist_group("tensorflow")
def test_tensorflow_writer_bytes_equal_ours(tf, tmp_path):
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for p in PAYLOADS:
            w.write(p)
    with open(path, "rb") as f:
        tf_bytes = f.read()
    assert tf_bytes == _file_of(PAYLOADS)
    # and our reader accepts TensorFlow's file with the right offsets
    with open(path, "rb") as f:
        items = list(iter_framed(f, path))
    assert [i.offset for i in items] == _offsets(PAYLOADS)


@pytest.mark.xdist_group("tensorflow")
def test_tensorflow_reads_our_file(tf, tmp_path):
    path = tmp_path / "ours.tfrecord"
    with open(path, "wb") as f:
        w = Writer(f)
        for p in PAYLOADS:
            w.write(p)
    got = [t.numpy() for t in tf.data.TFRecordDataset(str(path))]
    assert got == PAYLOADS


@pytest.mark.xdist_group("tensorflow")
def test_tensorflow_rejects_what_we_reject(tf, tmp_path):
    """A data byte flipped: TensorFlow (which checks CRCs) fails too, so our
    data_crc is the same check, not a stricter or looser one."""
    offsets = _offsets(PAYLOADS)
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(_flip(_file_of(PAYLOADS), offsets[1] + HEADER_LEN))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


# --------------------------------------------------------------------------- batches


def test_mask_array_matches_mask():
    import numpy as np

    values = [0, 1, 0xFFFFFFFF, 0x12345678, 0xA282EAD8, 0x80000000]
    got = tfrecord.mask_array(np.array(values, dtype=np.uint32))
    assert got.dtype == np.uint32
    assert got.tolist() == [tfrecord.mask(v) for v in values]


def test_check_records_accepts_good_records():
    import numpy as np

    framed = [frame(p) for p in PAYLOADS]
    stored, bad, why = tfrecord.check_records(framed, np.array([len(f) for f in framed]))
    assert (bad, why) == (-1, "")
    assert stored.tolist() == [check_framed(f, "p", 0).data_crc for f in framed]


@pytest.mark.parametrize(
    "flip_at, expect",
    [
        (0, "length field says"),
        (9, "length field fails its CRC32C check"),
        (HEADER_LEN + 2, "data CRC32C mismatch"),
        (-1, "data CRC32C mismatch"),
    ],
    ids=["length", "length_crc", "data", "footer"],
)
def test_check_records_names_the_first_bad_record(flip_at, expect):
    import numpy as np

    framed = [frame(p) for p in PAYLOADS]
    target = 3
    framed[target] = _flip(framed[target], flip_at % len(framed[target]))
    framed[4] = _flip(framed[4], HEADER_LEN)  # a later bad record is not the one reported
    lengths = np.array([len(frame(p)) for p in PAYLOADS])
    _, bad, why = tfrecord.check_records(framed, lengths)
    assert bad == target
    assert expect in why


def test_check_records_rejects_records_of_other_lengths():
    import numpy as np

    framed = [frame(b"abc"), frame(b"defg")]
    with pytest.raises(ValueError, match="do not have the given framed lengths"):
        tfrecord.check_records(framed, np.array([len(framed[0]), 5]))
    with pytest.raises(ValueError, match="do not have the given framed lengths"):
        tfrecord.check_records(framed[:1], np.array([len(f) for f in framed]))


def test_write_framed_batch_equals_one_by_one(tmp_path):
    framed = [frame(p) for p in PAYLOADS]
    a, b = io.BytesIO(), io.BytesIO()
    w1, w2 = Writer(a), Writer(b)
    for f in framed:
        w1.write_framed(f)
    w2.write_framed_batch(framed[:2])
    w2.write_framed_batch(framed[2:])
    w2.write_framed_batch([])
    assert a.getvalue() == b.getvalue()
    assert (w1.num_records, w1.num_bytes, w1.crc32c) == (w2.num_records, w2.num_bytes, w2.crc32c)


# --------------------------------------------------------------------------- scan_framed


def _both(data: bytes, chunk: int):
    from beam_jobs.source.tfrecord import scan_framed

    def norm(items):
        return [
            (
                type(i).__name__,
                i.offset,
                getattr(i, "kind", None),
                getattr(i, "length", None),
                getattr(i, "data", None),
                getattr(i, "data_crc", None),
                getattr(i, "fatal", None),
            )
            for i in items
        ]

    return (
        norm(scan_framed(io.BytesIO(data), "f", chunk_bytes=chunk)),
        norm(iter_framed(io.BytesIO(data), "f")),
    )


@pytest.mark.parametrize("chunk", [13, 100, 4096, 1 << 20])
def test_scan_framed_is_iter_framed_on_good_and_damaged_files(chunk):
    """The bulk scanner yields exactly what the record-by-record reader does:
    same records, same errors at the same offsets, whatever the chunk size."""
    import random

    rng = random.Random(chunk)
    payloads = [rng.randbytes(rng.randint(0, 700)) for _ in range(60)]
    good = b"".join(frame(p) for p in payloads)
    cases = [good, b"", good[:5], good[:-3]]
    for _ in range(40):
        data = bytearray(good)
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        cases.append(bytes(data))
        cases.append(bytes(data[: rng.randrange(len(data))]))
    # A length that claims more than MAX_RECORD_LEN, with a valid length CRC.
    huge = struct.pack("<Q", (1 << 30) + 1)
    cases.append(good[:40] + huge + struct.pack("<I", masked_crc32c(huge)) + b"x" * 50)
    for data in cases:
        scanned, reference = _both(data, chunk)
        assert scanned == reference


@pytest.mark.parametrize("chunk", [13, 4096, 1 << 20])
def test_scan_batches_hold_what_iter_framed_yields(chunk):
    """Each batch is a run of records as columns (bad data CRCs flagged),
    a fatal error comes last: together, iter_framed's items in order."""
    import random

    from beam_jobs.source.tfrecord import FramedBatch, scan_batches

    rng = random.Random(chunk + 1)
    payloads = [rng.randbytes(rng.randint(0, 700)) for _ in range(60)]
    good = bytearray(b"".join(frame(p) for p in payloads))
    offsets = _offsets(payloads)
    good[offsets[8] - 1] ^= 1  # record 7's stored data CRC: a bad data CRC, not fatal
    for data in (bytes(good), bytes(good[:-3])):
        items: list = []
        for batch in scan_batches(io.BytesIO(data), "f", chunk_bytes=chunk):
            if isinstance(batch, RecordError):
                items.append(batch)
                continue
            assert isinstance(batch, FramedBatch)
            n = len(batch.data)
            assert len(batch.offsets) == len(batch.lengths) == len(batch.data_crc) == n
            for i in range(n):
                if batch.crc_ok[i]:
                    off, length = int(batch.offsets[i]), int(batch.lengths[i])
                    items.append(Framed(off, length, batch.data[i], int(batch.data_crc[i])))
                else:
                    items.append(("bad data crc", int(batch.offsets[i])))
        reference = [
            ("bad data crc", i.offset) if isinstance(i, RecordError) and i.kind == "data_crc" else i
            for i in iter_framed(io.BytesIO(data), "f")
        ]
        assert [(i.kind, i.offset) if isinstance(i, RecordError) else i for i in items] == [
            (i.kind, i.offset) if isinstance(i, RecordError) else i for i in reference
        ]
        assert any(isinstance(i, tuple) for i in items)
