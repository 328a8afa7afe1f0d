"""Per-record CPU costs of each job's inner loop, and the memory of its tables.

The inputs of ``docs/scale.md``: what one worker spends per record and per
byte in each job, measured in this process (``time.process_time``, one
thread, local files in the page cache, no Beam runner around it), on two
record sizes: BYTES-like (~112 KB, ImageNet's mean) and COUNT-like (~1 KB).
From the two, each job's cost is split into a per-record and a per-byte part
(``cpu = a * records + b * bytes``), so it can be scaled to ImageNet:

* validate: ``validate_shard`` (framing, both CRC32Cs, Example parse, checks,
  its catalog part written);
* build: ``copy_records`` over the whole set in a shuffled order (one
  ``pread`` per record, the checks, the shard written);
* validation copy: ``copy_shard`` (stream a shard, count and check its records);
* deep verify: ``deep_check_shard`` (re-read a built shard, CRCs, planned
  names and data CRCs).

Network costs are not here: ``benchmarks.latency`` measures what a ranged GET
costs a worker on (simulated) GCS. Memory: Arrow sizes of the catalog and of
the build's record table, per row, for file names as long as ImageNet's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks import datasets

SIZES = {
    # ~112 KB records, as BYTES (benchmarks/datasets.py); 8 shards
    "large": dict(
        num_classes=10,
        min_per_class=48,
        max_per_class=48,
        train_shards=8,
        validation_shards=0,
        validation_per_class=0,
        image_size=348,
        jpeg_quality=90,
        image_pool=128,
        seed=0,
    ),
    # ~1 KB records, as COUNT
    "small": dict(
        num_classes=10,
        min_per_class=3000,
        max_per_class=3000,
        train_shards=8,
        validation_shards=0,
        validation_per_class=0,
        image_size=1,
        seed=0,
    ),
}
QUICK_SCALE = 0.25


def _cpu(fn) -> tuple[float, Any]:
    c0 = time.process_time()
    out = fn()
    return time.process_time() - c0, out


def measure_size(source: Path, work: Path) -> dict[str, dict[str, float]]:
    """CPU seconds, records and bytes of each job's inner loop on one source."""
    import numpy as np
    import pyarrow as pa

    from beam_jobs import storage
    from beam_jobs.building.build import copy_records, copy_shard
    from beam_jobs.source.catalog import read_arrow
    from beam_jobs.source.validate import Checks, validate_shard
    from beam_jobs.verification.deep import deep_check_shard

    shards = sorted(source.glob("train-*"))
    parts = work / "parts"
    out: dict[str, dict[str, float]] = {}
    checks = Checks(label_min=1, label_max=1000)
    cpu, summaries = _cpu(
        lambda: [
            validate_shard(
                {"path": str(p), "index": i, "size": p.stat().st_size},
                str(parts),
                checks,
                len(shards),
            )
            for i, p in enumerate(shards)
        ]
    )
    if not summaries:
        raise RuntimeError(f"no train-* shards to validate under {source}")
    tables = [read_arrow(s["part"]) for s in summaries]
    catalog = pa.concat_tables(tables)
    records = catalog.num_rows
    nbytes = int(pa.compute.sum(catalog.column("length")).as_py())
    out["validate"] = {"cpu_s": cpu, "records": records, "bytes": nbytes}

    files = [str(p) for p in shards]
    # A part holds the rows of one shard (its summary's index), not its path on every row.
    file_id = np.repeat([s["index"] for s in summaries], [t.num_rows for t in tables])
    order = np.random.default_rng(0).permutation(records)
    rows = pa.table(
        {
            "file_id": pa.array(file_id[order].astype(np.int32)),
            "offset": catalog.column("offset").take(order),
            "length": catalog.column("length").take(order),
            "data_crc": catalog.column("data_crc").take(order),
            "index": pa.array(np.arange(records)),
            "filename": catalog.column("filename").take(order),
        }
    )
    built = work / "built-00000-of-00001"
    reader = storage.RangeReader()
    cpu, w = _cpu(
        lambda: copy_records(rows, files, reader, str(built), read_threads=1, what="unit costs")
    )
    reader.close()
    out["build"] = {"cpu_s": cpu, "records": w.num_records, "bytes": w.num_bytes}

    planned = (rows.column("filename").to_pylist(), rows.column("data_crc").to_pylist())
    cpu, res = _cpu(lambda: deep_check_shard(str(built), 0, "unit", None, planned))
    assert not res["findings"], res["findings"][:3]
    out["verify_deep"] = {"cpu_s": cpu, "records": res["num_records"], "bytes": w.num_bytes}

    staging = work / "copy-staging"
    cpu, stats = _cpu(
        lambda: [
            copy_shard(
                {"path": str(p), "shard": i, "num_shards": len(shards)},
                split="copy",
                output_uri=str(work / "copied"),
                staging=str(staging),
            )
            for i, p in enumerate(shards)
        ]
    )
    out["copy"] = {
        "cpu_s": cpu,
        "records": sum(s["num_records"] for s in stats),
        "bytes": sum(s["num_bytes"] for s in stats),
    }
    return out


