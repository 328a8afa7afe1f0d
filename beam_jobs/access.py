"""Where a run's params may point, and how files they name are read.

A run's params name folders and files (``source_uri``, ``output_uri``,
``sharding_files``, ``name_lists``, ...) that the Airflow worker then reads
and writes with its own rights. Anyone who may trigger the DAG could point
them at the worker's secrets (``airflow.cfg``: the database URL, the fernet
key). This module holds the rules ``ssl_splits.config.resolve()`` applies to
every such param before anything is read, and the bounded reader of the
small text files params name:

* :class:`AllowedLocations`: what a deployment allows, read once from the
  environment and then passed explicitly (``ssl_splits.config.resolve_conf``).
* :func:`allowed_roots`: the deployment setting ``SSL_SPLITS_ALLOWED_ROOTS``
  (absolute local roots and ``gs://bucket`` or ``gs://bucket/prefix``
  entries, separated by commas and/or white space). Unset or empty: any
  location (a local install, where the user owns the disk).
* :func:`check_location`: a param's location must lie inside one of the
  roots (local paths judged on their real path, symlinks followed;
  ``gs://`` URIs normalised and matched on whole path components), and
  never in the Airflow home (``AIRFLOW_HOME`` or ``~/airflow``) or on the
  file ``AIRFLOW_CONFIG``, whatever the setting.
* :func:`location_key`: what two locations are compared on to tell whether
  they overlap (real paths; normalised ``gs://`` URIs).
* :func:`read_bounded`: a whole small file, its size checked from storage
  metadata first and the read itself bounded, from a regular file only.

Everything here is free of Airflow, so the Beam jobs can use it too.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat as statmod
from dataclasses import dataclass
from typing import Mapping

from beam_jobs import storage
from beam_jobs.storage import GCS_PREFIX, is_gcs

ENV_ALLOWED_ROOTS = "SSL_SPLITS_ALLOWED_ROOTS"
# A bucket name as GCS allows it (3-222 characters, dots allowed).
BUCKET_PATTERN = re.compile(r"^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]$")
# Characters refused anywhere in a location: ones that some client or tool
# reads as something other than a literal name (percent escapes, query,
# fragment, Windows separators) and control characters (NUL, newlines).
_REFUSED_CHARS = re.compile(r"[%?#\\\x00-\x1f\x7f]")
# The largest plan file or name list read (ImageNet's full training set as a
# filename,shard,index file is ~45 MB).
MAX_LIST_BYTES = 64 * 1024 * 1024


class AccessError(ValueError):
    """A location is not allowed, not well-formed, or a file is not readable as
    asked (too large, not a regular file); the message names it and why."""


# --------------------------------------------------------------------------- names (no I/O)


def normalize_gcs(uri: str) -> str:
    """``gs://bucket/a//b/`` -> ``gs://bucket/a/b``: empty components dropped,
    no trailing ``/``. AccessError for a bad bucket name, a ``.`` or ``..``
    component, or a character of :data:`_REFUSED_CHARS` (``%`` included: no
    percent-encoded ``..`` or ``/``)."""
    if not is_gcs(uri):
        raise AccessError(f"{uri}: not a gs:// URI")
    if _REFUSED_CHARS.search(uri):
        raise AccessError(
            f"{uri!r}: '%', '?', '#', '\\' and control characters are not allowed in a gs:// URI"
        )
    bucket, _, name = uri[len(GCS_PREFIX) :].partition("/")
    if not BUCKET_PATTERN.match(bucket):
        raise AccessError(f"{uri}: {bucket!r} is not a valid bucket name")
    parts = [p for p in name.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise AccessError(f"{uri}: '.' and '..' are not allowed as path components")
    return GCS_PREFIX + "/".join([bucket, *parts])


def is_within(path: str, root: str) -> bool:
    """Is ``path`` ``root`` or inside it, on whole path components? (Both
    normalised: real local paths, or :func:`normalize_gcs` URIs.) ``gs://b/ab``
    is not inside ``gs://b/a``; every absolute path is inside ``/``."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def parse_allowed_roots(text: str | None) -> tuple[str, ...]:
    """The entries of :data:`ENV_ALLOWED_ROOTS` (commas and/or white space
    between them), normalised: absolute local paths (``os.path.normpath``; their
    real paths are taken when a location is checked) and ``gs://bucket`` or
    ``gs://bucket/prefix``. Empty or None: ``()``, no restriction. AccessError
    naming a bad entry."""
    out: list[str] = []
    for entry in re.split(r"[,\s]+", text or ""):
        if not entry:
            continue
        if is_gcs(entry):
            try:
                out.append(normalize_gcs(entry))
            except AccessError as err:
                raise AccessError(f"{ENV_ALLOWED_ROOTS}: entry {err}") from None
        elif "://" in entry or not entry.startswith("/") or _REFUSED_CHARS.search(entry):
            raise AccessError(
                f"{ENV_ALLOWED_ROOTS}: entry {entry!r} is neither an absolute local path "
                "nor gs://bucket[/prefix]"
            )
        else:
            out.append(posixpath.normpath(entry))
    return tuple(dict.fromkeys(out))


