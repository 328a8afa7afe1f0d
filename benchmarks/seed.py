"""A reference implementation of the seed's algorithm, for the benchmark.

The seed procedure (FixMatch's ``imagenet/prep_imagenet_data``) builds each
split with one Beam job, ``save_sharded_data.py``, run once per split by a
shell loop. This module reproduces that job's algorithm faithfully, with two
deliberate differences so that its outputs are comparable with the product's:

* it takes the SAME ``filename,shard,index`` plan file the product built from
  (the seed took FixMatch's published files; the format is the same);
* it names shards ``-of-{num_shards}`` with the plan's shard count (the seed's
  shell script never passed ``--num_shards``, so its files were named
  ``-of-00000``).

The algorithm, unchanged:

1. read every record of ``{input_dir}/train-*`` with Beam's
   ``ReadFromTFRecord``, decoding each as a ``tf.train.Example``
   (``ProtoCoder``; TensorFlow);
2. look up ``image/filename`` in the plan (a dict passed to the DoFn as an
   argument, as the seed did) and emit ``(shard, (index, example))``;
   records not in the plan are dropped, so every split reads the whole
   source;
3. ``GroupByKey`` on the shard;
4. per shard: sort by index, ``SerializeToString()`` every Example and write
   the shard with ``tf.io.TFRecordWriter``.

CLI (any other ``--flag`` is a Beam pipeline option)::

    python -m benchmarks.seed --input_dir=/data/imagenet \\
        --sharding_file=/data/ssl/_work/plans/train128116.1.<sha>.csv \\
        --output_file_prefix=/data/seed/train128116.1 --num_shards=102
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions


def read_sharding_data(sharding_file: str) -> dict[str, tuple[int, int]]:
    """``filename -> (shard, index)`` from a ``filename,shard,index`` file (as the seed)."""
    with tf.io.gfile.GFile(sharding_file) as f:
        lines = f.readlines()
    lines = [line.strip().split(",") for line in lines if line.strip()]
    return {line[0]: (int(line[1]), int(line[2])) for line in lines}


class AugmentExampleWithShardAndNewLabelFn(beam.DoFn):
    """Key each example by its planned shard, with its index (the seed's DoFn)."""

    # Hints of Any only: Beam infers coders from hints, and the seed had none.
    def process(self, ex: Any, sharding_data: Any) -> Any:
        filename = ex.features.feature["image/filename"].bytes_list.value[0]
        filename = filename.decode("utf-8")
        if filename in sharding_data:
            shard_id, idx = sharding_data[filename]
            yield shard_id, (idx, ex)


def save_grouped_data(inputs: Any, output_file_prefix: str, num_shards: int) -> None:
    """Write one shard: its examples sorted by index, re-serialized (the seed's writer)."""
    shard_id, elements = inputs
    output_filename = f"{output_file_prefix}-{shard_id:05}-of-{num_shards:05}"
    with tf.io.TFRecordWriter(output_filename) as writer:
        for _, ex in sorted(elements, key=lambda e: e[0]):
            writer.write(ex.SerializeToString())


def save_sharded_data_pipeline(
    p: Any,
    input_dir: str,
    sharding_data: dict[str, tuple[int, int]],
    output_file_prefix: str,
    num_shards: int,
) -> None:
    records = p | "Read" >> beam.io.ReadFromTFRecord(
        os.path.join(input_dir, "train-*"), coder=beam.coders.ProtoCoder(tf.train.Example)
    )
    keyed = records | "Augment" >> beam.ParDo(AugmentExampleWithShardAndNewLabelFn(), sharding_data)
    grouped = keyed | "Group" >> beam.GroupByKey()
    _ = grouped | "Save" >> beam.Map(save_grouped_data, output_file_prefix, num_shards)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.seed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--input_dir", required=True)
    parser.add_argument("--sharding_file", required=True)
    parser.add_argument("--output_file_prefix", required=True)
    parser.add_argument(
        "--num_shards",
        type=int,
        default=0,
        help="shards in the output names (default: from the plan)",
    )
    args, beam_args = parser.parse_known_args(argv)
    sharding_data = read_sharding_data(args.sharding_file)
    num_shards = args.num_shards or (max(s for s, _ in sharding_data.values()) + 1)
    os.makedirs(os.path.dirname(args.output_file_prefix) or ".", exist_ok=True)
    options = PipelineOptions(beam_args)
    p = beam.Pipeline(options=options)
    save_sharded_data_pipeline(
        p, args.input_dir, sharding_data, args.output_file_prefix, num_shards
    )
    start_time = time.time()
    p.run().wait_until_finish()
    print(
        f"Processing done, execution took {time.time() - start_time:.1f} seconds "
        f"({len(sharding_data):,} records in {num_shards} shards).",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
