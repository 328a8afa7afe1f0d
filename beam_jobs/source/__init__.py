"""The source: ImageNet as TFRecords (converter or TFDS layout), its record
format, its validation and the catalog that validation writes."""
