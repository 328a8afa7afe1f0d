"""Publishing the manifest: the DAG-side entry logic (``ssl_splits.tasks``),
``beam_jobs.publishing.publish`` on GCS (the emulator on loopback, with generation
preconditions) and on a local path, concurrent publishers, versioned copies,
and the manifest contract of DESIGN.md checked on a manifest the real jobs
produced."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import pytest
from support import built_splits as bs

from beam_jobs import storage
from beam_jobs.core import BuildStats, PlanSummary, SourceDescription, SplitSpec, VerifyReport
from beam_jobs.layout import report_uri, stats_uri
from beam_jobs.publishing.manifest import dumps, load, load_split, merge, read
from beam_jobs.publishing.publish import PublishError, publish, versions_folder

ROOT = Path(__file__).resolve().parents[2]


def entry(name: str, seed: int) -> dict:
    return {
        "kind": "supervised",
        "seed": seed,
        "num_examples": 1,
        "num_shards": 1,
        "file_pattern": f"/x/{name}-*-of-00001",
        "shards": [
            {
                "path": f"/x/{name}-00000-of-00001",
                "num_records": 1,
                "num_bytes": 9,
                "crc32c": "00000000",
            }
        ],
    }


def prov(run_id: str) -> dict:
    return {"code_version": "0.1.0", "dag_id": "d", "run_id": run_id, "published_at": None}


def adder(name: str, seed: int, calls: list, barrier: threading.Barrier | None = None):
    """An update callback adding one split; records what it saw each time.
    With ``barrier``, its first call waits until the other publisher has read
    the same manifest version: the two then race to commit."""

    def update(current):
        calls.append(sorted(current.splits) if current else None)
        if barrier is not None and len(calls) == 1:
            barrier.wait()
        return merge(
            current,
            output_uri="/x",
            splits={name: entry(name, seed)},
            source=None,
            provenance=prov(name),
        )

    return update


def versions(uri: str) -> list[str]:
    return [f.path for f in storage.list_files(storage.join(versions_folder(uri), "*.json"))]


# --------------------------------------------------------------------------- GCS publishing


@pytest.mark.gcs
@pytest.mark.parametrize("existing", [False, True], ids=["new-manifest", "existing-manifest"])
def test_two_publishers_at_once_on_gcs_keep_both_splits(gcs_bucket, existing):
    uri = f"{gcs_bucket}/ssl/manifest.json"
    if existing:
        publish(uri, adder("train5.9", 9, []))
    barrier = threading.Barrier(2, timeout=60)
    calls: dict[str, list] = {"train5.1": [], "train5.2": []}
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(publish, uri, adder(name, i + 1, calls[name], barrier))
            for i, name in enumerate(calls)
        }
        results = {name: f.result(timeout=120) for name, f in futures.items()}

    final = load(uri)
    assert set(final["splits"]) == {"train5.1", "train5.2"} | ({"train5.9"} if existing else set())
    # Both read the same version, so one commit failed its generation precondition
    # (412) and that publisher re-read the manifest and applied its update again.
    assert sorted(r.attempts for r in results.values()) == [1, 2]
    loser = next(n for n, r in results.items() if r.attempts == 2)
    winner = next(n for n in calls if n != loser)
    base = ["train5.9"] if existing else None
    assert calls[winner] == [base]
    assert calls[loser] == [base, sorted((base or []) + [winner])]
    assert results[loser].generation == int(storage.stat(uri).generation)
    assert results[loser].manifest.to_dict() == final
    # One versioned copy per publication; the latest is the manifest itself.
    vs = versions(uri)
    assert len(vs) == 2 + existing
    assert {results[n].version_uri for n in results} <= set(vs)
    assert storage.read_text(results[loser].version_uri) == storage.read_text(uri)


@pytest.mark.gcs
def test_gcs_publish_gives_up_without_writing_when_the_manifest_keeps_changing(gcs_bucket):
    uri = f"{gcs_bucket}/ssl/manifest.json"
    publish(uri, adder("train5.1", 1, []))
    n = [0]

    def meddling(current):
        # Another publisher commits after every read of ours.
        n[0] += 1
        storage.write_text(
            uri,
            dumps(
                merge(
                    current,
                    output_uri="/x",
                    splits={f"other{n[0]}": entry("o", 0)},
                    source=None,
                    provenance=prov("other"),
                )
            ),
        )
        return merge(
            current,
            output_uri="/x",
            splits={"mine": entry("mine", 3)},
            source=None,
            provenance=prov("mine"),
        )

    with pytest.raises(PublishError, match="kept changing under 3 attempts"):
        publish(uri, meddling, attempts=3)
    final = load(uri)
    assert "mine" not in final["splits"] and "other3" in final["splits"]
    assert len(versions(uri)) == 1, "no version is written for a publication that failed"


@pytest.mark.gcs
def test_the_emulator_checks_generation_preconditions_on_reads(gcs_bucket):
    # As GCS does (tests/support/gcs_emulator.py): a read with ifGenerationMatch of a
    # replaced object answers 412, on the metadata and on the media.
    from google.api_core import exceptions as gexc

    uri = f"{gcs_bucket}/ssl/manifest.json"
    storage.write_text(uri, "{}")
    old = storage.stat(uri).generation
    storage.write_text(uri, '{"a": 1}')
    bucket, name = storage.split_gcs(uri)
    blob = storage.gcs_client().bucket(bucket).blob(name)
    with pytest.raises(gexc.PreconditionFailed):
        blob.download_as_bytes(if_generation_match=old)
    with pytest.raises(gexc.PreconditionFailed):
        blob.reload(if_generation_match=old)
    blob.reload(if_generation_match=storage.stat(uri).generation)
    assert blob.download_as_bytes(if_generation_match=blob.generation) == b'{"a": 1}'
    missing = storage.gcs_client().bucket(bucket).blob("ssl/none.json")
    with pytest.raises(gexc.NotFound):
        missing.download_as_bytes(if_generation_match=old)


@pytest.mark.gcs
def test_a_manifest_replaced_between_reload_and_download_is_read_again(
    gcs_emulator, gcs_bucket, proxy
):
    from support.gcs_fault_proxy import emulator_write

    uri = f"{gcs_bucket}/ssl/manifest.json"
    publish(uri, adder("train5.1", 1, []))
    bucket, name = storage.split_gcs(uri)
    other = merge(
        read(uri),
        output_uri="/x",
        splits={"train5.2": entry("train5.2", 2)},
        source=None,
        provenance=prov("other"),
    )
    fired: list[str] = []

    def replace_before_download(method: str, path: str) -> None:
        if method == "GET" and "alt=media" in path and name in unquote(path) and not fired:
            fired.append(path)  # another publisher commits between our reload and download
            emulator_write(gcs_emulator, bucket, name, dumps(other).encode())

    proxy.faults.before = replace_before_download
    calls: list = []
    result = publish(uri, adder("train5.3", 3, calls))
    assert fired
    # The download of the generation read first failed its precondition: the
    # update ran once, on the manifest as the other publisher left it (never
    # on a body that does not match the generation it is committed against).
    assert calls == [["train5.1", "train5.2"]]
    assert set(load(uri)["splits"]) == {"train5.1", "train5.2", "train5.3"}
    # The re-read happens inside storage.read_versioned (one publish attempt).
    assert result.attempts == 1


@pytest.mark.gcs
def test_a_failed_versioned_copy_says_the_manifest_was_published(gcs_bucket, proxy, monkeypatch):
    uri = f"{gcs_bucket}/ssl/manifest.json"
    publish(uri, adder("train5.1", 1, []))
    monkeypatch.setenv("SSL_SPLITS_GCS_RETRY_DEADLINE", "3")
    proxy.faults.fail_path = r"uploadType=multipart"  # the versioned copy's upload, every time
    proxy.faults.fail_method = "POST"
    proxy.faults.fail_body = r'"name": ?"ssl/manifest\.versions/'
    with pytest.raises(PublishError) as caught:
        publish(uri, adder("train5.2", 2, []))
    message = str(caught.value)
    proxy.faults.fail_path = None
    now = load(uri)
    assert set(now["splits"]) == {"train5.1", "train5.2"}  # it was published
    generation = storage.stat(uri).generation
    assert "unchanged" not in message, message
    assert f"{uri} was published (generation {generation};" in message, message
    assert "versioned copy" in message and "was not written" in message, message
    assert "503" in message  # why
    assert len(versions(uri)) == 1


def test_a_failed_versioned_copy_on_a_local_path_says_the_manifest_was_published(tmp_path):
    uri = str(tmp_path / "out" / "manifest.json")
    publish(uri, adder("train5.1", 1, []))
    folder = Path(versions_folder(uri))
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    folder.write_text("not a folder")  # the versioned copy cannot be written
    with pytest.raises(PublishError) as caught:
        publish(uri, adder("train5.2", 2, []))
    message = str(caught.value)
    assert set(load(uri)["splits"]) == {"train5.1", "train5.2"}
    assert "unchanged" not in message, message
    assert f"{uri} was published" in message and "was not written" in message, message


def test_publish_manifest_whose_versioned_copy_fails_says_so_and_its_retry_writes_it(
    small_source, catalog_cache, tmp_path
):
    from beam_jobs.publishing.publish import VersionNotWritten

    run = bs.start(bs.params(str(small_source), str(tmp_path / "out"), seeds=[1]), catalog_cache)
    bs.build_all(run)
    split = run.supervised()[0]
    folder = Path(versions_folder(run.manifest_uri))
    folder.write_text("not a folder")  # the versioned copy cannot be written
    with pytest.raises(VersionNotWritten) as caught:
        bs.publish(run, "manual__1")
    message = str(caught.value)
    assert f"{run.manifest_uri} was published" in message, message
    assert "unchanged" not in message and "refuses" not in message, message
    # Readers see the new manifest and its files.
    assert load_split(run.manifest_uri, split).num_examples == run.spec(split)["num_examples"]
    folder.unlink()
    result = bs.publish(run, "manual__1")  # the task's retry
    assert set(load(run.manifest_uri)["splits"]) == {split}
    vs = versions(run.manifest_uri)
    assert len(vs) == 1 and json.loads(storage.read_text(vs[0]))["splits"].keys() == {split}
    assert result["splits"] == [split]


# --------------------------------------------------------------------------- local publishing


PUBLISHER = textwrap.dedent("""
    import json, os, sys, time
    sys.path[:0] = [{root!r}, {plugins!r}]
    from beam_jobs.publishing.manifest import merge
    from beam_jobs.publishing.publish import publish

    name, seed, uri, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    open(os.path.join(ready, name), "w").close()
    while len(os.listdir(ready)) < 2:  # start together
        time.sleep(0.005)
    seen = []

    def update(current):
        seen.append(sorted(current.splits) if current else None)
        time.sleep(0.4)  # hold the lock: the other publisher must wait for it
        entry = {{"kind": "supervised", "seed": seed, "num_examples": 0, "num_shards": 0,
                  "file_pattern": name, "shards": []}}
        return merge(current, output_uri="/x", splits={{name: entry}}, source=None,
                     provenance={{"run_id": name, "published_at": None}})

    r = publish(uri, update)
    print(json.dumps({{"seen": seen, "version": r.version_uri}}))
