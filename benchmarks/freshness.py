"""Write-to-findable with no daemon, and the events a context call appends, against `hms serve` alone
(no Dagster daemon, no `hms run` between writes): what an application meets right after it stores a fact.

The home: 2 users of one tenant with 1,000 conversation turns each from the shipped generator
(`hms_resources.datasets.conversations`, as `benchmarks.context` builds them), embedded with the real
model and materialized through the real assets. Then, one at a time, a new fact is stored with
`POST /v1/memories` ("My sister's name is Lena.") and `POST /v1/context` is asked a paraphrase of it in
other words ("What is my sibling called?") every 50 ms until the new memory ranks first (the highest
scored item) or 5 s pass. Each user gets each fact template once, so no older fact answers the same
question. Measured from the moment the write was sent:
- until the memory is anywhere in the context, in the top 3, and first: p50 / p99 over the writes
  that got there, and the share that never did within the limit;
- the events the store gained per context call over a run of calls, counted from the store once the
  service's background writers are idle (and again after the service stopped, for what it flushed
  when it shut down), by event type.

Then, unless `--no-control`, the service is stopped, the assets are materialized again (what the
daemon would do next) and each paraphrase is asked of the context resource in this process: the share
ranked first once indexed says how much of a miss is freshness and how much is the ranking, and the
share whose served rank while fresh equals its rank once indexed is issue 27's "ranked the same before
and after the next materialization".

`--quick` (300 turns per user, 12 writes, 50 calls) takes a minute or two. Prints one JSON object.
Goals (issue 27): write-to-first p99 <= 1 s, none unfound; <= 1 event appended per context call."""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path

import orjson

from benchmarks.common import (
    HOST,
    conversation_texts,
    distribution,
    free_port,
    hot_and_warm,
    last_sequence,
    print_json,
    seconds_fields,
    settled_sequence,
    start_server,
    stderr_log,
    stop_server,
    wait_ready,
)

TENANT = "bench"
HOME_VERSION = 1
GOALS = {"write_to_first_p99_ms": 1000.0, "never_first_share": 0.0, "events_per_context_call": 1.0}

FACTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("My sister's name is {}.", "What is my sibling called?", ("Lena", "Mara", "Ingrid", "Solveig")),
    ("I am allergic to {}.", "Which food makes me ill?", ("shellfish", "peanuts", "sesame", "kiwis")),
    ("I drive a {} hatchback.", "What kind of vehicle do I own?", ("red", "silver", "green", "blue")),
    ("My dog is called {}.", "What's the name of my puppy?", ("Biscuit", "Pepper", "Rolo", "Maple")),
    ("I work as a {} at the hospital.", "What is my profession?", ("nurse", "radiographer", "pharmacist", "porter")),
    ("I was born in {}.", "Where is my hometown?", ("Tromsø", "Valparaíso", "Leeds", "Kraków")),
    ("My favourite band is {}.", "Which musicians do I like best?", ("Radiohead", "ABBA", "Khruangbin", "Wilco")),
    ("I moved to an apartment on {} Street last week.", "Where do I live now?", ("Mercer", "Elm", "Harbor", "Quince")),
    ("My daughter turns {} in June.", "How old will my kid be on her birthday?", ("seven", "nine", "twelve", "five")),
    ("I play {} every Sunday morning.", "What sport do I do at the weekend?", ("badminton", "squash", "hockey", "volleyball")),
    ("My husband is a {}.", "What does my spouse do for a living?", ("carpenter", "pilot", "chef", "lawyer")),
    ("I'm learning to speak {}.", "Which foreign tongue am I studying?", ("Portuguese", "Japanese", "Swahili", "Greek")),
    ("My flight to {} leaves on Thursday.", "When do I travel by plane?", ("Lisbon", "Osaka", "Nairobi", "Denver")),
    ("I can't stand the taste of {}.", "Which dish do I dislike?", ("olives", "liquorice", "coriander", "anchovies")),
    ("My best friend {} lives in Toronto.", "Who is my closest pal?", ("Priya", "Tomasz", "Aiko", "Dario")),
    ("I graduated from {} in 2015.", "Where did I go to college?", ("McGill", "Edinburgh", "Rice", "Uppsala")),
    ("I take {} every morning for my thyroid.", "What medication am I on?", ("levothyroxine", "liothyronine", "selenium", "iodine")),
    ("I'm saving up to buy a {}.", "What purchase am I putting money aside for?", ("kayak", "piano", "motorbike", "telescope")),
    ("My grandmother taught me to bake {}.", "Which recipe did my granny show me?", ("baklava", "brioche", "strudel", "scones")),
    ("I go running along the {} every evening.", "Where do I jog?", ("canal", "riverbank", "seafront", "ridge")),
    ("My son's teacher is Mr. {}.", "Who teaches my boy?", ("Okafor", "Lindqvist", "Moreau", "Haddad")),
    ("I'm terrified of {}.", "What frightens me?", ("spiders", "heights", "thunderstorms", "clowns")),
    ("My rent went up to {} dollars a month.", "How much do I pay for housing?", ("1,450", "2,100", "980", "1,775")),
    ("I stopped eating meat in {}.", "Since when am I vegetarian?", ("2019", "2012", "2021", "2016")),
    ("My phone is an old {}.", "Which mobile do I use?", ("Pixel 4", "iPhone 8", "Nokia 3310", "Galaxy S9")),
)
"""(fact, paraphrase, values): the paraphrase asks for the fact in other words and never names its value."""

