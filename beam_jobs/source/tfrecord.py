"""TFRecord framing, the container format of ImageNet's TFRecord shards.

Each record in a TFRecord file is framed as (all little-endian)::

    uint64 length
    uint32 masked_crc32c(the 8 length bytes)
    bytes  data[length]
    uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8  (mod 2**32)``.

This module reads and writes that framing with byte offsets, so that a catalog
can point at every framed record and a build job can copy records byte for
byte with ranged reads. CRCs use google-crc32c (hardware accelerated).
"""

from __future__ import annotations

import io
import struct
from typing import Iterable, Iterator, NamedTuple, Protocol, Sequence

import google_crc32c
import numpy as np

MASK_DELTA = 0xA282EAD8
HEADER_LEN = 12  # uint64 length + uint32 masked crc of the length
FOOTER_LEN = 4  # uint32 masked crc of the data
OVERHEAD = HEADER_LEN + FOOTER_LEN
_U32 = 0xFFFFFFFF


class Readable(Protocol):
    """What records are read from: any stream with ``read(n)`` (a file,
    ``storage.open_read``'s, a wrapper that hashes what passes)."""

    def read(self, n: int, /) -> bytes: ...


class Writable(Protocol):
    """What records are written to: a file or a ``storage.open_write`` stream."""

    def write(self, data: bytes, /) -> object: ...

    def writelines(self, lines: Iterable[bytes], /) -> object: ...


_LEN = struct.Struct("<Q")
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
# A single record longer than this is treated as a framing error: ImageNet's
# largest JPEG is a few MB; a corrupt length field would otherwise make us try
# to read terabytes.
MAX_RECORD_LEN = 1 << 30


def crc32c(data: bytes) -> int:
    """Plain (unmasked) CRC32C of ``data``."""
    return int(google_crc32c.value(bytes(data)))


