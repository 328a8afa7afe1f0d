"""The output folder's lock (``beam_jobs.publishing.lock``), on a local folder and on the
GCS emulator: one writer per output folder whatever the work folder, owned by
a token (not the run id), leases judged by the storage's clock, renewals that
fail loudly, and publishing fenced on the lease (a writer that lost it
publishes nothing)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import threading
import time
from urllib.parse import unquote

import pytest
from support import built_splits as bs
from support.common import PYTHON, ROOT
from support.gcs_fault_proxy import emulator_delete, emulator_write

from beam_jobs import layout, storage

pytest.importorskip("airflow")

from airflow.sdk.exceptions import AirflowFailException  # noqa: E402
from ssl_splits import tasks  # noqa: E402
from ssl_splits.config import resolve  # noqa: E402

from beam_jobs.publishing import commit, lock

KW = {"dag_id": "d"}
RACE_ROUNDS = 20
SHORT = dt.timedelta(seconds=1)


@pytest.fixture(autouse=True)
def short_retries(monkeypatch):
    # Leases of a second need a storage retry deadline under a third of it.
    monkeypatch.setenv("SSL_SPLITS_GCS_RETRY_DEADLINE", "0.3")


@pytest.fixture(params=["local", "gcs"])
def output(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"{bucket}/out"


def _holder(output: str) -> dict:
    return json.loads(storage.read_text(layout.lock_uri(output)))


def test_the_lock_is_the_output_folder_s_and_a_token_owns_it(output):
    a = lock.acquire(output, run_id="run-a", **KW)
    assert a.uri == layout.lock_uri(output) == storage.join(output, "_ssl_splits", "lock.json")
    # The same run id again (a second deployment's scheduled run, or a cleared task):
    # another token, so not the holder.
    with pytest.raises(lock.LockHeld, match=r"run run-a of d .* delete .*lock\.json"):
        lock.acquire(output, run_id="run-a", **KW)
    with pytest.raises(lock.LockHeld, match=r"run run-a"):
        lock.acquire(output, run_id="run-b", **KW)
    impostor = lock.Lease(a.uri, a.output_uri, "f" * 32, "run-a", a.lease_seconds)
    with pytest.raises(lock.LockLost, match=r"no longer holds .*run run-a of d"):
        lock.renew(impostor)
    assert lock.release(impostor) is False  # the same run id, another token: not its lock
    assert _holder(output)["token"] == a.token
    assert lock.release(a) is True
    assert not storage.exists(a.uri)
    lock.acquire(output, run_id="run-b", **KW)


def test_two_work_folders_on_one_output_folder_share_one_lock(tmp_path, small_source):
    out = str(tmp_path / "out")
    run = {"run_id": "r1", "dag_id": "d"}
    configs = [
        resolve(bs.params(str(small_source), out, work_uri=str(tmp_path / w))).to_dict()
        for w in ("work1", "work2")
    ]
    first = tasks.acquire_lock(configs[0], run)
    with pytest.raises(lock.LockHeld, match="is being written by run r1"):
        tasks.acquire_lock(configs[1], {**run, "run_id": "r2"})
    assert first["uri"] == layout.lock_uri(out)
    assert tasks.release_lock(first) is True
    assert tasks.release_lock(None) is False  # acquire_lock never ran: nothing to release


def test_a_lease_not_renewed_lapses_and_its_run_learns_who_took_over(output):
    a = lock.acquire(output, run_id="run-a", lease=SHORT, **KW)
    with pytest.raises(lock.LockHeld, match=r"run run-a of d .*lease"):
        lock.acquire(output, run_id="run-b", **KW)
    time.sleep(1.3)
    b = lock.acquire(output, run_id="run-b", **KW)
    assert _holder(output)["token"] == b.token
    with pytest.raises(lock.LockLost, match=r"no longer holds .*run run-b of d"):
        lock.renew(a)
    assert issubclass(lock.LockLost, AirflowFailException)  # fails the task, no retry
    assert lock.release(a) is False
    assert _holder(output)["token"] == b.token


def test_a_renewed_lease_keeps_a_long_run_s_lock(output):
    a = lock.acquire(output, run_id="run-a", lease=SHORT, **KW)
    first = _holder(output)
    with lock.holding(a, every=0.2):
        t_end = time.monotonic() + 3 * SHORT.total_seconds()
        while time.monotonic() < t_end:  # three leases long: kept by the renewals
            with pytest.raises(lock.LockHeld):
                lock.acquire(output, run_id="run-b", **KW)
            time.sleep(0.25)
        renewed = _holder(output)
    assert renewed["token"] == a.token and renewed["acquired_at"] == first["acquired_at"]
    assert renewed["renewed_at"] > first["renewed_at"]
    time.sleep(1.3)  # renewals stopped with the task: the lease lapses
    lock.acquire(output, run_id="run-b", **KW)


def test_a_run_whose_lock_was_taken_fails_naming_the_taker(output):
    a = lock.acquire(output, run_id="run-a", **KW)
    with pytest.raises(lock.LockLost, match=r"run run-b of d"):
        with lock.holding(a, every=0.1):
            storage.delete([a.uri])  # deleted by hand ("if it is dead")
            lock.acquire(output, run_id="run-b", **KW)
            time.sleep(0.5)  # the renewal thread notices
    with pytest.raises(lock.LockLost, match=r"run run-b of d"):  # its next task, at its start
        with lock.holding(a):
            pass
    storage.delete([a.uri])
    with pytest.raises(lock.LockLost, match=r"was removed"):
        lock.renew(a)


def test_expiry_is_judged_by_the_storage_s_clock_not_the_taker_s(output, monkeypatch):
    a = lock.acquire(output, run_id="run-a", **KW)
    # A taker whose clock runs two days ahead (or a holder whose clock runs behind)
    # changes nothing: the lease is the lock's last write on the storage's clock.
    ahead = time.time() + 2 * 86400
    monkeypatch.setattr(time, "time", lambda: ahead)

    class Ahead(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: D102
            return dt.datetime.fromtimestamp(ahead, tz)

    monkeypatch.setattr(lock.dt, "datetime", Ahead)
    with pytest.raises(lock.LockHeld, match="run run-a"):
        lock.acquire(output, run_id="run-b", **KW)
    lock.renew(a)  # and the holder's renewals still count
    monkeypatch.undo()
    assert _holder(output)["token"] == a.token


def test_a_renewal_that_fails_is_loud_and_stops_the_task(tmp_path, monkeypatch, caplog):
    out = str(tmp_path / "out")
    a = lock.acquire(out, run_id="run-a", lease=SHORT, **KW)
    real = storage.write_if
    broken = threading.Event()

    def flaky(uri, data, **kw):
        if broken.is_set():
            raise OSError("disk unreachable")
        return real(uri, data, **kw)

    monkeypatch.setattr(storage, "write_if", flaky)
    caplog.set_level(logging.ERROR, logger=lock.__name__)
    with pytest.raises(lock.LockLost, match="lease ran out"):
        with lock.holding(a, every=0.2) as fence:
            broken.set()
            time.sleep(1.5)  # every renewal fails; the lease runs out
            with pytest.raises(lock.LockLost):
                fence.check("a publishing step")
    assert any("could not renew the lock" in r.getMessage() for r in caplog.records)


HOLD_AND_WAIT = """
import sys, time
sys.path.insert(0, "plugins")
from beam_jobs.publishing import lock
lock.acquire(sys.argv[1], run_id="killed", dag_id="d", in_process=True)
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_in_process_run_frees_the_folder_at_once(output):
    proc = subprocess.Popen(
        [PYTHON, "-c", HOLD_AND_WAIT, output], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        holder = _holder(output)
        assert holder["in_process"] is True and holder["pid"] == proc.pid
        with pytest.raises(lock.LockHeld, match="run killed"):  # alive: it keeps it
            lock.acquire(output, run_id="rerun", **KW)
    finally:
        proc.kill()
        proc.wait()
    lock.acquire(output, run_id="rerun", **KW)
    assert _holder(output)["run_id"] == "rerun"


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize(
    "change, free",
    [
        ({"pid": "dead"}, True),
        ({"pid": "mine", "pid_started": -1000.0}, True),  # the pid was reused
        ({"pid": "mine"}, False),  # alive
        ({"pid": "dead", "in_process": False}, False),  # a worker's task: the lease rules
        ({"pid": "dead", "host": "elsewhere"}, False),
        ({"pid": "dead", "boot_id": "another-boot"}, False),
        ({"pid": "dead", "pid_ns": "pid:[1]"}, False),  # another container on this host
    ],
    ids=["dead", "pid-reused", "alive", "not-in-process", "other-host", "rebooted", "other-ns"],
)
def test_only_a_gone_in_process_holder_on_this_machine_is_free_before_its_lease(
    tmp_path, change, free
):
    out = str(tmp_path / "out")
    lock.acquire(out, run_id="old", in_process=True, **KW)
    holder = _holder(out)
    change = dict(change)
    pid = change.pop("pid")
    holder["pid"] = _dead_pid() if pid == "dead" else os.getpid()
    if "pid_started" in change:
        holder["pid_started"] += change.pop("pid_started")
    holder.update(change)
    storage.write_text(layout.lock_uri(out), json.dumps(holder), "application/json")
    if free:
        lock.acquire(out, run_id="new", **KW)
        assert _holder(out)["run_id"] == "new"
    else:
        with pytest.raises(lock.LockHeld, match="run old"):
            lock.acquire(out, run_id="new", **KW)


@pytest.mark.gcs
def test_a_lock_released_between_its_metadata_read_and_download_is_free(
    gcs_emulator, gcs_bucket, proxy
):
    out = f"{gcs_bucket}/out"
    lock.acquire(out, run_id="run-a", **KW)
    bucket, name = storage.split_gcs(layout.lock_uri(out))
    fired: list[str] = []

    def release_before_download(method: str, path: str) -> None:
        if method == "GET" and "alt=media" in path and name in unquote(path) and not fired:
            fired.append(path)
            emulator_delete(gcs_emulator, bucket, name)  # run-a's teardown, just then

    proxy.faults.before = release_before_download
    lock.acquire(out, run_id="run-b", **KW)
    assert fired, "the lock was never downloaded"
    assert _holder(out)["run_id"] == "run-b"


@pytest.mark.gcs
def test_release_on_gcs_leaves_a_lock_taken_over_in_between(gcs_emulator, gcs_bucket, proxy):
    out = f"{gcs_bucket}/out"
    a = lock.acquire(out, run_id="run-a", **KW)
    bucket, name = storage.split_gcs(a.uri)
    other = json.dumps({**_holder(out), "run_id": "run-b", "token": "b" * 32}).encode()
    fired: list[str] = []

    def take_over_before_delete(method: str, path: str) -> None:
        if method == "DELETE" and name in unquote(path) and not fired:
            fired.append(path)
            emulator_write(gcs_emulator, bucket, name, other)

    proxy.faults.before = take_over_before_delete
    assert lock.release(a) is False
    assert fired
    assert _holder(out)["run_id"] == "run-b"


def test_release_on_a_local_folder_leaves_a_lock_taken_over_in_between(tmp_path):
    from beam_jobs.storage.local import folder_guard

    out = str(tmp_path / "out")
    a = lock.acquire(out, run_id="run-a", **KW)
    result: list[bool] = []
    with folder_guard(os.path.dirname(a.uri)):  # a takeover in progress holds the folder
        t = threading.Thread(target=lambda: result.append(lock.release(a)))
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), "release did not wait for the folder's guard"
        tmp = a.uri + ".other"
        with open(tmp, "w") as f:
            json.dump({**_holder(out), "run_id": "run-b", "token": "b" * 32}, f)
        os.replace(tmp, a.uri)
    t.join(timeout=10)
    assert result == [False]
    assert _holder(out)["run_id"] == "run-b"


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_racing_runs_one_wins(output, stale):
    for _ in range(RACE_ROUNDS):
        if stale:  # a lock whose lease lapsed long ago (on the storage's clock)
            dead = lock.acquire(output, run_id="crashed", lease=SHORT, **KW)
            holder = _holder(output)
            holder["lease_seconds"] = 0.001
            storage.write_text(dead.uri, json.dumps(holder), "application/json")
        _race_once(output)
        storage.delete([layout.lock_uri(output)])
    if not storage.is_gcs(output):
        # no litter beside the lock: the clock probe at most
        assert set(os.listdir(layout.control_dir(output))) <= {layout.CLOCK_NAME}


