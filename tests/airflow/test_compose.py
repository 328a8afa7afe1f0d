"""The compose stack (docker-compose.yaml, Dockerfile, docker/, .env.example).

There is no Docker engine in CI, so the stack is tested by parsing and
cross-checking, not by running it: Debian's docker-compose (1.29) must accept
the file; what it references must exist (services, host paths, build files);
the image must install exactly the locked requirements; every environment
variable the DAG and plugins read must reach the Airflow containers; ports stay
on loopback; and the two scripts the stack runs that can run here (the GCS
emulator launcher, the UI password writer) are run.

The checks are plain functions returning a list of problems, so that the
negative tests at the bottom can show that each catches a broken copy.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
EMULATOR_DOCKERFILE = ROOT / "docker" / "gcs-emulator.Dockerfile"
MAIN_LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
EMULATOR_LOCK = ROOT / "docker" / "gcs-emulator.lock"

# Folders whose Python source is scanned for environment variables it reads.
SCANNED_DIRS = ("dags", "plugins")
# Product settings the DAG and plugins read (named in the compose issue), checked
# even before dags/ and plugins/ contain the code that reads them.
PRODUCT_SETTINGS = (
    "SSL_SPLITS_MAX_PARALLEL_BUILDS",
    "SSL_SPLITS_DATAFLOW_PROJECT",
    "SSL_SPLITS_DATAFLOW_REGION",
    "SSL_SPLITS_DATAFLOW_TEMP_LOCATION",
    "SSL_SPLITS_SCHEDULE",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
)
# Set by the Airflow image or the container runtime, not by the compose file.
PROVIDED_BY_RUNTIME = {
    "HOME",
    "PATH",
    "HOSTNAME",
    "USER",
    "PYTHONPATH",
    "TMPDIR",
    "AIRFLOW_HOME",
    "AIRFLOW_VERSION",
    "AIRFLOW_USER_HOME_DIR",
    "AIRFLOW_TEST_MODE",
}  # (set by `airflow tasks test` itself)
# Services that run DAG or plugin code (parse DAGs, run tasks, serve the UI).
DAG_CODE_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
REQUIRED_SERVICES = (
    "postgres",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-init",
    "gcs-emulator",
)
ONE_SHOT_SERVICES = ("airflow-init", "demo-data", "airflow-cli")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Packages of requirements.lock that the image must not carry: TensorFlow and the
# test tools. (py-spy is in it legitimately: google provider -> ray -> py-spy.)
NOT_IN_IMAGE = (
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "tensorflow-datasets",
    "mlcroissant",
    "pytest",
    "pytest-timeout",
    "pytest-xdist",
    "ruff",
    "mypy",
    "playwright",
    "gcp-storage-emulator",
)

INSTALL_HINT = (
    "Debian's docker-compose is not on PATH: run bin/install-system-deps "
    "(installs it with apt) and rerun the tests"
)


# --------------------------------------------------------------------------- helpers


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def documented_in_env_example(text: str) -> set[str]:
    """Variables .env.example sets or shows (also ``# VAR=value`` examples)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def compose_variables(data) -> set[str]:
    """Variables a parsed compose file interpolates (``${VAR...}`` or ``$VAR`` in
    any key or value; ``$$`` is a literal dollar)."""
    if isinstance(data, dict):
        return set().union(
            set(), *(compose_variables(k) | compose_variables(v) for k, v in data.items())
        )
    if isinstance(data, list):
        return set().union(set(), *(compose_variables(v) for v in data))
    if not isinstance(data, str):
        return set()
    text = data.replace("$$", "")
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(
        re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text)
    )


