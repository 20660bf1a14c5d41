"""The HTTP service under bounded load (`hms serve` on 127.0.0.1 only): 10 users of one tenant with
10,000 memories each, the load generator in a process of its own.

Measured, in one run against one server:
1. `POST /v1/context` open loop at 100 requests/s for 60 s: requests go out on a fixed schedule
   whatever the responses do, and latency is counted from each request's *scheduled* send time (so a
   stalled server or a busy client cannot hide queueing: no coordinated omission); the latency from
   the actual send, the generator's lag behind its schedule and the server's own `timings_ms` are
   reported beside it. Then rates stepped up (100, 110, 120, ..., 150, 175, 200, ...; 20 s each) until the first
   step whose p99 is over 100 ms or that has an error or an unanswered request: the highest rate held
   is the step before it.
2. Writes: single memories (`POST /v1/memories`, one per call) from 8 concurrent clients for 60 s;
   then batches of 500 memories (`POST /v1/memories` with `{"memories": [...]}`) from 4 concurrent
   clients for 30 s, a few of them sent again afterwards as retries. Every acknowledged event id is
   then looked up in the store: none may be missing, none stored twice, and the retries must store
   nothing.
3. HTTP overhead: `/v1/context` one request at a time against `ContextAssembler.assemble` called in
   this process on the same home (the context resource only reads), same queries, alternating query by query.

The home is built through the real assets as in `benchmarks/context.py` (its conversation texts, one
generator seed per user, users `bench/u0`..`bench/u9`, i.e. `u0`..`u9` of the tenant `bench`), with
random unit vectors stored under the texts' hashes so nothing is encoded (the issue allows it); it is
kept under `--home` (`--reuse` skips the build) and copied afresh for each run, so writes of an
earlier run never reach the next one's reads. Queries: the generator's own questions for each user,
questions generated for other seeds, and questions quoting a few words of one of the user's turns.
The server runs with its defaults (it records accesses in the background). Each phase also reports
the CPU cores the server, the generator and every other process used meanwhile: on a shared machine
the last one says how far a figure was disturbed. `--quick` (1,000 memories per user, 10 s runs) is a
smoke test of a couple of minutes. Prints one JSON object.

With a cold share (issue 27: `--users 2 --memories 100000 --cold-share 0.33 --context-only`), the tier
migration puts that share of each user's memories, the oldest, in the cold tier and the
`cold_archive` asset archives them; the tiers actually assigned are reported (`home.tiers_assigned`).
Each user gets one context before the clock starts (their indexes load on first use), and the open
loop reports the events the store gained per context call, counted once the service's background
writers are idle. `--context-only` skips the HTTP overhead, the rate steps and the writes.

Goals: context at 100/s p50 <= 25 ms, p99 <= 100 ms, 0 errors; >= 10,000 single memories per minute;
>= 10,000 events per second in batches of 500, 0 lost, 0 duplicated; HTTP p50 <= 1.5x the direct
call's p50. The highest rate with p99 under 100 ms is reported without a goal. With a cold share:
context at 100/s p50 <= 15 ms, p99 <= 50 ms, <= 1 event appended per context call."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np
import orjson

from benchmarks.common import (
    HOST,
    REPO_ROOT,
    conversation_texts,
    distribution,
    free_port,
    hot_and_warm,
    http_get,
    materialize_cold_archive,
    print_json,
    rss_mb,
    seconds_fields,
    settled_sequence,
    start_server,
    stderr_log,
    stop_server,
    tier_counts,
    wait_ready,
    with_cold_share,
)

TENANT = "bench"
HOME_VERSION = 2
SLO_MS = 100.0

GOALS = {
    "context_p50_ms": 25.0,
    "context_p99_ms": 100.0,
    "context_errors": 0,
    "single_memories_per_minute": 10_000,
    "batch_events_per_second": 10_000,
    "batch_lost": 0,
    "batch_duplicated": 0,
    "http_over_direct_p50_ratio": 1.5,
}
COLD_GOALS = {"context_p50_ms": 15.0, "context_p99_ms": 50.0, "events_per_context_call": 1}
"""Issue 27's goals for `/v1/context` at 100/s over 100,000 memories per user, a third of them cold."""

NOTES = {
    "latency_ms": "open loop, from each request's scheduled send time to the end of its response, 200s only",
    "latency_from_actual_send_ms": "from the moment the request was written to its connection",
    "generator_schedule_lateness_ms": "how late the generator queued a request behind its schedule: its own overhead",
    "scheduled_to_sent_ms": "scheduled time to write: lateness plus waiting for a free keep-alive connection (all busy)",
    "server_assemble_ms": "the service's own timings_ms per stage, from the responses",
    "server_http_handler": "the service's /metrics request histogram over the run (middleware to last byte)",
    "cpu_cores": "CPU cores used over the phase by the server, the generator and every other process on this shared machine",
}

