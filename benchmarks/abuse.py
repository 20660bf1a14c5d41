"""The service under abuse (issue 28): can one tenant stall the others, are concurrent retries
duplicates, and is a forget total when `DELETE` answers? Through the served path only: real
`hms serve` processes (`python -m hms_jobs.cli serve`, no Dagster daemon) on fresh homes, keys made
with `create_key` for the tenants `a` (the abuser) and `b` (the bystander), clients over httpx.

`python -m benchmarks.abuse [--quick] [--only fairness|retries|forget|properties] [--no-postgres]`

1. Fairness (SQLite). Tenant b's user of 50 short memories asks `POST /v1/context` in an open loop
   (`--rate` a second for `--seconds`; latency from each request's scheduled send time, so a stalled
   server cannot hide queueing), first alone, then while tenant a runs each abuse pattern, and once
   more alone afterwards:
   - `queries_60kb`: 4 closed-loop streams of `deep` contexts whose query is 60 KB of words;
   - `stalled_connections`: 200 raw sockets, 100 that send half the request headers, 50 the headers
     and half the body without a key, 50 the same with tenant a's key; held open `--stall-seconds`,
     watched for the server closing them (when, and what it answered first);
   - `huge_unindexed_user`: tenant a writes `--huge-memories` memories of ~16.7 KB for one user in
     batch POSTs of up to 900 (halved on a 413, retried after a 429's `Retry-After`), then 4
     closed-loop streams of contexts for that user.
   The abusers ignore `Retry-After` (they are abusers); their statuses, rates and latencies are
   reported. Every figure carries the CPU cores the server, this process and every other process
   used meanwhile: the machine is shared. Goal: tenant b's p99 <= 50 ms under each pattern, with no
   error and nothing unanswered.
2. Retries (SQLite and PostgreSQL). `--rounds` rounds of 4 concurrent identical `POST /v1/memories`
   with one `Idempotency-Key` (new per round); statuses counted. Goal: 0 conflicts (409), exactly one
   201 per round, one memory id per round. Also one batch that holds the same item twice.
3. Forget (SQLite and PostgreSQL). One memory with a unique marker in its content, an update's
   content, its metadata, context, tags and category; a context call (its query carries a marker
   too) that returns it; `DELETE`; then at once every file under the home is searched for each
   marker's bytes (and, on PostgreSQL, every text, varchar and JSON column of the database, as SQL
   sees it: dead tuples awaiting VACUUM are not visible); again once the service's background
   writers are idle, and after it shuts down; `verify_forgotten` reports the places checked.
   Goal: 0 bytes of any marker of the memory's own fields right after the answer. Compressed
   files (Parquet pages) would hide a marker from the byte search; `verify_forgotten` covers them.
4. The property run: `benchmarks/probe_inputs.py` (preferred) or `tests/serving/test_properties.py`
   when present, else `null`.

`--quick` (150 huge memories, 5 s phases, 25 rounds) is a smoke run of under two minutes. Prints one
JSON object; progress goes to stderr."""

from __future__ import annotations

import argparse
import ast
import asyncio
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from benchmarks.common import (
    HOST,
    REPO_ROOT,
    conversation_texts,
    distribution,
    free_port,
    print_json,
    start_server,
    stderr_log,
    stop_server,
    temporary_postgres_database,
    wait_ready,
)
from benchmarks.serve import (
    cpu_seconds,
    generator_questions,
    goal,
    machine,
    machine_busy_seconds,
)

ABUSER, BYSTANDER = "a", "b"
SMALL_USER, CHATTY_USER, HUGE_USER, RETRY_USER, FORGET_USER = "small", "chatty", "huge", "retrier", "forgetter"
P99_GOAL_MS = 50.0
HUGE_CONTENT_CHARS = 16_700
HUGE_BATCH = 900
"""900 x 16.7 KB stays under the default 16 MiB body limit."""
LONG_QUERY_BYTES = 60 * 1024
STREAMS = 4
STALLS = {"half_headers": 100, "half_body_no_key": 50, "half_body_with_key": 50}
PATTERNS = ("queries_60kb", "stalled_connections", "huge_unindexed_user")
WORDS = ("garden", "tomato", "sister", "holiday", "recipe", "bicycle", "meeting", "invoice", "piano", "mountain", "coffee",
         "doctor", "train", "birthday", "budget", "kitchen", "laptop", "weekend", "river", "novel", "concert", "passport")
