"""The output folder's layout: every name the product reads or writes, in one place.

Readers (training jobs) look at the published shard names only::

    {output_uri}/{split}-SSSSS-of-NNNNN          a published split's shards
    {output_uri}/manifest.json                   the commit point (default manifest_uri)
    {output_uri}/manifest.versions/              every manifest version published
    {output_uri}/dataset_info.json, features.json    TFDS metadata (from the manifest)

What belongs to the output folder whatever the work folder is, in its
control folder ``{output_uri}/_ssl_splits/``::

    _ssl_splits/lock.json                        one writer per output folder (a lease)
    _ssl_splits/clock                            written to read the storage's clock
    _ssl_splits/publishing.json                  a publication in progress (its journal)
    _ssl_splits/tfds.json                        the TFDS metadata files it wrote

Everything else lives under the work folder (default ``{output_uri}/_work``),
which no split glob matches::

    _work/catalog/{fingerprint[:16]}/            catalog.parquet + report.json (validation)
    _work/catalog/{fingerprint[:16]}/records/    each plan's rows of the catalog, by plan sha256
    _work/plans/{split}.{sha256[:16]}.csv        plans (+ .json summaries)
    _work/staging/{split}/{token}/               a build's shards before they are published
    _work/stats/{split}.json                     what the last build of a split wrote
    _work/verify/{split}.json                    the last verification report of a split
    _work/_progress/{job}-{split}/               progress markers of a running job

The shard naming rule (``shard_name``) is the product's contract: readers glob
``{split}-*``; a split's own files are those whose name parses back to it.

**Source layouts.** Two layouts of ImageNet TFRecords are read, and a split
is named the way readers of its source's layout look for it (a
:class:`Naming`; the module functions below are the common layout's)::

    common  train-SSSSS-of-NNNNN                         features image/encoded,
            {split}-SSSSS-of-NNNNN  (train128116.3-...)  image/filename, image/class/label 1..C
    tfds    imagenet2012-train.tfrecord-SSSSS-of-NNNNN   features image, file_name,
            {dataset}-{tfds split}.tfrecord-SSSSS-of-NNNNN   label 0..C-1
            (imagenet2012-train128116_3.tfrecord-...)

Both end in ``-SSSSS-of-NNNNN`` after a *file prefix*: the split itself
(common), or ``{dataset}-{tfds split}.tfrecord`` (TFDS, whose split names
replace each ``.`` by ``_``: TFDS split names are ``[\\w-]+``). Every
function here that takes a ``prefix`` works for both; ``Naming.file_prefix``
turns a split into its prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from beam_jobs import storage

WORK_DIR = "_work"
CATALOG_DIR = "catalog"
PLANS_DIR = "plans"
STAGING_DIR = "staging"
RECORDS_DIR = "records"
STATS_DIR = "stats"
VERIFY_DIR = "verify"
CONTROL_DIR = "_ssl_splits"
JOURNAL_NAME = "publishing.json"
LOCK_NAME = "lock.json"
CLOCK_NAME = "clock"
TFDS_RECORD_NAME = "tfds.json"

SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")


# --------------------------------------------------------------------------- shard names


def shard_name(prefix: str, index: int, count: int) -> str:
    """``train``, 7, 1024 -> ``train-00007-of-01024``."""
    return f"{prefix}-{index:05d}-of-{count:05d}"


def shard_path(folder: str, split: str, index: int, count: int) -> str:
    return storage.join(folder, shard_name(split, index, count))


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """``train-00007-of-01024`` -> ``("train", 7, 1024)``; None for other names."""
    m = SHARD_RE.match(name)
    if m is None:
        return None
    return m.group("prefix"), int(m.group("index")), int(m.group("count"))


def split_glob(folder: str, split: str) -> str:
    """The pattern readers glob for a split: ``{folder}/{split}-*``."""
    return storage.join(folder, f"{split}-*")


def file_pattern(folder: str, split: str, count: int) -> str:
    """The manifest's ``file_pattern`` of a split with ``count`` shards."""
    return storage.join(folder, f"{split}-*-of-{count:05d}")


def split_files(folder: str, split: str) -> list[storage.FileInfo]:
    """The files in ``folder`` named as shards of ``split`` (of any shard
    count), sorted by path. Files of another split that share the glob
    (``train-*`` also matches ``train128116.1-...``) are left out."""
    out = []
    for f in storage.list_files(split_glob(folder, split)):
        parsed = parse_shard_name(storage.basename(f.path))
        if parsed is not None and parsed[0] == split:
            out.append(f)
    return out


class ShardSetError(ValueError):
    """A folder's shards of a split are not one complete set; says what is wrong."""


