"""A run's conf -> its checked, typed run config (:class:`RunConfig`).

The trigger form (``ssl_splits.form``) checks each param alone, by JSON
schema. :func:`resolve_conf` checks them as a whole and fills the defaults
that depend on other params; it is a pure function of the conf and of what the
deployment allows (:class:`beam_jobs.access.AllowedLocations`, passed in), and
reads nothing from the environment. :func:`resolve` is the thin wrapper the
DAG's first task calls: it reads the deployment's settings, then resolves.
It runs before any Beam job starts.

One function per family of rules, in the order they are checked (the first
error found is the one reported):

* JSON types (``ssl_splits.form.wrong_type``): each param this module does not
  parse itself (:data:`PARSED_HERE`) is of its field's type, so a conf that did
  not come through Airflow's form check still gets a ConfigError naming it;
* locations (:func:`_locations`, :func:`located`, :func:`check_overlap`):
  URIs well-formed and normalised, inside the allowed roots, never in the
  Airflow home; the source apart from the folders a run writes;
* seeds and fractions (:func:`_draws`, :func:`parse_seeds`,
  :func:`parse_fractions`);
* protocol (:func:`_protocol`): what a protocol of published label sets
  allows, and its name lists and sharding files (:func:`_sharding_files`,
  :func:`_name_lists`);
* Dataflow settings (:func:`_dataflow`).

Where each rule lives. The facts about the published label sets (which
seeds FixMatch published, at which fraction and sampling; what a name-list
label is) and the rules a request follows under a protocol (seeds it has no
split for, a seed given two files, a file drawn at several fractions) are
written once, in ``beam_jobs.planning.protocols``: this module raises them as
ConfigErrors before any task runs, the plan step
(``beam_jobs.planning.plans.expand_protocol``, also a CLI) as PlanErrors. The
location rules are ``beam_jobs.access``'s alone; the plan step applies them
again to the files it reads, so its CLI is safe without Airflow. This module
alone checks the params the plan step never sees (fraction and sampling beside
a published split, params a protocol of name lists leaves aside).
"""

from __future__ import annotations

import copy
import posixpath
import re
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

from beam_jobs import access, defaults, layout
from beam_jobs.access import AllowedLocations
from beam_jobs.planning import protocols
from ssl_splits.form import wrong_type
from ssl_splits.limits import (  # the params' bounds; importers of this module use them too
    DATAFLOW_MACHINE_TYPE,
    DATAFLOW_MAX_WORKERS,
    DATAFLOW_REGION,
    DEEP_VERIFY,
    DEFAULT_NUM_CLASSES,
    DOTDOT_PATTERN,
    FRACTION_LINE_PATTERN,
    MAX_FRACTIONS,
    MAX_NAME_LISTS,
    MAX_SEED,
    MAX_SEEDS,
    MAX_SHARDING_FILES,
    MAX_URI_LENGTH,
    RUNNERS,
    SAMPLINGS,
    URI_PATTERN,
    ConfigError,
)


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


def allowed_locations() -> AllowedLocations:
    """The deployment's ``SSL_SPLITS_ALLOWED_ROOTS`` and Airflow home, from the
    environment (``beam_jobs.access``); a ConfigError naming a malformed entry
    (the run must not go on unrestricted)."""
    try:
        return AllowedLocations.from_environ()
    except access.AccessError as err:
        raise ConfigError(str(err)) from None


def check_location(name: str, uri: str, allowed: AllowedLocations) -> None:
    """ConfigError unless the param ``name`` may point at ``uri`` (already
    :func:`check_uri`'d): inside the allowed roots when they are set (local
    paths on their real path, symlinks followed), never into the Airflow home
    or at ``AIRFLOW_CONFIG``. Says which param, its value and the roots."""
    try:
        access.check_location(name, uri, allowed.roots, forbidden=allowed.forbidden)
    except access.AccessError as err:
        raise ConfigError(str(err)) from None


def located(name: str, value: Any, allowed: AllowedLocations) -> str:
    """:func:`check_uri`, then :func:`check_location`: the param's normalized URI."""
    uri = check_uri(name, value)
    check_location(name, uri, allowed)
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


# --------------------------------------------------------------------------- resolve


# The params this module parses with its own words (locations, draws, protocol files and
# lists, runner, checks, Dataflow); the others' JSON types are the form's (form.wrong_type).
PARSED_HERE = frozenset(
    {
        "source_uri",
        "output_uri",
        "manifest_uri",
        "work_uri",
        "seeds",
        "fraction",
        "fractions",
        "sampling",
        "sharding_files",
        "name_lists",
        "runner",
        "deep_verify",
    }
)


