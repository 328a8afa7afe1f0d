"""Put a small synthetic ImageNet in the local GCS emulator (compose service demo-data).

So that, right after ``docker compose up``, the DAG can be triggered from the UI
with ``source_uri = gs://$GCS_BUCKET/demo/imagenet``. Does nothing when
``STORAGE_EMULATOR_HOST`` is empty (real GCS: nothing is written to a real
bucket unless asked) or when the data is already there (``synthetic.json``
written last by the generator marks a complete source).

Settings (environment): ``GCS_BUCKET``, ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        print("demo-data: STORAGE_EMULATOR_HOST is empty (real GCS): nothing to do")
        return 0
    bucket = os.environ.get("GCS_BUCKET")
    if not bucket:
        print("demo-data: set GCS_BUCKET in .env", file=sys.stderr)
        return 1
    uri = f"gs://{bucket}/demo/imagenet"

    from beam_jobs import storage
    from beam_jobs.source import synthetic

    if storage.exists(storage.join(uri, "synthetic.json")):
        print(f"demo-data: {uri} already holds a synthetic ImageNet")
        return 0
    status = synthetic.main(["--output_uri", uri, "--workers", "1"])
    if status == 0:
        print(f"demo-data: trigger ssl_imagenet_splits with source_uri={uri}")
    return status


if __name__ == "__main__":
    sys.exit(main())
