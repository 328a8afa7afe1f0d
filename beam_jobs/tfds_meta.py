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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from beam_jobs import storage
from beam_jobs.catalog import shard_name

DATASET_INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
DEFAULT_NAME = "ssl_imagenet_splits"
DEFAULT_VERSION = "1.0.0"
SHARD_PLACEHOLDER = "{SHARD_X_OF_Y}"

_TFDS = "tensorflow_datasets.core.features."
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _image(doc: str) -> dict[str, Any]:
    return {"pythonClassName": _TFDS + "image_feature.Image", "description": doc,
            "image": {"shape": {"dimensions": ["-1", "-1", "3"]}, "dtype": "uint8",
                      "encodingFormat": "jpeg"}}


def _text(doc: str) -> dict[str, Any]:
    return {"pythonClassName": _TFDS + "text_feature.Text", "description": doc, "text": {}}


def _int64(doc: str) -> dict[str, Any]:
    return {"pythonClassName": _TFDS + "tensor_feature.Tensor", "description": doc,
            "tensor": {"shape": {}, "dtype": "int64", "encoding": "none"}}


# Example key -> (TFDS feature JSON, the Example kind it must have).
KNOWN_FEATURES: dict[str, tuple[dict[str, Any], str]] = {
    "image/encoded": (_image("the image, JPEG-encoded in the record"), "bytes_list"),
    "image/filename": (_text("the source file name, e.g. n01440764_10026.JPEG"), "bytes_list"),
    "image/class/label": (_int64("the source's class label (1..1000 from the common "
                                 "converter)"), "int64_list"),
    "image/class/synset": (_text("WordNet synset id, e.g. n01440764"), "bytes_list"),
    "image/class/text": (_text("human-readable class name"), "bytes_list"),
    "image/height": (_int64("image height in pixels"), "int64_list"),
    "image/width": (_int64("image width in pixels"), "int64_list"),
    "image/channels": (_int64("number of channels (3)"), "int64_list"),
    "image/colorspace": (_text("colorspace, e.g. RGB"), "bytes_list"),
    "image/format": (_text("image format, e.g. JPEG"), "bytes_list"),
}
REQUIRED_FEATURES = ("image/encoded", "image/filename", "image/class/label")


class TfdsMetadataError(ValueError):
    """The manifest's splits cannot be described for TFDS as they are."""


def tfds_split_name(split: str) -> str:
    """Our split name as a TFDS split name: ``train128116.1`` -> ``train128116_1``."""
    name = split.replace(".", "_")
    if not _SPLIT_NAME.match(name):
        raise TfdsMetadataError(f"split {split!r} has no TFDS name: TFDS split names are "
                                "letters, digits, '_' and '-'")
    return name


def split_infos(manifest: dict[str, Any], output_uri: str) -> list[dict[str, Any]]:
    """The ``splits`` of dataset_info.json (pure): one per manifest split, by name."""
    out = storage.normalize(output_uri)
    infos, seen = [], {}
    for split, entry in sorted(manifest["splits"].items()):
        name = tfds_split_name(split)
        if name in seen:
            raise TfdsMetadataError(f"splits {seen[name]!r} and {split!r} would both be the "
                                    f"TFDS split {name!r}")
        seen[name] = split
        n = int(entry["num_shards"])
        shards = entry["shards"]
        if len(shards) != n:
            raise TfdsMetadataError(f"{split}: the manifest lists {len(shards)} shards, "
                                    f"num_shards says {n}")
        for i, s in enumerate(shards):
            want = storage.join(out, shard_name(split, i, n))
            if storage.normalize(s["path"]) != want:
                raise TfdsMetadataError(
                    f"{split}: shard {i} is {s['path']}, not {want}: TFDS reads a split's files "
                    "by name from the folder of dataset_info.json; describe the folder the "
                    "manifest's shards are in")
        infos.append({
            "name": name,
            "numShards": str(n),
            "shardLengths": [str(int(s["num_records"])) for s in shards],
            "numBytes": str(sum(int(s["num_bytes"]) for s in shards)),
            "filepathTemplate": f"{split}-{SHARD_PLACEHOLDER}",
        })
    return infos


