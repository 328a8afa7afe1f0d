"""Reading the files a run's params name, for planning: published
``filename,shard,index`` plan files and name lists (a path, gs:// or a shipped
``published:...`` list), bounded and checked before they are parsed
(:mod:`beam_jobs.planning.algorithm` parses them; it does no I/O).
"""

from __future__ import annotations

import numpy as np

from beam_jobs import access
from beam_jobs.planning import protocols
from beam_jobs.planning.algorithm import (
    Plan,
    PlanError,
    parse_name_list,
    parse_plan_table,
    supervised_split_name,
)


def read_list_bytes(uri: str, what: str, max_lines: int | None = None) -> bytes:
    """The bytes of a plan file or name list named by a param (a path, gs:// or a
    shipped ``published:...`` list), checked to be UTF-8 text of at most
    ``MAX_LIST_BYTES`` (from storage metadata, before it is read; the read is
    bounded too) and, unless shipped, at most ``max_lines`` non-blank lines (the
    source's records: a list cannot name more). PlanError naming the file, never
    quoting it."""
    try:
        if protocols.is_ref(uri):
            raw = protocols.read_bytes(uri)
        else:
            raw = access.read_bounded(uri, access.MAX_LIST_BYTES, what=what)
    except FileNotFoundError:
        raise PlanError(f"{what} {uri} does not exist") from None
    except IsADirectoryError:
        raise PlanError(f"{what} {uri} is a folder, not a file") from None
    except access.AccessError as err:
        raise PlanError(str(err)) from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise PlanError(
            f"{what} {uri}: not UTF-8 text (line {line}, byte offset {err.start})"
        ) from None
    # A shipped list is the product's own, of a known size (its names may simply
    # be missing from a small source: published_plan and named_plan say so).
    if max_lines is not None and not protocols.is_ref(uri) and raw.count(b"\n") + 1 > max_lines:
        lines = sum(1 for line in raw.split(b"\n") if line.strip())
        if lines > max_lines:
            raise PlanError(
                f"{what} {uri} has {lines:,} lines: more than the {max_lines:,} records of "
                "the source"
            )
    return raw


def read_plan_file(
    uri: str,
    *,
    seed: int | None = None,
    split: str | None = None,
    max_lines: int | None = None,
) -> Plan:
    """A published ``filename,shard,index`` file (a path, gs:// or a shipped
    ``published:...`` list) as a plan, exactly as given. ``max_lines``: the
    most lines it may have (the source's records); see :func:`read_list_bytes`."""
    raw = read_list_bytes(uri, "plan file", max_lines)
    # Arrow parses and checks a well-formed file; anything else is reported by line.
    table = parse_plan_table(raw, uri)
    names = table.column("filename").to_numpy()  # object array of str
    shards = table.column("shard").to_numpy()
    indices = table.column("index").to_numpy()
    n = len(names)
    return Plan(
        split=split or (supervised_split_name(n, seed) if seed is not None else f"train{n}"),
        kind="supervised",
        names=names,
        shards=shards,
        indices=indices,
        num_shards=int(shards.max()) + 1,
        seed=seed,
        fraction=None,
        sampling="published",
        source=uri,
    )


def read_name_list(uri: str, *, max_lines: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A name list from a path, gs:// or a shipped ``published:...`` list, checked
    (at most ``max_lines`` names: the source's records; see :func:`read_list_bytes`)."""
    raw = read_list_bytes(uri, "name list", max_lines)
    return parse_name_list(raw.decode("utf-8"), uri)
