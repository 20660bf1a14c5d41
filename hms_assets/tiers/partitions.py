"""Every PartitionsDefinition of HMS, named once."""

import os
from collections.abc import Callable
from functools import cache

import dagster as dg

from hms_resources.common.sharding import user_shard

TIERS_START_DATE = os.environ.get("HMS_TIERS_START_DATE", "2026-01-01")


def _user_shards() -> int:
    text = os.environ.get("HMS_USER_SHARDS", "4")
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"HMS_USER_SHARDS: a whole number of shards, at least 1, was expected; got {text!r}")
    return int(text)


USER_SHARDS = _user_shards()
"""Users are split into this many shards by a stable hash of their id. Changing it moves users between
shards: backfill every day that should stay consistent afterwards."""

DAY = "day"
USER_SHARD = "user_shard"

# Daily tier migrations; end_offset=1 makes today a partition too, for early migrations.
daily_partitions = dg.DailyPartitionsDefinition(start_date=TIERS_START_DATE, end_offset=1)
user_shard_partitions = dg.StaticPartitionsDefinition([str(shard) for shard in range(USER_SHARDS)])
daily_user_shard_partitions = dg.MultiPartitionsDefinition({DAY: daily_partitions, USER_SHARD: user_shard_partitions})


def tier_partition_key(day: str, shard: int) -> str:
    return dg.MultiPartitionKey({DAY: day, USER_SHARD: str(shard)})


def all_shards_of_days(first_day: str, last_day: str | None = None) -> dict[str, str]:
    """Run tags that make one run cover every shard of the days from `first_day` to `last_day`."""
    return {
        "dagster/asset_partition_range_start": tier_partition_key(first_day, 0),
        "dagster/asset_partition_range_end": tier_partition_key(last_day or first_day, USER_SHARDS - 1),
    }


def shard_of(user_id: str) -> int:
    return user_shard(user_id, USER_SHARDS)


def users_of_shard(shard: int) -> Callable[[str], bool]:
    """Whether a user belongs to `shard`, remembered per user: a replay asks once per event."""

    @cache
    def holds(user_id: str) -> bool:
        return user_shard(user_id, USER_SHARDS) == shard

    return holds
