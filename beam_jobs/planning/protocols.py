"""The published label sets the product ships, and the protocols built on them.

Users of semi-supervised ImageNet work with a few published label sets. The
product carries them as package data of ``beam_jobs`` (``beam_jobs/data/``,
xz-compressed, each folder with the ``NOTICE.md`` of its origin: Apache-2.0
data), so the Airflow tasks, the Beam workers' package and the tests have them
wherever the code is installed:

* ``fixmatch/split1`` ... ``fixmatch/split5``: FixMatch's five published 10%
  splits (``filename,shard,index`` files, 128,116 lines each), used as given.
* ``simclr/1percent``, ``simclr/10percent``: SimCLR's 1% and 10% subsets
  (one file name per line, 12,811 and 128,116 names): the split takes exactly
  those records, in the product's order and sharding.

The module imports nothing heavy (the DAG's params list the protocols at
parse time). Each list is named by a reference ``published:{key}`` (``published:fixmatch/split3``),
accepted wherever a plan or name-list URI is (``sharding_files``, ``name_lists``,
the CLIs' ``--sharding_file``/``--name_list``, the synthetic generator's
``--names_from``). Every load decompresses the file and checks the sha256 of
its text against the value its NOTICE.md gives: a damaged copy is an error
naming the file, never a silently different split.

A *protocol* is a named choice of lists (the DAG's ``protocol`` param):

=============  ==============================================================
``seeded``     none: one seeded draw per seed (``seeds``, ``fraction``, ``sampling``)
``fixmatch``   FixMatch's published split ``s`` for each seed ``s`` in 1..5
               -> ``train128116.{s}``
``simclr``     SimCLR's 1% and 10% subsets -> ``train12811.simclr``, ``train128116.simclr``
``simclr_1pct``, ``simclr_10pct``  one of the two
=============  ==============================================================

The rules a protocol sets are defined here, once: which seeds it has published
splits for (:meth:`Protocol.unpublished`), the fraction and sampling they were
drawn at (``Protocol.fraction``, ``Protocol.sampling``), what a name-list label
is (:func:`is_label`). The DAG's params (``ssl_splits.config``) and the plan
step (``beam_jobs.planning.plans.expand_protocol``, which also serves the plan
CLI without Airflow) both apply them, each with messages in its own terms.

CLI::

    python -m beam_jobs.planning.protocols                 # the protocols and lists, checked
    python -m beam_jobs.planning.protocols --export DIR    # write the lists as plain text into DIR
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

REF_PREFIX = "published:"
# The label of a name list, whose split is train{n}.{label}: it starts with a
# letter, so it never collides with a seeded split train{n}.{seed}, and holds
# no '.', so its TFDS split name (train{n}_{label}) maps back to it.
LABEL_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
SHARDING = "sharding"  # filename,shard,index lines (FixMatch's format)
NAMES = "names"  # one file name per line (SimCLR's format)


class PublishedDataError(ValueError):
    """An unknown published list or protocol, or a shipped copy that is damaged."""


@dataclass(frozen=True)
class PublishedList:
    """One shipped file."""

    key: str  # "fixmatch/split3"
    path: str  # under beam_jobs/data/, compressed
    sha256: str  # of the uncompressed text, as its NOTICE.md gives it
    format: str  # SHARDING or NAMES
    lines: int

    @property
    def ref(self) -> str:
        """``published:fixmatch/split3``: how params and plans name it."""
        return REF_PREFIX + self.key

    @property
    def file_name(self) -> str:
        """The published file's own name: ``files2shards_train_size128116_split3.txt``."""
        return Path(self.path).name.removesuffix(".xz")


def _fixmatch(seed: int, sha: str) -> PublishedList:
    return PublishedList(
        f"fixmatch/split{seed}",
        f"fixmatch/files2shards_train_size128116_split{seed}.txt.xz",
        sha,
        SHARDING,
        128_116,
    )


LISTS: dict[str, PublishedList] = {
    p.key: p
    for p in (
        _fixmatch(1, "d897658efd96e71ebf79042287a0975e6215f5b9e772a275e25aad050f554666"),
        _fixmatch(2, "f8fb70ce216edd7914f809e19e6162a9041aea1f1b97ad91ee2b72dbc76db63e"),
        _fixmatch(3, "18459c21fe96fae051c26c384facda5fa610ee5c7c23e79df849ff4a2ae4eb8b"),
        _fixmatch(4, "1cc5caf164a1b71820b624988fb46040bad25d09fb3c3e068043bb0fcdcab415"),
        _fixmatch(5, "79c7b20aff5a9cc8600fa9ac9a331e86efd67bf480aa8136f11bd1ab759bbf67"),
        PublishedList(
            "simclr/1percent",
            "simclr/1percent.txt.xz",
            "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17",
            NAMES,
            12_811,
        ),
        PublishedList(
            "simclr/10percent",
            "simclr/10percent.txt.xz",
            "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091",
            NAMES,
            128_116,
        ),
    )
}


