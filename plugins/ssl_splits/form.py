"""The DAG's trigger form: every param as a row of data, and the DAG's schedule.

:data:`FIELDS` lists the params in the order the form shows them: name,
default, title, help text, JSON schema (type, enum, bounds, patterns) and the
form's section. :func:`params` turns the rows into ``airflow.sdk.Param``
objects: what the Airflow UI renders as the trigger form and what the CLI's
``--conf`` and the REST API are validated against, per param.

The form says what each param may hold; the checks of the params as a whole
(locations, protocols, Dataflow settings) are :func:`ssl_splits.config.resolve`'s.
The limits and patterns both use (``limits.MAX_SEEDS``, ``limits.URI_PATTERN``,
...) are defined once in ``ssl_splits.limits``, below both.

A few defaults are the deployment's (:data:`ENV_DEFAULTS`): the source and
output folders a scheduled run builds, and the Dataflow settings. They are
read when the DAG file is parsed.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Mapping

from airflow.sdk import Param

from beam_jobs import defaults
from beam_jobs.planning import protocols
from ssl_splits import limits
from ssl_splits.limits import ConfigError

# The deployment's default source and output folders: what scheduled runs (and
# backfills) build, and the trigger form's initial values.
SOURCE_ENV = "SSL_SPLITS_SOURCE_URI"
OUTPUT_ENV = "SSL_SPLITS_OUTPUT_URI"
SCHEDULE_ENV = "SSL_SPLITS_SCHEDULE"
# Param -> the variable whose value, when set, is the param's default.
ENV_DEFAULTS: dict[str, str] = {
    "source_uri": SOURCE_ENV,
    "output_uri": OUTPUT_ENV,
    "dataflow_project": "SSL_SPLITS_DATAFLOW_PROJECT",
    "dataflow_region": "SSL_SPLITS_DATAFLOW_REGION",
    "dataflow_temp_location": "SSL_SPLITS_DATAFLOW_TEMP_LOCATION",
    "dataflow_worker_package": "SSL_SPLITS_WORKER_PACKAGE",
}
# Trigger-form sections (collapsed by default; the main fields stay in "Run Parameters").
ADVANCED = "Advanced: shards, checks, folders"
DATAFLOW = "Dataflow (runner DataflowRunner)"


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


@dataclass(frozen=True)
class Field:
    """One param of the trigger form."""

    name: str
    default: Any  # overridden by the variable ENV_DEFAULTS names for it, when set
    title: str
    description: str
    schema: dict[str, Any]  # JSON schema: type, enum, bounds, patterns, values_display
    section: str | None = None  # None: the main "Run Parameters" section


def params(environ: Mapping[str, str] | None = None) -> dict[str, Param]:
    """The trigger form: every param with a title, help text and a fitting widget.
    ``environ`` (default ``os.environ``) gives the deployment's defaults."""
    env = os.environ if environ is None else environ
    return {f.name: _param(f, env) for f in FIELDS}


def _param(spec: Field, env: Mapping[str, str]) -> Param:
    default = spec.default
    if spec.name in ENV_DEFAULTS:
        default = env.get(ENV_DEFAULTS[spec.name]) or default
    section = {"section": spec.section} if spec.section else {}
    # Copies: each Param owns its value and schema (FIELDS shares a few schemas).
    schema = copy.deepcopy({"title": spec.title, **spec.schema, **section})
    return Param(copy.deepcopy(default), description=spec.description, **schema)