FORGOTTEN_FIELDS = ("content", "updated_content", "metadata", "context", "tag", "category")
"""The forgotten memory's own fields; the context query's marker is counted apart (`query`)."""

log = stderr_log("abuse-bench")


# Served homes ----------------------------------------------------------------------------------


@dataclass
class Served:
    """One `hms serve` on a fresh home (SQLite, or the PostgreSQL database `database_url`)."""

    home: Path
    port: int
    process: subprocess.Popen
    keys: dict[str, str]
    database_url: str | None = None
    readiness: dict = field(default_factory=dict)
    stopped: dict = field(default_factory=dict)
    """How long SIGTERM took to stop it, and its exit code (-9: killed after 30 s)."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self, tenant: str, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[tenant]}"}, timeout=600, **options)

    def async_client(self, tenant: str, connections: int = 64) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[tenant]}"},
                                 limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections), timeout=600)

    def store(self) -> Any:
        """The service's store opened in this process (it only reads, or makes keys before the start)."""
        from hms_resources.store.event_store import EventStore

        return EventStore(hms_home=str(self.home), database_url=self.database_url or "")


@contextmanager
def served(root: Path, name: str, database_url: str | None = None) -> Iterator[Served]:
    """A fresh home under `root`, write keys for tenants a and b, and `hms serve` over it with its defaults."""
    from hms_resources.serving.keys import create_key
    from hms_resources.store.event_store import EventStore

    home = root / name
    home.mkdir(parents=True)
    with closing(EventStore(hms_home=str(home), database_url=database_url or "")) as store:
        keys = {t: create_key(store, t, "write", label="benchmarks/abuse.py").secret for t in (ABUSER, BYSTANDER)}
    port, server_log = free_port(), root / f"{name}.log"
    settings = {"HMS_DATABASE_URL": database_url} if database_url else {}
    log(f"starting hms serve ({name}) on {HOST}:{port}; its log: {server_log}")
    process = start_server(home, port, False, server_log, **settings)
    service = Served(home, port, process, keys, database_url)
    try:
        service.readiness = wait_ready(process, port, server_log)
        yield service
    finally:
        started = time.perf_counter()
        stop_server(process)
        service.stopped = {"seconds": round(time.perf_counter() - started, 1), "exit_code": process.returncode}
        log(f"hms serve ({name}) stopped in {service.stopped['seconds']} s, exit code {process.returncode}")


def write_memories(client: httpx.Client, user: str, contents: list[str], batch: int = HUGE_BATCH) -> dict:
    """`contents` as one user's memories in batch POSTs: a 413 halves the batch, a 429 waits its
    `Retry-After`; any other refusal stops. Returns what was stored and how each batch was answered."""
    stored, statuses, started, at = 0, Counter(), time.perf_counter(), 0
    while at < len(contents) and statuses[429] < 100:
        chunk = contents[at : at + batch]
        response = client.post("/v1/memories", json={"memories": [{"user_id": user, "content": c} for c in chunk]})
        statuses[response.status_code] += 1
        if response.status_code == 413 and batch > 1:
            batch //= 2
            continue
        if response.status_code == 429:
            time.sleep(min(float(response.headers.get("retry-after") or 1), 30))
            continue
        if response.status_code != 200:
            log(f"  writing {user}'s memories stopped: {response.status_code} {response.text[:200]}")
            break
        stored += response.json()["created"]
        at += len(chunk)
    return {"asked": len(contents), "stored": stored, "batch_statuses": dict(statuses), "last_batch_size": batch,
            "seconds": round(time.perf_counter() - started, 1)}


def huge_contents(count: int, seed: int = 7) -> list[str]:
    """`count` distinct texts of ~16.7 KB: windows of one long random text of everyday words."""
    rng = random.Random(seed)
    text = " ".join(rng.choices(WORDS, k=200_000))
    return [f"Note {n}: " + text[(start := rng.randrange(len(text) - HUGE_CONTENT_CHARS)) : start + HUGE_CONTENT_CHARS]
            for n in range(count)]


