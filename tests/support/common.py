"""The repo, its interpreter and the shipped reference lists, for every test.

``tests/conftest.py`` puts the repo and ``plugins/`` on ``sys.path`` before
this is imported (``beam_jobs`` exports the reference lists here).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable


def shipped_reference() -> Path:
    """The published lists the package ships (``beam_jobs/data``), exported once
    as their plain-text files (each checked against its sha256 on the way) into
    a folder named by their sha256s: ``fixmatch/files2shards_train_size128116_split{1..5}.txt``,
    ``simclr/{1,10}percent.txt``. Tests read these; nothing outside the repo."""
    from beam_jobs.planning import protocols

    key = hashlib.sha256("".join(e.sha256 for e in protocols.LISTS.values()).encode())
    folder = (
        Path(os.environ.get("TMPDIR", "/tmp"))
        / f"ssl-splits-published-{os.getuid()}-{key.hexdigest()[:12]}"
    )
    wanted = [folder / e.key.split("/")[0] / e.file_name for e in protocols.LISTS.values()]
    if not all(p.exists() for p in wanted):
        protocols.export(str(folder))  # atomic writes: concurrent workers write the same bytes
    return folder


PUBLISHED = shipped_reference()
REFERENCE = PUBLISHED / "fixmatch"  # FixMatch's five filename,shard,index files
SIMCLR = PUBLISHED / "simclr"  # SimCLR's 1percent.txt and 10percent.txt


def small_spec(**overrides: object):
    """The tests' small synthetic ImageNet: 10 classes of 30-50 records in 8
    train shards, 2 validation shards; ``overrides`` change any field (seed,
    layout)."""
    from beam_jobs.source.synthetic import Spec

    fields: dict[str, object] = dict(
        num_classes=10,
        min_per_class=30,
        max_per_class=50,
        train_shards=8,
        validation_shards=2,
        validation_per_class=4,
        seed=7,
    )
    return Spec(**{**fields, **overrides})  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as users do; capture output."""
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