def allowed_roots(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The deployment's allowed roots (:func:`parse_allowed_roots` of
    :data:`ENV_ALLOWED_ROOTS`); ``()``: no restriction."""
    env = os.environ if environ is None else environ
    return parse_allowed_roots(env.get(ENV_ALLOWED_ROOTS))


# --------------------------------------------------------------------------- local real paths


def real_path(path: str) -> str:
    """The real path of an absolute local path: every existing component's
    symlinks followed (a dangling link too: writing through it would land at
    its target), the components that do not exist yet kept as written under
    their nearest existing parent's real path."""
    return os.path.realpath(path)


def airflow_home(environ: Mapping[str, str] | None = None) -> str:
    """The Airflow home's real path: ``AIRFLOW_HOME``, else ``~/airflow``."""
    env = os.environ if environ is None else environ
    home = env.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return real_path(os.path.abspath(home))


def forbidden_locations(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Real paths no param may point at or into: the Airflow home and the file
    ``AIRFLOW_CONFIG`` (when set; usually inside the home, not always)."""
    env = os.environ if environ is None else environ
    out = [airflow_home(env)]
    if env.get("AIRFLOW_CONFIG"):
        out.append(real_path(os.path.abspath(env["AIRFLOW_CONFIG"])))
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class AllowedLocations:
    """Where a deployment lets params point: inside ``roots`` (empty: anywhere)
    and never at or into ``forbidden`` (real paths: the Airflow home and
    ``AIRFLOW_CONFIG``)."""

    roots: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> AllowedLocations:
        """:func:`allowed_roots` and :func:`forbidden_locations` of ``environ``
        (default ``os.environ``); AccessError naming a malformed root."""
        return cls(allowed_roots(environ), forbidden_locations(environ))


def location_key(uri: str) -> str:
    """What a location is compared on: the real path of a local path, the
    normalised URI of a gs:// one. Two locations overlap when one key
    :func:`is_within` the other."""
    return normalize_gcs(uri) if is_gcs(uri) else real_path(uri)


def check_location(
    name: str,
    uri: str,
    roots: tuple[str, ...],
    environ: Mapping[str, str] | None = None,
    *,
    forbidden: tuple[str, ...] | None = None,
) -> None:
    """AccessError unless the param ``name`` may point at ``uri`` (an absolute
    local path or a gs:// URI): never into the Airflow home or at
    ``AIRFLOW_CONFIG`` (``forbidden``; default: :func:`forbidden_locations` of
    ``environ``); and, when ``roots`` is not empty, inside one of them
    (a local path's real path inside a local root's real path; a gs:// URI
    inside a gs:// root on whole components). Reads nothing but the local
    file system's symlinks."""
    if is_gcs(uri):
        key = normalize_gcs(uri)
        if roots and not any(is_gcs(r) and is_within(key, r) for r in roots):
            raise AccessError(_outside(name, uri, key, roots))
        return
    if not uri.startswith("/") or _REFUSED_CHARS.search(uri):
        raise AccessError(f"{name}={uri!r}: not an absolute local path")
    key = real_path(uri)
    for place in forbidden_locations(environ) if forbidden is None else forbidden:
        if is_within(key, place):
            via = "" if key == uri else f" (its real path is {key})"
            raise AccessError(
                f"{name}={uri}{via} points into the Airflow installation ({place}): "
                "params may never name Airflow's home or configuration"
            )
    if roots and not any(not is_gcs(r) and is_within(key, real_path(r)) for r in roots):
        raise AccessError(_outside(name, uri, key, roots))


def _outside(name: str, uri: str, key: str, roots: tuple[str, ...]) -> str:
    via = "" if key == uri else f" (resolved: {key})"
    return (
        f"{name}={uri}{via} is outside the allowed roots ({ENV_ALLOWED_ROOTS}: {', '.join(roots)})"
    )


# --------------------------------------------------------------------------- bounded reads


def read_bounded(uri: str, max_bytes: int = MAX_LIST_BYTES, *, what: str = "file") -> bytes:
    """The whole of a small file (absolute local path or gs://), at most
    ``max_bytes``: its size is checked from metadata before anything is read
    (stat of a regular file; GCS object metadata), and the read stops at
    ``max_bytes + 1`` in case it grew since. FileNotFoundError when it does not
    exist; AccessError (naming ``what``, the URI and the bound) when it is too
    large or, locally, not a regular file (a FIFO, a device, a folder)."""
    if is_gcs(uri):
        info = storage.stat(uri)
        if info is None:
            raise FileNotFoundError(uri)
        _check_size(uri, info.size, max_bytes, what)
        with storage.open_read(uri, min(storage.READ_CHUNK, max_bytes + 1)) as f:
            data = f.read(max_bytes + 1)
    else:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on files).
        fd = os.open(uri, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not statmod.S_ISREG(st.st_mode):
                raise AccessError(f"{what} {uri} is not a regular file")
            _check_size(uri, st.st_size, max_bytes, what)
            data = f.read(max_bytes + 1)
    _check_size(uri, len(data), max_bytes, what)
    return bytes(data)


def _check_size(uri: str, size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise AccessError(
            f"{what} {uri} is {size:,} bytes or more: larger than the {max_bytes:,} bytes "
            "a file of this kind may be"
        )


__all__ = [
    "ENV_ALLOWED_ROOTS",
    "MAX_LIST_BYTES",
    "AccessError",
    "AllowedLocations",
    "airflow_home",
    "allowed_roots",
    "check_location",
    "forbidden_locations",
    "is_within",
    "location_key",
    "normalize_gcs",
    "parse_allowed_roots",
    "read_bounded",
    "real_path",
]