def _race_once(output: str) -> None:
    barrier = threading.Barrier(4)
    won, lost = [], []

    def contend(i: int) -> None:
        barrier.wait()
        try:
            with storage.use_client(None):
                lock.acquire(output, run_id=f"run-{i}", **KW)
            won.append(i)
        except lock.LockHeld:
            lost.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 3, (won, lost)
    assert _holder(output)["run_id"] == f"run-{won[0]}"


def test_a_lease_shorter_than_three_retry_deadlines_is_refused(monkeypatch):
    monkeypatch.setenv("SSL_SPLITS_GCS_RETRY_DEADLINE", "300")
    monkeypatch.setenv("SSL_SPLITS_LOCK_LEASE_SECONDS", "300")
    with pytest.raises(ValueError, match="at least 900"):
        lock.lease_from_env()
    monkeypatch.delenv("SSL_SPLITS_LOCK_LEASE_SECONDS")
    assert lock.lease_from_env() == lock.DEFAULT_LEASE


def test_the_lock_module_needs_no_airflow():
    out = subprocess.run(
        [
            PYTHON,
            "-c",
            "import sys; sys.path.insert(0, 'plugins'); import beam_jobs.publishing.lock",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- fenced publishing


@pytest.fixture(scope="module")
def catalog_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("catalogs")


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_writer_that_lost_its_lease_mid_publication_publishes_nothing_more(
    where, request, small_source, tmp_path, catalog_cache, monkeypatch
):
    if where == "local":
        out = str(tmp_path / "out")
    else:
        out = f"{request.getfixturevalue('gcs_bucket')}/out"
    p = bs.params(str(small_source), out)
    first, _ = bs.full_run(p, catalog_cache)  # something published already
    before = storage.read_text(first.manifest_uri)
    run = bs.start({**p, "seeds": [1], "num_shards": 2}, catalog_cache)
    bs.build_all(run, deep=False)
    a = lock.acquire(out, run_id="a", lease=SHORT, **KW)
    published = {f.path: f for f in storage.list_files(storage.join(out, "train*"))}
    seen: list[str] = []

    def stall_after_the_journal(where_: str) -> None:
        seen.append(where_)
        if where_ == "publish.journaled":
            time.sleep(1.2)  # the process stalls: its lease lapses, another run takes over
            lock.acquire(out, run_id="b", **KW)

    monkeypatch.setattr(commit, "failpoint", stall_after_the_journal)
    with pytest.raises(lock.LockLost, match="no longer holds .*run b of d"):
        with lock.holding(a, every=1000) as fence:  # no background renewal
            bs.publish(run, "a", fence=fence)
    assert seen == ["publish.journaled"]  # no name switched after the lease was lost
    assert storage.read_text(first.manifest_uri) == before  # the manifest unchanged
    now = {f.path: f for f in storage.list_files(storage.join(out, "train*"))}
    assert now == published  # no published file touched
    assert _holder(out)["run_id"] == "b"


RACER = """
import os, sys, time
sys.path.insert(0, "plugins")
from beam_jobs.publishing import lock
output, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.005)
try:
    held = lock.acquire(output, run_id="scheduled__2026-01-01T00:00:00+00:00", dag_id="d")
    print("won", held.token, flush=True)
except lock.LockHeld:
    print("held", flush=True)
"""


def test_processes_racing_for_one_output_with_one_run_id_one_wins(output, tmp_path):
    # Two deployments' scheduled runs share a run id; four processes race at once
    # (on GCS each process its own client): exactly one token holds the lock.
    go = tmp_path / "go"
    env = {**os.environ, "SSL_SPLITS_GCS_RETRY_DEADLINE": "0.3"}
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", RACER, output, str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    time.sleep(1.5)  # every racer imported and waiting
    go.write_text("go")
    outs = [p.communicate(timeout=120) for p in procs]
    results = [o.strip().split() for o, _ in outs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    winners = [r for r in results if r[0] == "won"]
    assert len(winners) == 1 and sum(r == ["held"] for r in results) == 3, results
    assert _holder(output)["token"] == winners[0][1]
