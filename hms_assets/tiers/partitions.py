"""Every PartitionsDefinition of HMS, named once, built from the environment when the definitions are
built (`HMS_TIERS_START_DATE`, `HMS_USER_SHARDS`, else the store's first event), never at import time."""

from collections.abc import Callable
from functools import cache
from pathlib import Path

import dagster as dg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from hms_resources.common.environment import is_set, setting
from hms_resources.common.home import default_database_url
from hms_resources.common.sharding import user_shard
from hms_resources.store.event_store import EventStore, StoreError

DAY = "day"
USER_SHARD = "user_shard"


def tiers_start_date() -> str:
    """`HMS_TIERS_START_DATE` when set; else the day of the store's first event, so the UI's partitions
    start where the data does; else the setting's default (an empty or unreadable store)."""
    if is_set("HMS_TIERS_START_DATE"):
        return setting("HMS_TIERS_START_DATE")
    return first_event_day(EventStore.from_env()) or setting("HMS_TIERS_START_DATE")


def first_event_day(store: EventStore) -> str | None:
    """The day of the earliest `occurred_at` in `store`, or None when it holds no event or cannot be
    read: loading the definitions must neither fail nor create an embedded store that is not there."""
    url = make_url(store.database_url or default_database_url(store.home))
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None
    try:
        first, _ = store.event_time_range()
    except (StoreError, SQLAlchemyError, OSError):
        return None
    finally:
        store.close()
    return first[:10] if first else None


def user_shard_count() -> int:
    """Users are split into this many shards by a stable hash of their id. Changing it moves users between
    shards: backfill every day that should stay consistent afterwards."""
    return setting("HMS_USER_SHARDS")


def build_daily_partitions() -> dg.DailyPartitionsDefinition:
    """Daily tier migrations; end_offset=1 makes today a partition too, for early migrations."""
    return dg.DailyPartitionsDefinition(start_date=tiers_start_date(), end_offset=1)


def build_user_shard_partitions() -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([str(shard) for shard in range(user_shard_count())])


def build_daily_user_shard_partitions() -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({DAY: build_daily_partitions(), USER_SHARD: build_user_shard_partitions()})


def tier_partition_key(day: str, shard: int) -> str:
    return dg.MultiPartitionKey({DAY: day, USER_SHARD: str(shard)})


def all_shards_of_days(first_day: str, last_day: str | None = None) -> dict[str, str]:
    """Run tags that make one run cover every shard of the days from `first_day` to `last_day`."""
    return {
        "dagster/asset_partition_range_start": tier_partition_key(first_day, 0),
        "dagster/asset_partition_range_end": tier_partition_key(last_day or first_day, user_shard_count() - 1),
    }


def shard_of(user_id: str) -> int:
    return user_shard(user_id, user_shard_count())


def users_of_shard(shard: int) -> Callable[[str], bool]:
    """Whether a user belongs to `shard`, remembered per user: a replay asks once per event."""
    shards = user_shard_count()

    @cache
    def holds(user_id: str) -> bool:
        return user_shard(user_id, shards) == shard

    return holds
