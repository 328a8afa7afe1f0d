"""Ownership: the product replaces or deletes only files its records say it wrote.

Every file under a name a run would write (a shard of a split it builds, of
any shard count; the TFDS metadata; the manifest) that the product's records
(manifest, publication journal, ``_ssl_splits/tfds.json``) do not describe is
*foreign*: ``plan`` stops the run before anything is built, naming every such
file and saying how to get out; a foreign file that appears later, under a
destination name, stops the publication; TFDS metadata that is not the
product's is left as it is. In every case the foreign files keep their exact
bytes, and the manifest is unchanged.

Each test runs on a local output folder and on one in the GCS emulator (the
source stays local: a small synthetic ImageNet, validated once per module).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from support import built_splits as bs

from beam_jobs import layout, storage
from beam_jobs.publishing.manifest import SCHEMA_VERSION, load

pytest.importorskip("airflow")

from ssl_splits.tasks import TaskError  # noqa: E402

from beam_jobs.publishing.ownership import ForeignFiles  # noqa: E402
from beam_jobs.publishing.publish import PublishError  # noqa: E402

OUTPUTS = ["local", pytest.param("gcs", marks=pytest.mark.gcs)]
HOW_OUT = "Move these files"


@pytest.fixture(scope="module")
def catalog_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("catalogs")


@pytest.fixture(params=OUTPUTS)
def output(request, tmp_path) -> str:
    """An output folder that does not exist yet: local, or in a fresh bucket."""
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("gcs_bucket") + "/out"


@pytest.fixture(scope="module")
def planned(small_source, tmp_path_factory, catalog_cache) -> dict[str, int | None]:
    """What the tests' runs would write: split name -> shard count, from a plan
    (no build) of the same params into a scratch folder (split names depend on
    the source and the params, not on the output folder)."""
    scratch = tmp_path_factory.mktemp("scratch") / "out"
    run = bs.start(params(small_source, str(scratch)), catalog_cache)
    got = {s["split"]: s["num_shards"] for s in run.specs}
    assert all(s["action"] == "build" for s in run.specs)
    assert len(got) == 3 and "validation" in got, got  # two seeds and the validation copy
    return got


def params(small_source: Path, output: str, **overrides: Any) -> dict[str, Any]:
    """Two seeds at 3 shards and the validation copy."""
    return bs.params(str(small_source), output, **{"copy_validation": True, **overrides})


def seeded(planned: dict[str, int | None]) -> tuple[str, str]:
    """The two seeded splits' names (seed 1's first)."""
    a, b = sorted(s for s in planned if s != "validation")
    return a, b


def plant(output: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """Write files the product did not write; return them by full URI."""
    out = {}
    for name, data in files.items():
        uri = storage.join(output, name)
        storage.write_bytes(uri, data)
        out[uri] = data
    return out


def outside_work(output: str) -> dict[str, bytes]:
    """Every file in the output folder but the work folder's (plans, catalog)."""
    work = layout.work_default(output) + "/"
    return {u: storage.read_bytes(u) for u in storage.list_tree(output) if not u.startswith(work)}


def names(output: str, split: str) -> list[str]:
    return [storage.basename(f.path) for f in layout.split_files(output, split)]


def assert_stopped_naming(err: BaseException, foreign: dict[str, bytes]) -> None:
    msg = str(err)
    for uri in foreign:
        assert uri in msg, f"the error does not name {uri}:\n{msg}"
    assert f"{len(foreign)} file(s)" in msg, msg
    assert HOW_OUT in msg, msg


# --------------------------------------------------------------------------- plan stops the run