# CPU of the machine over a phase ---------------------------------------------------------------


class CpuWatch:
    """CPU cores the server, this process and everything else used from its making to `report`."""

    def __init__(self, server_pid: int):
        self.pid = server_pid
        self.wall, self.busy, self.server, self.own = time.perf_counter(), machine_busy_seconds(), cpu_seconds(server_pid), _own_cpu()

    def report(self) -> dict:
        wall = time.perf_counter() - self.wall
        server, own, busy = cpu_seconds(self.pid) - self.server, _own_cpu() - self.own, machine_busy_seconds() - self.busy
        return {"server": round(server / wall, 2), "benchmark_process": round(own / wall, 2),
                "other_processes": round(max(busy - server - own, 0.0) / wall, 2), "seconds": round(wall, 1)}


def server_idle(pid: int, limit: float = 600.0, window: float = 1.0, below: float = 0.15) -> float:
    """Seconds until the server used under `below` cores in two windows in a row: what it indexes in
    the background after writes is done before a phase's clock starts."""
    started, quiet = time.perf_counter(), 0
    while quiet < 2 and time.perf_counter() - started < limit:
        before = cpu_seconds(pid)
        time.sleep(window)
        quiet = quiet + 1 if cpu_seconds(pid) - before < below * window else 0
    return round(time.perf_counter() - started, 1)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# 1. Fairness -----------------------------------------------------------------------------------


