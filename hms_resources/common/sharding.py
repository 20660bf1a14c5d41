"""Which shard a user belongs to: one stable hash shared by every process that splits users (the
serving processes, the tier partitions), so they all agree without talking to each other."""

from __future__ import annotations

import hashlib


def user_shard(user_id: str, shards: int) -> int:
    """The shard in `range(shards)` that serves `user_id`: the first 8 bytes of the blake2b digest of
    the utf-8 id, modulo `shards`. Not Python's `hash()`, which changes between processes."""
    if shards < 1:
        raise ValueError(f"user_shard: shards must be at least 1, got {shards}")
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
