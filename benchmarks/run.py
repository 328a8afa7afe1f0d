"""Benchmark: the product's stages against the seed's algorithm and a raw copy.

    python -m benchmarks.run                 # the full benchmark (COUNT + BYTES + half BYTES)
    python -m benchmarks.run --quick         # small sizes: a few minutes, a smoke test
    python -m benchmarks.run --only count    # or: --only bytes (BYTES and half BYTES)
    python -m benchmarks.run --skip-seed     # without the seed reference (much faster on COUNT)
    python -m benchmarks.run --only latency  # ranged reads on simulated GCS (benchmarks.latency;
                                             # without --only it runs after the datasets)
    python -m benchmarks.run --only gcs      # exact verification on GCS, COUNT (benchmarks.gcs_verify;
                                             # without --only it runs last)

For each dataset (made by ``beam_jobs.synthetic``, cached under
``{work_dir}/data``), in one run, on the same data and runner (DirectRunner):

* the product's stages as users run them, each its CLI in a subprocess:
  ``validate``, ``plan`` (five seeds + the reshuffle), ``build`` per split,
  the validation copy (``build --copy_from``), ``verify`` (exact, from metadata) per split;
* the seed's algorithm (``benchmarks.seed_reference``), one job per split,
  from the same plan files; its validation copy is ``cp validation-*`` as in
  the seed's shell script. Builds of the product and the seed alternate split
  by split, so that load changes on a shared machine hit both alike;
* the physical bound: ``cp -r`` of the source folder, ``cp`` of the
  ``train-*`` shards only (the bytes the reshuffle writes), and ``cat`` of the
  ``train-*`` shards to /dev/null.

Every job's wall time, CPU time and memory are measured over its whole process
tree (see ``benchmarks.measure``). Outputs of the product and the seed are
compared shard by shard (record counts; bytes). Results go to
``{work_dir}/results.json`` and a table to stdout and ``benchmarks/RESULTS.md``
(``{work_dir}/RESULTS.md`` with ``--quick``). With ``--profile`` (default in a
full run that includes COUNT), the product's builds of the reshuffle and of a
10% split on COUNT run again under py-spy.

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
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import compare, dag, datasets, iotrace, pyspy, timeline
from benchmarks.measure import MB, run_measured

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GIB = 1024 ** 3
SEEDS = (1, 2, 3, 4, 5)

# Targets (see benchmarks/RESULTS.md).
TARGET_SPEEDUP = 5.0
AIM_SPEEDUP = 10.0
TARGET_READ_AMP = 1.2
TARGET_RSS = 1 * GIB
TARGET_FLAT = 1.25  # peak RSS on BYTES / on half BYTES, per job: "flat" if at most this
TARGET_RAW = 3.0


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


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if not args.no_bytecode_cache:
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = str(
                Path(args.pycache_dir).resolve() if args.pycache_dir else self.work / "pycache")
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

    def job(self, ds: str, side: str, stage: str, split: str | None, argv: list[str],
            *, cwd: Path | None = None, check: bool = True, source: Path | None = None,
            **fields: Any) -> dict[str, Any]:
        if source is not None:
            self.set_cache(source)
        name = f"{side} {stage}" + (f" {split}" if split else "")
        log = self.logs / ds / (name.replace(" ", "_").replace("/", "_") + ".log")
        print(f"  [{ds}] {name} ...", end=" ", flush=True)
        m = run_measured(name, argv, cwd=str(cwd or self.work), env=self.env, log_path=log,
                         timeout=self.args.job_timeout)
        print(f"{m.wall_seconds:.1f} s, peak RSS {m.peak_rss_tree / MB:,.0f} MiB"
              + ("" if m.returncode == 0 else f", EXIT {m.returncode}"), flush=True)
        if m.returncode != 0 and check:
            raise JobFailed(f"{ds}: {name} failed (exit {m.returncode}); log {log}:\n"
                            f"{_tail(m.log)}")
        row = {"dataset": ds, "side": side, "stage": stage, "split": split,
               "kind": _split_kind(split) if split else None, **m.to_json(), **fields}
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
        mods = ["beam_jobs.validate", "beam_jobs.plan", "beam_jobs.build", "beam_jobs.verify",
                "beam_jobs.synthetic", "apache_beam.runners.worker.sdk_worker_main",
                "apache_beam.runners.portability.fn_api_runner.fn_runner",
                "apache_beam.runners.direct.direct_runner", "apache_beam.io.tfrecordio",
                "apache_beam.runners.portability.prism_runner"]
        if not self.args.skip_seed:
            mods.append("benchmarks.seed_reference")
        t0 = time.monotonic()
        code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
        subprocess.run([PY, "-c", code, *mods], env=self.env, cwd=self.work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        self.notes.append(f"bytecode cache warmed in {time.monotonic() - t0:.1f} s (not timed)")
        cache.mkdir(parents=True, exist_ok=True)
        marker.touch()

    # ------------------------------------------------------------------ one dataset

    def run_dataset(self, ds: datasets.Dataset) -> None:
        print(f"== {ds.name}: {ds.about}", flush=True)
        info = datasets.ensure(ds, self.work / "data", self.env, self.logs / f"generate-{ds.name}.log")
        src = Path(info["path"])
        train_bytes = _dir_bytes(src, "train-*")
        val_bytes = _dir_bytes(src, "validation-*")
        self.data[ds.name] = {
            "role": ds.role, "about": ds.about, "flags": list(ds.flags), "path": str(src),
            "train_records": info["train_records"], "train_shards": info["train_shards"],
            "validation_records": info["validation_records"],
            "validation_shards": info["validation_shards"], "train_bytes": train_bytes,
            "validation_bytes": val_bytes,
            "mean_record_bytes": round(train_bytes / max(info["train_records"], 1), 1),
            "generated_now": info["generated"], "generate_seconds": info["generate_seconds"],
        }
        runs = self.work / "runs" / ds.name
        if runs.exists():
            shutil.rmtree(runs)
        product, seed_out, raw = runs / "product", runs / "seed", runs / "raw"
        catalog, plans_dir = product / "_work" / "catalog", product / "_work" / "plans"
        workers = self._workers_for(train_bytes)

        # --- product: validate, plan
        report_path = catalog / "report.json"
        row = self.job(ds.name, "product", "validate", None, source=src, argv=[
            PY, "-m", "beam_jobs.validate", f"--source_uri={src}", f"--catalog_dir={catalog}",
            f"--num_classes={ds.num_classes}"])
        report = json.loads(report_path.read_text())
        row.update(records=report["total_records"], bytes_read=report["total_bytes"],
                   bytes_written=_dir_bytes(catalog), mb_basis="read")
        seeds = ",".join(str(s) for s in self.args.seeds)
        row = self.job(ds.name, "product", "plan", None, argv=[
            PY, "-m", "beam_jobs.plan", f"--catalog_dir={catalog}", f"--out_dir={plans_dir}",
            f"--seeds={seeds}", "--unsupervised"])
        plans = []
        for line in Path(row["log"]).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 5 and parts[1].isdigit():
                plans.append({"split": parts[0], "num_examples": int(parts[1]),
                              "num_shards": int(parts[2]), "sha256": parts[3], "uri": parts[4]})
        if len(plans) != len(self.args.seeds) + 1:
            raise JobFailed(f"{ds.name}: plan printed {len(plans)} plans:\n{_tail(row['log'])}")
        row.update(records=sum(p["num_examples"] for p in plans),
                   bytes_read=(catalog / "catalog.parquet").stat().st_size,
                   bytes_written=sum(Path(p["uri"]).stat().st_size for p in plans),
                   mb_basis="written")

        # --- builds: product and seed alternate, split by split
        supervised = [p for p in plans if p["split"] != "train"]
        reshuffle = [p for p in plans if p["split"] == "train"]
        order = supervised[:1] + reshuffle + supervised[1:]
        seed_spent = 0.0
        seed_budget = self.args.seed_budget_minutes * 60
        seed_skipped: list[str] = []
        run_seed_10 = []
        for plan in order:
            split = plan["split"]
            row = self.job(ds.name, "product", "build", split, source=src, argv=[
                PY, "-m", "beam_jobs.build", f"--split={split}", f"--plan_uri={plan['uri']}",
                f"--catalog_dir={catalog}", f"--output_uri={product}"])
            stats = json.loads((product / "_work" / "stats" / f"{split}.json").read_text())
            row.update(records=stats["num_examples"], bytes_read=stats["bytes_read"],
                       bytes_written=stats["num_bytes"], mb_basis="written",
                       shards=stats["num_shards"],
                       phases=timeline.build_phases(row["log"], row["wall_seconds"]))
            if self.args.skip_seed:
                continue
            if split != "train" and run_seed_10:
                mean10 = sum(run_seed_10) / len(run_seed_10)
                left = sum(1 for p in order[order.index(plan):] if p["split"] != "train")
                if seed_spent + mean10 * left > seed_budget:
                    seed_skipped.append(split)
                    continue
            row = self.job(ds.name, "seed", "build", split, source=src, argv=[
                PY, "-m", "benchmarks.seed_reference", f"--input_dir={src}",
                f"--sharding_file={plan['uri']}", f"--output_file_prefix={seed_out / split}",
                f"--num_shards={plan['num_shards']}", *workers])
            written = sum(p.stat().st_size for p in compare.shard_files(seed_out, split))
            row.update(records=plan["num_examples"], bytes_read=train_bytes,
                       bytes_written=written, mb_basis="written", shards=plan["num_shards"])
            seed_spent += row["wall_seconds"]
            if split != "train":
                run_seed_10.append(row["wall_seconds"])
        if seed_skipped:
            self._extrapolate_seed(ds.name, seed_skipped)

        # --- the validation copy
        if info["validation_shards"]:
            row = self.job(ds.name, "product", "copy", "validation", source=src, argv=[
                PY, "-m", "beam_jobs.build", "--split=validation", f"--copy_from={src}",
                f"--output_uri={product}"])
            stats = json.loads((product / "_work" / "stats" / "validation.json").read_text())
            row.update(records=stats["num_examples"], bytes_read=stats["bytes_read"],
                       bytes_written=stats["num_bytes"], mb_basis="written")
            if not self.args.skip_seed:
                seed_out.mkdir(parents=True, exist_ok=True)
                row = self.job(ds.name, "seed", "copy", "validation", source=src,
                               argv=["sh", "-c", f"cp {src}/validation-* {seed_out}/"])
                row.update(records=info["validation_records"], bytes_read=val_bytes,
                           bytes_written=val_bytes, mb_basis="written")

        # --- measured read amplification: strace the reads of the source (untimed)
        if not self.args.no_audit and iotrace.available():
            ten = next(p for p in plans if p["split"] != "train")
            todo = [("product", ten)]
            if ds.role != "count":  # 1.28M traced reads would take minutes
                todo += [("product", reshuffle[0]), ("seed", ten)]
            for side, plan in todo:
                if side == "seed" and (self.args.skip_seed or plan["split"] in seed_skipped):
                    continue
                out = runs / f"audit-{side}"
                argv = ([PY, "-m", "beam_jobs.build", f"--split={plan['split']}",
                         f"--plan_uri={plan['uri']}", f"--catalog_dir={catalog}",
                         f"--output_uri={out}"] if side == "product" else
                        [PY, "-m", "benchmarks.seed_reference", f"--input_dir={src}",
                         f"--sharding_file={plan['uri']}",
                         f"--output_file_prefix={out / plan['split']}",
                         f"--num_shards={plan['num_shards']}", *workers])
                self.audit(ds.name, side, plan["split"], argv, src)
                shutil.rmtree(out, ignore_errors=True)

        # --- the product's builds as the DAG schedules them: N at a time
        if self.args.parallel_builds > 1:
            par = runs / "product-parallel"
            cmds = [[PY, "-m", "beam_jobs.build", f"--split={p['split']}", f"--plan_uri={p['uri']}",
                     f"--catalog_dir={catalog}", f"--output_uri={par}"] for p in plans]
            if info["validation_shards"]:
                cmds.append([PY, "-m", "beam_jobs.build", "--split=validation",
                             f"--copy_from={src}", f"--output_uri={par}"])
            spec = runs / "parallel-builds.json"
            spec.write_text(json.dumps(cmds))
            row = self.job(ds.name, "product", f"builds, {self.args.parallel_builds} at a time",
                           None, [PY, "-m", "benchmarks.batch", str(self.args.parallel_builds),
                                  str(spec)], source=src)
            written = sum(json.loads(f.read_text())["num_bytes"]
                          for f in (par / "_work" / "stats").glob("*.json"))
            row.update(records=sum(p["num_examples"] for p in plans)
                       + (info["validation_records"] if info["validation_shards"] else 0),
                       bytes_read=sum(json.loads(f.read_text())["bytes_read"]
                                      for f in (par / "_work" / "stats").glob("*.json")),
                       bytes_written=written, mb_basis="written")
            shutil.rmtree(par)

        # --- verify (exact from metadata, as the DAG does by default)
        for plan in ([] if self.args.skip_verify else plans):
            split = plan["split"]
            row = self.job(ds.name, "product", "verify", split, [
                PY, "-m", "beam_jobs.verify", f"--split={split}", f"--output_uri={product}",
                f"--plan_uri={plan['uri']}", f"--catalog_dir={catalog}"])
            report = json.loads((product / "_work" / "verify" / f"{split}.json").read_text())
            row.update(records=report["num_examples"], bytes_read=report["bytes_read"],
                       bytes_written=0, mb_basis="read")
        if info["validation_shards"] and not self.args.skip_verify:
            row = self.job(ds.name, "product", "verify", "validation", [
                PY, "-m", "beam_jobs.verify", "--split=validation", f"--output_uri={product}",
                f"--copy_from={src}"])
            report = json.loads((product / "_work" / "verify" / "validation.json").read_text())
            row.update(records=info["validation_records"], bytes_read=report["bytes_read"],
                       bytes_written=0, mb_basis="read")

        # --- the physical bound
        raw.mkdir(parents=True, exist_ok=True)
        row = self.job(ds.name, "raw", "cat train-* >/dev/null", None,
                       ["sh", "-c", "cat train-* > /dev/null"], cwd=src, source=src)
        row.update(records=info["train_records"], bytes_read=train_bytes, bytes_written=0,
                   mb_basis="read")
        row = self.job(ds.name, "raw", "cp -r source", None, ["cp", "-r", str(src), str(raw / "all")],
                       source=src)
        row.update(records=info["train_records"] + info["validation_records"],
                   bytes_read=train_bytes + val_bytes, bytes_written=train_bytes + val_bytes,
                   mb_basis="written")
        (raw / "train").mkdir()
        row = self.job(ds.name, "raw", "cp train-*", None,
                       ["sh", "-c", f"cp {src}/train-* {raw / 'train'}/"], source=src)
        row.update(records=info["train_records"], bytes_read=train_bytes,
                   bytes_written=train_bytes, mb_basis="written")
        row = self.job(ds.name, "raw", "copy train-* + fsync each", None,
                       [PY, "-m", "benchmarks.rawcopy", str(src), str(raw / "train-fsync"),
                        "train-*"], source=src)
        row.update(records=info["train_records"], bytes_read=train_bytes,
                   bytes_written=train_bytes, mb_basis="written")
        shutil.rmtree(raw)

        # --- what the user waits for: the DAG end to end (benchmarks.dag)
        if not self.args.skip_dag:
            dag.run(self, ds, src, runs)

        # --- compare outputs
        if not self.args.skip_seed:
            for plan in plans:
                if plan["split"] in seed_skipped:
                    continue
                c = compare.compare_split(product, seed_out, plan["split"])
                self.comparisons.append({"dataset": ds.name, **c})
                print(f"  [{ds.name}] compare {plan['split']}: counts equal {c['counts_equal']}, "
                      f"{c['records_byte_identical']:,}/{c['records_product']:,} records "
                      f"byte-identical, bytes product {c['bytes_product']:,} seed "
                      f"{c['bytes_seed']:,}", flush=True)

        # --- profile (COUNT, full run)
        if self.args.profile and ds.role == "count":
            self.profile(ds, src, catalog, plans)
        if not self.args.keep:
            shutil.rmtree(runs)

    def audit(self, ds: str, side: str, split: str, argv: list[str], src: Path) -> None:
        print(f"  [{ds}] strace: {side} build {split} ...", end=" ", flush=True)
        self.set_cache(src)
        res = iotrace.trace(argv, str(src), cwd=str(self.work), env=self.env,
                            log=self.logs / ds / f"strace-{side}-{split}.log")
        row = next((j for j in self.jobs if j["dataset"] == ds and j["side"] == side
                    and j["stage"] == "build" and j["split"] == split), None)
        if res["returncode"] != 0 or row is None:
            print(f"failed (exit {res['returncode']})", flush=True)
            return
        row["source_bytes_read_strace"] = res["source_bytes_read"]
        row["source_read_calls_strace"] = res["read_calls"]
        amp = res["source_bytes_read"] / row["bytes_written"] if row.get("bytes_written") else None
        row["read_amplification_strace"] = amp
        print(f"{res['source_bytes_read'] / 1e6:,.1f} MB of source in {res['read_calls']:,} "
              f"reads: read amplification {_fmt(amp, 3)}", flush=True)

    def _workers_for(self, source_bytes: int) -> list[str]:
        """The seed reference gets the DirectRunner settings the product's CLIs
        choose for the same input size (beam_jobs.pipeline.make_options)."""
        from beam_jobs.pipeline import MULTIPROCESS_MIN_BYTES

        if source_bytes < MULTIPROCESS_MIN_BYTES:
            return ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
        n = max(1, min(os.cpu_count() or 1, 8))
        return [f"--direct_num_workers={n}",
                f"--direct_running_mode={'multi_processing' if n > 1 else 'in_memory'}"]

    def _extrapolate_seed(self, ds: str, skipped: list[str]) -> None:
        ran = [j for j in self.jobs if j["dataset"] == ds and j["side"] == "seed"
               and j["stage"] == "build" and j["kind"] == "10%"]
        for split in skipped:
            est = {k: sum(j[k] for j in ran) / len(ran) for k in ("wall_seconds", "cpu_seconds")
                   if all(j.get(k) is not None for j in ran)}
            base = ran[0]
            self.jobs.append({**base, "name": f"seed build {split}", "split": split,
                              "extrapolated": True, **est, "log": None})
        msg = (f"{ds}: the seed reference ran {len(ran)} of {len(ran) + len(skipped)} 10% splits "
               f"(a full run would exceed --seed_budget_minutes={self.args.seed_budget_minutes}); "
               f"{', '.join(skipped)} are EXTRAPOLATED as the mean of those that ran")
        self.notes.append(msg)
        print("  NOTE: " + msg, flush=True)

    # ------------------------------------------------------------------ profiling

    def profile(self, ds: datasets.Dataset, src: Path, catalog: Path, plans: list[dict]) -> None:
        """py-spy the product's builds of the reshuffle and of a 10% split (and,
        for context, validate and plan), each on a fresh output folder."""
        out_dir = self.work / "profiles"
        scratch = self.work / "runs" / ds.name / "profiled"
        ten = next(p for p in plans if p["split"] != "train")
        train = next(p for p in plans if p["split"] == "train")
        runs = [
            (f"build {train['split']}", "reshuffle", [
                PY, "-m", "beam_jobs.build", f"--split={train['split']}",
                f"--plan_uri={train['uri']}", f"--catalog_dir={catalog}", f"--output_uri={scratch}"]),
            (f"build {ten['split']}", "10%", [
                PY, "-m", "beam_jobs.build", f"--split={ten['split']}", f"--plan_uri={ten['uri']}",
                f"--catalog_dir={catalog}", f"--output_uri={scratch}"]),
        ]
        if True:  # context: the other two stages that read the whole catalog or source
            runs += [
                ("validate", None, [PY, "-m", "beam_jobs.validate", f"--source_uri={src}",
                                    f"--catalog_dir={scratch / 'catalog'}",
                                    f"--num_classes={ds.num_classes}"]),
                ("plan", None, [PY, "-m", "beam_jobs.plan", f"--catalog_dir={catalog}",
                                f"--out_dir={scratch / 'plans'}",
                                "--seeds=" + ",".join(map(str, self.args.seeds)), "--unsupervised"]),
            ]
        for what, kind, argv in runs:
            if scratch.exists():
                shutil.rmtree(scratch)
            raw = out_dir / f"{ds.name}-{what.replace(' ', '-')}.txt"
            self.set_cache(src)
            print(f"  [{ds.name}] py-spy: product {what} ...", end=" ", flush=True)
            t0 = time.monotonic()
            rc = pyspy.record(argv, raw, cwd=str(self.work), env=self.env,
                              log=self.logs / ds.name / f"pyspy-{what.replace(' ', '-')}.log")
            wall = time.monotonic() - t0
            print(f"{wall:.1f} s (exit {rc})", flush=True)
            if rc == 0 and raw.exists():
                s = pyspy.summarize(raw)
                s.update(wall_seconds_under_pyspy=round(wall, 1), raw=str(raw), kind=kind)
                self.profiles[f"{ds.name} {what}"] = s
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------- figures


def _rate(n: float | None, secs: float | None) -> float | None:
    if not n or not secs:
        return None
    return n / secs


def derive(bench: Bench) -> None:
    """Per-job rates, read amplification, ratios against the seed and the raw copy."""
    by = {}
    for j in bench.jobs:
        by[(j["dataset"], j["side"], j["stage"], j["split"])] = j
    for j in bench.jobs:
        rec, wall = j.get("records"), j.get("wall_seconds")
        j["records_per_s"] = _rate(rec, wall)
        basis = j.get("bytes_written") if j.get("mb_basis") == "written" else j.get("bytes_read")
        j["mb_per_s"] = _rate(basis / 1e6, wall) if basis else None
        if j["stage"] in ("build", "copy") and j.get("bytes_written"):
            j["read_amplification"] = j["bytes_read"] / j["bytes_written"]
            j["disk_read_amplification"] = (j["disk_read_bytes"] / j["bytes_written"]
                                            if j.get("disk_read_bytes") is not None else None)
        else:
            j["read_amplification"] = j["disk_read_amplification"] = None
        raw = by.get((j["dataset"], "raw", "cp -r source", None))
        if raw and j["stage"] in ("build", "copy") and j.get("bytes_written"):
            raw_rate = raw["bytes_written"] / raw["wall_seconds"]
            j["x_raw_copy"] = wall / (j["bytes_written"] / raw_rate)
        else:
            j["x_raw_copy"] = None
        if j["side"] == "product" and j["stage"] in ("build", "copy"):
            seed = by.get((j["dataset"], "seed", j["stage"], j["split"]))
            j["seed_speedup"] = (seed["wall_seconds"] / wall) if seed else None
            j["seed_speedup_cpu"] = (seed["cpu_seconds"] / j["cpu_seconds"]) \
                if seed and seed.get("cpu_seconds") and j.get("cpu_seconds") else None
        else:
            j["seed_speedup"] = j["seed_speedup_cpu"] = None


def _sum(jobs: list[dict], key: str) -> float | None:
    vals = [j.get(key) for j in jobs]
    return None if not vals or any(v is None for v in vals) else sum(vals)


def totals(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ds in bench.data:
        jobs = [j for j in bench.jobs if j["dataset"] == ds]
        pb = [j for j in jobs if j["side"] == "product" and j["stage"] == "build"]
        pc = [j for j in jobs if j["side"] == "product" and j["stage"] == "copy"]
        sb = [j for j in jobs if j["side"] == "seed" and j["stage"] == "build"]
        sc = [j for j in jobs if j["side"] == "seed" and j["stage"] == "copy"]
        pall = [j for j in jobs if j["side"] == "product" and not _is_batch(j)]
        d: dict[str, Any] = {
            "product_builds_plus_validation_copy": {k: _sum(pb + pc, k) for k in ("wall_seconds", "cpu_seconds")},
            "product_end_to_end": {k: _sum(pall, k) for k in ("wall_seconds", "cpu_seconds")},
            "product_end_to_end_without_verify": {
                k: _sum([j for j in pall if j["stage"] != "verify"], k)
                for k in ("wall_seconds", "cpu_seconds")},
            "seed_builds": {k: _sum(sb, k) for k in ("wall_seconds", "cpu_seconds")},
            "seed_builds_plus_validation_copy": {k: _sum(sb + sc, k) for k in ("wall_seconds", "cpu_seconds")},
            "seed_extrapolated_splits": [j["split"] for j in sb if j.get("extrapolated")],
        }
        par = [j for j in jobs if j["side"] == "product" and j["stage"].startswith("builds, ")]
        if par:
            d["product_builds_parallel"] = {"stage": par[0]["stage"],
                                            "wall_seconds": par[0]["wall_seconds"],
                                            "cpu_seconds": par[0]["cpu_seconds"],
                                            "peak_rss_tree": par[0]["peak_rss_tree"]}
            s_wall = d["seed_builds"]["wall_seconds"]
            d["speedup_builds_parallel_wall_seconds"] = \
                s_wall / par[0]["wall_seconds"] if s_wall and sb else None
        for key in ("wall_seconds", "cpu_seconds"):
            s, p = d["seed_builds"][key], d["product_builds_plus_validation_copy"][key]
            d[f"speedup_builds_{key}"] = s / p if s and p and sb else None
            e = d["product_end_to_end_without_verify"][key]
            d[f"speedup_end_to_end_without_verify_{key}"] = s / e if s and e and sb else None
            e = d["product_end_to_end"][key]
            d[f"speedup_end_to_end_{key}"] = s / e if s and e and sb else None
        out[ds] = d
    return out


def targets(bench: Bench, tot: dict[str, Any]) -> list[dict[str, Any]]:
    quick = bench.args.quick
    roles = {v["role"]: k for k, v in bench.data.items()}
    rows: list[dict[str, Any]] = []

    def add(target: str, value: Any, met: bool | None, detail: str) -> None:
        rows.append({"target": target, "value": value, "met": met, "detail": detail})

    count = roles.get("count")
    if count and not bench.args.skip_seed:
        t = tot[count]
        sp, spc = t["speedup_builds_wall_seconds"], t["speedup_builds_cpu_seconds"]
        extra = (" (seed splits " + ", ".join(t["seed_extrapolated_splits"]) + " extrapolated)") \
            if t["seed_extrapolated_splits"] else ""
        add(f"COUNT: six outputs + validation copy >= {TARGET_SPEEDUP:.0f}x faster than the seed's "
            f"six outputs (aim {AIM_SPEEDUP:.0f}x), wall",
            None if sp is None else round(sp, 2), None if sp is None else sp >= TARGET_SPEEDUP,
            f"product {t['product_builds_plus_validation_copy']['wall_seconds']:.0f} s vs seed "
            f"{t['seed_builds']['wall_seconds']:.0f} s; CPU-seconds ratio "
            f"{spc if spc is None else round(spc, 2)}; end to end incl. validate+plan "
            f"{_fmt(t['speedup_end_to_end_without_verify_wall_seconds'], 2)}x, "
            f"incl. verification too {_fmt(t['speedup_end_to_end_wall_seconds'], 2)}x{extra}")
        if t.get("product_builds_parallel"):
            pp = t["product_builds_parallel"]
            spp = t["speedup_builds_parallel_wall_seconds"]
            add(f"COUNT: the same, the product's builds run as the DAG runs them ({pp['stage']}), "
                f">= {TARGET_SPEEDUP:.0f}x (aim {AIM_SPEEDUP:.0f}x), wall",
                None if spp is None else round(spp, 2), None if spp is None else spp >= TARGET_SPEEDUP,
                f"product {pp['wall_seconds']:.0f} s (peak RSS of the concurrent builds "
                f"{pp['peak_rss_tree'] / MB:,.0f} MiB) vs seed {t['seed_builds']['wall_seconds']:.0f} s "
                "(one split at a time, as the seed's shell loop)")
    for ds in bench.data:
        tens = [j for j in bench.jobs if j["dataset"] == ds and j["side"] == "product"
                and j["stage"] == "build" and j["kind"] == "10%"]
        if not tens:
            continue
        worst = max(tens, key=lambda j: j["read_amplification"])
        seed = [j for j in bench.jobs if j["dataset"] == ds and j["side"] == "seed"
                and j["stage"] == "build" and j["kind"] == "10%" and not j.get("extrapolated")]
        seed_amp = max((j["read_amplification"] for j in seed), default=None)
        seed_traced = [j["read_amplification_strace"] for j in seed
                       if j.get("read_amplification_strace") is not None]
        disk = max((j.get("disk_read_amplification") or 0) for j in tens)
        traced = [j for j in tens if j.get("read_amplification_strace") is not None]
        if traced:
            t = traced[0]
            value = t["read_amplification_strace"]
            how = (f"measured with strace on {t['split']}: {t['source_bytes_read_strace']:,} bytes "
                   f"of source in {t['source_read_calls_strace']:,} reads for "
                   f"{t['bytes_written']:,} written; the job's own count: "
                   f"{worst['read_amplification']:.2f} (worst of {len(tens)})")
        else:
            value = worst["read_amplification"]
            how = f"the job's own count, worst of {len(tens)} splits ({worst['split']})"
        add(f"{ds}: read amplification of a 10% split <= {TARGET_READ_AMP}",
            round(value, 3), value <= TARGET_READ_AMP,
            f"{how}; seed reference: {_fmt(seed_amp, 2)}"
            + (f" (strace: {seed_traced[0]:.2f})" if seed_traced else "")
            + f"; from the disk (block device, readahead and 4 KiB pages included): {disk:.2f}"
            + ("" if bench.args.cold else " (page cache hot, so ~0)"))
    big, half = roles.get("bytes"), roles.get("bytes_half")
    if big:
        prod = [j for j in bench.jobs if j["dataset"] == big and j["side"] == "product"
                and not _is_batch(j)]
        worst = max(prod, key=lambda j: j["peak_rss_tree"])
        seed = [j for j in bench.jobs if j["dataset"] == big and j["side"] == "seed"
                and not j.get("extrapolated")]
        seed_worst = max(seed, key=lambda j: j["peak_rss_tree"]) if seed else None
        add(f"{big}: peak RSS (process tree) of every product job <= 1 GiB",
            f"{worst['peak_rss_tree'] / MB:,.0f} MiB", worst["peak_rss_tree"] <= TARGET_RSS,
            f"largest: {worst['name']}; seed reference's largest: "
            + (f"{seed_worst['peak_rss_tree'] / MB:,.0f} MiB ({seed_worst['name']})"
               if seed_worst else "n/a"))
        if half:
            ratios = []
            seed_ratios = []
            for j in bench.jobs:
                if j["dataset"] != big or j.get("extrapolated") or _is_batch(j):
                    continue
                h = next((k for k in bench.jobs if k["dataset"] == half and k["side"] == j["side"]
                          and k["stage"] == j["stage"] and _same_split(k, j)), None)
                if h is None or not h["peak_rss_tree"]:
                    continue
                r = (j["peak_rss_tree"] / h["peak_rss_tree"], j["name"])
                (ratios if j["side"] == "product" else seed_ratios if j["side"] == "seed"
                 else []).append(r)
            if ratios:
                w = max(ratios)
                sw = max(seed_ratios) if seed_ratios else None
                add(f"peak RSS flat from {half} to {big} (2x data): every product job's ratio "
                    f"<= {TARGET_FLAT}", round(w[0], 2), w[0] <= TARGET_FLAT,
                    f"largest growth: {w[1]}; seed reference's largest: "
                    + (f"{sw[0]:.2f}x ({sw[1]})" if sw else "n/a"))
        rs = next((j for j in bench.jobs if j["dataset"] == big and j["side"] == "product"
                   and j["stage"] == "build" and j["split"] == "train"), None)
        cp = next((j for j in bench.jobs if j["dataset"] == big and j["stage"] == "cp -r source"), None)
        cpt = next((j for j in bench.jobs if j["dataset"] == big and j["stage"] == "cp train-*"), None)
        cps = next((j for j in bench.jobs if j["dataset"] == big
                    and j["stage"] == "copy train-* + fsync each"), None)
        if rs and cp:
            r = rs["wall_seconds"] / cp["wall_seconds"]
            add(f"{big}: reshuffle within {TARGET_RAW:.0f}x of the raw copy (cp -r of the source)",
                round(r, 2), r <= TARGET_RAW,
                f"reshuffle {rs['wall_seconds']:.1f} s vs cp -r {cp['wall_seconds']:.1f} s; "
                + (f"vs cp of train-* only ({cpt['wall_seconds']:.1f} s): "
                   f"{rs['wall_seconds'] / cpt['wall_seconds']:.2f}x; " if cpt else "")
                + (f"vs a copy of train-* that fsyncs each file as the product does "
                   f"({cps['wall_seconds']:.1f} s): {rs['wall_seconds'] / cps['wall_seconds']:.2f}x"
                   if cps else "")
                + _steady_note(rs, cp))
    rows = dag_targets(bench) + rows
    if quick:
        for r in rows:
            r["detail"] = "QUICK sizes, not meaningful for the targets. " + r["detail"]
    return rows


TARGET_DAG = {"count": 5.0, "bytes": 3.0}  # first run vs the seed's six outputs
AIM_DAG = 10.0
TARGET_ADD_SEED_S = 15.0
TARGET_ADD_SEED_X = 3.0


def dag_targets(bench: Bench) -> list[dict[str, Any]]:
    """The end-to-end targets: the DAG against the seed, one more seed against a
    plain copy, the largest process of everything the product ran."""
    out: list[dict[str, Any]] = []
    rows = dag.rows(bench.jobs, bench.data)
    for r in rows:
        role = bench.data[r["dataset"]]["role"]
        where = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(
            r["task_seconds"].items(), key=lambda kv: -kv[1])[:4])
        if r["case"] == "first run" and role in TARGET_DAG and r["ratio"]:
            target = TARGET_DAG[role]
            out.append({"target": f"{r['dataset']}: the whole DAG (dags test, first run) >= "
                                  f"{target:.0f}x faster than the seed's six outputs"
                                  + (f" (aim {AIM_DAG:.0f}x)" if role == "count" else ""),
                        "value": round(r["ratio"], 2), "met": r["ratio"] >= target,
                        "detail": f"DAG {r['wall_seconds']:.0f} s (the run itself "
                                  f"{r['run_seconds'] or 0:.0f} s) vs seed "
                                  f"{r['reference_seconds']:.0f} s; largest tasks: {where}"})
        if r["case"] == "add one seed" and role == "count" and r["reference_seconds"]:
            x = r["wall_seconds"] / r["reference_seconds"]
            out.append({"target": f"{r['dataset']}: adding one seed <= {TARGET_ADD_SEED_S:.0f} s "
                                  f"and <= {TARGET_ADD_SEED_X:.0f}x a copy of its bytes + one "
                                  "Python start-up",
                        "value": f"{r['wall_seconds']:.1f} s, {x:.1f}x",
                        "met": r["wall_seconds"] <= TARGET_ADD_SEED_S and x <= TARGET_ADD_SEED_X,
                        "detail": f"{r['reference']} {r['reference_seconds']:.1f} s; "
                                  f"largest tasks: {where}"})
    for ds, info in bench.data.items():
        if info["role"] not in ("count", "bytes"):
            continue
        mine = [j for j in bench.jobs if j["dataset"] == ds and j["side"] in ("product", "dag")
                and j.get("max_rss_process")]
        if not mine:
            continue
        worst = max(mine, key=lambda j: j["max_rss_process"])
        kinds = worst.get("rss_by_process") or {}
        top = max(kinds.items(), key=lambda kv: kv[1]) if kinds else (worst["name"], 0)
        out.append({"target": f"{ds}: peak RSS of every process the product runs <= 1 GiB",
                    "value": f"{worst['max_rss_process'] / MB:,.0f} MiB",
                    "met": worst["max_rss_process"] <= TARGET_RSS,
                    "detail": f"largest in {worst['name']} ({top[0]}, sampled "
                              f"{top[1] / MB:,.0f} MiB)"})
    return out


def _is_batch(j: dict) -> bool:
    """The product's builds run N at a time: several jobs, not one."""
    return j["stage"].startswith("builds, ")


