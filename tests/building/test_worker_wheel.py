"""The worker package on its own: what a Dataflow worker has, and nothing else.

A Dataflow worker runs Beam's SDK container (apache-beam[gcp] at the launcher's
version and its dependencies) and installs the staged wheel
(``bin/build-worker-package``) with what it declares. This test builds that
environment: a virtualenv with only ``apache-beam[gcp]`` at the locked
version and the wheel (the dependencies' environment kept between runs, named
by what decides its contents; the wheel reinstalled on every run), both resolved against ``requirements.lock`` (uv, from
its cache), and runs the product's jobs end to end in it on the DirectRunner
(synthetic source, validate, plan, build of a seeded split and of the
reshuffle, deep verification), from a temporary folder with no checkout on
``sys.path``: ``beam_jobs`` is imported from the virtualenv's site-packages,
Airflow and TensorFlow are not importable at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.common import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

UV = ROOT / ".venv" / "bin" / "uv"


def locked(name: str) -> str:
    m = re.search(
        rf"^{re.escape(name)}==([^\s;\\]+)", (ROOT / "requirements.lock").read_text(), re.M
    )
    assert m, f"{name} is not pinned in requirements.lock"
    return m.group(1)


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's declared requirements (its METADATA's Requires-Dist lines)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return sorted(ln for ln in lines if ln.startswith("Requires-Dist:"))


def cached_venv_dir(wheel: Path) -> Path:
    """Where the environment for this wheel's dependencies is kept between runs:
    named by what decides its contents (the lock, Beam's pin, this Python, the
    wheel's declared requirements), so a change to any of them makes a new one."""
    key = hashlib.sha256(
        "\n".join(
            [
                (ROOT / "requirements.lock").read_text(),
                locked("apache-beam"),
                sys.version,
                *wheel_requirements(wheel),
            ]
        ).encode()
    ).hexdigest()[:16]
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    return tmp / f"ssl-splits-worker-venv-{os.getuid()}-{key}"


def uv_install(venv: Path, *what: str) -> None:
    install = [
        str(UV),
        "pip",
        "install",
        "-q",
        "--python",
        str(venv / "bin" / "python"),
        "-c",
        str(ROOT / "requirements.lock"),
        *what,
    ]
    # From uv's cache (filled by `make venv` from the same lock); online only if it is cold.
    proc = subprocess.run([*install, "--offline"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        proc = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> Path:
    """A virtualenv with apache-beam[gcp] at the locked version and the wheel
    built now. The environment of its dependencies is built once and kept under
    TMPDIR (cached_venv_dir: about a minute of installing and of compiling Beam
    saved on every later run); the wheel itself is reinstalled into it on every
    run, and the test checks that the installed modules are the wheel's."""
    tmp = tmp_path_factory.mktemp("worker")
    out = subprocess.run(
        [str(ROOT / "bin" / "build-worker-package"), str(tmp / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    wheel = Path(out.stdout.strip().splitlines()[-1])
    venv = cached_venv_dir(wheel)
    if not (venv / ".complete").exists():
        for old in venv.parent.glob(f"ssl-splits-worker-venv-{os.getuid()}-*"):
            shutil.rmtree(old, ignore_errors=True)  # other keys: stale environments
        fresh = venv.with_name(f"{venv.name}.tmp-{os.getpid()}")
        subprocess.run(
            [str(UV), "venv", "-q", "--python", sys.executable, str(fresh)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        uv_install(fresh, f"apache-beam[gcp]=={locked('apache-beam')}", str(wheel))
        (fresh / ".complete").touch()
        try:
            fresh.rename(venv)  # complete or absent, whoever else builds it at once
        except OSError:
            shutil.rmtree(fresh, ignore_errors=True)
    else:
        name = wheel.name.split("-")[0]
        uv_install(venv, "--reinstall-package", name, "--refresh-package", name, str(wheel))
    installed = next((venv / "lib").glob("python*/site-packages"))
    # Compiled modules of a previous wheel must not stand in for this one's.
    shutil.rmtree(venv / "pycache" / str(installed / "beam_jobs").lstrip("/"), ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        modules = [n for n in z.namelist() if n.startswith("beam_jobs/") and n.endswith(".py")]
        assert modules, "the wheel holds no beam_jobs modules"
        for n in modules:
            assert (installed / n).read_bytes() == z.read(n), f"{n}: not the wheel's"
    return venv


def _env(venv: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    # One compile of Beam for all the processes below and for later runs (this
    # environment writes no .pyc beside its modules).
    env.update(PYTHONPYCACHEPREFIX=str(venv / "pycache"), PYTHONDONTWRITEBYTECODE="")
    return env


def test_the_wheel_alone_runs_every_job(worker_venv, tmp_path):
    py = str(worker_venv / "bin" / "python")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = _env(worker_venv)

    def run(*args: str) -> str:
        proc = subprocess.run(
            [py, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
        )
        assert proc.returncode == 0, f"{args[:2]}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    probe = json.loads(
        run(
            "-c",
            (
                "import importlib.util, json, sys, apache_beam, beam_jobs\n"
                "print(json.dumps({'beam_jobs': beam_jobs.__file__, 'beam': apache_beam.__version__,\n"
                "  'path': sys.path, 'prefix': sys.prefix,\n"
                "  'missing': [m for m in ('airflow', 'tensorflow', 'ssl_splits')\n"
                "              if importlib.util.find_spec(m) is None]}))"
            ),
        )
    )
    site = str(worker_venv / "lib")
    assert probe["beam_jobs"].startswith(site) and "site-packages" in probe["beam_jobs"], probe
    assert probe["beam"] == locked("apache-beam")
    assert probe["missing"] == ["airflow", "tensorflow", "ssl_splits"]
    assert not [p for p in probe["path"] if p and Path(p).resolve() == ROOT], probe["path"]

    src, out = tmp_path / "imagenet", tmp_path / "ssl"
    work, catalog = out / "_work", out / "_work" / "catalog"
    run(
        "-m",
        "beam_jobs.source.synthetic",
        f"--output_uri={src}",
        "--num_classes=5",
        "--min_per_class=20",
        "--max_per_class=30",
        "--train_shards=4",
        "--validation_shards=1",
        "--validation_per_class=2",
    )
    run(
        "-m",
        "beam_jobs.source.validate",
        f"--source_uri={src}",
        f"--catalog_dir={catalog}",
        "--num_classes=5",
    )
    plans = run(
        "-m",
        "beam_jobs.planning.plans",
        f"--catalog_dir={catalog}",
        f"--out_dir={work}/plans",
        "--seeds=1",
        "--unsupervised",
    )
    rows = [line.split("\t") for line in plans.splitlines() if line.count("\t") >= 4]
    assert {r[0] for r in rows} >= {"train"} and len(rows) == 2, plans
    for split, *_, plan_uri in rows:
        built = run(
            "-m",
            "beam_jobs.building.build",
            f"--split={split}",
            f"--plan_uri={plan_uri}",
            f"--catalog_dir={catalog}",
            f"--output_uri={out}",
        )
        assert f"{split}: " in built and "records in" in built, built
        verified = run(
            "-m",
            "beam_jobs.verification.verify",
            f"--split={split}",
            f"--output_uri={out}",
            f"--plan_uri={plan_uri}",
            f"--catalog_dir={catalog}",
            "--deep",
        )
        assert f"{split}: verified (deep)" in verified, verified
    copied = run(
        "-m",
        "beam_jobs.building.build",
        "--split=validation",
        f"--copy_from={src}",
        f"--output_uri={out}",
    )
    assert "validation: " in copied
