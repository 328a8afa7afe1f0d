"""Describe the published splits in TensorFlow Datasets' format.

``write_tfds_metadata(manifest, output_uri)`` writes two small files next to
the shards, so that TFDS reads the splits in place, with no copy and no
renaming::

    {output_uri}/dataset_info.json   splits: shard lengths, bytes, file names
    {output_uri}/features.json       the tf.train.Example features, typed

and training code can do::

    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory("gs://bucket/ssl")
    ds = builder.as_dataset(split="train128116_1")          # or "train128116_1[:10%]"
    for ex in ds:
        image = ex["image"]["encoded"]                     # uint8 [H, W, 3], decoded
        label = ex["image"]["class"]["label"]              # int64, 1..1000 as in the source

TFDS interleaves a split's shards when it reads them; to get the records in
their planned order (shard 0 index 0, 1, ..., then shard 1, ...), pass
``shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1)``.

The manifest stays the contract (and the commit point): these files are
derived from it, written after it was published, and can be rewritten from it
at any time. Writing them needs neither TensorFlow nor TFDS (this module is
part of the Beam workers' package); the tests read them with TFDS 4.9.

**Split names.** TFDS split names are ``[\\w-]+`` (its split-slicing syntax
``train[:10%]`` has no room for a dot), so each ``.`` of our names becomes
``_``: ``train128116.1`` is the TFDS split ``train128116_1``; ``train`` and
``validation`` keep their names. Two names that would map to the same TFDS
name are refused. The files keep our names: each split's
``filepathTemplate`` is its literal file prefix followed by TFDS's shard
placeholder, ``train128116.1-{SHARD_X_OF_Y}``, which TFDS expands to
``train128116.1-00000-of-00102`` ... (five digits, as ours; TFDS uses more
only beyond 99,999 shards, as we do).

**Features.** TFDS flattens nested ``FeaturesDict`` keys with ``/``, so the
nested dict ``{"image": {"encoded", "filename", "class": {"label", ...}}}``
parses exactly the Example keys ``image/encoded``, ``image/filename``,
``image/class/label``. Described: ``image/encoded`` (a JPEG ``Image``,
decoded to 3 channels; the common converters re-encode every ImageNet image
as RGB JPEG), ``image/filename`` (``Text``), ``image/class/label``
(``int64``, the source's own labels: 1..1000 from the common converter), and
the optional ones the converters write (``image/class/synset``,
``image/class/text``, ``image/height``, ``image/width``, ``image/channels``,
``image/colorspace``, ``image/format``) when the first record of the first
split has them. TFDS parses only the described keys and needs each of them
in every record; validation guarantees the first three, so pass
``features=REQUIRED_FEATURES`` for a source whose optional features vary
between records. ``supervised_keys`` is not set: TFDS cannot point it into a
nested dict; use ``ds.map(lambda ex: (ex["image"]["encoded"],
ex["image"]["class"]["label"]))``.

**A TFDS-prepared source** (``imagenet2012-train.tfrecord-*``; the manifest's
``source.layout`` is ``tfds:imagenet2012``): the splits' files are named as
TFDS names its own (``imagenet2012-train128116_1.tfrecord-00000-of-00102``),
the dataset is named after the source's (``imagenet2012``), and the features
are the source's: ``image`` (JPEG ``Image``), ``label`` (a ``ClassLabel`` of
the run's ``num_classes``, 0-based; its names from the source's
``label.labels.txt`` when given), ``file_name`` (``Text``), with
``supervised_keys`` ``("image", "label")``: the records read exactly as
``tfds.load("imagenet2012")``'s do::

    builder = tfds.builder_from_directory("gs://bucket/ssl")
    ds = builder.as_dataset(split="train128116_1", as_supervised=True)   # (image, label)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from beam_jobs import layout, storage

DATASET_INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
DEFAULT_NAME = "ssl_imagenet_splits"
DEFAULT_VERSION = "1.0.0"
SHARD_PLACEHOLDER = "{SHARD_X_OF_Y}"

_TFDS = "tensorflow_datasets.core.features."


def _image(doc: str) -> dict[str, Any]:
    return {
        "pythonClassName": _TFDS + "image_feature.Image",
        "description": doc,
        "image": {
            "shape": {"dimensions": ["-1", "-1", "3"]},
            "dtype": "uint8",
            "encodingFormat": "jpeg",
        },
    }


def _text(doc: str) -> dict[str, Any]:
    return {"pythonClassName": _TFDS + "text_feature.Text", "description": doc, "text": {}}


def _int64(doc: str) -> dict[str, Any]:
    return {
        "pythonClassName": _TFDS + "tensor_feature.Tensor",
        "description": doc,
        "tensor": {"shape": {}, "dtype": "int64", "encoding": "none"},
    }


# Example key -> (TFDS feature JSON, the Example kind it must have).
KNOWN_FEATURES: dict[str, tuple[dict[str, Any], str]] = {
    "image/encoded": (_image("the image, JPEG-encoded in the record"), "bytes_list"),
    "image/filename": (_text("the source file name, e.g. n01440764_10026.JPEG"), "bytes_list"),
    "image/class/label": (
        _int64("the source's class label (1..1000 from the common converter)"),
        "int64_list",
    ),
    "image/class/synset": (_text("WordNet synset id, e.g. n01440764"), "bytes_list"),
    "image/class/text": (_text("human-readable class name"), "bytes_list"),
    "image/height": (_int64("image height in pixels"), "int64_list"),
    "image/width": (_int64("image width in pixels"), "int64_list"),
    "image/channels": (_int64("number of channels (3)"), "int64_list"),
    "image/colorspace": (_text("colorspace, e.g. RGB"), "bytes_list"),
    "image/format": (_text("image format, e.g. JPEG"), "bytes_list"),
}
REQUIRED_FEATURES = ("image/encoded", "image/filename", "image/class/label")

# A TFDS-prepared source's features (imagenet2012), flat: "label" becomes a
# ClassLabel when the number of classes is known (features_config).
TFDS_FEATURES: dict[str, tuple[dict[str, Any], str]] = {
    "image": (_image("the image, JPEG-encoded in the record"), "bytes_list"),
    "label": (_int64("the class label, 0-based as TFDS writes it"), "int64_list"),
    "file_name": (_text("the source file name, e.g. n01440764_10026.JPEG"), "bytes_list"),
}
TFDS_REQUIRED_FEATURES = ("image", "label", "file_name")
LABEL_NAMES_FILE = "label.labels.txt"  # TFDS's ClassLabel names, one per line
# Bounds of a source's label.labels.txt: the product's most classes (the num_classes
# param's maximum) and a byte size far above ImageNet's (~10 KB of synsets).
MAX_LABEL_NAMES = 100_000
MAX_LABEL_NAMES_BYTES = 8 * 1024 * 1024
MAX_LABEL_NAME_CHARS = 256


def parse_label_names(text: str, origin: str) -> list[str]:
    """The class names of a ``label.labels.txt`` (one per line, label ``i`` on
    line ``i + 1``; trailing blank lines ignored), checked: no empty name
    before the last, no control character, at most :data:`MAX_LABEL_NAME_CHARS`
    characters each and :data:`MAX_LABEL_NAMES` names. TfdsMetadataError naming
    the file and the line, never quoting it."""
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if len(names) > MAX_LABEL_NAMES:
        raise TfdsMetadataError(
            f"{origin}: {len(names):,} class names, more than the {MAX_LABEL_NAMES:,} allowed"
        )
    for lineno, name in enumerate(names, 1):
        if not name:
            raise TfdsMetadataError(f"{origin}: line {lineno}: the class name is empty")
        if len(name) > MAX_LABEL_NAME_CHARS:
            raise TfdsMetadataError(
                f"{origin}: line {lineno}: a class name of {len(name):,} characters "
                f"(at most {MAX_LABEL_NAME_CHARS})"
            )
        if any(not ch.isprintable() for ch in name):
            raise TfdsMetadataError(
                f"{origin}: line {lineno}: the class name has a control character"
            )
    return names


def read_label_names(source_uri: str) -> list[str] | None:
    """A TFDS source's class names (its :data:`LABEL_NAMES_FILE`), or None when it
    has none. The file must be the source's own: locally, its real path inside the
    source folder's (a symlink out of it is refused); its size is checked before
    it is read (:data:`MAX_LABEL_NAMES_BYTES`), then :func:`parse_label_names`.
    TfdsMetadataError naming the file, never quoting it."""
    from beam_jobs import access

    uri = storage.join(source_uri, LABEL_NAMES_FILE)
    if not storage.is_gcs(uri):
        if not os.path.lexists(uri):
            return None
        real, folder = access.real_path(uri), access.real_path(source_uri)
        if not access.is_within(real, folder) or real == folder:
            raise TfdsMetadataError(
                f"{uri} is a link to {real}, outside the source folder {folder}: "
                "a source's files must be its own"
            )
    elif not storage.exists(uri):
        return None
    try:
        raw = access.read_bounded(uri, MAX_LABEL_NAMES_BYTES, what="class names file")
    except FileNotFoundError:
        return None
    except (access.AccessError, IsADirectoryError) as err:
        raise TfdsMetadataError(str(err) or f"{uri} is not a file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise TfdsMetadataError(f"{uri}: not UTF-8 text (line {line})") from None
    return parse_label_names(text, uri)


def _class_label(num_classes: int) -> dict[str, Any]:
    return {
        "pythonClassName": _TFDS + "class_label_feature.ClassLabel",
        "description": "the class label, 0-based as TFDS writes it",
        "classLabel": {"numClasses": str(int(num_classes))},
    }


def manifest_naming(manifest: dict[str, Any]) -> layout.Naming:
    """The layout of the manifest's splits: its source's (``source.layout``),
    the same for every split (a split entry may also say its own)."""
    specs = {
        e.get("layout") or (manifest.get("source") or {}).get("layout") or layout.COMMON
        for e in manifest.get("splits", {}).values()
    }
    specs = specs or {(manifest.get("source") or {}).get("layout") or layout.COMMON}
    if len(specs) > 1:
        raise TfdsMetadataError(
            f"the manifest's splits come from sources of different layouts "
            f"({', '.join(sorted(specs))}): one TFDS dataset cannot describe them"
        )
    return layout.naming(specs.pop())


class TfdsMetadataError(ValueError):
    """The manifest's splits cannot be described for TFDS as they are."""