def _steady_note(build: dict, cp: dict) -> str:
    """The reshuffle's steady state against cp's rate, without the fixed costs."""
    ph = build.get("phases") or {}
    fixed = sum(ph.get(k, 0) for k in ("startup", "teardown", "other")) + \
        (ph.get("first_progress") or 0)
    rate = ph.get("steady_mb_per_s")
    out = f"; fixed costs (startup, worker start-up to first progress, teardown) {fixed:.1f} s"
    if rate:
        cp_rate = cp["bytes_written"] / 1e6 / cp["wall_seconds"]
        out += (f"; steady state {rate:,.0f} MB/s vs cp -r {cp_rate:,.0f} MB/s "
                f"({cp_rate / rate:.2f}x)")
    return out


def _same_split(a: dict, b: dict) -> bool:
    """Jobs of the same role on two datasets: the same split kind and seed."""
    if a["split"] == b["split"]:
        return True
    if a["split"] and b["split"] and a["kind"] == b["kind"] == "10%":
        return a["split"].rsplit(".", 1)[-1] == b["split"].rsplit(".", 1)[-1]
    return False


# ---------------------------------------------------------------------- output


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.1f}"


def job_table(bench: Bench) -> str:
    head = ("| dataset | job | wall s | CPU s | records | rec/s | MB/s | read MB | written MB | "
            "read amp | disk read MB | peak RSS tree MiB | max proc MiB | seed / product | "
            "x raw copy |")
    lines = [head, "|" + " --- |" * 2 + " ---: |" * 13]
    for j in bench.jobs:
        name = j["name"] + (" (extrapolated)" if j.get("extrapolated") else "")
        lines.append(
            f"| {j['dataset']} | {name} | {_fmt(j['wall_seconds'])} | {_fmt(j.get('cpu_seconds'))} | "
            f"{_fmt(j.get('records'))} | {_fmt(j.get('records_per_s'), 0)} | "
            f"{_fmt(j.get('mb_per_s'))} | {_mb(j.get('bytes_read'))} | "
            f"{_mb(j.get('bytes_written'))} | {_fmt(j.get('read_amplification'), 2)} | "
            f"{_mb(j.get('disk_read_bytes'))} | "
            f"{_fmt(j['peak_rss_tree'] / MB, 0)} | "
            f"{_fmt(j['max_rss_process'] / MB if j.get('max_rss_process') else None, 0)} | "
            f"{_fmt(j.get('seed_speedup'), 2)} | {_fmt(j.get('x_raw_copy'), 2)} |")
    return "\n".join(lines)


