"""The build job: exact reproduction of a published FixMatch split, byte
identity with the source, determinism (reruns, PYTHONHASHSEED, worker count,
source order), plan checks before any output, gs:// and local storage,
staging and reuse (the job never writes a published name), validation copy,
stats, measured bytes read."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import apache_beam as beam
import google_crc32c
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from support.common import REFERENCE, run_module

from beam_jobs import storage
from beam_jobs.building import build as build_mod
from beam_jobs.building.build import BuildError, ShardTarget, WriteShard, build_table, finish
from beam_jobs.planning.algorithm import PlanError, default_num_shards, parse_plan_text
from beam_jobs.planning.plans import PlanRequest, make_plans, write_plans
from beam_jobs.source import validate
from beam_jobs.source.catalog import REPORT_FILE, SHARD_RE, read_catalog, shard_name, write_table
from beam_jobs.source.example_proto import parse_image_record
from beam_jobs.source.synthetic import Spec, generate
from beam_jobs.source.tfrecord import RecordError, Writer, iter_framed

LOCAL = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
SPLIT1 = REFERENCE / "files2shards_train_size128116_split1.txt"
SPLIT1_SHA = "d897658efd96e71ebf79042287a0975e6215f5b9e772a275e25aad050f554666"

# ~700 records in 30 source shards: a 10% split has 2 shards by the default rule.
SMALL = Spec(
    num_classes=12,
    min_per_class=20,
    max_per_class=60,
    train_shards=30,
    validation_shards=3,
    validation_per_class=4,
    image_size=2,
    image_pool=8,
    seed=21,
)
TINY = Spec(
    num_classes=4,
    min_per_class=8,
    max_per_class=16,
    train_shards=4,
    validation_shards=2,
    validation_per_class=3,
    image_size=2,
    image_pool=4,
    seed=8,
)


# --------------------------------------------------------------------------- helpers


def run_validate(source: str, catalog: str) -> dict:
    return validate.run([f"--source_uri={source}", f"--catalog_dir={catalog}", *LOCAL])


def run_build(split: str, plan_uri: str, catalog: str, output: str, *extra: str) -> dict:
    return build_mod.run(
        [
            f"--split={split}",
            f"--plan_uri={plan_uri}",
            f"--catalog_dir={catalog}",
            f"--output_uri={output}",
            *LOCAL,
            *extra,
        ]
    )


def plan_files(catalog: str, out_dir: str, **req) -> dict[str, dict]:
    """Plan files for a request: {split: summary}."""
    summaries = write_plans(make_plans(catalog, PlanRequest(**req)), out_dir)
    return {s.split: s.to_dict() for s in summaries}


def shard_files(folder: str, split: str) -> list[str]:
    """Files named ``{split}-SSSSS-of-NNNNN`` in a local folder or gs:// prefix."""
    out = []
    for f in storage.list_files(storage.join(folder, f"{split}-*")):
        m = SHARD_RE.match(storage.basename(f.path))
        if m and m.group("prefix") == split:
            out.append(f.path)
    return out


def staged_files(output: str, split: str) -> list[str]:
    """The shards a build of ``split`` into ``output`` staged (its stats say
    where), after checking that none has a published name: the build job
    never writes one."""
    assert shard_files(output, split) == [], "the build wrote a published name"
    stats = json.loads(storage.read_text(storage.join(output, "_work", "stats", f"{split}.json")))
    staged = [s["staged"] for s in stats["shards"]]
    assert staged == shard_files(stats["staging"], split)
    return staged


def expected_shards(catalog: str, plan_uri: str) -> tuple[dict[int, bytes], dict[int, list[str]]]:
    """What each output shard must hold: the planned records' framed source
    bytes (at the catalog's file/offset/length), and their names, in order."""
    cat = read_catalog(catalog, ["filename", "file", "offset", "length"]).to_pydict()
    where = {
        n: (f, o, ln)
        for n, f, o, ln in zip(cat["filename"], cat["file"], cat["offset"], cat["length"])
    }
    names, shards, _ = parse_plan_text(storage.read_text(plan_uri), plan_uri)
    sources: dict[str, bytes] = {}
    parts: dict[int, list[bytes]] = defaultdict(list)
    order: dict[int, list[str]] = defaultdict(list)
    for name, s in zip(names.tolist(), shards.tolist()):
        f, o, ln = where[name]
        if f not in sources:
            sources[f] = storage.read_bytes(f)
        parts[s].append(sources[f][o : o + ln])
        order[s].append(name)
    return {s: b"".join(p) for s, p in parts.items()}, dict(order)


def record_names(data: bytes) -> list[str]:
    out = []
    for item in iter_framed(io.BytesIO(data), "<shard>"):
        assert not isinstance(item, RecordError), item
        out.append(parse_image_record(item.data).filename)
    return out