QUOTING = ("What did we say about {}?", "Remind me what I told you about {}.", "When did I mention {}?", "Anything about {}?")


log = stderr_log("serve-bench")


# The home --------------------------------------------------------------------------------------


def generator_questions(seed: int, sessions: int, users: int = 1) -> list[str]:
    from hms_resources.datasets.conversations import generate_conversations

    return [r["question"] for r in generate_conversations(users=users, sessions_per_user=sessions, seed=seed) if r["kind"] == "question"]


def user_queries(texts: list[dict], own: list[str], pool: list[str], count: int, rng: random.Random) -> list[str]:
    """`count` questions for one user: the generator's questions about this user's turns, questions
    the generator wrote for other users, and questions quoting a few words of one of this user's turns."""
    asked = list(own)
    asked += rng.sample(pool, min(len(pool), (count - len(asked)) // 2))
    while len(asked) < count:
        words = texts[rng.randrange(len(texts))]["text"].split(": ", 1)[-1].split()
        start = rng.randrange(max(len(words) - 5, 1))
        snippet = " ".join(words[start : start + rng.randint(3, 6)]).strip(".,?!")
        if snippet:
            asked.append(rng.choice(QUOTING).format(snippet))
    rng.shuffle(asked)
    return asked[:count]


def build_home(home: Path, users: int, per_user: int, cold_share: float = 0.0) -> dict:
    """The base home: `users` x `per_user` conversation turns through the real assets, random unit
    vectors in place of encoding (as `benchmarks.context` does above 20,000 memories). With
    `cold_share`, the tier migration puts that share of each user's memories, the oldest, in the cold
    tier, and the `cold_archive` asset archives them, as the daemon would."""
    from hms_jobs.homes import ingest_memories, materialize_for_context, save_random_embeddings
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.store.event_store import EventStore

    started = time.perf_counter()
    home.mkdir(parents=True)
    with closing(EventStore(hms_home=str(home))) as store:
        embedder = Embedder()
        rng = random.Random(5)
        pool = [q for k in range(4) for q in generator_questions(1000 + k, sessions=20, users=6)]
        queries: dict[str, list[str]] = {}
        samples: list[str] = []
        for u in range(users):
            user = f"{TENANT}/u{u}"
            seed = 29 + u
            texts = [{**r, "user_id": user} for r in conversation_texts(per_user, seed=seed)]
            ingest_memories(store, texts)
            own = generator_questions(seed, sessions=max(2, per_user // 12))
            queries[f"u{u}"] = user_queries(texts, own, pool, 100, rng)
            samples += [t["text"] for t in rng.sample(texts, min(len(texts), 100))]
            log(f"ingested {len(texts)} turns of {user}")
        ingested = time.perf_counter() - started
        memories = save_random_embeddings(store, embedder)
        tiering = with_cold_share(per_user, cold_share) if cold_share else hot_and_warm(per_user)
        seconds = materialize_for_context(store, embedder, tier_config=tiering, log=log)
        if cold_share:
            started_archive = time.perf_counter()
            materialize_cold_archive(store, embedder)
            seconds["cold_archive"] = time.perf_counter() - started_archive
            log(f"materialized cold_archive in {seconds['cold_archive']:.1f}s")
        tiers = tier_counts(store)
    built = {
        "version": HOME_VERSION,
        "users": users,
        "memories_per_user": per_user,
        "memories": memories,
        "vectors": "random unit",
        "cold_share_asked": cold_share,
        "tiers_assigned": {tier: sum(c.get(tier, 0) for c in tiers.values()) for tier in ("hot", "warm", "cold", "archived")},
        "tiers_per_user": tiers,
        "build_seconds": round(time.perf_counter() - started, 1),
        "ingest_seconds": round(ingested, 1),
        **seconds_fields(seconds),
    }
    (home / "bench.json").write_text(json.dumps({"built": built, "queries": queries, "texts": samples}))
    return built


def base_home(root: Path, users: int, per_user: int, reuse: bool, cold_share: float = 0.0) -> tuple[Path, dict]:
    base = root / (f"base-{users}x{per_user}" + (f"-cold{cold_share:g}" if cold_share else ""))
    marker = base / "bench.json"
    if reuse and marker.exists():
        found = json.loads(marker.read_text())
        if found["built"].get("version") == HOME_VERSION:
            log(f"reusing the home at {base}")
            return base, {**found["built"], "reused": True}
    if base.exists():
        shutil.rmtree(base)
    log(f"building {users} x {per_user} memories at {base} (minutes at full size)")
    return base, {**build_home(base, users, per_user, cold_share), "reused": False}


# The server ------------------------------------------------------------------------------------


def mcp_importable() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import hms_resources.serving.mcp_server"], cwd=REPO_ROOT, capture_output=True)
    return probe.returncode == 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, key: str) -> dict[tuple[str, tuple], float]:
    """The service's /metrics as {(name, sorted labels): value} (`key`: an admin key of the operator's tenant)."""
    _, body = http_get(port, "/metrics", key=key)
    found = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if match:
            labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or "")))
            found[(match.group(1), labels)] = float(match.group(3))
    return found


