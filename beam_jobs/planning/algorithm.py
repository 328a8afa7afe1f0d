"""Split planning: which records each split takes, in which shard, at which index.

A plan is a pure function of (catalog content, seed, fraction or count,
sampling, shard count). It does not depend on source file order, runner,
workers, process, ``PYTHONHASHSEED`` or machine: every random choice comes
from SHA-256 of the record's file name, and every sort has a total order.

The algorithm (version ``v1``; README "How a split is derived" says the same):

1. Records are identified by ``image/filename``; catalog order is ignored.
2. ``key(purpose, seed, name)`` is the first 8 bytes, read as a big-endian
   unsigned integer, of ``SHA-256("ssl-imagenet-splits:v1:{purpose}:{seed}:{name}")``
   (UTF-8), with ``purpose`` ``select`` or ``order``. Ties (never seen in
   practice) are broken by the name, in code point order.
3. Size: ``n = floor(N * fraction)`` with ``N`` records in the catalog; the
   fraction is the exact decimal written (``0.1`` is 1/10, not the nearest
   binary float), or ``n`` is given as a count (then ``fraction = n / N``).
4. ``stratified`` (default): class ``c`` with ``N_c`` records gets
   ``floor(N_c * fraction)`` records; the ``n - sum(...)`` records left over go
   one each to the classes with the largest dropped fraction
   ``N_c * fraction - floor(N_c * fraction)``, ties to the smaller label.
   So every seed has the same per-class counts. Inside each class the records
   with the smallest ``select`` keys are taken. ``uniform``: the ``n`` records
   with the smallest ``select`` keys overall.
5. The chosen records are ordered by their ``order`` key.
6. That sequence is dealt into ``S`` shards contiguously: the first
   ``n mod S`` shards hold ``floor(n / S) + 1`` records, the rest
   ``floor(n / S)``; shard ``s`` takes the next block; the index is the
   position inside the block. Default ``S = max(1, floor(n * source_shards /
   source_records))`` (102 for 10% of ImageNet, 1,024 for all of it).
7. The full reshuffle (``train``) takes every record, ordered by its
   ``order`` key with the unsupervised seed, in ``S`` shards by the same rule.
8. A name list (one file name per line, SimCLR's format) is the split
   ``train{n}.{label}`` of exactly its ``n`` records, ordered by their
   ``order`` key with seed 0, in ``S`` shards by the rule of 6 (default
   ``S`` as there).

Plans are written as ``filename,shard,index`` lines sorted by (shard, index)
with no header: FixMatch's published format. Such a file can also be used as
a plan as given (``beam_jobs.planning.inputs.read_plan_file`` checks it first).

This module does no I/O and starts no process: reading the files params name
is :mod:`beam_jobs.planning.inputs`, computing keys in worker processes
:mod:`beam_jobs.planning.key_workers`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_jobs import defaults
from beam_jobs.planning import protocols
from beam_jobs.planning.arrays import from_numpy, to_numpy
from beam_jobs.planning.keys import ALGORITHM, key_bytes, key_prefix, split_names  # noqa: F401 (ALGORITHM re-exported)

LABEL_PATTERN = protocols.LABEL_PATTERN  # of a name list: its split is train{n}.{label}
NAMES_ORDER_SEED = 0
SAMPLINGS = defaults.SAMPLINGS
MAX_SHARD_COUNT = 100_000


class PlanError(ValueError):
    """A plan cannot be made or a plan file is not usable; says what and where."""


# --------------------------------------------------------------------------- pure pieces


def exact_fraction(value: float | str | Fraction) -> Fraction:
    """The fraction as written: ``0.1`` -> 1/10 (via the shortest repr of a float)."""
    if isinstance(value, Fraction):
        frac = value
    else:
        try:
            frac = Fraction(str(value).strip())
        except (ValueError, ZeroDivisionError):
            raise PlanError(f"fraction {value!r} is not a number") from None
    if not 0 < frac <= 1:
        raise PlanError(f"fraction must be in (0, 1], got {value!r}")
    return frac


def split_size(total: int, fraction: Fraction) -> int:
    """``floor(total * fraction)``, exactly."""
    return math.floor(total * fraction)


def default_num_shards(n: int, source_shards: int, source_records: int) -> int:
    """``max(1, floor(n * source_shards / source_records))``: the source's shard
    size kept (102 for a 10% split of ImageNet's 1,024 shards); never more
    shards than records."""
    if source_records <= 0:
        return 1
    return max(1, min(n, (n * source_shards) // source_records))


def shard_sizes(n: int, num_shards: int) -> list[int]:
    """Records per shard: the first ``n mod S`` shards one longer."""
    if num_shards < 1:
        raise PlanError(f"num_shards must be >= 1, got {num_shards}")
    q, r = divmod(n, num_shards)
    return [q + 1 if s < r else q for s in range(num_shards)]


def class_quotas(class_sizes: dict[int, int], fraction: Fraction, n: int) -> dict[int, int]:
    """Per-class counts: floor(N_c * f), then largest remainders (ties: smaller label)
    until they sum to ``n``."""
    base = {c: math.floor(size * fraction) for c, size in class_sizes.items()}
    left = n - sum(base.values())
    if left < 0 or left > len(class_sizes):
        raise PlanError(f"cannot split {n} records over classes {class_sizes}")  # pragma: no cover
    remainders = sorted(class_sizes, key=lambda c: (-(class_sizes[c] * fraction - base[c]), c))
    for c in remainders[:left]:
        base[c] += 1
    return base


def hash_keys(names: Sequence[str], purpose: str, seed: int) -> np.ndarray:
    """``key(purpose, seed, name)`` for every name, as uint64."""
    prefix = key_prefix(purpose, seed)
    sha = hashlib.sha256
    frombytes = int.from_bytes
    return np.fromiter(
        (frombytes(sha(prefix + name.encode("utf-8")).digest()[:8], "big") for name in names),
        dtype=np.uint64,
        count=len(names),
    )


def string_array(names: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Names as one Arrow string array (no copy when they are one already)."""
    if isinstance(names, pa.ChunkedArray):
        names = names.combine_chunks()
    if not isinstance(names, pa.Array):
        names = pa.array(names if isinstance(names, np.ndarray) else list(names), pa.string())
    if not (pa.types.is_string(names.type) or pa.types.is_large_string(names.type)):
        names = names.cast(pa.string())
    if names.null_count:
        raise PlanError(f"{names.null_count:,} file name(s) are missing (null)")
    return names


def offsets_and_data(arr: pa.Array) -> tuple[np.ndarray, pa.Buffer]:
    """Where each name's UTF-8 bytes start and end (``len + 1`` int64 offsets)
    in the array's data buffer, and that buffer."""
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    _, off_buf, data = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    return offsets.astype(np.int64), data if data is not None else pa.py_buffer(b"")


def share_keys(
    offsets: np.ndarray, data: pa.Buffer, lo: int, hi: int, jobs: Sequence[tuple[str, int]]
) -> list[np.ndarray]:
    """The keys of names ``lo..hi`` for each job, in this process."""
    a, b = int(offsets[lo]), int(offsets[hi])
    names = split_names(data[a:b].to_pybytes(), (offsets[lo : hi + 1] - a).tolist())
    return [np.frombuffer(key_bytes(key_prefix(p, s), names), ">u8") for p, s in jobs]


def fast_keys(names: Sequence[str] | pa.Array, purpose: str, seed: int) -> np.ndarray:
    """``hash_keys(names, purpose, seed)`` in this process, from the names' bytes
    as Arrow holds them (``beam_jobs.planning.keys``: ~20% less per name)."""
    arr = string_array(names)
    offsets, data = offsets_and_data(arr)
    return share_keys(offsets, data, 0, len(arr), [(purpose, seed)])[0].astype(np.uint64)


def _argsort_by_key(keys: np.ndarray) -> np.ndarray:
    """Positions by key, ties by position (names are in code point order: ties by
    name). An unstable sort (several times faster) is the stable one whenever
    no two keys are equal, which is checked; with a tie, the stable sort."""
    order = np.argsort(keys)
    ranked = keys[order]
    if len(ranked) > 1 and bool(np.any(ranked[1:] == ranked[:-1])):
        order = np.argsort(keys, kind="stable")
    return order


# --------------------------------------------------------------------------- plans


class _Names:
    """The ``names`` field of :class:`Plan`: an object array of ``str``. A plan
    may be given an Arrow string array instead: the array of ``str`` is then
    made on first use (a plan of 1.28M names that is only written to files
    never makes 1.28M Python strings: ~100 MB and 0.1 s less)."""

    def __get__(self, plan: Plan | None, owner: type | None = None) -> np.ndarray:
        if plan is None:  # the dataclass asks for a default: there is none
            raise AttributeError("names")
        made = plan.__dict__.get("_names_objects")
        if made is None:
            given = plan.__dict__["_names"]
            made = given.to_numpy(zero_copy_only=False) if isinstance(given, pa.Array) else given
            plan.__dict__["_names_objects"] = made
        return made

    def __set__(self, plan: Plan, value: np.ndarray | pa.Array) -> None:
        plan.__dict__["_names"] = value


@dataclass(frozen=True)
class Plan:
    """Which records a split holds and where: ``names[i]`` goes to
    ``shards[i]`` at ``indices[i]``; rows sorted by (shard, index)."""

    split: str
    kind: str  # "supervised" or "unsupervised"
    if TYPE_CHECKING:
        names: np.ndarray  # object array of str
    else:
        names: _Names = _Names()  # object array of str (given as such, or as Arrow strings)
    shards: np.ndarray  # int32
    indices: np.ndarray  # int32
    num_shards: int
    seed: int | None = None
    fraction: str | None = None  # exact decimal or "n/N"
    sampling: str | None = None
    source: str = "computed"  # "computed" or the URI of a published plan file
    class_counts: dict[str, int] = field(default_factory=dict)  # synset or label -> count

    @property
    def num_examples(self) -> int:
        return len(self.__dict__["_names"])

    def shard_lengths(self) -> list[int]:
        return np.bincount(self.shards, minlength=self.num_shards).astype(int).tolist()

    def to_csv_bytes(self, keep: bool = True) -> bytes:
        """``filename,shard,index`` lines, sorted by (shard, index), no header
        (made in Arrow: the reshuffle's is 1.28M lines on ImageNet). ``keep``:
        kept for the next call (else only their sha256 is: the plan task writes
        each file once and needs the 33 MB of the reshuffle's no longer)."""
        cached = self.__dict__.get("_csv")
        if cached is None:
            names = self.names_arrow()
            # Shard and index numbers as text: each distinct number formatted once.
            top = max(int(self.shards.max()), int(self.indices.max())) if len(names) else 0
            numbers = pa.array([str(i) for i in range(top + 1)])
            if names.nbytes + len(names) * (2 * len(str(top)) + 3) >= 2**31:
                names, numbers = names.cast(pa.large_string()), numbers.cast(pa.large_string())
            text = names.type
            shards = numbers.take(pa.array(self.shards))
            indices = numbers.take(pa.array(self.indices))
            eol = pc.binary_join_element_wise(indices, pa.scalar("", text), pa.scalar("\n", text))
            lines = pc.binary_join_element_wise(names, shards, eol, pa.scalar(",", text))
            # The lines one after the other are the array's data buffer.
            width = np.int64 if pa.types.is_large_string(text) else np.int32
            offsets = np.frombuffer(lines.buffers()[1], dtype=width)
            lo, hi = offsets[lines.offset], offsets[lines.offset + len(lines)]
            data = lines.buffers()[2]
            cached = data[lo:hi].to_pybytes() if data is not None else b""
            del lines
            if keep:
                object.__setattr__(self, "_csv", cached)
            if "_sha256" not in self.__dict__:
                object.__setattr__(self, "_sha256", hashlib.sha256(cached).hexdigest())
        return cached

    def sha256(self) -> str:
        if "_sha256" not in self.__dict__:
            self.to_csv_bytes()  # which records their sha256
        return self.__dict__["_sha256"]

    def names_arrow(self) -> pa.Array:
        """``names`` as an Arrow string array (as given, or converted)."""
        given = self.__dict__["_names"]
        return given if isinstance(given, pa.Array) else pa.array(given, pa.string())

    def catalog_rows(self) -> np.ndarray | None:
        """Each name's row in the catalog table it was planned from (``rows`` of
        :class:`SortedCatalog`), when known: ``beam_jobs.planning.plans.write_records``
        then takes them without looking the names up."""
        return self.__dict__.get("_catalog_rows")


def _deal(
    split: str,
    kind: str,
    ordered: np.ndarray,
    num_shards: int,
    catalog_rows: np.ndarray | None = None,
    **meta: Any,
) -> Plan:
    n = len(ordered)
    sizes = shard_sizes(n, num_shards)
    shards = np.repeat(np.arange(num_shards, dtype=np.int32), sizes)
    starts = np.repeat(np.cumsum([0] + sizes[:-1]), sizes)
    indices = (np.arange(n) - starts).astype(np.int32)
    plan = Plan(
        split=split,
        kind=kind,
        names=ordered,
        shards=shards,
        indices=indices,
        num_shards=num_shards,
        **meta,
    )
    if catalog_rows is not None:
        object.__setattr__(plan, "_catalog_rows", catalog_rows)
    return plan


def _deal_from(
    cat: SortedCatalog,
    positions: np.ndarray,
    split: str,
    kind: str,
    num_shards: int,
    names: pa.Array | None = None,
    **meta: Any,
) -> Plan:
    """:func:`_deal` of the catalog's names at ``positions`` (in order); ``names``:
    those names as Arrow if already taken. The plan is given them as Arrow,
    and their rows in the catalog table."""
    taken = names if names is not None else cat.names.take(pa.array(positions))
    return _deal(
        split,
        kind,
        cast(np.ndarray, taken),  # Plan.names takes Arrow strings too (_Names)
        num_shards,
        catalog_rows=cat.input_rows(positions),
        **meta,
    )


def supervised_split_name(n: int, seed: int) -> str:
    """``train128116.3``: FixMatch's naming (size, then seed)."""
    return f"train{n}.{seed}"


UNSUPERVISED_SPLIT = "train"

# keys(names, purpose, seed) -> uint64 keys: hash_keys's values
KeyFunction = Callable[[pa.Array, str, int], np.ndarray]


@dataclass(frozen=True, eq=False)
class SortedCatalog:
    """A catalog's file names in code point order (= UTF-8 byte order), checked
    unique, with their labels: what every plan of a run starts from, made once
    (:func:`sorted_catalog`). Positions below are positions in this order."""

    names: pa.Array  # string
    labels: np.ndarray | None  # int64, of names
    rows: np.ndarray | None  # each name's row in the table given; None: it was in order

    def __len__(self) -> int:
        return len(self.names)

    @functools.cached_property
    def classes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``np.unique(labels, return_inverse=True, return_counts=True)``."""
        assert self.labels is not None
        return np.unique(self.labels, return_inverse=True, return_counts=True)

    def input_rows(self, positions: np.ndarray) -> np.ndarray:
        """Rows of the table given of the names at ``positions``."""
        return positions if self.rows is None else self.rows[positions]


def sorted_catalog(
    names: Sequence[str] | pa.Array | pa.ChunkedArray,
    labels: Sequence[int] | np.ndarray | pa.Array | pa.ChunkedArray | None = None,
) -> SortedCatalog:
    """Names in code point order, checked unique, with labels. Names already in
    order (strictly increasing: sorted and unique) are only checked, in Arrow,
    not sorted again."""
    arr = string_array(names)
    lab = None
    if labels is not None:
        if isinstance(labels, (pa.Array, pa.ChunkedArray)):
            lab = labels.to_numpy().astype(np.int64)
        else:
            lab = np.asarray(labels, dtype=np.int64)
        if len(lab) != len(arr):
            raise PlanError(f"{len(arr):,} file names but {len(lab):,} labels")
    n, rows = len(arr), None
    if n > 1 and not pc.all(pc.less(arr.slice(0, n - 1), arr.slice(1))).as_py():
        order = pc.sort_indices(arr)  # stable
        arr = arr.take(order)
        rows = order.to_numpy()
        lab = None if lab is None else lab[rows]
        same = pc.equal(arr.slice(0, n - 1), arr.slice(1)).to_numpy(zero_copy_only=False)
        if same.any():
            dup = arr[int(np.flatnonzero(same)[0]) + 1].as_py()
            raise PlanError(f"duplicate file name in the catalog: {dup}")
    return SortedCatalog(arr, lab, rows)


def _check_sampling(sampling: str, fraction: object, count: int | None) -> None:
    if sampling not in SAMPLINGS:
        raise PlanError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if (fraction is None) == (count is None):
        raise PlanError("give exactly one of fraction and count")


def supervised_plan(
    cat: SortedCatalog,
    *,
    seed: int,
    fraction: float | str | Fraction | None = None,
    count: int | None = None,
    sampling: str = defaults.SAMPLING,
    num_shards: int | None = None,
    source_shards: int | None = None,
    class_names: dict[int, str] | None = None,
    select_keys: np.ndarray | None = None,
    keys: KeyFunction = fast_keys,
) -> Plan:
    """Plan a seeded labelled split of a catalog in name order (a run's plans
    share it; see the module docstring for the algorithm). ``select_keys``:
    ``hash_keys(cat.names, "select", seed)`` if already computed; ``keys``
    computes the keys not given."""
    _check_sampling(sampling, fraction, count)
    total = len(cat)
    if total == 0:
        raise PlanError("the catalog is empty")
    frac, n = _size(total, fraction, count)
    S = _checked_num_shards(num_shards, n, source_shards, total)
    select = select_keys if select_keys is not None else keys(cat.names, "select", seed)
    chosen = _selected(cat, select, sampling, frac, n)
    frac_text = f"{count}/{total}" if count is not None else str(fraction)
    return _deal_by_order_key(
        cat,
        chosen,
        seed,
        keys,
        class_names,
        split=supervised_split_name(n, seed),
        num_shards=S,
        seed=seed,
        fraction=frac_text,
        sampling=sampling,
    )


def _size(
    total: int, fraction: float | str | Fraction | None, count: int | None
) -> tuple[Fraction, int]:
    """The split's fraction and size ``n``, from a fraction or a count (exactly one given)."""
    if count is not None:
        if not 0 < count <= total:
            raise PlanError(f"count must be in 1..{total}, got {count}")
        return Fraction(count, total), count
    frac = exact_fraction(fraction)  # type: ignore[arg-type]
    n = split_size(total, frac)
    if n == 0:
        raise PlanError(f"fraction {fraction} of {total} records is 0 records")
    return frac, n


def _checked_num_shards(
    num_shards: int | None, n: int, source_shards: int | None, total: int
) -> int:
    """The shard count given, else the default for ``n`` of ``total`` records;
    a PlanError unless in 1..min(n, MAX_SHARD_COUNT)."""
    S = num_shards or default_num_shards(n, source_shards or 1, total)
    if not 1 <= S <= min(n, MAX_SHARD_COUNT):
        raise PlanError(f"num_shards must be in 1..{min(n, MAX_SHARD_COUNT)}, got {S}")
    return S


def _selected(
    cat: SortedCatalog, select: np.ndarray, sampling: str, frac: Fraction, n: int
) -> np.ndarray:
    """Positions of the records a seeded split takes (step 4), in name order."""
    if sampling == "uniform":
        group, quotas = np.zeros(len(cat), np.int64), np.array([n])
    else:
        classes, group, sizes = cat.classes
        by_label = class_quotas(dict(zip(classes.tolist(), sizes.tolist())), frac, n)
        quotas = np.array([by_label[c] for c in classes.tolist()])
    # Back in name order (positions are in name order) before ordering by the
    # order key, so ties go by name.
    return np.sort(lowest_keys(select, group, quotas, candidate_share(frac)))


def _deal_by_order_key(
    cat: SortedCatalog,
    chosen: np.ndarray,
    order_seed: int,
    keys: KeyFunction,
    class_names: dict[int, str] | None,
    *,
    split: str,
    num_shards: int,
    **meta: Any,
) -> Plan:
    """The plan of the records at ``chosen`` (positions in name order): ordered
    by their ``order`` key with ``order_seed`` (ties by name), dealt into
    ``num_shards`` shards, with their per-class counts."""
    assert cat.labels is not None
    chosen_names = cat.names.take(pa.array(chosen))
    by_order = _argsort_by_key(keys(chosen_names, "order", order_seed))
    labs, counts = np.unique(cat.labels[chosen], return_counts=True)
    class_counts = {
        (class_names or {}).get(int(c), str(int(c))): int(k) for c, k in zip(labs, counts)
    }
    return _deal_from(
        cat,
        chosen[by_order],
        split,
        "supervised",
        num_shards,
        names=chosen_names.take(pa.array(by_order)),
        class_counts=class_counts,
        **meta,
    )


def candidate_share(fraction: Fraction) -> float:
    """The share of the key range that :func:`lowest_keys` sorts when taking
    ``fraction`` of each group: with margin, most groups have their quota in
    it (a group that has not is sorted whole)."""
    return min(1.0, 1.5 * float(fraction) + 0.01)


def lowest_keys(
    keys: np.ndarray, group: np.ndarray, quotas: np.ndarray, share: float = 1.0
) -> np.ndarray:
    """Positions of the ``quotas[g]`` lowest keys of each group ``g`` (ties by
    position), group by group, each by key (pure).

    Only the candidates are sorted: the keys in the lowest ``share`` of the
    uint64 range, and every key of a group with fewer than its quota there.
    They hold each group's lowest keys (any other key of the group is larger
    than all of its candidates), so the result is that of sorting them all; a
    10% split sorts ~16% of the keys instead of all."""
    if share < 1.0:
        low = keys < np.uint64(int(share * 2.0**64))
        short = np.bincount(group[low], minlength=len(quotas)) < quotas
        if short.any():
            low |= short[group]
        candidates = np.flatnonzero(low)
        # Positions ascending: ties among the candidates still go by position.
        by_key = candidates[_argsort_by_key(keys[candidates])]
    else:
        by_key = _argsort_by_key(keys)
    # By key, then stably by group (np.lexsort((keys, group)), several times faster).
    of = group[by_key]
    by_group = by_key[np.argsort(of.astype(_small_int(len(quotas))), kind="stable")]
    starts = np.concatenate([[0], np.cumsum(np.bincount(of, minlength=len(quotas)))[:-1]])
    return np.concatenate(
        [by_group[start : start + q] for start, q in zip(starts.tolist(), quotas.tolist())]
    )


def _small_int(count: int) -> type:
    """The narrowest signed integer type for 0..count-1 (NumPy's stable sort of
    16-bit integers is a radix sort)."""
    return np.int16 if count <= np.iinfo(np.int16).max else np.int64


def unsupervised_plan(
    cat: SortedCatalog,
    *,
    seed: int = 0,
    num_shards: int | None = None,
    source_shards: int | None = None,
    order_keys: np.ndarray | None = None,
    keys: KeyFunction = fast_keys,
) -> Plan:
    """Plan the full reshuffle ``train`` of a catalog in name order: every
    record once, in seeded order. ``order_keys``: ``hash_keys(cat.names,
    "order", seed)`` if already computed; ``keys`` computes them otherwise."""
    n = len(cat)
    if n == 0:
        raise PlanError("the catalog is empty")
    S = _checked_num_shards(num_shards, n, source_shards, n)
    if order_keys is None:
        order_keys = keys(cat.names, "order", seed)
    ordered = _argsort_by_key(order_keys)
    return _deal_from(
        cat,
        ordered,
        UNSUPERVISED_SPLIT,
        "unsupervised",
        S,
        seed=seed,
        fraction="1",
        sampling="all",
    )


# --------------------------------------------------------------------------- plan files


def parse_plan_text(text: str, origin: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse and check ``filename,shard,index`` lines; return rows sorted by position.

    Checks: well-formed lines (reported with line numbers), unique names,
    unique positions, shards 0..S-1 all present, indices 0..n-1 in every
    shard. Blank lines are ignored; there is no header.
    """
    names, sh, ix, line_arr = _plan_lines(text, origin)
    problems = _duplicate_name_problems(names, line_arr)
    order = np.lexsort((ix, sh))
    sh, ix, names, line_arr = sh[order], ix[order], names[order], line_arr[order]
    problems += _position_problems(sh, ix, line_arr)
    if problems:
        raise PlanError(f"{origin}: unusable plan file:\n  " + "\n  ".join(problems))
    return names, sh.astype(np.int32), ix.astype(np.int32)


def _plan_line(line: str, lineno: int) -> tuple[str, int, int] | str:
    """One non-blank line's ``(name, shard, index)``, or what is wrong with it.

    Messages name the line and what is wrong, never its text: the file may be
    anything a param named (a secret, if the allowed roots let it through)."""
    parts = line.split(",")
    if len(parts) != 3:
        return (
            f"line {lineno}: expected 3 comma-separated fields (filename,shard,index), "
            f"found {len(parts)}"
        )
    name, s, i = (p.strip() for p in parts)
    # ASCII digits only: str.isdigit() also accepts '²', which int() rejects.
    if not name:
        return f"line {lineno}: the file name (field 1) is empty"
    if not (s.isascii() and s.isdigit()):
        return f"line {lineno}: the shard (field 2) is not a non-negative integer"
    if not (i.isascii() and i.isdigit()):
        return f"line {lineno}: the index (field 3) is not a non-negative integer"
    if int(s) >= MAX_SHARD_COUNT:
        return f"line {lineno}: the shard is too large (at most {MAX_SHARD_COUNT - 1})"
    if int(i) >= 2**31:
        return f"line {lineno}: the index is too large (at most {2**31 - 1})"
    return name, int(s), int(i)


def _plan_lines(text: str, origin: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The names, shards, indices and line numbers of a plan file's lines, in
    file order; a PlanError listing the first malformed lines, or if there are none."""
    rows: list[tuple[str, int, int]] = []
    lines_of: list[int] = []
    bad: list[str] = []
    n_bad = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parsed = _plan_line(line, lineno)
        if isinstance(parsed, str):
            n_bad += 1
            if len(bad) < 10:
                bad.append(parsed)
            continue
        rows.append(parsed)
        lines_of.append(lineno)
    if bad:
        more = f"\n  ... {n_bad:,} malformed lines in all" if n_bad > len(bad) else ""
        raise PlanError(f"{origin}: malformed plan file:\n  " + "\n  ".join(bad) + more)
    if not rows:
        raise PlanError(f"{origin}: the plan file is empty")
    return (
        np.asarray([r[0] for r in rows], dtype=object),
        np.asarray([r[1] for r in rows], dtype=np.int64),
        np.asarray([r[2] for r in rows], dtype=np.int64),
        np.asarray(lines_of),
    )


def _duplicate_name_problems(names: np.ndarray, line_arr: np.ndarray) -> list[str]:
    """The first lines that give a file name already given, and their count."""
    problems = []
    by_name = np.argsort(names, kind="stable")
    dup = np.nonzero(names[by_name][1:] == names[by_name][:-1])[0]
    for d in dup[:5]:
        a, b = sorted((line_arr[by_name][d], line_arr[by_name][d + 1]))
        problems.append(f"lines {a} and {b} give the same file name")
    if len(dup) > 5:
        problems.append(f"... {len(dup)} duplicate names in all")
    return problems


def _position_problems(sh: np.ndarray, ix: np.ndarray, line_arr: np.ndarray) -> list[str]:
    """What is wrong with the positions of rows sorted by (shard, index):
    positions used twice, missing shards, gaps in a shard's indices."""
    problems = []
    same = np.nonzero((sh[1:] == sh[:-1]) & (ix[1:] == ix[:-1]))[0]
    for d in same[:5]:
        problems.append(
            f"position shard {sh[d]} index {ix[d]} is used twice "
            f"(lines {line_arr[d]} and {line_arr[d + 1]})"
        )
    num_shards = int(sh.max()) + 1
    present = np.bincount(sh, minlength=num_shards)
    missing_shards = np.nonzero(present == 0)[0]
    if len(missing_shards):
        problems.append(
            f"shards must be 0..{num_shards - 1}; missing shard(s) {missing_shards[:10].tolist()}"
        )
    if not same.size:
        starts = np.concatenate([[0], np.cumsum(present)[:-1]])
        expected = np.arange(len(ix)) - np.repeat(starts, present)
        gaps = np.nonzero(ix != expected)[0]
        if gaps.size:
            g = gaps[0]
            problems.append(
                f"indices in shard {sh[g]} must be 0..{present[sh[g]] - 1} without "
                f"gaps; index {expected[g]} is missing (line {line_arr[g]} has "
                f"index {ix[g]})"
            )
    return problems


def parse_plan_table(raw: bytes, origin: str) -> pa.Table:
    """``filename,shard,index`` bytes as a table (filename, shard, index) sorted
    by position, with the same checks as :func:`parse_plan_text`.

    The common case (a well-formed file) is parsed and checked in Arrow
    (C++), without a Python object per line; anything unusual is handed to
    :func:`parse_plan_text`, which reports it with line numbers.
    """
    table = _read_plan_csv(raw)
    if table is not None and table.num_rows and _fields_well_formed(table):
        positioned = _sorted_by_position(table)
        if positioned is not None:
            return positioned
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:  # where, never what: the file may be anyone's
        line = raw.count(b"\n", 0, err.start) + 1
        raise PlanError(
            f"{origin}: not UTF-8 text (line {line}, byte offset {err.start})"
        ) from None
    names, shards, indices = parse_plan_text(text, origin)
    return pa.table(
        {
            "filename": pa.array(names.tolist(), pa.string()),
            "shard": pa.array(shards, pa.int32()),
            "index": pa.array(indices, pa.int32()),
        }
    )


def _read_plan_csv(raw: bytes) -> pa.Table | None:
    """The three fields of every line as strings, read by Arrow; None if it cannot."""
    try:
        return pacsv.read_csv(
            pa.py_buffer(raw),
            read_options=pacsv.ReadOptions(column_names=["filename", "shard", "index"]),
            parse_options=pacsv.ParseOptions(quote_char=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"filename": pa.string(), "shard": pa.string(), "index": pa.string()}
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None


def _fields_well_formed(t: pa.Table) -> bool:
    """Shards and indices of 1 to 9 ASCII digits; names non-empty, without
    surrounding white space, distinct."""
    name = t.column("filename")
    digits = "^[0-9]{1,9}$"
    return bool(
        pc.all(pc.match_substring_regex(t.column("shard"), digits)).as_py()
        and pc.all(pc.match_substring_regex(t.column("index"), digits)).as_py()
        # No Python value in a compute call: converting one makes pyarrow import
        # pandas (~0.5 s, paid by every verify task process under a scheduler).
        and pc.min(pc.utf8_length(name)).as_py() > 0
        and pc.all(pc.equal(name, pc.utf8_trim_whitespace(name))).as_py()
        and len(pc.unique(name)) == t.num_rows  # half of count_distinct's time (no nulls here)
    )


def _sorted_by_position(t: pa.Table) -> pa.Table | None:
    """A well-formed table as (filename, shard, index) sorted by position; None
    if its positions are not shards 0..S-1 each with indices 0..n-1."""
    n = t.num_rows
    shard = to_numpy(pc.cast(t.column("shard"), pa.int64()))
    index = to_numpy(pc.cast(t.column("index"), pa.int64()))
    if shard.max() >= MAX_SHARD_COUNT:
        return None
    order = np.lexsort((index, shard))
    shard, index = shard[order], index[order]
    present = np.bincount(shard)
    starts = np.concatenate([[0], np.cumsum(present)[:-1]])
    if (present == 0).any() or not np.array_equal(index, np.arange(n) - np.repeat(starts, present)):
        return None  # gaps, repeats or missing shards: parse_plan_text says where
    return pa.table(
        {
            "filename": pc.take(t.column("filename"), from_numpy(order, pa.int64())),
            "shard": from_numpy(shard, pa.int32()),
            "index": from_numpy(index, pa.int32()),
        }
    )


def catalog_positions(
    names: pa.Array | pa.ChunkedArray,
    catalog_names: pa.Array | pa.ChunkedArray,
    shards: Any,
    indices: Any,
    origin: str,
) -> pa.Array:
    """The join of a plan with a catalog: the catalog row of each planned name,
    in plan order. A PlanError with the count and the first missing ones by
    their place in the plan (``shards``, ``indices``), never by name: a plan's
    names are its file's text (see parse_plan_text)."""
    pos = pc.index_in(names, value_set=catalog_names)
    if pos.null_count:
        lost = np.flatnonzero(pc.is_null(pos).to_numpy(zero_copy_only=False))
        shards, indices = np.asarray(shards), np.asarray(indices)
        where = ", ".join(f"shard {int(shards[i])} index {int(indices[i])}" for i in lost[:5])
        raise PlanError(
            f"plan {origin}: {len(lost):,} of {len(names):,} names are not in the "
            f"source catalog, e.g. the names at {where}"
        )
    return pos.combine_chunks() if isinstance(pos, pa.ChunkedArray) else pos


def published_plan(
    plan: Plan, cat: SortedCatalog, class_names: dict[int, str] | None = None
) -> Plan:
    """A published plan checked against a catalog already in order: a PlanError
    with the count and the first missing names (in plan order) if the catalog
    lacks any, else a copy with its per-class counts (a label's class: its
    synset, else the label) and its catalog rows."""
    pos = catalog_positions(
        pa.array(plan.names, pa.string()), cat.names, plan.shards, plan.indices, plan.source
    )
    positions = pos.to_numpy().astype(np.int64)
    assert cat.labels is not None
    counts: dict[str, int] = {}
    for c, k in zip(*np.unique(cat.labels[positions], return_counts=True)):
        name = (class_names or {}).get(int(c), str(int(c)))
        counts[name] = counts.get(name, 0) + int(k)
    out = dataclasses.replace(plan, class_counts=dict(sorted(counts.items())))
    object.__setattr__(out, "_catalog_rows", cat.input_rows(positions))
    return out


# --------------------------------------------------------------------------- name lists


def named_split_name(n: int, label: str) -> str:
    """``train12811.simclr``: the size, then the list's label (never all digits)."""
    return f"train{n}.{label}"


def check_label(label: str) -> str:
    """``label`` if it may label a name list (the rule: ``protocols.is_label``)."""
    if not protocols.is_label(label):
        raise PlanError(
            f"name list label {label!r} must be a lower-case letter followed by up "
            "to 31 lower-case letters, digits or '_' (it names the split "
            "train{N}.{label})"
        )
    return label


def parse_name_list(text: str, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check a name list: one file name per line (SimCLR's format).

    Returns the names and their line numbers, in file order. Blank lines are
    ignored and surrounding white space is dropped. Refused, with line numbers
    (the first few of each kind and the count): a line with a ``,`` (a
    ``filename,shard,index`` file belongs in ``sharding_files``), a name given
    twice, an empty list.
    """
    names: list[str] = []
    lines: list[int] = []
    bad: list[str] = []
    n_bad = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if "," in name:
            # The line number and what is wrong, never the line's text.
            n_bad += 1
            if len(bad) < 5:
                bad.append(
                    f"line {lineno}: a file name must not contain ',' (a "
                    "filename,shard,index file is a sharding file, not a name list)"
                )
            continue
        names.append(name)
        lines.append(lineno)
    if bad:
        more = f"\n  ... {n_bad:,} such lines in all" if n_bad > len(bad) else ""
        raise PlanError(f"{origin}: malformed name list:\n  " + "\n  ".join(bad) + more)
    if not names:
        raise PlanError(f"{origin}: the name list is empty")
    arr = np.asarray(names, dtype=object)
    line_arr = np.asarray(lines, dtype=np.int64)
    by_name = np.argsort(arr, kind="stable")
    dup = np.nonzero(arr[by_name][1:] == arr[by_name][:-1])[0]
    if len(dup):
        shown = [
            "lines {} and {}".format(*sorted((line_arr[by_name][d], line_arr[by_name][d + 1])))
            for d in dup[:5]
        ]
        raise PlanError(
            f"{origin}: {len(dup):,} duplicate name(s) in the name list: " + "; ".join(shown)
        )
    return arr, line_arr


def named_plan(
    list_names: Sequence[str] | np.ndarray,
    cat: SortedCatalog,
    *,
    label: str,
    origin: str,
    list_lines: Sequence[int] | np.ndarray | None = None,
    num_shards: int | None = None,
    source_shards: int | None = None,
    class_names: dict[int, str] | None = None,
    keys: KeyFunction = fast_keys,
) -> Plan:
    """Plan the split ``train{n}.{label}`` of exactly the records a name list
    names (step 8 of the module docstring), from a catalog in name order.
    Every name must be in the catalog: otherwise a PlanError with the count and
    the first missing names' line numbers. ``list_names`` must be unique
    (:func:`parse_name_list`)."""
    check_label(label)
    total = len(cat)
    if total == 0:
        raise PlanError("the catalog is empty")
    chosen = _listed(cat, list_names, origin, list_lines)
    n = len(chosen)
    S = _checked_num_shards(num_shards, n, source_shards, total)
    return _deal_by_order_key(
        cat,
        chosen,
        NAMES_ORDER_SEED,
        keys,
        class_names,
        split=named_split_name(n, label),
        num_shards=S,
        seed=None,
        fraction=f"{n}/{total}",
        sampling="names",
        source=origin,
    )


def _listed(
    cat: SortedCatalog,
    list_names: Sequence[str] | np.ndarray,
    origin: str,
    list_lines: Sequence[int] | np.ndarray | None,
) -> np.ndarray:
    """Positions of a name list's records, in name order; a PlanError with the
    count and the first line numbers of names not in the catalog."""
    wanted = string_array(list_names)
    pos = pc.index_in(wanted, value_set=cat.names)
    missing = np.flatnonzero(pc.is_null(pos).to_numpy(zero_copy_only=False))
    if len(missing):
        # Line numbers, not names: the names are the file's text (see parse_name_list).
        lines = list_lines if list_lines is not None else np.arange(1, len(wanted) + 1)
        shown = ", ".join(str(int(lines[int(i)])) for i in missing[:5])
        raise PlanError(
            f"{origin}: {len(missing):,} of {len(wanted):,} names are not in the "
            f"source catalog ({len(cat):,} records), e.g. the names on lines {shown}"
        )
    chosen = np.sort(pos.to_numpy(zero_copy_only=False).astype(np.int64))
    if len(chosen) > 1 and bool(np.any(chosen[1:] == chosen[:-1])):
        raise PlanError(f"{origin}: the name list repeats names")  # parse_name_list refuses these
    return chosen
