"""Data-plane package for reproducible semi-supervised ImageNet splits.

This package is what Beam workers (DirectRunner locally, Dataflow at scale)
import. It depends on Apache Beam, google-cloud-storage, google-crc32c,
pyarrow and protobuf only: never on Airflow or TensorFlow.

Modules:
    tfrecord      TFRecord framing (length, masked CRC32C) read and write.
    example_proto tf.train.Example messages without TensorFlow.
    storage       local paths and gs:// URIs: listing, streaming, ranged reads.
    synthetic     a synthetic ImageNet in the common converters' layout.
    catalog       the catalog schema (one row per source record).
    validate      Beam job: validate the source and write the catalog.
"""

__version__ = "0.1.0"
