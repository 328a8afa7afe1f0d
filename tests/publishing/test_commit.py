"""Publication (``beam_jobs.publishing.commit``) through the DAG's tasks: staged,
verified shards take their published names only in ``publish_manifest``;
what a reader sees when a publication stops half-way; how the next run
finishes it; reruns that decide from metadata alone.

The kill matrix (real SIGKILLs at every step) is in test_kills.py; here the
stops are exceptions raised at the same failpoints, which is enough to see
each intermediate state quickly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import built_splits as bs

from beam_jobs import layout, storage
from beam_jobs.publishing.manifest import ManifestError, load, load_split

pytest.importorskip("airflow")

from ssl_splits.tasks import TaskError  # noqa: E402

from beam_jobs.publishing import commit  # noqa: E402
from beam_jobs.publishing.publish import PublishError  # noqa: E402

SPLIT = "train97.1"


class Stop(Exception):
    """Raised at a failpoint instead of a SIGKILL."""


def stop_at(monkeypatch, point: str) -> None:
    name, _, nth = point.partition("@")
    hits = {"n": 0}

    def fp(where: str) -> None:
        if where == name:
            hits["n"] += 1
            if hits["n"] >= int(nth or 1):
                raise Stop(point)

    monkeypatch.setattr(commit, "failpoint", fp)


def names(folder: str, split: str) -> list[str]:
    return [storage.basename(f.path) for f in layout.split_files(folder, split)]


def contents(folder: str, split: str) -> dict[str, bytes]:
    return {
        storage.basename(f.path): storage.read_bytes(f.path)
        for f in layout.split_files(folder, split)
    }


@pytest.fixture
def published(small_source, tmp_path, catalog_cache):
    """Seeds 1 and 2 at 3 shards and the reshuffle at 4, published."""
    p = bs.params(
        str(small_source), str(tmp_path / "out"), unsupervised=True, unsupervised_shards=4
    )
    run, _ = bs.full_run(p, catalog_cache)
    return p, run


@pytest.fixture(scope="module")
def catalog_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("catalogs")


def test_nothing_has_a_published_name_before_publish(small_source, tmp_path, catalog_cache):
    run = bs.start(bs.params(str(small_source), str(tmp_path / "out")), catalog_cache)
    bs.build_all(run, deep=False)
    assert names(run.output_uri, SPLIT) == []
    assert not storage.exists(run.manifest_uri)
    bs.publish(run)
    assert names(run.output_uri, SPLIT) == [layout.shard_name(SPLIT, s, 3) for s in range(3)]
    # The staged copies are gone (renamed), and so is the journal.
    assert not storage.exists(layout.journal_uri(run.output_uri))
    assert not list(Path(run.work_uri, "staging").rglob(f"{SPLIT}-*"))


def test_a_new_shard_count_replaces_only_that_splits_shards(published, catalog_cache):
    p, run = published
    out = run.output_uri
    Path(out, "train-notes.txt").write_text("not a shard")
    sup = {
        s: (Path(out, n).read_bytes(), Path(out, n).stat().st_mtime_ns)
        for s in run.supervised()
        for n in names(out, s)
    }
    run6, result = bs.full_run(
        {**p, "seeds": [], "unsupervised_shards": 6}, catalog_cache, run_id="manual__2"
    )
    assert result["changed"] == ["train"]
    assert names(out, "train") == [layout.shard_name("train", s, 6) for s in range(6)]
    assert Path(out, "train-notes.txt").exists()  # not a shard: never touched
    assert {
        s: (Path(out, n).read_bytes(), Path(out, n).stat().st_mtime_ns)
        for s in run.supervised()
        for n in names(out, s)
    } == sup
    doc = load(run.manifest_uri)
    assert doc["splits"]["train"]["num_shards"] == 6
    assert sorted(doc["splits"]) == sorted(run.supervised() + ["train"])


def test_a_staged_shard_changed_after_verification_is_not_published(
    small_source, tmp_path, catalog_cache
):
    run = bs.start(bs.params(str(small_source), str(tmp_path / "out"), seeds=[1]), catalog_cache)
    bs.build_all(run, deep=False)
    staged = json.loads(storage.read_text(layout.stats_uri(run.work_uri, SPLIT)))["shards"][0]
    path = Path(staged["staged"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(
        TaskError,
        match=rf"{SPLIT}: .*{path.name} changed or disappeared since it "
        r"was verified; nothing was published",
    ):
        bs.publish(run)
    assert names(run.output_uri, SPLIT) == [] and not storage.exists(run.manifest_uri)
    assert not storage.exists(layout.journal_uri(run.output_uri))


@pytest.mark.parametrize(
    "point", ["publish.journaled", "publish.placed@2", "publish.switched", "publish.committed"]
)
def test_an_interrupted_publication_is_refused_then_finished_by_the_next_run(
    published, catalog_cache, monkeypatch, point
):
    p, run = published
    old = {s: contents(run.output_uri, s) for s in run.supervised() + ["train"]}
    again = bs.start(
        {**p, "seeds": [1], "num_shards": 4, "force": True, "unsupervised": False}, catalog_cache
    )
    bs.build_all(again, deep=False)
    stop_at(monkeypatch, point)
    with pytest.raises((Stop, PublishError)):  # storage failing mid-switch: PublishError
        bs.publish(again, "manual__2")
    monkeypatch.undo()
    journal = layout.journal_uri(run.output_uri)
    assert storage.exists(journal)
    # Untouched splits load; the one being replaced loads only while its files
    # are still the old ones, else it is refused, saying why.
    load_split(run.manifest_uri, "train97.2")
    load_split(run.manifest_uri, "train")
    assert contents(run.output_uri, "train97.2") == old["train97.2"]
    committed = point == "publish.committed"
    try:
        files = load_split(run.manifest_uri, SPLIT)
        assert committed or point == "publish.journaled"
        assert len(files.paths) == (4 if committed else 3)
    except ManifestError as err:
        assert point in ("publish.placed@2", "publish.switched")
        assert (
            f"split {SPLIT} of {run.manifest_uri} is being replaced: run manual__2 started "
            "publishing a new build of it" in str(err)
        )
        assert "The next run of the DAG completes the publication" in str(err)
    # The next run's plan task finishes it first, then finds everything up to date.
    rerun = bs.start({**p, "seeds": [1], "num_shards": 4, "unsupervised": False}, catalog_cache)
    assert not storage.exists(journal)
    assert [s["action"] for s in rerun.specs] == ["skip"]
    files = load_split(run.manifest_uri, SPLIT)
    assert names(run.output_uri, SPLIT) == [layout.shard_name(SPLIT, s, 4) for s in range(4)]
    assert load(run.manifest_uri)["splits"][SPLIT]["provenance"]["run_id"] == "manual__2"
    assert files.num_examples == 97


def test_a_retried_publish_task_finishes_its_own_publication(published, catalog_cache, monkeypatch):
    p, run = published
    again = bs.start({**p, "seeds": [1], "force": True, "unsupervised": False}, catalog_cache)
    bs.build_all(again, deep=False)
    stop_at(monkeypatch, "publish.placed@1")
    with pytest.raises((Stop, PublishError)):  # storage failing mid-switch: PublishError
        bs.publish(again, "manual__2")
    monkeypatch.undo()
    result = bs.publish(again, "manual__2")  # the task's retry, same run
    assert result["changed"] == [SPLIT]
    assert not storage.exists(layout.journal_uri(run.output_uri))
    load_split(run.manifest_uri, SPLIT)


def _victim(where: Path) -> str:
    """A file outside the output folder, named like a shard."""
    where.mkdir(exist_ok=True)
    victim = where / "train97-00000-of-00001"
    victim.write_bytes(b"not the product's\n")
    return str(victim)


def _stale_outside(j: dict, victim: str) -> None:
    info = storage.stat(victim)
    j["splits"][SPLIT]["stale"].append({"path": victim, "version": info.version})


def _staged_outside(j: dict, victim: str) -> None:
    j["splits"][SPLIT]["shards"][0]["staged"] = victim


def _placed_outside(j: dict, victim: str) -> None:
    j["splits"][SPLIT]["shards"][0]["path"] = victim


def _other_work_folder(j: dict, victim: str) -> None:
    j["work_uri"] = str(Path(victim).parent)


def _not_a_journal(j: dict, victim: str) -> None:
    del j["run_id"]


def _split_named_as_a_path(j: dict, victim: str) -> None:
    j["splits"]["../../elsewhere"] = j["splits"].pop(SPLIT)


def _staging_with_steps(j: dict, victim: str) -> None:
    sw = j["splits"][SPLIT]
    sw["staging"] = f"{sw['staging']}/../{sw['staging'].rsplit('/', 1)[1]}"


@pytest.mark.parametrize(
    "edit, says",
    [
        (_stale_outside, "its stale file 0 is not a shard name in"),
        (_staged_outside, "its shard 0 is not staged in its staging folder"),
        (_placed_outside, "its shard 0 is not a shard name in"),
        (_other_work_folder, "its work_uri is not this run's"),
        (_not_a_journal, "it does not read as a publication journal (KeyError)"),
        (_split_named_as_a_path, "its name is not a split name"),
        (_staging_with_steps, "its staging folder is not one in"),
    ],
)
def test_a_journal_edited_to_point_elsewhere_moves_or_deletes_nothing(
    published, catalog_cache, monkeypatch, tmp_path, edit, says
):
    """The journal is the product's record, but a record edited to name files
    outside the output folder (or staged objects outside this run's staging) is
    refused before anything is placed, replaced or deleted; restored, the
    publication finishes."""
    p, run = published
    again = bs.start({**p, "seeds": [1], "force": True, "unsupervised": False}, catalog_cache)
    bs.build_all(again, deep=False)
    stop_at(monkeypatch, "publish.journaled")
    with pytest.raises(Stop):
        bs.publish(again, "manual__2")
    monkeypatch.undo()
    uri = layout.journal_uri(run.output_uri)
    original = storage.read_text(uri)
    victim = _victim(tmp_path / "elsewhere")
    journal = json.loads(original)
    edit(journal, victim)
    storage.write_text(uri, json.dumps(journal))
    before = {s: contents(run.output_uri, s) for s in (SPLIT, "train97.2", "train")}
    manifest = storage.read_bytes(run.manifest_uri)
    rerun = {**p, "seeds": [1], "num_shards": 4, "unsupervised": False}
    with pytest.raises(TaskError) as err:
        bs.start(rerun, catalog_cache)
    assert f"the publication journal {uri} cannot be acted on: " in str(err.value)
    assert says in str(err.value)
    assert "Nothing was placed, replaced or deleted" in str(err.value)
    assert Path(victim).read_bytes() == b"not the product's\n"
    assert {s: contents(run.output_uri, s) for s in before} == before
    assert storage.read_bytes(run.manifest_uri) == manifest
    storage.write_text(uri, original)  # restored: the next run finishes it
    bs.start(rerun, catalog_cache)
    assert not storage.exists(uri)
    load_split(run.manifest_uri, SPLIT)
    assert load(run.manifest_uri)["splits"][SPLIT]["provenance"]["run_id"] == "manual__2"


def test_reruns_decide_from_metadata_without_reading_a_shard(published, catalog_cache, monkeypatch):
    p, run = published
    read: list[str] = []
    for fn in ("open_read", "read_bytes", "file_crc32c"):
        real = getattr(storage, fn)
        monkeypatch.setattr(
            storage, fn, lambda uri, *a, _r=real, **k: read.append(uri) or _r(uri, *a, **k)
        )
    rerun = bs.start(p, catalog_cache)
    assert {s["action"] for s in rerun.specs} == {"skip"}
    shards = {s["path"] for e in load(run.manifest_uri)["splits"].values() for s in e["shards"]}
    assert not set(read) & shards, "a published shard was read to decide"
    # A shard replaced by a same-size file: seen from its modification time alone.
    victim = next(iter(sorted(shards)))
    data = Path(victim).read_bytes()
    Path(victim).write_bytes(bytes(b ^ 0xFF for b in data))
    read.clear()
    rerun = bs.start(p, catalog_cache)
    decided = {s["split"]: s for s in rerun.specs}
    split = layout.parse_shard_name(Path(victim).name)[0]
    assert decided[split]["action"] == "build"
    assert "was replaced or modified since it was published" in decided[split]["reason"]
    assert not set(read) & shards
    with pytest.raises(ManifestError, match="was replaced or modified since it was published"):
        load_split(run.manifest_uri, split)
