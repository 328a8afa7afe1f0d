"""Helpers the tests import: plain modules and functions, no fixtures (those
are in ``tests/conftest.py``, which builds them from these).

* ``common``: the repo's root, the interpreter, the shipped reference lists,
  ``run_module`` (``python -m ...`` as users run it), ``free_port``.
* ``airflow_env``: an isolated Airflow for ``bin/airflow dags test`` and ``dag.test()``.
* ``built_splits``: the DAG's tasks run in-process, job by job (and as a script).
* ``gcs_emulator``: the GCS emulator the ``gcs_emulator`` fixture starts (a script).
* ``gcs_fault_proxy``: a proxy in front of it that injects faults.
* ``ui_manifests``: manifests for the UI's tests.
"""