def tfds_split_name(split: str) -> str:
    """Our split name as a TFDS split name: ``train128116.1`` -> ``train128116_1``."""
    try:
        return layout.tfds_split_name(split)
    except ValueError as err:
        raise TfdsMetadataError(str(err)) from None


def split_infos(manifest: dict[str, Any], output_uri: str) -> list[dict[str, Any]]:
    """The ``splits`` of dataset_info.json (pure): one per manifest split, by name."""
    out = storage.normalize(output_uri)
    naming = manifest_naming(manifest)
    infos: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for split, entry in sorted(manifest["splits"].items()):
        name = tfds_split_name(split)
        if name in seen:
            raise TfdsMetadataError(
                f"splits {seen[name]!r} and {split!r} would both be the TFDS split {name!r}"
            )
        seen[name] = split
        n = int(entry["num_shards"])
        shards = entry["shards"]
        if len(shards) != n:
            raise TfdsMetadataError(
                f"{split}: the manifest lists {len(shards)} shards, num_shards says {n}"
            )
        for i, s in enumerate(shards):
            want = storage.join(out, naming.shard_name(split, i, n))
            if storage.normalize(s["path"]) != want:
                raise TfdsMetadataError(
                    f"{split}: shard {i} is {s['path']}, not {want}: TFDS reads a split's files "
                    "by name from the folder of dataset_info.json; describe the folder the "
                    "manifest's shards are in"
                )
        infos.append(
            {
                "name": name,
                "numShards": str(n),
                "shardLengths": [str(int(s["num_records"])) for s in shards],
                "numBytes": str(sum(int(s["num_bytes"]) for s in shards)),
                "filepathTemplate": f"{naming.file_prefix(split)}-{SHARD_PLACEHOLDER}",
            }
        )
    return infos