def features_config(keys: Iterable[str]) -> dict[str, Any]:
    """features.json (pure): a nested FeaturesDict whose flattened keys are ``keys``."""
    tree: dict[str, Any] = {}
    for key in keys:
        if key not in KNOWN_FEATURES:
            raise TfdsMetadataError(f"no TFDS description for feature {key!r}; known: "
                                    f"{', '.join(KNOWN_FEATURES)}")
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = KNOWN_FEATURES[key][0]

    def as_dict(node: dict[str, Any]) -> dict[str, Any]:
        feats = {k: v if "pythonClassName" in v else as_dict(v) for k, v in sorted(node.items())}
        return {"pythonClassName": _TFDS + "features_dict.FeaturesDict",
                "featuresDict": {"features": feats}}

    return as_dict(tree)


def present_features(manifest: dict[str, Any]) -> list[str]:
    """The known features of the first record of the first non-empty split,
    required ones first (a ranged read of that one record)."""
    from beam_jobs.example_proto import Example
    from beam_jobs.tfrecord import HEADER_LEN, OVERHEAD, check_framed, parse_header

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
        missing = [k for k in REQUIRED_FEATURES if k not in fmap]
        if missing:
            raise TfdsMetadataError(f"{path}: the first record has no {', '.join(missing)}")
        optional = [k for k, (_, kind) in KNOWN_FEATURES.items()
                    if k not in REQUIRED_FEATURES and k in fmap
                    and fmap[k].WhichOneof("kind") == kind
                    and len(getattr(fmap[k], kind).value) == 1]
        return list(REQUIRED_FEATURES) + optional
    return list(REQUIRED_FEATURES)


def dataset_info(manifest: dict[str, Any], output_uri: str, *, name: str = DEFAULT_NAME,
                 version: str = DEFAULT_VERSION) -> dict[str, Any]:
    """dataset_info.json (pure)."""
    splits = split_infos(manifest, output_uri)
    mapping = ", ".join(f"{s} -> {tfds_split_name(s)}" for s in sorted(manifest["splits"])
                        if tfds_split_name(s) != s)
    desc = ("Reproducible semi-supervised ImageNet splits (labelled subsets train{N}.{seed}, "
            "the full reshuffle train, validation), described from the manifest "
            f"{storage.join(storage.normalize(output_uri), 'manifest.json')} "
            f"updated at {manifest.get('updated_at')}. TFDS split names replace '.' by '_'"
            + (f" ({mapping})." if mapping else "."))
    return {
        "name": name,
        "version": version,
        "description": desc,
        "moduleName": __name__,
        "fileFormat": "tfrecord",
        "sizeInBytes": str(sum(int(s["numBytes"]) for s in splits)),
        "splits": splits,
    }


def write_tfds_metadata(manifest: dict[str, Any], output_uri: str, *,
                        features: Iterable[str] | None = None, name: str = DEFAULT_NAME,
                        version: str = DEFAULT_VERSION) -> list[str]:
    """Write ``features.json`` and ``dataset_info.json`` for the manifest's
    splits into ``output_uri`` (each file atomically); return their URIs.

    ``features``: the Example keys to describe (default: the required ones
    and the optional ones the first record has; see the module docstring).
    Raises TfdsMetadataError, before writing anything, if a split cannot be
    described (a name collision, shards outside ``output_uri``).
    """
    out = storage.normalize(output_uri)
    info = dataset_info(manifest, out, name=name, version=version)
    keys = list(features) if features is not None else present_features(manifest)
    feats = features_config(keys)
    written = []
    # features.json first: dataset_info.json names the splits, and a reader
    # that sees the new splits must also see features that describe them.
    for fname, doc in ((FEATURES_FILE, feats), (DATASET_INFO_FILE, info)):
        uri = storage.join(out, fname)
        storage.write_text(uri, json.dumps(doc, indent=2, sort_keys=True) + "\n",
                           "application/json")
        written.append(uri)
    return written


__all__ = ["DATASET_INFO_FILE", "FEATURES_FILE", "KNOWN_FEATURES", "REQUIRED_FEATURES",
           "TfdsMetadataError", "dataset_info", "features_config", "split_infos",
           "tfds_split_name", "write_tfds_metadata"]
