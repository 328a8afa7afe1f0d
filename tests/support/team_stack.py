"""The team's stack (docker-compose.yaml) run as processes, without a container engine.

Everything a container would get is read from ``docker-compose.yaml``, the one
definition: the ``x-airflow-common`` environment (executor, auth manager, the
recovery settings, the product settings, each ``${VAR:-default}`` at its
default, which ``tests/airflow/test_compose.py`` proves equal to ``.env.example``), each
service's command, the ``airflow-init`` steps (migrate the database, write the
admin's password with ``docker/simple_auth_passwords.py``), the emulator's
settings and the ``demo-data`` command. What differs is only what a container
engine provides, and it is mapped here in one place (``HOST_MAP``,
``PATH_MAP``, ``LAUNCHER_ONLY``; ``tests/airflow/test_team_stack.py`` checks nothing
else differs):

* service host names (``postgres``, ``airflow-apiserver``, ``gcs-emulator``)
  become 127.0.0.1 and a free port each;
* container paths (``/opt/airflow/...``, ``/data``, ``/opt/ssl-splits/docker``)
  become folders under the stack's base folder or the repo;
* one network namespace for all processes: the API server's host and port and
  the two log servers' ports are set per stack (containers have their own).

Postgres is the real server: Debian's ``postgresql`` (``bin/install-system-deps``),
its own data folder and a free port, run as an unprivileged user when we are
root (PostgreSQL refuses to run as root). Components are restarted when they
exit, as compose's ``restart: always`` does (``Stack.supervise``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from support.airflow_env import BIN_AIRFLOW, DAG_ID, PYTHON, airflow_env
from support.airflow_server import not_ready
from support.common import ROOT, free_port

COMPOSE_FILE = ROOT / "docker-compose.yaml"
# The Airflow components, in the order they start (compose: the API server first,
# the scheduler waits for it).
COMPONENTS = {
    "api-server": "airflow-apiserver",
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
}
# Container-only host names -> which of the stack's own ports replaces them.
HOST_MAP = {"postgres": "pg", "airflow-apiserver:8080": "api", "gcs-emulator:9023": "emulator"}
# Variables that only a process launcher needs (all processes share one network
# namespace and one host), with why; nothing else may differ from compose.
LAUNCHER_ONLY = {
    "AIRFLOW__API__HOST": "the API server listens on 127.0.0.1, not in a container",
    "AIRFLOW__API__PORT": "a free port, not the container's 8080",
    "AIRFLOW__API__BASE_URL": "the UI's own URL on that port",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "one network namespace for all components",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "one network namespace for all components",
    "AIRFLOW__CORE__DAGS_FOLDER": "compose mounts ./dags at AIRFLOW_HOME/dags",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "compose mounts ./plugins at AIRFLOW_HOME/plugins",
    "AIRFLOW_HOME": "the image's /opt/airflow",
    "SSL_SPLITS_AIRFLOW_HOME": "bin/airflow's name for AIRFLOW_HOME",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "(same as compose; also set by bin/airflow)",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "bin/airflow's default, the image's too",
}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-)?([^}]*)\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """``${VAR:-default}`` / ``${VAR-default}`` / ``${VAR}`` as compose resolves them,
    with ``env`` as the .env (empty: every default)."""
    env = env or {}

    def one(m: re.Match) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3)
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env[name] if name in env else default
        return env.get(name, "")

    return _VAR.sub(one, str(value)).replace("$$", "$")


def compose_env(
    service: str = "airflow-scheduler", dotenv: dict[str, str] | None = None
) -> dict[str, str]:
    """A service's environment as compose gives it, every variable at its default."""
    # PyYAML resolves the file's merge keys (<<: *airflow-common, *airflow-common-env).
    env = compose()["services"][service].get("environment") or {}
    return {k: interpolate("" if v is None else v, dotenv) for k, v in env.items()}


def command(service: str) -> list[str]:
    cmd = compose()["services"][service]["command"]
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def recovery_settings() -> dict[str, str]:
    """The scheduler's recovery settings compose sets (``[scheduler]`` ones)."""
    return {k: v for k, v in compose_env().items() if k.startswith("AIRFLOW__SCHEDULER__")}


def postgres_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian's layout)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError(
            "no PostgreSQL server (Debian's postgresql): run bin/install-system-deps"
        )
    return Path(found[-1]).parent


