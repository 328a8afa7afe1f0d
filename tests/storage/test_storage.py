"""Storage backends: one contract, run on every backend alike.

Each test takes ``root``, a fresh folder on one backend (a local temporary
folder; a fresh bucket on the GCS emulator), and checks what
``beam_jobs/storage/base.py`` promises, through the function API every caller
uses. A new scheme's backend joins the table (``ROOTS``) and passes the same
tests. Then what is specific to a scheme (what a file's identity is made of,
where generations pin reads), and the API's dispatch between schemes.
"""

from __future__ import annotations

import os

import google_crc32c
import pytest

from beam_jobs import storage
from beam_jobs.storage import gcs, local

ROOTS = ["local", pytest.param("gcs", marks=pytest.mark.gcs)]


@pytest.fixture(params=ROOTS)
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_bucket") + "/root"


def crc_hex(data: bytes) -> str:
    return storage.crc32c_hex(google_crc32c.value(data))


def test_each_scheme_has_its_backend(root):
    want = storage.BACKENDS["gs" if root.startswith("gs://") else ""]
    assert storage.backend(root) is want
    assert isinstance(want, gcs.GcsBackend if root.startswith("gs://") else local.LocalBackend)


# --------------------------------------------------------------------------- the contract


def test_whole_files_round_trip_and_replace(root):
    uri = storage.join(root, "a", "b.bin")
    storage.write_bytes(uri, b"first")
    assert storage.read_bytes(uri) == b"first"
    storage.write_text(uri, "second é", "text/plain", durable=False)
    assert storage.read_text(uri) == "second é"
    assert storage.list_tree(root) == [uri], "no temporary file is left beside it"


def test_a_missing_file(root):
    uri = storage.join(root, "missing.bin")
    assert storage.stat(uri) is None
    assert not storage.exists(uri)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.read_bytes(uri)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.open_read(uri)
    with pytest.raises((FileNotFoundError, storage.StorageError), match="missing.bin"):
        storage.file_crc32c(uri)
    assert storage.delete([uri]) == 0
    assert storage.list_files(storage.join(root, "nowhere", "*")) == []
    assert storage.list_tree(storage.join(root, "nowhere")) == []
    assert storage.delete_tree(storage.join(root, "nowhere")) == 0


def test_stat_and_identity(root):
    uri = storage.join(root, "f")
    storage.write_bytes(uri, b"x" * 1000)
    info = storage.stat(uri)
    assert info is not None and info.path == uri and info.size == 1000
    assert storage.file_crc32c(uri) == crc_hex(b"x" * 1000)
    if root.startswith("gs://"):
        assert info.crc32c == crc_hex(b"x" * 1000) and info.generation
    else:
        assert info.mtime_ns and info.crc32c is None  # read when asked: file_crc32c
    storage.write_bytes(uri, b"y" * 1001)
    again = storage.stat(uri)
    assert again is not None and again.size == 1001
    assert again.identity() != info.identity(), "a replaced file must not look the same"
    assert storage.file_crc32c(uri) == crc_hex(b"y" * 1001)


def test_local_list_files_leaves_out_files_gone_while_listing(tmp_path, monkeypatch):
    """A file renamed or deleted between reading the folder and its stat (a
    writer's temporary file renamed into place) is not there now: left out,
    not an error; nor is a folder removed while it is read."""
    for name in ("a", "b.tmp-1234", "c"):
        (tmp_path / name).write_bytes(b"x")
    info = local._info

    def renamed_meanwhile(path: str) -> storage.FileInfo:
        if path.endswith(".tmp-1234"):
            os.replace(path, path[: -len(".tmp-1234")])
        return info(path)

    monkeypatch.setattr(local, "_info", renamed_meanwhile)
    got = storage.list_files(storage.join(str(tmp_path), "*"))
    assert [storage.basename(f.path) for f in got] == ["a", "c"]

    def removed_meanwhile(path: str) -> object:
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "scandir", removed_meanwhile)
    assert storage.list_files(storage.join(str(tmp_path), "*")) == []


