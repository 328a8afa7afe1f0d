"""Logging of the Beam jobs (no Apache Beam import: also used by checks that
run without a pipeline)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """Log the ``beam_jobs`` loggers at INFO to stdout, in the launcher and in
    every worker (call it from ``DoFn.setup``).

    Airflow's Beam hook shows a job's stdout lines as INFO and stderr lines as
    WARNING; DirectRunner worker processes inherit the launcher's stdout, so
    progress printed there reaches the Airflow task log on every runner mode.
    """
    logger = logging.getLogger("beam_jobs")
    if not any(getattr(h, "_ssl_splits", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._ssl_splits = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
