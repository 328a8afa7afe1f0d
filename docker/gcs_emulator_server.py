"""The compose stack's local GCS: gcp-storage-emulator on the compose network.

The same emulator the tests use (tests/support/gcs_emulator.py, copied beside this file
in the image), with the same patch: GCS generation preconditions
(``ifGenerationMatch``), which the manifest publish relies on. Differences from
the tests' launcher: it listens on all interfaces of its container (the compose
network; the host port is bound to loopback by docker-compose.yaml), keeps
objects on disk (a named volume) so they survive restarts, and creates a
default bucket.

Settings (environment):
    GCS_EMULATOR_LISTEN    address to listen on            (default 0.0.0.0)
    GCS_EMULATOR_PORT      port                            (default 9023)
    GCS_BUCKET             bucket created at start, if missing (default: none)
    GCS_EMULATOR_DATA_DIR  where objects are kept; empty = in memory
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger("gcs-emulator")
HERE = Path(__file__).resolve().parent
# In the image gcs_emulator.py sits beside this file; in the repo it is tests/support/gcs_emulator.py.
for _candidate in (HERE, HERE.parent / "tests" / "support"):
    if (_candidate / "gcs_emulator.py").is_file():
        sys.path.insert(0, str(_candidate))
        break

import gcs_emulator  # noqa: F401  (importing it patches in generation preconditions)
from gcp_storage_emulator.server import create_server


def _stop(signum, frame):  # docker stop sends SIGTERM; Server.run stops on KeyboardInterrupt
    raise KeyboardInterrupt


def main() -> int:
    listen = os.environ.get("GCS_EMULATOR_LISTEN") or "0.0.0.0"
    port = int(os.environ.get("GCS_EMULATOR_PORT") or "9023")
    bucket = os.environ.get("GCS_BUCKET") or None
    data_dir = os.environ.get("GCS_EMULATOR_DATA_DIR") or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if data_dir:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop)
    server = create_server(listen, port, in_memory=data_dir is None, default_bucket=bucket,
                           data_dir=data_dir)
    log.info("GCS emulator on %s:%d, bucket %s, data in %s", listen, port, bucket,
                 data_dir or "memory")
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