async def bystander_open_loop(client: httpx.AsyncClient, questions: list[str], rate: float, seconds: float, timeout: float) -> dict:
    """Tenant b's small contexts at `rate` a second for `seconds`, each timed from its scheduled send."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(n: int) -> tuple[Any, float, float]:
        at = start + n / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        lateness = loop.time() - at
        body = {"user_id": SMALL_USER, "query": questions[n % len(questions)], "max_tokens": 512}
        try:
            response = await client.post("/v1/context", json=body, timeout=timeout)
            status: Any = response.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        return status, (loop.time() - at) * 1e3, lateness * 1e3

    rows = await asyncio.gather(*(one(n) for n in range(int(rate * seconds))))
    answered = [ms for status, ms, _ in rows if status == 200]
    statuses = Counter(str(status) for status, _, _ in rows)
    report = {"latency_ms": distribution(answered), "statuses": dict(statuses), "sent": len(rows),
              "errors": len(rows) - len(answered), "client_schedule_lateness_ms": distribution([lag for _, _, lag in rows])}
    report["latency_ms_including_refused"] = distribution([ms for _, ms, _ in rows])
    report["latency_from_send_ms"] = distribution([ms - lag for status, ms, lag in rows if status == 200])
    return report


async def abuse_streams(client: httpx.AsyncClient, body: dict, stop: asyncio.Event, timeout: float) -> dict:
    """`STREAMS` closed loops of `POST /v1/context` with `body` until `stop`; each sends its next as
    soon as the last is answered."""
    rows: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    async def stream() -> None:
        while not stop.is_set():
            sent = loop.time()
            try:
                status = str((await client.post("/v1/context", json=body, timeout=timeout)).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            rows.append((status, (loop.time() - sent) * 1e3))
            if rows[-1][1] > 5_000:
                log(f"  tenant a: a call answered {status} after {rows[-1][1] / 1e3:.1f} s")

    started = loop.time()
    await asyncio.gather(*(stream() for _ in range(STREAMS)))
    wall = loop.time() - started
    return {"requests": len(rows), "per_second": round(len(rows) / wall, 2), "statuses": dict(Counter(s for s, _ in rows)),
            "latency_ms": distribution([ms for _, ms in rows]), "seconds_to_drain_after_stop": None, "wall_seconds": round(wall, 1)}


async def stalled_connections(port: int, key: str, hold: float) -> dict:
    """200 sockets that stop mid-request, held `hold` seconds; when and how the server closes each."""
    loop = asyncio.get_running_loop()
    body = orjson.dumps({"user_id": CHATTY_USER, "query": "what did I plan for the weekend " * 30})
    head = f"POST /v1/context HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    partial = {
        "half_headers": head[: len(head) // 2].encode(),
        "half_body_no_key": (head + "\r\n").encode() + body[: len(body) // 2],
        "half_body_with_key": (head + f"Authorization: Bearer {key}\r\n\r\n").encode() + body[: len(body) // 2],
    }
    rows: list[tuple[str, float | None, str | None]] = []
    writers: list[asyncio.StreamWriter] = []

    def remaining() -> float:
        return max(hold - (loop.time() - started), 0.1)

    async def stall(kind: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError as exc:
            rows.append((kind, None, f"connect failed: {type(exc).__name__}"))
            return
        writers.append(writer)
        writer.write(partial[kind])
        await writer.drain()
        opened = loop.time()
        try:
            first = await asyncio.wait_for(reader.read(64), timeout=remaining())
        except TimeoutError:
            rows.append((kind, None, "left open, nothing answered"))
            return
        except OSError:
            first = b""
        answered = f"answered {first[9:12].decode(errors='replace')}" if first.startswith(b"HTTP/") else "closed without an answer"
        if first and await _until_closed(reader, remaining()) is None:
            rows.append((kind, None, f"{answered}, left open"))
            return
        rows.append((kind, loop.time() - opened, answered))

    started = loop.time()
    await asyncio.gather(*(stall(kind) for kind, count in STALLS.items() for _ in range(count)))
    for writer in writers:
        writer.close()
    report = {}
    for kind, count in STALLS.items():
        mine = [r for r in rows if r[0] == kind]
        closed = [r[1] for r in mine if r[1] is not None]
        report[kind] = {"opened": count, "closed_by_server": len(closed),
                        "still_open_at_end": sum("left open" in r[2] for r in mine),
                        "closed_after_s": distribution(closed), "how": dict(Counter(r[2] for r in mine if r[2]))}
    report["held_seconds"] = round(hold, 1)
    return report


async def _until_closed(reader: asyncio.StreamReader, limit: float) -> bytes | None:
    """What the server sends until it closes the connection; None if it is still open after `limit`."""
    try:
        return await asyncio.wait_for(reader.read(), timeout=limit)
    except TimeoutError:
        return None
    except OSError:
        return b""


async def pattern_phase(service: Served, pattern: str | None, config: dict, questions: list[str]) -> dict:
    """Tenant b's open loop, alone (`pattern` None) or while tenant a runs `pattern`."""
    stop = asyncio.Event()
    abuser = None
    async with service.async_client(ABUSER) as a_client, service.async_client(BYSTANDER) as b_client:
        for question in questions[:4]:
            await b_client.post("/v1/context", json={"user_id": SMALL_USER, "query": question})
        watch = CpuWatch(service.process.pid)
        if pattern == "stalled_connections":
            hold = max(config["seconds"] + 2.0, config["stall_seconds"])
            abuser = asyncio.ensure_future(stalled_connections(service.port, service.keys[ABUSER], hold))
        elif pattern is not None:
            body = ({"user_id": CHATTY_USER, "query": long_query(), "deep": True} if pattern == "queries_60kb"
                    else {"user_id": HUGE_USER, "query": "what did I write about the garden and the piano?"})
            abuser = asyncio.ensure_future(abuse_streams(a_client, body, stop, config["abuse_timeout"]))
        if abuser is not None:
            await asyncio.sleep(config["warmup"])
        bystander = await bystander_open_loop(b_client, questions, config["rate"], config["seconds"], config["timeout"])
        stop.set()
        log(f"  tenant b: {_brief(bystander)}" + ("; tenant a's calls in flight draining" if abuser is not None else ""))
        stopped = time.perf_counter()
        found = {"tenant_b": bystander, "cpu_cores": watch.report()}
        if abuser is not None:
            found["tenant_a"] = await abuser
            if pattern != "stalled_connections":
                found["tenant_a"]["seconds_to_drain_after_stop"] = round(time.perf_counter() - stopped, 1)
    return found


