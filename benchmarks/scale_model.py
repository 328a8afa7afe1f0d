"""ImageNet on Dataflow, per job: requests, bytes, CPU, time and cost, from measurements.

    python -m benchmarks.scale_model [--inputs benchmarks/scale_inputs.json] [--workers 4,20]

Prints the tables of ``docs/scale.md`` from the measured inputs recorded in
``benchmarks/scale_inputs.json`` (client CPU per GET and per byte on simulated
GCS, the build's CPU per record there, each job's per-record and per-byte CPU,
table memory; the file says where they come from) and the constants below,
each either ImageNet's shape, a setting of the product (read through
``benchmarks.product``) or a cited list price or limit (see ``docs/scale.md``
for the sources). The model:

* a worker has ``P`` SDK processes (one per vCPU: the staged job description
  asks for one core per SDK container) and each works on one shard at a time;
* whole-shard jobs (validate, the validation copy, deep verification) read
  a shard in ``READ_CHUNK`` ranged GETs, one after another: per shard,
  ``chunks * (latency + chunk / bandwidth)`` waiting plus its CPU;
* builds read with ``GCS_READ_THREADS`` GETs in flight, which keeps the
  process's core busy (measured): per shard, records times the measured CPU
  per record, plus the shard's upload (``UPLOAD_CHUNK`` chunks, each a request
  held back by latency and bandwidth, not overlapped with reads);
* a job takes ``ceil(shards / (P * N))`` rounds of its slowest shard, and no
  less than its GETs at the bucket's initial read capacity;
* cost = workers x time x the worker's list price, plus Cloud Storage
  operations. Dataflow's start-up and shut-down (minutes of VM time per job,
  not measured here) come on top.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import product

INPUTS = Path(__file__).resolve().parent / "scale_inputs.json"

# ImageNet in TFRecords (the common converter): the product's DESIGN facts.
TRAIN_RECORDS = 1_281_167
TRAIN_BYTES = 140e9
TRAIN_SHARDS = 1024
SPLIT_RECORDS = 128_116  # floor(N * 0.1)
SPLIT_SHARDS = 102  # the product's default: floor(n * 1024 / N)
VAL_RECORDS = 50_000
VAL_SHARDS = 128
MEAN_RECORD = TRAIN_BYTES / TRAIN_RECORDS  # assumed for validation too

# Cited list prices and limits (docs/scale.md has the sources and the date).
VCPU_HOUR = 0.056  # Dataflow batch, per vCPU-hour
GB_HOUR = 0.003557  # Dataflow batch, per GB of memory per hour
PD_GB_HOUR = 0.000054  # standard Persistent Disk, per GB-hour
WORKER_DISK_GB = 25  # default batch worker boot disk with Dataflow Shuffle
CLASS_A = 0.005 / 1000  # Cloud Storage Standard, per Class A operation (writes, lists)
CLASS_B = 0.0004 / 1000  # per Class B operation (reads)
STORAGE_GB_MONTH = 0.020  # Standard storage, regional (us-central1)
BUCKET_READS_PER_S = 5000  # initial read capacity of a bucket
MACHINES = {"n2-standard-4": (4, 16)}  # vCPUs, GB


@dataclass
class Job:
    """One of the DAG's jobs on ImageNet: its size, reads and writes."""

    name: str
    records: int
    shards: int
    bytes_read: float
    bytes_written: float
    ranged: bool  # one GET per record (builds) or whole shards in chunks
    cost_key: str  # its inner loop in the inputs' jobs
    written_shards: int  # output files uploaded in chunks (0: small files only)
    small_writes: int  # single-request uploads (catalog parts, sidecars, stats, ...)


