"""Replay throughput: the store's full replay (read in sequence order, decode, fold) and the
incremental `memories` refresh, against a bare read of the same rows in the same run.

Prints one JSON object. Goal: at least 50,000 events/s replayed."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson
import sqlalchemy as sa

from benchmarks.common import print_json, write_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_path
from hms_resources.store.memory_state import replay_events
from hms_resources.store.projection import refresh_memories


def bare_read(url: str) -> int:
    """The floor: every row in sequence order with its payload decoded, no events, no fold."""
    engine = sa.create_engine(url)
    count = 0
    with engine.connect() as conn:
        for row in conn.exec_driver_sql("SELECT sequence, event_id, type, user_id, memory_id, occurred_at, payload FROM events ORDER BY sequence"):
            orjson.loads(row[6])
            count += 1
    engine.dispose()
    return count


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = tmp_path / "events.jsonl"
        write_events(path, args.events)
        url = f"sqlite:///{tmp_path / 'hms.db'}"
        store = EventStore(database_url=url)
        events = ingest_path(store, path).accepted
        replays, bares, folds = [], [], []
        for _ in range(args.repeats):
            seconds, state = timed(store.replay)
            replays.append(seconds)
            bares.append(timed(lambda: bare_read(url))[0])
        loaded = list(store.read_events())
        for _ in range(args.repeats):
            folds.append(timed(lambda: replay_events(loaded))[0])
        refresh_seconds, report = timed(lambda: refresh_memories(store))
        incremental_seconds, incremental = timed(lambda: refresh_memories(store))
        store.close()
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    replay_rate = events / median(replays)
    print_json({
        "benchmark": "replay",
        "events": events,
        "memories": len(state),
        "replay_from_store": {"seconds": round(median(replays), 3), "events_per_s": round(replay_rate)},
        "fold_only_in_memory": {"seconds": round(median(folds), 3), "events_per_s": round(events / median(folds))},
        "bare_row_read": {"seconds": round(median(bares), 3), "events_per_s": round(events / median(bares))},
        "ratio_replay_to_bare_read": round(median(bares) / median(replays), 3),
        "memories_refresh_full": {"seconds": round(refresh_seconds, 3), "events_per_s": round(report.events_applied / refresh_seconds)},
        "memories_refresh_nothing_new": {"seconds": round(incremental_seconds, 3), "events_applied": incremental.events_applied},
        "goal_events_per_s": 50_000,
        "meets_goal": replay_rate >= 50_000,
    })


if __name__ == "__main__":
    main()