def features_config(
    keys: Iterable[str], *, kind: str = layout.COMMON, num_classes: int | None = None
) -> dict[str, Any]:
    """features.json (pure): a nested FeaturesDict whose flattened keys are ``keys``,
    described as the source layout ``kind`` has them (a TFDS source's ``label``
    is a ClassLabel of ``num_classes`` when given)."""
    known = TFDS_FEATURES if kind == layout.TFDS else KNOWN_FEATURES
    tree: dict[str, Any] = {}
    for key in keys:
        if key not in known:
            raise TfdsMetadataError(
                f"no TFDS description for feature {key!r}; known: {', '.join(known)}"
            )
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = known[key][0]
        if kind == layout.TFDS and key == "label" and num_classes:
            node[leaf] = _class_label(num_classes)

    def as_dict(node: dict[str, Any]) -> dict[str, Any]:
        feats = {k: v if "pythonClassName" in v else as_dict(v) for k, v in sorted(node.items())}
        return {
            "pythonClassName": _TFDS + "features_dict.FeaturesDict",
            "featuresDict": {"features": feats},
        }

    return as_dict(tree)


def present_features(manifest: dict[str, Any]) -> list[str]:
    """The known features of the first record of the first non-empty split,
    required ones first (a ranged read of that one record)."""
    from beam_jobs.source.example_proto import Example
    from beam_jobs.source.tfrecord import HEADER_LEN, OVERHEAD, check_framed, parse_header

    tfds_source = manifest_naming(manifest).kind == layout.TFDS
    required = TFDS_REQUIRED_FEATURES if tfds_source else REQUIRED_FEATURES
    known = TFDS_FEATURES if tfds_source else KNOWN_FEATURES
    for _, entry in sorted(manifest["splits"].items()):
        shard = next((s for s in entry["shards"] if s["num_records"]), None)
        if shard is None:
            continue
        path = shard["path"]
        with storage.RangeReader() as reader:
            length = parse_header(reader.read(path, 0, HEADER_LEN), path, 0)
            record = check_framed(reader.read(path, 0, length + OVERHEAD), path, 0)
        ex = Example()
        ex.ParseFromString(record.data)
        fmap = ex.features.feature
        missing = [k for k in required if k not in fmap]
        if missing:
            raise TfdsMetadataError(f"{path}: the first record has no {', '.join(missing)}")
        optional = [
            k
            for k, (_, kind) in known.items()
            if k not in required
            and k in fmap
            and fmap[k].WhichOneof("kind") == kind
            and len(getattr(fmap[k], kind).value) == 1
        ]
        return list(required) + optional
    return list(required)