def read_all(paths: list[str]) -> dict[str, bytes]:
    return {storage.basename(p): storage.read_bytes(p) for p in paths}


def rchar() -> int | None:
    """Bytes this process has read through read(2)/pread(2) so far (Linux)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass
class Built:
    root: Path
    source: str
    catalog: str
    plans: dict[str, dict]
    split: str  # the 10% split of seed 1
    ref_out: str
    ref_stats: dict

    @property
    def plan_uri(self) -> str:
        return self.plans[self.split]["plan_uri"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Built:
    """SMALL generated, validated, planned (seeds 1 and 2 at 10%, the reshuffle)
    and seed 1 built once as the reference output."""
    root = tmp_path_factory.mktemp("build_small")
    src, cat = str(root / "src"), str(root / "catalog")
    generate(SMALL, src, workers=1)
    run_validate(src, cat)
    plans = plan_files(cat, str(root / "plans"), seeds=(1, 2), unsupervised=True)
    split = next(s for s in plans if s.endswith(".1"))
    ref = str(root / "ref")
    stats = run_build(split, plans[split]["plan_uri"], cat, ref)
    return Built(root, src, cat, plans, split, ref, stats)


@pytest.fixture(scope="module")
def fixmatch(tmp_path_factory):
    """A synthetic source holding every name of FixMatch's split 1 (plus other
    records), validated, and split 1 built from the published file as is."""
    root = tmp_path_factory.mktemp("build_fixmatch")
    src, cat, out = str(root / "src"), str(root / "catalog"), str(root / "out")
    spec = Spec(
        names_from=(str(SPLIT1),),
        num_classes=1000,
        min_per_class=1,
        max_per_class=140,
        image_size=1,
        image_pool=8,
        train_shards=64,
        validation_shards=0,
        seed=3,
    )
    generate(spec, src, workers=2)
    run_validate(src, cat)
    stats = run_build("train128116.1", str(SPLIT1), cat, out)
    return {"root": root, "source": src, "catalog": cat, "out": out, "stats": stats}


# --------------------------------------------------------------------------- exact reproduction


@pytest.mark.xdist_group("build_fixmatch")  # one worker generates the big source
def test_reproduces_published_split_exactly(fixmatch):
    out, stats = fixmatch["out"], fixmatch["stats"]
    files = staged_files(out, "train128116.1")
    assert [storage.basename(f) for f in files] == [
        f"train128116.1-{s:05d}-of-00102" for s in range(102)
    ]
    assert sorted(os.listdir(out)) == ["_work"]
    assert stats["num_examples"] == 128_116 and stats["num_shards"] == 102
    assert stats["plan_sha256"] == SPLIT1_SHA
    assert [s["num_records"] for s in stats["shards"]] == [1257] * 4 + [1256] * 98
    # Position by position: output shard s, record i is the file's (s, i) line.
    published: dict[int, list[str]] = defaultdict(list)
    for line in SPLIT1.read_text().splitlines():
        name, s, i = line.split(",")
        assert int(i) == len(published[int(s)])  # the file is sorted by (shard, index)
        published[int(s)].append(name)
    expected, _ = expected_shards(fixmatch["catalog"], str(SPLIT1))
    for s, path in enumerate(files):
        data = Path(path).read_bytes()
        assert record_names(data) == published[s], f"shard {s}: names differ from the file"
        assert data == expected[s], f"shard {s}: bytes differ from the source records"


@pytest.mark.xdist_group("build_fixmatch")  # one worker generates the big source
def test_source_is_not_just_the_published_names(fixmatch):
    # The source holds more records than the split, so the build must select.
    report = json.loads(Path(fixmatch["catalog"], REPORT_FILE).read_text())
    assert report["total_records"] > 128_116 + 5000
    assert report["num_shards"] == 64


@pytest.mark.xdist_group("build_fixmatch")  # one worker generates the big source
def test_read_amplification_of_a_10_percent_split(fixmatch, tmp_path):
    cat = fixmatch["catalog"]
    plans = plan_files(cat, str(tmp_path / "plans"), seeds=(1,), unsupervised=False)
    ((split, summary),) = plans.items()
    before = rchar()
    stats = run_build(split, summary["plan_uri"], cat, str(tmp_path / "out"))
    after = rchar()
    planned = set(parse_plan_text(Path(summary["plan_uri"]).read_text(), "p")[0].tolist())
    table = read_catalog(cat, ["filename", "length"]).to_pydict()
    need = sum(ln for n, ln in zip(table["filename"], table["length"]) if n in planned)
    source_bytes = json.loads(Path(cat, REPORT_FILE).read_text())["total_bytes"]
    # The job reads exactly the planned records (ranged reads), no more: the
    # count is what its readers fetched (measured), and equals what it wrote.
    assert stats["bytes_read"] == need == stats["num_bytes"]
    line = (
        f"\n[read amplification] {split}: {stats['num_examples']:,} of "
        f"{len(table['filename']):,} records; job counter bytes_read/bytes_written = "
        f"{stats['bytes_read'] / stats['num_bytes']:.3f}"
    )
    if before is not None and after is not None:
        line += (
            f"; process rchar/bytes_written = {(after - before) / stats['num_bytes']:.3f} "
            f"(includes plan, catalog parquet, build table); a full pass would read "
            f"{source_bytes / stats['num_bytes']:.1f}x"
        )
        assert after - before < source_bytes / 2  # far from a pass over the source
    print(line)


# --------------------------------------------------------------------------- stats


def test_stats_json_per_shard(small):
    work_stats = Path(small.ref_out, "_work", "stats", f"{small.split}.json")
    stats = json.loads(work_stats.read_text())
    assert stats == {**small.ref_stats}
    files = staged_files(small.ref_out, small.split)
    assert [s["staged"] for s in stats["shards"]] == files
    assert [s["path"] for s in stats["shards"]] == [
        storage.join(small.ref_out, storage.basename(f)) for f in files
    ]
    n = small.plans[small.split]["num_examples"]
    default = default_num_shards(
        n,
        SMALL.train_shards,
        json.loads(Path(small.catalog, REPORT_FILE).read_text())["total_records"],
    )
    assert stats["num_shards"] == len(files) == small.plans[small.split]["num_shards"] == default
    assert default >= 2
    assert stats["num_examples"] == small.plans[small.split]["num_examples"]
    assert stats["plan_sha256"] == small.plans[small.split]["plan_sha256"]
    assert stats["plan_uri"] == small.plan_uri
    assert stats["shards_reused"] == 0
    lengths = small.plans[small.split]["shard_lengths"]
    for shard, path, n in zip(stats["shards"], files, lengths):
        data = Path(path).read_bytes()
        assert shard["num_records"] == len(record_names(data)) == n
        assert shard["num_bytes"] == len(data)
        assert shard["crc32c"] == f"{google_crc32c.value(data):08x}"
    assert Path(stats["file_pattern"]).parent == Path(small.ref_out)
    assert (
        sorted(str(p) for p in Path(stats["staging"]).glob(Path(stats["file_pattern"]).name))
        == files
    )
    assert stats["num_bytes"] == sum(s["num_bytes"] for s in stats["shards"])


def test_output_records_are_the_planned_source_records(small):
    expected, names = expected_shards(small.catalog, small.plan_uri)
    for s, path in enumerate(staged_files(small.ref_out, small.split)):
        data = Path(path).read_bytes()
        assert data == expected[s]
        assert record_names(data) == names[s]


# --------------------------------------------------------------------------- the transform


def test_write_shard_transform(small, tmp_path):
    split, plan_uri = small.split, small.plan_uri
    table, files, _ = build_table(plan_uri, small.catalog)
    table_uri = str(tmp_path / "records.parquet")
    write_table(table_uri, table)
    staging, out = str(tmp_path / "staging"), str(tmp_path / "out")
    expected, _ = expected_shards(small.catalog, plan_uri)
    S = len(expected)
    with BeamTestPipeline(options=PipelineOptions(LOCAL)) as p:
        stats = (
            p
            | beam.Create(list(range(S)))
            | beam.ParDo(WriteShard(table_uri, files, ShardTarget(split, S, out, staging, 1)))
            | beam.Map(
                lambda st: (
                    st["shard"],
                    st["num_records"],
                    st["num_bytes"],
                    st["crc32c"],
                    os.path.basename(st["staged"]),
                )
            )
        )
        assert_that(
            stats,
            equal_to(
                [
                    (
                        s,
                        len(record_names(b)),
                        len(b),
                        f"{google_crc32c.value(b):08x}",
                        shard_name(split, s, S),
                    )
                    for s, b in expected.items()
                ]
            ),
        )
    # Written to staging only, each with a sidecar; nothing under final names.
    for s, data in expected.items():
        assert Path(staging, shard_name(split, s, S)).read_bytes() == data
        assert Path(staging, f"shard-{s:05d}.json").exists()
    assert not os.path.exists(out)

    # Finishing checks the shards against the plan and writes the stats; it
    # renames nothing (publish_manifest does, once the split is verified).
    sidecars = [json.loads(Path(staging, f"shard-{s:05d}.json").read_text()) for s in range(S)]
    counts = [sc["num_records"] for sc in sidecars]
    kw = {
        "split": split,
        "num_shards": S,
        "output_uri": out,
        "staging": staging,
        "meta": {},
        "stats_path": str(tmp_path / "stats.json"),
    }
    with pytest.raises(BuildError, match=rf"staged shards \[1\].* are not 0\.\.{S - 1}"):
        finish(sidecars[1:], expected=counts, **kw)
    with pytest.raises(BuildError, match="record counts differ from the plan"):
        finish(sidecars, expected=[c + 1 for c in counts], **kw)
    assert not (tmp_path / "stats.json").exists()
    summary = finish(sidecars, expected=counts, **kw)
    assert not os.path.exists(out)
    assert [Path(s["staged"]).read_bytes() for s in summary["shards"]] == [
        expected[s] for s in range(S)
    ]
    assert summary["num_examples"] == sum(counts)
    assert json.loads((tmp_path / "stats.json").read_text())["shards"] == summary["shards"]


# --------------------------------------------------------------------------- determinism


def test_same_parameters_twice_give_identical_files(small, tmp_path):
    again = plan_files(small.catalog, str(tmp_path / "plans"), seeds=(1, 2), unsupervised=True)
    assert {s: v["plan_sha256"] for s, v in again.items()} == {
        s: v["plan_sha256"] for s, v in small.plans.items()
    }
    out = str(tmp_path / "out")
    run_build(small.split, again[small.split]["plan_uri"], small.catalog, out)
    assert read_all(staged_files(out, small.split)) == read_all(
        staged_files(small.ref_out, small.split)
    )


def test_pythonhashseed_does_not_matter(small, tmp_path):
    outputs = []
    for hashseed in ("0", "4242"):
        d = tmp_path / f"h{hashseed}"
        env = {"PYTHONHASHSEED": hashseed}
        r = run_module(
            "beam_jobs.planning.plans",
            f"--catalog_dir={small.catalog}",
            f"--out_dir={d / 'plans'}",
            "--seeds=1,2",
            "--unsupervised",
            env=env,
        )
        assert r.returncode == 0, r.stderr
        lines = [ln.split("\t") for ln in r.stdout.strip().splitlines()]
        by_split = {ln[0]: ln for ln in lines}
        assert set(by_split) == set(small.plans)
        for split, ln in by_split.items():
            assert ln[3] == small.plans[split]["plan_sha256"], split
        r = run_module(
            "beam_jobs.building.build",
            f"--split={small.split}",
            f"--plan_uri={by_split[small.split][4]}",
            f"--catalog_dir={small.catalog}",
            f"--output_uri={d / 'out'}",
            *LOCAL,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        outputs.append(read_all(staged_files(str(d / "out"), small.split)))
    ref = read_all(staged_files(small.ref_out, small.split))
    assert outputs[0] == outputs[1] == ref


def test_worker_count_does_not_matter(small, tmp_path):
    out = str(tmp_path / "out")
    build_mod.run(
        [
            f"--split={small.split}",
            f"--plan_uri={small.plan_uri}",
            f"--catalog_dir={small.catalog}",
            f"--output_uri={out}",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ]
    )
    assert read_all(staged_files(out, small.split)) == read_all(
        staged_files(small.ref_out, small.split)
    )


def test_source_order_does_not_matter(small, tmp_path):
    # The same records, dealt into the same number of source shards in another
    # order: every record's file and offset change, its name and bytes do not.
    records = []
    for f in sorted(Path(small.source).glob("train-*")):
        with open(f, "rb") as fh:
            records += [item for item in iter_framed(fh, str(f))]
    random.Random(5).shuffle(records)
    src = tmp_path / "src"
    n = SMALL.train_shards
    for s in range(n):
        with storage.open_write(str(src / shard_name("train", s, n))) as fh:
            w = Writer(fh)
            for item in records[s::n]:
                w.write(item.data)
    cat = str(tmp_path / "catalog")
    run_validate(str(src), cat)
    before = read_catalog(small.catalog, ["filename", "file", "offset"]).to_pydict()
    after = read_catalog(cat, ["filename", "file", "offset"]).to_pydict()

    def where(t):
        return {n: (Path(f).name, o) for n, f, o in zip(t["filename"], t["file"], t["offset"])}

    moved = sum(where(before)[k] != v for k, v in where(after).items())
    assert sorted(before["filename"]) == sorted(after["filename"])
    assert moved > 0.9 * len(after["filename"])
    plans = plan_files(cat, str(tmp_path / "plans"), seeds=(1, 2), unsupervised=True)
    assert {s: v["plan_sha256"] for s, v in plans.items()} == {
        s: v["plan_sha256"] for s, v in small.plans.items()
    }
    out = str(tmp_path / "out")
    run_build(small.split, plans[small.split]["plan_uri"], cat, out)
    assert read_all(staged_files(out, small.split)) == read_all(
        staged_files(small.ref_out, small.split)
    )


# --------------------------------------------------------------------------- plan problems


def test_name_missing_from_source_fails_before_any_output(small, tmp_path):
    lines = Path(small.plan_uri).read_text().splitlines()
    lines[7] = "n99999999_7.JPEG," + lines[7].split(",", 1)[1]
    plan = tmp_path / "plan.csv"
    plan.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = run_module(
        "beam_jobs.building.build",
        f"--split={small.split}",
        f"--plan_uri={plan}",
        f"--catalog_dir={small.catalog}",
        f"--output_uri={out}",
        *LOCAL,
    )
    assert r.returncode == 1, r.stderr
    assert f"1 of {len(lines)} names are not in the source catalog" in r.stderr
    shard, index = lines[7].split(",")[1:3]
    assert f"e.g. the names at shard {int(shard)} index {int(index)}" in r.stderr
    assert "n99999999" not in r.stderr, "by its place in the plan, never the file's text"
    assert "Traceback" not in r.stderr
    assert not list(out.glob(f"{small.split}-*"))
    assert not list(out.rglob(f"{small.split}-*"))  # no staged shards either
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_malformed_or_missing_plan_fails_before_any_output(small, tmp_path):
    lines = Path(small.plan_uri).read_text().splitlines()
    lines[3] = lines[3].replace(",", ";")
    plan = tmp_path / "plan.csv"
    plan.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        PlanError, match=r"line 4: expected 3 comma-separated fields \(filename,shard,index\)"
    ):
        run_build(small.split, str(plan), small.catalog, str(tmp_path / "out"))
    with pytest.raises(PlanError, match="plan file .*nope.csv does not exist"):
        run_build(small.split, str(tmp_path / "nope.csv"), small.catalog, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _own_source(small, tmp_path) -> tuple[Path, str, str]:
    """A copy of the small source, validated, and seed 1's plan on it:
    (source folder, catalog, plan uri), for tests that damage the source."""
    src = tmp_path / "src"
    shutil.copytree(small.source, src)
    cat = str(tmp_path / "catalog")
    run_validate(str(src), cat)
    plans = plan_files(cat, str(tmp_path / "plans"), seeds=(1,), unsupervised=False)
    return src, cat, plans[small.split]["plan_uri"]


def test_changed_source_fails_the_build(small, tmp_path):
    src, cat, plan_uri = _own_source(small, tmp_path)
    first = parse_plan_text(Path(plan_uri).read_text(), "p")[0][0]
    table = read_catalog(cat, ["filename", "file", "offset", "length"]).to_pydict()
    i = table["filename"].index(first)
    path, offset, length = table["file"][i], table["offset"][i], table["length"][i]
    # Flip one payload byte, keeping size and mtime: only the record CRCs can tell.
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset + length - 10)
        b = f.read(1)
        f.seek(offset + length - 10)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = tmp_path / "out"
    with pytest.raises(Exception, match="source changed since validation"):
        run_build(small.split, plan_uri, cat, str(out))
    assert not list(out.glob(f"{small.split}-*"))
    # A changed mtime is caught before the pipeline starts.
    os.utime(path)
    with pytest.raises(BuildError, match="changed since validation"):
        run_build(small.split, plan_uri, cat, str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_small_batches_give_the_same_files(small, tmp_path, monkeypatch):
    # Batches of one or a few records (and a record larger than the batch)
    # write the same bytes as one batch per shard.
    monkeypatch.setattr(build_mod, "BATCH_BYTES", 3000)
    out = str(tmp_path / "out")
    run_build(small.split, small.plans[small.split]["plan_uri"], small.catalog, out)
    assert read_all(staged_files(out, small.split)) == read_all(
        staged_files(small.ref_out, small.split)
    )


def test_batches_cover_every_row_once_within_the_limit():
    import numpy as np

    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 500):
        lengths = rng.integers(1, 400, n)
        runs = list(build_mod.batches(lengths, 1000))
        assert [lo for lo, _ in runs] == ([0] + [hi for _, hi in runs][:-1] if n else [])
        assert (runs[-1][1] if runs else 0) == n
        for lo, hi in runs:
            assert hi > lo
            assert hi - lo == 1 or lengths[lo:hi].sum() <= 1000
            if hi < n:  # greedy: the next row would not have fitted
                assert lengths[lo : hi + 1].sum() > 1000
    assert list(build_mod.batches(np.array([5000, 10, 5000]), 1000)) == [(0, 1), (1, 2), (2, 3)]


def test_range_reader_reads_many_and_bounds_open_files(tmp_path, monkeypatch):
    paths = []
    for i in range(6):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 100)
        paths.append(str(p))
    monkeypatch.setattr(storage.local, "_max_open_files", lambda: 4)
    with storage.RangeReader() as reader:
        got = reader.read_many(
            paths, [0, 5, 3, 5, 1, 2, 4], [0, 10, 99, 0, 50, 1, 7], [3, 2, 1, 100, 0, 4, 5]
        )
        assert got == [
            b"\x00" * 3,
            b"\x05" * 2,
            b"\x03",
            b"\x05" * 100,
            b"",
            b"\x02" * 4,
            b"\x04" * 5,
        ]
        (local,) = reader._sources.values()
        assert len(local._fds) <= 4
        # with threads (as on GCS): same results, in order, from one pool per reader
        assert (
            reader.read_many(
                paths,
                [0, 5, 3, 5, 1, 2, 4],
                [0, 10, 99, 0, 50, 1, 7],
                [3, 2, 1, 100, 0, 4, 5],
                threads=3,
            )
            == got
        )
        pool = reader._pool
        reader.read_many(paths, [1], [0], [1], threads=3)
        assert reader._pool is pool
        assert reader.read_many(paths, [], [], []) == []
        with pytest.raises(storage.StorageError, match=r"f2: short read at offset 98: wanted 5"):
            reader.read_many(paths, [1, 2], [0, 98], [1, 5])


def test_a_source_truncated_after_the_check_fails_with_its_name(small, tmp_path):
    src, cat, plan_uri = _own_source(small, tmp_path)
    victim = sorted(src.glob("train-*"))[0]
    os.truncate(victim, victim.stat().st_size // 2)
    out = tmp_path / "out"
    with pytest.raises(Exception, match=f"{victim.name}: short read"):
        run_build(small.split, plan_uri, cat, str(out), "--skip_source_check")
    assert not list(out.glob(f"{small.split}-*"))


# --------------------------------------------------------------------------- staging and reuse


def _fail_finish(stats, **kw):
    raise RuntimeError("killed before the stats were written")


def test_rerun_reuses_staged_shards(small, tmp_path, monkeypatch):
    split = next(s for s in small.plans if s.endswith(".2"))
    plan_uri = small.plans[split]["plan_uri"]
    S = small.plans[split]["num_shards"]
    out = tmp_path / "out"
    monkeypatch.setattr(build_mod, "finish", _fail_finish)
    with pytest.raises(Exception, match="killed"):
        run_build(split, plan_uri, small.catalog, str(out))
    monkeypatch.undo()
    # Every shard is staged; none has a published name; no stats say it is complete.
    assert len(list((out / "_work" / "staging").rglob(f"{split}-*"))) == S
    assert not list(out.glob(f"{split}-*"))
    assert not (out / "_work" / "stats" / f"{split}.json").exists()
    stats = run_build(split, plan_uri, small.catalog, str(out))
    assert stats["shards_reused"] == S
    assert stats["bytes_read"] == 0 == stats["bytes_written"]
    fresh = str(tmp_path / "fresh")
    run_build(split, plan_uri, small.catalog, fresh)
    assert read_all(staged_files(str(out), split)) == read_all(staged_files(fresh, split))


def test_a_new_build_drops_the_stats_of_the_last_one_and_other_stagings(
    small, tmp_path, monkeypatch
):
    """An earlier build's stats and staged shards of another plan must not
    outlive the start of a new build: if it dies, verify finds no stats
    (not the old ones), and staging does not grow with every plan tried."""
    split = small.split
    out = tmp_path / "out"
    other = plan_files(
        small.catalog, str(tmp_path / "p"), seeds=(1,), num_shards=5, unsupervised=False
    )[split]
    first = run_build(split, other["plan_uri"], small.catalog, str(out))
    assert Path(first["staging"]).is_dir()
    monkeypatch.setattr(build_mod, "finish", _fail_finish)
    with pytest.raises(Exception, match="killed"):
        run_build(split, small.plan_uri, small.catalog, str(out))
    assert not (out / "_work" / "stats" / f"{split}.json").exists()
    assert not Path(first["staging"]).exists()


def test_complete_rerun_rewrites_identical_bytes(small, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(small.ref_out, out)
    before = read_all(staged_files(out, small.split))
    stats = run_build(small.split, small.plan_uri, small.catalog, out)
    assert read_all(staged_files(out, small.split)) == before
    assert stats["num_examples"] == small.ref_stats["num_examples"]
    assert [s["crc32c"] for s in stats["shards"]] == [
        s["crc32c"] for s in small.ref_stats["shards"]
    ]


def test_staged_shards_of_an_older_source_are_not_reused(tmp_path, monkeypatch):
    # A build killed before promotion leaves staged shards; the source is then
    # replaced (same names, other bytes) and validated again into the same
    # catalog folder. The rerun must copy the new records, not reuse the old.
    src, cat, out = str(tmp_path / "src"), str(tmp_path / "catalog"), str(tmp_path / "out")
    generate(TINY, src, workers=1)
    run_validate(src, cat)
    plans = plan_files(
        cat, str(tmp_path / "plans"), seeds=(1,), fraction="0.5", num_shards=2, unsupervised=False
    )
    ((split, summary),) = plans.items()
    monkeypatch.setattr(build_mod, "finish", _fail_finish)
    with pytest.raises(Exception, match="killed"):
        run_build(split, summary["plan_uri"], cat, out)
    monkeypatch.undo()
    old, _ = expected_shards(cat, summary["plan_uri"])
    generate(replace(TINY, jpeg_quality=50), src, workers=1)
    run_validate(src, cat)
    new, _ = expected_shards(cat, summary["plan_uri"])
    assert new != old
    stats = run_build(split, summary["plan_uri"], cat, out)
    assert stats["shards_reused"] == 0
    assert [Path(f).read_bytes() for f in staged_files(out, split)] == [new[0], new[1]]


# --------------------------------------------------------------------------- validation copy


def test_validation_copy(small, tmp_path):
    out = str(tmp_path / "out")
    stats = build_mod.run(
        ["--split=validation", f"--copy_from={small.source}", f"--output_uri={out}", *LOCAL]
    )
    src_files = sorted(Path(small.source).glob("validation-*"))
    assert len(src_files) == SMALL.validation_shards
    out_files = staged_files(out, "validation")
    assert [storage.basename(f) for f in out_files] == [f.name for f in src_files]
    counts = []
    for s, o in zip(src_files, out_files):
        data = s.read_bytes()
        assert Path(o).read_bytes() == data
        counts.append(len(record_names(data)))
    assert [sh["num_records"] for sh in stats["shards"]] == counts
    assert stats["num_examples"] == sum(counts) == SMALL.num_classes * SMALL.validation_per_class
    assert [sh["crc32c"] for sh in stats["shards"]] == [
        f"{google_crc32c.value(f.read_bytes()):08x}" for f in src_files
    ]


def test_validation_copy_without_shards_fails(tmp_path):
    with pytest.raises(BuildError, match="nothing to copy"):
        build_mod.run(
            [
                "--split=validation",
                f"--copy_from={tmp_path}",
                f"--output_uri={tmp_path / 'out'}",
                *LOCAL,
            ]
        )


# --------------------------------------------------------------------------- gs://


@pytest.mark.gcs
def test_gcs_source_and_output(gcs_bucket, tmp_path):
    src, cat = f"{gcs_bucket}/imagenet", f"{gcs_bucket}/work/catalog"
    generate(TINY, src, workers=1)
    run_validate(src, cat)
    plans = plan_files(
        cat,
        f"{gcs_bucket}/work/plans",
        seeds=(1,),
        fraction="0.5",
        num_shards=3,
        unsupervised=False,
    )
    ((split, summary),) = plans.items()
    assert summary["plan_uri"].startswith("gs://")
    out = f"{gcs_bucket}/splits"
    stats = run_build(split, summary["plan_uri"], cat, out)
    objects = staged_files(out, split)
    assert objects == [f"{stats['staging']}/{shard_name(split, s, 3)}" for s in range(3)]
    expected, names = expected_shards(cat, summary["plan_uri"])
    for s, uri in enumerate(objects):
        data = storage.read_bytes(uri)
        assert data == expected[s]
        assert record_names(data) == names[s]
        assert (
            stats["shards"][s]["crc32c"]
            == storage.stat(uri).crc32c
            == f"{google_crc32c.value(data):08x}"
        )
    assert storage.exists(f"{out}/_work/stats/{split}.json")
    # Measured, not assumed: the ranged GETs fetched exactly the planned records.
    assert stats["bytes_read"] == stats["num_bytes"]

    # The same records on local disk build the same bytes (the plan read from gs://).
    local_src, local_cat = str(tmp_path / "src"), str(tmp_path / "catalog")
    generate(TINY, local_src, workers=1)
    run_validate(local_src, local_cat)
    local_out = str(tmp_path / "out")
    run_build(split, summary["plan_uri"], local_cat, local_out)
    assert read_all(staged_files(local_out, split)) == read_all(objects)

    # The validation copy, gs:// to gs://.
    vstats = build_mod.run(
        ["--split=validation", f"--copy_from={src}", f"--output_uri={out}", *LOCAL]
    )
    copied = staged_files(out, "validation")
    assert [storage.basename(u) for u in copied] == [
        shard_name("validation", s, 2) for s in range(2)
    ]
    for u in copied:
        assert storage.read_bytes(u) == storage.read_bytes(f"{src}/{storage.basename(u)}")
    assert vstats["num_examples"] == TINY.num_classes * TINY.validation_per_class


def test_local_runner_mode_follows_the_estimated_work(monkeypatch):
    from apache_beam.options.pipeline_options import DirectOptions

    from beam_jobs.pipeline import make_options

    monkeypatch.setattr(os, "cpu_count", lambda: 2)

    def mode(*args, **kw):
        d = make_options(list(args), "j", **kw).view_as(DirectOptions)
        return d.direct_num_workers, d.direct_running_mode

    # BYTES' reshuffle (1.45 GB of 110 KB records): seconds of work, in-process
    bytes_s = build_mod.estimated_seconds(1_454_324_057, 13_000)
    # COUNT's (1.28M records of 1 KB): worth one worker process per core
    count_s = build_mod.estimated_seconds(1_227_665_480, 1_281_167)
    assert bytes_s < 8 < count_s
    assert mode(work_bytes=1_454_324_057, work_seconds=bytes_s) == (1, "in_memory")
    assert mode(work_bytes=1_227_665_480, work_seconds=count_s) == (2, "multi_processing")
    # without an estimate, by bytes; what the user says wins
    assert mode(work_bytes=10**6) == (1, "in_memory")
    assert mode(work_bytes=10**10) == (2, "multi_processing")
    assert mode("--direct_num_workers=1", work_seconds=count_s) == (1, "in_memory")


def test_local_jobs_run_on_the_fn_api_runner_with_their_worker_settings():
    """On the DirectRunner a job's pipeline is Beam's FnApiRunner with the
    options it was given (no attempt at the Prism runner, which downloads a
    binary when the machine is online and ignores the worker settings);
    other runners are Beam's choice."""
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    from beam_jobs.pipeline import make_options, new_pipeline

    for runner in ("DirectRunner", "direct"):
        p = new_pipeline(make_options([f"--runner={runner}"], "j", work_bytes=10**10))
        assert isinstance(p.runner, FnApiRunner)
        assert p.options.get_all_options()["direct_running_mode"] == "multi_processing"
    other = new_pipeline(make_options(["--runner=BundleBasedDirectRunner"], "j"))
    assert not isinstance(other.runner, FnApiRunner)
    # and it runs: a tiny pipeline end to end on that runner
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    p = new_pipeline(make_options(["--runner=DirectRunner"], "j", work_bytes=1))
    assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    p.run().wait_until_finish()