log = stderr_log("freshness-bench")


# The home --------------------------------------------------------------------------------------


def build_base(home: Path, users: int, per_user: int) -> dict:
    """`users` x `per_user` conversation turns, encoded by the real model, through the real assets."""
    from hms_jobs.homes import build_home
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.store.event_store import EventStore

    started = time.perf_counter()
    home.mkdir(parents=True)
    memories = [{**r, "user_id": f"{TENANT}/u{u}"} for u in range(users) for r in conversation_texts(per_user, seed=41 + u)]
    with closing(EventStore(hms_home=str(home))) as store:
        seconds = build_home(store, Embedder(), memories, tier_config=hot_and_warm(per_user + len(FACTS)), log=log)
    built = {"version": HOME_VERSION, "users": users, "memories_per_user": per_user, "vectors": "the embedder's model",
             "build_seconds": round(time.perf_counter() - started, 1), **seconds_fields(seconds)}
    (home / "bench.json").write_text(json.dumps(built))
    return built


def base_home(root: Path, users: int, per_user: int, reuse: bool) -> tuple[Path, dict]:
    base = root / f"base-{users}x{per_user}"
    marker = base / "bench.json"
    if reuse and marker.exists():
        found = json.loads(marker.read_text())
        if found.get("version") == HOME_VERSION:
            log(f"reusing the home at {base}")
            return base, {**found, "reused": True}
    if base.exists():
        shutil.rmtree(base)
    log(f"building {users} x {per_user} memories at {base} (encoding them takes a while on a CPU)")
    return base, {**build_base(base, users, per_user), "reused": False}


def fact_writes(users: int, count: int, seed: int) -> list[dict]:
    """`count` distinct facts spread over the users, each template at most once per user."""
    rng = random.Random(seed)
    slots = [(u, t) for t in range(len(FACTS)) for u in range(users)]
    rng.shuffle(slots)
    writes = []
    for user, template in slots[:count]:
        fact, paraphrase, values = FACTS[template]
        writes.append({"user_id": f"u{user}", "content": fact.format(rng.choice(values)), "paraphrase": paraphrase})
    return writes


# HTTP ------------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to the service with the tenant's key."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict) -> dict:
        self.conn.request("POST", path, body=orjson.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"POST {path} answered {response.status}: {data[:300]!r}")
        return orjson.loads(data)

    def close(self) -> None:
        self.conn.close()


def rank_of(items: list[dict], memory_id: str) -> int | None:
    """The 0-based rank by score of the first item that is or contains `memory_id`; None when absent."""
    ranked = sorted(items, key=lambda item: -item["score"])
    return next((n for n, item in enumerate(ranked) if item["memory_id"] == memory_id or memory_id in (item.get("source_ids") or ())), None)


def ask(client: Client, route: str, user_id: str, query: str) -> list[dict]:
    if route == "search":
        return client.post("/v1/search", {"user_id": user_id, "query": query, "limit": 10})["results"]
    return client.post("/v1/context", {"user_id": user_id, "query": query, "max_tokens": 1024})["items"]


