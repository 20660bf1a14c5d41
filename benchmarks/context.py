"""Context assembly latency and memory: `ContextAssembler.assemble` at 10,000 and 100,000 memories of
one user (hot and warm), query embedding included, against a bare query embedding plus a flat dense
top-k over the same user's vectors, measured in the same process, query by query, alternating.

Each size is built in a fresh HMS home through the real assets (`memories`, `embeddings`,
`concept_clusters`, `graph_edges`, then the last day's `memory_tiers` with capacities that keep every
memory hot or warm: the turns are spread over the past year); at 100,000 the `embeddings` asset finds random unit vectors
already stored under the texts' hashes, so nothing is encoded (the issue allows it), and every other
step runs the real code path. The measurement runs in a fresh process so its resident memory is the
resource's own. Prints one JSON object.

Goals: p50 <= 15 ms, p99 <= 50 ms, p50 ratio to the bare baseline <= 1.5x; RSS at 100,000 <= 250 MB."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

USER = "bench-user"


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


def save_random_embeddings(home: Path, embedder: Any, live: list) -> None:
    """Random unit vectors for the `live` memories, saved where the `embeddings` asset saves its index:
    an index at scale without encoding every text (retrieval quality is not measured on them)."""
    from hms_resources.semantic.embeddings import EmbeddingIndex, content_hash, embedding_text

    vectors = np.random.default_rng(0).standard_normal((len(live), embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    EmbeddingIndex(
        model=embedder.identity,
        user_ids=np.array([m.user_id for m in live]),
        memory_ids=np.array([m.memory_id for m in live]),
        hashes=np.array([content_hash(embedding_text(m)) for m in live]),
        vectors=vectors,
    ).save(home / "embeddings")


def build_home(home: Path, count: int, random_vectors: bool) -> dict:
    from hms_jobs.retrieval_harness import materialize_for_context
    from hms_resources.datasets.retrieval_eval import memory_events
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.store.event_store import EventStore
    from hms_resources.store.ingest import ingest_records
    from hms_resources.store.projection import refresh_memories

    started = time.perf_counter()
    store = EventStore(hms_home=str(home))
    embedder = Embedder()
    memories = conversation_texts(count, seed=29)
    ingest_records(store, memory_events(memories))
    if random_vectors:
        refresh_memories(store)
        live = sorted(store.read_memories(user_id=USER), key=lambda m: m.key)
        save_random_embeddings(home, embedder, live)
    tiers = {"hot_capacity": count // 10, "warm_capacity": count, "hot_threshold": 0.0, "warm_threshold": 0.0, "use_predictor": "off"}
    seconds = materialize_for_context(store, embedder, tier_config=tiers, log=lambda m: print(m, file=sys.stderr))
    store.close()
    return {"memories": len(memories), "build_seconds": round(time.perf_counter() - started, 1), **{f"{k}_seconds": round(v, 1) for k, v in seconds.items()}}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(home: Path, queries: int) -> dict:
    """Runs in its own process: load the resource, then time queries against the bare baseline."""
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.context.index import TIER_NAMES
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.store.event_store import EventStore

    rss_start = rss_mb()
    embedder = Embedder()
    embedder.encode_query("warm up")
    assembler = ContextAssembler(event_store=EventStore(hms_home=str(home)), embedder=embedder)
    assembler.tokens.count_one("warm up")
    rss_models = rss_mb()
    started = time.perf_counter()
    index = assembler.snapshot.users[USER]
    load_seconds = time.perf_counter() - started
    rss_indexes = rss_mb()
    rng = np.random.default_rng(3)
    texts = index.texts
    asked = []
    for row in rng.choice(len(texts), size=queries + 30, replace=False):
        words = texts[int(row)].split(": ", 1)[-1].split()
        start = int(rng.integers(0, max(len(words) - 6, 1)))
        asked.append("What did we say about " + " ".join(words[start : start + 6]).strip(".,?!") + "?")

    def bare(query: str) -> None:
        vector = embedder.encode_query(query)
        scores = embedder.similarities(index.vectors, vector)
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]

    hms_ms, bare_ms, stages = [], [], {}
    for n, query in enumerate(asked):
        order = (0, 1) if n % 2 else (1, 0)
        for which in order:
            t = time.perf_counter()
            if which:
                context = assembler.assemble(USER, query, 1024)
            else:
                bare(query)
            elapsed = (time.perf_counter() - t) * 1e3
            if n >= 30:
                (hms_ms if which else bare_ms).append(elapsed)
                if which:
                    for stage, ms in context.timings_ms.items():
                        stages.setdefault(stage, []).append(ms)
    assembler.flush_accesses()
    rss_end = rss_mb()
    assembler.close()

    def summary(values: list[float]) -> dict:
        return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}

    hms, base = summary(hms_ms), summary(bare_ms)
    tiers = {name: int((index.tier == code).sum()) for code, name in enumerate(TIER_NAMES) if (index.tier == code).any()}
    return {
        "memories_indexed": len(index),
        "tiers": tiers,
        "queries": len(hms_ms),
        "index_load_seconds": round(load_seconds, 2),
        "assemble_ms": hms,
        "bare_embed_plus_dense_topk_ms": base,
        "ratio_p50": round(hms["p50"] / base["p50"], 3),
        "ratio_p99": round(hms["p99"] / base["p99"], 3),
        "stage_p50_ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
        "rss_mb": {
            "process_start": round(rss_start, 1),
            "after_model_and_tokenizer": round(rss_models, 1),
            "after_indexes": round(rss_indexes, 1),
            "after_queries": round(rss_end, 1),
            "resource_indexes": round(rss_end - rss_models, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, default=None, help="build the homes under this folder and keep them")
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.queries)))
        return
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="hms-bench-context-") as tmp:
            home = args.keep / str(size) if args.keep else Path(tmp)
            built = build_home(home, size, random_vectors=size > 20_000)
            out = subprocess.run(
                [sys.executable, __file__, "--measure", str(home), "--queries", str(args.queries)],
                check=True, capture_output=True, text=True,
            )
            results[str(size)] = {**built, "vectors": "random unit" if size > 20_000 else "encoded", **json.loads(out.stdout.strip().splitlines()[-1])}
    print(json.dumps({"benchmark": "context_assembly", "budget_tokens": 1024, "sizes": results}, indent=2))


if __name__ == "__main__":
    main()