def source_num_classes(manifest: dict[str, Any]) -> int | None:
    """A TFDS source's number of classes: its labels' range (``source.label_range``,
    0-based) as validated, else the classes counted."""
    src = manifest.get("source") or {}
    rng = src.get("label_range")
    if rng:
        return int(rng[1]) + 1
    return int(src["num_classes"]) if src.get("num_classes") else None


def dataset_info(
    manifest: dict[str, Any],
    output_uri: str,
    *,
    name: str | None = None,
    version: str = DEFAULT_VERSION,
) -> dict[str, Any]:
    """dataset_info.json (pure). ``name``: the dataset's (default: the TFDS
    source's own, ``imagenet2012``, or ``ssl_imagenet_splits``)."""
    naming = manifest_naming(manifest)
    splits = split_infos(manifest, output_uri)
    mapping = ", ".join(
        f"{s} -> {tfds_split_name(s)}"
        for s in sorted(manifest["splits"])
        if tfds_split_name(s) != s
    )
    desc = (
        "Reproducible semi-supervised ImageNet splits (labelled subsets train{N}.{seed}, "
        "the full reshuffle train, validation), described from the manifest "
        f"{storage.join(storage.normalize(output_uri), 'manifest.json')} "
        f"updated at {manifest.get('updated_at')}. TFDS split names replace '.' by '_'"
        + (f" ({mapping})." if mapping else ".")
    )
    info: dict[str, Any] = {
        "name": name or (naming.dataset if naming.kind == layout.TFDS else DEFAULT_NAME),
        "version": version,
        "description": desc,
        "moduleName": __name__,
        "fileFormat": "tfrecord",
        "sizeInBytes": str(sum(int(s["numBytes"]) for s in splits)),
        "splits": splits,
    }
    if naming.kind == layout.TFDS:  # as imagenet2012's: as_supervised=True gives (image, label)
        info["supervisedKeys"] = {
            "tuple": {"items": [{"featureKey": "image"}, {"featureKey": "label"}]}
        }
    return info


