"""The one place the benchmark names the product: its CLIs and the settings it reads.

Every other module of ``benchmarks`` runs the product through the CLI modules
named here (``python -m <module>``, as users run them) and reads its settings
through the functions below, so that a move of the product's modules changes
this file only. Imports are lazy: ``--help`` and the scale model's tests do
not import Apache Beam.
"""

from __future__ import annotations

from typing import Any

# The product's CLIs, as ``python -m`` runs them.
VALIDATE = "beam_jobs.source.validate"
PLAN = "beam_jobs.planning.plans"
BUILD = "beam_jobs.building.build"
VERIFY = "beam_jobs.verification.verify"
SYNTHETIC = "beam_jobs.source.synthetic"
# Imported (untimed) to fill the bytecode cache before the timed jobs.
WARM_MODULES = (VALIDATE, PLAN, BUILD, VERIFY, SYNTHETIC)


def multiprocess_min_bytes() -> int:
    """Input size from which the product's CLIs run the DirectRunner on several processes."""
    from beam_jobs.pipeline import MULTIPROCESS_MIN_BYTES

    return MULTIPROCESS_MIN_BYTES


def storage_settings() -> dict[str, int]:
    """The settings of reads and writes on gs:// that the scale model uses."""
    from beam_jobs.building.build import BATCH_BYTES, GCS_READ_THREADS
    from beam_jobs.storage import READ_CHUNK, UPLOAD_CHUNK

    return {
        "batch_bytes": BATCH_BYTES,
        "gcs_read_threads": GCS_READ_THREADS,
        "read_chunk": READ_CHUNK,
        "upload_chunk": UPLOAD_CHUNK,
    }


def synthetic_spec(flags: list[str]) -> dict[str, Any]:
    """The spec the product's generator records for ``flags`` (its own parsing)."""
    from dataclasses import asdict

    from beam_jobs.source.synthetic import parse_args

    spec, _, _ = parse_args([*flags, "--output_uri=/unused"])
    return {**asdict(spec), "names_from": list(spec.names_from)}


def generate_small(folder: str, num_classes: int) -> None:
    """A small synthetic source (a DAG run's warm-up), generated in this process."""
    from beam_jobs.source.synthetic import Spec, generate

    spec = Spec(
        num_classes=num_classes,
        min_per_class=20,
        max_per_class=30,
        train_shards=4,
        validation_shards=1,
        seed=3,
    )
    generate(spec, folder, workers=1)