def postgres_major() -> int:
    out = subprocess.run(
        [str(postgres_bin() / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
    return int(re.search(r"\(PostgreSQL\) (\d+)", out).group(1))


def compose_postgres_major() -> int:
    return int(re.search(r"postgres:(\d+)", compose()["services"]["postgres"]["image"]).group(1))


def _terminate(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace``
    seconds (``docker compose stop``)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + wait
        for p in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))


class Postgres:
    """A PostgreSQL server of its own: data folder, free port, the database and
    user compose's ``postgres`` service creates (POSTGRES_USER/PASSWORD/DB)."""

    def __init__(self, log: Path, dotenv: dict[str, str] | None = None) -> None:
        svc = compose_env("postgres", dotenv)
        self.user, self.password, self.db = (
            svc["POSTGRES_USER"],
            svc["POSTGRES_PASSWORD"],
            svc["POSTGRES_DB"],
        )
        self.bin = postgres_bin()
        self.port = free_port()
        self.log = log
        # /tmp, not pytest's 0700 folders: the server's user must reach it.
        self.data = Path(tempfile.mkdtemp(prefix="ssl-splits-pg-", dir="/tmp"))
        self.run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            name = "postgres" if _user_exists("postgres") else "nobody"
            pw = pwd.getpwnam(name)
            self.run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
        self.proc: subprocess.Popen | None = None

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC"}

    def init(self) -> None:
        pwfile = self.data / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            os.chown(pwfile, self.run_as["user"], self.run_as["group"])
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data / "db"),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            env=self._env(),
            **self.run_as,
        )
        pwfile.unlink()
        self.start()
        subprocess.run(
            [
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                self.db,
            ],
            check=True,
            capture_output=True,
            env={**self._env(), "PGPASSWORD": self.password},
        )

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data / "db"),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    # Airflow's components and tasks each hold a few connections.
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=off",  # a test database: crash-safety of the machine not needed
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
                **self.run_as,
            )
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        ).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; log {self.log}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Fast shutdown (SIGINT) by default, as ``docker compose stop`` would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def url(self, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.db}"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Stack:
    """Postgres, the GCS emulator and Airflow's four components, as compose runs them."""

    def __init__(
        self,
        base: Path,
        admin_password: str = "stack-admin-password-1",
        extra_allowed_roots: list[str] | None = None,
        dotenv: dict[str, str] | None = None,
    ) -> None:
        """``dotenv``: a team's .env (compose interpolates the file with it)."""
        self.dotenv = dict(dotenv or {})
        self.base = base
        self.logs = base / "logs"
        self.home = base / "airflow"
        self.data = base / "data"  # compose's airflow-data volume (/opt/airflow/data)
        self.gcs_data = base / "gcs-data"  # compose's gcs-data volume
        for d in (self.logs, self.home / "config", self.data, self.gcs_data):
            d.mkdir(parents=True, exist_ok=True)
        self.pg = Postgres(self.logs / "postgres.log", self.dotenv)
        self.ports = {"pg": self.pg.port, "api": free_port(), "emulator": free_port()}
        self.url = f"http://127.0.0.1:{self.ports['api']}"
        self.admin_user = compose_env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")[0]
        self.admin_password = admin_password
        self.bucket = compose_env("gcs-emulator", self.dotenv)["GCS_BUCKET"]
        self.env = self.airflow_env()
        if extra_allowed_roots:  # as a team adds its own roots to compose's
            self.env["SSL_SPLITS_ALLOWED_ROOTS"] = ",".join(
                [self.env["SSL_SPLITS_ALLOWED_ROOTS"], *extra_allowed_roots]
            )
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self.emulator: subprocess.Popen | None = None
        self._held: set[str] = set()  # components stopped on purpose: not restarted
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._supervisor: threading.Thread | None = None
        self.token: str | None = None

    # ------------------------------------------------------------------ the definition

    def path_map(self) -> dict[str, str]:
        """Container paths -> this stack's folders (compose's mounts and volumes)."""
        return {
            "/opt/airflow/config": str(self.home / "config"),
            "/opt/airflow/logs": str(self.home / "logs"),
            "/opt/airflow/data": str(self.data),
            "/opt/airflow/dags": str(ROOT / "dags"),
            "/opt/airflow/plugins": str(ROOT / "plugins"),
            "/opt/ssl-splits/docker": str(ROOT / "docker"),
            "/data": str(self.gcs_data),
        }

    def to_host(self, value: str) -> str:
        """A compose value with container host names and paths mapped to this stack's."""
        for host, key in HOST_MAP.items():
            value = re.sub(
                rf"(?<=[@/]){re.escape(host)}(?=[/:]|$)", f"127.0.0.1:{self.ports[key]}", value
            )
        for src, dst in sorted(self.path_map().items(), key=lambda kv: -len(kv[0])):
            value = re.sub(rf"(?<![\w/]){re.escape(src)}(?=/|,|$)", dst, value)
        return value

    def airflow_env(self) -> dict[str, str]:
        env = airflow_env(self.home)  # the tests' isolation: no outside settings leak in
        del env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]  # compose's, below
        for key, value in compose_env(dotenv=getattr(self, "dotenv", None)).items():
            env[key] = self.to_host(value)
        env.update(
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.ports["api"]),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        )
        return env

    # ------------------------------------------------------------------ lifecycle

    def init(self) -> None:
        """Postgres, the emulator, airflow-init's steps, demo-data's step."""
        self.pg.init()
        self.start_emulator()
        # airflow-init: migrate (the image's entrypoint with _AIRFLOW_DB_MIGRATE), which
        # writes the shared airflow.cfg (AIRFLOW_CONFIG) on first use; then the password.
        self._run_once("airflow-init", [PYTHON, "-m", "airflow", "db", "migrate"], self.env)
        (self.home / ".db-initialised").touch()  # bin/airflow: no SQLite migration of its own
        init_env = {
            **self.env,
            **{
                k: self.to_host(v)
                for k, v in compose_env("airflow-init", self.dotenv).items()
                if k not in self.env
            },
            "AIRFLOW_ADMIN_PASSWORD": self.admin_password,
        }
        self._run_once(
            "airflow-init", [PYTHON, str(ROOT / "docker" / "simple_auth_passwords.py")], init_env
        )
        # demo-data: its compose command, its environment.
        demo = [self.to_host(w) for w in command("demo-data")]
        demo[0] = PYTHON if demo[0] == "python" else demo[0]
        self._run_once("demo-data", demo, {**self.env, "PYTHONPATH": str(ROOT)})

    def _run_once(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.run(
                argv,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        if proc.returncode:
            raise RuntimeError(f"{name} failed ({proc.returncode}); log {self.logs / name}.log")

    def start_emulator(self) -> None:
        env = {k: self.to_host(v) for k, v in compose_env("gcs-emulator", self.dotenv).items()}
        env.update(GCS_EMULATOR_LISTEN="127.0.0.1", GCS_EMULATOR_PORT=str(self.ports["emulator"]))
        with open(self.logs / "gcs-emulator.log", "ab") as out:
            self.emulator = subprocess.Popen(
                [PYTHON, str(ROOT / "docker" / "gcs_emulator_server.py")],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.ports['emulator']}/storage/v1/b", timeout=2
                ):
                    return
            except OSError:
                if self.emulator.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the GCS emulator did not start") from None
                time.sleep(0.2)

    def start(self, name: str | None = None) -> None:
        """Start every component (or one), and the supervisor that restarts them."""
        with self._lock:
            for comp in [name] if name else list(COMPONENTS):
                self._held.discard(comp)
                self._spawn(comp)
        if self._supervisor is None or not self._supervisor.is_alive():
            self._stop.clear()
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()

    def _spawn(self, comp: str) -> None:
        argv = [str(BIN_AIRFLOW), *command(COMPONENTS[comp])]
        with open(self.logs / f"{comp}.log", "ab") as out:
            out.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.procs[comp] = subprocess.Popen(
                argv,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _supervise(self) -> None:
        """compose's ``restart: always``: a component that exited starts again
        (Docker waits 100 ms, doubling; here 1 s)."""
        while not self._stop.wait(1.0):
            with self._lock:
                for comp, proc in list(self.procs.items()):
                    if comp not in self._held and proc.poll() is not None:
                        self.restarts[comp] = self.restarts.get(comp, 0) + 1
                        self._spawn(comp)

    def kill(self, comp: str, restart: bool = True) -> None:
        """SIGKILL a component's whole process group (its task processes and Beam
        jobs too: what a container's end does to them). ``restart=False``: held
        down until ``start(comp)``."""
        with self._lock:
            if not restart:
                self._held.add(comp)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[comp].pid, signal.SIGKILL)
            self.procs[comp].wait()

    def configure(self, **dotenv: str) -> dict[str, str]:
        """A team's ``.env`` changed: the new values (container paths and host names
        as a team writes them) go through compose's interpolation of the file and
        this stack's mapping, as at the stack's start, into the environment the
        components get when they next start (``restart``). Returns the variables
        whose value changed; nothing else changes (ports, extra allowed roots)."""
        before = {k: self.to_host(v) for k, v in compose_env(dotenv=self.dotenv).items()}
        self.dotenv.update(dotenv)
        after = {k: self.to_host(v) for k, v in compose_env(dotenv=self.dotenv).items()}
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        with self._lock:
            self.env.update(changed)
        return changed

    def restart(self, *comps: str, grace: float = 20) -> None:
        """``docker compose up -d`` after a ``.env`` change: these components stopped
        (SIGTERM, SIGKILL after ``grace`` seconds) and started with ``self.env``."""
        comps = comps or tuple(COMPONENTS)
        with self._lock:
            self._held.update(comps)
            procs = [self.procs[c] for c in comps if c in self.procs]
            _terminate(procs, grace)
            for comp in comps:
                self.start(comp)
        if "api-server" in comps:
            self.token = None

    def stop(self, grace: float = 20) -> None:
        """``docker compose stop`` for the Airflow components: SIGTERM, then SIGKILL
        after ``grace`` seconds."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join()
        with self._lock:
            self._held.update(COMPONENTS)
            _terminate(list(self.procs.values()), grace)
        self.token = None

    def stop_all(self, grace: float = 20) -> None:
        self.stop(grace)
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.terminate()
            self.emulator.wait(timeout=10)
        self.pg.stop()

    def start_all(self) -> None:
        """After stop_all: Postgres, the emulator, airflow-init (migrate: nothing to do;
        the password again), the components: ``docker compose up`` again."""
        self.pg.start()
        self.start_emulator()
        self._run_once("airflow-init", [PYTHON, "-m", "airflow", "db", "migrate"], self.env)
        self.start()

    def remove(self) -> None:
        """Everything stopped (a hung component killed after 3 s) and deleted."""
        self.stop_all(grace=3)
        self.pg.remove()

    def keep_logs(self, dest: Path) -> Path:
        """Every component's log, Postgres's, the emulator's and the task logs, to ``dest``."""
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.logs, dest / "components", dirs_exist_ok=True)
        if (self.home / "logs").exists():
            shutil.copytree(self.home / "logs", dest / "task-logs", dirs_exist_ok=True)
        return dest

    def log_tails(self, n: int = 20) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {path.name} ---\n" + "\n".join(lines))
        return "\n".join(out)

    # ------------------------------------------------------------------ as a team uses it

    def login(self) -> str:
        """A token from ``POST /auth/token`` with the admin's name and password."""
        req = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps(
                {"username": self.admin_user, "password": self.admin_password}
            ).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            self.token = json.load(r)["access_token"]
        return self.token

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        if self.token is None:
            self.login()
        url = f"{self.url}{path}" + (
            f"?{urllib.parse.urlencode(query, doseq=True)}" if query else ""
        )
        req = urllib.request.Request(
            url,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def api(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, **query)

    def wait_ready(self, timeout: float = 240) -> None:
        """Every component healthy (the API's monitor) and the DAG parsed, unpaused."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                last = not_ready(self.api)
                if not last:
                    return
            except (urllib.error.URLError, OSError, ValueError) as err:
                last = str(err)
                if isinstance(err, urllib.error.HTTPError) and err.code == 401:
                    self.token = None
            time.sleep(1)
        raise AssertionError(f"the stack was not ready after {timeout:.0f} s ({last})")

    def trigger(self, conf: dict[str, Any]) -> str:
        """``POST /api/v2/dags/{dag}/dagRuns`` with ``conf`` as the trigger form sends it."""
        return self.request(
            "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
        )["dag_run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def wait_run(self, run_id: str, timeout: float, poll: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                run = self.run(run_id)
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(poll)  # the API server restarting, or the database away
                continue
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(poll)
        return run

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        return self.api(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances",
            limit=100,
        )["task_instances"]

    def states(self, run_id: str) -> dict[str, str | None]:
        return {
            (t.get("rendered_map_index") or t["task_id"])
            if t["map_index"] < 0
            else f"{t['task_id']}[{t.get('rendered_map_index') or t['map_index']}]": t["state"]
            for t in self.task_instances(run_id)
        }

    def recent_manifests(self) -> list[dict[str, Any]]:
        """What the Splits view lists (its JSON endpoint)."""
        return self.api("/ssl-splits/api/recent")

    def read_object(self, uri: str) -> bytes:
        """An object on the emulator (as docs/compose.md's curl reads it)."""
        assert uri.startswith("gs://"), uri
        bucket, _, name = uri[5:].partition("/")
        url = (
            f"http://127.0.0.1:{self.ports['emulator']}/download/storage/v1/b/{bucket}/o/"
            f"{urllib.parse.quote(name, safe='')}?alt=media"
        )
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def list_objects(self, prefix_uri: str) -> dict[str, dict[str, Any]]:
        """name -> object metadata (md5, generation, size) under a gs:// prefix."""
        bucket, _, prefix = prefix_uri[5:].partition("/")
        out: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            q = {"prefix": prefix.rstrip("/") + "/", "maxResults": 1000}
            if token:
                q["pageToken"] = token
            url = (
                f"http://127.0.0.1:{self.ports['emulator']}/storage/v1/b/{bucket}/o?"
                + urllib.parse.urlencode(q)
            )
            with urllib.request.urlopen(url, timeout=30) as r:
                page = json.load(r)
            for item in page.get("items", []):
                out[item["name"]] = item
            token = page.get("nextPageToken")
            if not token:
                return out