def target_table(rows: list[dict]) -> str:
    lines = ["| target | value | met | detail |", "| --- | ---: | --- | --- |"]
    for r in rows:
        met = "-" if r["met"] is None else ("MET" if r["met"] else "MISSED")
        lines.append(f"| {r['target']} | {_fmt(r['value'], 2)} | {met} | {r['detail']} |")
    return "\n".join(lines)


def totals_table(tot: dict[str, Any]) -> str:
    lines = [("| dataset | product: builds + validation copy (wall / CPU s) | product end to end "
              "(+validate, plan, verify) | seed: six builds (wall / CPU s) | speedup wall | "
              "speedup CPU | product builds as the DAG runs them (wall s / speedup) |"),
             "| --- |" + " ---: |" * 6]
    for ds, t in tot.items():
        pb, pe, sb = (t["product_builds_plus_validation_copy"], t["product_end_to_end"],
                      t["seed_builds"])
        lines.append(
            f"| {ds} | {_fmt(pb['wall_seconds'])} / {_fmt(pb['cpu_seconds'])} | "
            f"{_fmt(pe['wall_seconds'])} / {_fmt(pe['cpu_seconds'])} | "
            f"{_fmt(sb['wall_seconds'])} / {_fmt(sb['cpu_seconds'])} | "
            f"{_fmt(t['speedup_builds_wall_seconds'], 2)} | {_fmt(t['speedup_builds_cpu_seconds'], 2)} | "
            + (f"{t['product_builds_parallel']['wall_seconds']:.1f} / "
               f"{_fmt(t['speedup_builds_parallel_wall_seconds'], 2)} |"
               if t.get("product_builds_parallel") else "- | "))
    return "\n".join(lines)


