"""Running the benchmark's jobs: the product's stages, the seed reference, the raw copies.

``Bench.run_dataset`` runs, for one dataset (made by ``beam_jobs.source.synthetic``,
cached under ``{work_dir}/data``), each step in turn on the same data and
runner (DirectRunner): the product's ``validate`` and ``plan``; its builds and
the seed reference's (``benchmarks.seed_reference``), alternating split by
split so that load changes on a shared machine hit both alike (the seed's 10%
splits within ``--seed_budget_minutes``, the rest extrapolated); the
validation copy (the seed's is ``cp validation-*``, as in its shell script);
an strace of a 10% split's reads (measured read amplification, untimed); the
product's builds N at a time, as the DAG runs them; ``verify`` (exact, from
metadata); the physical bound (``cat``/``cp`` of the source); the DAG end to
end (``benchmarks.dag``); the outputs of the product and the seed compared
shard by shard; py-spy profiles. Every job is one row of ``Bench.jobs``: its
wall time, CPU time and memory over its whole process tree
(``benchmarks.measure``) and its own counts (records, bytes read, written).

Bytecode: this environment sets ``PYTHONDONTWRITEBYTECODE=1`` and the
virtualenv holds no ``.pyc`` files, so every Python process would compile
Beam (and TensorFlow) from source: seconds per process, for the product and
the seed alike. Users' installs (pip, the Docker image) have bytecode, so the
jobs here run with a bytecode cache under ``{work_dir}/pycache``
(``PYTHONPYCACHEPREFIX``), warmed before timing; ``--no-bytecode-cache``
measures the environment as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import compare, dag, datasets, iotrace, pyspy, timeline
from benchmarks.measure import MB, run_measured
from benchmarks.report import fmt

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

Plan = dict[
    str, Any
]  # one line of the plan CLI's output: split, num_examples, num_shards, sha256, uri


class JobFailed(RuntimeError):
    pass


def _tail(path: str, n: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _dir_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def _split_kind(split: str) -> str:
    if split == "train":
        return "reshuffle"
    if split == "validation":
        return "validation"
    return "10%"


def _stats(out: Path, split: str) -> dict[str, Any]:
    """The build's own counts of ``split`` under the output folder ``out``."""
    return json.loads((out / "_work" / "stats" / f"{split}.json").read_text())


def build_argv(plan: Plan, catalog: Path, out: Path | str) -> list[str]:
    """The product's build of one planned split, as users run it."""
    return [
        PY,
        "-m",
        "beam_jobs.building.build",
        f"--split={plan['split']}",
        f"--plan_uri={plan['uri']}",
        f"--catalog_dir={catalog}",
        f"--output_uri={out}",
    ]


def seed_argv(src: Path, plan: Plan, prefix: Path, workers: list[str]) -> list[str]:
    """The seed reference's job for one split, from the same plan file."""
    return [
        PY,
        "-m",
        "benchmarks.seed_reference",
        f"--input_dir={src}",
        f"--sharding_file={plan['uri']}",
        f"--output_file_prefix={prefix}",
        f"--num_shards={plan['num_shards']}",
        *workers,
    ]


@dataclass(frozen=True)
class DatasetRun:
    """One dataset's source and the folders its run writes under ``runs``."""

    ds: datasets.Dataset
    info: dict[str, Any]  # datasets.ensure: path, records and shards of train and validation
    src: Path
    train_bytes: int
    val_bytes: int
    runs: Path
    workers: list[str]  # the seed reference's DirectRunner settings

    @property
    def name(self) -> str:
        return self.ds.name

    @property
    def product(self) -> Path:
        return self.runs / "product"

    @property
    def seed_out(self) -> Path:
        return self.runs / "seed"

    @property
    def raw(self) -> Path:
        return self.runs / "raw"

    @property
    def catalog(self) -> Path:
        return self.product / "_work" / "catalog"

    @property
    def plans_dir(self) -> Path:
        return self.product / "_work" / "plans"


