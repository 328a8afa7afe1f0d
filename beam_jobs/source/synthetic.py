"""A synthetic ImageNet in the layout of the common TFRecord converters, or of
TensorFlow Datasets.

Writes ``train-SSSSS-of-NNNNN`` and ``validation-SSSSS-of-NNNNN`` TFRecord
shards whose records are ``tf.train.Example`` s with the converters' features
(``image/encoded`` holding real JPEG bytes, ``image/filename``,
``image/class/label`` 1..C, ``image/class/synset``, ``image/class/text``,
``image/height``, ``image/width``, ``image/colorspace``, ``image/channels``,
``image/format``). Users try the pipeline on it before pointing it at 140 GB;
the tests and the benchmark use it too.

With ``--layout=tfds`` it writes what ``tfds build imagenet2012`` prepares
instead: ``imagenet2012-train.tfrecord-SSSSS-of-NNNNN`` and
``imagenet2012-validation.tfrecord-...`` with the features ``image`` (JPEG),
``label`` (0..C-1) and ``file_name``, plus ``label.labels.txt`` (the synsets
by label), ``features.json`` and ``dataset_info.json``: a folder that
``tfds.builder_from_directory`` reads as it is. The records (names, classes,
shards, images) are the same as in the common layout; only the features'
keys, the labels' base and the file names differ.

Everything is a pure function of the :class:`Spec` (seed included): the same
spec writes byte-identical files. Class sizes are uneven like ImageNet's
(most classes full, the rest spread between ``min_per_class`` and
``max_per_class``). Names are made up (``n01440764_10026.JPEG`` style) or taken
from filename,shard,index files (``names_from``), so that a published FixMatch
split can be rebuilt on synthetic data.

CLI::

    python -m beam_jobs.source.synthetic --output_uri=/tmp/imagenet --num_classes=10 \\
        --min_per_class=40 --max_per_class=60 --train_shards=8

    python -m beam_jobs.source.synthetic --output_uri=/tmp/imagenet-count --imagenet --image_size=1
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from beam_jobs import storage
from beam_jobs.layout import COMMON, TFDS, Naming
from beam_jobs.source.example_proto import build_example
from beam_jobs.source.tfrecord import Writer

log = logging.getLogger("beam_jobs.source.synthetic")

IMAGENET_TRAIN_TOTAL = 1_281_167
IMAGENET_CLASSES = 1000
IMAGENET_TRAIN_SHARDS = 1024
IMAGENET_VALIDATION_SHARDS = 128


@dataclass(frozen=True)
class Spec:
    """What to generate. Every field changes the output; nothing else does."""

    num_classes: int = 10
    min_per_class: int = 40
    max_per_class: int = 60
    train_total: int | None = None  # exact number of training records, or None
    full_class_share: float = 0.896  # share of classes at max_per_class (ImageNet: 896/1000)
    train_shards: int = 8
    validation_shards: int = 2
    validation_per_class: int = 5
    image_size: int = 8  # pixels per side; 1 gives the smallest records (~950 bytes: JPEG headers)
    jpeg_quality: int = 90
    image_pool: int = 64  # distinct JPEGs reused across records
    seed: int = 0
    names_from: tuple[str, ...] = field(default_factory=tuple)  # name lists or sharding files
    layout: str = COMMON  # "common", or "tfds:imagenet2012" (beam_jobs.layout.Naming.spec)

    def check(self) -> None:
        problems = []
        if self.num_classes < 1:
            problems.append("num_classes must be >= 1")
        if not 1 <= self.min_per_class <= self.max_per_class:
            problems.append("need 1 <= min_per_class <= max_per_class")
        if self.train_shards < 1 or self.validation_shards < 0:
            problems.append("train_shards must be >= 1 and validation_shards >= 0")
        if self.validation_per_class < 0:
            problems.append("validation_per_class must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append("jpeg_quality must be in 1..100")
        if self.train_shards > self.num_classes * self.min_per_class and self.train_total is None:
            problems.append(
                f"train_shards={self.train_shards} could leave shards empty: at most "
                f"{self.num_classes * self.min_per_class} records are certain"
            )
        if self.image_size < 1 or self.image_pool < 1:
            problems.append("image_size and image_pool must be >= 1")
        if not 0 <= self.full_class_share <= 1:
            problems.append("full_class_share must be in [0, 1]")
        try:
            Naming.from_spec(self.layout)
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise ValueError("invalid synthetic spec: " + "; ".join(problems))


def imagenet_spec(**overrides: object) -> Spec:
    """ImageNet's shape: 1,000 classes of 732..1,300 images, 1,281,167 in 1,024 shards."""
    base = Spec(
        num_classes=IMAGENET_CLASSES,
        min_per_class=732,
        max_per_class=1300,
        train_total=IMAGENET_TRAIN_TOTAL,
        train_shards=IMAGENET_TRAIN_SHARDS,
        validation_shards=IMAGENET_VALIDATION_SHARDS,
        validation_per_class=50,
        image_size=1,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClassInfo:
    synset: str
    label: int  # 1-based, in sorted synset order (as the common converter)
    text: str


@dataclass
class Layout:
    """Which record goes where: the pure part of generation."""

    classes: list[ClassInfo]
    train: list[list[tuple[str, int]]]  # per shard: (filename, class index)
    validation: list[list[tuple[str, int]]]

    @property
    def train_total(self) -> int:
        return sum(len(s) for s in self.train)

    def class_sizes(self) -> list[int]:
        sizes = [0] * len(self.classes)
        for shard in self.train:
            for _, c in shard:
                sizes[c] += 1
        return sizes


def read_names_files(uris: tuple[str, ...]) -> dict[str, set[str]]:
    """Names per synset (text before ``_``) from filename,shard,index files or
    name lists (one name per line): paths, gs:// or shipped ``published:...`` lists."""
    from beam_jobs.planning.protocols import read_text

    by_synset: dict[str, set[str]] = defaultdict(set)
    for uri in uris:
        for lineno, line in enumerate(read_text(uri).splitlines(), 1):
            if not line.strip():
                continue
            name = line.split(",", 1)[0].strip()
            if "_" not in name:
                raise ValueError(
                    f"{uri} line {lineno}: the name has no synset prefix (n..._N.JPEG)"
                )
            by_synset[name.split("_", 1)[0]].add(name)
    return by_synset


def _class_sizes(spec: Spec, rng: random.Random, floors: list[int]) -> list[int]:
    n = spec.num_classes
    full = round(n * spec.full_class_share)
    order = list(range(n))
    rng.shuffle(order)
    sizes = [0] * n
    for rank, c in enumerate(order):
        if rank < full or spec.min_per_class == spec.max_per_class:
            sizes[c] = spec.max_per_class
        else:
            sizes[c] = rng.randint(spec.min_per_class, spec.max_per_class - 1)
    sizes = [max(s, f) for s, f in zip(sizes, floors)]
    if spec.train_total is not None:
        lo = sum(max(spec.min_per_class, f) for f in floors)
        hi = sum(max(spec.max_per_class, f) for f in floors)
        if not lo <= spec.train_total <= hi:
            raise ValueError(
                f"train_total={spec.train_total} is impossible with {n} classes of "
                f"{spec.min_per_class}..{spec.max_per_class} images (possible: {lo}..{hi})"
            )
        diff = spec.train_total - sum(sizes)
        # Spread the difference one image at a time over classes in a seeded
        # order, within each class's bounds.
        step = 1 if diff > 0 else -1
        while diff:
            moved = False
            for c in order:
                cap = max(spec.max_per_class, floors[c])
                low = max(spec.min_per_class, floors[c])
                if (step > 0 and sizes[c] < cap) or (step < 0 and sizes[c] > low):
                    sizes[c] += step
                    diff -= step
                    moved = True
                    if not diff:
                        break
            if not moved:  # pragma: no cover - excluded by the bounds check
                raise AssertionError("class sizes cannot reach train_total")
    return sizes


def _split_even(items: list, parts: int) -> list[list]:
    """Contiguous split, the first ``len(items) % parts`` parts one longer."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


def _name_number(name: str) -> int | None:
    """``n01440764_10026.JPEG`` -> 10026 (None if not of that form)."""
    digits = name.split("_", 1)[-1].split(".", 1)[0]
    return int(digits) if digits.isascii() and digits.isdigit() else None


def layout(spec: Spec) -> Layout:
    """Decide classes, names and shard assignment (pure, deterministic)."""
    spec.check()
    rng = random.Random(f"ssl-imagenet-synthetic/{spec.seed}")
    given = read_names_files(spec.names_from) if spec.names_from else {}
    synsets = sorted(given)
    if len(synsets) > spec.num_classes:
        raise ValueError(
            f"names_from holds {len(synsets)} synsets but num_classes={spec.num_classes}"
        )
    taken = set(synsets)
    while len(synsets) < spec.num_classes:
        s = f"n{rng.randrange(1_000_000, 16_000_000):08d}"
        if s not in taken:
            taken.add(s)
            synsets.append(s)
    synsets.sort()
    classes = [ClassInfo(s, i + 1, f"synthetic class {i + 1}") for i, s in enumerate(synsets)]
    floors = [len(given.get(c.synset, ())) for c in classes]
    sizes = _class_sizes(spec, rng, floors)

    records: list[tuple[str, int]] = []
    for c, info in enumerate(classes):
        names = sorted(given.get(info.synset, ()))
        used = {_name_number(n) for n in names} - {None}
        need = sizes[c] - len(names)
        if need > 0:
            pool_hi = max(3 * sizes[c], 100) + len(used)
            fresh = [
                k
                for k in rng.sample(range(1, pool_hi + need + 1), need + len(used))
                if k not in used
            ]
            names.extend(f"{info.synset}_{k}.JPEG" for k in sorted(fresh[:need]))
        records.extend((name, c) for name in names)
    rng.shuffle(records)
    train = _split_even(records, spec.train_shards)

    val: list[tuple[str, int]] = [
        ("", c) for c in range(len(classes)) for _ in range(spec.validation_per_class)
    ]
    rng.shuffle(val)
    val = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", c) for i, (_, c) in enumerate(val)]
    validation = _split_even(val, spec.validation_shards) if spec.validation_shards else []
    return Layout(classes=classes, train=train, validation=validation)


def jpeg_pool(spec: Spec) -> list[bytes]:
    """``image_pool`` distinct real JPEGs of ``image_size`` pixels (deterministic)."""
    from PIL import Image

    gen = np.random.default_rng(spec.seed)
    out = []
    for _ in range(spec.image_pool):
        pixels = gen.integers(0, 256, size=(spec.image_size, spec.image_size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=spec.jpeg_quality)
        out.append(buf.getvalue())
    return out


def example_bytes(
    filename: str, info: ClassInfo, jpeg: bytes, size: int, kind: str = COMMON
) -> bytes:
    """One record with the common converter's features (or TFDS's, for ``kind``
    ``tfds``: ``image``, ``label`` 0-based, ``file_name``), in a fixed order."""
    if kind == TFDS:
        return build_example(
            {"image": jpeg, "label": info.label - 1, "file_name": filename.encode()}
        )
    return build_example(
        {
            "image/height": size,
            "image/width": size,
            "image/colorspace": b"RGB",
            "image/channels": 3,
            "image/class/label": info.label,
            "image/class/synset": info.synset.encode(),
            "image/class/text": info.text.encode(),
            "image/format": b"JPEG",
            "image/filename": filename.encode(),
            "image/encoded": jpeg,
        }
    )


_WORKER: dict = {}


def _init_worker(
    classes: list[ClassInfo], pool: list[bytes], size: int, kind: str = COMMON
) -> None:
    _WORKER.update(classes=classes, pool=pool, size=size, kind=kind)


def _write_shard(job: tuple[str, list[tuple[str, int]]]) -> tuple[str, int, int]:
    uri, rows = job
    classes, pool, size = _WORKER["classes"], _WORKER["pool"], _WORKER["size"]
    with storage.open_write(uri) as f:
        w = Writer(f)
        for i, (name, c) in enumerate(rows):
            # Pick the image by a stable function of the name, not Python's hash().
            jpeg = pool[(sum(name.encode()) + i) % len(pool)]
            w.write(example_bytes(name, classes[c], jpeg, size, _WORKER["kind"]))
    return uri, w.num_records, w.num_bytes


def _write_tfds_metadata(
    output_uri: str,
    naming: Naming,
    classes: list[ClassInfo],
    written: dict[str, tuple[int, int]],
    shards: dict[str, int],
) -> None:
    """label.labels.txt, features.json and dataset_info.json, as TFDS writes them
    beside its shards (described with ``beam_jobs.source.tfds_meta``)."""
    from beam_jobs.source.tfds_meta import (
        LABEL_NAMES_FILE,
        TFDS_REQUIRED_FEATURES,
        dataset_info,
        features_config,
    )

    splits = {}
    for split, count in shards.items():
        if not count:
            continue
        paths = [naming.shard_path(output_uri, split, i, count) for i in range(count)]
        splits[split] = {
            "num_shards": count,
            "num_examples": sum(written[p][0] for p in paths),
            "shards": [
                {"path": p, "num_records": written[p][0], "num_bytes": written[p][1]} for p in paths
            ],
        }
    doc = {"splits": splits, "source": {"layout": naming.spec}}
    info = dataset_info(doc, output_uri, version="5.1.0")
    info["description"] = "A synthetic ImageNet in the layout TensorFlow Datasets prepares."
    storage.write_text(
        storage.join(output_uri, LABEL_NAMES_FILE), "".join(f"{c.synset}\n" for c in classes)
    )
    storage.write_text(
        storage.join(output_uri, "features.json"),
        json.dumps(
            features_config(TFDS_REQUIRED_FEATURES, kind=TFDS, num_classes=len(classes)), indent=2
        )
        + "\n",
    )
    storage.write_text(
        storage.join(output_uri, "dataset_info.json"), json.dumps(info, indent=2) + "\n"
    )


def _write_shards(
    jobs: list[tuple[str, list[tuple[str, int]]]],
    workers: int | None,
    init: tuple[list[ClassInfo], list[bytes], int, str],
) -> Iterator[tuple[str, int, int]]:
    """Write each (uri, rows) job's shard, in ``workers`` processes (default:
    one per CPU) or in this one; yield (uri, records, bytes) as each is done."""
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 1:
        # spawn: a forked child must not inherit a parent's GCS client sockets.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, _init_worker, init) as procs:
            yield from procs.imap_unordered(_write_shard, jobs, chunksize=4)
    else:
        _init_worker(*init)
        for job in jobs:
            yield _write_shard(job)


def generate(spec: Spec, output_uri: str, workers: int | None = None) -> dict:
    """Write the dataset under ``output_uri``; return a summary (also written as
    ``synthetic.json`` beside the shards)."""
    t0 = time.monotonic()
    lay = layout(spec)
    naming = Naming.from_spec(spec.layout)
    pool = jpeg_pool(spec)
    jobs = []
    for prefix, shards in (("train", lay.train), ("validation", lay.validation)):
        for i, rows in enumerate(shards):
            uri = naming.shard_path(output_uri, prefix, i, len(shards))
            jobs.append((uri, rows))
    init = (lay.classes, pool, spec.image_size, naming.kind)
    written: dict[str, tuple[int, int]] = {}
    step = max(1, len(jobs) // 10)
    for done, (uri, nrec, nbytes) in enumerate(_write_shards(jobs, workers, init), 1):
        written[uri] = (nrec, nbytes)
        if done % step == 0 or done == len(jobs):
            log.info("synthetic: %d/%d shards written", done, len(jobs))
    total_bytes = sum(nbytes for _, nbytes in written.values())
    if naming.kind == TFDS:
        _write_tfds_metadata(
            output_uri,
            naming,
            lay.classes,
            written,
            {"train": len(lay.train), "validation": len(lay.validation)},
        )
    sizes = lay.class_sizes()
    summary = {
        "spec": {**asdict(spec), "names_from": list(spec.names_from)},
        "output_uri": output_uri,
        "layout": naming.spec,
        "train_records": lay.train_total,
        "train_shards": len(lay.train),
        "validation_records": sum(len(s) for s in lay.validation),
        "validation_shards": len(lay.validation),
        "num_classes": len(lay.classes),
        "min_class_size": min(sizes),
        "max_class_size": max(sizes),
        "bytes": total_bytes,
        "seconds": round(time.monotonic() - t0, 3),
    }
    storage.write_text(
        storage.join(output_uri, "synthetic.json"), json.dumps(summary, indent=2) + "\n"
    )
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.source.synthetic",
        description="Write a synthetic ImageNet (train-*/validation-* TFRecords with real JPEGs).",
    )
    p.add_argument("--output_uri", required=True, help="folder to write (absolute path or gs://)")
    p.add_argument(
        "--imagenet",
        action="store_true",
        help="ImageNet's shape: 1000 classes, 1,281,167 train records in 1024 shards, "
        "50 validation images per class in 128 shards (other flags override)",
    )
    d = Spec()
    p.add_argument("--num_classes", type=int)
    p.add_argument("--min_per_class", type=int)
    p.add_argument("--max_per_class", type=int)
    p.add_argument("--train_total", type=int, help="exact number of training records")
    p.add_argument("--train_shards", type=int)
    p.add_argument("--validation_shards", type=int)
    p.add_argument("--validation_per_class", type=int)
    p.add_argument("--image_size", type=int, help=f"pixels per side (default {d.image_size})")
    p.add_argument("--jpeg_quality", type=int)
    p.add_argument("--image_pool", type=int, help="distinct JPEGs reused across records")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--names_from",
        action="append",
        default=[],
        help="filename,shard,index file or name list (a path, gs:// or a shipped "
        "list such as published:fixmatch/split3) whose names the source must "
        "contain (repeatable)",
    )
    p.add_argument(
        "--layout",
        default=None,
        help="common (train-SSSSS-of-NNNNN, image/* features; default) or tfds "
        "(imagenet2012-train.tfrecord-SSSSS-of-NNNNN, image/label/file_name "
        "features, as TensorFlow Datasets prepares it; tfds:NAME for another "
        "dataset name)",
    )
    p.add_argument("--workers", type=int, help="processes (default: CPU count)")
    return p


# The flags that override a field of the base Spec (the defaults, or --imagenet's).
SPEC_FLAGS = (
    "num_classes",
    "min_per_class",
    "max_per_class",
    "train_total",
    "train_shards",
    "validation_shards",
    "validation_per_class",
    "image_size",
    "jpeg_quality",
    "image_pool",
    "seed",
)


def parse_args(argv: list[str] | None) -> tuple[Spec, str, int | None]:
    """The dataset's Spec, the folder to write and the number of processes."""
    a = _parser().parse_args(argv)
    base = imagenet_spec() if a.imagenet else Spec()
    overrides = {k: getattr(a, k) for k in SPEC_FLAGS if getattr(a, k) is not None}
    if a.names_from:
        overrides["names_from"] = tuple(a.names_from)
    if a.layout:
        overrides["layout"] = "tfds:imagenet2012" if a.layout == TFDS else a.layout
    return replace(base, **overrides), a.output_uri, a.workers


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout
    )
    try:
        spec, out, workers = parse_args(argv)
        summary = generate(spec, out, workers)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary['train_records']:,} train records in {summary['train_shards']} shards and "
        f"{summary['validation_records']:,} validation records in {summary['validation_shards']} "
        f"shards ({summary['num_classes']} classes of {summary['min_class_size']}.."
        f"{summary['max_class_size']}, {summary['bytes'] / 1e6:.1f} MB) to {out} "
        f"in {summary['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
