"""``tf.train.Example`` without TensorFlow.

Beam workers should not need TensorFlow (hundreds of MB, seconds to import)
just to read four fields of an Example. This module declares the same schema as
``tensorflow/core/example/{example,feature}.proto`` in a private descriptor
pool (so it never clashes with TensorFlow's own classes when both are loaded)
and lets the protobuf runtime (upb, in C) parse and serialize it. The wire
format is identical to TensorFlow's; the tests check that against TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _build_pool() -> descriptor_pool.DescriptorPool:
    fd = descriptor_pb2.FileDescriptorProto(
        name="ssl_splits/tensorflow_example.proto", package="tensorflow", syntax="proto3"
    )

    def message(name: str) -> descriptor_pb2.DescriptorProto:
        m = fd.message_type.add()
        m.name = name
        return m

    def field(
        m: Any,
        name: str,
        number: int,
        type_: int,
        label: int = _F.LABEL_OPTIONAL,
        type_name: str | None = None,
        oneof: int | None = None,
        packed: bool = False,
    ) -> None:
        f = m.field.add(name=name, number=number, type=type_, label=label)
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof
        if packed:
            f.options.packed = True

    field(message("BytesList"), "value", 1, _F.TYPE_BYTES, _F.LABEL_REPEATED)
    field(message("FloatList"), "value", 1, _F.TYPE_FLOAT, _F.LABEL_REPEATED, packed=True)
    field(message("Int64List"), "value", 1, _F.TYPE_INT64, _F.LABEL_REPEATED, packed=True)
    feature = message("Feature")
    feature.oneof_decl.add(name="kind")
    field(feature, "bytes_list", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.BytesList", oneof=0)
    field(feature, "float_list", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.FloatList", oneof=0)
    field(feature, "int64_list", 3, _F.TYPE_MESSAGE, type_name=".tensorflow.Int64List", oneof=0)
    features = message("Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    field(entry, "key", 1, _F.TYPE_STRING)
    field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    field(
        features,
        "feature",
        1,
        _F.TYPE_MESSAGE,
        _F.LABEL_REPEATED,
        type_name=".tensorflow.Features.FeatureEntry",
    )
    field(message("Example"), "features", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return pool


_POOL = _build_pool()
# Classes made at run time from the pool: their fields (``features``, ...) are
# unknown to a type checker, hence Any.
Example: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Example"))
Features: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Features"))

FeatureValue = bytes | str | int | float | list[bytes] | list[int] | list[float]


def build_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serialize a dict of features as a tf.train.Example.

    ``bytes``/``str`` become a one-value bytes_list, ``int`` an int64_list,
    ``float`` a float_list; lists of those become multi-value lists.
    Serialized deterministically: map entries are sorted by key, whatever the
    order given, so equal dicts give equal bytes (the same bytes as TensorFlow's
    ``SerializeToString(deterministic=True)``).
    """
    ex = Example()
    fmap = ex.features.feature
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        feat = fmap[key]
        if values and isinstance(values[0], (bytes, str)):
            feat.bytes_list.value.extend(
                v.encode("utf-8") if isinstance(v, str) else v for v in values
            )
        elif values and isinstance(values[0], float):
            feat.float_list.value.extend(values)
        else:
            feat.int64_list.value.extend(values)
    return bytes(ex.SerializeToString(deterministic=True))


