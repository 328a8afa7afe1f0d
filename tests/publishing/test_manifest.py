"""The manifest document: the pure ``merge``, ``load``/``read``, the
reader ``load_split`` (which checks the files against storage) and
``summary_lines``. Local files here, plus the reader on the GCS emulator."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import google_crc32c
import pytest

from beam_jobs import storage
from beam_jobs.publishing import manifest as m
from beam_jobs.source.catalog import shard_name
from beam_jobs.storage import crc32c_hex


def make_split(
    folder: str,
    name: str,
    sizes: list[tuple[int, bytes]],
    *,
    seed: int | None = 1,
    write: bool = True,
) -> dict:
    """A manifest entry for shards with (num_records, content); writes the files."""
    shards = []
    for i, (records, data) in enumerate(sizes):
        path = storage.join(folder, shard_name(name, i, len(sizes)))
        if write:
            storage.write_bytes(path, data)
        shards.append(
            {
                "path": path,
                "num_records": records,
                "num_bytes": len(data),
                "crc32c": crc32c_hex(google_crc32c.value(data)),
            }
        )
    return {
        "kind": "supervised" if seed is not None else "unsupervised",
        "seed": seed,
        "fraction": "0.1",
        "sampling": "stratified",
        "num_examples": sum(r for r, _ in sizes),
        "num_shards": len(sizes),
        "file_pattern": storage.join(folder, f"{name}-*-of-{len(sizes):05d}"),
        "shards": shards,
    }


def prov(run_id: str, at: str = "2026-01-01T00:00:00+00:00") -> dict:
    return {"code_version": "0.1.0", "dag_id": "d", "run_id": run_id, "published_at": at}


SOURCE = {"uri": "/data/imagenet", "fingerprint": "ab" * 32, "files": []}


# --------------------------------------------------------------------------- merge


def test_merge_into_nothing_makes_a_complete_document():
    a = make_split("/out", "train10.1", [(10, b"x" * 40)], write=False)
    merged = m.merge(
        None, output_uri="/out", splits={"train10.1": a}, source=SOURCE, provenance=prov("r1")
    )
    doc = merged.to_dict()
    assert doc["schema_version"] == m.SCHEMA_VERSION == 1
    assert doc["output_uri"] == "/out"
    assert doc["splits"] == {"train10.1": a}
    assert doc["source"] == SOURCE
    assert doc["provenance"]["run_id"] == "r1"
    assert doc["updated_at"] == "2026-01-01T00:00:00+00:00"
    assert json.loads(m.dumps(merged)) == doc
    assert list(doc) == [
        *("schema_version", "output_uri", "splits", "source", "provenance", "updated_at")
    ]


def test_merge_replaces_only_the_given_splits_and_copies_its_inputs():
    a = make_split("/out", "train10.1", [(10, b"a" * 40)], write=False)
    b = make_split("/out", "train10.2", [(10, b"b" * 40)], seed=2, write=False)
    first = m.merge(
        None,
        output_uri="/out",
        splits={"train10.1": a, "train10.2": b},
        source=SOURCE,
        provenance=prov("r1"),
    )
    before = copy.deepcopy(first)
    b2 = make_split("/out", "train10.2", [(6, b"c" * 30), (4, b"d" * 20)], seed=2, write=False)
    second = m.merge(
        first,
        output_uri="/out",
        splits={"train10.2": b2},
        source=None,
        provenance=prov("r2", "2026-02-02T00:00:00+00:00"),
    )
    assert second.splits["train10.1"] == before.splits["train10.1"]
    assert second.splits["train10.2"] == b2 != before.splits["train10.2"]
    assert second.source == SOURCE, "source=None keeps the current source section"
    assert second.provenance is not None and second.provenance["run_id"] == "r2"
    assert second.updated_at == "2026-02-02T00:00:00+00:00"
    assert first == before, "merge must not modify the current manifest"
    b2["num_examples"] = -1
    assert second.splits["train10.2"]["num_examples"] == 10, "entries are copied"


def test_merge_orders_splits_by_name_and_keeps_unknown_top_level_keys():
    current = m.Manifest.from_dict(
        {"schema_version": 1, "output_uri": "/out", "splits": {"z": {"kind": "x"}}, "note": "kept"}
    )
    doc = m.merge(
        current, output_uri="/out", splits={"a": {"kind": "y"}}, source=None, provenance=prov("r")
    ).to_dict()
    assert list(doc["splits"]) == ["a", "z"]
    assert doc["note"] == "kept"


def test_merge_refuses_a_manifest_from_newer_code():
    with pytest.raises(m.ManifestError, match="schema_version 2 is newer"):
        m.merge(
            m.Manifest.from_dict({"schema_version": 2, "splits": {}}),
            output_uri="/o",
            splits={},
            source=None,
            provenance=prov("r"),
        )


# --------------------------------------------------------------------------- load


@pytest.mark.parametrize(
    "content,error",
    [
        (None, "no manifest at"),
        ("{not json", "is not valid JSON"),
        ('{"schema_version": 1}', "has no 'splits'"),
        ("[1, 2]", "has no 'splits'"),
    ],
)
def test_load_rejects_what_is_not_a_manifest(tmp_path, content, error):
    uri = str(tmp_path / "manifest.json")
    if content is not None:
        Path(uri).write_text(content)
    with pytest.raises(m.ManifestError, match=error):
        m.load(uri)


def test_load_gives_the_json_as_it_is(tmp_path):
    """load is training code's reader: the document as stored, null values and
    unknown keys included (the typed Manifest leaves absent what is null)."""
    uri = str(tmp_path / "manifest.json")
    doc = {"schema_version": 1, "output_uri": "/o", "splits": {}, "work_uri": None, "x": [1]}
    Path(uri).write_text(json.dumps(doc))
    assert m.load(uri) == doc and list(m.load(uri)) == list(doc)
    assert m.read(uri).to_dict() == {
        "schema_version": 1,
        "output_uri": "/o",
        "splits": {},
        "x": [1],
    }


def test_read_or_none_is_none_only_when_there_is_no_file(tmp_path):
    uri = str(tmp_path / "manifest.json")
    assert m.read_or_none(uri) is None
    Path(uri).write_text("{broken")
    with pytest.raises(m.ManifestError):
        m.read_or_none(uri)
    Path(uri).write_text('{"splits": {"a": "secret"}}')
    with pytest.raises(m.ManifestError, match="is not a manifest of this product") as err:
        m.read_or_none(uri)
    assert "secret" not in str(err.value)


# --------------------------------------------------------------------------- load_split


@pytest.fixture
def two_splits(tmp_path) -> tuple[str, str]:
    """Two splits on disk and a manifest describing them: (manifest_uri, folder)."""
    folder = str(tmp_path / "out")
    a = make_split(folder, "train12.1", [(5, b"a" * 50), (4, b"b" * 41), (3, b"c" * 33)])
    u = make_split(folder, "train", [(7, b"t" * 70)], seed=None)
    doc = m.merge(
        None,
        output_uri=folder,
        splits={"train12.1": a, "train": u},
        source=SOURCE,
        provenance=prov("r1"),
    )
    uri = storage.join(folder, m.MANIFEST_NAME)
    storage.write_text(uri, m.dumps(doc))
    return uri, folder


def test_load_split_by_name_gives_paths_and_counts(two_splits):
    uri, folder = two_splits
    s = m.load_split(uri, "train12.1")
    assert s.name == "train12.1"
    assert s.paths == [f"{folder}/train12.1-0000{i}-of-00003" for i in range(3)]
    assert s.shard_lengths == [5, 4, 3] and s.num_examples == 12
    assert s.file_pattern == f"{folder}/train12.1-*-of-00003"
    assert s.entry["seed"] == 1
    # "train" is not confused with "train12.1" (whose files also start with "train").
    t = m.load_split(uri, "train")
    assert t.paths == [f"{folder}/train-00000-of-00001"] and t.num_examples == 7


def test_load_split_unknown_name_lists_the_known_ones(two_splits):
    uri, _ = two_splits
    with pytest.raises(m.ManifestError, match=r"no split 'train12\.7'; it has train, train12\.1"):
        m.load_split(uri, "train12.7")


def test_load_split_detects_a_missing_shard(two_splits):
    uri, folder = two_splits
    Path(folder, "train12.1-00001-of-00003").unlink()
    with pytest.raises(
        m.ManifestError,
        match=r"split train12\.1 .*missing shard "
        r".*train12\.1-00001-of-00003",
    ):
        m.load_split(uri, "train12.1")
    assert m.load_split(uri, "train12.1", check=False).num_examples == 12
    assert m.load_split(uri, "train").num_examples == 7, "other splits still load"


def test_load_split_detects_a_size_mismatch(two_splits):
    uri, folder = two_splits
    Path(folder, "train12.1-00002-of-00003").write_bytes(b"c" * 32)
    with pytest.raises(
        m.ManifestError, match=r"train12\.1-00002-of-00003 is 32 bytes, the manifest says 33"
    ):
        m.load_split(uri, "train12.1")


def test_load_split_detects_a_stray_file(two_splits):
    uri, folder = two_splits
    Path(folder, "train12.1-00003-of-00004").write_bytes(b"x")
    with pytest.raises(m.ManifestError, match=r"unexpected file .*train12\.1-00003-of-00004"):
        m.load_split(uri, "train12.1")


def test_load_split_detects_an_entry_that_contradicts_itself(two_splits):
    uri, _ = two_splits
    doc = json.loads(Path(uri).read_text())
    doc["splits"]["train12.1"]["num_examples"] = 13
    Path(uri).write_text(json.dumps(doc))
    with pytest.raises(
        m.ManifestError, match="inconsistent: 3 shards with 12 records, entry says 3 and 13"
    ):
        m.load_split(uri, "train12.1", check=False)


def _set(path: list, value):
    def change(entry: dict) -> None:
        *where, key = path
        for k in where:
            entry = entry[k]
        entry[key] = value

    return change


@pytest.mark.parametrize(
    "change, says",
    [
        (_set(["shards"], "/secret"), "its 'shards' is not a list"),
        (_set(["num_examples"], "secret"), "its 'num_examples' is not a whole number >= 0"),
        (_set(["num_shards"], True), "its 'num_shards' is not a whole number >= 0"),
        (_set(["file_pattern"], ["secret"]), "its 'file_pattern' is not a string"),
        (_set(["shards", 1], "secret"), "its shard 1 is not an object"),
        (_set(["shards", 0, "path"], ["/secret"]), "its shard 0's 'path' is not a string"),
        (_set(["shards", 2, "num_records"], "secret"), "shard 2's 'num_records' is not a whole"),
        (_set(["shards", 0, "num_bytes"], -1), "its shard 0's 'num_bytes' is not a whole number"),
        (_set(["shards", 0, "crc32c"], {"secret": 1}), "its shard 0's 'crc32c' is not a string"),
        (lambda e: e["shards"][1].pop("path"), "its shard 1's 'path' is not a string"),
    ],
)
def test_an_entry_that_cannot_be_read_is_named_by_key_never_quoted(two_splits, change, says):
    """A hand-edited (or foreign) entry: load_split refuses it with a
    ManifestError naming the key, and the rerun decision sees a problem (the
    split is rebuilt), instead of a KeyError or TypeError from inside."""
    uri, _ = two_splits
    doc = json.loads(Path(uri).read_text())
    change(doc["splits"]["train12.1"])
    Path(uri).write_text(json.dumps(doc))
    for check in (False, True):
        with pytest.raises(
            m.ManifestError, match="the entry of split train12.1 cannot be read"
        ) as e:
            m.load_split(uri, "train12.1", check=check)
        assert says in str(e.value) and "secret" not in str(e.value)
    problems = m.entry_problems(doc["splits"]["train12.1"])
    assert len(problems) == 1 and problems[0].startswith("the manifest entry cannot be read: ")
    assert says in problems[0]
    assert m.load_split(uri, "train").num_examples == 7, "the other split still loads"


@pytest.mark.gcs
def test_load_split_on_gcs_checks_names_sizes_and_crc32c(gcs_bucket):
    folder = f"{gcs_bucket}/ssl"
    a = make_split(folder, "train9.3", [(5, b"a" * 50), (4, b"b" * 40)], seed=3)
    uri = f"{folder}/manifest.json"
    storage.write_text(
        uri,
        m.dumps(
            m.merge(
                None, output_uri=folder, splits={"train9.3": a}, source=SOURCE, provenance=prov("r")
            )
        ),
    )
    s = m.load_split(uri, "train9.3")
    assert s.paths == [f"{folder}/train9.3-00000-of-00002", f"{folder}/train9.3-00001-of-00002"]
    assert s.shard_lengths == [5, 4]
    # Same size, other bytes: only the CRC32C in the object's metadata tells.
    storage.write_bytes(s.paths[1], b"B" * 40)
    with pytest.raises(
        m.ManifestError,
        match=r"train9\.3-00001-of-00002 has CRC32C [0-9a-f]{8}, "
        r"the manifest says " + a["shards"][1]["crc32c"],
    ):
        m.load_split(uri, "train9.3")
    storage.write_bytes(s.paths[1], b"b" * 40)
    storage.delete([s.paths[0]])
    storage.write_bytes(f"{folder}/train9.3-00000-of-00001", b"x")
    with pytest.raises(m.ManifestError) as err:
        m.load_split(uri, "train9.3")
    assert "missing shard" in str(err.value) and "train9.3-00000-of-00002" in str(err.value)
    assert "unexpected file" in str(err.value) and "train9.3-00000-of-00001" in str(err.value)


# --------------------------------------------------------------------------- summary


def test_summary_lines_one_per_split(two_splits):
    uri, _ = two_splits
    lines = m.summary_lines(m.read(uri))
    assert len(lines) == 2
    train, sup = lines
    assert train.startswith("train ") and "unsupervised" in train and "seed" not in train
    assert "7 examples in     1 shards" in train
    assert sup.startswith("train12.1") and "seed 1," in sup and "12 examples in     3 shards" in sup
    assert sup.endswith("0.0 MB")
