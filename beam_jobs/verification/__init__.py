"""Verification: staged shards against their plan, from metadata or by
reading every record."""