@dataclass(frozen=True)
class Protocol:
    """A named choice of published lists."""

    name: str
    title: str  # one line, for the trigger form
    sharding: tuple[tuple[int, str], ...] = ()  # (seed, list key): the seed's split, as given
    name_lists: tuple[tuple[str, str], ...] = ()  # (label, list key): train{N}.{label}
    # What the published splits of ``sharding`` were drawn at (None: no published splits).
    fraction: str | None = None
    sampling: str | None = None

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds this protocol has published files for (empty: none)."""
        return tuple(s for s, _ in self.sharding)

    @property
    def uses_seeds(self) -> bool:
        """Whether the ``seeds`` param picks its splits (seeded and FixMatch: yes)."""
        return self.name in (SEEDED, "fixmatch")

    def unpublished(self, seeds: Iterable[int]) -> list[int]:
        """The ``seeds`` this protocol has no published split for, in their order
        (none when the protocol publishes no seeds' splits: any seed is drawn)."""
        return [s for s in seeds if s not in self.seeds] if self.sharding else []

    def published_files(self, seeds: Iterable[int]) -> dict[int, str]:
        """``{seed: published:{key}}``: the published file of each of ``seeds``
        (KeyError for a seed :meth:`unpublished` names)."""
        known = dict(self.sharding)
        return {s: LISTS[known[s]].ref for s in seeds}


SEEDED = "seeded"
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(SEEDED, "Seeded draws: one split per seed (Seeds, Fraction, Sampling)"),
        Protocol(
            "fixmatch",
            "FixMatch's published 10% splits: split s for each seed s in 1-5",
            sharding=tuple((s, f"fixmatch/split{s}") for s in range(1, 6)),
            fraction="0.1",
            sampling="stratified",
        ),
        Protocol(
            "simclr",
            "SimCLR's 1% and 10% subsets (train12811.simclr, train128116.simclr)",
            name_lists=(("simclr", "simclr/1percent"), ("simclr", "simclr/10percent")),
        ),
        Protocol(
            "simclr_1pct",
            "SimCLR's 1% subset only (train12811.simclr)",
            name_lists=(("simclr", "simclr/1percent"),),
        ),
        Protocol(
            "simclr_10pct",
            "SimCLR's 10% subset only (train128116.simclr)",
            name_lists=(("simclr", "simclr/10percent"),),
        ),
    )
}


def protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise PublishedDataError(
            f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}"
        ) from None


# --------------------------------------------------------------------------- request rules
#
# The rules a request (seeds, sharding files, fractions) must follow under a
# protocol, written once: the DAG's ``resolve()`` raises each as a ConfigError
# before any task runs, the plan step (``beam_jobs.planning.plans``, also a CLI)
# as a PlanError. Each returns the problem in words, or None.


def unpublished_seeds(proto: Protocol, seeds: Iterable[int]) -> str | None:
    """Seeds a protocol of published splits (FixMatch's) has no split for."""
    outside = proto.unpublished(seeds)
    if not outside:
        return None
    return (
        f"seeds {outside}: protocol {proto.name} has published splits for seeds "
        f"{list(proto.seeds)} only, not {outside}"
    )


def seeds_given_twice(
    proto: Protocol, seeds: Iterable[int], file_seeds: Iterable[int]
) -> str | None:
    """Seeds given a sharding file when the protocol gives them its published one."""
    both = sorted(set(seeds) & set(file_seeds)) if proto.sharding else []
    if not both:
        return None
    return (
        f"sharding_files and protocol {proto.name} both give the files of seeds {both}: "
        f"seeds {both} have a sharding file and protocol {proto.name}'s published file: "
        f"give one (protocol {proto.name} uses the published files it ships)"
    )