def jobs() -> list[Job]:
    """The DAG's jobs on ImageNet, in the table's order."""
    split_bytes = TRAIN_BYTES * SPLIT_RECORDS / TRAIN_RECORDS
    val_bytes = VAL_RECORDS * MEAN_RECORD
    n, s, v = TRAIN_SHARDS, SPLIT_SHARDS, VAL_SHARDS
    # name, records, shards, read, written, ranged, inner loop, written shards, small writes
    rows: list[tuple[str, int, int, float, float, bool, str, int, int]] = [
        ("validate", TRAIN_RECORDS, n, TRAIN_BYTES, 0, False, "validate", 0, n + 2),
        (
            "build: one 10% split",
            SPLIT_RECORDS,
            s,
            split_bytes,
            split_bytes,
            True,
            "build",
            s,
            s + 2,
        ),
        (
            "build: the reshuffle",
            TRAIN_RECORDS,
            n,
            TRAIN_BYTES,
            TRAIN_BYTES,
            True,
            "build",
            n,
            n + 2,
        ),
        ("validation copy", VAL_RECORDS, v, val_bytes, val_bytes, False, "copy", v, v + 1),
        (
            "deep verify: one 10% split",
            SPLIT_RECORDS,
            s,
            split_bytes,
            0,
            False,
            "verify_deep",
            0,
            2,
        ),
        (
            "deep verify: the reshuffle",
            TRAIN_RECORDS,
            n,
            TRAIN_BYTES,
            0,
            False,
            "verify_deep",
            0,
            2,
        ),
    ]
    return [Job(*row) for row in rows]


def _cpu_and_wait(job: Job, res: dict[str, Any], lat: float, bw: float) -> tuple[float, float, int]:
    """The job's CPU seconds, its waiting per shard for reads, and its GETs."""
    if job.ranged:  # one GET per record; the core is the limit at GCS_READ_THREADS in flight
        return job.records * res["build_cpu_ms_per_record"] / 1e3, 0.0, job.records
    chunk = product.storage_settings()["read_chunk"]
    chunks = math.ceil(job.bytes_read / job.shards / chunk)
    gets = job.shards * chunks
    unit, client = res["jobs"][job.cost_key], res["client"]
    cpu = (
        job.records * unit["us_per_record"] / 1e6
        + job.bytes_read * unit["ns_per_byte"] / 1e9
        + gets * client["cpu_ms_per_get"] / 1e3
        + job.bytes_read * client["cpu_ns_per_byte"] / 1e9
    )
    return cpu, chunks * (lat + chunk / bw), gets


def model(
    job: Job, res: dict[str, Any], workers: int, machine: str = "n2-standard-4"
) -> dict[str, Any]:
    """One job on ``workers`` workers: requests, CPU, time, what limits it, cost."""
    vcpus, mem_gb = MACHINES[machine]
    lat = sum(res["latency_ms"]) / 2 / 1e3
    bw = res["bandwidth_mbps"] * 1e6
    cpu, wait_shard, gets = _cpu_and_wait(job, res, lat, bw)
    upload = product.storage_settings()["upload_chunk"]
    shard_written = job.bytes_written / job.shards
    put_chunks = math.ceil(shard_written / upload) if job.written_shards else 0
    upload_wait = put_chunks * lat + shard_written / bw if put_chunks else 0.0
    shard_time = cpu / job.shards + wait_shard + upload_wait
    rounds = math.ceil(job.shards / (vcpus * workers))
    seconds = max(rounds * shard_time, gets / BUCKET_READS_PER_S)
    limit = "CPU" if job.ranged else "request latency"
    if gets / BUCKET_READS_PER_S > rounds * shard_time:
        limit = "bucket read rate"
    class_a = job.written_shards * (1 + put_chunks) + job.small_writes
    worker_hour = vcpus * VCPU_HOUR + mem_gb * GB_HOUR + WORKER_DISK_GB * PD_GB_HOUR
    return {
        "job": job.name,
        "workers": workers,
        "gets": gets,
        "class_a": class_a,
        "read_gb": job.bytes_read / 1e9,
        "written_gb": job.bytes_written / 1e9,
        "cpu_s": cpu,
        "shard_s": shard_time,
        "rounds": rounds,
        "seconds": seconds,
        "limit": limit,
        "dataflow_usd": workers * seconds / 3600 * worker_hour,
        "gcs_ops_usd": gets * CLASS_B + class_a * CLASS_A,
        "worker_hour_usd": worker_hour,
    }


