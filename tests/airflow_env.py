"""Moved to ``tests/support/airflow_env.py``. This name stays for
``benchmarks/dag.py``, which puts ``tests/`` on ``sys.path`` and imports
``airflow_env``: remove it once that imports ``support.airflow_env``."""

from support.airflow_env import airflow_env, migrated_home  # noqa: F401