def kinds(planned: dict[str, int | None]) -> dict[str, dict[str, bytes]]:
    """Foreign files of every kind a run would write, by what they are."""
    s1, s2 = seeded(planned)
    n1 = planned[s1]
    assert n1 == 3
    return {
        "shard of a split it builds": {layout.shard_name(s1, 0, n1): b"my shard\n"},
        "shard of that split, another count": {layout.shard_name(s1, 0, 7): b"seven\n"},
        "shard of the other seed": {layout.shard_name(s2, 2, 3): b"seed two\n"},
        "validation shard": {layout.shard_name("validation", 0, 2): b"my validation\n"},
        "dataset_info.json": {"dataset_info.json": b'{"name": "mine"}\n'},
        "features.json": {"features.json": b'{"type": "mine"}\n'},
        "label.labels.txt": {"label.labels.txt": b"cat\ndog\n"},
        "manifest: hello": {"manifest.json": b'{"hello": 1}\n'},
        "manifest: not JSON": {"manifest.json": b"name,split\n"},
        "manifest: splits, no schema_version": {"manifest.json": b'{"splits": {}}\n'},
        "manifest: another output_uri": {
            "manifest.json": json.dumps(
                {"schema_version": SCHEMA_VERSION, "output_uri": "/elsewhere/out", "splits": {}}
            ).encode()
        },
        "manifest: splits is a list": {"manifest.json": b'{"splits": []}\n'},
        "manifest: a split entry is not an object": {"manifest.json": b'{"splits": {"x": 1}}\n'},
    }


KINDS = [
    "shard of a split it builds",
    "shard of that split, another count",
    "shard of the other seed",
    "validation shard",
    "dataset_info.json",
    "features.json",
    "label.labels.txt",
    "manifest: hello",
    "manifest: not JSON",
    "manifest: splits, no schema_version",
    "manifest: another output_uri",
    "manifest: splits is a list",
    "manifest: a split entry is not an object",
]


@pytest.mark.parametrize("kind", KINDS)
def test_a_foreign_file_stops_the_run_in_plan(kind, output, planned, small_source, catalog_cache):
    foreign = plant(output, kinds(planned)[kind])
    with pytest.raises(TaskError) as err:
        bs.start(params(small_source, output), catalog_cache)
    assert_stopped_naming(err.value, foreign)
    assert "Nothing was built" in str(err.value)
    assert outside_work(output) == foreign, "nothing built, deleted or changed"


def test_every_foreign_file_is_named_at_once(output, planned, small_source, catalog_cache):
    """One error lists them all: moving one and trying again must not be the way to find the next."""
    every = kinds(planned)
    files: dict[str, bytes] = {}
    for kind in KINDS:
        if not kind.startswith("manifest"):
            files.update(every[kind])
    files.update(every["manifest: splits, no schema_version"])
    foreign = plant(output, files)
    assert len(foreign) == 8
    with pytest.raises(TaskError) as err:
        bs.start(params(small_source, output), catalog_cache)
    assert_stopped_naming(err.value, foreign)
    assert outside_work(output) == foreign


@pytest.mark.parametrize("manifest", ["manifest: hello", "manifest: not JSON"])
def test_an_unreadable_manifest_does_not_hide_the_other_foreign_files(
    manifest, output, planned, small_source, catalog_cache
):
    every = kinds(planned)
    foreign = plant(
        output,
        {
            **every[manifest],
            **every["shard of a split it builds"],
            **every["dataset_info.json"],
        },
    )
    with pytest.raises(TaskError) as err:
        bs.start(params(small_source, output), catalog_cache)
    assert_stopped_naming(err.value, foreign)
    assert outside_work(output) == foreign


@pytest.mark.parametrize("with_output_uri", [False, True], ids=["bare", "naming-this-folder"])
def test_a_manifest_cannot_claim_files_for_the_product(
    output, planned, small_source, catalog_cache, with_output_uri
):
    """A manifest that is not the product's (no schema_version) listing a
    foreign shard does not make that shard the product's: both are named,
    even when it names this output folder as its own."""
    s1, _ = seeded(planned)
    shard = storage.join(output, layout.shard_name(s1, 1, 3))
    forged: dict = {
        "splits": {s1: {"shards": [{"path": shard, "num_bytes": 6, "crc32c": "00000000"}]}}
    }
    if with_output_uri:
        forged["output_uri"] = output
    foreign = plant(
        output,
        {layout.shard_name(s1, 1, 3): b"mine!\n", "manifest.json": json.dumps(forged).encode()},
    )
    with pytest.raises(TaskError) as err:
        bs.start(params(small_source, output), catalog_cache)
    assert_stopped_naming(err.value, foreign)
    assert outside_work(output) == foreign


