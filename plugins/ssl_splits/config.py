"""The DAG's params: JSON schema for the trigger form, and the run config.

``PARAMS`` is what the Airflow UI renders as the trigger form and what the
CLI's ``--conf`` is validated against (per param, by JSON schema).
``resolve(params)`` adds the checks a per-param schema cannot express (URIs
that overlap, a sharding file for a seed that is not built, Dataflow settings
when running on Dataflow) and fills the defaults that depend on other params.
It runs in the DAG's first task, before any Beam job starts.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from beam_jobs import access, defaults, layout

# gs://bucket/any/path, or an absolute local path; no ".." components.
from beam_jobs.planning import protocols

URI_PATTERN = r"^(gs://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](/.*)?|/.*)$"
DOTDOT_PATTERN = r"(^|/)\.\.(/|$)"
MAX_SEED = 1_000_000
# A seed as the trigger form's text box sends it: digits, spaces around them; a blank
# line (a trailing newline) is allowed and ignored.
SEED_LINE_PATTERN = r"^\s*([0-9]{1,7})?\s*$"
# A fraction as the form's text box sends it (one per line): a decimal, spaces around it;
# blank lines are ignored. Its range, (0, 1], is checked by resolve().
FRACTION_LINE_PATTERN = r"^\s*([0-9]{0,3}(\.[0-9]{0,15})?)\s*$"
MAX_FRACTIONS = 10
# Bounds of the other lists a user passes (the form's maxItems/maxProperties say the
# same): one sharding file per seed at most, and a few name lists.
MAX_SEEDS = 100
MAX_SHARDING_FILES = MAX_SEEDS
MAX_NAME_LISTS = 20
# A URI's length (GCS object names are at most 1,024 bytes; Linux paths 4,096).
MAX_URI_LENGTH = 2048
DEFAULT_NUM_CLASSES = 1000
RUNNERS = ["DirectRunner", "DataflowRunner"]
SAMPLINGS = list(defaults.SAMPLINGS)
# Dataflow settings not given in the params (the form shows them as its defaults).
DATAFLOW_REGION = "us-central1"
DATAFLOW_MACHINE_TYPE = "n2-standard-4"
DATAFLOW_MAX_WORKERS = 20
# Every split is verified exactly from metadata (sizes and CRC32Cs predicted
# from the plan and the catalog); "always" adds a Beam job that re-reads every
# record. "never" is kept for confs written before the exact check existed.
DEEP_VERIFY = {"auto": False, "always": True, "never": False}
# Trigger-form sections (collapsed by default; the main fields stay in "Run Parameters").
ADVANCED = "Advanced: shards, checks, folders"
DATAFLOW = "Dataflow (runner DataflowRunner)"


class ConfigError(AirflowFailException, ValueError):
    """A param or a combination of params is not acceptable; says which and why.

    An AirflowFailException: the task fails at once, without retries (the same
    params would fail again)."""


# The deployment's default source and output folders: what scheduled runs (and
# backfills) build, and the trigger form's initial values.
SOURCE_ENV = "SSL_SPLITS_SOURCE_URI"
OUTPUT_ENV = "SSL_SPLITS_OUTPUT_URI"
SCHEDULE_ENV = "SSL_SPLITS_SCHEDULE"


def schedule() -> str | None:
    """The DAG's schedule (``SSL_SPLITS_SCHEDULE``; unset: none). A scheduled run
    has no one to fill in the form: it needs the deployment's default source and
    output folders, and says so (Airflow refuses a scheduled DAG with required
    params that have no default)."""
    value = (os.environ.get(SCHEDULE_ENV) or "").strip() or None
    if value is not None:
        missing = [k for k in (SOURCE_ENV, OUTPUT_ENV) if not os.environ.get(k)]
        if missing:
            raise ConfigError(
                f"{SCHEDULE_ENV}={value!r}: a scheduled run needs the folders it builds from "
                f"and into: set {' and '.join(missing)} (the deployment's default source_uri "
                "and output_uri), or leave the schedule empty"
            )
    return value


def _uri_param(
    default: Any, title: str, description: str, nullable: bool = False, **extra: Any
) -> Param:
    string: dict[str, Any] = {
        "type": "string",
        "pattern": URI_PATTERN,
        "not": {"pattern": DOTDOT_PATTERN},
        "maxLength": MAX_URI_LENGTH,
    }
    if nullable:
        return Param(
            default,
            type=["null", "string"],
            title=title,
            description=description,
            anyOf=[{"type": "null"}, string],
            **extra,
        )
    return Param(default, title=title, description=description, minLength=1, **string, **extra)


def params() -> dict[str, Param]:
    """The trigger form: every param with a title, help text and a fitting widget."""
    env = os.environ.get
    return {
        "source_uri": _uri_param(
            env(SOURCE_ENV) or None,
            "Source folder",
            "Folder holding ImageNet train-SSSSS-of-NNNNN TFRecords (and optional "
            "validation-*): gs://bucket/path or an absolute local path, inside the "
            "deployment's allowed roots (SSL_SPLITS_ALLOWED_ROOTS) when it sets them. Required "
            f"(the deployment's default: {SOURCE_ENV}).",
        ),
        "output_uri": _uri_param(
            env(OUTPUT_ENV) or None,
            "Output folder",
            "Where the splits are written as {split}-SSSSS-of-NNNNN. Must not be the source "
            f"folder, inside it, or contain it. Required (the deployment's default: {OUTPUT_ENV}).",
        ),
        "manifest_uri": _uri_param(
            None,
            "Manifest URI",
            "Where the manifest JSON is published. Empty: {output_uri}/manifest.json.",
            nullable=True,
        ),
        "protocol": Param(
            protocols.SEEDED,
            type="string",
            enum=list(protocols.PROTOCOLS),
            title="Labelled splits",
            description="seeded: our own draws, one per seed (Seeds, Fraction, Sampling). "
            "fixmatch: FixMatch's published 10% splits, reproduced exactly: split s "
            "for each seed s in Seeds (1-5), train128116.{s}. simclr: SimCLR's 1% "
            "and 10% subsets, the standard protocol of SimCLR, BYOL, SwAV "
            "(train12811.simclr, train128116.simclr; Seeds, Fraction and Sampling do "
            "not apply). The published files ship with the product.",
            values_display={name: f"{name}: {p.title}" for name, p in protocols.PROTOCOLS.items()},
        ),
        # Items without one "type": the form shows a text box, one seed per line (Airflow
        # 3.3's multi-select picks only from a fixed list, and its JSON editor needs
        # brackets); the box sends strings, which parse_seeds turns into integers.
        "seeds": Param(
            list(defaults.SEEDS),
            type="array",
            title="Seeds",
            description="Labelled splits to build, one seed per line (train{N}.{seed}): "
            "3 alone rebuilds seed 3. In --conf and the REST API a list of "
            "integers: [3]; [] builds none. With protocol fixmatch: which of the "
            "published splits 1-5.",
            items={
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": MAX_SEED},
                    {"type": "string", "pattern": SEED_LINE_PATTERN},
                ]
            },
            uniqueItems=True,
            maxItems=MAX_SEEDS,
        ),
        "fraction": Param(
            float(defaults.FRACTION),
            type="number",
            title="Fraction",
            description="Share of the training set in each labelled split, in (0, 1]. "
            "0.1 gives 128,116 of ImageNet's 1,281,167.",
            exclusiveMinimum=0,
            maximum=1,
        ),
        # A text box, one fraction per line, as Seeds (the items have no single "type").
        "fractions": Param(
            [],
            type="array",
            title="Several fractions",
            description="Build every seed at each of these fractions in one run, one per line: "
            "0.1, 0.05 and 0.01 give train128116.{seed}, train64058.{seed} and "
            "train12811.{seed} on ImageNet (what FixMatch's ImageNet trainer reads). "
            "Set, it replaces Fraction. The splits of one seed are nested: the "
            'smaller ones inside the larger (README, "How a split is derived"). '
            "In --conf a list of numbers: [0.1, 0.05, 0.01]. Protocol seeded only.",
            items={
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    {"type": "string", "pattern": FRACTION_LINE_PATTERN},
                ]
            },
            maxItems=MAX_FRACTIONS,
        ),
        "sampling": Param(
            defaults.SAMPLING,
            type="string",
            enum=SAMPLINGS,
            title="Sampling",
            description="stratified: the same share of every class (as FixMatch's published "
            "splits); uniform: a plain random draw.",
            values_display={
                "stratified": "stratified (same share of every class)",
                "uniform": "uniform (plain random draw)",
            },
        ),
        "sharding_files": Param(
            {},
            type="object",
            title="Published split files",
            description='{"seed": "uri"} of filename,shard,index files to reproduce exactly, '
            'e.g. {"1": "gs://bucket/fixmatch/files2shards_train_size128116_split1.txt"}. '
            "Each seed must also be in Seeds. A file: at most 64 MiB, no more lines than "
            "the source has records.",
            patternProperties={
                "^[0-9]+$": {
                    "type": "string",
                    "pattern": URI_PATTERN,
                    "not": {"pattern": DOTDOT_PATTERN},
                    "maxLength": MAX_URI_LENGTH,
                }
            },
            additionalProperties=False,
            maxProperties=MAX_SHARDING_FILES,
        ),
        "name_lists": Param(
            {},
            type="object",
            title="Name lists",
            description='{"label": "uri"} of files with one image file name per line '
            '(SimCLR\'s format), e.g. {"mysubset": "gs://bucket/names.txt"}: each '
            "gives the split train{N}.{label} of exactly those records (every name "
            "must be in the source), in the product's order and sharding. A label "
            "is a lower-case letter, then letters, digits or _. At most "
            f"{MAX_NAME_LISTS} lists; a list: at most 64 MiB, no more names than the "
            "source has records.",
            patternProperties={
                protocols.LABEL_PATTERN: {
                    "type": "string",
                    "pattern": URI_PATTERN,
                    "not": {"pattern": DOTDOT_PATTERN},
                    "maxLength": MAX_URI_LENGTH,
                }
            },
            additionalProperties=False,
            maxProperties=MAX_NAME_LISTS,
        ),
        "unsupervised": Param(
            True,
            type="boolean",
            title="Build the full reshuffle",
            description="Also build 'train': every training record once, reshuffled "
            "(the unlabelled data).",
        ),
        "runner": Param(
            "DirectRunner",
            type="string",
            enum=RUNNERS,
            title="Beam runner",
            description="DirectRunner runs the Beam jobs on this Airflow worker; "
            "DataflowRunner on Google Cloud Dataflow (set the Dataflow params).",
            values_display={
                "DirectRunner": "DirectRunner (local, on the Airflow worker)",
                "DataflowRunner": "DataflowRunner (Google Cloud Dataflow)",
            },
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force rebuild",
            description="Rebuild the requested splits even if a verified identical split "
            "already exists (the validation copy is redone only when it differs "
            "from the source).",
        ),
        "unsupervised_seed": Param(
            0,
            type="integer",
            minimum=0,
            maximum=MAX_SEED,
            title="Reshuffle seed",
            description="Seed of the full reshuffle's order.",
            section=ADVANCED,
        ),
        "num_shards": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100000,
            title="Shards per labelled split",
            description="Empty: keep the source's shard size (102 for 10% of ImageNet).",
            section=ADVANCED,
        ),
        "unsupervised_shards": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100000,
            title="Shards of the reshuffle",
            description="Empty: as many as the source (1,024).",
            section=ADVANCED,
        ),
        "copy_validation": Param(
            True,
            type="boolean",
            title="Copy the validation set",
            description="Copy validation-* shards beside the splits, when the source has them.",
            section=ADVANCED,
        ),
        "num_classes": Param(
            DEFAULT_NUM_CLASSES,
            type="integer",
            minimum=1,
            maximum=100000,
            title="Number of classes",
            description="Valid labels are 1..num_classes (the common converter's labels).",
            section=ADVANCED,
        ),
        "expected_total": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Expected training records",
            description="Fail validation unless the source holds exactly this many "
            "(1281167 for ImageNet). Empty: no check.",
            section=ADVANCED,
        ),
        "deep_verify": Param(
            "auto",
            type="string",
            enum=list(DEEP_VERIFY),
            title="Deep verification",
            description="Every split is verified exactly before it is published: each shard's "
            "size and CRC32C must equal those its planned records give (from the "
            "catalog; no record data is read on GCS). always: also re-read every "
            "record in a Beam job, which names the record that differs.",
            values_display={
                "auto": "auto: exact check from metadata (on every runner)",
                "always": "always: exact check + re-read every record",
                "never": "never: same as auto (the exact check always runs)",
            },
            section=ADVANCED,
        ),
        "work_uri": _uri_param(
            None,
            "Work folder",
            "Catalog, plans, staging and reports. Empty: {output_uri}/_work.",
            nullable=True,
            section=ADVANCED,
        ),
        "direct_num_workers": Param(
            0,
            type="integer",
            minimum=0,
            maximum=64,
            title="DirectRunner workers",
            description="Worker processes per local Beam job; 0: one per core.",
            section=ADVANCED,
        ),
        "dataflow_project": Param(
            env("SSL_SPLITS_DATAFLOW_PROJECT") or None,
            type=["null", "string"],
            title="Dataflow project",
            description="Google Cloud project for Dataflow jobs.",
            section=DATAFLOW,
        ),
        "dataflow_region": Param(
            env("SSL_SPLITS_DATAFLOW_REGION") or DATAFLOW_REGION,
            type="string",
            title="Dataflow region",
            description="Region for Dataflow jobs.",
            section=DATAFLOW,
        ),
        "dataflow_temp_location": Param(
            env("SSL_SPLITS_DATAFLOW_TEMP_LOCATION") or None,
            type=["null", "string"],
            title="Dataflow temp location",
            description="gs:// folder for Dataflow's temp and staging files.",
            section=DATAFLOW,
        ),
        "dataflow_machine_type": Param(
            DATAFLOW_MACHINE_TYPE,
            type="string",
            title="Dataflow machine type",
            description="Worker machine type.",
            section=DATAFLOW,
        ),
        "dataflow_worker_package": Param(
            env("SSL_SPLITS_WORKER_PACKAGE") or None,
            type=["null", "string"],
            title="Dataflow worker package",
            description="The beam_jobs wheel Dataflow workers install (bin/build-worker-package "
            "writes dist/ssl_imagenet_splits-*.whl): a path on the Airflow worker or "
            "gs://.",
            section=DATAFLOW,
        ),
        "dataflow_template_location": _uri_param(
            None,
            "Only stage Dataflow templates here",
            "A gs:// folder. Set: every Beam job of the run is translated and staged, and its "
            "Dataflow job description (a classic template, {folder}/ssl-{job}-{split}, e.g. "
            "ssl-build-train128116-3) is written here instead of being submitted, for a platform team to review or launch "
            "(gcloud dataflow jobs run). Nothing is built, verified or published. Empty: jobs "
            "are submitted and run.",
            nullable=True,
            section=DATAFLOW,
        ),
        "dataflow_max_workers": Param(
            DATAFLOW_MAX_WORKERS,
            type="integer",
            minimum=1,
            maximum=1000,
            title="Dataflow max workers",
            description="Upper bound for autoscaling, per job.",
            section=DATAFLOW,
        ),
    }


@dataclass(frozen=True)
class DataflowSettings:
    """Where and how a run's Beam jobs run on Dataflow (``RunConfig.dataflow``)."""

    worker_package: str  # the beam_jobs wheel the workers install
    project: str
    temp_location: str  # gs:// folder for Dataflow's temp and staging files
    region: str = DATAFLOW_REGION
    machine_type: str = DATAFLOW_MACHINE_TYPE
    max_num_workers: int = DATAFLOW_MAX_WORKERS
    template_location: str | None = None  # set: stage job descriptions here, run nothing

    def to_dict(self) -> dict[str, Any]:
        # The XCom's key order since the first Dataflow runs.
        return {
            "worker_package": self.worker_package,
            "project": self.project,
            "region": self.region,
            "temp_location": self.temp_location,
            "machine_type": self.machine_type,
            "max_num_workers": self.max_num_workers,
            "template_location": self.template_location,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataflowSettings:
        return cls(**d)


@dataclass(frozen=True)
class RunConfig:
    """Resolved, checked params of one DAG run (JSON-serializable via to_dict)."""

    source_uri: str
    output_uri: str
    manifest_uri: str
    work_uri: str
    seeds: list[int]
    fraction: str
    sampling: str
    sharding_files: dict[str, str]
    unsupervised: bool
    unsupervised_seed: int
    runner: str
    force: bool
    num_shards: int | None
    unsupervised_shards: int | None
    copy_validation: bool
    num_classes: int
    expected_total: int | None
    deep_verify: bool
    direct_num_workers: int
    dataflow: DataflowSettings | None = None  # runner DataflowRunner only
    protocol: str = protocols.SEEDED
    name_lists: dict[str, str] = field(default_factory=dict)  # label -> uri
    # Several fractions: every seed at each (``fraction`` is then the first). Empty: the
    # one ``fraction``, as every run before this param.
    fractions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``config`` XCom (JSON): every field; ``dataflow`` an object, {} when unset."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["dataflow"] = self.dataflow.to_dict() if self.dataflow else {}
        return copy.deepcopy(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Read :meth:`to_dict`'s output (an XCom written before a field existed gets its
        default)."""
        df = d.get("dataflow")
        return cls(**{**d, "dataflow": DataflowSettings.from_dict(df) if df else None})

    @property
    def is_dataflow(self) -> bool:
        return self.runner == "DataflowRunner"

    @property
    def template_location(self) -> str | None:
        """Template mode: the folder Dataflow job descriptions go to instead of Dataflow."""
        return self.dataflow.template_location if self.is_dataflow and self.dataflow else None


def check_uri(name: str, value: Any) -> str:
    """A gs:// URI or an absolute local path without '..'; normalized: a local
    path by ``posixpath.normpath``, a gs:// URI by ``access.normalize_gcs`` (``//``
    collapsed, no trailing ``/``; ``.``/``..`` components, ``%``, ``?``, ``#``, ``\\``
    and control characters refused). What it returns is what the run uses, so the
    location checked is the location used."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} is required (a gs:// URI or an absolute local path)")
    v = value.strip()
    if len(v) > MAX_URI_LENGTH:
        raise ConfigError(f"{name}: a URI of at most {MAX_URI_LENGTH} characters, got {len(v)}")
    if re.search(DOTDOT_PATTERN, v):
        raise ConfigError(f"{name}={value!r}: '..' is not allowed in paths")
    if v.startswith("gs://"):
        if not re.match(URI_PATTERN, v):
            raise ConfigError(f"{name}={value!r}: not a valid gs://bucket/path URI")
        try:
            return access.normalize_gcs(v)
        except access.AccessError as err:
            raise ConfigError(f"{name}: {err}") from None
    if "://" in v:
        raise ConfigError(f"{name}={value!r}: unsupported scheme; use gs:// or an absolute path")
    if not v.startswith("/"):
        raise ConfigError(f"{name}={value!r}: a local path must be absolute")
    if re.search(r"[\x00-\x1f\x7f]", v):
        raise ConfigError(f"{name}={value!r}: control characters are not allowed in paths")
    return posixpath.normpath(v)


