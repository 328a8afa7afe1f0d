"""Faults and hostile conditions (issue 8): a build killed halfway, flaky and
failing storage, a source changed under a run, concurrent writers.

Bad params and bad plan files are in test_dag.py and test_split_algorithm.py; the
secrets check is in test_dag.py (it needs a whole DAG run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support import built_splits as bs
from support.common import PYTHON, ROOT

from beam_jobs import layout, storage
from beam_jobs.source.synthetic import Spec, generate

pytest.importorskip("airflow")

from ssl_splits.tasks import TaskError  # noqa: E402

from beam_jobs.publishing import lock  # noqa: E402
from beam_jobs.publishing.publish import PublishError  # noqa: E402


def shard_files(folder: str, split: str) -> dict[str, bytes]:
    return {
        storage.basename(f.path): storage.read_bytes(f.path)
        for f in storage.list_files(storage.join(folder, f"{split}-*"))
    }


# --------------------------------------------------------------------------- killed build


@pytest.fixture(scope="module")
def medium_source(tmp_path_factory) -> Path:
    """Large enough that building the reshuffle takes a few seconds (64 shards)."""
    out = tmp_path_factory.mktemp("medium_source")
    generate(
        Spec(
            num_classes=10,
            min_per_class=380,
            max_per_class=420,
            train_shards=16,
            validation_shards=0,
            image_size=48,
            jpeg_quality=95,
            seed=3,
        ),
        str(out),
        workers=2,
    )
    return out


@pytest.mark.slow
def test_build_killed_halfway_leaves_nothing_partial_and_rerun_is_identical(
    medium_source, tmp_path
):
    p = bs.params(
        str(medium_source),
        str(tmp_path / "out"),
        seeds=[1],
        unsupervised=True,
        unsupervised_shards=64,
    )
    run = bs.start(p)
    # Publish seed 1 first, so there is a manifest the kill must not touch.
    bs.build(run, run.supervised()[0])
    bs.verify(run, run.supervised()[0])
    spec_1 = run.spec(run.supervised()[0])
    from ssl_splits import tasks

    tasks.publish_manifest(
        run.config, run.source, [spec_1], {}, {"dag_id": bs.DAG_ID, "run_id": "r1"}
    )
    manifest_before = storage.read_bytes(run.manifest_uri)

    args = bs.job_args(run, run.spec("train"))
    # SIGKILL to the job's whole process group once its 20th shard is staged
    # (beam_jobs.faults): no cleanup of any kind runs.
    proc = subprocess.run(
        [PYTHON, "-m", "beam_jobs.building.build", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=300,
        env={**os.environ, "SSL_SPLITS_FAILPOINT": "build.shard@20"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert shard_files(run.output_uri, "train") == {}, "files under the final names"
    assert storage.read_bytes(run.manifest_uri) == manifest_before
    staging = storage.list_tree(storage.join(run.work_uri, "staging", "train"))
    sidecars = {
        storage.basename(p)[len("shard-") : -len(".json")]
        for p in staging
        if storage.basename(p).startswith("shard-")
    }
    staged = {
        storage.basename(p)
        for p in staging
        if "-of-00064" in storage.basename(p) and ".tmp-" not in p
    }
    assert len(sidecars) >= 20
    # Every shard under its staged name is complete: it has its sidecar.
    assert {n.split("-")[1] for n in staged} <= sidecars

    # The retry: finishes, reuses what the killed attempt completed.
    stats = bs.build(run, "train")
    assert stats["num_shards"] == 64 and stats["shards_reused"] >= 20
    assert shard_files(run.output_uri, "train") == {}
    bs.verify(run, "train")
    tasks.publish_manifest(
        run.config, run.source, [run.spec("train")], {}, {"dag_id": bs.DAG_ID, "run_id": "r2"}
    )
    assert "train" in json.loads(storage.read_text(run.manifest_uri))["splits"]
    resumed = shard_files(run.output_uri, "train")
    assert len(resumed) == 64

    # An uninterrupted build of the same plan elsewhere gives the same bytes.
    clean = bs.start(
        bs.params(
            str(medium_source),
            str(tmp_path / "clean"),
            seeds=[1],
            unsupervised=True,
            unsupervised_shards=64,
        )
    )
    assert clean.spec("train")["plan_sha256"] == run.spec("train")["plan_sha256"]
    bs.build_all(clean)
    bs.publish(clean)
    assert shard_files(clean.output_uri, "train") == resumed


# --------------------------------------------------------------------------- flaky storage


def upload_to_gcs(local: Path, uri: str) -> None:
    for f in local.iterdir():
        if f.is_file():
            storage.write_bytes(storage.join(uri, f.name), f.read_bytes())


@pytest.mark.gcs
def test_flaky_storage_run_succeeds(small_source, gcs_bucket, proxy):
    # One request in 20 answered 503, one in 47 dropped: a few dozen faults over the
    # run's ~600 requests, each retried after google-cloud-storage's backoff (0.3 s
    # on average), so the run proves recovery without spending its time asleep.
    proxy.faults.error_every = 20
    proxy.faults.error_status = 503
    proxy.faults.drop_every = 47
    upload_to_gcs(small_source, f"{gcs_bucket}/src")
    run = bs.start(bs.params(f"{gcs_bucket}/src", f"{gcs_bucket}/out"))
    bs.stage_all(run)
    first, second = run.supervised()
    # A Beam job in its own process through the same proxy, as the DAG runs it.
    proxy.faults.error_status = 429
    out = subprocess.run(
        [
            PYTHON,
            "-m",
            "beam_jobs.verification.verify",
            *bs.job_args(run, run.spec(first)),
            "--deep",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    bs.verify(run, second, deep=False)
    bs.publish(run)
    doc = json.loads(storage.read_text(run.manifest_uri))
    assert sorted(doc["splits"]) == sorted(run.supervised())
    assert proxy.faults.stats["errors"] >= 10 and proxy.faults.stats["drops"] >= 3, (
        proxy.faults.stats
    )
    for entry in doc["splits"].values():
        for shard in entry["shards"]:
            assert storage.stat(shard["path"]).crc32c == shard["crc32c"]
    # Retried reads are counted in what the builds report having read.
    built = [
        json.loads(storage.read_text(layout.stats_uri(run.work_uri, s))) for s in (first, second)
    ]
    assert all(b["bytes_read"] >= b["num_bytes"] for b in built)
    assert sum(b["bytes_read"] for b in built) > sum(b["num_bytes"] for b in built)


@pytest.mark.gcs
def test_persistent_storage_failure_fails_publish_clearly(
    small_source, gcs_bucket, proxy, monkeypatch
):
    upload_to_gcs(small_source, f"{gcs_bucket}/src")
    run = bs.start(bs.params(f"{gcs_bucket}/src", f"{gcs_bucket}/out", seeds=[1]))
    bs.build_all(run)
    assert not storage.exists(run.manifest_uri)
    monkeypatch.setenv("SSL_SPLITS_GCS_RETRY_DEADLINE", "4")
    proxy.faults.fail_path = r"uploadType=multipart"  # every small upload: the manifest's too
    proxy.faults.fail_method = "POST"
    t0 = time.monotonic()
    with pytest.raises(
        PublishError,
        match=r"could not publish .*manifest\.json.*Nothing was "
        r"changed: the manifest is unchanged",
    ):
        bs.publish(run)
    assert time.monotonic() - t0 < 60
    assert proxy.faults.stats["persistent"] >= 2, "the upload was not retried"
    proxy.faults.fail_path = None
    assert not storage.exists(run.manifest_uri), "something was published"
    assert shard_files(f"{gcs_bucket}/out", run.supervised()[0]) == {}
    # The retry (storage is back): publishes.
    bs.publish(run, "manual__1")
    assert sorted(json.loads(storage.read_text(run.manifest_uri))["splits"]) == run.supervised()


# --------------------------------------------------------------------------- source changed


def test_source_rewritten_after_validation_fails_the_build(source_copy, tmp_path):
    run = bs.start(bs.params(str(source_copy), str(tmp_path / "out"), seeds=[1]))
    shard = sorted(source_copy.glob("train-*"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))  # same size, new bytes and mtime
    from beam_jobs.building.build import BuildError

    with pytest.raises(BuildError, match=r"changed since validation.*" + shard.name):
        bs.build(run, run.supervised()[0])
    assert shard_files(run.output_uri, run.supervised()[0]) == {}


def test_source_rewritten_before_publish_publishes_nothing(source_copy, tmp_path):
    run = bs.start(bs.params(str(source_copy), str(tmp_path / "out"), seeds=[1]))
    bs.build_all(run)
    shard = sorted(source_copy.glob("train-*"))[-1]
    os.utime(shard, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    with pytest.raises(TaskError, match="source .* changed during this run"):
        bs.publish(run)
    assert not os.path.exists(run.manifest_uri)


@pytest.mark.parametrize("how", ["mv", "cp -a, rm"])
def test_a_moved_source_is_read_from_where_it_is_now(source_copy, tmp_path, how):
    # The same files in another folder keep their fingerprint (names, sizes,
    # mtimes), so the cached catalog is used again; the build must read them
    # where they are now, and the manifest name that place.
    out = str(tmp_path / "out")
    run, _ = bs.full_run(bs.params(str(source_copy), out, seeds=[1], copy_validation=True))
    split = run.supervised()[0]
    before = shard_files(out, split)
    moved = tmp_path / "moved" / "imagenet"
    moved.parent.mkdir()
    if how == "mv":
        os.rename(source_copy, moved)
    else:
        subprocess.run(["cp", "-a", str(source_copy), str(moved)], check=True)
        shutil.rmtree(source_copy)
    again = bs.start(bs.params(str(moved), out, seeds=[1, 2], copy_validation=True, force=True))
    assert again.source["fingerprint"] == run.source["fingerprint"]
    assert again.source["action"] == "cached"  # not validated again
    bs.build_all(again)
    bs.publish(again, "manual__2")
    for name in again.supervised():
        stats = json.loads(storage.read_text(layout.stats_uri(again.work_uri, name)))
        assert stats["source_uri"] == str(moved), stats
    assert shard_files(out, split) == before  # the same records, from the new place
    doc = bs.manifest(again)
    assert doc["source"]["uri"] == str(moved)
    assert sorted(doc["splits"]) == sorted([*again.supervised(), "validation"])
    for name in again.supervised():
        assert doc["splits"][name]["provenance"]["source_uri"] == str(moved)
    # The validation copy was not redone (same files): its entry keeps the
    # folder it was copied from, which was true when it was copied.
    assert again.spec("validation")["action"] == "skip"
    assert doc["splits"]["validation"]["copied_from"] == str(source_copy)


# --------------------------------------------------------------------------- whole DAG runs

CANARY_PASSWORD = "canary-pw-3f9a61"
CANARY_EXTRA = "canary-extra-77c2d0"


@pytest.mark.long
@pytest.mark.slow
def test_killed_and_concurrent_runs_and_no_secrets_anywhere(small_source, tmp_path):
    """Runs on one output folder, as users meet them:

    * K: ``bin/airflow dags test`` SIGKILLed mid-run (with its Beam jobs).
    * A: the same command again at once: it takes the folder at once (K's
      process is gone), not after K's lease (300 s). A runs with a lease of
      4 s, shorter than each of its Beam jobs: an intruder that tries to take
      the folder all along never gets it, since every task of A renews the
      lease while it runs; A succeeds and its teardown frees the folder.
    * B: a run in a second Airflow (another home, as another installation)
      while A runs: it fails at acquire_lock saying A holds the folder.

    The connection carries a password and an extra field: neither appears in
    any log, XCom, the manifest or a work file."""
    import sqlite3

    from support.airflow_env import airflow_env, dags_test, migrated_home

    conn = (
        f"google-cloud-platform://svc:{CANARY_PASSWORD}@/?project=test-project"
        f"&is_anonymous=true&note={CANARY_EXTRA}"
    )
    homes = [migrated_home(tmp_path / f"airflow{i}") for i in (1, 2)]
    envs = [
        airflow_env(
            h, AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=conn, SSL_SPLITS_SECRET_TOKEN=CANARY_PASSWORD
        )
        for h in homes
    ]
    output = tmp_path / "out"
    conf = {
        "source_uri": str(small_source),
        "output_uri": str(output),
        "seeds": [1],
        "unsupervised": False,
        "copy_validation": False,
        "num_classes": 10,
        "direct_num_workers": 1,
    }
    lock_file = output / "_ssl_splits" / "lock.json"

    # K, killed once it holds the folder.
    with open(tmp_path / "k.log", "w") as k_log:
        killed = subprocess.Popen(
            [str(ROOT / "bin" / "airflow"), "dags", "test", bs.DAG_ID, "--conf", json.dumps(conf)],
            env=envs[0],
            cwd=ROOT,
            stdout=k_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while not lock_file.exists():
                assert killed.poll() is None and time.monotonic() < deadline, "K took no lock"
                time.sleep(0.2)
            dead = json.loads(lock_file.read_text())
        finally:
            os.killpg(killed.pid, signal.SIGKILL)  # airflow and its Beam jobs
            killed.wait()
    assert dead["in_process"] is True and dead["pid"] == killed.pid, dead
    assert dead["lease_seconds"] == lock.DEFAULT_LEASE.total_seconds()

    # A, at once; B and the intruder while A holds the folder.
    results: dict[str, object] = {}
    # A pauses 20 s at the start of its verification (holding the folder, its
    # lease renewed): B's start-up and the intruder happen while A holds it.
    first = threading.Thread(
        target=lambda: results.setdefault(
            "a",
            dags_test(
                conf,
                {
                    **envs[0],
                    "SSL_SPLITS_LOCK_LEASE_SECONDS": "4",
                    "SSL_SPLITS_GCS_RETRY_DEADLINE": "1",
                    "SSL_SPLITS_FAILPOINT": "verify.start~20",
                },
                log=tmp_path / "a.log",
            ),
        )
    )
    first.start()
    deadline = time.monotonic() + 300
    while True:
        try:
            holder = json.loads(lock_file.read_text())
            if holder["run_id"] != dead["run_id"]:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert first.is_alive() and time.monotonic() < deadline, "run A never took the lock"
        time.sleep(0.1)
    second = threading.Thread(
        target=lambda: results.setdefault("b", dags_test(conf, envs[1], log=tmp_path / "b.log"))
    )
    second.start()
    intruder = {"held": 0, "won": [], "renewals": set()}
    while first.is_alive():
        try:
            now = json.loads(lock_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.1)
            continue
        intruder["renewals"].add(now["renewed_at"])
        try:
            held = lock.acquire(str(output), run_id="intruder", dag_id="d")
            intruder["won"].append(now)
            lock.release(held)
        except lock.LockHeld:
            intruder["held"] += 1
        time.sleep(0.3)
    first.join()
    second.join(timeout=600)
    a, b = results["a"], results["b"]
    assert a.state == "success", a.tail()  # type: ignore[attr-defined]
    assert f"took over {lock_file}" in a.output and "is gone" in a.output  # type: ignore[attr-defined]
    print(f"intruder: held off {intruder['held']} times, {len(intruder['renewals'])} renewals seen")
    assert intruder["won"] == [], f"the intruder took the folder from a live run: {intruder}"
    assert intruder["held"] >= 20 and len(intruder["renewals"]) >= 10, intruder
    assert b.state == "failed"  # type: ignore[attr-defined]
    assert b.tasks[("acquire_lock", "-1")] == "failed", b.tasks  # type: ignore[attr-defined]
    assert b.tasks.get(("validate_source", "-1")) in (None, "upstream_failed"), b.tasks  # type: ignore[attr-defined]
    assert f"is being written by run {holder['run_id']}" in b.output  # type: ignore[attr-defined]
    assert not lock_file.exists(), "the teardown did not release the lock"
    manifest = json.loads((output / "manifest.json").read_text())
    assert list(manifest["splits"]) == [f"train{manifest['source']['num_records'] // 10}.1"]

    # No secret anywhere: task logs, run output, XCom, manifest, work files.
    places: dict[str, str] = {
        "run A output": a.output,
        "run B output": b.output,  # type: ignore[attr-defined]
        "run K output": (tmp_path / "k.log").read_text(),
    }
    for home in homes:
        for f in home.rglob("*"):
            if f.is_file() and f.suffix != ".db":
                places[str(f)] = f.read_text(errors="replace")
        with sqlite3.connect(home / "airflow.db") as db:
            places[f"{home} xcom"] = " ".join(
                str(v) for (v,) in db.execute("SELECT value FROM xcom")
            )
            places[f"{home} rendered fields"] = " ".join(
                str(v)
                for (v,) in db.execute("SELECT rendered_fields FROM rendered_task_instance_fields")
            )
    for f in output.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".csv", ".log", ".txt"):
            places[str(f)] = f.read_text(errors="replace")
    assert len(places) > 10
    leaks = [
        where for where, text in places.items() if CANARY_PASSWORD in text or CANARY_EXTRA in text
    ]
    assert leaks == [], f"secrets found in: {leaks}"