def files_at_several_sizes(file_seeds: Iterable[int], fractions: list[str]) -> str | None:
    """A sharding (or published) file is one split of one size: it cannot be
    drawn at several fractions."""
    seeds = sorted(set(file_seeds))
    if not seeds or len(fractions) <= 1:
        return None
    listed = ", ".join(fractions)
    return (
        f"sharding_files and fractions=[{listed}] do not go together: "
        f"seeds {seeds} have a published file, which is one split of one size: they "
        f"cannot be drawn at the fractions {listed}; build (or plan) those seeds in a run "
        "of their own, without fractions"
    )


def is_label(label: object) -> bool:
    """Whether ``label`` may label a name list (:data:`LABEL_PATTERN`)."""
    return isinstance(label, str) and re.match(LABEL_PATTERN, label) is not None


def is_ref(uri: str) -> bool:
    return uri.startswith(REF_PREFIX)


def get(ref: str) -> PublishedList:
    """The list a ``published:{key}`` reference (or a bare key) names."""
    key = ref[len(REF_PREFIX) :] if is_ref(ref) else ref
    try:
        return LISTS[key]
    except KeyError:
        raise PublishedDataError(
            f"no published list {ref!r}; known: {', '.join(p.ref for p in LISTS.values())}"
        ) from None


def data_root() -> Any:
    """The folder of the shipped files (a Traversable: also inside a zipped wheel)."""
    return resources.files("beam_jobs") / "data"


def read_bytes(ref: str, *, root: Any = None) -> bytes:
    """The uncompressed text of a shipped list, checked against its sha256.

    ``root`` replaces the package's data folder (tests use a damaged copy).
    """
    entry = get(ref)
    where = (root if root is not None else data_root()) / entry.path
    try:
        raw = where.read_bytes()
    except FileNotFoundError:
        raise PublishedDataError(
            f"{entry.ref}: the shipped copy {where} is missing; reinstall the beam_jobs package"
        ) from None
    try:
        data = lzma.decompress(raw)
    except lzma.LZMAError as err:
        raise PublishedDataError(
            f"{entry.ref}: the shipped copy {where} is damaged "
            f"(not xz: {err}); reinstall the beam_jobs package"
        ) from None
    got = hashlib.sha256(data).hexdigest()
    if got != entry.sha256:
        raise PublishedDataError(
            f"{entry.ref}: the shipped copy {where} decompresses to content with sha256 "
            f"{got}, not the published {entry.sha256} (see its NOTICE.md): the copy is damaged "
            "or was changed; reinstall the beam_jobs package"
        )
    return data


def read_text(uri: str) -> str:
    """A list's text: a shipped one (``published:...``) or a file (path or gs://)."""
    from beam_jobs import storage

    if is_ref(uri):
        return read_bytes(uri).decode("utf-8")
    return storage.read_text(uri)


def exists(uri: str) -> bool:
    """Whether a plan or name-list URI names something: a known shipped list or a file."""
    from beam_jobs import storage

    if is_ref(uri):
        return uri[len(REF_PREFIX) :] in LISTS
    return storage.exists(uri)


def export(folder: str, keys: list[str] | None = None) -> dict[str, str]:
    """Write shipped lists, checked, as their published plain-text files into
    ``folder`` (local or gs://); return ``{key: uri}``."""
    from beam_jobs import storage

    out = {}
    for key in keys or list(LISTS):
        entry = get(key)
        sub = storage.join(folder, entry.key.split("/")[0])
        uri = storage.join(sub, entry.file_name)
        storage.write_bytes(uri, read_bytes(entry.key), "text/plain")
        out[entry.key] = uri
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.planning.protocols",
        description="The published label sets this package ships.",
    )
    p.add_argument(
        "--export",
        metavar="DIR",
        help="write every list as its plain-text file under DIR/{fixmatch,simclr}/",
    )
    a = p.parse_args(argv)
    from beam_jobs import storage

    try:
        for entry in LISTS.values():
            read_bytes(entry.key)
        if a.export:
            for key, uri in export(
                a.export if storage.is_gcs(a.export) else os.path.abspath(a.export)
            ).items():
                print(f"{key}\t{uri}")
            return 0
    except PublishedDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for proto in PROTOCOLS.values():
        lists = [f"seed {s}: published:{k}" for s, k in proto.sharding] + [
            f"{label}: published:{k}" for label, k in proto.name_lists
        ]
        print(f"{proto.name:<14} {proto.title}" + "".join(f"\n{'':<17}{x}" for x in lists))
    print("lists (sha256 checked):")
    for entry in LISTS.values():
        print(f"  {entry.ref:<28} {entry.lines:>7,} lines  {entry.file_name}  {entry.sha256[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
