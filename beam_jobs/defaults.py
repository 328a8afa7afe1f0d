"""The defaults the DAG's params, the plan step and the split algorithm share, in one place.

Plain values, no imports: the DAG file's params (``ssl_splits.form``) read
them at parse time. The output folder's names (``_work`` and what is in it)
are in ``beam_jobs.layout``; the Dataflow settings' defaults beside
``ssl_splits.config.DataflowSettings``.
"""

from __future__ import annotations

# The labelled splits train{N}.{seed} built when no seeds are given (FixMatch's five).
SEEDS: tuple[int, ...] = (1, 2, 3, 4, 5)
# Each labelled split's share of the training set, as the plans write it (exact decimal).
FRACTION = "0.1"
# How a labelled split is drawn: the same share of every class, or a plain random draw.
SAMPLINGS: tuple[str, ...] = ("stratified", "uniform")
SAMPLING = "stratified"
