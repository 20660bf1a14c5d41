"""Tier backfill of D days: one read of the log (`backfill_tiers`) against a replay per day and per
previous day (`compute_tiers` twice a day, as the migration ran before), on the same store, in one run.

The log: users' memories created over the days, then accessed, updated, tagged, archived and
forgotten; a share of events arrive late (they occurred up to three days before they were appended).
Output is compared day by day (a digest of every tier row and migration). Prints one JSON object.
Goal: one pass at least 20x faster, identical output."""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from benchmarks.common import print_json
from hms_resources.common.sharding import user_shard
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from hms_resources.tiers.assignment import backfill_tiers, compute_tiers, tier_migrations
from hms_resources.tiers.importance import ImportanceConfig
from hms_resources.tiers.replay import tier_inputs_by_day

FIRST_DAY = date(2026, 1, 1)


def history(events: int, users: int, days: int, late_share: float, seed: int):
    """Events in arrival order, as ingest receives them."""
    rng = random.Random(seed)
    start = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=timezone.utc)
    span = days * 86_400
    memories_per_user = max(1, events // users // 20)
    created = sorted((rng.uniform(0, span), f"u{u:05d}", f"m{m:04d}") for u in range(users) for m in range(memories_per_user))
    arrivals = [(t, "created", u, m, t) for t, u, m in created]
    kinds = ["accessed"] * 75 + ["updated"] * 14 + ["tagged"] * 8 + ["archived"] * 3
    forgotten = set(rng.sample(range(len(created)), len(created) // 100))
    for index in forgotten:
        t, u, m = created[index]
        arrivals.append((span + 1, "forgotten", u, m, t))
    live = [i for i in range(len(created)) if i not in forgotten]
    while len(arrivals) < events:
        t, u, m = created[rng.choice(live)]
        arrivals.append((rng.uniform(t, span), rng.choice(kinds), u, m, t))
    arrivals.sort()
    for n, (t, kind, user, memory, born) in enumerate(arrivals):
        t = min(t, span - 1)
        occurred = max(born, t - rng.uniform(0, 3 * 86_400)) if kind != "created" and rng.random() < late_share else t
        payload = {
            "created": lambda: {"content": f"memory {memory} of {user}", "importance": round(rng.random(), 3)},
            "accessed": lambda: rng.choice([{"was_relevant": True}, {"was_relevant": False}, {}]),
            "updated": lambda: {"importance": round(rng.random(), 3)},
            "tagged": lambda: {"tags": [rng.choice(["pinned", "work", "family"])]},
            "archived": lambda: {"reason": "not needed"},
            "forgotten": lambda: {},
        }[kind]()
        yield {
            "event_id": f"e{n}",
            "type": f"memory.{kind}",
            "user_id": user,
            "memory_id": memory,
            "occurred_at": (start + timedelta(seconds=max(occurred, 0))).isoformat(),
            "payload": payload,
        }


def build_store(path: Path, events: int, users: int, days: int, late_share: float) -> EventStore:
    store = EventStore(database_url=f"sqlite:///{path / 'store.db'}", hms_home=str(path))
    if store.max_sequence() == 0:
        batch = []
        for record in history(events, users, days, late_share, seed=7):
            batch.append(record)
            if len(batch) == 20_000:
                assert ingest_records(store, batch).rejected == 0
                batch = []
        assert ingest_records(store, batch).rejected == 0
    return store


def digest(snapshot, moves) -> str:
    rows = list(zip(snapshot.user_ids, snapshot.memory_ids, snapshot.scores.tolist(), snapshot.tiers.tolist(), snapshot.reasons))
    return hashlib.sha256(repr((rows, moves)).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--late-share", type=float, default=0.02)
    parser.add_argument("--baseline-days", type=int, default=0, help="per-day replay of this many days spread over the range (0: all)")
    parser.add_argument("--shards", type=int, default=4, help="also time each shard's backfill on its own")
    parser.add_argument("--cache", default="/tmp/hms-bench-tier-backfill")
    args = parser.parse_args()
    path = Path(args.cache) / f"{args.events}-{args.users}-{args.days}-{args.late_share}"
    path.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = build_store(path, args.events, args.users, args.days, args.late_share)
    build_seconds = time.perf_counter() - started
    days = [FIRST_DAY + timedelta(days=i) for i in range(args.days)]

    checking = [0.0]

    def checked(snapshot, moves) -> str:
        """The digest, its time kept apart: it checks the work, it is not part of it."""
        started = time.perf_counter()
        text = digest(snapshot, moves)
        checking[0] += time.perf_counter() - started
        return text

    started = time.perf_counter()
    one_pass = {}
    for day, snapshot, moves in backfill_tiers(store, days, []):
        one_pass[day] = checked(snapshot, moves)
        placed = len(snapshot.memory_ids)
    one_pass_seconds = time.perf_counter() - started - checking[0]

    started = time.perf_counter()
    for _ in tier_inputs_by_day(store, days, [], ImportanceConfig()):
        pass
    read_and_fold_seconds = time.perf_counter() - started
    shard_seconds = []
    for shard in range(args.shards):
        started = time.perf_counter()
        users = cache(lambda user_id, shard=shard: user_shard(user_id, args.shards) == shard)
        for _ in backfill_tiers(store, days, [], users=users):
            pass
        shard_seconds.append(round(time.perf_counter() - started, 2))

    step = max(1, len(days) // args.baseline_days) if args.baseline_days else 1
    sampled = days[step - 1 :: step] if args.baseline_days else days
    checking[0] = 0.0
    started = time.perf_counter()
    per_day = {}
    for day in sampled:
        current = compute_tiers(store, day, [])
        previous = compute_tiers(store, day - timedelta(days=1), [])
        per_day[day] = checked(current, tier_migrations(previous, current))
    sampled_seconds = time.perf_counter() - started - checking[0]
    per_day_seconds = sampled_seconds * len(days) / len(sampled)
    identical = all(per_day[day] == one_pass[day] for day in sampled)
    stats = store.stats()
    store.close()
    print_json({
        "benchmark": "tier_backfill",
        "events": stats.get("events"),
        "users": args.users,
        "days": args.days,
        "late_share": args.late_share,
        "store_build_seconds": round(build_seconds, 1),
        "one_pass_seconds": round(one_pass_seconds, 2),
        "per_day_replay_seconds": round(per_day_seconds, 1),
        "per_day_days_measured": len(sampled),
        "per_day_extrapolated": len(sampled) < len(days),
        "speedup": round(per_day_seconds / one_pass_seconds, 1),
        "one_pass_read_and_fold_seconds": round(read_and_fold_seconds, 2),
        "one_pass_placement_seconds_per_day": round((one_pass_seconds - read_and_fold_seconds) / args.days, 3),
        "memories_placed_last_day": placed,
        f"one_pass_seconds_per_shard_of_{args.shards}": shard_seconds,
        "identical_output": identical,
        "goal": "speedup >= 20 with identical output",
        "goal_met": identical and per_day_seconds / one_pass_seconds >= 20,
    })


if __name__ == "__main__":
    main()
