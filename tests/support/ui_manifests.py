"""A manifest of ImageNet's real size for the Splits view's tests: what the DAG
publishes for the whole product on ImageNet (five 10% splits of 102 shards, the
1,024-shard reshuffle, 1,000 classes with their real spread of 732..1,300 images,
the 128-shard validation copy, 1,024 source files), with the fields the DAG
writes (beam_jobs/publishing/manifest.py, ssl_splits/tasks.py). Deterministic: a seeded
random generator makes the class sizes, names and checksums."""

from __future__ import annotations

import random
from typing import Any

SEEDS = (1, 2, 3, 4, 5)
TRAIN_RECORDS = 1_281_167
SOURCE_SHARDS = 1024
RECORD_BYTES = 110_000


def _shards(
    output: str, split: str, n: int, total: int, rng: random.Random
) -> list[dict[str, Any]]:
    base, extra = divmod(total, n)
    return [
        {
            "path": f"{output}/{split}-{i:05d}-of-{n:05d}",
            "num_records": base + (i < extra),
            "num_bytes": (base + (i < extra)) * RECORD_BYTES,
            "crc32c": f"{rng.getrandbits(32):08x}",
        }
        for i in range(n)
    ]


def imagenet_manifest(output: str = "gs://bucket/ssl") -> dict[str, Any]:
    rng = random.Random(2026)
    synsets = sorted({f"n{rng.randrange(10**8):08d}" for _ in range(1200)})[:1000]
    sizes = {s: rng.randint(732, 1300) for s in synsets}
    total = sum(sizes.values())
    sizes[synsets[0]] += TRAIN_RECORDS - total  # ImageNet's total, exactly
    ten = {s: n // 10 for s, n in sizes.items()}
    for s in sorted(sizes, key=lambda s: -(sizes[s] % 10))[: 128_116 - sum(ten.values())]:
        ten[s] += 1  # stratified: the records left over go to the largest dropped fractions
    prov = {
        "code_version": "0.1.0",
        "runner": "DataflowRunner",
        "job_name": "ssl-build",
        "job_id": "2026-11-24_01_02_03-123",
        "dag_id": "ssl_imagenet_splits",
        "run_id": "manual__2026-11-24T08:00:00+00:00",
        "built_at": "2026-11-24T08:30:00+00:00",
        "published_at": "2026-11-24T09:00:00+00:00",
        "bytes_read": 14_092_760_000,
    }
    verification = {
        "mode": "shallow",
        "verified_at": "2026-11-24T08:50:00+00:00",
        "report_uri": f"{output}/_work/verify/x.json",
    }
    splits: dict[str, Any] = {}
    for seed in SEEDS:
        name = f"train128116.{seed}"
        splits[name] = {
            "kind": "supervised",
            "seed": seed,
            "fraction": "0.1",
            "sampling": "stratified",
            "num_examples": 128_116,
            "num_shards": 102,
            "file_pattern": f"{output}/{name}-*-of-00102",
            "shards": _shards(output, name, 102, 128_116, rng),
            "class_counts": dict(ten),
            "plan": {
                "uri": f"{output}/_work/plans/{name}.{seed:016x}.csv",
                "sha256": "a" * 64,
                "source": "computed",
                "algorithm": "v1",
            },
            "source_fingerprint": "f" * 64,
            "verification": verification,
            "provenance": prov,
        }
    splits["train"] = {
        "kind": "unsupervised",
        "seed": 0,
        "fraction": "1",
        "sampling": "stratified",
        "num_examples": TRAIN_RECORDS,
        "num_shards": 1024,
        "file_pattern": f"{output}/train-*-of-01024",
        "shards": _shards(output, "train", 1024, TRAIN_RECORDS, rng),
        "class_counts": sizes,
        "plan": {
            "uri": f"{output}/_work/plans/train.csv",
            "sha256": "b" * 64,
            "source": "computed",
            "algorithm": "v1",
        },
        "source_fingerprint": "f" * 64,
        "verification": verification,
        "provenance": prov,
    }
    splits["validation"] = {
        "kind": "validation",
        "num_examples": 50_000,
        "num_shards": 128,
        "file_pattern": f"{output}/validation-*-of-00128",
        "copied_from": "gs://bucket/imagenet",
        "shards": _shards(output, "validation", 128, 50_000, rng),
        "source_fingerprint": "e" * 64,
        "verification": verification,
        "provenance": prov,
    }
    return {
        "schema_version": 1,
        "output_uri": output,
        "updated_at": "2026-11-24T09:00:00+00:00",
        "source": {
            "uri": "gs://bucket/imagenet",
            "fingerprint": "f" * 64,
            "num_records": TRAIN_RECORDS,
            "num_shards": SOURCE_SHARDS,
            "num_classes": 1000,
            "num_bytes": 140_000_000_000,
            "files": [
                {
                    "name": f"train-{i:05d}-of-01024",
                    "size": 136_700_000,
                    "crc32c": f"{rng.getrandbits(32):08x}",
                    "generation": str(i + 1),
                }
                for i in range(SOURCE_SHARDS)
            ],
        },
        "splits": splits,
        "provenance": {
            "code_version": "0.1.0",
            "dag_id": "ssl_imagenet_splits",
            "run_id": prov["run_id"],
            "published_at": prov["published_at"],
        },
    }
