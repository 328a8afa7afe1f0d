"""What the DAG's Python tasks do; the DAG file only wires these together.

* ``check_params``: resolve and check the run's params; describe the source
  (its fingerprint from storage metadata) and whether a valid catalog for
  exactly this source already exists.
* ``plan``: compute or import every requested plan, write the plan files, and
  decide per split whether to build it or skip it (its verified output
  already matches its plan and source).
* ``publish``: gather build stats and verification reports, refuse anything
  unverified, and merge the new split entries into the manifest.

None of these read the dataset: only listings, the catalog and small files.

What the tasks hand each other travels as XComs, JSON: each task function
here that the DAG calls (``check_params``, ``acquire_lock``, ``plan``,
``publish_manifest``, ``holding_lock``, ``release_lock``) takes and returns
those dicts, and converts them to and from the documents of
``beam_jobs.core`` in its first and last lines; everything else here passes
the documents themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from typing import Any, Iterator

from airflow.sdk.exceptions import AirflowFailException

from beam_jobs import __version__, layout, storage
from beam_jobs.core import (
    VALIDATION,
    BuildProvenance,
    BuildStats,
    CatalogReport,
    Lease,
    Manifest,
    PlanRef,
    PlanSummary,
    PublicationProvenance,
    PublishResult,
    SourceDescription,
    SourceSection,
    SplitEntry,
    SplitSpec,
    VerificationRef,
    VerifyReport,
)
from beam_jobs.layout import Naming, plan_summary_uri, plans_dir, report_uri, stats_uri
from beam_jobs.layout import catalog_dir as catalog_folder
from beam_jobs.planning.algorithm import ALGORITHM
from beam_jobs.planning.plans import (
    PlanRequest,
    make_plans,
    nesting_lines,
    write_plans,
    write_records,
)
from beam_jobs.publishing import commit, lock
from beam_jobs.publishing.manifest import (
    ManifestError,
    entry_problems,
    now,
    read_or_none,
    summary_lines,
)
from beam_jobs.publishing.ownership import (
    ForeignFiles,
    JournalRefused,
    check_no_foreign,
    foreign_files,
    foreign_tfds,
    is_our_manifest,
    record_tfds,
)
from beam_jobs.publishing.publish import Published
from beam_jobs.source.catalog import REPORT_FILE, fingerprint
from ssl_splits.config import ConfigError, RunConfig, resolve
from ssl_splits.rerun import rerun_decision

log = logging.getLogger(__name__)


class TaskError(AirflowFailException, RuntimeError):
    """A task cannot go on; the message says why and what to do.

    An AirflowFailException: the task fails at once, without retries (a
    missing sharding file, an invalid catalog or an unverified split are
    still so a minute later)."""


# --------------------------------------------------------------------------- check_params


def read_catalog_report(catalog_dir: str) -> CatalogReport:
    """The validation report beside a catalog (FileNotFoundError if there is none)."""
    return CatalogReport.from_json(storage.read_text(storage.join(catalog_dir, REPORT_FILE)))


def describe_source(cfg: RunConfig) -> SourceDescription:
    """The source as storage describes it (no data read): fingerprint, catalog folder,
    validation shards, and whether a valid catalog of exactly this source exists."""
    try:
        names = layout.detect_source(cfg.source_uri)  # common or TFDS, from the file names
    except layout.LayoutError as err:
        raise TaskError(f"source_uri: {err}") from None
    train = storage.list_files(names.split_glob(cfg.source_uri, "train"))
    fp = fingerprint(train)
    catalog_dir = catalog_folder(cfg.work_uri, fp)
    val = names.split_files(cfg.source_uri, "validation")
    report_path = storage.join(catalog_dir, REPORT_FILE)
    action, reason = "run", "no catalog for this source yet"
    if storage.exists(report_path):
        report = read_catalog_report(catalog_dir)
        if report.serves(
            fp, num_classes=cfg.num_classes, layout=names.spec, expected_total=cfg.expected_total
        ):
            action, reason = "cached", f"source unchanged since it was validated ({report_path})"
        else:
            reason = "the last validation of this source failed or used other checks"
    return SourceDescription(
        source_uri=cfg.source_uri,
        fingerprint=fp,
        catalog_dir=catalog_dir,
        layout=names.spec,
        num_train_files=len(train),
        action=action,
        reason=reason,
        validation_files=len(val),
        validation_fingerprint=fingerprint(val) if val else None,
    )


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Resolve params (raises ConfigError naming the param) and describe the source."""
    cfg = resolve(params)
    for seed, uri in cfg.sharding_files.items():
        if not storage.exists(uri):
            raise TaskError(f"sharding_files[{seed}]: {uri} does not exist")
    for label, uri in cfg.name_lists.items():
        if not storage.exists(uri):
            raise ConfigError(f"name_lists[{label}]: {uri} does not exist")
    if (
        not storage.list_files(storage.join(cfg.source_uri, "*"))
        and not storage.exists(cfg.source_uri)
        and not storage.is_gcs(cfg.source_uri)
    ):
        raise TaskError(f"source_uri {cfg.source_uri} does not exist")
    source = describe_source(cfg)
    log.info("run config: %s", json.dumps(cfg.to_dict(), sort_keys=True))
    log.info(
        "source: %d train shards (%s layout), fingerprint %s; %s",
        source.num_train_files,
        source.layout,
        source.fingerprint[:16],
        source.reason,
    )
    return {"config": cfg.to_dict(), "source": source.to_dict()}