def allowed_roots() -> tuple[str, ...]:
    """The deployment's ``SSL_SPLITS_ALLOWED_ROOTS`` (``beam_jobs.access``); a
    ConfigError naming a malformed entry (the run must not go on unrestricted)."""
    try:
        return access.allowed_roots()
    except access.AccessError as err:
        raise ConfigError(str(err)) from None


def check_location(name: str, uri: str, roots: tuple[str, ...]) -> None:
    """ConfigError unless the param ``name`` may point at ``uri`` (already
    :func:`check_uri`'d): inside the allowed roots when they are set (local
    paths on their real path, symlinks followed), never into the Airflow home
    or at ``AIRFLOW_CONFIG``. Says which param, its value and the roots."""
    try:
        access.check_location(name, uri, roots)
    except access.AccessError as err:
        raise ConfigError(str(err)) from None


def located(name: str, value: Any, roots: tuple[str, ...]) -> str:
    """:func:`check_uri`, then :func:`check_location`: the param's normalized URI."""
    uri = check_uri(name, value)
    check_location(name, uri, roots)
    return uri


# (inner, outer) pairs of locations that must not be nested, and what the string
# rule says when they are (the real-path rule, through symlinks, says its own).
_NESTING: tuple[tuple[str, str, str], ...] = (
    ("output_uri", "source_uri", "output_uri {a} must not be the source folder or inside it ({b})"),
    ("source_uri", "output_uri", "source_uri {a} must not be inside output_uri {b}"),
    ("manifest_uri", "source_uri", "manifest_uri {a} must not be inside source_uri {b}"),
    ("source_uri", "manifest_uri", "source_uri {a} must not be inside manifest_uri {b}"),
    ("work_uri", "source_uri", "work_uri {a} must not be inside source_uri {b}"),
    ("source_uri", "work_uri", "source_uri {a} must not be inside work_uri {b}"),
)


