"""The benchmark's datasets: made by the product's generator, cached under the work dir.

A dataset is regenerated only when its folder has no ``synthetic.json`` (an
interrupted generation never writes it) or the spec recorded there differs
from the spec the flags below give (parsed by ``beam_jobs.source.synthetic`` itself).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import product


@dataclass(frozen=True)
class Dataset:
    name: str
    role: str  # "count", "bytes" or "bytes_half"
    flags: tuple[str, ...]  # beam_jobs.source.synthetic flags (without --output_uri)
    num_classes: int
    about: str


# ~110 KB per record: 348x348 RGB noise at JPEG quality 90 encodes to ~111.5 KB
# (noise does not compress; 128 distinct images are reused across records).
_BYTES_IMAGE = ("--image_size=348", "--jpeg_quality=90", "--image_pool=128", "--seed=0")

FULL = {
    "count": Dataset(
        "count",
        "count",
        ("--imagenet", "--image_size=1"),
        1000,
        "ImageNet's record count: 1,281,167 records (~960 B) in 1,024 shards, 1,000 uneven "
        "classes; validation 50,000 in 128 shards",
    ),
    "bytes": Dataset(
        "bytes",
        "bytes",
        (
            "--num_classes=100",
            "--min_per_class=100",
            "--max_per_class=140",
            "--train_total=13000",
            "--train_shards=128",
            "--validation_shards=4",
            "--validation_per_class=5",
            *_BYTES_IMAGE,
        ),
        100,
        "ImageNet's record size: 13,000 records of ~112 KB (1.45 GB) in 128 shards",
    ),
    "bytes_half": Dataset(
        "bytes_half",
        "bytes_half",
        (
            "--num_classes=100",
            "--min_per_class=50",
            "--max_per_class=70",
            "--train_total=6500",
            "--train_shards=64",
            "--validation_shards=4",
            "--validation_per_class=5",
            *_BYTES_IMAGE,
        ),
        100,
        "half of BYTES: 6,500 records of ~112 KB (0.73 GB) in 64 shards",
    ),
}

QUICK = {
    "count": Dataset(
        "quick-count",
        "count",
        (
            "--num_classes=20",
            "--min_per_class=80",
            "--max_per_class=120",
            "--train_total=2000",
            "--train_shards=8",
            "--validation_shards=2",
            "--validation_per_class=5",
            "--image_size=1",
            "--seed=0",
        ),
        20,
        "quick COUNT: 2,000 tiny records in 8 shards",
    ),
    "bytes": Dataset(
        "quick-bytes",
        "bytes",
        (
            "--num_classes=10",
            "--min_per_class=80",
            "--max_per_class=120",
            "--train_total=1000",
            "--train_shards=16",
            "--validation_shards=2",
            "--validation_per_class=2",
            *_BYTES_IMAGE,
        ),
        10,
        "quick BYTES: 1,000 records of ~112 KB in 16 shards",
    ),
    "bytes_half": Dataset(
        "quick-bytes_half",
        "bytes_half",
        (
            "--num_classes=10",
            "--min_per_class=40",
            "--max_per_class=60",
            "--train_total=500",
            "--train_shards=8",
            "--validation_shards=2",
            "--validation_per_class=2",
            *_BYTES_IMAGE,
        ),
        10,
        "quick BYTES half: 500 records of ~112 KB in 8 shards",
    ),
}


def wanted_spec(ds: Dataset) -> dict[str, Any]:
    """The spec the generator will record for ``ds`` (its own flag parsing), as JSON."""
    spec: dict[str, Any] = json.loads(json.dumps(product.synthetic_spec(list(ds.flags))))
    return spec


def recorded_spec(folder: Path) -> dict[str, Any] | None:
    meta = folder / "synthetic.json"
    if not meta.exists():
        return None
    try:
        spec: dict[str, Any] = json.loads(meta.read_text())["spec"]
        return spec
    except (ValueError, KeyError):
        return None


def ensure(ds: Dataset, data_dir: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Generate ``ds`` under ``data_dir/name`` unless an identical one is there.

    Returns the generator's summary (``synthetic.json``) plus ``generated``
    (whether it ran now) and ``generate_seconds``.
    """
    folder = data_dir / ds.name
    want = wanted_spec(ds)
    if recorded_spec(folder) == want:
        summary = json.loads((folder / "synthetic.json").read_text())
        return {**summary, "generated": False, "generate_seconds": None, "path": str(folder)}
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  generating {ds.name}: {ds.about} ...", flush=True)
    t0 = time.monotonic()
    with open(log, "wb") as f:
        rc = subprocess.call(
            [sys.executable, "-m", product.SYNTHETIC, f"--output_uri={folder}", *ds.flags],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if rc != 0:
        raise RuntimeError(f"generating {ds.name} failed (exit {rc}); see {log}")
    seconds = time.monotonic() - t0
    summary = json.loads((folder / "synthetic.json").read_text())
    if summary["spec"] != want:
        raise RuntimeError(f"{ds.name}: the generator recorded another spec than asked")
    return {
        **summary,
        "generated": True,
        "generate_seconds": round(seconds, 1),
        "path": str(folder),
    }
