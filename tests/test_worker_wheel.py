"""The worker package on its own: what a Dataflow worker has, and nothing else.

A Dataflow worker runs Beam's SDK container (apache-beam[gcp] at the launcher's
version and its dependencies) and installs the staged wheel
(``bin/build-worker-package``) with what it declares. This test builds that
environment: a new virtualenv with only ``apache-beam[gcp]`` at the locked
version and the wheel, both resolved against ``requirements.lock`` (uv, from
its cache), and runs the product's jobs end to end in it on the DirectRunner
(synthetic source, validate, plan, build of a seeded split and of the
reshuffle, deep verification), from a temporary folder with no checkout on
``sys.path``: ``beam_jobs`` is imported from the virtualenv's site-packages,
Airflow and TensorFlow are not importable at all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("worker")
    out = subprocess.run(
        [str(ROOT / "bin" / "build-worker-package"), str(tmp / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    wheel = out.stdout.strip().splitlines()[-1]
    venv = tmp / "venv"
    subprocess.run(
        [str(UV), "venv", "-q", "--python", sys.executable, str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    install = [
        str(UV),
        "pip",
        "install",
        "-q",
        "--python",
        str(venv / "bin" / "python"),
        "-c",
        str(ROOT / "requirements.lock"),
        f"apache-beam[gcp]=={locked('apache-beam')}",
        wheel,
    ]
    # From uv's cache (filled by `make venv` from the same lock); online only if it is cold.
    proc = subprocess.run([*install, "--offline"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        proc = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def _env(tmp: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    # One compile of Beam for all the processes below (this environment writes no .pyc).
    env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"), PYTHONDONTWRITEBYTECODE="")
    return env


def test_the_wheel_alone_runs_every_job(worker_venv, tmp_path):
    py = str(worker_venv / "bin" / "python")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = _env(tmp_path)

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