def check_overlap(locations: dict[str, str]) -> None:
    """ConfigError if the source and a location the run writes (output, manifest,
    work) overlap: one is the other or inside it, as written, or through a
    symlink on their real paths (gs:// URIs on their normalized form). The
    message names both params."""
    for a, b, message in _NESTING:
        if access.is_within(locations[a], locations[b]):
            raise ConfigError(message.format(a=locations[a], b=locations[b]))
    keys = {name: access.location_key(uri) for name, uri in locations.items()}
    for a, b, _ in _NESTING:
        if access.is_within(keys[a], keys[b]):
            raise ConfigError(
                f"{a} {locations[a]} and {b} {locations[b]} overlap through a symlink: "
                f"{a}'s real path {keys[a]} is {b}'s real path {keys[b]} or inside it; "
                "the source and the folders a run writes must be apart"
            )


def parse_seeds(value: Any) -> list[int]:
    """The ``seeds`` param as integers. A list of integers (``--conf``, the REST API) or
    of strings of digits (the trigger form's text box, one seed per line: spaces around
    a seed and blank lines are ignored). Names the bad item otherwise."""
    if not isinstance(value, list):
        raise ConfigError(f"seeds must be a list of integers, got {value!r}")
    if len(value) > MAX_SEEDS:
        raise ConfigError(f"seeds: at most {MAX_SEEDS} items, got {len(value)}")
    seeds: list[int] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            text = item.strip()
            if not text:
                continue  # a blank line of the form's text box
            if not text.isascii() or not text.isdigit():
                raise ConfigError(
                    f"seeds: item {i + 1} ({item!r}) is not a seed number; give "
                    "whole numbers, one per line in the form ([3, 4] in --conf)"
                )
            seed = int(text)
        elif isinstance(item, int) and not isinstance(item, bool):
            seed = item
        else:
            raise ConfigError(
                f"seeds must be a list of integers, got {value!r} (item {i + 1} is {item!r})"
            )
        if not 1 <= seed <= MAX_SEED:
            raise ConfigError(f"seeds must be between 1 and {MAX_SEED}, got {seed} (item {i + 1})")
        if seed in seeds:
            raise ConfigError(f"seeds must not repeat: seed {seed} is given twice ({value!r})")
        seeds.append(seed)
    return seeds


