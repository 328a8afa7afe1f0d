"""Building: the Beam job that writes one split's shards to staging, and the
job description it runs from (locally or as a Dataflow template)."""
