"""CRC32C of a whole TFRecord file from its records' lengths and stored CRCs.

A framed record is ``uint64 length | masked CRC32C(length) | data | masked
CRC32C(data)``. Its CRC32C therefore follows from the payload length and the
data CRC stored in its footer alone, and the CRC32C of a file that is a
sequence of framed records follows from theirs: CRCs *combine*. With
``shift(c, n)`` = ``c * x^(8n) mod P`` in CRC32C's (bit-reflected) GF(2)
arithmetic, as in zlib's ``crc32_combine``::

    crc(A || B) = shift(crc(A), len(B)) ^ crc(B)

so a shard of records ``r_1 .. r_m`` has ``crc = XOR_i shift(crc(r_i), s_i)``
with ``s_i`` the number of bytes after ``r_i`` in the shard. Everything here
is vectorised with numpy over all records of all shards at once: the verifier
predicts every shard's size and CRC32C from the plan and the catalog (no
record data read) and compares them with what storage reports (GCS computes
each object's CRC32C server-side; locally the file's CRC32C).

Multiplying by the constant ``x^(8 * 2^k)`` is linear over GF(2), so it is
four 256-entry table lookups; ``shift(c, n)`` applies the tables of the bits
set in ``n``.
"""

from __future__ import annotations

import functools

import numpy as np

POLY = 0x82F63B78  # CRC32C (Castagnoli), bit-reflected
MASK_DELTA = 0xA282EAD8
MAX_SHIFT_BITS = 48  # shifts up to 2**48 bytes (256 TB) per file
_U32 = np.uint32


# --------------------------------------------------------------------------- scalar GF(2) arithmetic


def _multmodp(a: int, b: int) -> int:
    """``a * b mod P`` for reflected 32-bit polynomials (zlib's multmodp)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ POLY if b & 1 else b >> 1
    return p


@functools.cache
def _byte_table() -> np.ndarray:
    """The classic byte-at-a-time CRC32C table."""
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ POLY if c & 1 else c >> 1
        table[i] = c
    return table


DIGIT_BITS = 4  # shifts are applied one hex digit of the byte count at a time
DIGITS = MAX_SHIFT_BITS // DIGIT_BITS


def _times_x_basis(p: int) -> list[int]:
    """``[p * x^(31 - i) mod P for i in 0..31]``: the product of ``p`` with each
    single-bit polynomial ``1 << i`` (bit 31 is x^0)."""
    out = [0] * 32
    v = p
    for i in range(31, -1, -1):
        out[i] = v
        v = (v >> 1) ^ POLY if v & 1 else v >> 1
    return out


@functools.cache
def _shift_tables() -> np.ndarray:
    """``T[k, m, j, b]``: byte ``b`` at byte ``j`` of a CRC, times
    ``x^(8 * m * 16^k)``; so shifting by ``n`` bytes is, for each hex digit
    ``m`` of ``n`` at position ``k``, ``c = XOR_j T[k, m, j, byte_j(c)]``."""
    bit_powers = []  # x^(8 * 2^t)
    p = 1 << 23  # x^8
    for _ in range(MAX_SHIFT_BITS):
        bit_powers.append(p)
        p = _multmodp(p, p)
    bits = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # [b, t]
    tables = np.zeros((DIGITS, 16, 4, 256), dtype=np.uint32)
    for k in range(DIGITS):
        for m in range(16):
            power = 1 << 31  # x^0
            for t in range(DIGIT_BITS):
                if m >> t & 1:
                    power = _multmodp(bit_powers[DIGIT_BITS * k + t], power)
            basis = np.array(_times_x_basis(power), dtype=np.uint32)
            for j in range(4):
                b = np.where(bits, basis[8 * j : 8 * j + 8][None, :], 0)
                tables[k, m, j] = np.bitwise_xor.reduce(b, axis=1)
    return tables


# --------------------------------------------------------------------------- vectorised


def shift(crcs: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    """``shift(c, n)`` elementwise: the CRC of ``A`` followed by ``n`` bytes
    that contribute nothing of their own (combine with ``^ crc(B)``)."""
    c = np.asarray(crcs, dtype=np.uint32).copy()
    n = np.asarray(nbytes, dtype=np.int64)
    if len(c) == 0:
        return c
    if int(n.min()) < 0:
        raise ValueError("negative shift")
    top = int(n.max()).bit_length()
    if top > MAX_SHIFT_BITS:
        raise ValueError(f"shift of {int(n.max())} bytes is too long")
    tables = _shift_tables().reshape(DIGITS, -1)  # [k, m * 1024 + j * 256 + b]
    take = np.take
    for k in range(-(-top // DIGIT_BITS)):
        t = tables[k]
        base = ((n >> (DIGIT_BITS * k)) & 15).astype(np.uint32) << 10
        c = (
            take(t, base | (c & 0xFF))
            ^ take(t, base | (256 + ((c >> 8) & 0xFF)))
            ^ take(t, base | (512 + ((c >> 16) & 0xFF)))
            ^ take(t, base | (768 + (c >> 24)))
        )
    return c


def crc_rows(rows: np.ndarray) -> np.ndarray:
    """CRC32C of each row of a 2-D uint8 array (short fixed-size strings)."""
    table = _byte_table()
    rows = np.asarray(rows, dtype=np.uint8)
    c = np.full(rows.shape[0], 0xFFFFFFFF, dtype=np.uint32)
    for j in range(rows.shape[1]):
        c = table[(c ^ rows[:, j]) & 0xFF] ^ (c >> 8)
    return c ^ _U32(0xFFFFFFFF)


def unmask(masked: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC back to the plain CRC32C."""
    rot = (np.asarray(masked, dtype=np.uint32) - _U32(MASK_DELTA)).astype(np.uint32)
    return ((rot >> 17) | (rot << 15)).astype(np.uint32)