def resolve(p: dict[str, Any]) -> RunConfig:
    """:func:`resolve_conf` with the deployment's allowed locations, read from the
    environment (``SSL_SPLITS_ALLOWED_ROOTS``, ``AIRFLOW_HOME``, ``AIRFLOW_CONFIG``)."""
    return resolve_conf(p, allowed_locations())


def resolve_conf(p: dict[str, Any], allowed: AllowedLocations) -> RunConfig:
    """Check a run's conf as a whole and fill derived defaults (pure: the
    deployment's rules come in ``allowed``; only local symlinks are read).

    Every location a param names (and the defaults derived from them) is checked
    against ``allowed`` (:func:`check_location`) here, before any task reads or
    writes it. ConfigError names the first param found wrong, and why."""

    if problem := wrong_type(p, skip=PARSED_HERE):
        raise ConfigError(problem)
    where = _locations(p, allowed)
    draws = _draws(p)
    runner = _runner(p)
    files = _sharding_files_param(p)
    proto = _protocol(p, draws, files)
    seeds = draws.seeds if proto.uses_seeds else []  # else the protocol's subsets
    sharding = _sharding_files(files, seeds, allowed)
    name_lists = _name_lists(p.get("name_lists"), proto, allowed)
    unsupervised = bool(p.get("unsupervised", True))
    if not seeds and not unsupervised and not name_lists and not proto.name_lists:
        raise ConfigError("nothing to build: seeds is empty and unsupervised is false")
    dataflow = _dataflow(p, runner, where, allowed)
    return RunConfig(
        source_uri=where.source_uri,
        output_uri=where.output_uri,
        manifest_uri=where.manifest_uri,
        work_uri=where.work_uri,
        seeds=list(seeds),
        fraction=draws.fractions[0] if draws.fractions else draws.fraction_text,
        sampling=draws.sampling,
        sharding_files=sharding,
        unsupervised=unsupervised,
        unsupervised_seed=int(p.get("unsupervised_seed") or 0),
        runner=runner,
        force=bool(p.get("force", False)),
        num_shards=p.get("num_shards"),
        unsupervised_shards=p.get("unsupervised_shards"),
        copy_validation=bool(p.get("copy_validation", True)),
        num_classes=int(p.get("num_classes") or DEFAULT_NUM_CLASSES),
        expected_total=p.get("expected_total"),
        deep_verify=_deep_verify(p),
        direct_num_workers=int(p.get("direct_num_workers") or 0),
        dataflow=dataflow,
        protocol=proto.name,
        name_lists=name_lists,
        fractions=draws.fractions if proto.uses_seeds else [],
    )


# --------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class Locations:
    """The folders and files a run reads and writes, checked and normalised."""

    source_uri: str
    output_uri: str
    manifest_uri: str
    work_uri: str


def _locations(p: dict[str, Any], allowed: AllowedLocations) -> Locations:
    """The source, output, manifest and work locations: each allowed, the
    defaults derived from the output too (``{output}/_work`` may be a symlink out
    of the roots), and the source apart from the other three."""
    source = located("source_uri", p.get("source_uri"), allowed)
    output = located("output_uri", p.get("output_uri"), allowed)
    manifest = (
        check_uri("manifest_uri", p["manifest_uri"])
        if p.get("manifest_uri")
        else f"{output}/manifest.json"
    )
    work = (
        check_uri("work_uri", p["work_uri"]) if p.get("work_uri") else layout.work_default(output)
    )
    check_location("manifest_uri", manifest, allowed)
    check_location("work_uri", work, allowed)
    where = Locations(source, output, manifest, work)
    check_overlap({f.name: getattr(where, f.name) for f in fields(where)})
    return where


# --------------------------------------------------------------------------- seeds and fractions


@dataclass(frozen=True)
class Draws:
    """The seeded draws a conf asks for."""

    seeds: list[int]
    fraction: Any  # as given (int or float): messages quote it as the user wrote it
    fraction_text: str  # the same, as the plans write it (fraction_text)
    fractions: list[str]  # several fractions (parse_fractions); empty: fraction alone
    sampling: str


def _draws(p: dict[str, Any]) -> Draws:
    """``seeds``, ``fraction``, ``fractions`` and ``sampling``, checked alone and together."""
    seeds = parse_seeds(p.get("seeds", _SEEDED_ONLY["seeds"]))
    fraction = p.get("fraction", _SEEDED_ONLY["fraction"])
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise ConfigError(f"fraction must be a number in (0, 1], got {fraction!r}")
    text = fraction_text(fraction)
    fractions = parse_fractions(p.get("fractions"))
    if (
        fractions
        and fraction != _SEEDED_ONLY["fraction"]
        and Fraction(text) not in {Fraction(f) for f in fractions}
    ):
        raise ConfigError(
            f"fraction={fraction!r} and fractions={p['fractions']!r}: with "
            "fractions set, fraction is not used; put every fraction in "
            f"fractions, or leave fraction at its default {_SEEDED_ONLY['fraction']}"
        )
    sampling = p.get("sampling", defaults.SAMPLING)
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return Draws(seeds, fraction, text, fractions, sampling)