def long_query() -> str:
    """60 KB of everyday words: a query far over any sensible bound, that is still valid text."""
    words = " ".join(WORDS[n % len(WORDS)] for n in range(LONG_QUERY_BYTES // 5))
    return words[:LONG_QUERY_BYTES]


def fairness(root: Path, config: dict) -> dict:
    """Part 1 on one server: each phase starts once the server is idle, so one phase's background
    work (indexing what was written) is not billed to the next; the huge user is written last."""
    questions = generator_questions(11, sessions=8)[:40] or ["What did I say about my plans?"]
    phases: dict[str, Any] = {}
    with served(root, "fairness") as service:
        with service.client(BYSTANDER) as b, service.client(ABUSER) as a:
            setup = {"tenant_b_small": write_memories(b, SMALL_USER, [r["text"] for r in conversation_texts(50, seed=3)]),
                     "tenant_a_chatty": write_memories(a, CHATTY_USER, [r["text"] for r in conversation_texts(50, seed=4)])}
        for pattern in (None, *config["patterns"], "alone_after_abuse"):
            name = pattern or "alone"
            settled = server_idle(service.process.pid, config["idle_limit"])
            log(f"phase {name}: the server idle after {settled} s; tenant b at {config['rate']:g}/s for {config['seconds']:g} s")
            if pattern == "huge_unindexed_user":
                count = config["huge_memories"]
                log(f"  tenant a writes {count} memories of ~{HUGE_CONTENT_CHARS / 1000:.1f} KB for one user")
                with service.client(ABUSER) as a:
                    setup["tenant_a_huge"] = write_memories(a, HUGE_USER, huge_contents(count))
                log(f"  stored {setup['tenant_a_huge']['stored']} in {setup['tenant_a_huge']['seconds']} s")
            abuse = pattern if pattern in PATTERNS else None
            phases[name] = {"server_idle_after_s": settled, **asyncio.run(pattern_phase(service, abuse, config, questions))}
    alone = phases["alone"]["tenant_b"]["latency_ms"].get("p99")
    for name, phase in phases.items():
        p99 = phase["tenant_b"]["latency_ms"].get("p99")
        phase["tenant_b"]["p99_over_alone"] = round(p99 / alone, 2) if p99 and alone else None
    return {"setup": setup, "phases": phases, "server_stop": service.stopped}


def _brief(report: dict) -> str:
    latency = report["latency_ms"]
    return f"p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms, statuses {report['statuses']}"


# 2. Retries ------------------------------------------------------------------------------------


async def identical_retries(service: Served, rounds: int) -> dict:
    """`rounds` x 4 concurrent identical POSTs sharing one Idempotency-Key per round."""
    statuses: Counter = Counter()
    one_created = one_memory = 0
    examples: list[str] = []
    async with service.async_client(ABUSER, connections=STREAMS) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in range(STREAMS)))
        for n in range(rounds):
            key = f"retry-{uuid.uuid4().hex}"
            body = {"user_id": RETRY_USER, "content": f"Round {n}: I moved my dentist appointment to Thursday."}
            answers = await asyncio.gather(*(client.post("/v1/memories", json=body, headers={"Idempotency-Key": key})
                                             for _ in range(STREAMS)), return_exceptions=True)
            codes = [a.status_code if isinstance(a, httpx.Response) else type(a).__name__ for a in answers]
            statuses.update(str(c) for c in codes)
            one_created += codes.count(201) == 1
            ids = {a.json().get("memory_id") for a in answers if isinstance(a, httpx.Response) and a.status_code in (200, 201)}
            one_memory += len(ids) == 1
            if any(c not in (200, 201) for c in codes) and len(examples) < 3:
                examples += [a.text[:300] for a in answers if isinstance(a, httpx.Response) and a.status_code not in (200, 201)][:1]
        repeat = {"user_id": RETRY_USER, "content": "The same note twice in one batch.", "event_id": f"twice-{uuid.uuid4().hex}"}
        batch = await client.post("/v1/memories", json={"memories": [repeat, repeat]})
    batch_items = [r.get("status") for r in batch.json().get("results", [])] if batch.status_code == 200 else []
    return {"tries": rounds * STREAMS, "rounds": rounds, "statuses": dict(statuses), "conflicts_409": statuses.get("409", 0),
            "rounds_with_exactly_one_created": one_created, "rounds_with_one_memory_id": one_memory, "refusal_examples": examples,
            "batch_with_one_item_twice": {"status": batch.status_code, "items": batch_items}}


# 3. Forget -------------------------------------------------------------------------------------