def test_other_files_do_not_stop_the_run(output, planned, small_source, catalog_cache):
    """Names a run never writes are no business of it (and are not named)."""
    s1, _ = seeded(planned)
    others = plant(
        output,
        {
            "README.md": b"my notes\n",
            f"{s1}-notes.txt": b"notes\n",
            f"{s1}x-00000-of-00003": b"another split\n",
            "train-00000-of-00001": b"the reshuffle is not built by this run\n",
            "validation.txt": b"v\n",
            "sub/manifest.json": b'{"hello": 1}\n',
        },
    )
    run = bs.start(params(small_source, output), catalog_cache)
    assert {s["split"]: s["action"] for s in run.specs} == dict.fromkeys(planned, "build")
    assert outside_work(output) == others


# --------------------------------------------------------------------------- after a publication


def test_a_rebuild_deletes_only_the_old_shards_its_manifest_listed(
    output, planned, small_source, catalog_cache
):
    s1, s2 = seeded(planned)
    p = params(small_source, output, copy_validation=False)
    run, first = bs.full_run(p, catalog_cache)
    assert first["changed"] == [s1, s2]
    info_uri = storage.join(output, "dataset_info.json")
    assert info_uri in first["tfds_metadata"], "a publication writes the TFDS metadata"
    published = outside_work(output)
    old = [storage.join(output, layout.shard_name(s1, i, 3)) for i in range(3)]
    assert set(old) <= set(published)
    manifest_bytes = storage.read_bytes(run.manifest_uri)
    rebuild = {**p, "seeds": [1], "num_shards": 5}

    # A foreign file matching the split's glob (another shard count) stops the rebuild in plan.
    stray = plant(output, {layout.shard_name(s1, 4, 9): b"not the product's\n"})
    with pytest.raises(TaskError) as err:
        bs.start(rebuild, catalog_cache)
    assert_stopped_naming(err.value, stray)
    for uri in old:
        assert uri not in str(err.value), "the product's own shards are not foreign"
    assert outside_work(output) == {**published, **stray}

    # Moved away, the rebuild is planned; the same file appears again before publish
    # (not under a destination name): it stays.
    storage.delete(stray)
    again = bs.start(rebuild, catalog_cache)
    assert {s["split"]: s["action"] for s in again.specs} == {s1: "build"}
    bs.build_all(again, deep=False)
    plant(output, {storage.basename(u): d for u, d in stray.items()})
    result = bs.publish(again, "manual__2")
    assert result["changed"] == [s1]

    after = outside_work(output)
    assert names(output, s1) == sorted(
        [layout.shard_name(s1, i, 5) for i in range(5)] + [layout.shard_name(s1, 4, 9)]
    )
    for uri in old:
        assert uri not in after, f"{uri} (listed by the manifest) was not deleted"
    for uri, data in stray.items():
        assert after.get(uri) == data, f"{uri} was deleted or changed"
    for name in names(output, s2):
        uri = storage.join(output, name)
        assert after[uri] == published[uri], f"{uri} of the other seed changed"
    assert info_uri in result["tfds_metadata"], "its own TFDS metadata is rewritten"
    doc = load(run.manifest_uri)
    assert (
        doc["splits"][s1]["num_shards"] == 5
        and storage.read_bytes(run.manifest_uri) != manifest_bytes
    )
    assert sorted(s["path"] for s in doc["splits"][s1]["shards"]) == [
        storage.join(output, layout.shard_name(s1, i, 5)) for i in range(5)
    ]


def test_an_entry_hand_edited_since_it_was_published_is_rebuilt_and_blocks_nothing(
    output, planned, small_source, catalog_cache, caplog
):
    """Seed 2's entry edited by hand so that it no longer reads: a run of seed 1
    publishes (leaving the TFDS metadata, which cannot describe seed 2, with a
    warning that names the key and quotes nothing); a run of seed 2 rebuilds it."""
    s1, s2 = seeded(planned)
    p = params(small_source, output, copy_validation=False)
    run, _ = bs.full_run(p, catalog_cache)
    doc = load(run.manifest_uri)
    doc["splits"][s2]["shards"][0]["num_records"] = "secret"
    storage.write_text(run.manifest_uri, json.dumps(doc))
    one = bs.start({**p, "seeds": [1], "force": True}, catalog_cache)
    bs.build_all(one, deep=False)
    with caplog.at_level(logging.WARNING):
        result = bs.publish(one, "manual__2")
    assert result["changed"] == [s1] and result["tfds_metadata"] == []
    warned = [r.getMessage() for r in caplog.records if "TFDS metadata" in r.getMessage()]
    assert any(
        f"the entry of {s2} cannot be read: its shard 0's 'num_records'" in w for w in warned
    )
    assert not any("secret" in r.getMessage() for r in caplog.records)
    two = bs.start({**p, "seeds": [2]}, catalog_cache)
    (spec,) = two.specs
    assert (spec["split"], spec["action"]) == (s2, "build")
    assert "the manifest entry cannot be read" in spec["reason"]
    bs.build_all(two, deep=False)
    assert bs.publish(two, "manual__3")["changed"] == [s2]
    assert load(run.manifest_uri)["splits"][s2]["shards"][0]["num_records"] > 0