def memory(res: dict[str, Any]) -> dict[str, float]:
    """Memory per SDK process: the build's record table, the catalog, one batch of reads."""
    settings = product.storage_settings()
    m = res["memory"]
    batch = max(settings["batch_bytes"], 4 * settings["gcs_read_threads"] * MEAN_RECORD)
    return {
        "build_table_split_mib": SPLIT_RECORDS * m["build_table_bytes_per_row"] / 2**20,
        "build_table_reshuffle_mib": TRAIN_RECORDS * m["build_table_bytes_per_row"] / 2**20,
        "catalog_mib": TRAIN_RECORDS * m["catalog_bytes_per_row"] / 2**20,
        "batch_mib": batch / 2**20,
    }


def render(res: dict[str, Any], workers: list[int]) -> str:
    out = [
        "| job | workers | GETs (Class B) | uploads (Class A) | read GB | written GB | "
        "CPU core-s | per shard s | rounds | time | limited by | Dataflow $ | GCS ops $ |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    totals: dict[int, list[float]] = {n: [0.0, 0.0, 0.0] for n in workers}
    for job in jobs():
        for n in workers:
            r = model(job, res, n)
            out.append(
                f"| {r['job']} | {n} | {r['gets']:,} | {r['class_a']:,} | {r['read_gb']:,.1f} | "
                f"{r['written_gb']:,.1f} | {r['cpu_s']:,.0f} | {r['shard_s']:.1f} | "
                f"{r['rounds']} | {r['seconds'] / 60:.1f} min | {r['limit']} | "
                f"{r['dataflow_usd']:.3f} | {r['gcs_ops_usd']:.3f} |"
            )
            k = 5 if job.name.startswith(("build: one", "deep verify: one")) else 1
            totals[n][0] += k * r["seconds"]
            totals[n][1] += k * r["dataflow_usd"]
            totals[n][2] += k * r["gcs_ops_usd"]
    worker_hour = model(jobs()[0], res, 1)["worker_hour_usd"]
    mem = memory(res)
    lines = ["\n".join(out), ""]
    for n, (secs, df, ops) in totals.items():
        lines.append(
            f"* A whole run with deep verification (validate, five 10% splits, the "
            f"reshuffle, the validation copy, six deep verifications; jobs one after "
            f"another) on {n} workers: {secs / 60:.0f} min of job time, "
            f"${df:.2f} of Dataflow workers and ${ops:.2f} of Cloud Storage operations, "
            f"plus each job's start-up (${n * worker_hour / 60:.3f} per minute of "
            "VM time)."
        )
    lines.append(
        f"* One n2-standard-4 worker costs ${worker_hour:.4f} per hour (4 vCPU, 16 GB, "
        f"{WORKER_DISK_GB} GB disk)."
    )
    lines.append(
        f"* Memory per SDK process: the build's record table {mem['build_table_split_mib']:.0f} "
        f"MiB for a 10% split, {mem['build_table_reshuffle_mib']:.0f} MiB for the reshuffle "
        f"(each process loads it once), one batch of reads {mem['batch_mib']:.0f} MiB; "
        f"validation's last step holds the catalog, {mem['catalog_mib']:.0f} MiB."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_model", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--inputs", default=str(INPUTS), help="the measured inputs (JSON)")
    p.add_argument("--workers", default="4,20")
    a = p.parse_args(argv)
    res = json.loads(Path(a.inputs).read_text())
    print(render(res, [int(x) for x in a.workers.split(",")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