def fraction_text(value: Any) -> str:
    """A fraction as the plans and the manifest write it: the shortest decimal of the number
    (``0.05``; ``1`` for an integer), the same for ``0.05`` from ``--conf`` and ``"0.050"``
    from the form. ValueError unless it is a number in (0, 1]."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(FRACTION_LINE_PATTERN, text) or not re.search(r"[0-9]", text):
            raise ValueError(f"{value!r} is not a decimal number")
        number: float | int = float(text)
    elif isinstance(value, (int, float)):
        number = value
    else:
        raise ValueError(f"{value!r} is not a number")
    if not 0 < number <= 1:
        raise ValueError(f"{value!r} is not in (0, 1]")
    return repr(float(number)) if isinstance(number, float) else str(number)


def parse_fractions(value: Any) -> list[str]:
    """The ``fractions`` param as decimal texts, in the order given. A list of numbers
    (``--conf``, the REST API) or of decimal strings (the trigger form's text box, one per
    line; blank lines are ignored). Names the bad item, and refuses one fraction twice."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"fractions must be a list of numbers in (0, 1], got {value!r}")
    if len(value) > MAX_FRACTIONS:
        raise ConfigError(f"fractions: at most {MAX_FRACTIONS}, got {len(value)}")
    out: list[str] = []
    exact: dict[Fraction, Any] = {}
    for i, item in enumerate(value):
        if isinstance(item, str) and not item.strip():
            continue  # a blank line of the form's text box
        try:
            text = fraction_text(item)
        except ValueError as err:
            raise ConfigError(
                f"fractions: item {i + 1} ({item!r}): {err}; give numbers in "
                "(0, 1], one per line in the form ([0.1, 0.05] in --conf)"
            ) from None
        if Fraction(text) in exact:
            raise ConfigError(
                f"fractions must not repeat: {exact[Fraction(text)]!r} and "
                f"{item!r} are the same fraction ({value!r})"
            )
        exact[Fraction(text)] = item
        out.append(text)
    if len(out) > MAX_FRACTIONS:
        raise ConfigError(f"fractions: at most {MAX_FRACTIONS}, got {len(out)}")
    return out