def shard_set(folder: str, split: str) -> list[storage.FileInfo]:
    """The complete shard set ``{split}-00000-of-NNNNN`` .. ``-{N-1}-of-NNNNN``
    in ``folder``, by index; ShardSetError if there is none, or gaps, or two counts."""
    files = split_files(folder, split)
    if not files:
        raise ShardSetError(f"no {split}-SSSSS-of-NNNNN files in {folder}")
    parsed = [(parse_shard_name(storage.basename(f.path)), f) for f in files]
    counts = {p[2] for p, _ in parsed if p}
    count = max(counts)
    indices = sorted(p[1] for p, _ in parsed if p)
    if len(counts) != 1 or indices != list(range(count)):
        raise ShardSetError(
            f"{folder}: the {split} shards are not 0..{count - 1} of {count} "
            f"(found {len(files)} files, counts {sorted(counts)})"
        )
    return [f for _, f in sorted(parsed, key=lambda pf: pf[0][1])]  # type: ignore[index]


def glob_strays(folder: str, split: str, listed: list[storage.FileInfo]) -> list[str]:
    """Of the files listed under a split's glob, those a reader of the glob
    would take for the split's but that are not shards of another split:
    anything that is not a shard name, or a shard name of this split."""
    out = []
    for f in listed:
        parsed = parse_shard_name(storage.basename(f.path))
        if parsed is None or parsed[0] == split:
            out.append(f.path)
    return out


# --------------------------------------------------------------------------- source layouts

COMMON = "common"
TFDS = "tfds"
TFDS_SUFFIX = ".tfrecord"
_TFDS_SPLIT = re.compile(r"^[\w-]+$")
_TFDS_DATASET = re.compile(r"^[a-z0-9_]+$")  # TFDS dataset names are snake_case
_TFDS_TRAIN = re.compile(r"^(?P<dataset>[a-z0-9_]+)-train\.tfrecord-\d{5}-of-\d{5}$")


class LayoutError(ValueError):
    """A source folder's layout is not one of those the product reads."""


def tfds_split_name(split: str) -> str:
    """Our split name as a TFDS split name: ``train128116.1`` -> ``train128116_1``
    (TFDS split names are ``[\\w-]+``: its slicing syntax has no room for a dot)."""
    name = split.replace(".", "_")
    if not _TFDS_SPLIT.match(name):
        raise ValueError(
            f"split {split!r} has no TFDS name: TFDS split names are letters, digits, '_' and '-'"
        )
    return name


@dataclass(frozen=True)
class Naming:
    """How a source layout names shard files, and so how its splits are named.

    ``Naming()`` is the common converters' layout (``train-00000-of-01024``);
    ``Naming(TFDS, "imagenet2012")`` the layout TensorFlow Datasets prepares
    (``imagenet2012-train.tfrecord-00000-of-01024``). ``spec`` (``common`` or
    ``tfds:imagenet2012``) is how jobs pass it (``--layout``) and how reports
    and the manifest record it.
    """

    kind: str = COMMON
    dataset: str = ""

    def __post_init__(self) -> None:
        if self.kind == COMMON and self.dataset:
            raise LayoutError("the common layout has no dataset name")
        if self.kind == TFDS and not _TFDS_DATASET.match(self.dataset):
            raise LayoutError(
                f"TFDS dataset name {self.dataset!r} must be snake_case (imagenet2012)"
            )
        if self.kind not in (COMMON, TFDS):
            raise LayoutError(f"unknown layout {self.kind!r}: {COMMON} or {TFDS}:DATASET")

    @property
    def spec(self) -> str:
        return self.kind if self.kind == COMMON else f"{self.kind}:{self.dataset}"

    @classmethod
    def from_spec(cls, spec: str | None) -> "Naming":
        """``common`` (or empty) -> the common layout; ``tfds:imagenet2012`` -> TFDS's."""
        if not spec or spec == COMMON:
            return cls()
        kind, _, dataset = spec.partition(":")
        if kind != TFDS or not dataset:
            raise LayoutError(
                f"layout {spec!r}: expected {COMMON} or {TFDS}:DATASET (tfds:imagenet2012)"
            )
        return cls(TFDS, dataset)

    def file_prefix(self, split: str) -> str:
        """``train128116.1`` -> ``train128116.1`` (common) or
        ``imagenet2012-train128116_1.tfrecord`` (TFDS)."""
        if self.kind == COMMON:
            return split
        return f"{self.dataset}-{tfds_split_name(split)}{TFDS_SUFFIX}"

    def shard_name(self, split: str, index: int, count: int) -> str:
        return shard_name(self.file_prefix(split), index, count)

    def shard_path(self, folder: str, split: str, index: int, count: int) -> str:
        return storage.join(folder, self.shard_name(split, index, count))

    def split_glob(self, folder: str, split: str) -> str:
        return split_glob(folder, self.file_prefix(split))

    def file_pattern(self, folder: str, split: str, count: int) -> str:
        return file_pattern(folder, self.file_prefix(split), count)

    def split_files(self, folder: str, split: str) -> list[storage.FileInfo]:
        return split_files(folder, self.file_prefix(split))

    def glob_strays(self, folder: str, split: str, listed: list[storage.FileInfo]) -> list[str]:
        return glob_strays(folder, self.file_prefix(split), listed)