def lock_pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a ``uv pip compile --generate-hashes`` file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s\\;]+)", line)
        if m:
            current = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            pins[current] = (m.group(3), [])
            continue
        h = re.search(r"--hash=(sha256:[0-9a-f]{64})", line)
        if h and current:
            pins[current][1].append(h.group(1))
        elif not line.startswith((" ", "\t")):
            current = None
    return pins


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") or (not buf and not raw.strip()):
            continue  # Docker drops comment lines, also inside a continued instruction
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        buf += raw
        lines.append(buf.strip())
        buf = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def real_gcs_env(example: str) -> str:
    """.env.example with its commented "Real GCS and Dataflow" example applied
    (the ``# KEY=value`` lines after that heading, up to the gcloud variant)."""
    lines = example.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- Real GCS"))
    values = {}
    for i, line in enumerate(lines):
        if i > start and line.startswith("# With your own gcloud"):
            break
        m = re.match(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m and bool(m.group(1)) == (i > start):
            values[m.group(2)] = m.group(3)
    return "".join(f"{k}={v}\n" for k, v in values.items())


def run_compose_config(env_file: Path | None) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(INSTALL_HINT)
    # A clean environment: the env file, not the developer's shell, decides.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    args = [exe, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    return subprocess.run(
        args + ["config"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=env_file.parent if env_file else ROOT,
    )


# --------------------------------------------------------------------------- checks


def missing_dependencies(config: dict) -> list[str]:
    """depends_on targets that are not services, bad conditions, service_healthy
    targets without a healthcheck."""
    services = config.get("services") or {}
    problems = []
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
        for dep, spec in items:
            if dep not in services:
                problems.append(f"{name} depends on {dep}, which is not a service")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond not in ("service_started", "service_healthy", "service_completed_successfully"):
                problems.append(f"{name} -> {dep}: unknown condition {cond}")
            if cond == "service_healthy" and not services[dep].get("healthcheck"):
                problems.append(f"{name} waits for {dep} to be healthy; {dep} has no healthcheck")
    return problems


def volume_problems(config: dict, root: Path) -> list[str]:
    """Bind mounts whose host path does not exist inside ``root``; named volumes
    not declared at the top level. ``config`` is docker-compose's resolved config
    (absolute host paths)."""
    declared = set((config.get("volumes") or {}).keys())
    problems = []
    for name, svc in (config.get("services") or {}).items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                source, kind = vol.get("source", ""), vol.get("type", "volume")
            else:
                source = vol.split(":", 1)[0]
                kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            if kind == "bind":
                path = Path(os.path.expanduser(source))
                if not path.is_absolute():
                    path = root / path
                path = path.resolve()
                if not path.is_relative_to(root.resolve()):
                    problems.append(f"{name}: host path {source} is outside the repo")
                elif not path.exists():
                    problems.append(f"{name}: host path {source} does not exist")
            elif source and source not in declared:
                problems.append(f"{name}: named volume {source} is not declared under volumes:")
    return problems


def dockerignored(src: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` exclude ``src`` (or a folder holding it)
    from the build context; a later ``!pattern`` re-includes, as in Docker."""
    src = src.strip("/")
    prefixes = ["/".join(src.split("/")[:i]) for i in range(1, src.count("/") + 2)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if hit:
            excluded = not negate
    return excluded


def build_problems(config: dict, root: Path) -> list[str]:
    """Build contexts, Dockerfiles, and the files they COPY, exist, and
    .dockerignore does not leave those files out of the context."""
    problems = []
    for name, svc in (config.get("services") or {}).items():
        build = svc.get("build")
        if not build:
            continue
        context = Path(build["context"] if isinstance(build, dict) else build)
        context = context if context.is_absolute() else root / context
        dockerfile = context / (
            build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        )
        if not dockerfile.is_file():
            problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
            continue
        ignore_file = context / ".dockerignore"
        ignored = (
            [
                line.strip()
                for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            ]
            if ignore_file.is_file()
            else []
        )
        for word, args in dockerfile_instructions(dockerfile):
            if word not in ("COPY", "ADD"):
                continue
            parts = [p for p in args.split() if not p.startswith("--")]
            for src in parts[:-1]:
                if not list(context.glob(src.rstrip("/"))):
                    problems.append(f"{name}: {dockerfile.name} copies {src}, which does not exist")
                elif dockerignored(src, ignored):
                    problems.append(
                        f"{name}: {dockerfile.name} copies {src}, which "
                        ".dockerignore leaves out of the build context"
                    )
    return problems


def read_env_vars(dirs: list[Path]) -> dict[str, list[str]]:
    """Environment variables read by Python source under ``dirs``:
    os.environ.get("X"), os.environ["X"] (not assignments), os.getenv("X"),
    os.environ.setdefault("X", ...), also via ``from os import environ, getenv``
    and via an alias (``env = os.environ.get`` ... ``env("X")``); arguments may
    span lines. Returns name -> ["file:line", ...]."""
    name = r"\s*[rbuf]?(['\"])([A-Za-z_][A-Za-z0-9_]*)\1"
    call = re.compile(r"\b(?:environ\.get|environ\.setdefault|getenv)\(" + name)
    item = re.compile(r"\benviron\[" + name + r"\s*\](?!\s*=[^=])")
    alias = re.compile(
        r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:os\.)?(?:environ\.get|getenv)\s*$", re.MULTILINE
    )
    found: dict[str, list[str]] = {}
    for d in dirs:
        for path in sorted(d.rglob("*.py")) if d.is_dir() else []:
            text = path.read_text(errors="replace")
            patterns = [call, item] + [
                re.compile(r"(?<![.\w])" + re.escape(a) + r"\(" + name)
                for a in set(alias.findall(text))
            ]
            for pattern in patterns:
                for m in pattern.finditer(text):
                    line = text.count("\n", 0, m.start()) + 1
                    found.setdefault(m.group(2), []).append(f"{path.relative_to(d.parent)}:{line}")
    return found


def unconfigured_env_vars(names: dict[str, list[str]], config: dict, env_example: str) -> list[str]:
    """Variables read by DAG/plugin code that the compose file does not set in
    every service running that code. (.env.example alone is not enough: the
    compose file passes variables explicitly, it has no env_file.)"""
    services = config.get("services") or {}
    documented = documented_in_env_example(env_example)
    problems = []
    for var, where in sorted(names.items()):
        if var in PROVIDED_BY_RUNTIME or var.startswith("AIRFLOW__"):
            continue
        lacking = [s for s in DAG_CODE_SERVICES if var not in service_env(services.get(s, {}))]
        if lacking:
            hint = (
                (
                    " (it is in .env.example, but .env only reaches containers through the "
                    "compose file's environment:)"
                )
                if var in documented
                else ""
            )
            problems.append(
                f"{var} (read at {', '.join(where[:3])}) is not set for "
                f"{', '.join(lacking)} in docker-compose.yaml{hint}"
            )
    return problems


def lock_mismatches(sub: Path, main: Path) -> list[str]:
    """Pins of ``sub`` that differ from, or are missing in, ``main``; pins without hashes."""
    main_pins = lock_pins(main)
    problems = []
    for name, (version, hashes) in sorted(lock_pins(sub).items()):
        if name not in main_pins:
            problems.append(f"{sub.name}: {name}=={version} is not in {main.name}")
        elif main_pins[name][0] != version:
            problems.append(
                f"{sub.name}: {name}=={version}, but {main.name} pins {main_pins[name][0]}"
            )
        if not hashes:
            problems.append(f"{sub.name}: {name} has no --hash")
    return problems


def locked_install_problems(dockerfile: Path, lock_name: str) -> list[str]:
    """The Dockerfile COPYs ``lock_name`` and pip-installs it with --require-hashes."""
    ins = dockerfile_instructions(dockerfile)
    dest = None
    for word, args in ins:
        parts = [p for p in args.split() if not p.startswith("--")]
        if word == "COPY" and len(parts) == 2 and Path(parts[0]).name == lock_name:
            dest = parts[1]
    if dest is None:
        return [f"{dockerfile.name} does not COPY {lock_name} (alone) into the image"]
    for word, args in ins:
        if word != "RUN":
            continue
        for cmd in re.split(r"&&|;", args):
            words = cmd.split()
            if "pip" in words and "install" in words and dest in words and "-r" in words:
                if "--require-hashes" not in words:
                    return [f"{dockerfile.name} installs {dest} without --require-hashes"]
                return []
    return [f"{dockerfile.name} never runs pip install --require-hashes -r {dest}"]


def published_port_problems(config: dict) -> list[str]:
    """Published ports not bound to a loopback address."""
    problems = []
    for name, svc in (config.get("services") or {}).items():
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                host_ip = port.get("host_ip", "")
            else:
                spec = str(port).rsplit("/", 1)[0]
                parts = spec.rsplit(":", 2)
                host_ip = parts[0].strip("[]") if len(parts) == 3 else ""
            if host_ip not in LOOPBACK:
                problems.append(f"{name} publishes {port} beyond loopback")
    return problems


def base_image_problems(dockerfile: Path, main_lock: Path) -> list[str]:
    froms = [a.split()[0] for w, a in dockerfile_instructions(dockerfile) if w == "FROM"]
    airflow = lock_pins(main_lock)["apache-airflow"][0]
    want = f"apache/airflow:{airflow}-python3.11"
    if froms != [want]:
        return [
            (
                f"{dockerfile.name} is FROM {froms}, expected {want} "
                f"(apache-airflow=={airflow} in {main_lock.name}, Python 3.11)"
            )
        ]
    return []


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """docker-compose's own resolved config, with .env.example copied to a temp .env."""
    d = tmp_path_factory.mktemp("compose-env")
    shutil.copy(ENV_EXAMPLE, d / ".env")
    proc = run_compose_config(d / ".env")
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


# --------------------------------------------------------------------------- tests


def test_docker_compose_accepts_the_file_with_env_example(tmp_path):
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    proc = run_compose_config(tmp_path / ".env")
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    assert "variable is not set" not in proc.stderr, proc.stderr
    assert yaml.safe_load(proc.stdout)["services"]


def test_docker_compose_defaults_equal_env_example(tmp_path, resolved):
    """Every interpolated variable has a default, and the defaults are
    .env.example's values: without a .env the stack is the same."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = run_compose_config(empty)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    assert "variable is not set" not in proc.stderr, proc.stderr
    assert yaml.safe_load(proc.stdout) == resolved


def test_the_documented_switch_to_real_gcs_parses(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(real_gcs_env(ENV_EXAMPLE.read_text()))
    proc = run_compose_config(env_file)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    scheduler = service_env(yaml.safe_load(proc.stdout)["services"]["airflow-scheduler"])
    assert scheduler["STORAGE_EMULATOR_HOST"] == ""
    assert scheduler["GOOGLE_APPLICATION_CREDENTIALS"].startswith("/opt/airflow/gcp/")
    assert "is_anonymous" not in scheduler["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"]
    assert scheduler["SSL_SPLITS_DATAFLOW_TEMP_LOCATION"].startswith("gs://")


def test_stack_shape(resolved):
    services = resolved["services"]
    missing = [s for s in REQUIRED_SERVICES if s not in services]
    assert not missing, f"services missing: {missing}"
    assert "redis" not in services, "LocalExecutor needs no broker"
    for name in DAG_CODE_SERVICES + ("airflow-init",):
        env = service_env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert services[name]["image"] == services["airflow-scheduler"]["image"], name
        assert not env.get("_PIP_ADDITIONAL_REQUIREMENTS"), f"{name}: build the image instead"
        mounts = [str(v) for v in services[name]["volumes"]]
        assert any(m.startswith(str(ROOT / "dags") + ":/opt/airflow/dags") for m in mounts), name
        assert any(m.startswith(str(ROOT / "plugins") + ":/opt/airflow/plugins") for m in mounts)
    for name, svc in services.items():
        if name not in ONE_SHOT_SERVICES:
            assert svc.get("healthcheck"), f"{name} has no healthcheck"
    # The official file's commands for the Airflow 3 components.
    commands = {n: services[n].get("command") for n in DAG_CODE_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }, commands


def test_every_service_depended_on_exists(raw, resolved):
    assert missing_dependencies(resolved) == []
    assert missing_dependencies(raw) == []


def test_mounted_host_paths_and_build_files_exist(resolved):
    assert volume_problems(resolved, ROOT) == []
    assert build_problems(resolved, ROOT) == []


def test_dockerfile_base_tag_is_the_locked_airflow_version():
    assert base_image_problems(DOCKERFILE, MAIN_LOCK) == []
    froms = [a for w, a in dockerfile_instructions(EMULATOR_DOCKERFILE) if w == "FROM"]
    assert froms and froms[0].startswith("python:3.11"), froms


def test_env_vars_read_by_dags_and_plugins_are_configured(resolved):
    names = read_env_vars([ROOT / d for d in SCANNED_DIRS])
    for var in PRODUCT_SETTINGS:
        names.setdefault(var, ["(product setting)"])
    assert unconfigured_env_vars(names, resolved, ENV_EXAMPLE.read_text()) == []
    documented = documented_in_env_example(ENV_EXAMPLE.read_text())
    undocumented = sorted(v for v in PRODUCT_SETTINGS if v not in documented)
    assert not undocumented, f"not in .env.example: {undocumented}"
    assert (
        service_env(resolved["services"]["airflow-scheduler"])["SSL_SPLITS_MAX_PARALLEL_BUILDS"]
        == "3"
    )


def test_env_example_and_compose_variables_agree():
    """Every variable the compose file interpolates is in .env.example, and every
    variable .env.example sets is used by the compose file (no dead settings)."""
    used = compose_variables(yaml.safe_load(COMPOSE_FILE.read_text()))
    text = ENV_EXAMPLE.read_text()
    assert sorted(used - documented_in_env_example(text)) == []
    assert sorted(set(read_env_file(ENV_EXAMPLE)) - used) == []


def test_image_installs_the_locked_requirements():
    assert locked_install_problems(DOCKERFILE, RUNTIME_LOCK.name) == []
    assert locked_install_problems(EMULATOR_DOCKERFILE, EMULATOR_LOCK.name) == []
    assert lock_mismatches(RUNTIME_LOCK, MAIN_LOCK) == []
    assert lock_mismatches(EMULATOR_LOCK, MAIN_LOCK) == []
    runtime = lock_pins(RUNTIME_LOCK)
    for name in (
        "apache-airflow",
        "apache-airflow-providers-apache-beam",
        "apache-airflow-providers-google",
        "apache-beam",
        "google-cloud-storage",
        "google-crc32c",
        "pyarrow",
        "pillow",
        "protobuf",
        "numpy",
    ):
        assert name in runtime, f"{name} missing from {RUNTIME_LOCK.name}"
    assert sorted(set(NOT_IN_IMAGE) & set(runtime)) == []
    assert "gcp-storage-emulator" in lock_pins(EMULATOR_LOCK)
    # The repo's package goes in without dependencies (they are all locked).
    runs = [a for w, a in dockerfile_instructions(DOCKERFILE) if w == "RUN"]
    assert any(
        re.search(r"pip install\b[^&;]*--no-deps[^&;]*/opt/ssl-splits/src", r) for r in runs
    ), runs
    # No install at container start (comments may mention it; the settings may not).
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in json.dumps(
        yaml.safe_load(COMPOSE_FILE.read_text())
    )


def emulator_problems(config: dict) -> list[str]:
    """Airflow services that do not reach the emulator service, use another
    bucket, or would look for Google credentials while using the emulator: the
    plugins build their GCS client from google_cloud_default (GCSHook), which
    needs ``is_anonymous=true`` when there is no Google account."""
    services = config.get("services") or {}
    emulator = services.get("gcs-emulator")
    if emulator is None:
        return ["no gcs-emulator service"]
    port = service_env(emulator).get("GCS_EMULATOR_PORT", "")
    problems = []
    if not any(str(p).split("/")[0].endswith(f":{port}") for p in emulator.get("ports") or []):
        problems.append(f"gcs-emulator does not publish its port {port}")
    for name in DAG_CODE_SERVICES + ("demo-data",):
        env = service_env(services.get(name, {}))
        if env.get("STORAGE_EMULATOR_HOST") != f"http://gcs-emulator:{port}":
            problems.append(f"{name}: STORAGE_EMULATOR_HOST={env.get('STORAGE_EMULATOR_HOST')!r}")
        if env.get("GCS_BUCKET") != service_env(emulator).get("GCS_BUCKET"):
            problems.append(f"{name}: GCS_BUCKET differs from the emulator's")
        query = parse_qs(urlsplit(env.get("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", "")).query)
        if query.get("is_anonymous") != ["true"]:
            problems.append(
                f"{name}: google_cloud_default is not anonymous, but GCS is the "
                "emulator (add is_anonymous=true)"
            )
    return problems


def test_airflow_uses_the_emulator_and_its_bucket(resolved):
    assert emulator_problems(resolved) == []


def test_ports_stay_on_loopback_and_no_default_password(resolved, raw):
    assert published_port_problems(resolved) == []
    assert read_env_file(ENV_EXAMPLE)["AIRFLOW_ADMIN_PASSWORD"] == ""
    for name, svc in resolved["services"].items():
        env = service_env(svc)
        if name != "airflow-init":
            assert "AIRFLOW_ADMIN_PASSWORD" not in env, f"{name} sees the admin password"
        assert env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "false") == "false"
    assert "AIRFLOW_ADMIN_PASSWORD:-}" in COMPOSE_FILE.read_text()


def _load_docker_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simple_auth_password_writer(tmp_path, monkeypatch):
    auth = _load_docker_module("simple_auth_passwords")
    path = tmp_path / "config" / "passwords.json"
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "boss:admin,ann:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(path))
    # Empty password: a random one, kept on the next run; mode 0600.
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "")
    monkeypatch.setenv("AIRFLOW_BIND", "127.0.0.1")
    assert auth.main() == 0
    first = json.loads(path.read_text())["boss"]
    assert len(first) >= 20 and (path.stat().st_mode & 0o077) == 0
    assert auth.main() == 0 and json.loads(path.read_text())["boss"] == first
    # Weak password published beyond loopback: refused, file unchanged.
    monkeypatch.setenv("AIRFLOW_BIND", "0.0.0.0")
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "airflow")
    assert auth.main() == 1 and json.loads(path.read_text())["boss"] == first
    # A strong chosen password: applied.
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "a-long-chosen-passphrase")
    assert auth.main() == 0
    assert json.loads(path.read_text()) == {"boss": "a-long-chosen-passphrase"}
    assert auth.is_loopback("::1") and auth.is_loopback("localhost")
    assert not auth.is_loopback("") and not auth.is_loopback("192.168.1.5")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_emulator(port: int, data: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "GCS_EMULATOR_LISTEN": "127.0.0.1",
        "GCS_EMULATOR_PORT": str(port),
        "GCS_BUCKET": "compose-bucket",
        "GCS_EMULATOR_DATA_DIR": str(data),
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "docker" / "gcs_emulator_server.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"emulator did not start: {proc.stderr.read().decode()}"
                ) from None
            time.sleep(0.1)


def test_gcs_emulator_launcher_serves_the_default_bucket(tmp_path, monkeypatch):
    """docker/gcs_emulator_server.py (the emulator service's command): default
    bucket, generation preconditions, objects kept on disk across restarts, and
    the download URL that docs/compose.md tells users to curl. Then
    docker/demo_data.py (the demo-data service's command) fills it, once."""
    import urllib.request

    from google.api_core.exceptions import PreconditionFailed
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port, data = _free_port(), tmp_path / "data"
    proc = _start_emulator(port, data)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        client = storage.Client(credentials=AnonymousCredentials(), project="p")
        assert [b.name for b in client.list_buckets()] == ["compose-bucket"]
        blob = client.bucket("compose-bucket").blob("demo/splits/manifest.json")
        blob.upload_from_string(b'{"splits": {}}', if_generation_match=0)
        with pytest.raises(PreconditionFailed):
            blob.upload_from_string(b"{}", if_generation_match=0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    proc = _start_emulator(port, data)
    try:
        url = (
            f"http://127.0.0.1:{port}/download/storage/v1/b/compose-bucket/o/"
            "demo%2Fsplits%2Fmanifest.json?alt=media"
        )
        with urllib.request.urlopen(url, timeout=5) as r:
            assert json.loads(r.read()) == {"splits": {}}
        env = {
            **os.environ,
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
            "GCS_BUCKET": "compose-bucket",
            "PYTHONPATH": str(ROOT),
        }
        outputs = []
        for _ in range(2):
            run = subprocess.run(
                [sys.executable, str(ROOT / "docker" / "demo_data.py")],
                check=False,
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert run.returncode == 0, run.stderr
            outputs.append(run.stdout)
        assert "source_uri=gs://compose-bucket/demo/imagenet" in outputs[0]
        assert "already holds" in outputs[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- the checks catch breakage


def test_checks_catch_a_broken_compose(resolved, tmp_path):
    broken = copy.deepcopy(resolved)
    del broken["services"]["postgres"]
    assert any("postgres, which is not a service" in p for p in missing_dependencies(broken))

    broken = copy.deepcopy(resolved)
    broken["services"]["gcs-emulator"].pop("healthcheck")
    assert any("no healthcheck" in p for p in missing_dependencies(broken))

    broken = copy.deepcopy(resolved)
    broken["services"]["airflow-scheduler"]["volumes"].append(f"{ROOT}/no-such-dir:/x:ro")
    broken["services"]["airflow-scheduler"]["volumes"].append("undeclared:/y")
    problems = volume_problems(broken, ROOT)
    assert any("no-such-dir does not exist" in p for p in problems), problems
    assert any("undeclared is not declared" in p for p in problems), problems

    broken = copy.deepcopy(resolved)
    broken["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = (
        "google-cloud-platform://?project=p"
    )
    broken["services"]["airflow-triggerer"]["environment"]["GCS_BUCKET"] = "other"
    assert len(emulator_problems(broken)) == 2, emulator_problems(broken)

    broken = copy.deepcopy(resolved)
    broken["services"]["airflow-apiserver"]["ports"] = ["0.0.0.0:8080:8080/tcp"]
    broken["services"]["gcs-emulator"]["ports"] = ["9023:9023"]
    assert len(published_port_problems(broken)) == 2

    # A plugin that reads a new variable the compose file does not pass on.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "new.py").write_text(
        "import os\nfrom os import environ, getenv\n"
        'a = os.environ.get("SSL_SPLITS_NEW_KNOB", "1")\n'
        'b = environ["SSL_SPLITS_OTHER"]\n'
        "c = getenv('GOOGLE_CLOUD_PROJECT')\n"
        'os.environ["WRITTEN_ONLY"] = "x"\n'
    )
    (plugins / "sub").mkdir()
    (plugins / "sub" / "aliased.py").write_text(
        "import os\n\ndef f():\n    env = os.environ.get\n"
        '    return env("SSL_SPLITS_ALIASED") or os.environ.get(\n        "SSL_SPLITS_WRAPPED")\n'
    )
    names = read_env_vars([plugins])
    assert set(names) == {
        "SSL_SPLITS_NEW_KNOB",
        "SSL_SPLITS_OTHER",
        "GOOGLE_CLOUD_PROJECT",
        "SSL_SPLITS_ALIASED",
        "SSL_SPLITS_WRAPPED",
    }, names
    assert names["SSL_SPLITS_WRAPPED"] == ["plugins/sub/aliased.py:5"]
    problems = unconfigured_env_vars(names, resolved, "SSL_SPLITS_OTHER=\n")
    assert [p.split()[0] for p in problems] == [
        "SSL_SPLITS_ALIASED",
        "SSL_SPLITS_NEW_KNOB",
        "SSL_SPLITS_OTHER",
        "SSL_SPLITS_WRAPPED",
    ]
    assert "only reaches containers" in problems[2]


def test_checks_catch_broken_locks_and_dockerfiles(tmp_path):
    main = tmp_path / "main.lock"
    main.write_text(
        "foo==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "bar==2.0 \\\n    --hash=sha256:" + "b" * 64 + "\n"
    )
    sub = tmp_path / "sub.lock"
    sub.write_text("foo==1.1 \\\n    --hash=sha256:" + "a" * 64 + "\nbar==2.0\nbaz==3\n")
    problems = lock_mismatches(sub, main)
    assert any("foo==1.1, but main.lock pins 1.0" in p for p in problems), problems
    assert any("bar has no --hash" in p for p in problems), problems
    assert any("baz==3 is not in main.lock" in p for p in problems), problems

    df = tmp_path / "Dockerfile"
    df.write_text(
        "FROM apache/airflow:3.2.0-python3.11\n"
        "COPY requirements-runtime.lock /r.lock\n"
        "RUN pip install --no-cache-dir \\\n    -r /r.lock\n"
    )
    assert base_image_problems(df, MAIN_LOCK)
    assert "without --require-hashes" in locked_install_problems(df, "requirements-runtime.lock")[0]
    df.write_text("FROM x\nRUN pip install -r requirements.txt\n")
    assert "does not COPY" in locked_install_problems(df, "requirements-runtime.lock")[0]

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM x\nCOPY --chown=a:0 missing.txt present.txt /app/\n")
    (ctx / "present.txt").write_text("")
    problems = build_problems({"services": {"s": {"build": {"context": str(ctx)}}}}, ctx)
    assert problems == ["s: Dockerfile copies missing.txt, which does not exist"]
    (ctx / ".dockerignore").write_text("present.txt\n")
    (ctx / "missing.txt").write_text("")
    problems = build_problems({"services": {"s": {"build": {"context": str(ctx)}}}}, ctx)
    assert problems == [
        ("s: Dockerfile copies present.txt, which .dockerignore leaves out of the build context")
    ]
    assert dockerignored("tests/x.py", ["tests"]) and not dockerignored("tests/x.py", ["test"])
    assert dockerignored("a/b/__pycache__/c.pyc", ["**/__pycache__"])
    assert not dockerignored(".env.example", [".env.*", "!.env.example"])


def test_missing_docker_compose_fails_with_the_install_hint(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="bin/install-system-deps"):
        run_compose_config(None)