def resolve(p: dict[str, Any]) -> RunConfig:
    """Check a run's params as a whole and fill derived defaults.

    Every location a param names (and the defaults derived from them) is checked
    against the deployment's allowed roots and the Airflow home
    (:func:`check_location`) here, before any task reads or writes it."""
    roots = allowed_roots()
    source = located("source_uri", p.get("source_uri"), roots)
    output = located("output_uri", p.get("output_uri"), roots)
    manifest = (
        check_uri("manifest_uri", p["manifest_uri"])
        if p.get("manifest_uri")
        else f"{output}/manifest.json"
    )
    work = (
        check_uri("work_uri", p["work_uri"]) if p.get("work_uri") else layout.work_default(output)
    )
    # The defaults too: {output}/_work may be a symlink out of the roots.
    check_location("manifest_uri", manifest, roots)
    check_location("work_uri", work, roots)
    check_overlap(
        {"source_uri": source, "output_uri": output, "manifest_uri": manifest, "work_uri": work}
    )
    seeds = parse_seeds(p.get("seeds", _SEEDED_ONLY["seeds"]))
    fraction = p.get("fraction", _SEEDED_ONLY["fraction"])
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise ConfigError(f"fraction must be a number in (0, 1], got {fraction!r}")
    fraction_str = fraction_text(fraction)
    fractions = parse_fractions(p.get("fractions"))
    if (
        fractions
        and fraction != _SEEDED_ONLY["fraction"]
        and Fraction(fraction_str) not in {Fraction(f) for f in fractions}
    ):
        raise ConfigError(
            f"fraction={fraction!r} and fractions={p['fractions']!r}: with "
            "fractions set, fraction is not used; put every fraction in "
            f"fractions, or leave fraction at its default {_SEEDED_ONLY['fraction']}"
        )
    sampling = p.get("sampling", defaults.SAMPLING)
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    runner = p.get("runner", "DirectRunner")
    if runner not in RUNNERS:
        raise ConfigError(f"runner must be one of {RUNNERS}, got {runner!r}")
    files = p.get("sharding_files") or {}
    if not isinstance(files, dict):
        raise ConfigError("sharding_files must be an object {seed: uri}")
    if len(files) > MAX_SHARDING_FILES:
        raise ConfigError(
            f"sharding_files: at most {MAX_SHARDING_FILES} files (one per seed), got {len(files)}"
        )
    proto = _protocol(p, seeds, fraction, sampling, files, fractions)
    if not proto.uses_seeds:
        seeds = []  # the protocol's subsets are the labelled splits
    sharding: dict[str, str] = {}
    for k, v in files.items():
        if not str(k).isdigit() or int(k) not in seeds:
            raise ConfigError(f"sharding_files names seed {k!r}, which is not in seeds {seeds}")
        sharding[str(int(k))] = located(f"sharding_files[{k}]", v, roots)
    name_lists = _name_lists(p.get("name_lists"), proto, roots)
    unsupervised = bool(p.get("unsupervised", True))
    copy_validation = bool(p.get("copy_validation", True))
    if not seeds and not unsupervised and not name_lists and not proto.name_lists:
        raise ConfigError("nothing to build: seeds is empty and unsupervised is false")
    dataflow: DataflowSettings | None = None
    if runner == "DataflowRunner":
        project = p.get("dataflow_project")
        temp = p.get("dataflow_temp_location")
        if not project:
            raise ConfigError("runner DataflowRunner needs dataflow_project")
        if not temp or not str(temp).startswith("gs://"):
            raise ConfigError("runner DataflowRunner needs dataflow_temp_location (a gs:// folder)")
        for name, uri in (("source_uri", source), ("output_uri", output), ("work_uri", work)):
            if not uri.startswith("gs://"):
                raise ConfigError(
                    f"runner DataflowRunner reads and writes GCS: {name} must be gs://, got {uri}"
                )
        package = p.get("dataflow_worker_package")
        if not package:
            raise ConfigError(
                "runner DataflowRunner needs dataflow_worker_package: build it with "
                "bin/build-worker-package (or set SSL_SPLITS_WORKER_PACKAGE)"
            )
        loc = None
        if p.get("dataflow_template_location"):
            loc = located("dataflow_template_location", p["dataflow_template_location"], roots)
            if not loc.startswith("gs://"):
                raise ConfigError(f"dataflow_template_location must be a gs:// folder, got {loc}")
        dataflow = DataflowSettings(
            worker_package=located("dataflow_worker_package", package, roots),
            project=project,
            region=p.get("dataflow_region") or DATAFLOW_REGION,
            temp_location=located("dataflow_temp_location", temp, roots),
            machine_type=p.get("dataflow_machine_type") or DATAFLOW_MACHINE_TYPE,
            max_num_workers=int(p.get("dataflow_max_workers") or DATAFLOW_MAX_WORKERS),
            template_location=loc,
        )
    elif p.get("dataflow_template_location"):
        raise ConfigError(
            "dataflow_template_location stages Dataflow templates: it needs runner "
            f"DataflowRunner (runner is {runner})"
        )
    deep = p.get("deep_verify", "auto")
    if isinstance(deep, str):  # the form's "auto" | "always" | "never"
        if deep not in DEEP_VERIFY:
            raise ConfigError(f"deep_verify must be one of {list(DEEP_VERIFY)}, got {deep!r}")
        deep = DEEP_VERIFY[deep]
    return RunConfig(
        source_uri=source,
        output_uri=output,
        manifest_uri=manifest,
        work_uri=work,
        seeds=list(seeds),
        fraction=fractions[0] if fractions else fraction_str,
        sampling=sampling,
        sharding_files=sharding,
        unsupervised=unsupervised,
        unsupervised_seed=int(p.get("unsupervised_seed") or 0),
        runner=runner,
        force=bool(p.get("force", False)),
        num_shards=p.get("num_shards"),
        unsupervised_shards=p.get("unsupervised_shards"),
        copy_validation=copy_validation,
        num_classes=int(p.get("num_classes") or DEFAULT_NUM_CLASSES),
        expected_total=p.get("expected_total"),
        deep_verify=bool(deep),
        direct_num_workers=int(p.get("direct_num_workers") or 0),
        dataflow=dataflow,
        protocol=proto.name,
        name_lists=name_lists,
        fractions=fractions if proto.uses_seeds else [],
    )


