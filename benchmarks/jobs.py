"""The inner jobs on one dataset: the product's CLIs, the seed reference, a raw copy.

``Bench.run_dataset`` runs, on one dataset (made by the product's generator,
cached under ``{work_dir}/data``), each step on the same data and runner
(DirectRunner): the product's ``validate`` and ``plan`` (five seeds and the
reshuffle); its builds and the seed reference's (``benchmarks.seed``) from
the same plan files, alternating split by split so that load changes on a
shared machine hit both alike; the validation copy (the seed's is ``cp
validation-*``, as in its shell script); the product's builds N at a time, as
the DAG runs them; ``verify`` (exact, from metadata); ``cp -r`` of the source
and a copy that fsyncs each file (the physical bound); the DAG end to end
(``benchmarks.dag``); and the outputs of both compared shard by shard (record
counts). Every job is one row of ``Bench.jobs``: its ``benchmarks.measure``
figures and its own counts (records, bytes read and written).

Bytecode: the jobs run with a bytecode cache under ``{work_dir}/pycache``
(``PYTHONPYCACHEPREFIX``), warmed before timing, as users' installs have
bytecode; ``--no-bytecode-cache`` measures the environment as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import dag, datasets, product
from benchmarks.measure import MIB, run_measured

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
Plan = dict[str, Any]  # a line the plan CLI prints: split, num_examples, num_shards, uri
Job = dict[str, Any]
FSYNC_COPY = (
    "import os, shutil, sys, pathlib\n"
    "src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]); dst.mkdir(parents=True)\n"
    "for f in sorted(src.glob('train-*')):\n"
    "    with open(f, 'rb') as i, open(dst / f.name, 'wb') as o:\n"
    "        shutil.copyfileobj(i, o, 1 << 20); o.flush(); os.fsync(o.fileno())\n"
)


class JobFailed(RuntimeError):
    pass


def split_kind(split: str | None) -> str | None:
    """``reshuffle``, ``validation`` or ``10%`` (``None`` for a job of no split)."""
    if split is None:
        return None
    return {"train": "reshuffle", "validation": "validation"}.get(split, "10%")


def dir_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def tfrecord_count(path: Path) -> int:
    """Records of a TFRecord file (its framing walked, not checked)."""
    buf, n, off = path.read_bytes(), 0, 0
    while off < len(buf):
        off += struct.unpack_from("<Q", buf, off)[0] + 16
        n += 1
    return n


@dataclass(frozen=True)
class DatasetRun:
    """One dataset's source and the folders its run writes under ``runs``."""

    ds: datasets.Dataset
    info: dict[str, Any]  # datasets.ensure: path, records and shards of train and validation
    src: Path
    runs: Path
    workers: list[str]  # the seed reference's DirectRunner settings

    @property
    def product(self) -> Path:
        return self.runs / "product"

    @property
    def seed_out(self) -> Path:
        return self.runs / "seed"

    @property
    def catalog(self) -> Path:
        return self.product / "_work" / "catalog"

    def build_argv(self, plan: Plan, out: Path) -> list[str]:
        """The product's build of one planned split, as users run it."""
        return [
            PY,
            "-m",
            product.BUILD,
            f"--split={plan['split']}",
            f"--plan_uri={plan['uri']}",
        ] + [
            f"--catalog_dir={self.catalog}",
            f"--output_uri={out}",
        ]

    def copy_argv(self, out: Path) -> list[str]:
        """The product's validation copy."""
        return [PY, "-m", product.BUILD, "--split=validation", f"--copy_from={self.src}"] + [
            f"--output_uri={out}"
        ]