def write_to_findable(client: Client, writes: list[dict], route: str, limit: float, interval: float, prefix: str) -> list[dict]:
    """Each fact stored, then its paraphrase asked every `interval` seconds until it ranks first or
    `limit` seconds pass; times from the moment the write was sent."""
    rows = []
    for n, write in enumerate(writes):
        sent = time.perf_counter()
        stored = client.post("/v1/memories", {"user_id": write["user_id"], "content": write["content"], "memory_type": "fact",
                                              "event_id": f"{prefix}-{n}"})
        acked = time.perf_counter()
        row = {"content": write["content"], "paraphrase": write["paraphrase"], "memory_id": stored["memory_id"],
               "ack_ms": (acked - sent) * 1e3, "in_context_ms": None, "top3_ms": None, "first_ms": None, "polls": 0, "last_rank": None}
        while time.perf_counter() - sent < limit:
            rank = rank_of(ask(client, route, write["user_id"], write["paraphrase"]), stored["memory_id"])
            row["polls"] += 1
            row["last_rank"] = rank
            elapsed = (time.perf_counter() - sent) * 1e3
            if rank is not None and row["in_context_ms"] is None:
                row["in_context_ms"] = elapsed
            if rank is not None and rank < 3 and row["top3_ms"] is None:
                row["top3_ms"] = elapsed
            if rank == 0:
                row["first_ms"] = elapsed
                break
            time.sleep(interval)
        rows.append(row)
        found = row["first_ms"] and round(row["first_ms"])
        log(f"  {n + 1}/{len(writes)} {write['user_id']} {write['content']!r} <- {write['paraphrase']!r}: first at {found} ms, last rank {row['last_rank']}")
    return rows


def freshness_report(rows: list[dict], limit: float) -> dict:
    first = [r["first_ms"] for r in rows if r["first_ms"] is not None]
    top3 = [r["top3_ms"] for r in rows if r["top3_ms"] is not None]
    present = [r["in_context_ms"] for r in rows if r["in_context_ms"] is not None]
    return {
        "writes": len(rows),
        "write_to_first_ms": distribution(first),
        "write_to_top3_ms": distribution(top3),
        "write_to_in_context_ms": distribution(present),
        "never_top3_share": round((len(rows) - len(top3)) / max(len(rows), 1), 3),
        "never_first_within_limit": len(rows) - len(first),
        "never_first_share": round((len(rows) - len(first)) / max(len(rows), 1), 3),
        "never_in_context_share": round((len(rows) - len(present)) / max(len(rows), 1), 3),
        "limit_seconds": limit,
        "write_ack_ms": distribution([r["ack_ms"] for r in rows]),
        "last_rank_of_unfound": dict(Counter(str(r["last_rank"]) for r in rows if r["first_ms"] is None)),
    }


def events_per_call(client: Client, home: Path, questions: list[tuple[str, str]], route: str) -> dict:
    """`len(questions)` calls one at a time; the events the store gained meanwhile, once idle."""
    before = settled_sequence(home)
    for user_id, query in questions:
        ask(client, route, user_id, query)
    after = settled_sequence(home)
    return {"calls": len(questions), "sequence_before": before, "sequence_after_idle": after,
            "events_per_call_live": round((after - before) / len(questions), 3)}


def event_types_after(home: Path, sequence: int) -> dict[str, int]:
    from hms_resources.store.event_store import EventStore

    with closing(EventStore(hms_home=str(home))) as store:
        return dict(Counter(e.type for e in store.read_events(after_sequence=sequence)))


# The control: the same paraphrases once the assets ran -----------------------------------------


def indexed_control(home: Path, rows: list[dict], per_user: int) -> dict:
    """Materialize the assets again, as the daemon would next, and ask each paraphrase in this process."""
    from hms_jobs.homes import materialize_for_context
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.store.event_store import EventStore

    started = time.perf_counter()
    with closing(EventStore(hms_home=str(home))) as store:
        materialize_for_context(store, Embedder(), tier_config=hot_and_warm(per_user + len(FACTS)), log=log)
    assembler = ContextAssembler.from_home(home)
    ranks = []
    try:
        for row in rows:
            context = assembler.assemble(f"{TENANT}/{row['user_id']}", row["paraphrase"], 1024)
            ranks.append(rank_of([item.to_json() for item in context.items], row["memory_id"]))
    finally:
        assembler.close()
    live = [row["last_rank"] for row in rows]
    return {
        "first_share_once_indexed": round(sum(r == 0 for r in ranks) / max(len(ranks), 1), 3),
        "top3_share_once_indexed": round(sum(r is not None and r < 3 for r in ranks) / max(len(ranks), 1), 3),
        "same_rank_served_fresh_and_indexed": round(sum(a == b for a, b in zip(live, ranks)) / max(len(ranks), 1), 3),
        "ranks_served_fresh": live,
        "in_context_share_once_indexed": round(sum(r is not None for r in ranks) / max(len(ranks), 1), 3),
        "ranks_once_indexed": ranks,
        "materialize_seconds": round(time.perf_counter() - started, 1),
    }