def mask(crc: int) -> int:
    """TFRecord's CRC mask: rotate right by 15 bits and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + MASK_DELTA) & _U32


def masked_crc32c(data: bytes) -> int:
    """Masked CRC32C as stored in TFRecord framing."""
    return mask(crc32c(data))


def frame(data: bytes) -> bytes:
    """Return ``data`` framed as one TFRecord record."""
    length = _LEN.pack(len(data))
    return b"".join(
        (length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data)))
    )


class RecordError(ValueError):
    """A framing problem at a byte offset of a TFRecord file.

    ``kind`` is a short machine-readable tag (``truncated_header``,
    ``truncated_record``, ``length_crc``, ``data_crc``, ``too_long``);
    ``fatal`` says whether reading can go on after it (a bad data CRC leaves
    the framing intact; a bad length does not).
    """

    def __init__(self, path: str, offset: int, kind: str, detail: str, fatal: bool) -> None:
        self.path = path
        self.offset = offset
        self.kind = kind
        self.detail = detail
        self.fatal = fatal
        super().__init__(f"{path} at byte offset {offset}: {kind}: {detail}")


class Framed(NamedTuple):
    """One framed record: where it starts, its framed length, its payload.
    (A named tuple: one is made per record of a dataset.)"""

    offset: int
    length: int  # framed length: len(data) + 16
    data: bytes
    data_crc: int  # the masked CRC32C stored in the footer


def parse_header(header: bytes, path: str, offset: int) -> int:
    """Check a 12-byte header and return the payload length."""
    if len(header) < HEADER_LEN:
        raise RecordError(
            path,
            offset,
            "truncated_header",
            f"file ends {len(header)} bytes into a 12-byte record header",
            fatal=True,
        )
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
        raise RecordError(
            path,
            offset,
            "length_crc",
            "length field fails its CRC32C check (corrupt data or not a TFRecord file)",
            fatal=True,
        )
    if length > MAX_RECORD_LEN:
        raise RecordError(
            path,
            offset,
            "too_long",
            f"record length {length} exceeds {MAX_RECORD_LEN}",
            fatal=True,
        )
    return int(length)


def check_framed(buf: bytes, path: str, offset: int) -> Framed:
    """Check one complete framed record held in ``buf`` (header, data, footer)."""
    length = parse_header(buf[:HEADER_LEN], path, offset)
    if len(buf) != length + OVERHEAD:
        raise RecordError(
            path,
            offset,
            "truncated_record",
            f"expected {length + OVERHEAD} framed bytes, got {len(buf)}",
            fatal=True,
        )
    data = buf[HEADER_LEN : HEADER_LEN + length]
    (stored,) = _CRC.unpack_from(buf, HEADER_LEN + length)
    if masked_crc32c(data) != stored:
        raise RecordError(
            path,
            offset,
            "data_crc",
            f"data CRC32C mismatch in a {length}-byte record",
            fatal=False,
        )
    return Framed(offset, length + OVERHEAD, data, stored)


def iter_framed(f: Readable, path: str, *, start: int = 0) -> Iterator[Framed | RecordError]:
    """Yield each record of an open TFRecord stream, or the error found there.

    Non-fatal errors (a bad data CRC) are yielded and reading goes on; a fatal
    one (truncation, bad length) is yielded last. ``f`` should be buffered:
    this makes two or three small reads per record.
    """
    offset = start
    while True:
        header = f.read(HEADER_LEN)
        if not header:
            return
        try:
            length = parse_header(header, path, offset)
        except RecordError as err:
            yield err
            return
        body = f.read(length + FOOTER_LEN)
        if len(body) < length + FOOTER_LEN:
            yield RecordError(
                path,
                offset,
                "truncated_record",
                f"file ends {len(body)} bytes into a record of {length} data bytes",
                fatal=True,
            )
            return
        data = body[:length]
        (stored,) = _CRC.unpack_from(body, length)
        if masked_crc32c(data) != stored:
            yield RecordError(
                path,
                offset,
                "data_crc",
                f"data CRC32C mismatch in a {length}-byte record",
                fatal=False,
            )
        else:
            yield Framed(offset, length + OVERHEAD, data, stored)
        offset += length + OVERHEAD


SCAN_CHUNK = 16 * 1024 * 1024


class FramedBatch(NamedTuple):
    """The records of one chunk of a stream whose headers checked out, as
    columns (what :class:`Framed` holds per record; :func:`scan_batches`)."""

    offsets: np.ndarray  # int64: file offset of each framed record
    lengths: np.ndarray  # int64: framed lengths (data + 16)
    data: list[bytes]  # the payloads
    data_crc: np.ndarray  # uint32: the masked CRC32C stored in each footer
    crc_ok: np.ndarray  # bool: the payload's CRC32C matches data_crc


def scan_batches(
    f: Readable, path: str, *, chunk_bytes: int = SCAN_CHUNK
) -> Iterator[FramedBatch | RecordError]:
    """A whole stream read in large chunks: one :class:`FramedBatch` per chunk
    (the records whose framing checked out, bad data CRCs flagged in
    ``crc_ok``), and a fatal :class:`RecordError` last if the framing breaks.

    The per-record Python work is one header unpack, one data CRC call and
    one slice; the length CRCs and the data CRC comparisons are vectorised
    over each chunk. Memory: a chunk (or one record, if larger).
    :func:`scan_framed` yields the same, record by record.
    """
    base = 0  # file offset of buf[0]
    pending = b""
    while True:
        more = f.read(chunk_bytes)
        eof = not more
        buf = pending + more if pending else more
        if not isinstance(buf, bytes):
            buf = bytes(buf)
        starts, datas, off = _frame_chunk(buf)
        batch, fatal = _check_chunk(buf, base, starts, datas, path)
        if batch is not None:
            yield batch
        if fatal is not None:
            yield fatal
            return
        pending = buf[off:]
        base += off
        if not eof and len(pending) >= HEADER_LEN:
            # An incomplete record: a corrupt length would make the next reads
            # accumulate the rest of the file; check its header now.
            try:
                parse_header(pending[:HEADER_LEN], path, base)
            except RecordError as err:
                yield err
                return
        if eof:
            if pending:
                yield from _stream_tail(pending, path, base)
            return


def _frame_chunk(buf: bytes) -> tuple[list[int], list[bytes], int]:
    """The complete records at the start of ``buf`` by their length fields
    (not yet checked): their offsets in ``buf``, their payloads, and where the
    first incomplete one starts."""
    n = len(buf)
    unpack_len = _LEN.unpack_from
    starts: list[int] = []
    datas: list[bytes] = []
    add_start, add_data = starts.append, datas.append
    off = 0
    while off + HEADER_LEN <= n:
        (length,) = unpack_len(buf, off)
        end = off + length + OVERHEAD
        if length > MAX_RECORD_LEN or end > n:
            break
        add_start(off)
        add_data(buf[off + HEADER_LEN : end - FOOTER_LEN])
        off = end
    return starts, datas, off


def _check_chunk(
    buf: bytes, base: int, starts: list[int], datas: list[bytes], path: str
) -> tuple[FramedBatch | None, RecordError | None]:
    """Check the framed records of a chunk (``buf`` at file offset ``base``):
    the batch of those before the first bad length CRC (None if none), and a
    fatal error at that record (None if every length checks out). Drops the
    payloads past the error from ``datas``."""
    if not starts:
        return None, None
    s = np.asarray(starts, dtype=np.int64)
    raw = np.frombuffer(buf, dtype=np.uint8)
    heads = raw[s[:, None] + np.arange(HEADER_LEN)]
    want = mask_array(_crc_rows(heads[:, :8]))
    got = heads[:, 8:].copy().view("<u4").ravel()
    bad_head = np.flatnonzero(want != got)
    keep = int(bad_head[0]) if len(bad_head) else len(starts)
    fatal: RecordError | None = None
    if keep < len(starts):
        fatal = RecordError(
            path,
            base + starts[keep],
            "length_crc",
            "length field fails its CRC32C check (corrupt data or not a TFRecord file)",
            fatal=True,
        )
        del datas[keep:]
    if not keep:
        return None, fatal
    ln = heads[:keep, :8].copy().view("<u8").ravel().astype(np.int64)
    foot = s[:keep] + HEADER_LEN + ln
    stored = raw[foot[:, None] + np.arange(FOOTER_LEN)].copy().view("<u4").ravel()
    value = google_crc32c.value
    computed = mask_array(np.fromiter(map(value, datas), dtype=np.uint32, count=keep))
    return FramedBatch(base + s[:keep], ln + OVERHEAD, datas, stored, computed == stored), fatal


def _stream_tail(pending: bytes, path: str, base: int) -> Iterator[FramedBatch | RecordError]:
    """What :func:`iter_framed` reports for a stream ending with ``pending``
    (at file offset ``base``): the complete records were taken already, so only
    a fatal error is left."""
    for item in iter_framed(io.BytesIO(pending), path, start=base):
        if isinstance(item, RecordError):
            yield item
        else:  # unreachable; kept so that nothing is ever dropped
            yield FramedBatch(
                np.array([item.offset], np.int64),
                np.array([item.length], np.int64),
                [item.data],
                np.array([item.data_crc], np.uint32),
                np.ones(1, bool),
            )


def scan_framed(
    f: Readable, path: str, *, chunk_bytes: int = SCAN_CHUNK
) -> Iterator[Framed | RecordError]:
    """What :func:`iter_framed` yields, for a whole stream read in large chunks
    (:func:`scan_batches`, record by record). Errors are the same, at the same
    offsets: a bad header is fatal and ends the scan (the records before it
    are yielded first); a bad data CRC is not.
    """
    for batch in scan_batches(f, path, chunk_bytes=chunk_bytes):
        if isinstance(batch, RecordError):
            yield batch
            continue
        offsets, lengths = batch.offsets.tolist(), batch.lengths.tolist()
        stored, ok = batch.data_crc.tolist(), batch.crc_ok.tolist()
        for i, data in enumerate(batch.data):
            if ok[i]:
                yield Framed(offsets[i], lengths[i], data, stored[i])
            else:
                yield RecordError(
                    path,
                    offsets[i],
                    "data_crc",
                    f"data CRC32C mismatch in a {lengths[i] - OVERHEAD}-byte record",
                    fatal=False,
                )


def _crc_rows(rows: np.ndarray) -> np.ndarray:
    from beam_jobs.source.crc32c_combine import crc_rows

    return crc_rows(rows)


def iter_records(f: Readable, path: str = "<stream>") -> Iterator[bytes]:
    """Yield the payloads of a TFRecord stream; raise on the first problem."""
    for item in iter_framed(f, path):
        if isinstance(item, RecordError):
            raise item
        yield item.data


class Writer:
    """Write framed records to a binary stream, tracking count, bytes and CRC32C.

    The running CRC32C is of the whole file as written, as GCS reports it
    (``crc32c`` object metadata), so a shard can be checked against storage
    without reading it back.
    """

    def __init__(self, f: Writable) -> None:
        self._f = f
        self.num_records = 0
        self.num_bytes = 0
        self._crc = 0

    def write(self, data: bytes) -> None:
        """Frame ``data`` and write it."""
        self.write_framed(frame(data))

    def write_framed(self, framed: bytes) -> None:
        """Write an already framed record exactly as given (byte-identical copy)."""
        self._f.write(framed)
        self.num_records += 1
        self.num_bytes += len(framed)
        self._crc = google_crc32c.extend(self._crc, framed)

    def write_framed_batch(self, records: Sequence[bytes]) -> None:
        """Write already framed records (checked by the caller, e.g. with
        ``check_records``) exactly as given."""
        self._f.writelines(records)
        crc, extend = self._crc, google_crc32c.extend
        for r in records:
            crc = extend(crc, r)
        self._crc = crc
        self.num_records += len(records)
        self.num_bytes += sum(map(len, records))

    @property
    def crc32c(self) -> int:
        """CRC32C (unmasked) of everything written so far."""
        return int(self._crc)


def mask_array(crc: np.ndarray) -> np.ndarray:
    """``mask`` applied to an array of unmasked CRCs (uint32 result)."""
    c = np.asarray(crc, dtype=np.uint64)
    return (
        ((((c >> np.uint64(15)) | (c << np.uint64(17))) & np.uint64(_U32)) + np.uint64(MASK_DELTA))
        & np.uint64(_U32)
    ).astype(np.uint32)


def check_records(
    records: Sequence[bytes], framed_lengths: np.ndarray
) -> tuple[np.ndarray, int, str]:
    """Check a batch of complete framed records (each ``bytes`` of the
    expected framed length, e.g. from a catalog): each header's length field,
    its CRC, and each data CRC. The per-record Python work is two slices and
    one CRC call; the comparisons are vectorised over the batch.

    Returns the stored (masked) data CRCs, the index of the first bad record
    (-1 if all are good) and what is wrong with it.
    """
    lengths = np.asarray(framed_lengths, dtype=np.int64)
    n = len(records)
    if n == 0:
        return np.zeros(0, np.uint32), -1, ""
    if (
        n != len(lengths)
        or any(len(r) != int(k) for r, k in zip(records, lengths.tolist()))
        or int(lengths.min()) < OVERHEAD
    ):
        raise ValueError("records do not have the given framed lengths")
    headers = np.frombuffer(
        b"".join([r[:HEADER_LEN] for r in records]),
        dtype=np.dtype([("length", "<u8"), ("crc", "<u4")]),
    )
    stored = np.frombuffer(b"".join([r[-FOOTER_LEN:] for r in records]), dtype="<u4")
    payload = headers["length"]
    bad_length = payload != (lengths - OVERHEAD).astype(np.uint64)
    uniq, inverse = np.unique(payload, return_inverse=True)
    expected = np.array([masked_crc32c(_LEN.pack(int(u))) for u in uniq], np.uint32)[inverse]
    bad_length_crc = headers["crc"] != expected
    value = google_crc32c.value
    computed = np.fromiter(
        (value(r[HEADER_LEN:-FOOTER_LEN]) for r in records), dtype=np.uint32, count=n
    )
    bad_data = mask_array(computed) != stored
    bad = np.flatnonzero(bad_length | bad_length_crc | bad_data)
    if not len(bad):
        return stored, -1, ""
    i = int(bad[0])
    if bad_length[i]:
        why = f"length field says {int(payload[i])}, expected {int(lengths[i]) - OVERHEAD}"
    elif bad_length_crc[i]:
        why = "length field fails its CRC32C check"
    else:
        why = f"data CRC32C mismatch in a {int(lengths[i]) - OVERHEAD}-byte record"
    return stored, i, why