def histogram_delta(before: dict, after: dict, name: str, **labels: str) -> dict:
    """Count, mean and the share at or under each bucket bound between two scrapes of one histogram."""
    want = set(labels.items())

    def value(metric: str) -> dict:
        rows = {}
        for (n, lab), v in after.items():
            if n != metric or not want <= set(lab):
                continue
            key = dict(lab).get("le")
            rows[key] = v - before.get((n, lab), 0.0)
        return rows

    count = sum(value(f"{name}_count").values())
    total = sum(value(f"{name}_sum").values())
    buckets = value(f"{name}_bucket")
    if not count:
        return {"count": 0}
    share = {f"<= {float(le) * 1e3:g} ms": round(c / count, 4) for le, c in sorted(buckets.items(), key=lambda kv: float(kv[0])) if le != "+Inf"}
    return {"count": int(count), "mean_ms": round(total / count * 1e3, 2), "share": share}


# The load generator: its own process, raw HTTP/1.1 keep-alive over asyncio ----------------------


class RawHttp:
    """One keep-alive HTTP/1.1 connection: just enough protocol for JSON POSTs to uvicorn."""

    def __init__(self, port: int, key: str):
        self.port = port
        self.headers = f"Host: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.connect()
        try:
            self.writer.write(f"POST {path} HTTP/1.1\r\n{self.headers}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, closing = 0, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    closing = b"close" in value.lower()
            if chunked:
                parts = []
                while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    parts.append(await self.reader.readexactly(size + 2))
                await self.reader.readuntil(b"\r\n")
                data = b"".join(p[:-2] for p in parts)
            else:
                data = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if closing:
            self.close()
        return status, data


def context_bodies(queries: dict[str, list[str]], rng: random.Random) -> list[bytes]:
    """Every query of every user once, interleaved across users at random."""
    pairs = [(user, q) for user, asked in queries.items() for q in asked]
    rng.shuffle(pairs)
    return [orjson.dumps({"user_id": user, "query": q, "max_tokens": 1024}) for user, q in pairs]


async def open_loop(spec: dict) -> dict:
    """`rate` requests a second for `seconds`, on schedule, over `connections` keep-alive connections;
    a request waits in the client while every connection is busy, and that wait counts."""
    rate, seconds = spec["rate"], spec["seconds"]
    bodies = context_bodies(spec["queries"], random.Random(spec["seed"]))
    total = int(rate * seconds)
    queue: asyncio.Queue = asyncio.Queue()
    rows: list[tuple[float, float, float, int]] = []
    lateness: list[float] = []
    server_ms: list[dict] = []
    errors: dict[str, int] = {}

    async def worker(conn: RawHttp) -> None:
        while True:
            job = await queue.get()
            if job is None:
                return
            scheduled, body = job
            sent = time.perf_counter()
            try:
                status, data = await conn.post("/v1/context", body)
            except Exception as exc:  # noqa: BLE001 - counted as an error of the run
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            done = time.perf_counter()
            rows.append((scheduled, sent, done, status))
            if status == 200:
                server_ms.append(orjson.loads(data)["timings_ms"])
            else:
                errors[f"http {status}"] = errors.get(f"http {status}", 0) + 1

    conns = [RawHttp(spec["port"], spec["key"]) for _ in range(spec["connections"])]
    await asyncio.gather(*(c.connect() for c in conns))
    workers = [asyncio.ensure_future(worker(c)) for c in conns]
    cpu0 = time.process_time()
    start = time.perf_counter() + 0.05
    for i in range(total):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(time.perf_counter() - at)
        queue.put_nowait((at, bodies[i % len(bodies)]))
    for _ in workers:
        queue.put_nowait(None)
    schedule_end = time.perf_counter()
    _, pending = await asyncio.wait(workers, timeout=spec["grace"])
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for c in conns:
        c.close()
    wall = time.perf_counter() - start
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return {
        "sent_scheduled": total,
        "answered": len(rows),
        "unanswered": total - len(rows) - sum(v for k, v in errors.items() if not k.startswith("http")),
        "errors": errors,
        "latency_from_scheduled_ms": ((arr[:, 2] - arr[:, 0]) * 1e3).tolist(),
        "latency_from_send_ms": ((arr[:, 2] - arr[:, 1]) * 1e3).tolist(),
        "send_lag_ms": ((arr[:, 1] - arr[:, 0]) * 1e3).tolist(),
        "schedule_lateness_ms": (np.array(lateness) * 1e3).tolist(),
        "ok": (arr[:, 3] == 200).tolist(),
        "server_timings_ms": server_ms,
        "schedule_seconds": round(schedule_end - start, 3),
        "wall_seconds": round(wall, 3),
        "generator_cpu_seconds": round(time.process_time() - cpu0, 3),
    }


async def writes(spec: dict) -> dict:
    """Closed loop: `clients` connections, each sending its next write as soon as the last is answered,
    for `seconds`; single memories or batches of `batch` memories, every event id new. Afterwards the
    first `retries` batches are sent again, unchanged. Acknowledged event ids go to `ack_file`."""
    texts, prefix, batch = spec["texts"], spec["prefix"], spec["batch"]
    users = spec["users"]
    acked: list[str] = []
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = {"created": 0, "duplicate": 0, "rejected": 0}
    first_bodies: list[bytes] = []

    def body(client: int, n: int) -> bytes:
        if batch == 1:
            return orjson.dumps({"user_id": users[n % len(users)], "content": texts[(client * 7919 + n) % len(texts)], "event_id": f"{prefix}-s{client}-{n}"})
        items = [
            {"user_id": users[j % len(users)], "content": texts[(client * 7919 + n * batch + j) % len(texts)], "event_id": f"{prefix}-b{client}-{n}-{j}"}
            for j in range(batch)
        ]
        return orjson.dumps({"memories": items})

    def tally(status: int, data: bytes, into: dict, ack: list[str] | None) -> None:
        if batch == 1:
            if status in (200, 201):
                found = orjson.loads(data)
                into[found["status"]] += 1
                if found["status"] == "created" and ack is not None:
                    ack.append(found["event_id"])
            else:
                errors[f"http {status}"] = errors.get(f"http {status}", 0) + 1
            return
        if status != 200:
            errors[f"http {status}"] = errors.get(f"http {status}", 0) + 1
            return
        for item in orjson.loads(data)["results"]:
            into[item["status"]] += 1
            if item["status"] == "created" and ack is not None:
                ack.append(item["event_id"])

    async def client(c: int, end: float) -> None:
        conn = RawHttp(spec["port"], spec["key"])
        await conn.connect()
        n = 0
        while time.perf_counter() < end:
            payload = body(c, n)
            if c == 0 and len(first_bodies) < spec["retries"]:
                first_bodies.append(payload)
            n += 1
            sent = time.perf_counter()
            try:
                status, data = await conn.post("/v1/memories", payload)
            except Exception as exc:  # noqa: BLE001 - counted as an error of the run
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append((time.perf_counter() - sent) * 1e3)
            tally(status, data, counts, acked)
        conn.close()

    cpu0 = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client(c, started + spec["seconds"]) for c in range(spec["clients"])))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    retried = {"created": 0, "duplicate": 0, "rejected": 0}
    if first_bodies:
        conn = RawHttp(spec["port"], spec["key"])
        for payload in first_bodies:
            status, data = await conn.post("/v1/memories", payload)
            tally(status, data, retried, None)
        conn.close()
    Path(spec["ack_file"]).write_text("\n".join(acked))
    return {
        "requests": len(latencies),
        "wall_seconds": round(wall, 3),
        "statuses": counts,
        "errors": errors,
        "latency_ms": latencies,
        "retried_requests": len(first_bodies),
        "retried_statuses": retried,
        "generator_cpu_seconds": round(cpu, 3),
    }