def forget_probe(service: Served) -> dict:
    """Write, update and read one marked memory, `DELETE` it, then look for its markers everywhere."""
    tag = uuid.uuid4().hex[:12]
    markers = {name: f"zq{tag}{name.replace('_', '')}" for name in (*FORGOTTEN_FIELDS, "query")}
    found: dict[str, Any] = {"markers": markers}
    with service.client(ABUSER) as client:
        write_memories(client, FORGET_USER, ["I water the tomatoes every morning.", "My sister visits in June.", "I keep my bike in the shed."])
        created = client.post("/v1/memories", json={
            "user_id": FORGET_USER, "content": f"My locker code is {markers['content']}, keep it secret.",
            "metadata": {"note": markers["metadata"]}, "context": {"custom": {"where": markers["context"]}},
            "tags": [markers["tag"]], "category": markers["category"]})
        memory_id = created.json().get("memory_id")
        found.update(write_status=created.status_code, memory_id=memory_id)
        updated = client.patch(f"/v1/memories/{memory_id}", params={"user_id": FORGET_USER},
                               json={"content": f"My locker code changed to {markers['updated_content']}."})
        context = client.post("/v1/context", json={"user_id": FORGET_USER, "query": f"What is my locker code {markers['query']}?"})
        items = context.json().get("items", []) if context.status_code == 200 else []
        found.update(update_status=updated.status_code, context_status=context.status_code,
                     context_returned_it=any(memory_id in (i.get("memory_id"), *(i.get("source_ids") or ())) for i in items),
                     context_items=len(items))
        started = time.perf_counter()
        deleted = client.delete(f"/v1/memories/{memory_id}", params={"user_id": FORGET_USER})
        found.update(delete_status=deleted.status_code, delete_ms=round((time.perf_counter() - started) * 1e3, 1))
        found["right_after_delete"] = marker_search(service, markers)
        history = client.get(f"/v1/memories/{memory_id}/history", params={"user_id": FORGET_USER})
        found["history_after_delete"] = {"status": history.status_code,
                                         "markers_in_body": sorted(n for n, m in markers.items() if m in history.text)}
    found["verify_forgotten"] = verified(service, f"{ABUSER}/{FORGET_USER}", memory_id)
    time.sleep(3.0)
    found["after_3s_idle"] = marker_search(service, markers)
    return found


def marker_search(service: Served, markers: dict[str, str]) -> dict:
    """Each marker's occurrences in the bytes of every file under the home (and the database's rows)."""
    files = [p for p in sorted(service.home.rglob("*")) if p.is_file()]
    per_marker: dict[str, dict] = {}
    for name, marker in markers.items():
        needle = marker.encode()
        hits = {str(p.relative_to(service.home)): n for p in files if (n := _count(p, needle))}
        per_marker[name] = {"occurrences": sum(hits.values()), "bytes": sum(hits.values()) * len(needle), "files": hits}
    report = {"files_searched": len(files), "bytes_searched": sum(p.stat().st_size for p in files if p.exists()),
              "forgotten_fields_bytes_in_files": sum(per_marker[f]["bytes"] for f in FORGOTTEN_FIELDS), "by_marker": per_marker}
    if service.database_url:
        rows = database_rows(service.database_url, markers)
        report["database_rows"] = rows
        report["forgotten_fields_rows_in_database"] = sum(sum(rows.get(f, {}).values()) for f in FORGOTTEN_FIELDS)
    return report


def _count(path: Path, needle: bytes) -> int:
    try:
        return path.read_bytes().count(needle)
    except OSError:
        return 0


