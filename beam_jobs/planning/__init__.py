"""Planning: which records go to which split and shard. ``algorithm`` is the
pure split algorithm (no I/O, no processes); ``keys`` and ``key_workers``
compute its SHA-256 keys of a whole catalog in worker processes; ``inputs``
reads the plan files and name lists params name; ``protocols`` the published
splits shipped; ``plans`` reads the catalog and writes plans."""