# --------------------------------------------------------------------------- protocol

# Params a SimCLR protocol leaves aside, with their defaults (what the form sends).
_SEEDED_ONLY: dict[str, Any] = {
    "seeds": list(defaults.SEEDS),
    "fraction": float(defaults.FRACTION),
    "sampling": defaults.SAMPLING,
    "fractions": [],
}


def _sharding_files_param(p: dict[str, Any]) -> dict[Any, Any]:
    """The ``sharding_files`` param's object as given (its entries are checked
    once the protocol has said which seeds are built: :func:`_sharding_files`)."""
    files = p.get("sharding_files") or {}
    if not isinstance(files, dict):
        raise ConfigError("sharding_files must be an object {seed: uri}")
    if len(files) > MAX_SHARDING_FILES:
        raise ConfigError(
            f"sharding_files: at most {MAX_SHARDING_FILES} files (one per seed), got {len(files)}"
        )
    return files


def _protocol(p: dict[str, Any], draws: Draws, files: dict[Any, Any]) -> protocols.Protocol:
    """The ``protocol`` param, checked against the params it decides on."""
    name = p.get("protocol") or protocols.SEEDED
    if name not in protocols.PROTOCOLS:
        raise ConfigError(f"protocol must be one of {list(protocols.PROTOCOLS)}, got {name!r}")
    proto = protocols.PROTOCOLS[name]
    if not proto.uses_seeds:
        _check_seeded_only_unset(p, proto, draws, files)
    elif problem := protocols.files_at_several_sizes(_file_seeds(files), draws.fractions):
        raise ConfigError(problem)
    if proto.sharding:
        _check_published_splits(p, proto, draws, files)
    return proto


def _seed_key(key: Any) -> int | None:
    """A ``sharding_files`` key as a seed: ASCII digits only (``str.isdigit``
    also takes '³', which ``int`` refuses, and '٣', which it reads as 3)."""
    text = str(key)
    return int(text) if text.isascii() and text.isdigit() else None


def _file_seeds(files: dict[Any, Any]) -> list[int]:
    """The seeds ``sharding_files`` names (keys that are not seeds are refused
    later, by :func:`_sharding_files`)."""
    return [s for s in map(_seed_key, files) if s is not None]


def _check_seeded_only_unset(
    p: dict[str, Any], proto: protocols.Protocol, draws: Draws, files: dict[Any, Any]
) -> None:
    """A protocol of name lists (SimCLR's) builds no seeded draws: the params of
    seeded draws stay at their defaults, and no sharding file is given."""
    for param, default in _SEEDED_ONLY.items():
        if p.get(param, default) != default and not (param == "fractions" and not draws.fractions):
            raise ConfigError(
                f"{param}={p[param]!r} does not apply to protocol {proto.name} (SimCLR's subsets "
                f"are given by their files): leave {param} at its default {default!r}, or use "
                "protocol seeded"
            )
    if files:
        raise ConfigError(
            f"sharding_files do not apply to protocol {proto.name}: it builds no seeded splits"
        )


def _check_published_splits(
    p: dict[str, Any], proto: protocols.Protocol, draws: Draws, files: dict[Any, Any]
) -> None:
    """A protocol of published splits (FixMatch's): only the seeds it published,
    its own files, and the fraction and sampling they were drawn at."""
    name = proto.name
    problem = protocols.unpublished_seeds(proto, draws.seeds) or protocols.seeds_given_twice(
        proto, draws.seeds, _file_seeds(files)
    )
    if problem:
        raise ConfigError(problem)
    if draws.fraction_text != proto.fraction:
        raise ConfigError(
            f"fraction={draws.fraction!r}: FixMatch's published splits are 10% "
            f"(128,116 of ImageNet's records); leave fraction at {proto.fraction}"
        )
    if any(Fraction(f) != Fraction(proto.fraction) for f in draws.fractions):
        raise ConfigError(
            f"fractions={p['fractions']!r}: protocol {name} reproduces "
            "FixMatch's published 10% splits, and no 5% or 1% split was "
            "published; leave fractions empty, or use protocol seeded to draw "
            "train{N}.{seed} at several fractions"
        )
    if draws.sampling != proto.sampling:
        raise ConfigError(
            f"sampling={draws.sampling!r}: FixMatch's published splits are "
            f"{proto.sampling}; leave sampling at {proto.sampling}"
        )


