"""Serving many users from one process: 10,000 users with 1,000 memories each (10 million memories)
behind one `ContextAssembler` with a 2 GB budget for the users' indexes, which it loads on a user's
first call and drops least recently used first.

The home is built for serving, not through ingest (that is `benchmarks/ingest.py`'s): each user's
1,000 conversation turns are one of 100 conversations of the shipped generator (as in
`benchmarks/context.py`), under the user's own id, written into the memories table with the
projection's own `save_memories`; the embedding index holds a random unit vector per memory (as
`hms_jobs.homes.save_random_embeddings` does), written column by column so the 15 GB matrix is
never in memory. No tier partition and no concepts are built: every memory is hot, and the per-user
reads of tiers and concepts run and find nothing. The home is cached under `--home`
(`/tmp/hms-bench-many-users`), rebuilt only when its parameters change; `--build-minutes` stops
adding users when the build would run past it (the report says how many were built).

Measured in a fresh process, so its resident memory is the resource's own, with the resource
configured as `hms serve` configures it and its heap settled once the snapshot is open, as the
service settles it (accesses are not recorded, to leave the store unchanged): opening the snapshot
(one pass over the index's user column), then the first call of `--cold-users` users in random
order (cold: the user's indexes are loaded inside the call; past the budget, earlier users are
dropped), then `--warm-queries` calls of users still loaded (warm), alternating with the bare
baseline of `benchmarks/context.py` (query embedding plus a flat dense top-k over the same user's
vectors). RSS and the resident index bytes (`index_bytes`) are read after each phase; the machine's
load average is reported beside the figures, as other work on a shared machine slows every figure.
Prints one JSON object.

Goals: cold first call p50 <= 50 ms, warm p50 <= 15 ms, resident index bytes <= the budget."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import conversation_texts, memory_mb, percentiles, print_json, run_in_fresh_process, stderr_log

HOME_VERSION = 1
CONVERSATIONS = 100
INDEX_SECONDS_PER_USER = 0.02
"""Time kept back from `--build-minutes` per requested user for writing the embedding index."""
GOALS = {"cold_p50_ms": 50.0, "warm_p50_ms": 15.0}


log = stderr_log("many-users")


def user_name(number: int) -> str:
    return f"user-{number:05d}"


# The home --------------------------------------------------------------------------------------


def conversation_pool(per_user: int) -> list[list[dict]]:
    """`CONVERSATIONS` conversations of `per_user` turns, each sorted by memory id (the index's order)."""
    from hms_resources.semantic.embeddings import content_hash

    pool = []
    for k in range(CONVERSATIONS):
        turns = sorted(conversation_texts(per_user, seed=29 + k), key=lambda r: r["id"])
        for turn in turns:
            speaker = turn.get("speaker")
            turn["hash"] = content_hash(f"{speaker}: {' '.join(turn['text'].split())}" if speaker else " ".join(turn["text"].split()))
        pool.append(turns)
    return pool


def save_memory_rows(store, pool: list[list[dict]], users: int, deadline: float, batch: int = 25) -> int:
    """The memories table, `batch` users a transaction, until `deadline` (monotonic); returns the users written."""
    from hms_resources.store.memory_state import CONVERSATION_TURN, Memory
    from hms_resources.store.projection import MEMORIES_CURSOR

    written = 0
    started = time.monotonic()
    for first in range(0, users, batch):
        if time.monotonic() > deadline:
            break
        memories = [
            Memory(
                user_id=user_name(u), memory_id=t["id"], content=t["text"], session_id=t["session_id"], memory_type=CONVERSATION_TURN,
                created_by=t.get("speaker"), created_at=t["created_at"], last_modified_at=t["created_at"], event_count=1,
            )
            for u in range(first, min(first + batch, users))
            for t in pool[u % CONVERSATIONS]
        ]
        store.save_memories(memories, cursor_name=MEMORIES_CURSOR, cursor=1)
        written = min(first + batch, users)
        if written % 1000 == 0:
            log(f"memories of {written} users ({written / (time.monotonic() - started):.0f} users/s)")
    return written


def write_embedding_index(path: Path, model: str, dimension: int, pool: list[list[dict]], users: int) -> None:
    """The `embeddings` asset's file (an uncompressed .npz, rows sorted by user and memory id), one
    column at a time and a few users at a time: random unit vectors, the turns' real text hashes."""
    from numpy.lib import format as npy

    per_user = [len(pool[u % CONVERSATIONS]) for u in range(users)]
    rows = sum(per_user)
    id_width = max(len(t["id"]) for turns in pool for t in turns)
    hash_width = max(len(t["hash"]) for turns in pool for t in turns)
    def strings(field: str) -> Any:
        return lambda u: np.array([t[field] for t in pool[u % CONVERSATIONS]])

    columns = {
        "user_ids": (np.dtype(f"<U{len(user_name(0))}"), (rows,), lambda u: np.array([user_name(u)] * per_user[u])),
        "memory_ids": (np.dtype(f"<U{id_width}"), (rows,), strings("id")),
        "hashes": (np.dtype(f"<U{hash_width}"), (rows,), strings("hash")),
    }
    rng = np.random.default_rng(0)

    def vectors(u: int) -> np.ndarray:
        block = rng.standard_normal((per_user[u], dimension), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        return block

    columns["vectors"] = (np.dtype("<f4"), (rows, dimension), vectors)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("model.npy", "w") as out:
            np.save(out, np.array(model))
        for name, (dtype, shape, block) in columns.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as out:
                npy.write_array_header_2_0(out, {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
                for u in range(users):
                    out.write(np.ascontiguousarray(block(u), dtype=dtype).tobytes())
            log(f"embedding index: {name} written")
    partial.replace(path)


def build_home(home: Path, users: int, per_user: int, minutes: float) -> dict:
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, INDEX_FILE
    from hms_resources.store.event_store import EventStore

    started = time.monotonic()
    home.mkdir(parents=True)
    store = EventStore(hms_home=str(home))
    embedder = Embedder()
    embedder.encode_query("warm up")
    pool = conversation_pool(per_user)
    log(f"pool of {CONVERSATIONS} conversations ready in {time.monotonic() - started:.0f}s")
    deadline = started + minutes * 60 - users * INDEX_SECONDS_PER_USER
    built = save_memory_rows(store, pool, users, deadline)
    rows_done = time.monotonic()
    (home / EMBEDDINGS_DIR).mkdir()
    write_embedding_index(home / EMBEDDINGS_DIR / INDEX_FILE, embedder.identity, embedder.dimension, pool, built)
    store.close()
    finished = time.monotonic()
    return {
        "version": HOME_VERSION,
        "users_requested": users,
        "users": built,
        "memories_per_user": per_user,
        "memories": built * per_user,
        "build_seconds": round(finished - started, 1),
        "memories_table_seconds": round(rows_done - started, 1),
        "embedding_index_seconds": round(finished - rows_done, 1),
        "embedding_index_gb": round((home / EMBEDDINGS_DIR / INDEX_FILE).stat().st_size / 1e9, 2),
    }


def cached_home(root: Path, users: int, per_user: int, minutes: float, rebuild: bool) -> tuple[Path, dict]:
    home = root / f"home-{users}x{per_user}"
    marker = home / "bench.json"
    if not rebuild and marker.exists():
        built = json.loads(marker.read_text())
        if built.get("version") == HOME_VERSION:
            log(f"reusing the home at {home} ({built['users']} users)")
            return home, {**built, "reused": True}
    if home.exists():
        shutil.rmtree(home)
    log(f"building {users} x {per_user} memories at {home}")
    built = build_home(home, users, per_user, minutes)
    marker.write_text(json.dumps(built))
    return home, {**built, "reused": False}


# The measurement -------------------------------------------------------------------------------


def memory_now() -> dict:
    """This process's resident and peak resident memory, in MiB."""
    return {k: round(v, 1) for k, v in memory_mb().items()}


def question(pool_turns: list[dict], rng: random.Random) -> str:
    words = pool_turns[rng.randrange(len(pool_turns))]["text"].split()
    start = rng.randrange(max(len(words) - 6, 1))
    return "What did we say about " + " ".join(words[start : start + 6]).strip(".,?!") + "?"


def measure(home: Path, users: int, per_user: int, budget_mb: float, cold_users: int, warm_queries: int) -> dict:
    """Runs in its own process."""
    from hms_jobs.cli.serve import SERVE_FRESH_SECONDS
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.serving.service import settle_heap
    from hms_resources.store.event_store import EventStore

    start = memory_now()
    embedder = Embedder()
    embedder.encode_query("warm up")
    assembler = ContextAssembler(
        event_store=EventStore(hms_home=str(home)), embedder=embedder, memory_budget_mb=budget_mb,
        fresh_seconds=SERVE_FRESH_SECONDS,
    )
    texts = {k: conversation_texts(per_user, seed=29 + k) for k in range(CONVERSATIONS)}
    started = time.perf_counter()
    snapshot = assembler.snapshot
    open_seconds = time.perf_counter() - started
    settle_heap()
    after_open = memory_now()
    rng = random.Random(7)
    order = rng.sample(range(users), min(cold_users, users))
    load_before = os.getloadavg()

    cold_ms, cold_load_ms, stages = [], [], {}
    for u in order:
        query = question(texts[u % CONVERSATIONS], rng)
        t = time.perf_counter()
        context = assembler.assemble(user_name(u), query, 1024)
        cold_ms.append((time.perf_counter() - t) * 1e3)
        cold_load_ms.append(context.timings_ms["load"])
        for stage, ms in context.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    residents = assembler.residents
    after_cold = {**memory_now(), "resident_index_mb": round(residents.nbytes / 2**20, 1), "resident_users": len(residents)}
    loads_before_warm = residents.loads

    resident = [u for u, _ in residents.users()]
    warm_ms, bare_ms, warm_stages = [], [], {}
    for n in range(warm_queries):
        user_id = rng.choice(resident)
        query = question(texts[int(user_id.split("-")[1]) % CONVERSATIONS], rng)
        index = assembler.user_index(user_id)
        for which in ((0, 1) if n % 2 else (1, 0)):
            t = time.perf_counter()
            if which:
                context = assembler.assemble(user_id, query, 1024)
                for stage, ms in context.timings_ms.items():
                    warm_stages.setdefault(stage, []).append(ms)
            else:
                scores = embedder.similarities(index.vectors, embedder.encode_query(query))
                top = np.argpartition(-scores, 10)[:10]
                top[np.argsort(-scores[top])]
            (warm_ms if which else bare_ms).append((time.perf_counter() - t) * 1e3)
    load_after = os.getloadavg()
    after_warm = {**memory_now(), "resident_index_mb": round(residents.nbytes / 2**20, 1), "resident_users": len(residents)}
    per_user_bytes = residents.nbytes / max(len(residents), 1)
    cold, warm, bare = percentiles(cold_ms), percentiles(warm_ms), percentiles(bare_ms)
    result = {
        "snapshot_open_seconds": round(open_seconds, 2),
        "snapshot_users_in_index": len(snapshot.embeddings.spans) if snapshot.embeddings else 0,
        "cold_first_call_ms": {**cold, "calls": len(cold_ms)},
        "cold_load_stage_ms": percentiles(cold_load_ms),
        "cold_stage_p50_ms": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
        "warm_call_ms": {**warm, "calls": len(warm_ms)},
        "warm_stage_p50_ms": {k: round(float(np.median(v)), 2) for k, v in warm_stages.items()},
        "warm_loads_during_phase": residents.loads - loads_before_warm,
        "bare_embed_plus_dense_topk_ms": bare,
        "warm_ratio_p50_to_bare": round(warm["p50"] / bare["p50"], 2),
        "cold_ratio_p50_to_warm": round(cold["p50"] / warm["p50"], 2),
        "budget_mb": budget_mb,
        "loads": residents.loads,
        "evictions": residents.evictions,
        "index_bytes_per_user": round(per_user_bytes),
        "users_per_gb_of_budget": int(2**30 / per_user_bytes) if per_user_bytes else None,
        "memory_mb": {
            "process_start": start,
            "after_model_tokenizer_and_snapshot": after_open,
            "after_cold_calls": after_cold,
            "after_warm_calls": after_warm,
            "rss_growth_over_resident_index": round((after_warm["rss"] - after_open["rss"]) / max(after_warm["resident_index_mb"], 0.1), 2),
        },
        "machine_load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
    }
    assembler.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--per-user", type=int, default=1_000)
    parser.add_argument("--budget-mb", type=float, default=2048.0)
    parser.add_argument("--cold-users", type=int, default=3_000, help="users whose first call is measured")
    parser.add_argument("--warm-queries", type=int, default=2_000)
    parser.add_argument("--home", type=Path, default=Path("/tmp/hms-bench-many-users"))
    parser.add_argument("--build-minutes", type=float, default=15.0, help="stop adding users when the build would run past it")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        built = json.loads((args.measure / "bench.json").read_text())
        print_json(measure(args.measure, built["users"], args.per_user, args.budget_mb, args.cold_users, args.warm_queries), indent=None)
        return
    home, built = cached_home(args.home, args.users, args.per_user, args.build_minutes, args.rebuild)
    log(f"measuring {args.cold_users} cold users and {args.warm_queries} warm calls in a fresh process")
    measured = run_in_fresh_process(
        "benchmarks.many_users", "--measure", str(home), "--per-user", str(args.per_user), "--budget-mb", str(args.budget_mb),
        "--cold-users", str(args.cold_users), "--warm-queries", str(args.warm_queries),
    )
    goals = {
        "cold_p50_ms": {"goal": GOALS["cold_p50_ms"], "value": measured["cold_first_call_ms"]["p50"]},
        "warm_p50_ms": {"goal": GOALS["warm_p50_ms"], "value": measured["warm_call_ms"]["p50"]},
        "resident_index_mb": {"goal": args.budget_mb, "value": measured["memory_mb"]["after_warm_calls"]["resident_index_mb"]},
    }
    for figure in goals.values():
        figure["met"] = figure["value"] <= figure["goal"]
    print_json({
        "benchmark": "many_users",
        "home": {**built, "path": str(home)},
        "all_requested_users_built": built["users"] == built["users_requested"],
        "goals": goals,
        **measured,
        "machine": {"cpus": os.cpu_count()},
    })


if __name__ == "__main__":
    main()
