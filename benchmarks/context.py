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
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from benchmarks.common import (
    USER,
    conversation_texts,
    hot_and_warm,
    percentiles,
    print_json,
    rss_mb,
    run_in_fresh_process,
    seconds_fields,
    stderr_log,
)

log = stderr_log("context-bench")


def build_one_user_home(home: Path, count: int, random_vectors: bool) -> dict:
    """`count` turns of one user through the real assets, random unit vectors with `random_vectors`."""
    from hms_jobs.homes import build_home
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.store.event_store import EventStore

    started = time.perf_counter()
    memories = conversation_texts(count, seed=29)
    with closing(EventStore(hms_home=str(home))) as store:
        seconds = build_home(store, Embedder(), memories, random_vectors=random_vectors, tier_config=hot_and_warm(count), log=log)
    return {"memories": len(memories), "build_seconds": round(time.perf_counter() - started, 1), **seconds_fields(seconds)}


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
    rss_end = rss_mb()
    assembler.close()

    hms, base = percentiles(hms_ms), percentiles(bare_ms)
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
        print_json(measure(args.measure, args.queries), indent=None)
        return
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="hms-bench-context-") as tmp:
            home = args.keep / str(size) if args.keep else Path(tmp)
            built = build_one_user_home(home, size, random_vectors=size > 20_000)
            measured = run_in_fresh_process("benchmarks.context", "--measure", str(home), "--queries", str(args.queries))
            results[str(size)] = {**built, "vectors": "random unit" if size > 20_000 else "encoded", **measured}
    print_json({"benchmark": "context_assembly", "budget_tokens": 1024, "sizes": results})


if __name__ == "__main__":
    main()
