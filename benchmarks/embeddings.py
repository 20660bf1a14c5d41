"""Embedding throughput: the `embeddings` asset's code path (hashing, incremental reuse, encoding,
the saved index) against a plain `SentenceTransformer.encode` of the same texts in the same run, and
a re-run with nothing changed against the first run.

Prints one JSON object. Goals: ratio to plain encode at least 0.9; re-run at least 50x faster."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_json
from hms_resources.datasets.synthetic import generate_bulk_events
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.embeddings import EmbeddingIndex, refresh_embeddings
from hms_resources.store.memory_state import Memory


def sample_memories(count: int) -> list[Memory]:
    """Distinct memory texts from the synthetic generator (a numbered note keeps repeats apart)."""
    memories = []
    for record in generate_bulk_events(count * 3, users=20, seed=5):
        if record["type"] == "memory.created":
            n = len(memories)
            text = f"{record['payload']['content']} (note {n})"
            memories.append(Memory(user_id=record["user_id"], memory_id=record["memory_id"], content=text))
            if len(memories) == count:
                break
    return memories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=3_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    embedder = Embedder()
    model = embedder.load()
    memories = sample_memories(args.memories)
    texts = [m.content for m in memories]
    model.encode(texts[:256], batch_size=embedder.batch_size, normalize_embeddings=True)

    plain_runs, asset_runs, rerun_runs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.repeats):
            start = time.perf_counter()
            model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            plain_runs.append(time.perf_counter() - start)

            directory = Path(tmp) / f"run{n}"
            start = time.perf_counter()
            index, report = refresh_embeddings(
                memories, None, model=embedder.identity, encode=embedder.encode, count_tokens=embedder.count_tokens,
                max_tokens=embedder.max_tokens, dimension=embedder.dimension,
            )
            index.save(directory)
            asset_runs.append(time.perf_counter() - start)
            assert report.encoded == len(memories)

            start = time.perf_counter()
            previous = EmbeddingIndex.load(directory)
            again, rerun = refresh_embeddings(
                memories, previous, model=embedder.identity, encode=embedder.encode, count_tokens=embedder.count_tokens,
                max_tokens=embedder.max_tokens, dimension=embedder.dimension,
            )
            again.save(directory)
            rerun_runs.append(time.perf_counter() - start)
            assert rerun.encoded == 0
    plain, asset, rerun_seconds = min(plain_runs), min(asset_runs), min(rerun_runs)
    print_json({
        "benchmark": "embeddings",
        "model": embedder.identity,
        "memories": len(memories),
        "repeats": args.repeats,
        "plain_encode": {"seconds": round(plain, 3), "texts_per_s": round(len(texts) / plain, 1)},
        "asset_path": {"seconds": round(asset, 3), "texts_per_s": round(len(texts) / asset, 1)},
        "ratio_asset_to_plain": round(plain / asset, 3),
        "rerun_nothing_changed": {"seconds": round(rerun_seconds, 4)},
        "rerun_speedup": round(asset / rerun_seconds, 1),
        "goals": {"ratio_asset_to_plain": 0.9, "rerun_speedup": 50},
        "meets_goals": plain / asset >= 0.9 and asset / rerun_seconds >= 50,
    })


if __name__ == "__main__":
    main()
