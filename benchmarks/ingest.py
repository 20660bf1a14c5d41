"""Ingest throughput: `hms ingest`'s code path (validation, duplicate and reference checks, atomic
batches) into SQLite and PostgreSQL, against a bare executemany of the same rows into SQLite.

Prints one JSON object. Goal: at least 20,000 events/s into SQLite."""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.common import print_json, temporary_postgres_database, write_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_path


def timed_ingest(url: str, path: Path, batch_size: int) -> dict:
    store = EventStore(database_url=url)
    store.stats()
    start = time.perf_counter()
    report = ingest_path(store, path, batch_size=batch_size)
    seconds = time.perf_counter() - start
    store.close()
    assert report.rejected == 0, report.rejections[:3]
    return {"events": report.accepted, "seconds": round(seconds, 3), "events_per_s": round(report.accepted / seconds)}


def bare_sqlite_insert(path: Path, db: Path, batch_size: int) -> dict:
    """The floor: decode each line and executemany it into a table with the same unique key, nothing else."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE events (sequence INTEGER PRIMARY KEY, event_id TEXT UNIQUE, type TEXT, user_id TEXT,"
                 " memory_id TEXT, occurred_at TEXT, payload TEXT)")
    start = time.perf_counter()
    rows = []
    count = 0
    with path.open("rb") as stream:
        for raw in stream:
            r = orjson.loads(raw)
            rows.append((r["event_id"], r["type"], r["user_id"], r["memory_id"], r["occurred_at"], orjson.dumps(r["payload"]).decode()))
            if len(rows) == batch_size:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO events (event_id, type, user_id, memory_id, occurred_at, payload) VALUES (?,?,?,?,?,?)", rows)
                conn.execute("COMMIT")
                count += len(rows)
                rows = []
    if rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO events (event_id, type, user_id, memory_id, occurred_at, payload) VALUES (?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
        count += len(rows)
    seconds = time.perf_counter() - start
    conn.close()
    return {"events": count, "seconds": round(seconds, 3), "events_per_s": round(count / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = tmp_path / "events.jsonl"
        count = write_events(path, args.events)
        sqlite_runs, bare_runs = [], []
        for n in range(args.repeats):
            sqlite_runs.append(timed_ingest(f"sqlite:///{tmp_path / f'hms{n}.db'}", path, args.batch_size))
            bare_runs.append(bare_sqlite_insert(path, tmp_path / f"bare{n}.db", args.batch_size))
        store = EventStore(database_url=f"sqlite:///{tmp_path / 'hms0.db'}")
        rerun_start = time.perf_counter()
        rerun = ingest_path(store, path, batch_size=args.batch_size)
        rerun_seconds = time.perf_counter() - rerun_start
        store.close()
        with temporary_postgres_database() as pg_url:
            postgres = timed_ingest(pg_url, path, args.batch_size) if pg_url else None
    sqlite = median_run(sqlite_runs)
    bare = median_run(bare_runs)
    ratios = sorted(s["events_per_s"] / b["events_per_s"] for s, b in zip(sqlite_runs, bare_runs))
    print_json({
        "benchmark": "ingest",
        "events": count,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "sqlite": sqlite,
        "sqlite_all_runs_events_per_s": [r["events_per_s"] for r in sqlite_runs],
        "sqlite_rerun_all_duplicates": {"duplicates": rerun.duplicates, "seconds": round(rerun_seconds, 3),
                                        "events_per_s": round(rerun.duplicates / rerun_seconds)},
        "postgres": postgres,
        "bare_sqlite_executemany": bare,
        "ratio_sqlite_to_bare_median": round(ratios[len(ratios) // 2], 3),
        "goal_sqlite_events_per_s": 20_000,
        "meets_goal": sqlite["events_per_s"] >= 20_000,
    })


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2]


if __name__ == "__main__":
    main()
