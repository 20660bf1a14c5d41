"""The two stores side by side: `hms ingest`'s code path and the full replay of the same events into
the embedded SQLite file and into PostgreSQL, each repeat on fresh databases, the two backends
alternating so that both see the same machine load.

Prints one JSON object. Goals: PostgreSQL ingests at least 0.8x SQLite's events/s and at least
20,000 events/s."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_json, temporary_postgres_database, write_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_path

GOAL_RATIO = 0.8
GOAL_EVENTS_PER_S = 20_000


def ingest_and_replay(url: str, path: Path, batch_size: int) -> dict:
    """Ingest the file into an empty store, then replay the whole log from it."""
    store = EventStore(database_url=url)
    store.stats()
    start = time.perf_counter()
    report = ingest_path(store, path, batch_size=batch_size)
    ingest_seconds = time.perf_counter() - start
    assert report.rejected == 0 and report.conflicts == 0, report.rejections[:3]
    start = time.perf_counter()
    state = store.replay()
    replay_seconds = time.perf_counter() - start
    store.close()
    return {
        "ingest_events_per_s": round(report.accepted / ingest_seconds),
        "ingest_seconds": round(ingest_seconds, 3),
        "replay_events_per_s": round(report.accepted / replay_seconds),
        "replay_seconds": round(replay_seconds, 3),
        "events": report.accepted,
        "memories": len(state),
    }


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def summary(runs: list[dict]) -> dict:
    return {
        "ingest_events_per_s": median([r["ingest_events_per_s"] for r in runs]),
        "replay_events_per_s": median([r["replay_events_per_s"] for r in runs]),
        "ingest_all_runs_events_per_s": [r["ingest_events_per_s"] for r in runs],
        "replay_all_runs_events_per_s": [r["replay_events_per_s"] for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs on each backend; medians are reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = tmp_path / "events.jsonl"
        count = write_events(path, args.events)
        sqlite_runs, postgres_runs = [], []
        for n in range(args.repeats):
            with temporary_postgres_database() as pg_url:
                if pg_url is None:
                    raise SystemExit(json.dumps({"benchmark": "store_backends", "error": "PostgreSQL is not reachable"}))
                first, second = (("sqlite", "postgres") if n % 2 == 0 else ("postgres", "sqlite"))
                for backend in (first, second):
                    if backend == "sqlite":
                        sqlite_runs.append(ingest_and_replay(f"sqlite:///{tmp_path / f'hms{n}.db'}", path, args.batch_size))
                    else:
                        postgres_runs.append(ingest_and_replay(pg_url, path, args.batch_size))
    assert [r["memories"] for r in sqlite_runs] == [r["memories"] for r in postgres_runs], "both stores replay the same state"
    ingest_ratio = median([p["ingest_events_per_s"] / s["ingest_events_per_s"] for s, p in zip(sqlite_runs, postgres_runs)])
    replay_ratio = median([p["replay_events_per_s"] / s["replay_events_per_s"] for s, p in zip(sqlite_runs, postgres_runs)])
    postgres = summary(postgres_runs)
    print_json({
        "benchmark": "store_backends",
        "events": count,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "sqlite": summary(sqlite_runs),
        "postgres": postgres,
        "ratio_pg_to_sqlite_ingest_median": round(ingest_ratio, 3),
        "ratio_pg_to_sqlite_replay_median": round(replay_ratio, 3),
        "goal_ratio_pg_to_sqlite_ingest": GOAL_RATIO,
        "goal_pg_ingest_events_per_s": GOAL_EVENTS_PER_S,
        "meets_goals": ingest_ratio >= GOAL_RATIO and postgres["ingest_events_per_s"] >= GOAL_EVENTS_PER_S,
    })


if __name__ == "__main__":
    main()
