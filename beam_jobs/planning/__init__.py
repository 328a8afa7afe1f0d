"""Planning: which records go to which split and shard. ``algorithm`` is the
pure split algorithm (no I/O); ``plans`` reads the catalog and writes plans."""
