"""Run the DAG as users do, in an isolated Airflow: a private AIRFLOW_HOME (its
own SQLite metadata DB), this repo's dags/ and plugins/, no outside Airflow or
product settings leaking in.

* ``airflow_env(home)``: the environment for ``bin/airflow`` (and for this
  file run as a script).
* ``migrated_home(path)``: an AIRFLOW_HOME with a migrated DB (once);
  ``copy_home`` clones it, so each test gets a fresh DB without migrating again.
* ``dags_test(conf, env)``: ``bin/airflow dags test ssl_imagenet_splits --conf``
  in a subprocess; returns its output and, read from the metadata DB, the run's
  state and every task instance's state.
* Run as a script (``python tests/support/airflow_env.py CASES.json RESULTS.json``, with
  ``airflow_env`` set): triggers the DAG in-process with ``dag.test(run_conf=...)``
  once per case and records, per case, the exception, the run's and tasks'
  states and everything written to stdout/stderr meanwhile. One interpreter for
  many cases: Airflow's start-up (~10 s) is paid once.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
DAG_ID = "ssl_imagenet_splits"
DAG_FILE = ROOT / "dags" / f"{DAG_ID}.py"
BIN_AIRFLOW = ROOT / "bin" / "airflow"
PYTHON = (
    str(ROOT / ".venv" / "bin" / "python")
    if (ROOT / ".venv" / "bin" / "python").exists()
    else sys.executable
)
# Anonymous credentials for the GCS emulator, through the connection the DAG uses.
GCP_CONN_ANONYMOUS = "google-cloud-platform://?project=test-project&is_anonymous=true"
# Product settings that change param defaults or the DAG: never inherited by a test.
_PRODUCT_PREFIXES = ("SSL_SPLITS_", "AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for bin/airflow with a private AIRFLOW_HOME; ``extra`` wins."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_PRODUCT_PREFIXES) and k not in ("AIRFLOW_HOME", "PYTHONPATH")
    }
    env.update(
        SSL_SPLITS_AIRFLOW_HOME=str(home),
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        # Explicit: an airflow.cfg copied from another home would name that home's DB.
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def migrated_home(home: Path) -> Path:
    """``home`` with a migrated metadata DB (bin/airflow's own first-use step)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / ".db-initialised").exists():
        proc = subprocess.run(
            [str(BIN_AIRFLOW), "version"],
            env=airflow_env(home),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"bin/airflow could not set up {home}:\n{proc.stderr[-3000:]}"
        assert (home / ".db-initialised").exists()
    return home


def copy_home(template: Path, dst: Path) -> Path:
    """A fresh AIRFLOW_HOME whose DB is a copy of an already migrated one (not its
    airflow.cfg, which names the template's own paths)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("airflow.db", ".db-initialised"):
        if (template / name).exists():
            shutil.copy2(template / name, dst / name)
    return dst


@dataclass
class DagRunResult:
    returncode: int
    output: str
    run_id: str | None
    state: str | None
    # (task_id, rendered split or map index) -> state, e.g. ("build", "train.2") -> "skipped"
    tasks: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def states(self, task_id: str) -> dict[str, str | None]:
        return {key: s for (t, key), s in self.tasks.items() if t == task_id}

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-n:])


def db_runs(home: Path) -> list[tuple[str, str]]:
    """(run_id, state) of every run of the DAG, oldest first."""
    db = home / "airflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as c:
        return list(
            c.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", (DAG_ID,))
        )


def db_task_states(home: Path, run_id: str) -> dict[tuple[str, str], str | None]:
    with sqlite3.connect(home / "airflow.db") as c:
        rows = c.execute(
            "SELECT task_id, map_index, rendered_map_index, state FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        )
        return {(t, r if r is not None else str(m)): s for t, m, r, s in rows}


def db_task_tries(home: Path, run_id: str) -> dict[tuple[str, str], int]:
    """(task_id, rendered split or map index) -> try_number of its last try."""
    with sqlite3.connect(home / "airflow.db") as c:
        rows = c.execute(
            "SELECT task_id, map_index, rendered_map_index, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        )
        return {(t, r if r is not None else str(m)): n for t, m, r, n in rows}


def dags_test(
    conf: dict[str, Any], env: dict[str, str], *, log: Path | None = None, timeout: float = 600
) -> DagRunResult:
    """``bin/airflow dags test ssl_imagenet_splits --conf JSON``, then the run's states."""
    home = Path(env["SSL_SPLITS_AIRFLOW_HOME"])
    before = {r for r, _ in db_runs(home)}
    proc = subprocess.run(
        [str(BIN_AIRFLOW), "dags", "test", DAG_ID, "--conf", json.dumps(conf)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    new = [(r, s) for r, s in db_runs(home) if r not in before]
    run_id, state = new[-1] if new else (None, None)
    tasks = db_task_states(home, run_id) if run_id else {}
    return DagRunResult(proc.returncode, output, run_id, state, tasks)


def run_cases(
    cases: list[dict[str, Any]], env: dict[str, str], workdir: Path, timeout: float = 600
) -> list[dict[str, Any]]:
    """Run this file as a script over ``cases`` ({"name", "conf"}); its results."""
    cases_file, results_file = workdir / "cases.json", workdir / "results.json"
    cases_file.write_text(json.dumps(cases))
    proc = subprocess.run(
        [PYTHON, __file__, str(cases_file), str(results_file)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0 and results_file.exists(), (
        f"the dag.test() script failed:\n{(proc.stdout + proc.stderr)[-5000:]}"
    )
    return json.loads(results_file.read_text())


# --------------------------------------------------------------------------- script


class _CaptureFds:
    """Send fds 1 and 2 (whatever Python object writes them) to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):  # -> Self
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self._f = open(self.path, "wb")
        os.dup2(self._f.fileno(), 1)
        os.dup2(self._f.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._f.close()


def _main(cases_file: str, results_file: str) -> int:
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.db import upgradedb

    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / ".db-initialised").exists():
        upgradedb()
        (home / ".db-initialised").touch()
    results = []
    for i, case in enumerate(json.loads(Path(cases_file).read_text())):
        # A fresh DAG object per case, as a worker process would have: a run's
        # params are resolved into the task objects of the process that ran it.
        bag = DagBag(dag_folder=str(DAG_FILE))
        assert not bag.import_errors, bag.import_errors
        dag = bag.dags[DAG_ID]
        log = Path(results_file).with_suffix(f".{i}.log")
        error, dr = None, None
        with _CaptureFds(log):
            try:
                dr = dag.test(run_conf=case["conf"])
            except Exception as err:  # noqa: BLE001  (recorded; the test judges it)
                error = f"{type(err).__name__}: {err}"
                settings.Session.remove()
        tasks = db_task_states(home, dr.run_id) if dr is not None else {}
        results.append(
            {
                "name": case["name"],
                "error": error,
                "log": log.read_text(errors="replace"),
                "run_id": dr.run_id if dr is not None else None,
                "state": str(dr.state) if dr is not None else None,
                "tasks": {f"{t}[{k}]" if k != "-1" else t: s for (t, k), s in tasks.items()},
            }
        )
    Path(results_file).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
