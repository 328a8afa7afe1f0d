"""CRC32C combination (``beam_jobs.source.crc32c_combine``): every prediction is
checked against google-crc32c over the real bytes."""

from __future__ import annotations

import random

import google_crc32c
import numpy as np
import pytest

from beam_jobs.source import crc32c_combine as cc
from beam_jobs.source.tfrecord import frame, masked_crc32c


def crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def records(n: int, seed: int, max_len: int = 300) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, max_len)) for _ in range(n)]


@pytest.mark.parametrize("n", [0, 1, 3, 255, 256, 4097, 70_000])
def test_shift_is_crc_of_appended_zeros_minus_their_own(n):
    rng = random.Random(n)
    for _ in range(5):
        a = rng.randbytes(rng.randint(1, 50))
        zeros = bytes(n)
        # crc(A || Z) = shift(crc(A), |Z|) ^ crc(Z)
        got = int(cc.shift(np.array([crc(a)], np.uint32), np.array([n]))[0])
        assert got ^ crc(zeros) == crc(a + zeros)


def test_shift_matches_the_scalar_multiplication_for_large_counts():
    rng = np.random.default_rng(1)
    c = rng.integers(0, 2**32, 50, dtype=np.uint64).astype(np.uint32)
    n = rng.integers(0, 2**40, 50)
    got = cc.shift(c, n)
    for ci, ni, gi in zip(c.tolist(), n.tolist(), got.tolist()):
        # x^(8n) by repeated squaring with the scalar GF(2) product
        p, x, k = 1 << 31, 1 << 23, ni
        while k:
            if k & 1:
                p = cc._multmodp(x, p)
            x = cc._multmodp(x, x)
            k >>= 1
        assert gi == cc._multmodp(p, ci)


def test_shift_refuses_negative_or_huge_counts():
    with pytest.raises(ValueError, match="negative"):
        cc.shift(np.array([1], np.uint32), np.array([-1]))
    with pytest.raises(ValueError, match="too long"):
        cc.shift(np.array([1], np.uint32), np.array([2**50]))


def test_crc_rows_and_masks():
    rows = np.frombuffer(random.Random(3).randbytes(12 * 40), np.uint8).reshape(40, 12)
    assert cc.crc_rows(rows).tolist() == [crc(r.tobytes()) for r in rows]
    values = np.array([0, 1, 0xFFFFFFFF, 0x12345678], np.uint32)
    assert cc.unmask(cc.mask(values)).tolist() == values.tolist()


def test_framed_record_crcs_from_length_and_stored_crc_only():
    recs = records(300, 4) + [b""]
    framed = [frame(r) for r in recs]
    got = cc.framed_record_crcs(
        np.array([len(f) for f in framed]), np.array([masked_crc32c(r) for r in recs], np.uint32)
    )
    assert got.tolist() == [crc(f) for f in framed]


@pytest.mark.parametrize(
    "starts", [[0, 0, 5, 50, 50, 120, 200], [0, 200], [0, 1, 2, 200], [0, 0, 0, 200, 200]]
)
def test_shard_sizes_and_crcs_are_those_of_the_concatenated_records(starts):
    recs = records(200, len(starts))
    framed = [frame(r) for r in recs]
    sizes, crcs = cc.shard_crcs(
        np.array([len(f) for f in framed]),
        np.array([masked_crc32c(r) for r in recs], np.uint32),
        np.array(starts),
    )
    for g in range(len(starts) - 1):
        blob = b"".join(framed[starts[g] : starts[g + 1]])
        assert sizes[g] == len(blob)
        assert int(crcs[g]) == crc(blob), g


def test_order_matters():
    recs = records(4, 9, max_len=2000)
    lengths = np.array([len(r) + 16 for r in recs])
    stored = np.array([masked_crc32c(r) for r in recs], np.uint32)
    _, a = cc.shard_crcs(lengths, stored, np.array([0, 4]))
    swap = [1, 0, 2, 3]
    _, b = cc.shard_crcs(lengths[swap], stored[swap], np.array([0, 4]))
    assert int(a[0]) != int(b[0])
    assert int(b[0]) == crc(b"".join(frame(recs[i]) for i in swap))
