"""Tier migration partitioned by day and user shard: each shard's rows equal its users' slice of an
unsharded computation, backfills repeat exactly, and new users in one shard touch no other shard."""

from datetime import date

import dagster as dg
import sqlalchemy as sa

from hms_assets import domain_assets
from hms_assets.tiers.partitions import all_shards_of_days, shard_of, tier_partition_key, user_shard_count
from hms_resources.store.ingest import ingest_records
from hms_resources.tiers.assignment import TieringConfig, compute_tiers
from hms_resources.tiers.importance import TIER_NAMES, TierConfig
from tests.helpers import created, event

ASSETS = [a for a in domain_assets(["memory_store", "tiers"]) if "cold_archive" not in str(a.keys)]
TIERS = dg.AssetSelection.assets("memory_tiers", "tier_migrations")
SMALL = {"hot_capacity": 2, "warm_capacity": 3, "cold_capacity": 4, "hot_threshold": 0.6, "warm_threshold": 0.45, "use_predictor": "off"}
USERS = [f"user-{i}" for i in range(12)]
DAY = 1440


def materialize(store, instance, **target):
    result = dg.materialize(
        ASSETS, selection=TIERS, resources={"event_store": store}, instance=instance,
        run_config={"ops": {"memory_tier_migration": {"config": SMALL}}}, **target,
    )
    assert result.success


def table(store, name, day):
    with store.engine.connect() as conn:
        query = sa.text(f"SELECT * FROM {name} WHERE partition_date = :d ORDER BY user_id, memory_id")
        return [tuple(row) for row in conn.execute(query, {"d": day})]


def history(store):
    records = []
    for u, user in enumerate(USERS):
        for i in range(8):
            records.append(created(user, f"m{i}", f"memory {i} of {user}", minutes=u * 7 + i * 300, importance=((u + i) % 10) / 10))
        records.append(event("accessed", user, "m1", 2 * DAY + u))
        records.append(event("archived", user, "m2", DAY + u, reason="done"))
    assert ingest_records(store, records).rejected == 0


def test_each_shard_equals_its_users_slice_of_the_unsharded_tiers(store):
    assert len({shard_of(user) for user in USERS}) > 1, "the users fall in more than one shard"
    history(store)
    with dg.instance_for_test() as instance:
        for shard in range(user_shard_count()):
            materialize(store, instance, partition_key=tier_partition_key("2026-03-03", shard))
    config = TieringConfig(tiers=TierConfig(**{k: v for k, v in SMALL.items() if k != "use_predictor"}))
    whole = compute_tiers(store, date(2026, 3, 3), [], config)
    expected = sorted(zip(whole.user_ids, whole.memory_ids, [TIER_NAMES[t] for t in whole.tiers.tolist()], whole.scores.tolist()))
    assert [(u, m, t, s) for _, u, m, t, s, _ in table(store, "memory_tiers", "2026-03-03")] == expected


def test_a_backfill_of_every_shard_twice_gives_identical_rows_and_equals_runs_per_shard(store):
    history(store)
    days = ("2026-03-01", "2026-03-02", "2026-03-03")
    with dg.instance_for_test() as instance:
        materialize(store, instance, tags=all_shards_of_days(days[0], days[-1]))
        first = {day: (table(store, "memory_tiers", day), table(store, "tier_migrations", day)) for day in days}
        materialize(store, instance, tags=all_shards_of_days(days[0], days[-1]))
        assert {day: (table(store, "memory_tiers", day), table(store, "tier_migrations", day)) for day in days} == first
        for shard in reversed(range(user_shard_count())):
            materialize(store, instance, partition_key=tier_partition_key(days[1], shard))
        assert (table(store, "memory_tiers", days[1]), table(store, "tier_migrations", days[1])) == first[days[1]]
    assert all(first[day][0] for day in days)


def test_new_users_in_one_shard_leave_the_other_shards_untouched(store):
    history(store)
    day = "2026-03-03"
    with dg.instance_for_test() as instance:
        materialize(store, instance, tags=all_shards_of_days(day))
        before = table(store, "memory_tiers", day)
        newcomer = next(f"newcomer-{i}" for i in range(100) if shard_of(f"newcomer-{i}") == shard_of(USERS[0]))
        ingest_records(store, [created(newcomer, f"n{i}", f"new memory {i}", minutes=DAY + i, importance=0.9) for i in range(3)])
        shard = shard_of(newcomer)
        materialize(store, instance, partition_key=tier_partition_key(day, shard))
        after = table(store, "memory_tiers", day)
        materializations = {
            key: instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("memory_tiers"), asset_partitions=[key]), limit=10
            ).records
            for key in (tier_partition_key(day, s) for s in range(user_shard_count()))
        }
    assert [r for r in after if shard_of(r[1]) != shard] == [r for r in before if shard_of(r[1]) != shard]
    assert [r for r in after if r[1] == newcomer] and not [r for r in before if r[1] == newcomer]
    assert [r for r in after if shard_of(r[1]) == shard and r[1] != newcomer] == [r for r in before if shard_of(r[1]) == shard]
    assert {key: len(records) for key, records in materializations.items()} == {
        tier_partition_key(day, s): 2 if s == shard else 1 for s in range(user_shard_count())
    }


def partition_metadata(instance, asset: str, key: str) -> dict:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_each_partition_carries_its_own_shards_counts_and_an_empty_shard_shows_zeros(store, monkeypatch):
    monkeypatch.setenv("HMS_USER_SHARDS", str(len(USERS) * 4))
    assets = [a for a in domain_assets(["memory_store", "tiers"]) if "cold_archive" not in str(a.keys)]
    history(store)
    day = "2026-03-03"
    occupied = {shard_of(user) for user in USERS}
    empty = next(s for s in range(user_shard_count()) if s not in occupied)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets, selection=TIERS, resources={"event_store": store}, instance=instance, tags=all_shards_of_days(day),
            run_config={"ops": {"memory_tier_migration": {"config": SMALL}}},
        )
        assert result.success
        meta = {s: partition_metadata(instance, "memory_tiers", tier_partition_key(day, s)) for s in range(user_shard_count())}
        moves = {s: partition_metadata(instance, "tier_migrations", tier_partition_key(day, s)) for s in range(user_shard_count())}
    rows = table(store, "memory_tiers", day)
    for shard in range(user_shard_count()):
        mine = [r for r in rows if shard_of(r[1]) == shard]
        assert meta[shard]["dagster/row_count"] == len(mine)
        assert {t: meta[shard][t] for t in TIER_NAMES} == {t: sum(r[3] == t for r in mine) for t in TIER_NAMES}
        assert meta[shard]["users"] == len({r[1] for r in mine})
    assert {t: meta[empty][t] for t in ("hot", "warm", "cold", "archived", "users", "dagster/row_count")} == dict.fromkeys(
        ("hot", "warm", "cold", "archived", "users", "dagster/row_count"), 0)
    assert moves[empty]["migrations"] == 0 and moves[empty]["transitions"] == "no memory moved"
    assert sum(m["migrations"] for m in moves.values()) == len(table(store, "tier_migrations", day)) > 0
    assert all(m["tiering_config"]["hot_capacity"] == SMALL["hot_capacity"] for m in meta.values())