def wrong_type(conf: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> str | None:
    """The first param of ``conf`` (but those in ``skip``) whose value is not of
    its field's JSON type (a string for a number, an object for a name, ...), in
    words; None if every one is. Airflow checks a triggered run's conf against
    the whole schema; this lets ``ssl_splits.config.resolve_conf`` refuse a
    wrong type with a ConfigError naming the param, whoever called it. None is
    left to resolve (a default for most params, false for the switches);
    ``skip``: the params resolve parses, type included, in its own words."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    for f in FIELDS:
        value = conf.get(f.name)
        if value is None or f.name in skip or "type" not in f.schema:
            continue
        if not Draft202012Validator({"type": f.schema["type"]}).is_valid(value):
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            return f"{f.name} must be of JSON type {f.schema['type']}, got {shown}"
    return None


# --------------------------------------------------------------------------- schemas

# A location as a string: gs://bucket/path or an absolute local path, without "..".
_URI: dict[str, Any] = {
    "type": "string",
    "pattern": limits.URI_PATTERN,
    "not": {"pattern": limits.DOTDOT_PATTERN},
    "maxLength": limits.MAX_URI_LENGTH,
}
REQUIRED_URI: dict[str, Any] = {"minLength": 1, **_URI}
OPTIONAL_URI: dict[str, Any] = {"type": ["null", "string"], "anyOf": [{"type": "null"}, _URI]}
OPTIONAL_STRING: dict[str, Any] = {"type": ["null", "string"]}
SHARDS: dict[str, Any] = {"type": ["null", "integer"], "minimum": 1, "maximum": 100000}


def _choice(values: list[str], display: dict[str, str] | None = None) -> dict[str, Any]:
    """A string out of ``values`` (a select box; ``display``: what each option reads)."""
    schema: dict[str, Any] = {"type": "string", "enum": values}
    return {**schema, "values_display": display} if display else schema


def _text_lines(*item_schemas: dict[str, Any], **array: Any) -> dict[str, Any]:
    """An array whose items have no single "type": the form shows a text box, one item
    per line (Airflow 3.3's multi-select picks only from a fixed list, and its JSON
    editor needs brackets); the box sends strings, which ``resolve`` parses."""
    return {"type": "array", "items": {"anyOf": list(item_schemas)}, **array}


def _uri_map(key_pattern: str, max_properties: int) -> dict[str, Any]:
    """An object ``{key: uri}`` (``sharding_files``, ``name_lists``)."""
    return {
        "type": "object",
        "patternProperties": {key_pattern: _URI},
        "additionalProperties": False,
        "maxProperties": max_properties,
    }


# --------------------------------------------------------------------------- the fields

FIELDS: tuple[Field, ...] = (
    Field(
        "source_uri",
        None,
        "Source folder",
        "Folder holding ImageNet train-SSSSS-of-NNNNN TFRecords (and optional "
        "validation-*): gs://bucket/path or an absolute local path, inside the "
        "deployment's allowed roots (SSL_SPLITS_ALLOWED_ROOTS) when it sets them. Required "
        f"(the deployment's default: {SOURCE_ENV}).",
        REQUIRED_URI,
    ),
    Field(
        "output_uri",
        None,
        "Output folder",
        "Where the splits are written as {split}-SSSSS-of-NNNNN. Must not be the source "
        f"folder, inside it, or contain it. Required (the deployment's default: {OUTPUT_ENV}).",
        REQUIRED_URI,
    ),
    Field(
        "manifest_uri",
        None,
        "Manifest URI",
        "Where the manifest JSON is published. Empty: {output_uri}/manifest.json.",
        OPTIONAL_URI,
    ),
    Field(
        "protocol",
        protocols.SEEDED,
        "Labelled splits",
        "seeded: our own draws, one per seed (Seeds, Fraction, Sampling). "
        "fixmatch: FixMatch's published 10% splits, reproduced exactly: split s "
        "for each seed s in Seeds (1-5), train128116.{s}. simclr: SimCLR's 1% "
        "and 10% subsets, the standard protocol of SimCLR, BYOL, SwAV "
        "(train12811.simclr, train128116.simclr; Seeds, Fraction and Sampling do "
        "not apply). The published files ship with the product.",
        _choice(
            list(protocols.PROTOCOLS),
            {name: f"{name}: {p.title}" for name, p in protocols.PROTOCOLS.items()},
        ),
    ),
    Field(
        "seeds",
        list(defaults.SEEDS),
        "Seeds",
        "Labelled splits to build, one seed per line (train{N}.{seed}): "
        "3 alone rebuilds seed 3. In --conf and the REST API a list of "
        "integers: [3]; [] builds none. With protocol fixmatch: which of the "
        "published splits 1-5.",
        _text_lines(
            {"type": "integer", "minimum": 1, "maximum": limits.MAX_SEED},
            {"type": "string", "pattern": limits.SEED_LINE_PATTERN},
            uniqueItems=True,
            maxItems=limits.MAX_SEEDS,
        ),
    ),
    Field(
        "fraction",
        float(defaults.FRACTION),
        "Fraction",
        "Share of the training set in each labelled split, in (0, 1]. "
        "0.1 gives 128,116 of ImageNet's 1,281,167.",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    ),
    Field(
        "fractions",
        [],
        "Several fractions",
        "Build every seed at each of these fractions in one run, one per line: "
        "0.1, 0.05 and 0.01 give train128116.{seed}, train64058.{seed} and "
        "train12811.{seed} on ImageNet (what FixMatch's ImageNet trainer reads). "
        "Set, it replaces Fraction. The splits of one seed are nested: the "
        'smaller ones inside the larger (README, "How a split is derived"). '
        "In --conf a list of numbers: [0.1, 0.05, 0.01]. Protocol seeded only.",
        _text_lines(
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            {"type": "string", "pattern": limits.FRACTION_LINE_PATTERN},
            maxItems=limits.MAX_FRACTIONS,
        ),
    ),
    Field(
        "sampling",
        defaults.SAMPLING,
        "Sampling",
        "stratified: the same share of every class (as FixMatch's published "
        "splits); uniform: a plain random draw.",
        _choice(
            limits.SAMPLINGS,
            {
                "stratified": "stratified (same share of every class)",
                "uniform": "uniform (plain random draw)",
            },
        ),
    ),
    Field(
        "sharding_files",
        {},
        "Published split files",
        '{"seed": "uri"} of filename,shard,index files to reproduce exactly, '
        'e.g. {"1": "gs://bucket/fixmatch/files2shards_train_size128116_split1.txt"}. '
        "Each seed must also be in Seeds. A file: at most 64 MiB, no more lines than "
        "the source has records.",
        _uri_map("^[0-9]+$", limits.MAX_SHARDING_FILES),
    ),
    Field(
        "name_lists",
        {},
        "Name lists",
        '{"label": "uri"} of files with one image file name per line '
        '(SimCLR\'s format), e.g. {"mysubset": "gs://bucket/names.txt"}: each '
        "gives the split train{N}.{label} of exactly those records (every name "
        "must be in the source), in the product's order and sharding. A label "
        "is a lower-case letter, then letters, digits or _. At most "
        f"{limits.MAX_NAME_LISTS} lists; a list: at most 64 MiB, no more names than the "
        "source has records.",
        _uri_map(protocols.LABEL_PATTERN, limits.MAX_NAME_LISTS),
    ),
    Field(
        "unsupervised",
        True,
        "Build the full reshuffle",
        "Also build 'train': every training record once, reshuffled (the unlabelled data).",
        {"type": "boolean"},
    ),
    Field(
        "runner",
        limits.RUNNERS[0],
        "Beam runner",
        "DirectRunner runs the Beam jobs on this Airflow worker; "
        "DataflowRunner on Google Cloud Dataflow (set the Dataflow params).",
        _choice(
            limits.RUNNERS,
            {
                "DirectRunner": "DirectRunner (local, on the Airflow worker)",
                "DataflowRunner": "DataflowRunner (Google Cloud Dataflow)",
            },
        ),
    ),
    Field(
        "force",
        False,
        "Force rebuild",
        "Rebuild the requested splits even if a verified identical split "
        "already exists (the validation copy is redone only when it differs "
        "from the source).",
        {"type": "boolean"},
    ),
    Field(
        "unsupervised_seed",
        0,
        "Reshuffle seed",
        "Seed of the full reshuffle's order.",
        {"type": "integer", "minimum": 0, "maximum": limits.MAX_SEED},
        ADVANCED,
    ),
    Field(
        "num_shards",
        None,
        "Shards per labelled split",
        "Empty: keep the source's shard size (102 for 10% of ImageNet).",
        SHARDS,
        ADVANCED,
    ),
    Field(
        "unsupervised_shards",
        None,
        "Shards of the reshuffle",
        "Empty: as many as the source (1,024).",
        SHARDS,
        ADVANCED,
    ),
    Field(
        "copy_validation",
        True,
        "Copy the validation set",
        "Copy validation-* shards beside the splits, when the source has them.",
        {"type": "boolean"},
        ADVANCED,
    ),
    Field(
        "num_classes",
        limits.DEFAULT_NUM_CLASSES,
        "Number of classes",
        "Valid labels are 1..num_classes (the common converter's labels).",
        {"type": "integer", "minimum": 1, "maximum": 100000},
        ADVANCED,
    ),
    Field(
        "expected_total",
        None,
        "Expected training records",
        "Fail validation unless the source holds exactly this many "
        "(1281167 for ImageNet). Empty: no check.",
        {"type": ["null", "integer"], "minimum": 1},
        ADVANCED,
    ),
    Field(
        "deep_verify",
        "auto",
        "Deep verification",
        "Every split is verified exactly before it is published: each shard's "
        "size and CRC32C must equal those its planned records give (from the "
        "catalog; no record data is read on GCS). always: also re-read every "
        "record in a Beam job, which names the record that differs.",
        _choice(
            list(limits.DEEP_VERIFY),
            {
                "auto": "auto: exact check from metadata (on every runner)",
                "always": "always: exact check + re-read every record",
                "never": "never: same as auto (the exact check always runs)",
            },
        ),
        ADVANCED,
    ),
    Field(
        "work_uri",
        None,
        "Work folder",
        "Catalog, plans, staging and reports. Empty: {output_uri}/_work.",
        OPTIONAL_URI,
        ADVANCED,
    ),
    Field(
        "direct_num_workers",
        0,
        "DirectRunner workers",
        "Worker processes per local Beam job; 0: one per core.",
        {"type": "integer", "minimum": 0, "maximum": 64},
        ADVANCED,
    ),
    Field(
        "dataflow_project",
        None,
        "Dataflow project",
        "Google Cloud project for Dataflow jobs.",
        OPTIONAL_STRING,
        DATAFLOW,
    ),
    Field(
        "dataflow_region",
        limits.DATAFLOW_REGION,
        "Dataflow region",
        "Region for Dataflow jobs.",
        {"type": "string"},
        DATAFLOW,
    ),
    Field(
        "dataflow_temp_location",
        None,
        "Dataflow temp location",
        "gs:// folder for Dataflow's temp and staging files.",
        OPTIONAL_STRING,
        DATAFLOW,
    ),
    Field(
        "dataflow_machine_type",
        limits.DATAFLOW_MACHINE_TYPE,
        "Dataflow machine type",
        "Worker machine type.",
        {"type": "string"},
        DATAFLOW,
    ),
    Field(
        "dataflow_worker_package",
        None,
        "Dataflow worker package",
        "The beam_jobs wheel Dataflow workers install (bin/build-worker-package "
        "writes dist/ssl_imagenet_splits-*.whl): a path on the Airflow worker or "
        "gs://.",
        OPTIONAL_STRING,
        DATAFLOW,
    ),
    Field(
        "dataflow_template_location",
        None,
        "Only stage Dataflow templates here",
        "A gs:// folder. Set: every Beam job of the run is translated and staged, and its "
        "Dataflow job description (a classic template, {folder}/ssl-{job}-{split}, e.g. "
        "ssl-build-train128116-3) is written here instead of being submitted, for a "
        "platform team to review or launch (gcloud dataflow jobs run). Nothing is built, "
        "verified or published. Empty: jobs are submitted and run.",
        OPTIONAL_URI,
        DATAFLOW,
    ),
    Field(
        "dataflow_max_workers",
        limits.DATAFLOW_MAX_WORKERS,
        "Dataflow max workers",
        "Upper bound for autoscaling, per job.",
        {"type": "integer", "minimum": 1, "maximum": 1000},
        DATAFLOW,
    ),
)