def test_list_files_matches_the_last_component_only_and_sorts(root):
    for name in [
        "train-00001-of-00002",
        "train-00000-of-00002",
        "trainx",
        "validation-0",
        "sub/train-00000-of-00001",
    ]:
        storage.write_bytes(storage.join(root, name), name.encode())
    got = storage.list_files(storage.join(root, "train-*-of-*"))
    assert [storage.basename(f.path) for f in got] == [
        "train-00000-of-00002",
        "train-00001-of-00002",
    ]
    assert [f.size for f in got] == [len("train-00000-of-00002")] * 2
    assert [
        storage.basename(f.path) for f in storage.list_files(storage.join(root, "t?ain[x]"))
    ] == ["trainx"]
    assert storage.list_tree(root) == sorted(
        storage.join(root, n)
        for n in [
            "sub/train-00000-of-00001",
            "train-00000-of-00002",
            "train-00001-of-00002",
            "trainx",
            "validation-0",
        ]
    )


def test_a_stream_appears_only_when_closed_cleanly(root):
    uri = storage.join(root, "out", "shard")
    storage.write_bytes(uri, b"old")
    with storage.open_write(uri) as f:
        f.write(b"new ")
        f.writelines([b"con", b"tent"])
        f.flush()
        assert storage.read_bytes(uri) == b"old", "readers see the old file until close"
    assert f.closed and storage.read_bytes(uri) == b"new content"

    with pytest.raises(RuntimeError, match="killed"):
        with storage.open_write(uri) as f:
            f.write(b"partial")
            raise RuntimeError("killed")
    w = storage.open_write(storage.join(root, "out", "never"))
    w.write(b"partial")
    w.abort()
    w.close()  # a no-op once aborted
    assert storage.read_bytes(uri) == b"new content"
    assert storage.list_tree(storage.join(root, "out")) == [uri], "nothing partial, no tmp"


def test_a_stream_reads_one_version(root):
    uri = storage.join(root, "f")
    storage.write_bytes(uri, b"A" * 10)
    with storage.open_read(uri, buffer_size=4) as f:
        head = f.read(4)
        storage.write_bytes(uri, b"B" * 10)
        try:
            data = head + f.read()
        except Exception:  # GCS: the generation read is gone
            data = None
    assert data in (None, b"A" * 10), "never a mix of two versions"
    assert b"".join(storage.iter_chunks(uri, 3)) == b"B" * 10


def test_ranged_reads_are_exact_and_counted(root):
    a, b = storage.join(root, "a"), storage.join(root, "b")
    storage.write_bytes(a, bytes(range(100)))
    storage.write_bytes(b, bytes(range(100, 200)))
    with storage.RangeReader() as reader:
        assert reader.read(a, 10, 5) == bytes(range(10, 15))
        got = reader.read_many([a, b], [1, 0, 1], [0, 99, 50], [2, 1, 10])
        assert got == [bytes([100, 101]), bytes([99]), bytes(range(150, 160))]
        assert reader.read_many([a, b], [1, 0], [0, 0], [3, 3], threads=2) == [
            bytes([100, 101, 102]),
            bytes([0, 1, 2]),
        ]
        assert reader.bytes_fetched == 5 + 13 + 6 and reader.requests == 6
        with pytest.raises(storage.StorageError, match=r"/b: short read at offset 98: wanted 5"):
            reader.read_many([a, b], [0, 1], [0, 98], [1, 5])


def test_delete_and_delete_tree(root):
    names = ["t/x", "t/y/z", "u"]
    for n in names:
        storage.write_bytes(storage.join(root, n), b"1")
    assert storage.delete([storage.join(root, "u"), storage.join(root, "u")]) == 1
    assert storage.delete_tree(storage.join(root, "t")) == 2
    assert storage.list_tree(root) == []


