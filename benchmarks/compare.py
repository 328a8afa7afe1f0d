"""Compare two builds of a split shard by shard: record counts and bytes.

Only the TFRecord framing is walked (no CRC checks, no parsing: the product's
verifier does that); records are compared as byte strings.
"""

from __future__ import annotations

import struct
from pathlib import Path

_LEN = struct.Struct("<Q")


def records(path: Path) -> list[bytes]:
    """The payloads of a TFRecord file (framing walked, not checked)."""
    buf = path.read_bytes()
    out = []
    off, end = 0, len(buf)
    while off < end:
        (n,) = _LEN.unpack_from(buf, off)
        out.append(buf[off + 12 : off + 12 + n])
        off += n + 16
    return out


def shard_files(folder: Path, split: str) -> list[Path]:
    """``{split}-SSSSS-of-NNNNN`` files of one split, in shard order."""
    return sorted(
        p
        for p in folder.glob(f"{split}-*-of-*")
        if p.name[len(split) + 1 :].split("-of-")[0].isdigit()
    )


def built_files(output_dir: Path, split: str) -> list[Path]:
    """The shards a product build of ``split`` into ``output_dir`` wrote: staged
    (its stats say where) until the DAG's publish step gives them their names."""
    import json

    stats = output_dir / "_work" / "stats" / f"{split}.json"
    if stats.exists():
        return [Path(s["staged"]) for s in json.loads(stats.read_text())["shards"]]
    return shard_files(output_dir, split)


CONTENT_SAMPLE = 1000


def _same_content(x: bytes, y: bytes) -> bool:
    """Both parse to the same features and values (the order of fields aside)."""
    from beam_jobs.source.example_proto import parse_features

    try:
        return parse_features(x) == parse_features(y)
    except Exception:  # noqa: BLE001 - unparseable: not the same content
        return False


def compare_split(product_dir: Path, seed_dir: Path, split: str) -> dict:
    """Per-shard record counts of both builds, and how many records are byte-identical.

    Of the records whose bytes differ, up to ``CONTENT_SAMPLE`` are parsed to
    check they still hold the same features (re-serialization reorders fields).
    """
    a, b = built_files(product_dir, split), shard_files(seed_dir, split)
    counts_a, counts_b = [], []
    same_records = same_files = 0
    bytes_a = bytes_b = 0
    first_diff = None
    content_checked = content_same = 0
    for i in range(max(len(a), len(b))):
        ra = records(a[i]) if i < len(a) else []
        rb = records(b[i]) if i < len(b) else []
        counts_a.append(len(ra))
        counts_b.append(len(rb))
        bytes_a += a[i].stat().st_size if i < len(a) else 0
        bytes_b += b[i].stat().st_size if i < len(b) else 0
        identical = 0
        for j, (x, y) in enumerate(zip(ra, rb)):
            if x == y:
                identical += 1
                continue
            if content_checked < CONTENT_SAMPLE:
                content_checked += 1
                content_same += _same_content(x, y)
            if first_diff is None:
                first_diff = {
                    "shard": i,
                    "index": j,
                    "product_len": len(x),
                    "seed_len": len(y),
                    "same_length": len(x) == len(y),
                }
        same_records += identical
        if i < len(a) and i < len(b) and identical == len(ra) == len(rb):
            same_files += 1
    return {
        "split": split,
        "shards_product": len(a),
        "shards_seed": len(b),
        "records_product": sum(counts_a),
        "records_seed": sum(counts_b),
        "counts_equal": counts_a == counts_b and len(a) == len(b),
        "shards_with_other_count": sum(1 for x, y in zip(counts_a, counts_b) if x != y)
        + abs(len(a) - len(b)),
        "records_byte_identical": same_records,
        "shards_byte_identical": same_files,
        "bytes_product": bytes_a,
        "bytes_seed": bytes_b,
        "differing_records_parsed": content_checked,
        "differing_records_same_features": content_same,
        "first_difference": first_diff,
    }