# Params a SimCLR protocol leaves aside, with their defaults (what the form sends).
_SEEDED_ONLY: dict[str, Any] = {
    "seeds": list(defaults.SEEDS),
    "fraction": float(defaults.FRACTION),
    "sampling": defaults.SAMPLING,
    "fractions": [],
}


def _protocol(
    p: dict[str, Any],
    seeds: list[int],
    fraction: Any,
    sampling: str,
    files: dict[str, Any],
    fractions: list[str],
) -> protocols.Protocol:
    """The ``protocol`` param, checked against the params it decides on."""
    name = p.get("protocol") or protocols.SEEDED
    if name not in protocols.PROTOCOLS:
        raise ConfigError(f"protocol must be one of {list(protocols.PROTOCOLS)}, got {name!r}")
    proto = protocols.PROTOCOLS[name]
    if not proto.uses_seeds:
        for param, default in _SEEDED_ONLY.items():
            if p.get(param, default) != default and not (param == "fractions" and not fractions):
                raise ConfigError(
                    f"{param}={p[param]!r} does not apply to protocol {name} (SimCLR's subsets are "
                    f"given by their files): leave {param} at its default {default!r}, or use "
                    "protocol seeded"
                )
        if files:
            raise ConfigError(
                f"sharding_files do not apply to protocol {name}: it builds no seeded splits"
            )
    elif len(fractions) > 1 and files:
        raise ConfigError(
            f"sharding_files and fractions={p['fractions']!r} do not go together: "
            "a sharding file is one seed's split exactly, at one size; build "
            "the seeds with sharding_files in a run of their own (without "
            "fractions)"
        )
    if proto.sharding:
        outside = [s for s in seeds if s not in proto.seeds]
        if outside:
            raise ConfigError(
                f"seeds {outside}: protocol {name} has published splits for seeds "
                f"{min(proto.seeds)}-{max(proto.seeds)} only"
            )
        if files:
            raise ConfigError(
                f"sharding_files and protocol {name} both give the seeds' files: "
                f"use one (protocol {name} uses the published files it ships)"
            )
        if str(fraction) != "0.1":
            raise ConfigError(
                f"fraction={fraction!r}: FixMatch's published splits are 10% "
                "(128,116 of ImageNet's records); leave fraction at 0.1"
            )
        if any(Fraction(f) != Fraction(1, 10) for f in fractions):
            raise ConfigError(
                f"fractions={p['fractions']!r}: protocol {name} reproduces "
                "FixMatch's published 10% splits, and no 5% or 1% split was "
                "published; leave fractions empty, or use protocol seeded to draw "
                "train{N}.{seed} at several fractions"
            )
        if sampling != "stratified":
            raise ConfigError(
                f"sampling={sampling!r}: FixMatch's published splits are "
                "stratified; leave sampling at stratified"
            )
    return proto


def _name_lists(
    value: Any, proto: protocols.Protocol, roots: tuple[str, ...] = ()
) -> dict[str, str]:
    """The ``name_lists`` param: ``{label: uri}``, labels that name splits apart,
    at most :data:`MAX_NAME_LISTS`, each URI inside the allowed ``roots``."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise ConfigError('name_lists must be an object {"label": "uri"}')
    if len(value) > MAX_NAME_LISTS:
        raise ConfigError(f"name_lists: at most {MAX_NAME_LISTS} lists, got {len(value)}")
    out = {}
    taken = {label for label, _ in proto.name_lists}
    for label, uri in sorted(value.items()):
        if not isinstance(label, str) or not re.match(protocols.LABEL_PATTERN, label):
            raise ConfigError(
                f"name_lists label {label!r} must be a lower-case letter followed by "
                "up to 31 lower-case letters, digits or _ (it names the split "
                "train{N}.{label})"
            )
        if label in taken:
            raise ConfigError(
                f"name_lists label {label!r} is protocol {proto.name}'s: choose another label"
            )
        out[label] = located(f"name_lists[{label}]", uri, roots)
    return out