""")


@pytest.mark.parametrize(
    "content, says",
    [
        ('{"schema_version": 2, "splits": {}}', "schema_version 2 is newer than this code's 1"),
        ('{"splits": {"a": "secret"}}', "is not a manifest of this product"),
        ('{"splits": {}, "source": "secret"}', "is not a manifest of this product"),
    ],
    ids=["newer", "entry-not-an-object", "source-not-an-object"],
)
def test_publish_leaves_a_manifest_it_cannot_merge_into_as_it_is(tmp_path, content, says):
    uri = str(tmp_path / "manifest.json")
    Path(uri).write_text(content)
    with pytest.raises(PublishError, match=says) as err:
        publish(uri, adder("train5.1", 1, []))
    assert "secret" not in str(err.value) and "storage kept failing" not in str(err.value)
    assert Path(uri).read_text() == content
    assert not Path(versions_folder(uri)).exists()


def test_two_publisher_processes_on_a_local_path_keep_both_splits(tmp_path):
    uri = str(tmp_path / "out" / "manifest.json")
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER.format(root=str(ROOT), plugins=str(ROOT / "plugins")))
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(script), name, str(i + 1), uri, str(ready)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, name in enumerate(["train5.1", "train5.2"])
    }
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    final = load(uri)
    assert set(final["splits"]) == {"train5.1", "train5.2"}
    # Conditional commits serialized them: the update each committed saw either no
    # manifest or the other's split (a lost race re-reads and applies again).
    seen = sorted(tuple(o["seen"][-1] or []) for o in out.values())
    assert seen == [(), ("train5.1",)] or seen == [(), ("train5.2",)]
    vs = versions(uri)
    assert sorted(vs) == sorted(o["version"] for o in out.values())
    assert storage.read_text(max(vs)) == Path(uri).read_text()
    leftovers = [p.name for p in Path(uri).parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == [], "the manifest is committed by rename, no temp files stay behind"


# --------------------------------------------------------------------------- entry logic


@pytest.fixture
def crafted(tmp_path):
    """A run config and a split that looks built and verified (small files only)."""
    from ssl_splits.config import resolve

    from beam_jobs.layout import plan_summary_uri

    cfg = resolve(bs.params(str(tmp_path / "src"), str(tmp_path / "out")))
    split, sha = "train10.1", "ab" * 32
    plan_uri = storage.join(cfg.work_uri, "plans", f"{split}.{sha[:16]}.csv")
    storage.write_text(plan_uri, "n1.JPEG,0,0\n")
    storage.write_text(
        plan_summary_uri(plan_uri),
        PlanSummary(
            split=split,
            kind="supervised",
            seed=1,
            fraction="0.2",
            sampling="stratified",
            num_examples=10,
            num_shards=1,
            shard_lengths=[10],
            plan_uri=plan_uri,
            plan_sha256=sha,
            plan_source="computed",
            class_counts={"n1": 10},
        ).to_json(),
    )
    staging = f"{cfg.work_uri}/staging/{split}/0123456789abcdef"
    shards = [
        {
            "path": f"{cfg.output_uri}/{split}-00000-of-00001",
            "staged": f"{staging}/{split}-00000-of-00001",
            "num_records": 10,
            "num_bytes": 100,
            "crc32c": "0badc0de",
        }
    ]
    stats = {
        "split": split,
        "plan_sha256": sha,
        "built_at": "2026-01-01T00:00:00+00:00",
        "num_examples": 10,
        "num_shards": 1,
        "shards": shards,
        "job_name": "ssl-train10-1",
        "file_pattern": f"{cfg.output_uri}/{split}-*-of-00001",
        "bytes_read": 100,
        "staging": staging,
    }
    # As the verifier does: the report names the exact stats file it checked,
    # and the staged objects it saw.
    report = {
        "split": split,
        "ok": True,
        "mode": "deep",
        "plan_sha256": sha,
        "verified_at": "2026-01-01T00:00:05+00:00",
        "stats_sha256": hashlib.sha256(json.dumps(stats).encode()).hexdigest(),
        "shards": [{**shards[0], "mtime_ns": 1}],
    }
    storage.write_text(stats_uri(cfg.work_uri, split), json.dumps(stats))
    storage.write_text(report_uri(cfg.work_uri, split), json.dumps(report))
    spec = SplitSpec(
        split=split,
        kind="supervised",
        action="build",
        reason="crafted",
        plan_uri=plan_uri,
        plan_sha256=sha,
        catalog_dir=f"{cfg.work_uri}/catalog/x",
        num_examples=10,
        num_shards=1,
        seed=1,
    )
    source = SourceDescription(
        source_uri=cfg.source_uri,
        fingerprint="f" * 64,
        catalog_dir=f"{cfg.work_uri}/catalog/x",
        layout="common",
        num_train_files=1,
        action="cached",
        reason="crafted",
        validation_files=0,
        validation_fingerprint=None,
    )
    return SimpleNamespace(cfg=cfg, spec=spec, source=source, stats=stats, report=report)


def test_split_entry_of_a_verified_split(crafted):
    from ssl_splits.tasks import split_entry

    e = split_entry(
        crafted.cfg,
        crafted.source,
        crafted.spec,
        BuildStats.from_dict(crafted.stats),
        VerifyReport.from_dict(crafted.report),
        {"dataflow_job_id": "j-1"},
        {"dag_id": "d", "run_id": "r", "published_at": "2026-01-01T00:01:00+00:00"},
    ).to_dict()
    # The verified objects, under their published names (with the identity a
    # reader checks without reading them); not where they were staged.
    assert e["shards"] == [
        {
            "path": crafted.stats["shards"][0]["path"],
            "num_records": 10,
            "num_bytes": 100,
            "crc32c": "0badc0de",
            "mtime_ns": 1,
        }
    ]
    assert e["num_examples"] == 10
    assert (e["seed"], e["fraction"], e["sampling"]) == (1, "0.2", "stratified")
    assert e["plan"]["sha256"] == crafted.spec.plan_sha256
    assert e["verification"]["mode"] == "deep"
    assert e["source_fingerprint"] == "f" * 64
    assert e["provenance"]["job_id"] == "j-1" and e["provenance"]["run_id"] == "r"


REFUSALS = {
    "no report": (
        lambda c: storage.delete([report_uri(c.cfg.work_uri, "train10.1")]),
        "has no verification report",
    ),
    "failed": (lambda c: c.report.update(ok=False), "failed verification"),
    "report of another plan": (
        lambda c: c.report.update(plan_sha256="cd" * 32),
        "not of this run's plan",
    ),
    "built from another plan": (
        lambda c: c.stats.update(plan_sha256="cd" * 32),
        "not of this run's plan",
    ),
    "report of another build": (
        lambda c: c.stats.update(built_at="2026-01-01T00:00:09+00:00"),
        "verification report is of another build",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_publish_manifest_refuses_a_split_that_is_not_verified(crafted, case):
    from ssl_splits.tasks import TaskError, publish_manifest

    cfg = crafted.cfg
    first = publish(
        cfg.manifest_uri,
        lambda cur: merge(
            cur,
            output_uri=cfg.output_uri,
            splits={"train10.2": entry("train10.2", 2)},
            source=None,
            provenance=prov("r0"),
        ),
    )
    before = Path(cfg.manifest_uri).read_bytes()
    change, message = REFUSALS[case]
    change(crafted)
    if case != "no report":
        storage.write_text(stats_uri(cfg.work_uri, "train10.1"), json.dumps(crafted.stats))
        storage.write_text(report_uri(cfg.work_uri, "train10.1"), json.dumps(crafted.report))
    with pytest.raises(TaskError, match=message):
        publish_manifest(
            cfg.to_dict(),
            crafted.source.to_dict(),
            [crafted.spec.to_dict()],
            {},
            {"dag_id": "d", "run_id": "r1"},
        )
    assert Path(cfg.manifest_uri).read_bytes() == before
    assert versions(cfg.manifest_uri) == [first.version_uri]


# --------------------------------------------------------------------------- after a real build


@pytest.fixture(scope="module")
def catalog_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("catalogs")


@pytest.fixture(scope="module")
def gcs_run(gcs_emulator, small_source, catalog_cache):
    """Seeds 1 and 2 built, verified and published on the emulator by the DAG's code."""
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    storage.gcs_client().create_bucket(bucket)
    p = bs.params(str(small_source), f"gs://{bucket}/ssl")
    run, result = bs.full_run(p, catalog_cache, run_id="manual__1")
    return SimpleNamespace(
        run=run, result=result, params=p, text=storage.read_text(run.manifest_uri)
    )


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