def test_foreign_tfds_metadata_written_after_plan_is_left_as_it_is(
    output, planned, small_source, catalog_cache, caplog
):
    s1, _ = seeded(planned)
    run = bs.start(params(small_source, output, seeds=[1], copy_validation=False), catalog_cache)
    bs.build_all(run, deep=False)
    theirs = plant(output, {"dataset_info.json": b'{"name": "theirs"}\n'})
    with caplog.at_level(logging.WARNING):
        result = bs.publish(run)
    assert result["changed"] == [s1] and result["tfds_metadata"] == []
    (uri,) = theirs
    assert storage.read_bytes(uri) == theirs[uri]
    assert not storage.exists(storage.join(output, "features.json")), "nothing half-written"
    assert any(
        "TFDS metadata not written" in r.getMessage() and uri in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert sorted(load(run.manifest_uri)["splits"]) == [s1]


def test_tfds_metadata_it_wrote_then_replaced_by_someone_is_left_as_it_is(
    output, planned, small_source, catalog_cache, caplog
):
    """dataset_info.json was the product's (its TFDS record says so) until
    someone replaced it between a rebuild's plan and its publication: what sits
    there now is not what the product wrote, so it is not overwritten."""
    s1, _ = seeded(planned)
    p = params(small_source, output, seeds=[1], copy_validation=False)
    run, first = bs.full_run(p, catalog_cache)
    info_uri = storage.join(output, "dataset_info.json")
    features_uri = storage.join(output, "features.json")
    assert info_uri in first["tfds_metadata"] and features_uri in first["tfds_metadata"]
    features = storage.read_bytes(features_uri)

    again = bs.start({**p, "force": True}, catalog_cache)
    assert {s["split"]: s["action"] for s in again.specs} == {s1: "build"}
    bs.build_all(again, deep=False)
    theirs = plant(output, {"dataset_info.json": b'{"name": "theirs"}\n'})
    with caplog.at_level(logging.WARNING):
        result = bs.publish(again, "manual__2")
    assert result["changed"] == [s1]
    assert storage.read_bytes(info_uri) == theirs[info_uri], (
        "someone's dataset_info.json was overwritten"
    )
    assert result["tfds_metadata"] == []
    assert storage.read_bytes(features_uri) == features
    assert any(
        "TFDS metadata not written" in r.getMessage() and info_uri in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_a_foreign_shard_under_a_destination_name_stops_the_publication(
    output, planned, small_source, catalog_cache
):
    s1, _ = seeded(planned)
    p = params(small_source, output, seeds=[1], copy_validation=False)
    run, _ = bs.full_run(p, catalog_cache)
    manifest_bytes = storage.read_bytes(run.manifest_uri)
    published = outside_work(output)

    rebuild = bs.start({**p, "num_shards": 5}, catalog_cache)
    bs.build_all(rebuild, deep=False)
    theirs = plant(output, {layout.shard_name(s1, 3, 5): b"appeared during the run\n"})
    with pytest.raises(TaskError) as err:
        bs.publish(rebuild, "manual__2")
    assert_stopped_naming(err.value, theirs)
    assert "appeared during this run" in str(err.value)
    assert storage.read_bytes(run.manifest_uri) == manifest_bytes, "the manifest changed"
    assert outside_work(output) == {**published, **theirs}, "nothing placed, deleted or changed"
    assert not storage.exists(layout.journal_uri(output))

    # Moved away, the retried task publishes the verified build.
    storage.delete(theirs)
    result = bs.publish(rebuild, "manual__2")
    assert result["changed"] == [s1]
    assert names(output, s1) == [layout.shard_name(s1, i, 5) for i in range(5)]


def test_a_foreign_shard_that_appears_after_the_check_is_not_replaced(
    output, planned, small_source, catalog_cache, monkeypatch
):
    """The same, in the window between the publication's check and its
    placements (after the journal is written): the placement's destination
    precondition refuses to replace it; the next run says what to move."""
    from beam_jobs.publishing import commit

    s1, _ = seeded(planned)
    p = params(small_source, output, seeds=[1], copy_validation=False)
    run = bs.start(p, catalog_cache)
    bs.build_all(run, deep=False)
    theirs: dict[str, bytes] = {}

    def appears(where: str) -> None:
        if where == "publish.journaled":
            theirs.update(plant(output, {layout.shard_name(s1, 2, 3): b"just in time\n"}))

    monkeypatch.setattr(commit, "failpoint", appears)
    with pytest.raises((PublishError, ForeignFiles)) as err:
        bs.publish(run)
    (uri,) = theirs
    assert uri in str(err.value), str(err.value)
    assert storage.read_bytes(uri) == theirs[uri], "the foreign shard was replaced"
    assert not storage.exists(run.manifest_uri)
    monkeypatch.undo()

    # The next run stops in plan, naming the file and how to get out.
    with pytest.raises(TaskError) as again:
        bs.start(p, catalog_cache)
    assert_stopped_naming(again.value, theirs)
    assert storage.read_bytes(uri) == theirs[uri]


def test_a_journal_does_not_make_a_foreign_file_the_products(
    output, planned, small_source, catalog_cache, monkeypatch
):
    """A foreign shard that appeared under a destination name after the journal
    was written, then the staged shards lost (the work folder cleaned): the
    journal names that path, but it never described that file. The rebuild
    that recovery asks for must not replace it."""
    from beam_jobs.publishing import commit

    s1, _ = seeded(planned)
    p = params(small_source, output, seeds=[1], copy_validation=False)
    run = bs.start(p, catalog_cache)
    bs.build_all(run, deep=False)
    theirs: dict[str, bytes] = {}

    def appears(where: str) -> None:
        if where == "publish.journaled":
            theirs.update(plant(output, {layout.shard_name(s1, 2, 3): b"just in time\n"}))

    monkeypatch.setattr(commit, "failpoint", appears)
    with pytest.raises((PublishError, ForeignFiles), match=layout.shard_name(s1, 2, 3)):
        bs.publish(run)
    monkeypatch.undo()
    (uri,) = theirs
    assert storage.read_bytes(uri) == theirs[uri]
    storage.delete_tree(storage.join(run.work_uri, "staging"))

    try:
        rerun, result = bs.full_run({**p, "force": True}, catalog_cache, run_id="manual__2")
    except TaskError as err:  # stopping, naming it, is right too
        assert_stopped_naming(err, theirs)
    assert storage.read_bytes(uri) == theirs[uri], f"{uri} (not the product's) was replaced"


@pytest.mark.parametrize("what", ["a dangling symlink", "a folder"])
def test_a_local_entry_that_is_not_a_regular_file_is_foreign_too(
    what, tmp_path, planned, small_source, catalog_cache
):
    """A directory entry under a shard name that is not a regular file (a
    symlink into a volume that is not mounted now, a folder) is not the
    product's either: the run stops in plan, and it is left as it is."""
    import os

    s1, _ = seeded(planned)
    out = tmp_path / "out"
    out.mkdir()
    entry = out / layout.shard_name(s1, 0, 3)
    target = tmp_path / "unmounted" / "shard"
    if what == "a folder":
        entry.mkdir()
        (entry / "inside").write_bytes(b"mine\n")
    else:
        os.symlink(target, entry)
    with pytest.raises(TaskError) as err:
        run = bs.start(
            params(small_source, str(out), seeds=[1], copy_validation=False), catalog_cache
        )
        bs.build_all(run, deep=False)  # (only reached when plan did not stop it)
        bs.publish(run)
    assert_stopped_naming(err.value, {str(entry): b""})
    assert "plan" in [f.name for f in err.traceback], "stopped only after building"
    if what == "a folder":
        assert (entry / "inside").read_bytes() == b"mine\n"
    else:
        assert os.path.islink(entry) and os.readlink(entry) == str(target)