def fit(large: dict[str, float], small: dict[str, float]) -> dict[str, float]:
    """``cpu = a * records + b * bytes`` through both sizes: a (µs/record), b (ns/byte)."""
    import numpy as np

    m = np.array([[large["records"], large["bytes"]], [small["records"], small["bytes"]]], float)
    a, b = np.linalg.solve(m, np.array([large["cpu_s"], small["cpu_s"]]))
    return {
        "us_per_record": round(max(a, 0.0) * 1e6, 3),
        "ns_per_byte": round(max(b, 0.0) * 1e9, 4),
    }


def table_memory(rows: int = 1_281_167) -> dict[str, float]:
    """Arrow bytes per row of the catalog and of the reshuffle's record table, for
    ImageNet-like names (``n01440764_10026.JPEG``, files ``gs://.../train-00000-of-01024``)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    wn = rng.integers(1_000_000, 9_999_999, rows)
    names = pa.array([f"n0{w}_{i % 13000}.JPEG" for i, w in enumerate(wn)])
    files = pa.array([f"gs://bucket/imagenet/train-{i % 1024:05d}-of-01024" for i in range(rows)])
    catalog = pa.table(
        {
            "filename": names,
            "label": pa.array(rng.integers(1, 1001, rows), pa.int32()),
            "synset": pa.array([f"n0{w}" for w in wn]),
            "file": files.dictionary_encode(),
            "record": pa.array(rng.integers(0, 1300, rows), pa.int64()),
            "offset": pa.array(rng.integers(0, 1 << 27, rows), pa.int64()),
            "length": pa.array(rng.integers(1000, 200000, rows), pa.int64()),
            "data_crc": pa.array(rng.integers(0, 1 << 32, rows), pa.uint32()),
        }
    )
    build = pa.table(
        {
            "shard": pa.array(rng.integers(0, 1024, rows), pa.int32()),
            "index": pa.array(rng.integers(0, 1300, rows), pa.int32()),
            "filename": names,
            "file_id": pa.array(rng.integers(0, 1024, rows), pa.int32()),
            "offset": catalog.column("offset"),
            "length": catalog.column("length"),
            "data_crc": catalog.column("data_crc"),
        }
    )
    return {
        "rows": rows,
        "catalog_bytes": catalog.nbytes,
        "build_table_bytes": build.nbytes,
        "catalog_bytes_per_row": round(catalog.nbytes / rows, 1),
        "build_table_bytes_per_row": round(build.nbytes / rows, 1),
    }


def run(work: Path, quick: bool = False) -> dict[str, Any]:
    import shutil

    measured = {}
    for name, spec in SIZES.items():
        if quick:
            spec = {
                **spec,
                "min_per_class": max(4, int(spec["min_per_class"] * QUICK_SCALE)),
                "max_per_class": max(4, int(spec["max_per_class"] * QUICK_SCALE)),
            }
        src = datasets.cached_source(
            work / f"unit-costs-{name}{'-quick' if quick else ''}", spec, "unit-costs-spec.json"
        )
        scratch = work / f"unit-costs-scratch-{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        measured[name] = measure_size(src, scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    jobs = {
        job: {
            **fit(measured["large"][job], measured["small"][job]),
            "large": measured["large"][job],
            "small": measured["small"][job],
        }
        for job in measured["large"]
    }
    return {"jobs": jobs, "memory": table_memory(200_000 if quick else 1_281_167)}


def render(res: dict[str, Any]) -> str:
    rows = [
        "| job's inner loop | ~112 KB records: CPU ms/record (MB/s per core) | ~1 KB records: "
        "CPU µs/record (records/s per core) | fit: µs per record | fit: ns per byte |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for job, j in res["jobs"].items():
        lg, sm = j["large"], j["small"]
        rows.append(
            f"| {job} | {lg['cpu_s'] / lg['records'] * 1e3:.3f} "
            f"({lg['bytes'] / lg['cpu_s'] / 1e6:,.0f}) | "
            f"{sm['cpu_s'] / sm['records'] * 1e6:.1f} ({sm['records'] / sm['cpu_s']:,.0f}) | "
            f"{j['us_per_record']:.1f} | {j['ns_per_byte']:.3f} |"
        )
    mem = res["memory"]
    return (
        "\n".join(
            [
                "Per-record CPU of each job's inner loop (`benchmarks/unit_costs.py`: one thread, local "
                "files in the page cache, no runner; network costs are in the table above):",
                "",
                *rows,
                "",
                f"Memory: the catalog takes {mem['catalog_bytes_per_row']:.0f} bytes per record in Arrow and "
                f"the build's record table {mem['build_table_bytes_per_row']:.0f} "
                f"(measured on {mem['rows']:,} rows with ImageNet-like names): "
                f"{mem['catalog_bytes'] / 2**20:,.0f} MiB and {mem['build_table_bytes'] / 2**20:,.0f} MiB.",
            ]
        )
        + "\n"
    )
