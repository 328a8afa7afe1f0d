"""Airflow as users run it: its four components (API server, scheduler with the
LocalExecutor, DAG processor, triggerer) as ``bin/airflow`` processes on
127.0.0.1, with a private AIRFLOW_HOME, driven through the REST API.

Used by the browser test (``tests/airflow/test_ui_browser.py``), the UI's security test
(``tests/airflow/test_ui_security.py``, raw requests: ``Airflow.request``) and by the
benchmark of the DAG under a real scheduler (``benchmarks/dag.py``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.airflow_env import BIN_AIRFLOW, DAG_ID, airflow_env
from support.common import ROOT, free_port

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass
class Response:
    """An HTTP answer as it came (``Airflow.request``): no redirect followed."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def not_ready(api: Any) -> str:
    """Why Airflow behind ``api`` (GET a path, JSON back) is not ready yet: a
    component not healthy (the API's monitor), or the DAG paused or not parsed
    yet (an HTTP error); "" when it is ready."""
    health = api("/api/v2/monitor/health")
    bad = [k for k, v in health.items() if (v or {}).get("status") != "healthy"]
    if bad:
        return f"not healthy yet: {bad}"
    return "the DAG is paused" if api(f"/api/v2/dags/{DAG_ID}").get("is_paused") else ""


class Airflow:
    """Airflow's four components on 127.0.0.1, each a process group of our own."""

    def __init__(self, home: Path, logs: Path, parallelism: int | None = 4) -> None:
        self.home = home
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = airflow_env(
            home,
            AIRFLOW__CORE__AUTH_MANAGER=(
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            # For this test only: everyone is an admin, no login page.
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
        )
        if parallelism is not None:  # None: Airflow's default ([core] parallelism, 32)
            self.env["AIRFLOW__CORE__PARALLELISM"] = str(parallelism)
        self.procs: dict[str, subprocess.Popen] = {}
        self.token: str | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            with open(self.logs / f"{name}.log", "wb") as out:
                self.procs[name] = subprocess.Popen(
                    [str(BIN_AIRFLOW), name],
                    env=self.env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            alive = [p for p in self.procs.values() if p.poll() is None]
            for p in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)  # the group we started: the component and its children
            deadline = time.monotonic() + wait
            for p in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))

    def log_tails(self, n: int = 25) -> str:
        out = []
        for name in COMPONENTS:
            path = self.logs / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines()[-n:] if path.exists() else []
            state = self.procs[name].poll() if name in self.procs else "not started"
            out.append(f"--- {name} (exit code {state}; {path}) ---\n" + "\n".join(lines))
        return "\n".join(out)

    def api(self, path: str, **query: Any) -> Any:
        """GET a REST API path (JSON), with a token from the auth manager."""
        if self.token is None:
            with urllib.request.urlopen(f"{self.url}/auth/token", timeout=30) as r:
                self.token = json.load(r)["access_token"]
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def request(
        self, target: str, headers: dict[str, str] | None = None, *, auth: bool = True
    ) -> Response:
        """GET ``target`` exactly as given (path and query, sent on the request line
        unchanged: ``//host/x``, ``%2F`` and ``..`` reach the server as they are), with
        a bearer token unless ``auth`` is false."""
        if auth and self.token is None:
            self.api("/api/v2/monitor/health")  # gets a token
        sent = dict(headers or {})
        if auth:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.putrequest("GET", target, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders()
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def wait_ready(self, timeout: float) -> None:
        """Every component healthy and the DAG parsed."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise AssertionError(f"Airflow component(s) {dead} exited:\n{self.log_tails()}")
            try:
                last = not_ready(self.api)
                if not last:
                    return
            except (urllib.error.URLError, OSError, ValueError) as err:
                last = str(err)
            time.sleep(0.5)
        raise AssertionError(
            f"Airflow was not ready after {timeout:.0f} s ({last}):\n{self.log_tails()}"
        )

    def trigger(self, conf: dict[str, Any]) -> str:
        """Trigger a run with ``conf`` through the REST API, as the UI's form does;
        its run id."""
        self.api("/api/v2/monitor/health")  # a token first
        req = urllib.request.Request(
            f"{self.url}/api/v2/dags/{DAG_ID}/dagRuns",
            data=json.dumps({"logical_date": None, "conf": conf}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["dag_run_id"]

    def wait_run(self, run_id: str, timeout: float, poll: float = 1.0) -> dict[str, Any]:
        """The run once it succeeded or failed (or as it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(poll)
        return run

    def task_states(self, run_id: str) -> list[tuple[str, int, str | None]]:
        tis = self.api(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        )["task_instances"]
        return [(t["task_id"], t["map_index"], t["state"]) for t in tis]

    def task_log(self, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """The task's log as text (the REST API's structured log, one event a line)."""
        data = self.api(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            f"/taskInstances/{task_id}/logs/{try_number}",
            map_index=map_index,
        )
        content = data.get("content")
        if isinstance(content, list):
            return "\n".join(
                str(e.get("event", e)) if isinstance(e, dict) else str(e) for e in content
            )
        return str(content)

    def built(self, run_id: str) -> list[str]:
        """The splits the run's build task instances built (their rendered map index)."""
        tis = self.api(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances",
            task_id="build",
        )["task_instances"]
        return sorted(
            t.get("rendered_map_index") or str(t["map_index"])
            for t in tis
            if t["task_id"] == "build"
        )

    def failure_report(self, run_id: str) -> str:
        lines = []
        for task_id, map_index, state in self.task_states(run_id):
            lines.append(f"{task_id}[{map_index}]: {state}")
            if state in ("failed", "up_for_retry", "upstream_failed"):
                with contextlib.suppress(Exception):
                    lines.append(
                        "    "
                        + "\n    ".join(
                            self.task_log(run_id, task_id, map_index).splitlines()[-30:]
                        )
                    )
        return "\n".join(lines)