def test_copy_rename_place(root):
    src = storage.join(root, "src")
    storage.write_bytes(src, b"data")
    storage.copy(src, storage.join(root, "c", "copy"))
    assert storage.read_bytes(storage.join(root, "c", "copy")) == b"data"
    storage.rename(storage.join(root, "c", "copy"), storage.join(root, "r", "renamed"))
    assert not storage.exists(storage.join(root, "c", "copy"))
    assert storage.read_bytes(storage.join(root, "r", "renamed")) == b"data"

    staged = storage.stat(src)
    assert staged is not None
    final = storage.join(root, "final", "f")
    storage.write_bytes(final, b"old")
    storage.place(src, final, source_generation=staged.generation)
    placed = storage.stat(final)
    assert placed is not None and storage.read_bytes(final) == b"data"
    # What a manifest records of the staged file holds for the placed one.
    if staged.generation is None:
        assert placed.identity() == staged.identity() and not storage.exists(src)
    else:
        assert placed.crc32c == staged.crc32c and storage.exists(src)


def test_normalize(root):
    assert storage.normalize(storage.join(root, "a/b/")) == storage.join(root, "a/b")
    assert storage.normalize(root + "/") == root


# --------------------------------------------------------------------------- per scheme


def test_local_paths_are_made_absolute_and_collapsed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("data//x/../y/") == f"{tmp_path}/data/y"
    assert storage.normalize("gs://bucket//a/b/") == "gs://bucket/a/b"  # names keep inner //s


def test_local_place_across_file_systems_keeps_mtime(tmp_path, monkeypatch):
    """rename(2) fails with EXDEV across file systems: a copy that keeps the
    modification time (the identity a manifest records) takes its place."""
    import errno

    src, dst = str(tmp_path / "staged"), str(tmp_path / "out" / "final")
    storage.write_bytes(src, b"shard")
    os.utime(src, ns=(1_000_000_000, 1_234_567_890_123))
    before = storage.stat(src)
    real = os.replace

    def exdev(a, b):
        if a == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(a, b)

    monkeypatch.setattr(os, "replace", exdev)
    storage.place(src, dst)
    after = storage.stat(dst)
    assert before is not None and after is not None and after.identity() == before.identity()
    assert not os.path.exists(src) and os.listdir(tmp_path / "out") == ["final"]


@pytest.mark.gcs
def test_gcs_pins_generations(gcs_bucket):
    """A reader given a generation reads that one or fails naming it; place
    copies only the generation verified."""
    uri = f"{gcs_bucket}/src"
    storage.write_bytes(uri, b"0123456789")
    first = storage.stat(uri)
    assert first is not None and first.generation and first.crc32c == crc_hex(b"0123456789")
    storage.write_bytes(uri, b"abcdefghij")
    with storage.RangeReader({uri: first.generation}) as reader:
        with pytest.raises(
            storage.StorageError, match=f"src \\(generation {first.generation}\\) no longer exists"
        ):
            reader.read(uri, 0, 3)
    with pytest.raises(storage.PreconditionFailed):
        storage.place(uri, f"{gcs_bucket}/dst", source_generation=first.generation)
    assert not storage.exists(f"{gcs_bucket}/dst")
    with pytest.raises(
        storage.StorageError, match="bucket of gs://no-such-bucket-x/a/\\* does not"
    ):
        storage.list_files("gs://no-such-bucket-x/a/*")


@pytest.mark.gcs
def test_gcs_ranged_reads_count_retried_attempts(gcs_bucket, proxy):
    """bytes_fetched counts what was asked of storage: a ranged GET answered 503
    and retried counts twice."""
    uri = f"{gcs_bucket}/src"
    storage.write_bytes(uri, bytes(range(200)))
    proxy.faults.error_every = 2  # every other request from here on fails once
    with storage.RangeReader() as reader:
        got = [reader.read(uri, 20 * i, 20) for i in range(4)]
    assert got == [bytes(range(20 * i, 20 * i + 20)) for i in range(4)]
    errors = proxy.faults.stats["errors"]
    assert errors >= 2
    assert reader.bytes_fetched == 20 * (4 + errors) and reader.requests == 4 + errors


# --------------------------------------------------------------------------- between schemes


@pytest.mark.gcs
def test_between_schemes(tmp_path, gcs_bucket):
    here, there = str(tmp_path / "a"), f"{gcs_bucket}/b"
    storage.write_bytes(here, b"payload")
    storage.copy(here, there)
    assert storage.read_bytes(there) == b"payload"
    storage.rename(there, str(tmp_path / "back"))
    assert not storage.exists(there) and storage.read_bytes(str(tmp_path / "back")) == b"payload"
    with pytest.raises(ValueError, match="both must be local or both gs://"):
        storage.place(here, there)
    with storage.RangeReader() as reader:
        storage.write_bytes(there, b"remote")
        assert reader.read_many([here, there], [0, 1], [0, 0], [3, 6]) == [b"pay", b"remote"]


