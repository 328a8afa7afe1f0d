"""Copy files and fsync each one: the raw copy with the durability the
product's writers give (``beam_jobs.storage`` fsyncs every file it writes;
``cp`` does not, so its data may still sit in the page cache when it exits).

    python -m benchmarks.rawcopy SRC_DIR DST_DIR [GLOB]
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    src, dst = Path(argv[0]), Path(argv[1])
    pattern = argv[2] if len(argv) > 2 else "*"
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob(pattern)):
        if f.is_file():
            out = dst / f.name
            with open(f, "rb") as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