def loadgen_main() -> None:
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(open_loop(spec) if spec["mode"] == "open_loop" else writes(spec))
    sys.stdout.buffer.write(orjson.dumps(result))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every process, every core) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def run_loadgen(spec: dict, server_pid: int) -> dict:
    """Run the generator in a fresh process. Its result comes back with the CPU cores the server, the
    generator (the whole process, start-up included) and every other process on the machine used
    meanwhile: this machine is shared, and the last says how much."""
    wall0, busy0, server0 = time.perf_counter(), machine_busy_seconds(), cpu_seconds(server_pid)
    load0 = os.getloadavg()[0]
    children0 = os.times()
    command = [sys.executable, "-m", "benchmarks.serve", "--loadgen"]
    done = subprocess.run(command, input=json.dumps(spec).encode(), capture_output=True, cwd=REPO_ROOT)
    if done.returncode:
        raise RuntimeError(f"the load generator failed:\n{done.stderr.decode()[-3000:]}")
    wall = time.perf_counter() - wall0
    children = os.times()
    generator = (children.children_user + children.children_system) - (children0.children_user + children0.children_system)
    ours = (children.user + children.system) - (children0.user + children0.system)
    server = cpu_seconds(server_pid) - server0
    result = orjson.loads(done.stdout)
    result["server_cpu_cores"] = round(server / wall, 3)
    result["generator_process_cpu_cores"] = round(generator / wall, 3)
    result["other_processes_cpu_cores"] = round(max(0.0, machine_busy_seconds() - busy0 - server - generator - ours) / wall, 3)
    result["load_average_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return result


# Summaries -------------------------------------------------------------------------------------


def open_loop_report(raw: dict) -> dict:
    stages: dict[str, list[float]] = {}
    for timings in raw["server_timings_ms"]:
        for stage, ms in timings.items():
            stages.setdefault(stage, []).append(ms)
    ok = np.array(raw["ok"], dtype=bool)
    from_scheduled = np.array(raw["latency_from_scheduled_ms"])
    errors = sum(raw["errors"].values())
    return {
        "rate_per_second": raw["rate"],
        "seconds": raw["seconds"],
        "requests_scheduled": raw["sent_scheduled"],
        "answered_200": int(ok.sum()),
        "errors": errors,
        "unanswered_at_cutoff": raw["unanswered"],
        "error_kinds": raw["errors"],
        "achieved_rate_per_second": round(int(ok.sum()) / raw["wall_seconds"], 1),
        "latency_ms": distribution(from_scheduled[ok]),
        "latency_from_actual_send_ms": distribution(np.array(raw["latency_from_send_ms"])[ok]),
        "generator_schedule_lateness_ms": distribution(raw["schedule_lateness_ms"]),
        "scheduled_to_sent_ms": distribution(raw["send_lag_ms"]),
        "server_assemble_ms": {stage: distribution(v) for stage, v in sorted(stages.items(), key=lambda kv: -np.median(kv[1]))},
        "cpu_cores": cpu_report(raw),
    }


def cpu_report(raw: dict) -> dict:
    return {
        "server": raw["server_cpu_cores"],
        "generator_while_sending": round(raw["generator_cpu_seconds"] / raw["wall_seconds"], 3),
        "generator_process": raw["generator_process_cpu_cores"],
        "other_processes": raw["other_processes_cpu_cores"],
        "load_average_1m_before_after": raw["load_average_1m"],
    }


def holds(report: dict) -> bool:
    return report["errors"] == 0 and report["unanswered_at_cutoff"] == 0 and report["latency_ms"].get("p99", float("inf")) <= SLO_MS


# Phases ----------------------------------------------------------------------------------------


def overhead(home: Path, port: int, key: str, queries: dict[str, list[str]], count: int, warmup: int = 30) -> dict:
    """`/v1/context` one request at a time against `assemble` in this process, alternating."""
    from hms_resources.context.assembler import ContextAssembler

    assembler = ContextAssembler.from_home(home)
    assembler.snapshot
    pairs = [(user, q) for user, asked in queries.items() for q in asked]
    random.Random(11).shuffle(pairs)
    pairs = (pairs * (1 + (count + warmup) // len(pairs)))[: count + warmup]
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    direct_ms, http_ms, direct_total, server_total = [], [], [], []
    failures = 0
    for n, (user, query) in enumerate(pairs):
        for which in (0, 1) if n % 2 else (1, 0):
            started = time.perf_counter()
            if which:
                context = assembler.assemble(f"{TENANT}/{user}", query, 1024)
                elapsed = (time.perf_counter() - started) * 1e3
                if n >= warmup:
                    direct_ms.append(elapsed)
                    direct_total.append(context.timings_ms["total"])
            else:
                conn.request("POST", "/v1/context", body=orjson.dumps({"user_id": user, "query": query, "max_tokens": 1024}), headers=headers)
                response = conn.getresponse()
                data = response.read()
                elapsed = (time.perf_counter() - started) * 1e3
                if response.status != 200:
                    failures += 1
                elif n >= warmup:
                    http_ms.append(elapsed)
                    server_total.append(orjson.loads(data)["timings_ms"]["total"])
    conn.close()
    assembler.close()
    direct, over_http = distribution(direct_ms), distribution(http_ms)
    return {
        "queries": len(http_ms),
        "http_errors": failures,
        "direct_assemble_ms": direct,
        "http_context_ms": over_http,
        "direct_timings_total_ms": distribution(direct_total),
        "server_timings_total_ms": distribution(server_total),
        "ratio_p50": round(over_http["p50"] / direct["p50"], 3),
        "ratio_p99": round(over_http["p99"] / direct["p99"], 3),
        "http_minus_direct_p50_ms": round(over_http["p50"] - direct["p50"], 2),
    }


def verify_writes(home: Path, prefix: str, ack_files: list[Path]) -> dict:
    """Every acknowledged id in the store once; nothing else under the run's prefix; one memory each."""
    import sqlalchemy as sa

    from hms_resources.store.event_store import EventStore

    acked: list[str] = []
    for path in ack_files:
        text = path.read_text()
        acked += text.split("\n") if text else []
    store = EventStore(hms_home=str(home))
    low, high = f"{TENANT}/{prefix}-", f"{TENANT}/{prefix}."
    with store.engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.text("SELECT event_id FROM events WHERE event_id >= :low AND event_id < :high"), {"low": low, "high": high})]
        memories = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT user_id || ' ' || memory_id) FROM memory_keys WHERE memory_id >= :low AND memory_id < :high"),
            {"low": f"{prefix}-", "high": f"{prefix}."},
        ).one()
    store.close()
    stored_set = {s[len(TENANT) + 1 :] for s in stored}
    acked_set = set(acked)
    return {
        "acknowledged_created": len(acked),
        "acknowledged_distinct": len(acked_set),
        "stored_events": len(stored),
        "stored_distinct": len(stored_set),
        "memory_keys": int(memories[0]),
        "lost": len(acked_set - stored_set),
        "duplicated": (len(stored) - len(stored_set)) + (len(acked) - len(acked_set)) + max(0, int(memories[0]) - int(memories[1])),
        "stored_without_acknowledgement": len(stored_set - acked_set),
    }


