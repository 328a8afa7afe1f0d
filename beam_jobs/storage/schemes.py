"""Which backend serves a URI: one per scheme, chosen once per call."""

from __future__ import annotations

import re

from beam_jobs.storage.base import Backend
from beam_jobs.storage.gcs import GcsBackend
from beam_jobs.storage.local import LocalBackend

# Scheme -> backend; "" is a local path (no scheme). A new scheme: one module
# with a Backend subclass, and its line here.
BACKENDS: dict[str, Backend] = {"": LocalBackend(), "gs": GcsBackend()}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def backend(uri: str) -> Backend:
    """The backend for ``uri``'s scheme (a local path has none); ValueError
    naming the URI for a scheme no backend serves."""
    m = _SCHEME.match(uri)
    scheme = m.group(1) if m else ""
    try:
        return BACKENDS[scheme]
    except KeyError:
        raise ValueError(
            f"{uri!r}: no storage for {scheme}:// URIs; use an absolute local path or a gs:// URI"
        ) from None