def database_rows(database_url: str, markers: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per marker, the rows of each text, varchar or JSON column of the database that hold it."""
    engine = sa.create_engine(database_url)
    found: dict[str, dict[str, int]] = {}
    try:
        with engine.connect() as conn:
            columns = conn.execute(sa.text(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')")).all()
            for schema, table, column in columns:
                name = f"{schema}.{table}.{column}"
                quoted = f'"{schema}"."{table}"'
                for marker_name, marker in markers.items():
                    count = conn.execute(sa.text(f'SELECT count(*) FROM {quoted} WHERE "{column}"::text LIKE :pattern'),
                                         {"pattern": f"%{marker}%"}).scalar_one()
                    if count:
                        found.setdefault(marker_name, {})[name] = count
    finally:
        engine.dispose()
    return found


def verified(service: Served, user_id: str, memory_id: str) -> dict:
    """`verify_forgotten` (what `hms forget --verify` prints) on the service's store, from this process."""
    from hms_resources.privacy.forget import verify_forgotten

    with closing(service.store()) as store:
        checks = verify_forgotten(store, user_id, memory_id)
    return {"clean": [c.place for c in checks if c.clean], "unclean": [{"place": c.place, "detail": c.detail} for c in checks if not c.clean]}


def retries_and_forget(root: Path, config: dict, parts: set[str]) -> dict:
    """Parts 2 and 3 on SQLite, then on a fresh PostgreSQL database (one server per backend)."""
    found: dict[str, dict] = {"retries": {}, "forget": {}}
    backends = ["sqlite", "postgresql"] if config["postgres"] else ["sqlite"]
    for backend in backends:
        with _database(backend) as url:
            if backend == "postgresql" and url is None:
                for part in ("retries", "forget"):
                    found[part][backend] = {"skipped": "no PostgreSQL server answered"}
                continue
            with served(root, f"{backend}-writes", url) as service:
                if "retries" in parts:
                    log(f"retries on {backend}: {config['rounds']} rounds x {STREAMS} identical POSTs")
                    found["retries"][backend] = asyncio.run(identical_retries(service, config["rounds"]))
                    log(f"  statuses {found['retries'][backend]['statuses']}")
                if "forget" in parts:
                    log(f"forget on {backend}")
                    found["forget"][backend] = forget_probe(service)
                    forget = found["forget"][backend]
                    log(f"  DELETE {forget['delete_status']}; bytes of its fields under the home right after: "
                        f"{forget['right_after_delete']['forgotten_fields_bytes_in_files']}")
            if "forget" in parts:
                found["forget"][backend]["after_shutdown"] = marker_search(service, found["forget"][backend]["markers"])
                found["forget"][backend]["server_stop"] = service.stopped
    return {part: value for part, value in found.items() if part in parts}


@contextmanager
def _database(backend: str) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    with temporary_postgres_database() as url:
        yield url


# 4. The property run ---------------------------------------------------------------------------


def property_run(quick: bool) -> dict | None:
    """The property-based probe of every route, run by whichever instrument the repository has."""
    if (REPO_ROOT / "benchmarks" / "probe_inputs.py").exists():
        command = [sys.executable, "-m", "benchmarks.probe_inputs", *(["--quick"] if quick else [])]
        done = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode == 0:
            return {"by": "benchmarks/probe_inputs.py", **orjson.loads(done.stdout)}
        return {"by": "benchmarks/probe_inputs.py", "failed": done.returncode, "stderr_tail": done.stderr[-1000:]}
    test = REPO_ROOT / "tests" / "serving" / "test_properties.py"
    if test.exists():
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(test)],
                              check=False, cwd=REPO_ROOT, capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        tallies = [ast.literal_eval(m.group(1)) for line in lines if (m := re.search(r"property runs[^{]*(\{.*\})", line))]
        tally = tallies[-1] if tallies else {}
        return {"by": "tests/serving/test_properties.py", "passed": done.returncode == 0, "summary": lines[-1] if lines else "",
                "requests_tried": tally.get("tried"), "five_xx": tally.get("server_errors", 0) if tally else None, "tally": tally,
                "seconds": round(time.perf_counter() - started, 1)}
    return None


# Goals and run ---------------------------------------------------------------------------------