def write_report(raw: dict, per: str) -> dict:
    created = raw["statuses"]["created"]
    rate = created / raw["wall_seconds"]
    return {
        "requests": raw["requests"],
        "seconds": raw["wall_seconds"],
        "statuses": raw["statuses"],
        "errors": raw["errors"],
        per: round(rate * 60 if per == "memories_per_minute" else rate, 1),
        "request_latency_ms": distribution(raw["latency_ms"]),
        "cpu_cores": cpu_report(raw),
    }


def machine() -> dict:
    memory = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")), None)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_mb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def goal(value: float | int | None, target: float, at_most: bool = True) -> dict:
    passed = value is not None and (value <= target if at_most else value >= target)
    return {"value": value, "goal": f"{'<=' if at_most else '>='} {target:g}", "pass": bool(passed)}


def warm_up(port: int, key: str, queries: dict[str, list[str]]) -> dict:
    """One context per user before the clock starts: a user's indexes load on their first call (seconds
    at 100,000 memories), which is start-up, not the latency under load."""
    conn = http.client.HTTPConnection(HOST, port, timeout=600)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    seconds = {}
    for user, asked in queries.items():
        started = time.perf_counter()
        conn.request("POST", "/v1/context", body=orjson.dumps({"user_id": user, "query": asked[0], "max_tokens": 1024}), headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"warm-up context of {user} answered {response.status}")
        seconds[user] = round(time.perf_counter() - started, 2)
    conn.close()
    return {"first_context_seconds": seconds}


