"""The published label sets shipped as package data (beam_jobs/data, issue 15):
each loads, matches the sha256 its NOTICE gives and the facts the NOTICE
states; a damaged copy is an error naming it; the protocols name them."""

from __future__ import annotations

import hashlib
import lzma
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from support.common import PUBLISHED, ROOT, run_module

from beam_jobs.planning import protocols
from beam_jobs.planning.algorithm import parse_name_list, parse_plan_text

DATA = ROOT / "beam_jobs" / "data"


def notice_sha256s(folder: str) -> dict[str, str]:
    """``name -> sha256`` as the folder's NOTICE.md lists them (``- split1 <hex>``)."""
    text = (DATA / folder / "NOTICE.md").read_text()
    return dict(re.findall(r"^- (\S+)\s+([0-9a-f]{64})$", text, re.M))


def test_every_list_matches_the_sha256_its_notice_gives():
    fixmatch, simclr = notice_sha256s("fixmatch"), notice_sha256s("simclr")
    assert len(fixmatch) == 5 and len(simclr) == 2
    for seed in range(1, 6):
        assert protocols.LISTS[f"fixmatch/split{seed}"].sha256 == fixmatch[f"split{seed}"]
    assert protocols.LISTS["simclr/1percent"].sha256 == simclr["1percent.txt"]
    assert protocols.LISTS["simclr/10percent"].sha256 == simclr["10percent.txt"]
    for entry in protocols.LISTS.values():
        data = protocols.read_bytes(entry.ref)
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert data.count(b"\n") == entry.lines
        # Exactly the folder's files, compressed, each beside its notice.
        assert (DATA / entry.path).is_file() and (DATA / entry.path).parent.joinpath(
            "NOTICE.md"
        ).is_file()
    shipped = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file())
    assert shipped == sorted(
        [e.path for e in protocols.LISTS.values()] + ["fixmatch/NOTICE.md", "simclr/NOTICE.md"]
    )


def test_the_facts_the_notices_state():
    for seed in range(1, 6):
        names, shards, indices = parse_plan_text(
            protocols.read_text(f"published:fixmatch/split{seed}"), f"split{seed}"
        )
        assert len(names) == 128_116 and int(shards.max()) == 101
        per_class = Counter(n.split("_")[0] for n in names.tolist())
        assert (
            len(per_class) == 1000
            and min(per_class.values()) == 73
            and max(per_class.values()) == 130
        )
    one, _ = parse_name_list(protocols.read_text("published:simclr/1percent"), "1percent")
    ten, _ = parse_name_list(protocols.read_text("published:simclr/10percent"), "10percent")
    assert len(one) == 12_811 and len(ten) == 128_116
    assert set(one.tolist()) <= set(ten.tolist())
    sizes = Counter(Counter(n.split("_")[0] for n in one.tolist()).values())
    assert sizes == {13: 811, 12: 189}


def test_damaged_copies_are_refused_naming_the_file(tmp_path):
    entry = protocols.LISTS["simclr/1percent"]
    root = tmp_path / "data"
    (root / "simclr").mkdir(parents=True)
    target = root / entry.path
    # Other content (one name changed), well compressed: the sha256 differs.
    text = protocols.read_bytes(entry.ref).replace(b"n04235860_14959", b"n04235860_14958", 1)
    target.write_bytes(lzma.compress(text))
    with pytest.raises(protocols.PublishedDataError) as err:
        protocols.read_bytes(entry.ref, root=root)
    msg = str(err.value)
    assert (
        f"published:simclr/1percent: the shipped copy {target} decompresses to content with "
        f"sha256 {hashlib.sha256(text).hexdigest()}, not the published {entry.sha256}" in msg
    )
    # Bytes that are not xz at all.
    target.write_bytes(b"not xz")
    with pytest.raises(protocols.PublishedDataError, match=r"is damaged \(not xz"):
        protocols.read_bytes(entry.ref, root=root)
    target.unlink()
    with pytest.raises(protocols.PublishedDataError, match="is missing; reinstall"):
        protocols.read_bytes(entry.ref, root=root)


def test_references_and_protocols():
    assert (
        protocols.get("published:fixmatch/split3").file_name
        == "files2shards_train_size128116_split3.txt"
    )
    assert protocols.is_ref("published:simclr/1percent") and not protocols.is_ref("/a/b.txt")
    with pytest.raises(
        protocols.PublishedDataError,
        match="no published list 'published:x/y'; known: published:fixmatch/split1",
    ):
        protocols.get("published:x/y")
    assert protocols.exists("published:simclr/10percent")
    assert not protocols.exists("published:simclr/5percent")
    fixmatch = protocols.protocol("fixmatch")
    assert fixmatch.seeds == (1, 2, 3, 4, 5) and fixmatch.uses_seeds
    assert [k for _, k in fixmatch.sharding] == [f"fixmatch/split{s}" for s in range(1, 6)]
    assert not protocols.protocol("simclr").uses_seeds
    assert protocols.protocol("seeded").uses_seeds and not protocols.protocol("seeded").sharding
    every = {
        k
        for p in protocols.PROTOCOLS.values()
        for k in [k for _, k in p.sharding] + [k for _, k in p.name_lists]
    }
    assert every == set(protocols.LISTS)  # every shipped list is reachable by a protocol
    for p in protocols.PROTOCOLS.values():
        for label, _ in p.name_lists:
            assert re.match(protocols.LABEL_PATTERN, label)


def test_the_rules_a_protocol_sets():
    """The facts both the DAG's params and the plan step check against."""
    fixmatch = protocols.protocol("fixmatch")
    assert fixmatch.unpublished([7, 2, 0]) == [7, 0]
    assert protocols.protocol("seeded").unpublished([7]) == []  # any seed is drawn
    assert fixmatch.published_files([3]) == {3: "published:fixmatch/split3"}
    assert (fixmatch.fraction, fixmatch.sampling) == ("0.1", "stratified")
    assert protocols.protocol("seeded").fraction is None
    assert protocols.is_label("my_subset2") and protocols.is_label("simclr")
    for bad in ("3", "Mine", "a.b", "", "x" * 33, None, 3):
        assert not protocols.is_label(bad), bad


def test_cli_lists_and_exports(tmp_path):
    out = run_module("beam_jobs.planning.protocols")
    assert out.returncode == 0, out.stderr
    assert "fixmatch" in out.stdout and "published:simclr/1percent" in out.stdout
    out = run_module("beam_jobs.planning.protocols", f"--export={tmp_path}")
    assert out.returncode == 0, out.stderr
    for entry in protocols.LISTS.values():
        path = tmp_path / entry.key.split("/")[0] / entry.file_name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_tests_read_the_shipped_copies_not_an_outside_folder():
    # support.common.PUBLISHED is this package's data, exported and checked.
    assert Path(PUBLISHED).name.startswith("ssl-splits-published-")
    for entry in protocols.LISTS.values():
        exported = PUBLISHED / entry.key.split("/")[0] / entry.file_name
        assert exported.read_bytes() == protocols.read_bytes(entry.ref)
    # Nothing the project tracks names the outside folder the lists came from.
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = "shared" + "/reference"
    for name in tracked:
        if name.endswith((".py", ".md", ".toml", ".cfg", ".yaml", ".yml", ".sh", "Makefile")):
            assert outside not in (ROOT / name).read_text(errors="replace"), name
