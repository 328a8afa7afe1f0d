"""Build small splits the way the DAG does, in-process, for the verify,
publish and TFDS-metadata tests.

The DAG's Python tasks (``ssl_splits.tasks.check_params``, ``plan``,
``publish_manifest``) run as they do in Airflow; the Beam jobs it launches
with ``python -m beam_jobs.source.validate|build|verify`` run here through their
``run([...])`` functions, with the job flags that
``ssl_splits.job_options.pipeline_options`` derives from a split's spec, on the
in-process DirectRunner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beam_jobs import storage

BEAM = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
# What a run imports (tests/support/forkserver.py imports them once for many runs).
PRELOAD = (
    "ssl_splits.tasks",
    "beam_jobs.source.validate",
    "beam_jobs.building.build",
    "beam_jobs.verification.verify",
)
DAG_ID = "ssl_imagenet_splits"


def params(source_uri: str, output_uri: str, **overrides: Any) -> dict[str, Any]:
    """Trigger params for the small synthetic source (10 classes): two seeds,
    20% each in 3 shards, no reshuffle, no validation copy."""
    p: dict[str, Any] = {
        "source_uri": source_uri,
        "output_uri": output_uri,
        "seeds": [1, 2],
        "fraction": 0.2,
        "sampling": "stratified",
        "num_shards": 3,
        "unsupervised": False,
        "copy_validation": False,
        "num_classes": 10,
        "deep_verify": True,
    }
    p.update(overrides)
    return p


@dataclass
class Run:
    """One DAG run's XComs: the config, the source description, the specs."""

    config: dict[str, Any]
    source: dict[str, Any]
    specs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output_uri(self) -> str:
        return self.config["output_uri"]

    @property
    def work_uri(self) -> str:
        return self.config["work_uri"]

    @property
    def manifest_uri(self) -> str:
        return self.config["manifest_uri"]

    def spec(self, split: str) -> dict[str, Any]:
        return next(s for s in self.specs if s["split"] == split)

    def supervised(self) -> list[str]:
        return [s["split"] for s in self.specs if s["kind"] == "supervised"]


def job_args(run: Run, spec: dict[str, Any]) -> list[str]:
    """The build/verify flags the DAG's operator passes for one split."""
    args = [
        f"--split={spec['split']}",
        f"--output_uri={run.output_uri}",
        f"--work_uri={run.work_uri}",
    ]
    if spec["kind"] == "validation":
        args.append(f"--copy_from={run.config['source_uri']}")
    else:
        args += [f"--plan_uri={spec['plan_uri']}", f"--catalog_dir={spec['catalog_dir']}"]
    if spec.get("layout"):
        args.append(f"--layout={spec['layout']}")
    return args + BEAM


def build_args(run: Run, spec: dict[str, Any]) -> list[str]:
    """The build job's flags: the job flags, and where the source is now."""
    extra = [] if spec["kind"] == "validation" else [f"--source_uri={run.config['source_uri']}"]
    return job_args(run, spec) + extra


def start(p: dict[str, Any], catalog_cache: Path | None = None) -> Run:
    """check_params, validation (or a cached catalog of the same source), plan."""
    from ssl_splits import tasks

    from beam_jobs.source import validate
    from beam_jobs.source.catalog import CATALOG_FILE, REPORT_FILE

    checked = tasks.check_params(p)
    run = Run(checked["config"], checked["source"])
    src = run.source
    if src["action"] == "run":
        cached = catalog_cache / src["fingerprint"][:16] if catalog_cache else None
        if cached is not None and (cached / REPORT_FILE).exists():
            for name in (CATALOG_FILE, REPORT_FILE):
                storage.write_bytes(
                    storage.join(src["catalog_dir"], name), (cached / name).read_bytes()
                )
        else:
            validate.run(
                [
                    f"--source_uri={run.config['source_uri']}",
                    f"--catalog_dir={src['catalog_dir']}",
                    f"--num_classes={run.config['num_classes']}",
                    f"--layout={src['layout']}",
                    *BEAM,
                ]
            )
            if cached is not None:
                cached.mkdir(parents=True, exist_ok=True)
                for name in (CATALOG_FILE, REPORT_FILE):
                    (cached / name).write_bytes(
                        storage.read_bytes(storage.join(src["catalog_dir"], name))
                    )
    run.specs = tasks.plan(run.config, run.source)
    return run


def build(run: Run, split: str) -> dict[str, Any]:
    from beam_jobs.building import build as build_job

    return build_job.run(build_args(run, run.spec(split)))


def verify(run: Run, split: str, deep: bool = True) -> dict[str, Any]:
    """Run the verifier as the DAG does; raises VerificationFailed."""
    from beam_jobs.verification import verify as verify_job

    return verify_job.run(job_args(run, run.spec(split)) + (["--deep"] if deep else []))


def stage_all(run: Run) -> None:
    """Build (stage) every split the run decided to build; verify none."""
    for spec in run.specs:
        if spec["action"] == "build":
            build(run, spec["split"])


def build_all(run: Run, deep: bool = True) -> None:
    for spec in run.specs:
        if spec["action"] == "build":
            build(run, spec["split"])
            verify(run, spec["split"], deep=deep)


def publish(run: Run, run_id: str = "manual__1", fence: Any = None) -> dict[str, Any]:
    from ssl_splits import tasks

    return tasks.publish_manifest(
        run.config, run.source, run.specs, {}, {"dag_id": DAG_ID, "run_id": run_id}, fence
    )


def full_run(
    p: dict[str, Any], catalog_cache: Path | None = None, run_id: str = "manual__1"
) -> tuple[Run, dict[str, Any]]:
    """A whole DAG run: plan, build and verify every split it decides to build, publish."""
    run = start(p, catalog_cache)
    build_all(run)
    return run, publish(run, run_id)


def manifest(run: Run) -> dict[str, Any]:
    return json.loads(storage.read_text(run.manifest_uri))


def main(argv: list[str]) -> int:
    """``python tests/support/built_splits.py PARAMS_JSON [RUN_ID] [CATALOG_CACHE]``: one whole
    run in this process (the kill tests start it in its own process group and
    stop it at a failpoint, see beam_jobs.faults); exact verification as the
    DAG's default. Prints the publish result as JSON."""
    params = json.loads(argv[0])
    run_id = argv[1] if len(argv) > 1 else "manual__1"
    cache = Path(argv[2]) if len(argv) > 2 else None
    run = start(params, cache)
    build_all(run, deep=bool(params.get("deep_verify") == "always"))
    print(json.dumps(publish(run, run_id)))
    return 0


if __name__ == "__main__":
    import sys

    root = Path(__file__).resolve().parent.parent.parent
    sys.path[:0] = [str(root), str(root / "plugins")]
    sys.exit(main(sys.argv[1:]))
