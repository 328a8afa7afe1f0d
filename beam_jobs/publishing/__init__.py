"""Publishing: the output folder's lock, the ownership records, the journal
and commit of staged shards, and the manifest."""