def test_bytes_read_is_what_the_readers_fetched(small, tmp_path, monkeypatch):
    """Measured, not derived from the output: a reader that fetches every
    record twice makes the build report twice the bytes it wrote."""
    real = storage.local.LocalRanges.read_batch

    def twice(self, *args):
        real(self, *args)
        return real(self, *args)

    monkeypatch.setattr(storage.local.LocalRanges, "read_batch", twice)
    stats = run_build(small.split, small.plan_uri, small.catalog, str(tmp_path / "out"))
    assert stats["bytes_read"] == 2 * stats["num_bytes"] == 2 * stats["bytes_written"]
    assert read_all(staged_files(str(tmp_path / "out"), small.split)) == read_all(
        staged_files(small.ref_out, small.split)
    )


def test_stage_split_transform(small, tmp_path):
    """The build's graph on its own, as Beam tests do: shard numbers in, the
    split's stats out (one element), every shard staged as planned."""
    from beam_jobs.building.build import StageSplit

    split, plan_uri = small.split, small.plan_uri
    table, files, sha = build_table(plan_uri, small.catalog)
    table_uri = str(tmp_path / "records.parquet")
    write_table(table_uri, table)
    staging, out = str(tmp_path / "staging"), str(tmp_path / "out")
    expected, names = expected_shards(small.catalog, plan_uri)
    S = len(expected)
    stats_path = str(tmp_path / "stats.json")
    with BeamTestPipeline(options=PipelineOptions(LOCAL)) as p:
        stats = (
            p
            | beam.Create(list(range(S)))
            | StageSplit(
                WriteShard(table_uri, files, ShardTarget(split, S, out, staging, 1)),
                split=split,
                num_shards=S,
                output_uri=out,
                staging=staging,
                expected=[len(names[s]) for s in range(S)],
                meta={"plan_sha256": sha},
                stats_path=stats_path,
            )
            | beam.Map(
                lambda st: (
                    st["split"],
                    st["num_shards"],
                    st["num_examples"],
                    st["plan_sha256"],
                    [s["staged"] for s in st["shards"]],
                )
            )
        )
        assert_that(
            stats,
            equal_to(
                [
                    (
                        split,
                        S,
                        sum(len(n) for n in names.values()),
                        sha,
                        [os.path.join(staging, shard_name(split, s, S)) for s in range(S)],
                    )
                ]
            ),
        )
    assert [Path(staging, shard_name(split, s, S)).read_bytes() for s in range(S)] == [
        expected[s] for s in range(S)
    ]
    assert json.loads(Path(stats_path).read_text())["num_shards"] == S
    assert not os.path.exists(out)