@pytest.mark.gcs
def test_published_manifest_has_the_contract_fields(gcs_run, small_source):
    doc = json.loads(gcs_run.text)
    run = gcs_run.run
    out = run.output_uri
    assert doc["schema_version"] == 1
    assert doc["output_uri"] == out
    assert ISO.match(doc["updated_at"])
    assert set(doc["provenance"]) >= {"code_version", "dag_id", "run_id", "published_at"}
    assert doc["provenance"]["dag_id"] == bs.DAG_ID

    src = doc["source"]
    assert src["uri"] == str(small_source)
    assert re.fullmatch(r"[0-9a-f]{64}", src["fingerprint"])
    assert src["fingerprint"] == run.source["fingerprint"]
    assert src["num_records"] == 487 and src["num_shards"] == 8
    on_disk = sorted(small_source.glob("train-*"))
    assert [f["name"] for f in src["files"]] == [f.name for f in on_disk]
    assert [f["size"] for f in src["files"]] == [f.stat().st_size for f in on_disk]
    assert storage.exists(src["validation_report_uri"])

    assert list(doc["splits"]) == ["train97.1", "train97.2"]
    current = load(run.manifest_uri)["splits"]
    for name, e in doc["splits"].items():
        n, seed = map(int, re.fullmatch(r"train(\d+)\.(\d+)", name).groups())
        assert e["kind"] == "supervised"
        assert (e["seed"], e["fraction"], e["sampling"]) == (seed, "0.2", "stratified")
        assert e["num_examples"] == n == sum(s["num_records"] for s in e["shards"])
        assert e["num_shards"] == len(e["shards"]) == 3
        assert e["file_pattern"] == f"{out}/{name}-*-of-00003"
        lengths = [s["num_records"] for s in e["shards"]]
        assert lengths == sorted(lengths, reverse=True) and max(lengths) - min(lengths) <= 1
        for i, s in enumerate(e["shards"]):
            assert set(s) == {"path", "num_records", "num_bytes", "crc32c"}
            assert s["path"] == f"{out}/{name}-{i:05d}-of-00003"
            assert fnmatch.fnmatchcase(s["path"], e["file_pattern"])
            assert re.fullmatch(r"[0-9a-f]{8}", s["crc32c"])
            if current[name] == e:  # (not rebuilt since by the test below)
                info = storage.stat(s["path"])
                assert (info.size, info.crc32c) == (s["num_bytes"], s["crc32c"])
        assert sum(e["class_counts"].values()) == n and len(e["class_counts"]) == 10
        plan = e["plan"]
        assert set(plan) >= {"uri", "sha256", "source", "algorithm"}
        assert hashlib.sha256(storage.read_bytes(plan["uri"])).hexdigest() == plan["sha256"]
        assert e["source_fingerprint"] == src["fingerprint"]
        v = e["verification"]
        assert v["mode"] == "deep" and ISO.match(v["verified_at"])
        assert json.loads(storage.read_text(v["report_uri"]))["ok"] is True
        pv = e["provenance"]
        assert set(pv) >= {
            "code_version",
            "runner",
            "job_name",
            "job_id",
            "dag_id",
            "run_id",
            "built_at",
            "published_at",
        }
        assert pv["runner"] == "DirectRunner" and pv["run_id"] == "manual__1"
        assert ISO.match(pv["built_at"]) and ISO.match(pv["published_at"])
        assert pv["built_at"] <= v["verified_at"] <= pv["published_at"]
    # The reader finds the split in the published document and checks its files
    # (seed 1 only: another test in this module rebuilds seed 2).
    assert load_split(run.manifest_uri, "train97.1").entry == doc["splits"]["train97.1"]