def context_open_loop(config: dict, base_spec: dict, home: Path, port: int, server_pid: int) -> dict:
    """`/v1/context` at the configured rate; with the events the store gained per request meanwhile
    (read once the service's access log has stored what it queued)."""
    log(f"context open loop at {config['rate_per_second']:g}/s for {config['seconds']:g}s")
    sequence = settled_sequence(home)
    before = scrape(port, base_spec["key"])
    raw = run_loadgen({**base_spec, "rate": config["rate_per_second"], "seconds": config["seconds"], "grace": 30.0, "seed": 1}, server_pid)
    after = scrape(port, base_spec["key"])
    report = open_loop_report({**raw, "rate": config["rate_per_second"], "seconds": config["seconds"]})
    report["server_http_handler"] = histogram_delta(before, after, "hms_http_request_duration_seconds", route="/v1/context")
    report["events_appended_per_context_call"] = round((settled_sequence(home) - sequence) / max(report["answered_200"], 1), 3)
    log(f"  p50 {report['latency_ms'].get('p50')} ms, p99 {report['latency_ms'].get('p99')} ms, errors {report['errors']}")
    return report


def step_rates(config: dict, base_spec: dict, server_pid: int) -> dict:
    """Rising rates until the first step that misses the SLO: the highest rate held is the one before."""
    steps = []
    highest = None
    for n, rate in enumerate(config["step_rates"]):
        log(f"step {rate:g}/s for {config['step_seconds']:g}s")
        raw = run_loadgen({**base_spec, "rate": rate, "seconds": config["step_seconds"], "grace": 5.0, "seed": 100 + n}, server_pid)
        step = open_loop_report({**raw, "rate": rate, "seconds": config["step_seconds"]})
        brief = {
            "rate_per_second": rate,
            "holds": holds(step),
            "latency_ms": step["latency_ms"],
            "latency_from_actual_send_ms": {k: step["latency_from_actual_send_ms"].get(k) for k in ("p50", "p99")},
            "server_assemble_total_ms": {k: step["server_assemble_ms"].get("total", {}).get(k) for k in ("p50", "p99")},
            "errors": step["errors"],
            "unanswered_at_cutoff": step["unanswered_at_cutoff"],
            "achieved_rate_per_second": step["achieved_rate_per_second"],
            "cpu_cores": step["cpu_cores"],
        }
        steps.append(brief)
        log(f"  p50 {step['latency_ms'].get('p50')} ms, p99 {step['latency_ms'].get('p99')} ms, errors {step['errors']}, holds {brief['holds']}")
        if not brief["holds"]:
            break
        highest = rate
        time.sleep(1.0)
    return {
        "rule": f"p99 from the scheduled send <= {SLO_MS:g} ms, no error, every request answered",
        "highest_rate_held_per_second": highest,
        "first_failing_rate_per_second": next((s["rate_per_second"] for s in steps if not s["holds"]), None),
        "steps": steps,
        "note": "reported without a goal",
    }


