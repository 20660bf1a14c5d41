"""What the benchmarks share: event files and throw-away PostgreSQL databases, homes of conversation
turns, percentile summaries, a process's resident memory, and the one JSON object each prints.

The benchmarks run as modules from the repository root (`python -m benchmarks.serve`); a measurement
that needs a process of its own runs the same way (`run_in_fresh_process`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hms_resources.datasets.synthetic import generate_bulk_events

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_SERVER_URL = os.environ.get("HMS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
USER = "bench-user"
"""The one user of `conversation_texts` (callers with several users rename them)."""


# Event files and databases ---------------------------------------------------------------------


def write_events(path: Path, count: int, *, seed: int = 1) -> int:
    written = 0
    with path.open("wb") as out:
        for record in generate_bulk_events(count, users=50, seed=seed):
            out.write(orjson.dumps(record) + b"\n")
            written += 1
    return written


@contextmanager
def temporary_postgres_database() -> Iterator[str | None]:
    """A fresh database on the local server, dropped afterwards; None when no server answers."""
    server = sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    name = f"hms_bench_{uuid.uuid4().hex[:10]}"
    try:
        with server.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception:  # noqa: BLE001 - the benchmark reports PostgreSQL as unavailable
        server.dispose()
        yield None
        return
    try:
        yield make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


# Homes of conversation turns -------------------------------------------------------------------


def conversation_texts(count: int, seed: int) -> list[dict]:
    """`count` conversation turns of one user, from the shipped dataset generator, with many sessions."""
    from hms_resources.datasets.conversations import generate_conversations

    sessions = max(2, count // 12)
    records = [r for r in generate_conversations(users=1, sessions_per_user=sessions, seed=seed) if r["kind"] == "memory"]
    while len(records) < count:
        more = [r for r in generate_conversations(users=1, sessions_per_user=sessions, seed=seed + len(records)) if r["kind"] == "memory"]
        records += [{**r, "id": f"{r['id']}-{len(records)}", "session_id": f"{r['session_id']}-{len(records)}"} for r in more]
    records = records[:count]
    # Spread the turns, in order, over the year before yesterday, so the tier partition of their last
    # day exists and hot and warm memories differ in age.
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    step = timedelta(days=365) / len(records)
    return [
        {**r, "user_id": USER, "created_at": (end - (len(records) - n) * step).isoformat().replace("+00:00", "Z")}
        for n, r in enumerate(records)
    ]


def hot_and_warm(per_user: int) -> dict[str, Any]:
    """The tier migration's config that keeps every memory of a user hot (the newest 10%) or warm."""
    return {"hot_capacity": per_user // 10, "warm_capacity": per_user, "hot_threshold": 0.0, "warm_threshold": 0.0, "use_predictor": "off"}


def seconds_fields(seconds: dict[str, float]) -> dict[str, float]:
    """A home's build seconds per step as report fields (`semantic_assets_seconds`, ...)."""
    return {f"{k}_seconds": round(v, 1) for k, v in seconds.items()}


# Summaries and memory --------------------------------------------------------------------------


def percentile(values: Sequence[float] | np.ndarray, q: float, *, digits: int = 2, scale: float = 1.0) -> float:
    """The `q`th percentile of `values` times `scale`, rounded; NaN when there are none."""
    if not len(values):
        return float("nan")
    return round(float(np.percentile(values, q)) * scale, digits)


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[int] = (50, 95, 99), *, digits: int = 2) -> dict[str, float]:
    """`{"p50": ..., "p95": ..., "p99": ...}` of `values`; empty when there are none."""
    return {f"p{q}": percentile(values, q, digits=digits) for q in qs} if len(values) else {}


def distribution(values: Sequence[float] | np.ndarray, qs: Sequence[int] = (50, 90, 99)) -> dict[str, float | int]:
    """Percentiles, maximum, mean and count of `values` (`{"n": 0}` when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {"n": 0}
    return {**percentiles(values, qs), "max": round(float(values.max()), 2), "mean": round(float(values.mean()), 2), "n": int(len(values))}


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """A process's resident memory now (`rss`) and at its peak (`peak_rss`), in MiB, from /proc."""
    found = {"rss": float("nan"), "peak_rss": float("nan")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            found["rss"] = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            found["peak_rss"] = int(line.split()[1]) / 1024
    return found


def rss_mb(pid: int | str = "self") -> float:
    """A process's resident memory now, in MiB."""
    return memory_mb(pid)["rss"]


# Output and processes --------------------------------------------------------------------------


def print_json(result: dict[str, Any], *, indent: int | None = 2) -> None:
    """The benchmark's one JSON object on stdout (progress goes to stderr)."""
    print(json.dumps(result, indent=indent))


def stderr_log(prefix: str) -> Callable[[str], None]:
    """A progress logger writing `[prefix HH:MM:SS] message` lines to stderr."""

    def log(message: str) -> None:
        print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def run_in_fresh_process(module: str, *args: str) -> dict[str, Any]:
    """`python -m module args` in a process of its own (so its resident memory is the measurement's
    own), from this process's directory; returns the JSON object its last line of output holds."""
    out = subprocess.run([sys.executable, "-m", module, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