@pytest.mark.gcs
def test_rebuilding_one_seed_changes_only_its_entry(gcs_run, catalog_cache):
    first = json.loads(gcs_run.text)
    uri = gcs_run.run.manifest_uri
    assert gcs_run.result["changed"] == ["train97.1", "train97.2"]
    assert len(versions(uri)) == 1

    # Run 2: seed 2 again, now in 2 shards (its plan changes, so it is rebuilt).
    p2 = {**gcs_run.params, "seeds": [2], "num_shards": 2}
    run2, result2 = bs.full_run(p2, catalog_cache, run_id="manual__2")
    assert [s["action"] for s in run2.specs] == ["build"]
    assert result2["changed"] == ["train97.2"]
    assert result2["splits"] == ["train97.1", "train97.2"]
    second = load(uri)
    assert second["splits"]["train97.1"] == first["splits"]["train97.1"]
    new, old = second["splits"]["train97.2"], first["splits"]["train97.2"]
    assert new != old
    assert (old["num_shards"], new["num_shards"]) == (3, 2)
    assert [s["num_records"] for s in new["shards"]] == [49, 48]
    assert new["plan"]["sha256"] != old["plan"]["sha256"]
    assert new["provenance"]["run_id"] == "manual__2"
    assert second["provenance"]["run_id"] == "manual__2"
    # The files agree with the new entry: the old 3-shard files are gone.
    assert len(load_split(uri, "train97.2").paths) == 2
    assert load_split(uri, "train97.1").num_examples == 97
    vs = sorted(versions(uri))
    assert len(vs) == 2 and result2["version_uri"] == vs[1]
    assert storage.read_text(vs[1]) == storage.read_text(uri)
    # The first version says plainly that seed 2's files it lists were replaced.
    old_version = json.loads(storage.read_text(vs[0]))
    assert old_version["superseded_by"] == vs[1]
    assert old_version["splits"]["train97.2"]["replaced"]["by_version"] == vs[1]
    assert "replaced" not in old_version["splits"]["train97.1"]
    for key in ("superseded_by",):
        old_version.pop(key)
    old_version["splits"]["train97.2"].pop("replaced")
    assert old_version == first

    # Run 3, same params: nothing to build, nothing published, no new version.
    text = storage.read_text(uri)
    run3 = bs.start(p2, catalog_cache)
    assert [s["action"] for s in run3.specs] == ["skip"]
    result3 = bs.publish(run3, "manual__3")
    assert result3["changed"] == [] and result3["version_uri"] is None
    assert storage.read_text(uri) == text
    assert len(versions(uri)) == 2