def write_phases(config: dict, root: Path, home: Path, port: int, key: str, queries: dict, texts: list[str], server_pid: int) -> dict:
    """Single writes, then batches with retries, then every acknowledged id looked up in the store."""
    results = {}
    prefix = f"w{uuid.uuid4().hex[:8]}"
    users = list(queries)
    ack_single, ack_batch = root / "acked-single.txt", root / "acked-batch.txt"
    log(f"single writes: {config['write_clients']} clients for {config['write_seconds']:g}s")
    raw = run_loadgen(
        {"mode": "writes", "port": port, "key": key, "texts": texts, "users": users, "prefix": prefix, "batch": 1,
         "clients": config["write_clients"], "seconds": config["write_seconds"], "retries": 0, "ack_file": str(ack_single)},
        server_pid,
    )
    results["writes_single"] = write_report(raw, "memories_per_minute")
    log(f"  {results['writes_single']['memories_per_minute']} memories/min")
    log(f"batched writes: {config['batch_clients']} clients x {config['batch_size']} for {config['batch_seconds']:g}s")
    raw = run_loadgen(
        {"mode": "writes", "port": port, "key": key, "texts": texts, "users": users, "prefix": prefix, "batch": config["batch_size"],
         "clients": config["batch_clients"], "seconds": config["batch_seconds"], "retries": 3, "ack_file": str(ack_batch)},
        server_pid,
    )
    results["writes_batch"] = write_report(raw, "events_per_second")
    results["writes_batch"]["retries"] = {"requests": raw["retried_requests"], "statuses": raw["retried_statuses"]}
    log(f"  {results['writes_batch']['events_per_second']} events/s")
    results["write_check"] = verify_writes(home, prefix, [ack_single, ack_batch])
    results["write_check"]["retried_batches_created"] = raw["retried_statuses"]["created"]
    return results


def goals_of(results: dict, cold: bool) -> dict:
    """Each goal of the phases that ran, with its measured value and verdict (issue 27's latency
    goals when some memories are `cold`)."""
    loop = results["context_open_loop"]
    latency = COLD_GOALS if cold else GOALS
    goals = {
        "context_p50_ms": goal(loop["latency_ms"].get("p50"), latency["context_p50_ms"]),
        "context_p99_ms": goal(loop["latency_ms"].get("p99"), latency["context_p99_ms"]),
        "context_errors": goal(loop["errors"] + loop["unanswered_at_cutoff"], GOALS["context_errors"]),
    }
    if cold:
        goals["events_per_context_call"] = goal(loop["events_appended_per_context_call"], COLD_GOALS["events_per_context_call"])
    if "write_check" in results:
        check = results["write_check"]
        goals.update({
            "single_memories_per_minute": goal(results["writes_single"]["memories_per_minute"], GOALS["single_memories_per_minute"], at_most=False),
            "batch_events_per_second": goal(results["writes_batch"]["events_per_second"], GOALS["batch_events_per_second"], at_most=False),
            "batch_lost": goal(check["lost"], GOALS["batch_lost"]),
            "batch_duplicated": goal(check["duplicated"] + check["retried_batches_created"], GOALS["batch_duplicated"]),
        })
    if "http_overhead" in results:
        goals["http_over_direct_p50_ratio"] = goal(results["http_overhead"]["ratio_p50"], GOALS["http_over_direct_p50_ratio"])
    return goals


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 memories per user, 10 s runs, 5 s steps: a smoke test in a few minutes")
    parser.add_argument("--home", type=Path, default=None, help="keep the built home under this folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse a home built before under --home")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--memories-per-user", "--memories", type=int, default=None)
    parser.add_argument("--cold-share", type=float, default=0.0, help="the share of each user's memories, the oldest, the tiers put cold (e.g. 0.33)")
    parser.add_argument("--context-only", action="store_true", help="only the context open loop at --rate (no HTTP overhead, steps or writes)")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=None, help="the 100/s run (default 60, quick 10)")
    parser.add_argument("--step-rates", default="100,110,120,130,140,150,175,200,300,400,600")
    parser.add_argument("--step-seconds", type=float, default=None, help="default 20, quick 5")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the open-loop generator")
    parser.add_argument("--overhead-queries", type=int, default=None, help="default 300, quick 100")
    parser.add_argument("--write-clients", type=int, default=8)
    parser.add_argument("--write-seconds", type=float, default=None, help="single-memory writes (default 60, quick 10)")
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-seconds", type=float, default=None, help="batched writes (default 30, quick 10)")
    parser.add_argument("--mcp", choices=("auto", "on", "off"), default="auto", help="mount /mcp (auto: when the module imports)")
    parser.add_argument("--build-only", action="store_true", help="build (or find, with --reuse) the home under --home, print its figures and stop")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def run_config(args: argparse.Namespace) -> dict:
    quick = args.quick
    return {
        "quick": quick,
        "tenant": TENANT,
        "users": args.users,
        "memories_per_user": args.memories_per_user or (1_000 if quick else 10_000),
        "cold_share": args.cold_share,
        "context_only": args.context_only,
        "rate_per_second": args.rate,
        "seconds": args.seconds or (10.0 if quick else 60.0),
        "step_rates": [float(r) for r in args.step_rates.split(",")],
        "step_seconds": args.step_seconds or (5.0 if quick else 20.0),
        "connections": args.connections,
        "overhead_queries": args.overhead_queries or (100 if quick else 300),
        "write_clients": args.write_clients,
        "write_seconds": args.write_seconds or (10.0 if quick else 60.0),
        "batch_clients": args.batch_clients,
        "batch_size": args.batch_size,
        "batch_seconds": args.batch_seconds or (10.0 if quick else 30.0),
        "max_tokens": 1024,
        "latency_measured_from": "the scheduled send time (open loop; also reported from the actual send)",
        "load_generator": "separate process, asyncio (uvloop when installed), raw HTTP/1.1 keep-alive",
    }