def write_tfds_metadata(
    manifest: dict[str, Any],
    output_uri: str,
    *,
    features: Iterable[str] | None = None,
    name: str | None = None,
    version: str = DEFAULT_VERSION,
    label_names: list[str] | None = None,
) -> list[str]:
    """Write ``features.json`` and ``dataset_info.json`` for the manifest's
    splits into ``output_uri`` (each file atomically); return their URIs.

    ``features``: the Example keys to describe (default: the required ones
    and the optional ones the first record has; see the module docstring).
    ``label_names``: a TFDS source's class names (its ``label.labels.txt``),
    written beside them for its ``label`` ClassLabel.
    Raises TfdsMetadataError, before writing anything, if a split cannot be
    described (a name collision, shards outside ``output_uri``).
    """
    out = storage.normalize(output_uri)
    info = dataset_info(manifest, out, name=name, version=version)
    kind = manifest_naming(manifest).kind
    keys = list(features) if features is not None else present_features(manifest)
    num_classes = source_num_classes(manifest) if kind == layout.TFDS else None
    if label_names and kind == layout.TFDS:
        num_classes = len(label_names)
    feats = features_config(keys, kind=kind, num_classes=num_classes)
    docs: list[tuple[str, Any]] = [(FEATURES_FILE, feats), (DATASET_INFO_FILE, info)]
    if label_names and kind == layout.TFDS and "label" in keys:
        docs.insert(0, (LABEL_NAMES_FILE, "".join(f"{n}\n" for n in label_names)))
    written = []
    # features.json first: dataset_info.json names the splits, and a reader
    # that sees the new splits must also see features that describe them.
    for fname, doc in docs:
        uri = storage.join(out, fname)
        if isinstance(doc, str):
            storage.write_text(uri, doc, "text/plain")
        else:
            storage.write_text(
                uri, json.dumps(doc, indent=2, sort_keys=True) + "\n", "application/json"
            )
        written.append(uri)
    return written


__all__ = [
    "DATASET_INFO_FILE",
    "FEATURES_FILE",
    "KNOWN_FEATURES",
    "REQUIRED_FEATURES",
    "TFDS_FEATURES",
    "TFDS_REQUIRED_FEATURES",
    "TfdsMetadataError",
    "dataset_info",
    "features_config",
    "manifest_naming",
    "split_infos",
    "tfds_split_name",
    "write_tfds_metadata",
]