def compare_table(rows: list[dict]) -> str:
    lines = [("| dataset | split | shards | records (product / seed) | counts per shard equal | "
              "records byte-identical | differing records with the same features (sampled) | "
              "bytes product | bytes seed |"),
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for c in rows:
        lines.append(
            f"| {c['dataset']} | {c['split']} | {c['shards_product']} | {c['records_product']:,} / "
            f"{c['records_seed']:,} | {'yes' if c['counts_equal'] else 'NO'} | "
            f"{c['records_byte_identical']:,} | {c['differing_records_same_features']:,} of "
            f"{c['differing_records_parsed']:,} | {c['bytes_product']:,} | {c['bytes_seed']:,} |")
    return "\n".join(lines)


def phases_table(bench: Bench) -> str:
    """Product builds: wall time by phase (from their logs) and peak RSS by process."""
    head = ("| dataset | build | wall s | " + " | ".join(timeline.PHASES)
            + " | first progress after | steady MB/s | peak RSS by process (MiB) |")
    lines = [head, "| --- | --- |" + " ---: |" * (len(timeline.PHASES) + 3) + " --- |"]
    for j in bench.jobs:
        if j["side"] != "product" or j["stage"] != "build" or not j.get("phases"):
            continue
        ph = j["phases"]
        procs = ", ".join(f"{k.replace('python -m ', '')} {v / MB:,.0f}"
                          for k, v in sorted(j.get("rss_by_process", {}).items()))
        lines.append(f"| {j['dataset']} | {j['split']} | {j['wall_seconds']:.1f} | "
                     + " | ".join(f"{ph[k]:.1f}" for k in timeline.PHASES)
                     + f" | {_fmt(ph.get('first_progress'))} | {_fmt(ph.get('steady_mb_per_s'))}"
                     + f" | {procs} |")
    return "\n".join(lines)


def render(bench: Bench, tot: dict, tgt: list[dict], meta: dict) -> str:
    parts = [
        f"Run {meta['finished_at']} on {meta['host']['cpus']} CPUs "
        f"(load average {meta['host']['loadavg_start']} at start, {meta['host']['loadavg_end']} "
        f"at end), {meta['runner']}; page cache {meta['page_cache'].split(':')[0]}; total "
        f"{meta['total_seconds'] / 60:.1f} min"
        + (" (QUICK sizes)" if bench.args.quick else "") + f"; code: commit "
        f"{(meta['git_commit'] or '?')[:8]}, beam_jobs sources {meta['beam_jobs_sha256']}"
        + (" (WARNING: beam_jobs changed during the run)"
           if meta.get("beam_jobs_changed_during_run") else "") + ".",
        "", "### What the user waits for: the DAG end to end", "",
        ("`bin/airflow dags test` (tasks one after another in one process; Beam jobs "
         "DirectRunner subprocesses), first run on a never-seen source and adding one seed to "
         "the published folder, against the seed reference's six outputs run in this same "
         "benchmark (and, for one more seed, `cp` of that split's bytes plus one Python "
         "start-up). Wall time of the whole `dags test` process; the run's own duration in "
         "brackets; per-task times from its log."), "",
        dag.table(dag.rows(bench.jobs, bench.data)),
        "", "### Targets", "", target_table(tgt),
        "", "### Totals", "", totals_table(tot),
        "", "### Datasets", "",
        "| dataset | train records | shards | train MB | mean record bytes | validation records |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {k} | {v['train_records']:,} | {v['train_shards']} | {v['train_bytes'] / 1e6:,.1f} | "
          f"{v['mean_record_bytes']:,.0f} | {v['validation_records']:,} |"
          for k, v in bench.data.items()],
        "", "### Jobs", "", job_table(bench),
        "", "### Product builds: where the wall time goes (from their logs)", "",
        ("startup = Python + imports; prepare = plan + catalog -> record table; pipeline = "
         "runner and worker start-up, all shards, promotion; teardown = the runner stopping; "
         "first progress after = seconds from the pipeline's start to its first progress line "
         "(~10% of the shards done); steady MB/s = bytes written from then to the end of the "
         "pipeline over that time (approximate: progress is polled about once a second)."), "",
        phases_table(bench),
    ]
    if bench.comparisons:
        parts += ["", "### Product vs seed reference outputs", "", compare_table(bench.comparisons)]
    if bench.notes:
        parts += ["", "Notes:", ""] + [f"* {n}" for n in bench.notes]
    if bench.profiles:
        parts += ["", "### Profiles (py-spy, product builds on COUNT)", ""]
        for k, s in bench.profiles.items():
            parts.append(pyspy.format_summary(f"{k} ({s['wall_seconds_under_pyspy']:.0f} s wall "
                                              "under py-spy)", s))
    return "\n".join(parts) + "\n"


