"""What the benchmarks share: event files and throw-away PostgreSQL databases, homes of conversation
turns, percentile summaries, a process's resident memory, a `hms serve` of their own, and the one JSON
object each prints.

The benchmarks run as modules from the repository root (`python -m benchmarks.serve`); a measurement
that needs a process of its own runs the same way (`run_in_fresh_process`)."""

from __future__ import annotations

import http.client
import json
import os
import socket
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


def with_cold_share(per_user: int, cold_share: float) -> dict[str, Any]:
    """The tier migration's config that puts the lowest-scored `cold_share` of each user's memories in
    the cold tier (the oldest, as the turns are spread over the past year), the newest 10% hot, the
    rest warm: the thresholds are 0, so the capacities alone decide."""
    cold = round(per_user * cold_share)
    hot = per_user // 10
    return {"hot_capacity": hot, "warm_capacity": max(per_user - hot - cold, 0), "hot_threshold": 0.0, "warm_threshold": 0.0, "use_predictor": "off"}


def materialize_cold_archive(store: Any, embedder: Any) -> None:
    """The `cold_archive` asset over the latest tiers, as the daemon materializes it after a migration."""
    import dagster as dg

    from hms_assets import domain_assets
    from hms_jobs.homes import QUIET

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            domain_assets(("memory_store", "semantic", "tiers")),
            selection=dg.AssetSelection.assets("cold_archive"),
            resources={"event_store": store, "embedder": embedder},
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
    if not result.success:
        raise RuntimeError("materializing the cold archive failed; see the Dagster log above")


def tier_counts(store: Any) -> dict[str, dict[str, int]]:
    """Memories per tier of each user in their latest tier partition, as the store holds them."""
    from hms_resources.store.derived import latest_tiers

    counts: dict[str, dict[str, int]] = {}
    for (user_id, _), (tier, _) in latest_tiers(store).items():
        per_user = counts.setdefault(user_id, {})
        per_user[tier] = per_user.get(tier, 0) + 1
    return counts


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


# A `hms serve` of the benchmark's own ----------------------------------------------------------

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def service_env(home: Path, **settings: str) -> dict[str, str]:
    """This environment without any HMS setting of the caller's (nor its Dagster home), on `home`, plus
    `settings`: what a user who sets only those gets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMS_") and k != "DAGSTER_HOME"}
    return {**env, "HMS_HOME": str(home), **settings}


def start_server(home: Path, port: int, mcp: bool, log_path: Path, **settings: str) -> subprocess.Popen:
    """`hms serve` on `home` with its defaults and `settings` (`service_env`), and no Dagster daemon:
    what a user who runs only the service gets."""
    env = service_env(home, **settings)
    command = [sys.executable, "-m", "hms_jobs.cli", "serve", "--host", HOST, "--port", str(port), "--mcp" if mcp else "--no-mcp"]
    with log_path.open("ab") as out:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def http_get(port: int, path: str, timeout: float = 10.0, key: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server: subprocess.Popen, port: int, log_path: Path, limit: float = 600.0) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"hms serve exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            status, body = http_get(port, "/readyz", timeout=5)
            if status == 200:
                return orjson.loads(body)
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"hms serve was not ready within {limit:.0f}s")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM, so the service shuts down as it does in production (queued accesses stored)."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def last_sequence(home: Path) -> int:
    """The store's last sequence, read in this process while the service runs."""
    from hms_resources.store.event_store import EventStore

    store = EventStore(hms_home=str(home))
    try:
        return store.max_sequence()
    finally:
        store.close()


def settled_sequence(home: Path, *, quiet: float = 2.0, limit: float = 60.0) -> int:
    """The store's last sequence once it has not moved for `quiet` seconds: the service's background
    writers (the access log) have stored what they had queued."""
    last, since = last_sequence(home), time.monotonic()
    deadline = since + limit
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = last_sequence(home)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last