def goals_of(results: dict) -> dict:
    goals: dict[str, dict] = {}
    for name, phase in results.get("fairness", {}).get("phases", {}).items():
        if name not in PATTERNS:
            continue
        b = phase["tenant_b"]
        goals[f"tenant_b_p99_ms_{name}"] = {**goal(b["latency_ms"].get("p99"), P99_GOAL_MS), "errors": b["errors"]}
        goals[f"tenant_b_p99_ms_{name}"]["pass"] &= b["errors"] == 0
    for backend, retry in results.get("retries", {}).items():
        if "skipped" not in retry:
            goals[f"retry_conflicts_{backend}"] = goal(retry["conflicts_409"], 0)
            goals[f"retry_rounds_not_one_created_{backend}"] = goal(retry["rounds"] - retry["rounds_with_exactly_one_created"], 0)
    for backend, forget in results.get("forget", {}).items():
        if "skipped" not in forget:
            after = forget["right_after_delete"]
            goals[f"forget_bytes_under_home_{backend}"] = goal(after["forgotten_fields_bytes_in_files"], 0)
            goals[f"forget_query_text_bytes_under_home_{backend}"] = goal(after["by_marker"]["query"]["bytes"], 0)
            if "database_rows" in after:
                goals[f"forget_rows_in_database_{backend}"] = goal(after["forgotten_fields_rows_in_database"], 0)
            goals[f"forget_verify_unclean_places_{backend}"] = goal(len(forget["verify_forgotten"]["unclean"]), 0)
    run = results.get("property_run")
    if isinstance(run, dict) and "five_xx" in run:
        goals["property_run_5xx"] = {**goal(run["five_xx"], 0), "requests_tried": run.get("requests_tried")}
    return goals


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of under two minutes")
    parser.add_argument("--only", choices=("fairness", "retries", "forget", "properties"), action="append",
                        help="run only this part (repeatable)")
    parser.add_argument("--patterns", default=",".join(PATTERNS), help=f"abuse patterns, comma-separated, of {', '.join(PATTERNS)}")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=True, help="parts 2 and 3 on PostgreSQL too")
    parser.add_argument("--huge-memories", type=int, default=None, help="tenant a's huge user's memories (default 6,000, quick 150)")
    parser.add_argument("--rate", type=float, default=10.0, help="tenant b's contexts a second")
    parser.add_argument("--seconds", type=float, default=None, help="tenant b's measurement per phase (default 30, quick 5)")
    parser.add_argument("--stall-seconds", type=float, default=None, help="how long stalled sockets are held (default 60, quick 15: longer than the server's read timeout)")
    parser.add_argument("--rounds", type=int, default=None, help="retry rounds of 4 (default 250, quick 25)")
    parser.add_argument("--home", type=Path, default=None, help="keep the homes and server logs under this folder")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # A SIGTERM (a `timeout` around the run) unwinds, so the servers are stopped and the homes removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parts = set(args.only or ("fairness", "retries", "forget", "properties"))
    patterns = [p for p in args.patterns.split(",") if p]
    if unknown := set(patterns) - set(PATTERNS):
        raise SystemExit(f"--patterns: unknown {', '.join(sorted(unknown))}; known: {', '.join(PATTERNS)}")
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    config = {"quick": args.quick, "parts": sorted(parts), "patterns": patterns, "rate": args.rate, "seconds": seconds,
              "warmup": 2.0, "idle_limit": 15.0 if args.quick else 600.0, "timeout": seconds + 120.0, "abuse_timeout": 600.0,
              "stall_seconds": args.stall_seconds or (15.0 if args.quick else 60.0),
              "huge_memories": args.huge_memories or (150 if args.quick else 6_000), "rounds": args.rounds or (25 if args.quick else 250),
              "postgres": args.postgres, "abuse_streams": STREAMS, "stalled_sockets": STALLS, "daemon": "none: hms serve alone"}
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hms-bench-abuse-") as tmp:
        root = (args.home.resolve() if args.home else Path(tmp)) / time.strftime("run-%Y%m%d-%H%M%S")
        root.mkdir(parents=True)
        if "fairness" in parts:
            results["fairness"] = fairness(root, config)
        if parts & {"retries", "forget"}:
            results.update(retries_and_forget(root, config, parts))
    if "properties" in parts and args.quick and not args.only:
        results["property_run"] = None
        results["property_run_note"] = "left out of --quick (it takes minutes): --only properties runs it"
    elif "properties" in parts:
        results["property_run"] = property_run(args.quick)
        if results["property_run"] is None:
            results["property_run_note"] = "TODO: no benchmarks/probe_inputs.py nor tests/serving/test_properties.py yet"
    goals = goals_of(results)
    print_json({"benchmark": "abuse", "goals": goals, "all_goals_pass": all(g["pass"] for g in goals.values()), **results,
                "config": config, "machine": machine(), "seconds_total": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