BEGIN, END = "<!-- BEGIN GENERATED by python -m benchmarks.run -->", "<!-- END GENERATED -->"


def write_results_md(path: Path, body: str) -> None:
    """Replace the generated block of ``path``, keeping the text around it."""
    block = f"{BEGIN}\n{body}{END}\n"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            pre, rest = text.split(BEGIN, 1)
            post = rest.split(END, 1)[1].lstrip("\n")
            path.write_text(pre + block + post)
            return
    path.write_text("# Benchmark results\n\n" + block)


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small datasets (a smoke test)")
    p.add_argument("--only", choices=["count", "bytes", "latency", "gcs"],
                   help="COUNT only, or BYTES + half BYTES only, or the latency benchmark only "
                        "(benchmarks.latency), or exact verification on GCS only "
                        "(benchmarks.gcs_verify); without --only these two run last")
    p.add_argument("--skip-seed", "--skip_seed", dest="skip_seed", action="store_true",
                   help="do not run the seed reference")
    p.add_argument("--skip-dag", "--skip_dag", dest="skip_dag", action="store_true",
                   help="do not run the DAG end to end (benchmarks.dag)")
    p.add_argument("--skip-verify", "--skip_verify", dest="skip_verify", action="store_true",
                   help="do not run the product's verification")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                   help="seeds of the 10%% splits (default 1,2,3,4,5)")
    p.add_argument("--work_dir", "--work-dir", default=str(ROOT / ".bench"),
                   help="datasets, runs, logs and results.json (default .bench/)")
    p.add_argument("--results_md", "--results-md",
                   help="where the table goes (default benchmarks/RESULTS.md; "
                        "{work_dir}/RESULTS.md with --quick)")
    prof = p.add_mutually_exclusive_group()
    prof.add_argument("--profile", dest="profile", action="store_true", default=None,
                      help="py-spy the product's builds of the reshuffle and a 10%% split, "
                           "validate and plan, on COUNT (default: on unless --quick)")
    prof.add_argument("--no-profile", "--no_profile", dest="profile", action="store_false")
    p.add_argument("--seed_budget_minutes", "--seed-budget-minutes", type=float, default=40.0,
                   help="if the seed reference's 10%% splits on a dataset would take longer, "
                        "run fewer and extrapolate (said so in the output)")
    p.add_argument("--job_timeout", "--job-timeout", type=float, default=3 * 3600)
    p.add_argument("--keep", action="store_true", help="keep the built outputs under runs/")
    p.add_argument("--parallel_builds", "--parallel-builds", type=int, default=3,
                   help="also time the product's builds run N at a time, as the DAG runs its "
                        "build tasks (SSL_SPLITS_MAX_PARALLEL_BUILDS, default 3); 1 to skip")
    p.add_argument("--no-audit", "--no_audit", dest="no_audit", action="store_true",
                   help="do not strace a 10%% split's reads of the source (measured read "
                        "amplification; untimed)")
    p.add_argument("--cold", action="store_true",
                   help="evict the source from the page cache before every timed job that reads "
                        "it (default: read it first, so every job starts page-cache hot); "
                        "results go to results-cold.json / RESULTS-cold.md in the work dir")
    p.add_argument("--pycache_dir", "--pycache-dir",
                   help="bytecode cache of the jobs (default {work_dir}/pycache)")
    p.add_argument("--no-bytecode-cache", "--no_bytecode_cache", dest="no_bytecode_cache",
                   action="store_true", help="run as the environment is (no .pyc cache)")
    a = p.parse_args(argv)
    a.seeds = tuple(int(s) for s in a.seeds.split(",") if s.strip())
    if a.profile is None:
        a.profile = not a.quick
    return a