class Bench:
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
        self.jobs: list[dict[str, Any]] = []
        self.comparisons: list[dict[str, Any]] = []
        self.data: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.profiles: dict[str, Any] = {}

    # ------------------------------------------------------------------ running jobs

    def set_cache(self, src: Path) -> None:
        """Before a timed job that reads the source: page-cache hot (read it all,
        untimed) or, with --cold, evicted (posix_fadvise DONTNEED on its files:
        only these files, nothing else on the machine)."""
        for f in sorted(src.glob("train-*")) + sorted(src.glob("validation-*")):
            fd = os.open(f, os.O_RDONLY)
            try:
                if self.args.cold:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                else:
                    while os.read(fd, 8 << 20):
                        pass
            finally:
                os.close(fd)

    def job(
        self,
        ds: str,
        side: str,
        stage: str,
        split: str | None,
        argv: list[str],
        *,
        cwd: Path | None = None,
        check: bool = True,
        source: Path | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Run one job measured; its row (appended to ``self.jobs``) for the caller to
        complete with the job's own counts (records, bytes read and written)."""
        if source is not None:
            self.set_cache(source)
        name = f"{side} {stage}" + (f" {split}" if split else "")
        log = self.logs / ds / (name.replace(" ", "_").replace("/", "_") + ".log")
        print(f"  [{ds}] {name} ...", end=" ", flush=True)
        m = run_measured(
            name,
            argv,
            cwd=str(cwd or self.work),
            env=self.env,
            log_path=log,
            timeout=self.args.job_timeout,
        )
        print(
            f"{m.wall_seconds:.1f} s, peak RSS {m.peak_rss_tree / MB:,.0f} MiB"
            + ("" if m.returncode == 0 else f", EXIT {m.returncode}"),
            flush=True,
        )
        if m.returncode != 0 and check:
            raise JobFailed(
                f"{ds}: {name} failed (exit {m.returncode}); log {log}:\n{_tail(m.log)}"
            )
        row = {
            "dataset": ds,
            "side": side,
            "stage": stage,
            "split": split,
            "kind": _split_kind(split) if split else None,
            **m.to_json(),
            **fields,
        }
        self.jobs.append(row)
        return row

    def warm_up(self) -> None:
        """Fill the bytecode cache (not timed)."""
        if self.args.no_bytecode_cache:
            return
        cache = Path(self.env["PYTHONPYCACHEPREFIX"])
        marker = cache / f".warm-{platform.python_version()}-{int(not self.args.skip_seed)}"
        if marker.exists():
            self.notes.append(f"bytecode cache {cache} already warm")
            return
        mods = [
            "beam_jobs.source.validate",
            "beam_jobs.planning.plans",
            "beam_jobs.building.build",
            "beam_jobs.verification.verify",
            "beam_jobs.source.synthetic",
            "apache_beam.runners.worker.sdk_worker_main",
            "apache_beam.runners.portability.fn_api_runner.fn_runner",
            "apache_beam.runners.direct.direct_runner",
            "apache_beam.io.tfrecordio",
            "apache_beam.runners.portability.prism_runner",
        ]
        if not self.args.skip_seed:
            mods.append("benchmarks.seed_reference")
        t0 = time.monotonic()
        code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
        subprocess.run(
            [PY, "-c", code, *mods],
            env=self.env,
            cwd=self.work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        self.notes.append(f"bytecode cache warmed in {time.monotonic() - t0:.1f} s (not timed)")
        cache.mkdir(parents=True, exist_ok=True)
        marker.touch()

    # ------------------------------------------------------------------ one dataset

    def run_dataset(self, ds: datasets.Dataset) -> None:
        """Every step on one dataset, in this order (see the module's docstring)."""
        print(f"== {ds.name}: {ds.about}", flush=True)
        r = self._prepare(ds)
        self._validate(r)
        plans = self._plan(r)
        seed_skipped = self._builds(r, plans)
        self._validation_copy(r)
        self._audit_reads(r, plans, seed_skipped)
        self._parallel_builds(r, plans)
        self._verify(r, plans)
        self._physical_bound(r)
        if not self.args.skip_dag:  # what the user waits for: the DAG end to end
            dag.run(self, ds, r.src, r.runs)
            dag.run_scheduler(self, ds, r.src, r.runs)
            if ds.role == "count":  # the team's stack (Postgres, REST): the COUNT dataset
                dag.run_team_stack(self, ds, r.src, r.runs)
        self._compare(r, plans, seed_skipped)
        if self.args.profile and ds.role == "count":
            self.profile(ds, r.src, r.catalog, plans)
        if not self.args.keep:
            shutil.rmtree(r.runs)

    def _prepare(self, ds: datasets.Dataset) -> DatasetRun:
        """The dataset (generated once, then cached), its figures in ``self.data``,
        and a fresh folder for its run."""
        info = datasets.ensure(
            ds, self.work / "data", self.env, self.logs / f"generate-{ds.name}.log"
        )
        src = Path(info["path"])
        train_bytes = _dir_bytes(src, "train-*")
        val_bytes = _dir_bytes(src, "validation-*")
        self.data[ds.name] = {
            "role": ds.role,
            "about": ds.about,
            "flags": list(ds.flags),
            "path": str(src),
            "train_records": info["train_records"],
            "train_shards": info["train_shards"],
            "validation_records": info["validation_records"],
            "validation_shards": info["validation_shards"],
            "train_bytes": train_bytes,
            "validation_bytes": val_bytes,
            "mean_record_bytes": round(train_bytes / max(info["train_records"], 1), 1),
            "generated_now": info["generated"],
            "generate_seconds": info["generate_seconds"],
        }
        runs = self.work / "runs" / ds.name
        if runs.exists():
            shutil.rmtree(runs)
        return DatasetRun(
            ds, info, src, train_bytes, val_bytes, runs, self._workers_for(train_bytes)
        )

    def _validate(self, r: DatasetRun) -> None:
        row = self.job(
            r.name,
            "product",
            "validate",
            None,
            source=r.src,
            argv=[
                PY,
                "-m",
                "beam_jobs.source.validate",
                f"--source_uri={r.src}",
                f"--catalog_dir={r.catalog}",
                f"--num_classes={r.ds.num_classes}",
            ],
        )
        report = json.loads((r.catalog / "report.json").read_text())
        row.update(
            records=report["total_records"],
            bytes_read=report["total_bytes"],
            bytes_written=_dir_bytes(r.catalog),
            mb_basis="read",
        )

    def _plan(self, r: DatasetRun) -> list[Plan]:
        """The five seeds + the reshuffle; the plans as the CLI prints them."""
        seeds = ",".join(str(s) for s in self.args.seeds)
        row = self.job(
            r.name,
            "product",
            "plan",
            None,
            argv=[
                PY,
                "-m",
                "beam_jobs.planning.plans",
                f"--catalog_dir={r.catalog}",
                f"--out_dir={r.plans_dir}",
                f"--seeds={seeds}",
                "--unsupervised",
            ],
        )
        plans: list[Plan] = []
        for line in Path(row["log"]).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 5 and parts[1].isdigit():
                plans.append(
                    {
                        "split": parts[0],
                        "num_examples": int(parts[1]),
                        "num_shards": int(parts[2]),
                        "sha256": parts[3],
                        "uri": parts[4],
                    }
                )
        if len(plans) != len(self.args.seeds) + 1:
            raise JobFailed(f"{r.name}: plan printed {len(plans)} plans:\n{_tail(row['log'])}")
        row.update(
            records=sum(p["num_examples"] for p in plans),
            bytes_read=(r.catalog / "catalog.parquet").stat().st_size,
            bytes_written=sum(Path(p["uri"]).stat().st_size for p in plans),
            mb_basis="written",
        )
        return plans

    def _builds(self, r: DatasetRun, plans: list[Plan]) -> list[str]:
        """The product's and the seed's builds, alternating split by split (a 10%
        split, the reshuffle, the other 10% splits). The seed's 10% splits that
        would exceed --seed_budget_minutes are skipped, then extrapolated; returned."""
        supervised = [p for p in plans if p["split"] != "train"]
        order = supervised[:1] + [p for p in plans if p["split"] == "train"] + supervised[1:]
        seed_spent = 0.0
        seed_budget = self.args.seed_budget_minutes * 60
        seed_skipped: list[str] = []
        run_seed_10: list[float] = []
        for plan in order:
            split = plan["split"]
            self._product_build(r, plan)
            if self.args.skip_seed:
                continue
            if split != "train" and run_seed_10:
                mean10 = sum(run_seed_10) / len(run_seed_10)
                left = sum(1 for p in order[order.index(plan) :] if p["split"] != "train")
                if seed_spent + mean10 * left > seed_budget:
                    seed_skipped.append(split)
                    continue
            wall = self._seed_build(r, plan)
            seed_spent += wall
            if split != "train":
                run_seed_10.append(wall)
        if seed_skipped:
            self._extrapolate_seed(r.name, seed_skipped)
        return seed_skipped

    def _product_build(self, r: DatasetRun, plan: Plan) -> None:
        split = plan["split"]
        row = self.job(
            r.name,
            "product",
            "build",
            split,
            source=r.src,
            argv=build_argv(plan, r.catalog, r.product),
        )
        stats = _stats(r.product, split)
        row.update(
            records=stats["num_examples"],
            bytes_read=stats["bytes_read"],
            bytes_written=stats["num_bytes"],
            mb_basis="written",
            shards=stats["num_shards"],
            phases=timeline.build_phases(row["log"], row["wall_seconds"]),
        )

    def _seed_build(self, r: DatasetRun, plan: Plan) -> float:
        """The seed reference's build of the same split; its wall time."""
        split = plan["split"]
        row = self.job(
            r.name,
            "seed",
            "build",
            split,
            source=r.src,
            argv=seed_argv(r.src, plan, r.seed_out / split, r.workers),
        )
        written = sum(p.stat().st_size for p in compare.shard_files(r.seed_out, split))
        row.update(
            records=plan["num_examples"],
            bytes_read=r.train_bytes,
            bytes_written=written,
            mb_basis="written",
            shards=plan["num_shards"],
        )
        return row["wall_seconds"]

    def _validation_copy(self, r: DatasetRun) -> None:
        """The product's ``build --copy_from``; the seed's ``cp validation-*``."""
        if not r.info["validation_shards"]:
            return
        row = self.job(
            r.name,
            "product",
            "copy",
            "validation",
            source=r.src,
            argv=[
                PY,
                "-m",
                "beam_jobs.building.build",
                "--split=validation",
                f"--copy_from={r.src}",
                f"--output_uri={r.product}",
            ],
        )
        stats = _stats(r.product, "validation")
        row.update(
            records=stats["num_examples"],
            bytes_read=stats["bytes_read"],
            bytes_written=stats["num_bytes"],
            mb_basis="written",
        )
        if not self.args.skip_seed:
            r.seed_out.mkdir(parents=True, exist_ok=True)
            row = self.job(
                r.name,
                "seed",
                "copy",
                "validation",
                source=r.src,
                argv=["sh", "-c", f"cp {r.src}/validation-* {r.seed_out}/"],
            )
            row.update(
                records=r.info["validation_records"],
                bytes_read=r.val_bytes,
                bytes_written=r.val_bytes,
                mb_basis="written",
            )

    def _audit_reads(self, r: DatasetRun, plans: list[Plan], seed_skipped: list[str]) -> None:
        """Measured read amplification: strace the reads of the source (untimed)."""
        if self.args.no_audit or not iotrace.available():
            return
        ten = next(p for p in plans if p["split"] != "train")
        todo = [("product", ten)]
        if r.ds.role != "count":  # 1.28M traced reads would take minutes
            todo += [("product", next(p for p in plans if p["split"] == "train")), ("seed", ten)]
        for side, plan in todo:
            if side == "seed" and (self.args.skip_seed or plan["split"] in seed_skipped):
                continue
            out = r.runs / f"audit-{side}"
            argv = (
                build_argv(plan, r.catalog, out)
                if side == "product"
                else seed_argv(r.src, plan, out / plan["split"], r.workers)
            )
            self.audit(r.name, side, plan["split"], argv, r.src)
            shutil.rmtree(out, ignore_errors=True)

    def _parallel_builds(self, r: DatasetRun, plans: list[Plan]) -> None:
        """The product's builds as the DAG schedules them: N at a time (benchmarks.batch)."""
        n = self.args.parallel_builds
        if n <= 1:
            return
        par = r.runs / "product-parallel"
        cmds = [build_argv(p, r.catalog, par) for p in plans]
        if r.info["validation_shards"]:
            cmds.append(
                [
                    PY,
                    "-m",
                    "beam_jobs.building.build",
                    "--split=validation",
                    f"--copy_from={r.src}",
                    f"--output_uri={par}",
                ]
            )
        spec = r.runs / "parallel-builds.json"
        spec.write_text(json.dumps(cmds))
        row = self.job(
            r.name,
            "product",
            f"builds, {n} at a time",
            None,
            [PY, "-m", "benchmarks.batch", str(n), str(spec)],
            source=r.src,
        )
        stats = [json.loads(f.read_text()) for f in (par / "_work" / "stats").glob("*.json")]
        row.update(
            records=sum(p["num_examples"] for p in plans)
            + (r.info["validation_records"] if r.info["validation_shards"] else 0),
            bytes_read=sum(s["bytes_read"] for s in stats),
            bytes_written=sum(s["num_bytes"] for s in stats),
            mb_basis="written",
        )
        shutil.rmtree(par)

    def _verify(self, r: DatasetRun, plans: list[Plan]) -> None:
        """Exact verification from metadata, as the DAG does by default."""
        if self.args.skip_verify:
            return
        for plan in plans:
            split = plan["split"]
            row = self.job(
                r.name,
                "product",
                "verify",
                split,
                [
                    PY,
                    "-m",
                    "beam_jobs.verification.verify",
                    f"--split={split}",
                    f"--output_uri={r.product}",
                    f"--plan_uri={plan['uri']}",
                    f"--catalog_dir={r.catalog}",
                ],
            )
            report = json.loads((r.product / "_work" / "verify" / f"{split}.json").read_text())
            row.update(
                records=report["num_examples"],
                bytes_read=report["bytes_read"],
                bytes_written=0,
                mb_basis="read",
            )
        if r.info["validation_shards"]:
            row = self.job(
                r.name,
                "product",
                "verify",
                "validation",
                [
                    PY,
                    "-m",
                    "beam_jobs.verification.verify",
                    "--split=validation",
                    f"--output_uri={r.product}",
                    f"--copy_from={r.src}",
                ],
            )
            report = json.loads((r.product / "_work" / "verify" / "validation.json").read_text())
            row.update(
                records=r.info["validation_records"],
                bytes_read=report["bytes_read"],
                bytes_written=0,
                mb_basis="read",
            )

    def _physical_bound(self, r: DatasetRun) -> None:
        """``cat`` and ``cp`` of the source's bytes, and a copy that fsyncs each file."""
        src, raw, info = r.src, r.raw, r.info
        train_bytes, val_bytes = r.train_bytes, r.val_bytes
        raw.mkdir(parents=True, exist_ok=True)
        row = self.job(
            r.name,
            "raw",
            "cat train-* >/dev/null",
            None,
            ["sh", "-c", "cat train-* > /dev/null"],
            cwd=src,
            source=src,
        )
        row.update(
            records=info["train_records"], bytes_read=train_bytes, bytes_written=0, mb_basis="read"
        )
        row = self.job(
            r.name,
            "raw",
            "cp -r source",
            None,
            ["cp", "-r", str(src), str(raw / "all")],
            source=src,
        )
        row.update(
            records=info["train_records"] + info["validation_records"],
            bytes_read=train_bytes + val_bytes,
            bytes_written=train_bytes + val_bytes,
            mb_basis="written",
        )
        (raw / "train").mkdir()
        row = self.job(
            r.name,
            "raw",
            "cp train-*",
            None,
            ["sh", "-c", f"cp {src}/train-* {raw / 'train'}/"],
            source=src,
        )
        row.update(
            records=info["train_records"],
            bytes_read=train_bytes,
            bytes_written=train_bytes,
            mb_basis="written",
        )
        row = self.job(
            r.name,
            "raw",
            "copy train-* + fsync each",
            None,
            [PY, "-m", "benchmarks.rawcopy", str(src), str(raw / "train-fsync"), "train-*"],
            source=src,
        )
        row.update(
            records=info["train_records"],
            bytes_read=train_bytes,
            bytes_written=train_bytes,
            mb_basis="written",
        )
        shutil.rmtree(raw)

    def _compare(self, r: DatasetRun, plans: list[Plan], seed_skipped: list[str]) -> None:
        """The product's and the seed's outputs, shard by shard (counts; bytes)."""
        if self.args.skip_seed:
            return
        for plan in plans:
            if plan["split"] in seed_skipped:
                continue
            c = compare.compare_split(r.product, r.seed_out, plan["split"])
            self.comparisons.append({"dataset": r.name, **c})
            print(
                f"  [{r.name}] compare {plan['split']}: counts equal {c['counts_equal']}, "
                f"{c['records_byte_identical']:,}/{c['records_product']:,} records "
                f"byte-identical, bytes product {c['bytes_product']:,} seed "
                f"{c['bytes_seed']:,}",
                flush=True,
            )

    def audit(self, ds: str, side: str, split: str, argv: list[str], src: Path) -> None:
        print(f"  [{ds}] strace: {side} build {split} ...", end=" ", flush=True)
        self.set_cache(src)
        res = iotrace.trace(
            argv,
            str(src),
            cwd=str(self.work),
            env=self.env,
            log=self.logs / ds / f"strace-{side}-{split}.log",
        )
        row = next(
            (
                j
                for j in self.jobs
                if j["dataset"] == ds
                and j["side"] == side
                and j["stage"] == "build"
                and j["split"] == split
            ),
            None,
        )
        if res["returncode"] != 0 or row is None:
            print(f"failed (exit {res['returncode']})", flush=True)
            return
        row["source_bytes_read_strace"] = res["source_bytes_read"]
        row["source_read_calls_strace"] = res["read_calls"]
        amp = res["source_bytes_read"] / row["bytes_written"] if row.get("bytes_written") else None
        row["read_amplification_strace"] = amp
        print(
            f"{res['source_bytes_read'] / 1e6:,.1f} MB of source in {res['read_calls']:,} "
            f"reads: read amplification {fmt(amp, 3)}",
            flush=True,
        )

    def _workers_for(self, source_bytes: int) -> list[str]:
        """The seed reference gets the DirectRunner settings the product's CLIs
        choose for the same input size (beam_jobs.pipeline.make_options)."""
        from beam_jobs.pipeline import MULTIPROCESS_MIN_BYTES

        if source_bytes < MULTIPROCESS_MIN_BYTES:
            return ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
        n = max(1, min(os.cpu_count() or 1, 8))
        return [
            f"--direct_num_workers={n}",
            f"--direct_running_mode={'multi_processing' if n > 1 else 'in_memory'}",
        ]

    def _extrapolate_seed(self, ds: str, skipped: list[str]) -> None:
        ran = [
            j
            for j in self.jobs
            if j["dataset"] == ds
            and j["side"] == "seed"
            and j["stage"] == "build"
            and j["kind"] == "10%"
        ]
        for split in skipped:
            est = {
                k: sum(j[k] for j in ran) / len(ran)
                for k in ("wall_seconds", "cpu_seconds")
                if all(j.get(k) is not None for j in ran)
            }
            base = ran[0]
            self.jobs.append(
                {
                    **base,
                    "name": f"seed build {split}",
                    "split": split,
                    "extrapolated": True,
                    **est,
                    "log": None,
                }
            )
        msg = (
            f"{ds}: the seed reference ran {len(ran)} of {len(ran) + len(skipped)} 10% splits "
            f"(a full run would exceed --seed_budget_minutes={self.args.seed_budget_minutes}); "
            f"{', '.join(skipped)} are EXTRAPOLATED as the mean of those that ran"
        )
        self.notes.append(msg)
        print("  NOTE: " + msg, flush=True)

    # ------------------------------------------------------------------ profiling

    def profile(self, ds: datasets.Dataset, src: Path, catalog: Path, plans: list[Plan]) -> None:
        """py-spy the product's builds of the reshuffle and of a 10% split (and,
        for context, validate and plan: the other two stages that read the whole
        catalog or source), each on a fresh output folder."""
        out_dir = self.work / "profiles"
        scratch = self.work / "runs" / ds.name / "profiled"
        ten = next(p for p in plans if p["split"] != "train")
        train = next(p for p in plans if p["split"] == "train")
        runs = [
            (f"build {train['split']}", "reshuffle", build_argv(train, catalog, scratch)),
            (f"build {ten['split']}", "10%", build_argv(ten, catalog, scratch)),
            (
                "validate",
                None,
                [
                    PY,
                    "-m",
                    "beam_jobs.source.validate",
                    f"--source_uri={src}",
                    f"--catalog_dir={scratch / 'catalog'}",
                    f"--num_classes={ds.num_classes}",
                ],
            ),
            (
                "plan",
                None,
                [
                    PY,
                    "-m",
                    "beam_jobs.planning.plans",
                    f"--catalog_dir={catalog}",
                    f"--out_dir={scratch / 'plans'}",
                    "--seeds=" + ",".join(map(str, self.args.seeds)),
                    "--unsupervised",
                ],
            ),
        ]
        for what, kind, argv in runs:
            if scratch.exists():
                shutil.rmtree(scratch)
            raw = out_dir / f"{ds.name}-{what.replace(' ', '-')}.txt"
            self.set_cache(src)
            print(f"  [{ds.name}] py-spy: product {what} ...", end=" ", flush=True)
            t0 = time.monotonic()
            rc = pyspy.record(
                argv,
                raw,
                cwd=str(self.work),
                env=self.env,
                log=self.logs / ds.name / f"pyspy-{what.replace(' ', '-')}.log",
            )
            wall = time.monotonic() - t0
            print(f"{wall:.1f} s (exit {rc})", flush=True)
            if rc == 0 and raw.exists():
                s = pyspy.summarize(raw)
                s.update(wall_seconds_under_pyspy=round(wall, 1), raw=str(raw), kind=kind)
                self.profiles[f"{ds.name} {what}"] = s
        shutil.rmtree(scratch, ignore_errors=True)