def mask(crcs: np.ndarray) -> np.ndarray:
    c = np.asarray(crcs, dtype=np.uint32)
    return (((c >> 15) | (c << 17)).astype(np.uint32) + _U32(MASK_DELTA)).astype(np.uint32)


def _le_bytes(values: np.ndarray, dtype: str) -> np.ndarray:
    return (
        np.ascontiguousarray(np.asarray(values).astype(dtype))
        .view(np.uint8)
        .reshape(len(values), -1)
    )


def framed_record_crcs(framed_lengths: np.ndarray, masked_data_crcs: np.ndarray) -> np.ndarray:
    """CRC32C of each whole framed record, from its framed length (payload + 16)
    and the masked data CRC stored in its footer."""
    lengths = np.asarray(framed_lengths, dtype=np.int64) - 16
    if len(lengths) and int(lengths.min()) < 0:
        raise ValueError("a framed record is at least 16 bytes")
    len_bytes = _le_bytes(lengths, "<u8")
    header = np.concatenate([len_bytes, _le_bytes(mask(crc_rows(len_bytes)), "<u4")], axis=1)
    footer = _le_bytes(masked_data_crcs, "<u4")
    # crc(H || D || F) = shift(crc(H), |D| + 4) ^ shift(crc(D), 4) ^ crc(F)
    out = shift(crc_rows(header), lengths + 4)
    out ^= shift(unmask(masked_data_crcs), np.full(len(lengths), 4, dtype=np.int64))
    out ^= crc_rows(footer)
    return out


def concat_crcs(crcs: np.ndarray, lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """CRC32C of each group of consecutive pieces, as if concatenated in order.

    ``crcs``/``lengths``: per piece; ``starts``: the index where each group
    begins, ascending, plus the total as the last entry (``len(starts) - 1``
    groups; an empty group has CRC 0)."""
    crcs = np.asarray(crcs, dtype=np.uint32)
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    groups = len(starts) - 1
    out = np.zeros(groups, dtype=np.uint32)
    if len(crcs) == 0:
        return out
    # Bytes after each piece inside its group: group total minus running sum.
    cum = np.cumsum(lengths)
    group_of = np.repeat(np.arange(groups), np.diff(starts))
    group_end = cum[starts[1:] - 1]
    after = group_end[group_of] - cum
    shifted = shift(crcs, after)
    nonempty = np.flatnonzero(np.diff(starts) > 0)
    out[nonempty] = np.bitwise_xor.reduceat(shifted, starts[:-1][nonempty])
    return out


def shard_crcs(
    framed_lengths: np.ndarray, masked_data_crcs: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, crc32cs)`` of files made of framed records, grouped by ``starts``
    (see :func:`concat_crcs`)."""
    lengths = np.asarray(framed_lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(lengths)])
    sizes = cum[starts[1:]] - cum[starts[:-1]]
    return sizes, concat_crcs(framed_record_crcs(lengths, masked_data_crcs), lengths, starts)
