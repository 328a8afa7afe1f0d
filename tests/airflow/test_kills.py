"""The kill matrix: a run SIGKILLed at every step boundary of the commit
protocol, for a first build and for a forced rebuild of published splits,
on local disk and on the GCS emulator.

Each run is one process doing what the DAG's tasks do (tests/support/built_splits.py's
main, in a process forked from one that has imported it: tests/support/forkserver.py),
in its own session and process group; a failpoint
(``beam_jobs.faults``) kills the whole group at the named step: no
``finally``, no teardown runs. After each kill:

* every split of the manifest loads with ``load_split``, or is refused with
  a message that says its publication was interrupted;
* every file under a published name holds verified bytes: those of the
  previous publication or those of this run's (verified) build;
* a rerun ends byte-identical to an uninterrupted run (files and manifest).

One more case stops ``bin/airflow dags test`` itself in the middle of the
switch to the final names, and reruns it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from support import built_splits as bs
from support.common import PYTHON, ROOT
from support.forkserver import Forkserver

from beam_jobs import layout, storage
from beam_jobs.publishing.manifest import ManifestError, load, load_split

pytest.importorskip("airflow")

pytestmark = pytest.mark.slow

HARNESS = str(ROOT / "tests" / "support" / "built_splits.py")
# Where a run can be killed, in the order a run reaches them.
POINTS = [
    "build.shard@2",
    "verify.start",
    "verify.shard@2",
    "publish.journaled",
    "publish.placed@2",
    "publish.switched",
    "publish.committed",
]
# The five step boundaries (mid-build, between build and verify,
# mid-verify, mid-switch, between switch and commit) also on GCS.
GCS_POINTS = [
    "build.shard@2",
    "verify.start",
    "verify.shard@2",
    "publish.placed@2",
    "publish.switched",
]


def base(source: str, output: str) -> dict:
    return bs.params(
        source, output, seeds=[1, 2], unsupervised=True, copy_validation=True, deep_verify="auto"
    )


def rebuild(source: str, output: str) -> dict:
    """A forced rebuild of the published splits with another shard count and
    another reshuffle order: every rebuilt file differs from the old one."""
    return {**base(source, output), "num_shards": 4, "unsupervised_seed": 1, "force": True}


def harness_env(failpoint: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), str(ROOT / "tests")]),
    }
    env.pop("SSL_SPLITS_FAILPOINT", None)
    if failpoint:
        env["SSL_SPLITS_FAILPOINT"] = failpoint
    return env


@pytest.fixture(scope="module")
def runs():
    """The harness's imports paid once: each run a fresh forked process in its own
    session and process group (tests/support/forkserver.py)."""
    server = Forkserver(PYTHON, HARNESS, harness_env(), ROOT)
    yield server
    server.close()


def harness(
    server: Forkserver,
    params: dict,
    cache: Path,
    *,
    failpoint: str | None = None,
    run_id: str | None = None,
) -> subprocess.CompletedProcess:
    argv = [json.dumps(params), run_id or f"manual__{uuid.uuid4().hex[:8]}", str(cache)]
    return server.run(argv, harness_env(failpoint), timeout=600)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def published_files(output: str) -> dict[str, bytes]:
    """Every file under a published shard name in the output folder, by name."""
    out = {}
    for f in storage.list_files(storage.join(output, "*")):
        name = storage.basename(f.path)
        if layout.parse_shard_name(name) is not None:
            out[name] = storage.read_bytes(f.path)
    return out


def manifest_view(manifest_uri: str) -> dict:
    """A manifest's splits as a reader sees them, without folder names or times."""
    doc = load(manifest_uri)
    return {
        name: [
            (storage.basename(s["path"]), s["num_records"], s["num_bytes"], s["crc32c"])
            for s in e["shards"]
        ]
        for name, e in doc["splits"].items()
    }


def check_after_kill(output: str, manifest_uri: str, allowed: dict[str, set[bytes]]) -> None:
    """What readers may see after a kill."""
    if storage.exists(manifest_uri):
        for split in load(manifest_uri)["splits"]:
            try:
                load_split(manifest_uri, split)
            except ManifestError as err:
                assert "is being replaced" in str(err) and "next run of the DAG completes" in str(
                    err
                ), str(err)
    for name, data in published_files(output).items():
        assert data in allowed.get(name, set()), f"{name} holds bytes that were never verified"


def place_template(template: Path, output: str) -> None:
    """A copy of a published output folder at ``output`` (local or gs://), its
    manifest pointing at the copy (local copies keep modification times)."""
    for f in sorted(p for p in template.rglob("*") if p.is_file()):
        rel = f.relative_to(template).as_posix()
        data = f.read_bytes()
        if rel == "manifest.json":
            data = data.replace(str(template).encode(), output.encode())
        dst = storage.join(output, rel)
        if storage.is_gcs(output):
            storage.write_bytes(dst, data)
        else:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            Path(dst).write_bytes(data)
            st = f.stat()
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture(scope="module")
def references(small_source, tmp_path_factory, runs):
    """Uninterrupted runs: the first build (never modified after: it is also the
    template every rebuild case starts from, copied); and a copy of it rebuilt."""
    root = tmp_path_factory.mktemp("kill_refs")
    cache = root / "catalogs"
    template = root / "first"
    first = str(template)
    ok(harness(runs, base(str(small_source), first), cache))
    both = str(root / "both")
    place_template(template, both)
    ok(harness(runs, rebuild(str(small_source), both), cache))
    return {
        "runs": runs,
        "cache": cache,
        "template": template,
        "first": (published_files(first), manifest_view(f"{first}/manifest.json")),
        "old": published_files(str(template)),
        "rebuilt": (published_files(both), manifest_view(f"{both}/manifest.json")),
    }


def kill_and_rerun(scenario: str, point: str, output: str, source: str, refs: dict) -> None:
    manifest_uri = storage.join(output, "manifest.json")
    cache = refs["cache"]
    if scenario == "first":
        params, (want_files, want_manifest) = base(source, output), refs["first"]
        allowed = {n: {b} for n, b in want_files.items()}
    else:
        place_template(refs["template"], output)
        for split in load(manifest_uri)["splits"]:
            load_split(manifest_uri, split)
        params, (want_files, want_manifest) = rebuild(source, output), refs["rebuilt"]
        allowed = {n: {b} for n, b in refs["old"].items()}
        for n, b in want_files.items():
            allowed.setdefault(n, set()).add(b)
    killed = harness(refs["runs"], params, cache, failpoint=point)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-4000:]
    assert f"failpoint {point.split('@')[0]}: killing" in killed.stderr
    check_after_kill(output, manifest_uri, allowed)
    ok(harness(refs["runs"], params, cache))
    assert published_files(output) == want_files
    assert manifest_view(manifest_uri) == want_manifest
    for split in want_manifest:
        load_split(manifest_uri, split)
    assert not storage.exists(layout.journal_uri(storage.join(output, "_work")))


@pytest.mark.parametrize("scenario", ["first", "rebuild"])
@pytest.mark.parametrize("point", POINTS)
def test_kill_locally(scenario, point, small_source, references, tmp_path):
    kill_and_rerun(scenario, point, str(tmp_path / "out"), str(small_source), references)


@pytest.mark.gcs
@pytest.mark.parametrize("scenario", ["first", "rebuild"])
@pytest.mark.parametrize("point", GCS_POINTS)
def test_kill_on_gcs(scenario, point, small_source, references, gcs_bucket):
    kill_and_rerun(scenario, point, f"{gcs_bucket}/out", str(small_source), references)