class Bench:
    """The rows of one benchmark run (``jobs``, ``data``, ``comparisons``) and the jobs' env."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else [])
        )
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if not args.no_bytecode_cache:
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = str(
                Path(args.pycache_dir).resolve() if args.pycache_dir else self.work / "pycache"
            )
        self.jobs: list[Job] = []
        self.data: dict[str, dict[str, Any]] = {}
        self.comparisons: list[dict[str, Any]] = []

    def set_cache(self, src: Path) -> None:
        """Page-cache hot: read the source (untimed) before a timed job that reads it."""
        for f in sorted(src.glob("train-*")) + sorted(src.glob("validation-*")):
            with open(f, "rb") as fh:
                while fh.read(8 << 20):
                    pass

    def job(
        self, ds: str, side: str, stage: str, split: str | None, argv: list[str], **counts: Any
    ) -> Job:
        """Run one job measured (the source page-cache hot); its row, appended to ``jobs``,
        for the caller to complete with the job's own counts."""
        self.set_cache(Path(self.data[ds]["path"]))
        name = f"{side} {stage}" + (f" {split}" if split else "")
        log = self.logs / ds / (name.replace(" ", "_").replace("/", "_") + ".log")
        print(f"  [{ds}] {name} ...", end=" ", flush=True)
        m = run_measured(
            name, argv, cwd=self.work, env=self.env, log_path=log, timeout=self.args.job_timeout
        )
        print(f"{m.wall_seconds:.1f} s, peak RSS {m.peak_rss_tree / MIB:,.0f} MiB", flush=True)
        if m.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            raise JobFailed(f"{ds}: {name} failed (exit {m.returncode}); log {log}:\n{tail}")
        row = {"dataset": ds, "side": side, "stage": stage, "split": split, **m.to_json()}
        row.update(kind=split_kind(split), **counts)
        self.jobs.append(row)
        return row

    def warm_up(self) -> None:
        """Fill the bytecode cache (not timed)."""
        if self.args.no_bytecode_cache:
            return
        cache = Path(self.env["PYTHONPYCACHEPREFIX"])
        marker = cache / f".warm-{platform.python_version()}"
        if marker.exists():
            return
        mods = [*product.WARM_MODULES, "benchmarks.seed", "apache_beam.io.tfrecordio"]
        mods += ["apache_beam.runners.portability.fn_api_runner.fn_runner"]
        code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
        subprocess.run(
            [PY, "-c", code, *mods], env=self.env, cwd=self.work, capture_output=True, check=False
        )
        cache.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def run_dataset(self, ds: datasets.Dataset) -> None:
        """Every step on one dataset, in this order (see the module's docstring)."""
        print(f"== {ds.name}: {ds.about}", flush=True)
        r = self._prepare(ds)
        self._validate(r)
        plans = self._plan(r)
        self._builds(r, plans)
        self._validation_copy(r)
        self._parallel_builds(r, plans)
        self._verify(r, plans)
        self._raw_copies(r)
        if not self.args.skip_dag:
            dag.run_dags_test(self, ds, r.src, r.runs)
            dag.run_scheduler(self, ds, r.src, r.runs)
            if ds.role == "count" and not self.args.skip_team_stack:
                dag.run_team_stack(self, ds, r.src, r.runs)
        self._compare(r, plans)
        if not self.args.keep:
            shutil.rmtree(r.runs)

    def _prepare(self, ds: datasets.Dataset) -> DatasetRun:
        """The dataset (generated once, then cached), its figures, a fresh folder for its run."""
        log = self.logs / f"generate-{ds.name}.log"
        info = datasets.ensure(ds, self.work / "data", self.env, log)
        src = Path(info["path"])
        train_bytes = dir_bytes(src, "train-*")
        self.data[ds.name] = {
            "role": ds.role,
            "about": ds.about,
            "path": str(src),
            "num_classes": ds.num_classes,
            **{k: info[k] for k in ("train_records", "train_shards", "validation_records")},
            "validation_shards": info["validation_shards"],
            "train_bytes": train_bytes,
            "validation_bytes": dir_bytes(src, "validation-*"),
        }
        runs = self.work / "runs" / ds.name
        shutil.rmtree(runs, ignore_errors=True)
        return DatasetRun(ds, info, src, runs, self._seed_workers(train_bytes))

    def _seed_workers(self, source_bytes: int) -> list[str]:
        """The DirectRunner settings the product's CLIs choose for the same input size."""
        if source_bytes < product.multiprocess_min_bytes():
            return ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
        n = max(1, min(os.cpu_count() or 1, 8))
        mode = "multi_processing" if n > 1 else "in_memory"
        return [f"--direct_num_workers={n}", f"--direct_running_mode={mode}"]

    def _validate(self, r: DatasetRun) -> None:
        argv = [PY, "-m", product.VALIDATE, f"--source_uri={r.src}", f"--catalog_dir={r.catalog}"]
        row = self.job(
            r.ds.name, "product", "validate", None, argv + [f"--num_classes={r.ds.num_classes}"]
        )
        report = json.loads((r.catalog / "report.json").read_text())
        row.update(records=report["total_records"], bytes_read=report["total_bytes"])

    def _plan(self, r: DatasetRun) -> list[Plan]:
        """The seeds' 10% splits and the reshuffle; the plans as the CLI prints them."""
        seeds = ",".join(str(s) for s in self.args.seeds)
        argv = [PY, "-m", product.PLAN, f"--catalog_dir={r.catalog}", f"--seeds={seeds}"]
        argv += [f"--out_dir={r.product / '_work' / 'plans'}", "--unsupervised"]
        row = self.job(r.ds.name, "product", "plan", None, argv)
        plans: list[Plan] = []
        for line in Path(row["log"]).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 5 and parts[1].isdigit():
                plans.append(
                    {"split": parts[0], "num_examples": int(parts[1])}
                    | {"num_shards": int(parts[2]), "uri": parts[4]}
                )
        if len(plans) != len(self.args.seeds) + 1:
            raise JobFailed(f"{r.ds.name}: plan printed {len(plans)} plans; log {row['log']}")
        row.update(records=sum(p["num_examples"] for p in plans))
        return plans

    def _builds(self, r: DatasetRun, plans: list[Plan]) -> None:
        """The product's and the seed's builds, alternating split by split (a 10% split,
        the reshuffle, the other 10% splits)."""
        tens = [p for p in plans if p["split"] != "train"]
        for plan in tens[:1] + [p for p in plans if p["split"] == "train"] + tens[1:]:
            split = plan["split"]
            row = self.job(r.ds.name, "product", "build", split, r.build_argv(plan, r.product))
            stats = json.loads((r.product / "_work" / "stats" / f"{split}.json").read_text())
            row.update(
                records=stats["num_examples"],
                bytes_read=stats["bytes_read"],
                bytes_written=stats["num_bytes"],
            )
            if self.args.skip_seed:
                continue
            argv = [PY, "-m", "benchmarks.seed", f"--input_dir={r.src}"]
            argv += [f"--sharding_file={plan['uri']}", f"--output_file_prefix={r.seed_out / split}"]
            argv += [f"--num_shards={plan['num_shards']}", *r.workers]
            row = self.job(r.ds.name, "seed", "build", split, argv)
            written = sum(p.stat().st_size for p in r.seed_out.glob(f"{split}-*-of-*"))
            row.update(
                records=plan["num_examples"],
                bytes_read=self.data[r.ds.name]["train_bytes"],
                bytes_written=written,
            )

    def _validation_copy(self, r: DatasetRun) -> None:
        """The product's ``build --copy_from``; the seed's ``cp validation-*``."""
        if not r.info["validation_shards"]:
            return
        row = self.job(r.ds.name, "product", "copy", "validation", r.copy_argv(r.product))
        stats = json.loads((r.product / "_work" / "stats" / "validation.json").read_text())
        row.update(
            records=stats["num_examples"],
            bytes_read=stats["bytes_read"],
            bytes_written=stats["num_bytes"],
        )
        if not self.args.skip_seed:
            r.seed_out.mkdir(parents=True, exist_ok=True)
            argv = ["sh", "-c", f"cp {r.src}/validation-* {r.seed_out}/"]
            row = self.job(r.ds.name, "seed", "copy", "validation", argv)
            row.update(
                records=r.info["validation_records"],
                bytes_written=self.data[r.ds.name]["validation_bytes"],
            )

    def _parallel_builds(self, r: DatasetRun, plans: list[Plan]) -> None:
        """The product's builds and validation copy N at a time, as the DAG runs them."""
        n = self.args.parallel_builds
        if n <= 1:
            return
        out = r.runs / "product-parallel"
        cmds = [r.build_argv(p, out) for p in plans]
        cmds += [r.copy_argv(out)] if r.info["validation_shards"] else []
        spec = r.runs / "parallel-builds.json"
        spec.write_text(json.dumps(cmds))
        argv = [PY, "-m", "benchmarks.measure", os.devnull, "--parallel", str(n), str(spec)]
        row = self.job(r.ds.name, "product", f"builds, {n} at a time", None, argv)
        row.update(records=sum(p["num_examples"] for p in plans), parallel=n)
        shutil.rmtree(out)

    def _verify(self, r: DatasetRun, plans: list[Plan]) -> None:
        """Exact verification from metadata, as the DAG does by default."""
        if self.args.skip_verify:
            return
        todo = [
            (p["split"], [f"--plan_uri={p['uri']}", f"--catalog_dir={r.catalog}"]) for p in plans
        ]
        if r.info["validation_shards"]:
            todo.append(("validation", [f"--copy_from={r.src}"]))
        for split, flags in todo:
            argv = [PY, "-m", product.VERIFY, f"--split={split}", f"--output_uri={r.product}"]
            row = self.job(r.ds.name, "product", "verify", split, argv + flags)
            report = json.loads((r.product / "_work" / "verify" / f"{split}.json").read_text())
            row.update(records=report["num_examples"], bytes_read=report["bytes_read"])

    def _raw_copies(self, r: DatasetRun) -> None:
        """``cp -r`` of the source, and a copy of ``train-*`` that fsyncs each file as the
        product's writers do: the physical bound of the reshuffle."""
        raw, d = r.runs / "raw", self.data[r.ds.name]
        raw.mkdir(parents=True, exist_ok=True)
        row = self.job(
            r.ds.name, "raw", "cp -r source", None, ["cp", "-r", str(r.src), str(raw / "all")]
        )
        row.update(bytes_written=d["train_bytes"] + d["validation_bytes"])
        argv = [PY, "-c", FSYNC_COPY, str(r.src), str(raw / "fsync")]
        row = self.job(r.ds.name, "raw", "copy train-* + fsync each", None, argv)
        row.update(bytes_written=d["train_bytes"])
        shutil.rmtree(raw)

    def _compare(self, r: DatasetRun, plans: list[Plan]) -> None:
        """The product's and the seed's outputs: record counts, shard by shard."""
        if self.args.skip_seed:
            return
        for plan in plans:
            split = plan["split"]
            stats = json.loads((r.product / "_work" / "stats" / f"{split}.json").read_text())
            mine = [tfrecord_count(Path(s["staged"])) for s in stats["shards"]]
            theirs = [tfrecord_count(p) for p in sorted(r.seed_out.glob(f"{split}-*-of-*"))]
            c = {"dataset": r.ds.name, "split": split, "counts_equal": mine == theirs}
            c.update(records_product=sum(mine), records_seed=sum(theirs))
            self.comparisons.append(c)
            print(f"  [{r.ds.name}] compare {split}: record counts equal {mine == theirs}")
