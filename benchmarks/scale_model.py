"""ImageNet on Dataflow, per job: requests, bytes, CPU, time and cost, from measurements.

    python -m benchmarks.scale_model [--results .bench/latency.json] [--workers 4,20]

Prints the tables of ``docs/scale.md`` from the latency benchmark's results
(``python -m benchmarks.latency``: client CPU per GET and per byte, the build's
CPU per record on simulated GCS, each job's per-record and per-byte CPU, table
memory) and the constants below, each either ImageNet's shape, a setting of
the product (``beam_jobs.storage``, ``beam_jobs.building.build``) or a cited list
price or limit (see ``docs/scale.md`` for the sources). The model:

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

ROOT = Path(__file__).resolve().parent.parent

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
    name: str
    records: int
    shards: int
    bytes_read: float
    bytes_written: float
    ranged: bool  # one GET per record (builds) or whole shards in chunks
    cost_key: str  # unit_costs job for the inner loop
    written_shards: int  # output files uploaded in chunks (0: small files only)
    small_writes: int  # single-request uploads (catalog parts, sidecars, stats, ...)


def jobs() -> list[Job]:
    split_bytes = TRAIN_BYTES * SPLIT_RECORDS / TRAIN_RECORDS
    val_bytes = VAL_RECORDS * MEAN_RECORD
    return [
        Job(
            "validate",
            TRAIN_RECORDS,
            TRAIN_SHARDS,
            TRAIN_BYTES,
            0,
            False,
            "validate",
            0,
            TRAIN_SHARDS + 2,
        ),
        Job(
            "build: one 10% split",
            SPLIT_RECORDS,
            SPLIT_SHARDS,
            split_bytes,
            split_bytes,
            True,
            "build",
            SPLIT_SHARDS,
            SPLIT_SHARDS + 2,
        ),
        Job(
            "build: the reshuffle",
            TRAIN_RECORDS,
            TRAIN_SHARDS,
            TRAIN_BYTES,
            TRAIN_BYTES,
            True,
            "build",
            TRAIN_SHARDS,
            TRAIN_SHARDS + 2,
        ),
        Job(
            "validation copy",
            VAL_RECORDS,
            VAL_SHARDS,
            val_bytes,
            val_bytes,
            False,
            "copy",
            VAL_SHARDS,
            VAL_SHARDS + 1,
        ),
        Job(
            "deep verify: one 10% split",
            SPLIT_RECORDS,
            SPLIT_SHARDS,
            split_bytes,
            0,
            False,
            "verify_deep",
            0,
            2,
        ),
        Job(
            "deep verify: the reshuffle",
            TRAIN_RECORDS,
            TRAIN_SHARDS,
            TRAIN_BYTES,
            0,
            False,
            "verify_deep",
            0,
            2,
        ),
    ]


def model(
    job: Job, res: dict[str, Any], workers: int, machine: str = "n2-standard-4"
) -> dict[str, Any]:
    from beam_jobs.building.build import GCS_READ_THREADS
    from beam_jobs.storage import READ_CHUNK, UPLOAD_CHUNK

    vcpus, mem_gb = MACHINES[machine]
    lat = sum(res["meta"]["latency_ms"]) / 2 / 1e3
    bw = res["meta"]["bandwidth_mbps"] * 1e6
    client = res["client"]
    unit = res["unit_costs"]["jobs"][job.cost_key]
    shard_bytes = job.bytes_read / job.shards
    shard_records = job.records / job.shards
    if job.ranged:
        gets = job.records
        build = next(
            p
            for p in res["points"]
            if p["mode"] == "build" and p["threads"] == res["saturating_threads"]
        )
        cpu_per_record = (
            build["cpu_ms_per_record"] / 1e3 * MEAN_RECORD / res["meta"]["mean_record_bytes"]
        )
        cpu = job.records * cpu_per_record
        wait_shard = 0.0  # reads: the core is the limit at GCS_READ_THREADS in flight
    else:
        chunks = math.ceil(shard_bytes / READ_CHUNK)
        gets = job.shards * chunks
        cpu = (
            job.records * unit["us_per_record"] / 1e6
            + job.bytes_read * unit["ns_per_byte"] / 1e9
            + gets * client["cpu_ms_per_get"] / 1e3
            + job.bytes_read * client["cpu_ns_per_byte"] / 1e9
        )
        wait_shard = chunks * (lat + READ_CHUNK / bw)
    put_chunks = (
        math.ceil(job.bytes_written / job.shards / UPLOAD_CHUNK) if job.written_shards else 0
    )
    upload_wait_shard = (
        put_chunks * lat + (job.bytes_written / job.shards) / bw if put_chunks else 0.0
    )
    shard_time = cpu / job.shards + wait_shard + upload_wait_shard
    rounds = math.ceil(job.shards / (vcpus * workers))
    seconds = max(rounds * shard_time, gets / BUCKET_READS_PER_S)
    limit = (
        "bucket read rate"
        if gets / BUCKET_READS_PER_S > rounds * shard_time
        else ("CPU" if job.ranged else "request latency")
    )
    class_a = job.written_shards * (1 + put_chunks) + job.small_writes
    worker_hour = vcpus * VCPU_HOUR + mem_gb * GB_HOUR + WORKER_DISK_GB * PD_GB_HOUR
    compute = workers * seconds / 3600 * worker_hour
    ops = gets * CLASS_B + class_a * CLASS_A
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
        "dataflow_usd": compute,
        "gcs_ops_usd": ops,
        "worker_hour_usd": worker_hour,
        "read_threads": GCS_READ_THREADS,
        "shard_records": shard_records,
    }


def memory(res: dict[str, Any]) -> dict[str, float]:
    from beam_jobs.building.build import BATCH_BYTES, GCS_READ_THREADS

    m = res["unit_costs"]["memory"]
    return {
        "build_table_split_mib": SPLIT_RECORDS * m["build_table_bytes_per_row"] / 2**20,
        "build_table_reshuffle_mib": TRAIN_RECORDS * m["build_table_bytes_per_row"] / 2**20,
        "catalog_mib": TRAIN_RECORDS * m["catalog_bytes_per_row"] / 2**20,
        "batch_mib": max(BATCH_BYTES, 4 * GCS_READ_THREADS * MEAN_RECORD) / 2**20,
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
    p.add_argument("--results", default=str(ROOT / ".bench" / "latency.json"))
    p.add_argument("--workers", default="4,20")
    a = p.parse_args(argv)
    res = json.loads(Path(a.results).read_text())
    print(render(res, [int(x) for x in a.workers.split(",")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