def acquire_lock(config: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Take the output folder's lock for this DAG run with a new token (raises
    LockHeld saying who holds it); return the lease (this task's XCom), which
    every later task holds the lock with and the DAG's teardown releases.
    ``run["in_process"]``: this process runs the whole DAG run (``airflow dags test``)."""
    cfg = RunConfig.from_dict(config)
    lease = lock.lease_from_env()
    held = lock.acquire(
        cfg.output_uri,
        run_id=run["run_id"],
        dag_id=run["dag_id"],
        lease=lease,
        in_process=bool(run.get("in_process")),
    )
    log.info(
        "holding %s for this run (a lease of %.0f s on the storage's clock, renewed while its "
        "tasks run%s)",
        held.uri,
        lease.total_seconds(),
        "; free as soon as this process is gone" if run.get("in_process") else "",
    )
    return held.to_dict()


@contextlib.contextmanager
def holding_lock(lease: dict[str, Any] | None) -> Iterator[lock.Fence]:
    """Run a task's body holding this run's lock: renewed at the start (raises
    LockLost naming the run that took it over) and in the background while
    the body runs (``beam_jobs.publishing.lock.holding``); the Fence publishing steps check."""
    if not lease:
        raise TaskError(
            "this run holds no lock on its output folder (acquire_lock did not run or "
            "returned nothing): not going on"
        )
    with lock.holding(Lease.from_dict(lease)) as fence:
        yield fence


def release_lock(lease: dict[str, Any] | None) -> bool:
    """Release the output folder's lock if this run's token holds it (the DAG's teardown)."""
    if not lease:
        return False  # acquire_lock failed or never ran: no lock was taken
    held = Lease.from_dict(lease)
    released = lock.release(held)
    log.info("%s %s", "released" if released else "did not hold", held.uri)
    return released


# --------------------------------------------------------------------------- plan


def decide(
    split: str,
    plan_sha: str | None,
    source_fp: str | None,
    manifest: Manifest | None,
    force: bool,
    num_shards: int | None = None,
) -> tuple[str, str]:
    """``("build"|"skip", reason)`` for one split (``ssl_splits.rerun``)."""
    entry = manifest.splits.get(split) if manifest else None
    # Storage metadata only (GCS: sizes and CRC32Cs; locally: sizes and the
    # modification times recorded at publication): no shard is read.
    d = rerun_decision(
        entry,
        plan_sha256=plan_sha,
        source_fingerprint=source_fp,
        force=force,
        num_shards=num_shards,
        file_problems=lambda: entry_problems(entry or {}),
    )
    return d.action, d.reason


def plan(
    config: dict[str, Any], source: dict[str, Any], fence: lock.Fence | None = None
) -> list[dict[str, Any]]:
    """Write the plans and return one spec per split for the build and verify tasks.

    Stops, before anything is built, if a file the product did not write sits
    under a name this run would write (``beam_jobs.publishing.ownership``)."""
    cfg, src = RunConfig.from_dict(config), SourceDescription.from_dict(source)
    # A publication an earlier run left half-done is finished first, so that
    # the decisions below see published splits as they are meant to be.
    unfinished = finish_interrupted(cfg, fence)
    report = read_catalog_report(src.catalog_dir)
    if not report.ok:
        raise TaskError(f"the catalog at {src.catalog_dir} is not valid; see its report.json")
    # The validated source's layout names every file the build and verify jobs write.
    naming = layout.naming(report.layout)
    summaries = write_split_plans(cfg, src.catalog_dir)
    manifest = published_manifest(cfg, summaries, naming, report.layout)
    for s in summaries:  # beside its plan file, for publish_manifest
        storage.write_text(plan_summary_uri(s.plan_uri), s.to_json(), "application/json")
    specs = decide_splits(cfg, src, summaries, manifest, report.layout)
    specs = rebuild_unfinished(cfg, specs, unfinished)
    check_destinations(cfg, [s for s in specs if s.action == "build"], naming, manifest)
    for spec in specs:
        log.info("%-20s %-5s %s", spec.split, spec.action, spec.reason)
    return [spec.to_dict() for spec in specs]


def finish_interrupted(cfg: RunConfig, fence: lock.Fence | None) -> list[str]:
    """Finish the publication an earlier run left half-done (``commit.recover``);
    return the splits whose publication could not be finished."""
    try:
        finished = commit.recover(
            cfg.output_uri, fence, manifest_uri=cfg.manifest_uri, work_uri=cfg.work_uri
        )
    except commit.UnfinishedSplits as err:
        log.error("%s", err)
        return err.splits
    except (ForeignFiles, JournalRefused) as err:
        raise TaskError(str(err)) from None
    if finished:
        log.info("finished the interrupted publication of %s", ", ".join(finished))
    return []


def plan_request(cfg: RunConfig) -> PlanRequest:
    """What the run's params ask the planner for."""
    return PlanRequest(
        seeds=tuple(cfg.seeds),
        fraction=cfg.fraction,
        sampling=cfg.sampling,
        num_shards=cfg.num_shards,
        unsupervised=cfg.unsupervised,
        unsupervised_seed=cfg.unsupervised_seed,
        unsupervised_shards=cfg.unsupervised_shards,
        sharding_files=tuple((int(k), v) for k, v in sorted(cfg.sharding_files.items())),
        name_lists=tuple(sorted(cfg.name_lists.items())),
        protocol=cfg.protocol,
        fractions=tuple(cfg.fractions) if len(cfg.fractions) > 1 else (),
    )


def write_split_plans(cfg: RunConfig, catalog_dir: str) -> list[PlanSummary]:
    """Make every requested plan from the catalog; write the plan files and each
    plan's catalog rows."""
    req = plan_request(cfg)
    plans = make_plans(catalog_dir, req)
    for line in nesting_lines(plans) if req.fractions else []:
        # The splits of one seed across fractions (README, "How a split is derived").
        (log.info if line.endswith("(nested)") else log.warning)("%s", line)
    # make_plans refused two plans of one split name (plans.check_distinct_splits).
    summaries = write_plans(plans, plans_dir(cfg.work_uri))
    write_records(plans, catalog_dir)  # each build reads only its split's rows
    return summaries


def published_manifest(
    cfg: RunConfig, summaries: list[PlanSummary], naming: Naming, source_layout: str
) -> Manifest | None:
    """The output folder's manifest (None: none yet, or unreadable); TaskError if
    it is not this product's, or describes splits of a source in another layout."""
    try:
        manifest = read_or_none(cfg.manifest_uri)
    except ManifestError:
        manifest = None
    if manifest is not None or storage.occupied(cfg.manifest_uri):
        if not is_our_manifest(manifest, cfg.output_uri):
            # Not this product's manifest of this folder: foreign, named with whatever
            # else is foreign under the names this run would write.
            found = foreign_files(
                output_uri=cfg.output_uri,
                manifest_uri=cfg.manifest_uri,
                prefixes=[naming.file_prefix(s.split) for s in summaries]
                + [naming.file_prefix(VALIDATION)] * bool(cfg.copy_validation),
                manifest=manifest,
            )
            raise TaskError(str(ForeignFiles(cfg.output_uri, found)))
    if manifest and manifest.splits and manifest.source_layout != source_layout:
        raise TaskError(
            f"{cfg.output_uri} holds splits of a source in the {manifest.source_layout} "
            f"layout (its manifest {cfg.manifest_uri}); this source is in the "
            f"{source_layout} layout: write it to another output_uri"
        )
    return manifest


def decide_splits(
    cfg: RunConfig,
    source: SourceDescription,
    summaries: list[PlanSummary],
    manifest: Manifest | None,
    source_layout: str,
) -> list[SplitSpec]:
    """One spec per planned split (and the validation copy): build it or skip it."""
    where = {"catalog_dir": source.catalog_dir, "layout": source_layout}
    specs = []
    for s in summaries:
        action, reason = decide(
            s.split,
            s.plan_sha256,
            source.fingerprint,
            manifest,
            cfg.force,
            num_shards=s.num_shards,
        )
        specs.append(SplitSpec.planned(s, action=action, reason=reason, **where))
    if cfg.copy_validation and source.validation_files:
        # force rebuilds the splits asked for (seeds, the reshuffle); the validation copy is
        # redone only when it differs from the source, so "seeds": [2], "force": true
        # rebuilds seed 2 alone.
        action, reason = decide(
            VALIDATION, None, source.validation_fingerprint, manifest, force=False
        )
        specs.append(SplitSpec.validation(action=action, reason=reason, **where))
    return specs


def rebuild_unfinished(
    cfg: RunConfig, specs: list[SplitSpec], unfinished: list[str]
) -> list[SplitSpec]:
    """``specs``, building every split whose last publication could not be
    finished; TaskError if this run does not plan one of them at all."""
    specs = [
        spec.rebuilt("its last publication could not be finished (see above)")
        if spec.split in unfinished and spec.action != "build"
        else spec
        for spec in specs
    ]
    not_rebuilt = sorted(set(unfinished) - {s.split for s in specs})
    if not_rebuilt:
        raise TaskError(
            f"an earlier publication of {', '.join(not_rebuilt)} into {cfg.output_uri} could not "
            "be finished (its staged shards are gone; see the error above), and this run does "
            f"not rebuild {'it' if len(not_rebuilt) == 1 else 'them'}: trigger the DAG for "
            f"{', '.join(not_rebuilt)} with force. Nothing was built."
        )
    return specs


def check_destinations(
    cfg: RunConfig, building: list[SplitSpec], naming: Naming, manifest: Manifest | None
) -> None:
    """TaskError if a file the product did not write sits under a name the
    splits to build would write (``beam_jobs.publishing.ownership``)."""
    if not building:
        return
    try:
        check_no_foreign(
            output_uri=cfg.output_uri,
            manifest_uri=cfg.manifest_uri,
            prefixes=[naming.file_prefix(s.split) for s in building],
            manifest=manifest,
            destinations=[
                naming.shard_path(cfg.output_uri, s.split, i, s.num_shards)
                for s in building
                if s.num_shards is not None
                for i in range(s.num_shards)
            ],
        )
    except ForeignFiles as err:
        raise TaskError(str(err)) from None


# --------------------------------------------------------------------------- publish


def verified_build(cfg: RunConfig, spec: SplitSpec) -> tuple[BuildStats, VerifyReport]:
    """The build stats and verification report of one split of this run;
    TaskError unless the report passed, for this run's plan, of this very build."""
    split = spec.split
    stats_bytes = storage.read_bytes(stats_uri(cfg.work_uri, split))
    stats = BuildStats.from_json(stats_bytes)
    vpath = report_uri(cfg.work_uri, split)
    if not storage.exists(vpath):
        raise TaskError(f"{split} has no verification report: not publishing it")
    verification = VerifyReport.from_json(storage.read_text(vpath))
    if not verification.ok:
        raise TaskError(f"{split} failed verification: not publishing it")
    if verification.plan_sha256 != spec.plan_sha256 or stats.plan_sha256 != spec.plan_sha256:
        raise TaskError(f"{split}: the verified build is not of this run's plan; not publishing it")
    if verification.stats_sha256 != hashlib.sha256(stats_bytes).hexdigest():
        raise TaskError(
            f"{split}: the verification report is of another build of this split "
            "(stats differ); not publishing it"
        )
    if not verification.shards:
        raise TaskError(
            f"{split}: the verification report lists no verified shards (written "
            "by an older version?); not publishing it"
        )
    return stats, verification


def split_entry(
    cfg: RunConfig,
    source: SourceDescription,
    spec: SplitSpec,
    stats: BuildStats,
    verification: VerifyReport,
    job: dict[str, Any] | None,
    run: dict[str, Any],
) -> SplitEntry:
    """The manifest entry of one freshly built and verified split: its shards
    are the verified objects (final names, records, bytes, CRC32C, and locally
    the modification time that their rename keeps)."""
    shards = [s.published() for s in verification.shards]
    common = dict(
        kind=spec.kind,
        layout=spec.layout,
        num_examples=sum(s.num_records for s in shards),
        num_shards=len(shards),
        file_pattern=stats.file_pattern,
        shards=shards,
        verification=VerificationRef(
            mode=verification.mode,
            verified_at=verification.verified_at,
            report_uri=report_uri(cfg.work_uri, spec.split),
            seconds=verification.seconds,
            bytes_read=verification.bytes_read,
            stats_sha256=verification.stats_sha256,
            metrics=verification.metrics,
        ),
        provenance=build_provenance(cfg, stats, job, run),
    )
    if spec.is_copy:
        return SplitEntry(
            **common,  # type: ignore[arg-type]
            copied_from=cfg.source_uri,
            source_fingerprint=source.validation_fingerprint,
        )
    assert spec.plan_uri is not None
    summary = PlanSummary.from_json(storage.read_text(plan_summary_uri(spec.plan_uri)))
    return SplitEntry(
        **common,  # type: ignore[arg-type]
        seed=summary.seed,
        fraction=summary.fraction,
        sampling=summary.sampling,
        class_counts=summary.class_counts,
        plan=PlanRef(spec.plan_uri, spec.plan_sha256, summary.plan_source, ALGORITHM),
        source_fingerprint=source.fingerprint,
    )


def build_provenance(
    cfg: RunConfig, stats: BuildStats, job: dict[str, Any] | None, run: dict[str, Any]
) -> BuildProvenance:
    """Who built and published a split (``run``: the DAG run, and when it published)."""
    return BuildProvenance(
        code_version=__version__,
        runner=cfg.runner,
        job_name=stats.job_name,
        job_id=(job or {}).get("dataflow_job_id"),
        dag_id=run.get("dag_id"),
        run_id=run.get("run_id"),
        built_at=stats.built_at,
        published_at=run["published_at"],
        source_uri=stats.read_from,
        bytes_read=stats.bytes_read,
        bytes_written=stats.bytes_written,
        shards_reused=stats.shards_reused,
    )


def source_section(cfg: RunConfig, source: SourceDescription) -> SourceSection:
    """The manifest's ``source``: the validated source, from its catalog's report."""
    report = read_catalog_report(source.catalog_dir)
    report_path = storage.join(source.catalog_dir, REPORT_FILE)
    return report.source_section(cfg.source_uri, source.fingerprint, report_path)


def publish_manifest(
    config: dict[str, Any],
    source: dict[str, Any],
    specs: list[dict[str, Any]],
    jobs: dict[str, dict[str, Any]],
    run: dict[str, Any],
    fence: lock.Fence | None = None,
) -> dict[str, Any]:
    """Publish this run's verified builds: their shards take their final names
    and the manifest their entries (``beam_jobs.publishing.commit``), only if each was
    verified for this run's plan and is still the object verified, only over
    files the product wrote, and only while this run holds the lock (``fence``)."""
    cfg, src = RunConfig.from_dict(config), SourceDescription.from_dict(source)
    built = [spec for spec in map(SplitSpec.from_dict, specs) if spec.action == "build"]
    # A retry of this task (or a run after a killed one) first finishes what was started.
    commit.recover(
        cfg.output_uri,
        fence,
        rebuilding=frozenset(s.split for s in built),
        manifest_uri=cfg.manifest_uri,
        work_uri=cfg.work_uri,
    )
    previous = read_or_none(cfg.manifest_uri)
    current = previous or Manifest(cfg.output_uri, splits={})
    builds = {
        s.split: (s, *verified_build(cfg, s))
        for s in built
        if not _already_published(current, s.split, cfg, run)
    }
    if not builds:
        log.info(
            "nothing to publish (every split is up to date or was published by this run); "
            "the manifest %s is unchanged",
            cfg.manifest_uri,
        )
        # Derived from the manifest: rewritten here too, in case a run was
        # stopped between its manifest commit and these files.
        tfds = describe_for_tfds(cfg, fence) if current.splits else []
        return PublishResult(
            manifest_uri=cfg.manifest_uri,
            changed=sorted(s.split for s in built),
            splits=sorted(current.splits),
            tfds_metadata=tfds,
        ).to_dict()
    run = {**run, "published_at": now()}
    entries = {
        name: split_entry(cfg, src, spec, stats, verification, jobs.get(name), run)
        for name, (spec, stats, verification) in builds.items()
    }
    check_source_unchanged(cfg, src)
    result = commit_publication(cfg, src, builds, entries, run, previous, fence)
    return PublishResult(
        manifest_uri=result.uri,
        version_uri=result.version_uri,
        changed=sorted(entries),
        splits=sorted(result.manifest.splits),
        generation=result.generation,
        tfds_metadata=describe_for_tfds(cfg, fence),
    ).to_dict()


def check_source_unchanged(cfg: RunConfig, source: SourceDescription) -> None:
    """TaskError if the source is not the one this run validated and built from."""
    now_fp = describe_source(cfg).fingerprint
    if now_fp != source.fingerprint:
        raise TaskError(
            f"the source {cfg.source_uri} changed during this run (fingerprint "
            f"{source.fingerprint[:16]} -> {now_fp[:16]}); nothing was published. "
            "Trigger the DAG again to validate and build from the new source."
        )


def commit_publication(
    cfg: RunConfig,
    source: SourceDescription,
    builds: dict[str, tuple[SplitSpec, BuildStats, VerifyReport]],
    entries: dict[str, SplitEntry],
    run: dict[str, Any],
    previous: Manifest | None,
    fence: lock.Fence | None,
) -> Published:
    """The verified shards take their names and the manifest the new entries
    (``beam_jobs.publishing.commit``: journal, switch, commit, clean)."""
    provenance = PublicationProvenance(
        code_version=__version__,
        dag_id=run.get("dag_id"),
        run_id=run.get("run_id"),
        published_at=run["published_at"],
    )
    try:
        pub = commit.prepare(
            run_id=run["run_id"],
            manifest_uri=cfg.manifest_uri,
            output_uri=cfg.output_uri,
            work_uri=cfg.work_uri,
            entries={name: e.to_dict() for name, e in entries.items()},
            shards={n: [s.to_dict() for s in v.shards] for n, (_, _, v) in builds.items()},
            stagings={name: stats.staging for name, (_, stats, _) in builds.items()},
            source=source_section(cfg, source).to_dict(),
            provenance=provenance.to_dict(),
            previous=previous,
        )
    except ForeignFiles as err:
        raise TaskError(str(err)) from None
    try:
        commit.check_staged(pub)
    except commit.PublicationError as err:
        raise TaskError(str(err)) from None
    result: Published = commit.execute(pub, fence)
    for line in summary_lines(result.manifest):
        log.info("%s", line)
    log.info(
        "published %s (version %s) with %s",
        result.uri,
        result.version_uri,
        ", ".join(sorted(entries)),
    )
    return result


def _already_published(manifest: Manifest, split: str, cfg: RunConfig, run: dict[str, Any]) -> bool:
    """Did this run already publish this very build (a retried task, after
    recovery finished its first attempt)?"""
    entry = manifest.splits.get(split)
    if not entry or (entry.get("provenance") or {}).get("run_id") != run.get("run_id"):
        return False
    try:
        report = json.loads(storage.read_text(report_uri(cfg.work_uri, split)))
    except FileNotFoundError:
        return False
    return (entry.get("verification") or {}).get("stats_sha256") == report.get("stats_sha256")


def describe_for_tfds(cfg: RunConfig, fence: lock.Fence | None = None) -> list[str]:
    """Write TFDS metadata (dataset_info.json, features.json) for the published
    manifest, so ``tfds.builder_from_directory(output_uri)`` reads the splits.
    Derived from the manifest and rewritable at any time: a failure is a
    warning, never a failed publication. Never over a file the product did
    not write (``_ssl_splits/tfds.json`` records what it wrote)."""
    from beam_jobs.publishing.manifest import entry_shape, load
    from beam_jobs.source.tfds_meta import TfdsMetadataError, read_label_names, write_tfds_metadata

    foreign = foreign_tfds(cfg.output_uri)
    if foreign:
        log.warning(
            "TFDS metadata not written: %s are not files this product wrote (left as they are)",
            ", ".join(foreign),
        )
        return []
    if fence is not None:
        fence.check("writing the TFDS metadata")

    # A TFDS source's class names (its label.labels.txt), for the outputs' ClassLabel.
    try:
        label_names = read_label_names(cfg.source_uri)
    except TfdsMetadataError as err:
        log.warning("TFDS metadata not written: %s", err)
        return []
    doc = load(cfg.manifest_uri)
    for split, entry in doc["splits"].items():
        shape = entry_shape(entry)  # an entry hand-edited since it was published
        if shape is not None:
            log.warning(
                "TFDS metadata not written: the entry of %s cannot be read: %s", split, shape
            )
            return []
    try:
        uris = write_tfds_metadata(doc, cfg.output_uri, label_names=label_names)
    except TfdsMetadataError as err:
        log.warning("TFDS metadata not written: %s", err)
        return []
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        # The manifest's source or layout as hand-edited: nothing TFDS can be told.
        log.warning(
            "TFDS metadata not written: the manifest cannot be described (%s)", type(err).__name__
        )
        return []
    record_tfds(cfg.output_uri, uris)
    log.info("TFDS metadata: %s", ", ".join(uris))
    return uris


def runs_whole_dag_in_process(dag_run: Any) -> bool:
    """True if this task runs inside the process that runs its whole DAG run:
    ``dag.test()`` / ``airflow dags test`` without an executor.

    Airflow 3.3 runs such a task through ``InProcessTestSupervisor``, whose
    comms object (``InProcessSupervisorComms``) it installs as the task
    runner's ``SUPERVISOR_COMMS``; a worker's task talks to a separate
    supervisor process instead (and ``dags test --use-executor`` runs tasks
    through an executor). ``airflow tasks test`` runs one task in-process too
    but exits after it: it sets ``AIRFLOW_TEST_MODE``, and its DAG run was not
    created by ``dag.test()`` (triggering user ``dag_test``)."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if (
        type(comms).__name__ != "InProcessSupervisorComms"
        or type(comms).__module__ != "airflow.sdk.execution_time.supervisor"
    ):
        return False
    if os.environ.get("AIRFLOW_TEST_MODE") == "True":
        return False
    return getattr(dag_run, "triggering_user_name", None) == "dag_test"