def main() -> None:
    args = parse_args()
    if args.loadgen:
        loadgen_main()
        return
    config = run_config(args)
    info = machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hms-bench-serve-") as tmp:
        root = args.home.resolve() if args.home else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        base, built = base_home(root, config["users"], config["memories_per_user"], args.reuse, config["cold_share"])
        if args.build_only:
            print_json({"benchmark": "serve", "home": built, "path": str(base) if args.home else None})
            return
        bench = json.loads((base / "bench.json").read_text())
        queries, texts = bench["queries"], bench["texts"]
        home = root / "run"
        if home.exists():
            shutil.rmtree(home)
        shutil.copytree(base, home)
        (home / "bench.json").unlink()

        from hms_resources.serving.keys import create_key
        from hms_resources.store.event_store import EventStore

        store = EventStore(hms_home=str(home))
        key = create_key(store, TENANT, "admin", label="benchmarks/serve.py").secret  # the operator's too: it reads /metrics
        store.close()
        mcp = {"on": True, "off": False}.get(args.mcp)
        if mcp is None:
            mcp = mcp_importable()
        config["mcp_mounted"] = mcp
        port = free_port()
        server_log = root / "server.log"
        log(f"starting hms serve on {HOST}:{port} (mcp {'on' if mcp else 'off'}); its log: {server_log}")
        server = start_server(home, port, mcp, server_log, HMS_OPERATOR_TENANT=TENANT)
        results: dict = {}
        try:
            ready = wait_ready(server, port, server_log)
            log(f"ready: {json.dumps(ready)}")
            results["readiness"] = ready
            loaded_mb = round(rss_mb(server.pid), 1)
            base_spec = {"mode": "open_loop", "port": port, "key": key, "queries": queries, "connections": config["connections"]}
            results["warm_up"] = warm_up(port, key, queries)

            if not config["context_only"]:
                log(f"HTTP overhead: {config['overhead_queries']} queries, one at a time, against assemble in this process")
                results["http_overhead"] = overhead(home, port, key, queries, config["overhead_queries"])

            report = context_open_loop(config, base_spec, home, port, server.pid)
            results["context_open_loop"] = report
            if report["latency_ms"].get("p50") and "http_overhead" in results:
                direct_p50 = results["http_overhead"]["direct_assemble_ms"]["p50"]
                results["http_overhead"]["loaded_p50_ratio_at_rate"] = round(report["latency_ms"]["p50"] / direct_p50, 3)

            if not config["context_only"]:
                results["context_max_rate"] = step_rates(config, base_spec, server.pid)
                time.sleep(2.0)
                results.update(write_phases(config, root, home, port, key, queries, texts, server.pid))
            metrics = scrape(port, key)
            results["server"] = {
                "rss_mb_after_load": loaded_mb,
                "rss_mb_at_end": round(rss_mb(server.pid), 1),
                "events_appended_metric": metrics.get(("hms_events_appended_total", ()), None),
                "log": str(server_log) if args.home else None,
                "log_error_lines": sum(1 for line in server_log.read_text(errors="replace").splitlines() if "ERROR" in line or "Traceback" in line),
            }
        finally:
            stop_server(server)

    goals = goals_of(results, bool(config["cold_share"]))
    print_json(
        {
            "benchmark": "serve",
            "goals": goals,
            "all_goals_pass": all(g["pass"] for g in goals.values()),
            **results,
            "notes": NOTES,
            "home": built,
            "config": config,
            "machine": info,
            "seconds_total": round(time.perf_counter() - started, 1),
        }
    )


if __name__ == "__main__":
    main()
