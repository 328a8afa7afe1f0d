"""bin/airflow's Python side: Airflow's own CLI, then an exit that skips the
garbage collector's passes at interpreter shutdown.

When ``airflow dags test`` is done, its process holds Airflow's whole heap
(about 800,000 objects: the in-process task API's routes and models, the DAG,
every task's leftovers), and CPython's shutdown runs full collections over it
while it tears the modules down: about 2 s the user waits for after the run
has ended. :func:`gc.freeze` moves every object alive into the permanent
generation, which those collections skip; ``atexit`` handlers (Airflow's own
clean-up, logging's flush) and the flush of stdout and stderr still run.
"""

import gc
import sys

from airflow.__main__ import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        gc.freeze()