def _sharding_files(
    files: dict[Any, Any], seeds: list[int], allowed: AllowedLocations
) -> dict[str, str]:
    """``sharding_files`` as ``{seed: uri}``: each for a seed that is built, each allowed."""
    sharding: dict[str, str] = {}
    for k, v in files.items():
        seed = _seed_key(k)
        if seed is None or seed not in seeds:
            raise ConfigError(f"sharding_files names seed {k!r}, which is not in seeds {seeds}")
        sharding[str(seed)] = located(f"sharding_files[{k}]", v, allowed)
    return sharding


def _name_lists(value: Any, proto: protocols.Protocol, allowed: AllowedLocations) -> dict[str, str]:
    """The ``name_lists`` param: ``{label: uri}``, labels that name splits apart,
    at most :data:`MAX_NAME_LISTS`, each URI allowed."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise ConfigError('name_lists must be an object {"label": "uri"}')
    if len(value) > MAX_NAME_LISTS:
        raise ConfigError(f"name_lists: at most {MAX_NAME_LISTS} lists, got {len(value)}")
    out = {}
    taken = {label for label, _ in proto.name_lists}
    for label, uri in sorted(value.items()):
        if not protocols.is_label(label):
            raise ConfigError(
                f"name_lists label {label!r} must be a lower-case letter followed by "
                "up to 31 lower-case letters, digits or _ (it names the split "
                "train{N}.{label})"
            )
        if label in taken:
            raise ConfigError(
                f"name_lists label {label!r} is protocol {proto.name}'s: choose another label"
            )
        out[label] = located(f"name_lists[{label}]", uri, allowed)
    return out


# --------------------------------------------------------------------------- runner and Dataflow


def _runner(p: dict[str, Any]) -> str:
    runner = p.get("runner", RUNNERS[0])
    if runner not in RUNNERS:
        raise ConfigError(f"runner must be one of {RUNNERS}, got {runner!r}")
    return str(runner)


def _dataflow(
    p: dict[str, Any], runner: str, where: Locations, allowed: AllowedLocations
) -> DataflowSettings | None:
    """The Dataflow settings of a DataflowRunner run (None for DirectRunner): a
    project, a gs:// temp folder, a worker package, GCS locations throughout."""
    if runner != "DataflowRunner":
        if p.get("dataflow_template_location"):
            raise ConfigError(
                "dataflow_template_location stages Dataflow templates: it needs runner "
                f"DataflowRunner (runner is {runner})"
            )
        return None
    project = p.get("dataflow_project")
    temp = p.get("dataflow_temp_location")
    if not project:
        raise ConfigError("runner DataflowRunner needs dataflow_project")
    if not temp or not str(temp).startswith("gs://"):
        raise ConfigError("runner DataflowRunner needs dataflow_temp_location (a gs:// folder)")
    for name in ("source_uri", "output_uri", "work_uri"):
        uri = getattr(where, name)
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
    template_location = _template_location(p, allowed)
    return DataflowSettings(
        worker_package=located("dataflow_worker_package", package, allowed),
        project=project,
        region=p.get("dataflow_region") or DATAFLOW_REGION,
        temp_location=located("dataflow_temp_location", temp, allowed),
        machine_type=p.get("dataflow_machine_type") or DATAFLOW_MACHINE_TYPE,
        max_num_workers=int(p.get("dataflow_max_workers") or DATAFLOW_MAX_WORKERS),
        template_location=template_location,
    )


def _template_location(p: dict[str, Any], allowed: AllowedLocations) -> str | None:
    """``dataflow_template_location``: a gs:// folder, allowed; None when unset."""
    if not p.get("dataflow_template_location"):
        return None
    loc = located("dataflow_template_location", p["dataflow_template_location"], allowed)
    if not loc.startswith("gs://"):
        raise ConfigError(f"dataflow_template_location must be a gs:// folder, got {loc}")
    return loc


def _deep_verify(p: dict[str, Any]) -> bool:
    """``deep_verify``: the form's "auto" | "always" | "never", or a boolean."""
    deep = p.get("deep_verify", "auto")
    if isinstance(deep, str):
        if deep not in DEEP_VERIFY:
            raise ConfigError(f"deep_verify must be one of {list(DEEP_VERIFY)}, got {deep!r}")
        deep = DEEP_VERIFY[deep]
    elif deep is not None and not isinstance(deep, bool):
        raise ConfigError(
            f"deep_verify must be one of {list(DEEP_VERIFY)} or a boolean, got {deep!r}"
        )
    return bool(deep)