class ExampleError(ValueError):
    """A record that is not a usable ImageNet Example; ``kind`` tags the problem."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True)
class RecordKeys:
    """The Example keys of the fields the pipeline relies on, per source layout."""

    encoded: str
    filename: str
    label: str
    synset: str | None  # optional feature; None: the layout has none


# The common converters (image/*, labels 1..1000) and TensorFlow Datasets'
# imagenet2012 (image, file_name, label 0..999).
COMMON_KEYS = RecordKeys(
    "image/encoded", "image/filename", "image/class/label", "image/class/synset"
)
TFDS_KEYS = RecordKeys("image", "file_name", "label", None)


def record_keys(kind: str) -> RecordKeys:
    """The keys of a layout kind (``common`` or ``tfds``; see ``beam_jobs.layout``)."""
    try:
        return {"common": COMMON_KEYS, "tfds": TFDS_KEYS}[kind]
    except KeyError:
        raise ValueError(f"unknown layout kind {kind!r}") from None


@dataclass(frozen=True)
class ImageRecord:
    """The fields of an ImageNet Example that the pipeline relies on."""

    filename: str
    label: int
    synset: str  # "" when the record has no image/class/synset
    encoded_len: int


def _single(fmap: Any, key: str, kind: str, required: bool) -> Any:
    if key not in fmap:
        if required:
            raise ExampleError("missing_feature", f"no {key!r} feature")
        return None
    feat = fmap[key]
    which = feat.WhichOneof("kind")
    if which != kind:
        raise ExampleError("wrong_type", f"{key!r} is {which or 'empty'}, expected {kind}")
    values = getattr(feat, kind).value
    if len(values) != 1:
        raise ExampleError("wrong_type", f"{key!r} has {len(values)} values, expected 1")
    return values[0]


def parse_image_record(data: bytes, keys: RecordKeys = COMMON_KEYS) -> ImageRecord:
    """Parse an ImageNet ``tf.train.Example`` and check its required features.

    Required (common layout; ``keys`` names them for another): non-empty
    ``image/encoded`` (bytes), non-empty UTF-8 ``image/filename`` (bytes),
    ``image/class/label`` (one int64). Optional: ``image/class/synset`` (one
    bytes value). Raises :class:`ExampleError`.
    """
    ex = Example()
    try:
        ex.ParseFromString(data)
    except Exception as err:  # protobuf raises DecodeError (a Message.Error)
        # The error's type only: its text is the parser's, and no byte of the record is quoted.
        raise ExampleError(
            "not_an_example", f"does not parse as tf.train.Example ({type(err).__name__})"
        ) from None
    fmap = ex.features.feature
    return _well_formed(fmap, keys) or _checked(fmap, keys)


def _well_formed(fmap: Any, keys: RecordKeys) -> ImageRecord | None:
    """The fast path (every well-formed record): one lookup per feature.
    None for anything unusual, which :func:`_checked` names."""
    get = fmap.get
    enc, name, lab = get(keys.encoded), get(keys.filename), get(keys.label)
    syn = get(keys.synset) if keys.synset else None
    if enc is not None and name is not None and lab is not None:
        ev, nv, lv = enc.bytes_list.value, name.bytes_list.value, lab.int64_list.value
        sv = syn.bytes_list.value if syn is not None else None
        if (
            len(ev) == 1
            and len(nv) == 1
            and len(lv) == 1
            and (sv is None or len(sv) == 1)
            and ev[0]
        ):
            try:
                filename = nv[0].decode("utf-8")
            except UnicodeDecodeError:
                filename = ""
            if filename and "," not in filename and "\n" not in filename:
                return ImageRecord(
                    filename=filename,
                    label=int(lv[0]),
                    synset=sv[0].decode("utf-8", "replace") if sv else "",
                    encoded_len=len(ev[0]),
                )
    return None


def _checked(fmap: Any, keys: RecordKeys) -> ImageRecord:
    """The careful path: the record, or an :class:`ExampleError` naming what
    is wrong with it."""
    encoded = _single(fmap, keys.encoded, "bytes_list", True)
    if not encoded:
        raise ExampleError("empty_image", f"'{keys.encoded}' is empty")
    raw_name = _single(fmap, keys.filename, "bytes_list", True)
    # What is wrong with the name, never the name: the record is a user-named file's content.
    try:
        filename = raw_name.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ExampleError(
            "bad_filename",
            f"'{keys.filename}' is not UTF-8 (byte {err.start} of {len(raw_name)})",
        ) from None
    if not filename:
        raise ExampleError("bad_filename", f"'{keys.filename}' is empty")
    if "," in filename or "\n" in filename:
        raise ExampleError(
            "bad_filename",
            f"'{keys.filename}' has a ',' or a newline (at character "
            f"{min(i for i in (filename.find(','), filename.find(chr(10))) if i >= 0)})",
        )
    label = int(_single(fmap, keys.label, "int64_list", True))
    raw_synset = _single(fmap, keys.synset, "bytes_list", False) if keys.synset else None
    synset = raw_synset.decode("utf-8", "replace") if raw_synset is not None else ""
    return ImageRecord(filename=filename, label=label, synset=synset, encoded_len=len(encoded))


@dataclass(frozen=True)
class ImageColumns:
    """:func:`parse_image_record`'s fields for a batch of records, as columns."""

    filename: pa.StringArray
    label: np.ndarray  # int64
    synset: pa.StringArray  # "" where a record has no synset


def image_columns(datas: Sequence[bytes], keys: RecordKeys = COMMON_KEYS) -> ImageColumns | None:
    """What :func:`parse_image_record` returns for each record, as columns, if
    every record is a plainly well-formed one; otherwise None (the caller then
    parses record by record, which names what is wrong).

    Plainly well-formed: it parses; ``encoded``, ``filename`` and ``label``
    each hold exactly one value of their kind (``synset``, if present, too);
    the image is not empty; names and synsets are UTF-8; names are not empty
    and have no ``,`` or newline. For such a record :func:`parse_image_record`
    returns these same values; for any other it raises or takes its careful
    path, and so does this function's caller. The per-record Python work is
    the parse and the four lookups; the text checks are done once per batch.
    """
    names: list[bytes] = []
    labels: list[int] = []
    synsets: list[bytes] = []
    add_name, add_label, add_synset = names.append, labels.append, synsets.append
    parse = Example.FromString
    k_enc, k_name, k_label, k_synset = keys.encoded, keys.filename, keys.label, keys.synset
    for data in datas:
        try:
            get = parse(data).features.feature.get
        except Exception:  # DecodeError: the careful path names it
            return None
        enc, name, lab = get(k_enc), get(k_name), get(k_label)
        if enc is None or name is None or lab is None:
            return None
        ev, nv, lv = enc.bytes_list.value, name.bytes_list.value, lab.int64_list.value
        if len(ev) != 1 or len(nv) != 1 or len(lv) != 1 or not ev[0]:
            return None
        syn = get(k_synset) if k_synset else None
        if syn is None:
            add_synset(b"")
        else:
            sv = syn.bytes_list.value
            if len(sv) != 1:
                return None
            add_synset(sv[0])
        add_name(nv[0])
        add_label(lv[0])
    # Every name and synset is UTF-8 if and only if these decode: an ASCII
    # separator can neither complete nor start a multi-byte sequence.
    try:
        b"\n".join(names).decode("utf-8")
        b"\n".join(synsets).decode("utf-8")
    except UnicodeDecodeError:
        return None
    # In UTF-8 the bytes of "," and newline stand for nothing else.
    joined = b"".join(names)
    if not all(names) or b"," in joined or b"\n" in joined:
        return None
    return ImageColumns(
        filename=pa.array(names, pa.binary()).view(pa.string()),
        label=np.array(labels, dtype=np.int64),
        synset=pa.array(synsets, pa.binary()).view(pa.string()),
    )


def parse_features(data: bytes) -> dict[str, list[Any]]:
    """Parse any Example into ``{key: [values]}`` (for tests and debugging)."""
    ex = Example()
    ex.ParseFromString(data)
    out: dict[str, list[Any]] = {}
    for key, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        out[key] = list(getattr(feat, kind).value) if kind else []
    return out