def main(argv: list[str] | None = None) -> int:
    import signal

    # SIGTERM ends the run like Ctrl-C: the job running is killed with its workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    if args.only == "latency":
        return _latency(args, None)
    if args.only == "gcs":
        return _gcs_verify(args, None)
    bench = Bench(args)
    table = datasets.QUICK if args.quick else datasets.FULL
    chosen = [table["count"]] if args.only == "count" else \
        [table["bytes_half"], table["bytes"]] if args.only == "bytes" else \
        [table["count"], table["bytes_half"], table["bytes"]]
    free = shutil.disk_usage(bench.work).free
    print(f"work dir {bench.work} ({free / 1e9:,.0f} GB free)", flush=True)
    if not args.quick and free < 6e9:
        print("warning: the full benchmark needs about 6 GB of free disk", file=sys.stderr)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    load0 = [round(x, 2) for x in os.getloadavg()]
    code0 = _tree_hash(ROOT / "beam_jobs")
    bench.warm_up()
    for ds in chosen:
        bench.run_dataset(ds)
    derive(bench)
    tot = totals(bench)
    tgt = targets(bench, tot)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=False).stdout.strip() or None
    except OSError:
        commit = None
    import apache_beam

    meta = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "total_seconds": round(time.monotonic() - t0, 1),
        "quick": args.quick, "only": args.only, "skip_seed": args.skip_seed,
        "skip_verify": args.skip_verify,
        "page_cache": "cold: the source evicted (posix_fadvise DONTNEED) before every timed job "
                      "that reads it" if args.cold else
                      "hot: the source read (untimed) before every timed job that reads it",
        "seeds": list(args.seeds), "bytecode_cache": not args.no_bytecode_cache,
        "git_commit": commit, "beam_jobs_sha256": _tree_hash(ROOT / "beam_jobs"),
        "beam_jobs_changed_during_run": _tree_hash(ROOT / "beam_jobs") != code0,
        "python": platform.python_version(),
        "apache_beam": apache_beam.__version__,
        "runner": "DirectRunner (product: its CLIs' defaults; seed reference: the same "
                  "worker settings for the same input size)",
        "host": {"cpus": os.cpu_count(), "loadavg_start": load0,
                 "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                 "mem_total_gib": round(_mem_total() / GIB, 1)},
        "memory_measurement": "peak_rss_tree: psutil, every 0.1 s, sum of RSS over the job's "
                              "process tree (DirectRunner workers included); max_rss_process: "
                              "getrusage(RUSAGE_CHILDREN).ru_maxrss in a wrapper that waits for "
                              "the job (largest single process, exact)",
        "units": "MB = 1e6 bytes (data), MiB = 2**20 bytes (memory)",
    }
    result = {"meta": meta, "datasets": bench.data, "targets": tgt, "totals": tot,
              "jobs": bench.jobs, "comparisons": bench.comparisons, "profiles": bench.profiles,
              "notes": bench.notes}
    suffix = "-cold" if args.cold else ""
    (bench.work / f"results{suffix}.json").write_text(
        json.dumps(result, indent=1, default=str) + "\n")
    body = render(bench, tot, tgt, meta)
    print("\n" + body)
    md = Path(args.results_md) if args.results_md else \
        (bench.work / f"RESULTS{suffix}.md" if args.quick or args.cold
         else ROOT / "benchmarks" / "RESULTS.md")
    write_results_md(md, body)
    print(f"results: {bench.work / f'results{suffix}.json'}, table: {md}")
    if args.only is None:
        return _latency(args, md) or _gcs_verify(args, md)
    return 0


def _gcs_verify(args: argparse.Namespace, md: Path | None) -> int:
    """COUNT on the GCS emulator: a 10% split's build against its exact verification."""
    from benchmarks import gcs_verify

    return gcs_verify.main(["--work_dir", args.work_dir, *(["--quick"] if args.quick else []),
                            *(["--results_md", str(md or args.results_md)]
                              if (md or args.results_md) else [])])


def _latency(args: argparse.Namespace, md: Path | None) -> int:
    """The ranged-read benchmark on simulated GCS (its own section of the same RESULTS.md)."""
    from benchmarks import latency

    return latency.main(["--work_dir", args.work_dir, *(["--quick"] if args.quick else []),
                         *(["--results_md", str(md or args.results_md)]
                           if (md or args.results_md) else [])])


def _tree_hash(folder: Path) -> str:
    """sha256 of the package's sources (beam_jobs changes under uncommitted edits)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(folder.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _mem_total() -> int:
    try:
        import psutil

        return psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        return 0


if __name__ == "__main__":
    sys.exit(main())