def test_an_unknown_scheme_is_named():
    with pytest.raises(ValueError, match="'s3://bucket/x': no storage for s3:// URIs"):
        storage.read_bytes("s3://bucket/x")
    assert storage.backend("/data/odd://name") is storage.BACKENDS[""]


def test_importing_storage_loads_no_gcs_library():
    import subprocess
    import sys

    code = (
        "import sys; from beam_jobs import storage; "
        "print(sorted(m for m in sys.modules if m.startswith(('google.cloud.storage', "
        "'google.api_core', 'google.auth'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the conditional contract
#
# write_if / delete_if / place(if_version=...) act only on the version named
# (MISSING: the name must be free), atomically with the check, or raise
# PreconditionFailed and change nothing; read_versioned returns bytes and the
# version they are of; clock is the storage's own time.


def _version(uri: str) -> str | None:
    info = storage.stat(uri)
    return None if info is None else info.version


def test_write_if_creates_a_missing_file_and_refuses_an_existing_one(root):
    uri = storage.join(root, "ctl", "doc.json")
    made = storage.write_if(uri, b'{"n": 1}', if_version=storage.MISSING)
    assert storage.read_bytes(uri) == b'{"n": 1}'
    assert made.path == uri and made.size == 8 and made.version
    assert made.version != storage.MISSING and made.version == _version(uri)

    with pytest.raises(storage.PreconditionFailed, match="doc.json"):
        storage.write_if(uri, b'{"n": 2}', if_version=storage.MISSING)
    assert storage.read_bytes(uri) == b'{"n": 1}'
    assert _version(uri) == made.version, "a refused create must not touch the file"
    assert storage.list_tree(root) == [uri], "no temporary file is left beside it"


def test_write_if_replaces_only_the_version_read(root):
    uri = storage.join(root, "doc.json")
    first = storage.write_if(uri, b"first", if_version=storage.MISSING)
    data, info = storage.read_versioned(uri, 1024)
    assert (data, info.version) == (b"first", first.version)

    second = storage.write_if(uri, b"second!", if_version=info.version)
    assert storage.read_bytes(uri) == b"second!"
    assert second.version not in (None, first.version) and second.version == _version(uri)

    # A writer that read "first" is stale now: refused, nothing changes.
    with pytest.raises(storage.PreconditionFailed, match="doc.json"):
        storage.write_if(uri, b"stale", if_version=first.version)
    assert storage.read_bytes(uri) == b"second!" and _version(uri) == second.version
    assert storage.list_tree(root) == [uri]

    # A version of a file that no longer exists does not recreate it.
    assert storage.delete([uri]) == 1
    with pytest.raises(storage.PreconditionFailed, match="doc.json"):
        storage.write_if(uri, b"resurrected", if_version=second.version)
    assert not storage.exists(uri) and storage.list_tree(root) == []


def test_delete_if(root):
    uri = storage.join(root, "lock.json")
    gone = storage.write_if(uri, b"x", if_version=storage.MISSING)
    assert storage.delete([uri]) == 1
    assert storage.delete_if(uri, if_version=gone.version) is False, "missing: False"

    old = storage.write_if(uri, b"old", if_version=storage.MISSING)
    new = storage.write_if(uri, b"new", if_version=old.version)
    with pytest.raises(storage.PreconditionFailed, match="lock.json"):
        storage.delete_if(uri, if_version=old.version)
    assert storage.read_bytes(uri) == b"new" and _version(uri) == new.version

    assert storage.delete_if(uri, if_version=new.version) is True
    assert not storage.exists(uri) and storage.list_tree(root) == []


def test_place_onto_a_destination_version(root):
    src, dst = storage.join(root, "staging", "s"), storage.join(root, "final", "f")
    storage.write_bytes(src, b"staged shard")
    storage.write_bytes(dst, b"someone else's file")
    staged, before = storage.stat(src), storage.stat(dst)
    assert staged is not None and before is not None

    # MISSING onto an existing destination: refused; dst intact, src still there.
    with pytest.raises(storage.PreconditionFailed, match="final/f"):
        storage.place(src, dst, source_generation=staged.generation, if_version=storage.MISSING)
    assert storage.read_bytes(dst) == b"someone else's file" and _version(dst) == before.version
    assert storage.read_bytes(src) == b"staged shard" and _version(src) == staged.version

    # A destination version that was replaced since it was read: refused too.
    storage.write_bytes(dst, b"replaced meanwhile")
    now = _version(dst)
    assert now != before.version
    with pytest.raises(storage.PreconditionFailed, match="final/f"):
        storage.place(src, dst, source_generation=staged.generation, if_version=before.version)
    assert storage.read_bytes(dst) == b"replaced meanwhile" and _version(dst) == now
    assert storage.read_bytes(src) == b"staged shard"

    # The destination's current version: placed.
    storage.place(src, dst, source_generation=staged.generation, if_version=now)
    assert storage.read_bytes(dst) == b"staged shard" and _version(dst) != now

    # MISSING onto a free name: placed.
    src2, free = storage.join(root, "staging", "s2"), storage.join(root, "final", "g")
    storage.write_bytes(src2, b"second")
    info2 = storage.stat(src2)
    assert info2 is not None
    storage.place(src2, free, source_generation=info2.generation, if_version=storage.MISSING)
    assert storage.read_bytes(free) == b"second"


def _bytes_read_by_this_thread() -> int:
    with open("/proc/thread-self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_read_versioned_bytes_and_version_agree_and_size_is_checked_first(root, monkeypatch):
    uri = storage.join(root, "big.json")
    one = b"a" * (3 << 20)
    storage.write_bytes(uri, one)
    data, info = storage.read_versioned(uri, 4 << 20)
    assert data == one and info.size == len(one) and info.version == _version(uri)
    assert info.path == uri and info.modified is not None

    storage.write_bytes(uri, b"b" * 10)
    data2, info2 = storage.read_versioned(uri, 10)  # exactly max_bytes is allowed
    assert data2 == b"b" * 10 and info2.version == _version(uri) != info.version

    # Larger than max_bytes: refused before any of it is read.
    storage.write_bytes(uri, one)
    if root.startswith("gs://"):
        import google.cloud.storage.blob as gblob

        def no_download(*a, **k):
            raise AssertionError("read_versioned downloaded an object over max_bytes")

        monkeypatch.setattr(gblob.Blob, "download_as_bytes", no_download)
        with pytest.raises(storage.StorageError, match=r"big.json is 3145728 bytes, more than"):
            storage.read_versioned(uri, 1 << 20)
    else:
        before = _bytes_read_by_this_thread()
        with pytest.raises(storage.StorageError, match=r"big.json is 3145728 bytes, more than"):
            storage.read_versioned(uri, 1 << 20)
        assert _bytes_read_by_this_thread() - before < 64 << 10, "the file was read"

    with pytest.raises(FileNotFoundError, match="nothing.json"):
        storage.read_versioned(storage.join(root, "nothing.json"), 10)


def test_clock_is_the_storages_time(root):
    import time

    probe = storage.join(root, "_ssl_splits", "clock")
    t1 = storage.clock(probe)
    stamped = storage.stat(probe)
    assert stamped is not None and stamped.modified is not None
    assert abs(t1 - stamped.modified) < 2
    time.sleep(0.05)
    t2 = storage.clock(probe)
    assert t1 - 0.5 <= t2 < t1 + 30, "monotone (give or take the storage's resolution)"
    other = storage.join(root, "written")
    storage.write_bytes(other, b"x")
    info = storage.stat(other)
    t3 = storage.clock(probe)
    assert info is not None and info.modified is not None
    assert t2 - 2 < info.modified < t3 + 2, "a write is stamped on the same clock"


def _race(n: int, attempt) -> tuple[list[int], list[BaseException]]:
    """Run ``attempt(i)`` in n threads released at once; (winners, other errors)."""
    import threading

    barrier = threading.Barrier(n)
    won: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait()
        try:
            attempt(i)
        except storage.PreconditionFailed:
            return
        except BaseException as err:  # noqa: BLE001 (reported below)
            with lock:
                errors.append(err)
            return
        with lock:
            won.append(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return won, errors


def test_racing_creators_exactly_one_wins(root):
    uri = storage.join(root, "_ssl_splits", "lock.json")
    won, errors = _race(
        8, lambda i: storage.write_if(uri, f"writer {i}".encode(), if_version=storage.MISSING)
    )
    assert errors == [] and len(won) == 1, (won, errors)
    assert storage.read_bytes(uri) == f"writer {won[0]}".encode()
    assert storage.list_tree(root) == [uri], "the losers left nothing behind"


def test_racing_replacers_of_one_version_exactly_one_wins(root):
    uri = storage.join(root, "manifest.json")
    base = storage.write_if(uri, b"v0", if_version=storage.MISSING)
    assert base.version is not None
    won, errors = _race(
        8, lambda i: storage.write_if(uri, f"v1 by {i}".encode(), if_version=base.version)
    )
    assert errors == [] and len(won) == 1, (won, errors)
    assert storage.read_bytes(uri) == f"v1 by {won[0]}".encode()
    assert storage.list_tree(root) == [uri]


@pytest.mark.parametrize("op", ["write_if", "place"])
def test_local_create_if_missing_never_replaces_a_file_that_appears_meanwhile(
    op, tmp_path, monkeypatch
):
    """The folder's flock serializes this backend's writers only; a file made
    by anyone else (a user's cp) between the check and the change must still
    not be replaced when the name had to be MISSING: write_if creates by
    link(2), which fails on an existing name; place must not rename over it."""
    folder = tmp_path / "out"
    dst = str(folder / "train-00000-of-00001")
    src = str(tmp_path / "staged")
    storage.write_bytes(src, b"staged shard")
    expect = local._expect

    def someone_writes_meanwhile(uri: str, if_version: str) -> None:
        expect(uri, if_version)
        if uri == dst:
            with open(dst, "wb") as f:  # not through the backend: no guard
                f.write(b"theirs")

    monkeypatch.setattr(local, "_expect", someone_writes_meanwhile)
    with pytest.raises(storage.PreconditionFailed, match="train-00000-of-00001"):
        if op == "write_if":
            storage.write_if(dst, b"ours", if_version=storage.MISSING)
        else:
            storage.place(src, dst, if_version=storage.MISSING)
    assert storage.read_bytes(dst) == b"theirs", "a file that appeared meanwhile was replaced"
    assert storage.read_bytes(src) == b"staged shard"
    assert sorted(os.listdir(folder)) == ["train-00000-of-00001"], "nothing left beside it"


def test_local_versions_are_not_reused_on_a_coarse_clock(tmp_path):
    """A local version is inode, mtime and size. File systems stamp mtimes
    from a coarse clock (one jiffy, 1-4 ms, on ext4 before Linux 6.13; 1 or
    2 s on others), and free inodes are reused at once: a name replaced twice
    within one tick could come back to the version a stale writer read. So a
    conditional replacement is always stamped later than the file it replaces:
    here the file's time is set ahead of the clock (as a tick that has not
    passed yet), and every replacement still moves it on."""
    uri = str(tmp_path / "lock.json")
    first = storage.write_if(uri, b"A" * 8, if_version=storage.MISSING)
    ahead = (first.mtime_ns or 0) + 10**12  # far in the clock's future
    os.utime(uri, ns=(ahead, ahead))
    info = storage.stat(uri)
    seen = {info.version}
    for i in range(64):
        new = storage.write_if(uri, b"%08d" % i, if_version=info.version or "")
        assert new.mtime_ns is not None and info.mtime_ns is not None
        assert new.mtime_ns > info.mtime_ns, "a replacement stamped no later than the old file"
        assert new.version not in seen
        seen.add(new.version)
        info = new
    with pytest.raises(storage.PreconditionFailed):
        storage.write_if(uri, b"stale writer", if_version=first.version or "")
    assert storage.read_bytes(uri) != b"stale writer"