def naming(spec: str | None) -> Naming:
    """The Naming of a layout spec (``common``, ``tfds:imagenet2012``; None: common)."""
    return Naming.from_spec(spec)


def detect_source(source_uri: str) -> Naming:
    """Which layout the source folder uses, from its file names (nothing read).

    ``train-SSSSS-of-NNNNN`` files: common; ``{dataset}-train.tfrecord-SSSSS-of-NNNNN``:
    TFDS (one dataset name). Neither: common (validation then reports that no
    shards were found). Both, or several TFDS dataset names: a LayoutError
    naming the files, since the source is ambiguous.
    """
    names = [storage.basename(f.path) for f in storage.list_files(storage.join(source_uri, "*"))]
    common = [n for n in names if (p := parse_shard_name(n)) is not None and p[0] == "train"]
    datasets: dict[str, str] = {}
    for n in names:
        m = _TFDS_TRAIN.match(n)
        if m:
            datasets.setdefault(m.group("dataset"), n)
    if common and datasets:
        raise LayoutError(
            f"{source_uri} holds both layouts: {common[0]} (common converters) and "
            f"{next(iter(datasets.values()))} (TensorFlow Datasets); keep one per source folder"
        )
    if len(datasets) > 1:
        raise LayoutError(
            f"{source_uri} holds TFDS shards of several datasets: "
            f"{', '.join(sorted(datasets.values()))}; keep one per source folder"
        )
    if datasets:
        return Naming(TFDS, next(iter(datasets)))
    return Naming()


# --------------------------------------------------------------------------- the work folder


def work_default(output_uri: str) -> str:
    return storage.join(output_uri, WORK_DIR)


def catalog_dir(work_uri: str, fingerprint: str) -> str:
    return storage.join(work_uri, CATALOG_DIR, fingerprint[:16])


def plans_dir(work_uri: str) -> str:
    return storage.join(work_uri, PLANS_DIR)


def plan_file(plans_folder: str, split: str, sha256: str) -> str:
    """Plans are content-addressed: a plan file never changes under a build."""
    return storage.join(plans_folder, f"{split}.{sha256[:16]}.csv")


def plan_summary_uri(plan_uri: str) -> str:
    return plan_uri[: -len(".csv")] + ".json" if plan_uri.endswith(".csv") else plan_uri + ".json"


def records_dir(catalog_folder: str) -> str:
    return storage.join(catalog_folder, RECORDS_DIR)


def records_uri(catalog_folder: str, plan_sha256: str) -> str:
    """The source records of one plan (``beam_jobs.planning.plans.write_records``): kept
    with the catalog they come from (validation clears them with it), named
    by the plan's content."""
    return storage.join(records_dir(catalog_folder), f"{plan_sha256[:32]}.parquet")


def staging_root(work_uri: str, split: str) -> str:
    return storage.join(work_uri, STAGING_DIR, split)


def staging_dir(work_uri: str, split: str, token: str) -> str:
    return storage.join(staging_root(work_uri, split), token)


def stats_uri(work_uri: str, split: str) -> str:
    return storage.join(work_uri, STATS_DIR, f"{split}.json")


def verify_dir(work_uri: str) -> str:
    return storage.join(work_uri, VERIFY_DIR)


def report_uri(work_uri: str, split: str) -> str:
    """The verification report of a split."""
    return storage.join(work_uri, VERIFY_DIR, f"{split}.json")


def control_dir(output_uri: str) -> str:
    """The output folder's own bookkeeping: what belongs to the folder, not to a run."""
    return storage.join(output_uri, CONTROL_DIR)


def journal_uri(output_uri: str) -> str:
    """The journal of a publication in progress into ``output_uri`` (``beam_jobs.publishing.commit``)."""
    return storage.join(control_dir(output_uri), JOURNAL_NAME)


def lock_uri(output_uri: str) -> str:
    """The output folder's lock (``beam_jobs.publishing.lock``), wherever the work folder is."""
    return storage.join(control_dir(output_uri), LOCK_NAME)


def clock_uri(output_uri: str) -> str:
    """Written to read the storage's clock (``storage.clock``) beside the lock."""
    return storage.join(control_dir(output_uri), CLOCK_NAME)


def tfds_record_uri(output_uri: str) -> str:
    """Which TFDS metadata files the product wrote into ``output_uri`` (and their versions)."""
    return storage.join(control_dir(output_uri), TFDS_RECORD_NAME)