# Run -------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 turns per user, 12 writes, 50 calls: a minute or two")
    parser.add_argument("--home", type=Path, default=None, help="keep the built home under this folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse a home built before under --home")
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--memories-per-user", type=int, default=None, help="default 1,000, quick 300")
    parser.add_argument("--writes", type=int, default=None, help=f"facts written (default 50, quick 12; at most {len(FACTS)} per user)")
    parser.add_argument("--limit", type=float, default=5.0, help="seconds a write may take to rank first")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between two asks of one paraphrase")
    parser.add_argument("--seed", type=int, default=3, help="which facts, values and users are written")
    parser.add_argument("--route", choices=("context", "search"), default="context", help="ask through /v1/context or /v1/search")
    parser.add_argument("--calls", type=int, default=None, help="context calls counted for events (default 200, quick 50)")
    parser.add_argument("--no-control", action="store_true", help="skip materializing again and asking the indexed paraphrases")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    per_user = args.memories_per_user or (300 if args.quick else 1_000)
    config = {"quick": args.quick, "tenant": TENANT, "users": args.users, "memories_per_user": per_user,
              "writes": min(args.writes or (12 if args.quick else 50), args.users * len(FACTS)), "limit_seconds": args.limit,
              "poll_interval_seconds": args.interval, "route": args.route, "calls": args.calls or (50 if args.quick else 200),
              "daemon": "none: hms serve alone"}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hms-bench-freshness-") as tmp:
        root = args.home.resolve() if args.home else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        base, built = base_home(root, args.users, per_user, args.reuse)
        home = root / "run"
        if home.exists():
            shutil.rmtree(home)
        shutil.copytree(base, home)
        (home / "bench.json").unlink()

        from hms_resources.serving.keys import create_key
        from hms_resources.store.event_store import EventStore

        with closing(EventStore(hms_home=str(home))) as store:
            key = create_key(store, TENANT, "write", label="benchmarks/freshness.py").secret
        port = free_port()
        server_log = root / "server.log"
        log(f"starting hms serve on {HOST}:{port}, no daemon; its log: {server_log}")
        server = start_server(home, port, False, server_log)
        writes = fact_writes(args.users, config["writes"], seed=args.seed)
        results: dict = {}
        try:
            results["readiness"] = wait_ready(server, port, server_log)
            client = Client(port, key)
            for u in range(args.users):
                ask(client, args.route, f"u{u}", "What did we talk about last time?")
            log(f"write-to-findable: {len(writes)} facts, paraphrases asked through /v1/{args.route} every {args.interval:g}s")
            rows = write_to_findable(client, writes, args.route, args.limit, args.interval, f"fresh-{uuid.uuid4().hex[:8]}")
            results["write_to_findable"] = freshness_report(rows, args.limit)
            questions = [(w["user_id"], w["paraphrase"]) for w in writes]
            questions = [questions[n % len(questions)] for n in range(config["calls"])]
            log(f"events per context call: {len(questions)} calls")
            results["events"] = events_per_call(client, home, questions, args.route)
            client.close()
        finally:
            stop_server(server)
        events = results["events"]
        final = last_sequence(home)
        events["sequence_after_shutdown"] = final
        events["events_per_call_with_shutdown_flush"] = round((final - events["sequence_before"]) / events["calls"], 3)
        events["event_types"] = event_types_after(home, events["sequence_before"])
        if not args.no_control:
            log("control: the assets materialized again, the paraphrases asked of the indexed memories")
            results["indexed_control"] = indexed_control(home, [{**r, "user_id": w["user_id"]} for r, w in zip(rows, writes)], per_user)
        results["writes_detail"] = [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]

    fresh = results["write_to_findable"]
    goals = {
        "write_to_first_p99_ms": _goal(fresh["write_to_first_ms"].get("p99"), GOALS["write_to_first_p99_ms"]),
        "never_first_share": _goal(fresh["never_first_share"], GOALS["never_first_share"]),
        "events_per_context_call": _goal(results["events"]["events_per_call_with_shutdown_flush"], GOALS["events_per_context_call"]),
    }
    print_json({"benchmark": "freshness", "goals": goals, "all_goals_pass": all(g["pass"] for g in goals.values()), **results,
                "home": built, "config": config, "seconds_total": round(time.perf_counter() - started, 1)})


def _goal(value: float | None, target: float) -> dict:
    return {"value": value, "goal": f"<= {target:g}", "pass": value is not None and value <= target}


if __name__ == "__main__":
    main()
