"""What every per-split job (build, verify) is told on its command line.

``add_args`` declares the flags they share; ``parse`` checks them and
resolves the folders and the split's file names once (:class:`SplitJob`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from beam_jobs import storage
from beam_jobs.layout import Naming, naming, work_default


@dataclass(frozen=True)
class SplitJob:
    """One split's job: where its shards go and how they are named."""

    split: str
    output_uri: str
    work_uri: str
    naming: Naming
    plan_uri: str | None
    catalog_dir: str | None
    copy_from: str | None

    @property
    def prefix(self) -> str:
        """The split's file names in its source's layout (``train128116.1`` or
        ``imagenet2012-train128116_1.tfrecord``)."""
        return self.naming.file_prefix(self.split)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", required=True, help="split name: train128116.3, train or validation")
    p.add_argument("--output_uri", required=True, help="folder of the split's published shards")
    p.add_argument(
        "--work_uri", help="folder for staging, stats and reports (default {output_uri}/_work)"
    )
    p.add_argument(
        "--plan_uri",
        help="the split's filename,shard,index plan (labelled splits and the reshuffle)",
    )
    p.add_argument("--catalog_dir", help="the validation job's catalog folder (with --plan_uri)")
    p.add_argument(
        "--copy_from", help="source folder whose {split}-* shards are copied (the validation set)"
    )
    p.add_argument(
        "--layout",
        default=None,
        help="the source's layout, common (default) or tfds:DATASET: the split's file "
        "names (imagenet2012-train128116_1.tfrecord-SSSSS-of-NNNNN for TFDS) "
        "and record features",
    )


def parse(
    p: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, SplitJob, list[str]]:
    """Parse ``argv`` (unknown flags are Beam's options); exit 2 on bad flags."""
    args, beam_args = p.parse_known_args(argv)
    if bool(args.plan_uri) == bool(args.copy_from):
        p.error("give either --plan_uri (with --catalog_dir) or --copy_from")
    if args.plan_uri and not args.catalog_dir:
        p.error("--plan_uri needs --catalog_dir")
    output = storage.normalize(args.output_uri)
    job = SplitJob(
        split=args.split,
        output_uri=output,
        work_uri=storage.normalize(args.work_uri or work_default(output)),
        naming=naming(args.layout),
        plan_uri=args.plan_uri,
        catalog_dir=args.catalog_dir,
        copy_from=storage.normalize(args.copy_from) if args.copy_from else None,
    )
    return args, job, beam_args
