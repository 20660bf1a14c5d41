"""Build an HMS home the way production builds one: memories ingested as events, then the assets the
context resource reads materialized through Dagster in-process. `hms eval`, the benchmarks and the
tests build their homes here, so what they measure is what a deployment serves."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from hms_resources.datasets.retrieval_eval import Dataset, load_dataset, memory_events
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, EmbeddingIndex, content_hash, embedding_text
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from hms_resources.store.projection import refresh_memories

SEMANTIC_ASSETS = ("memories", "forget_purge", "embeddings", "concept_clusters", "graph_edges")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config that keeps Dagster's per-step debug lines out of the caller's output; failures still show."""


def ingest_memories(store: EventStore, memories: Iterable[dict[str, Any]], *, source: str = "<memories>") -> None:
    """Dataset memories (`id`, `user_id`, `text`, ...) as `memory.created` events; none may be rejected."""
    report = ingest_records(store, memory_events(memories), source=source)
    if report.rejected:
        raise RuntimeError(f"{source}: {report.rejected} memories were rejected by the event store")


def save_random_embeddings(store: EventStore, embedder: Embedder, *, seed: int = 0) -> int:
    """Random unit vectors for the live memories, stored where the `embeddings` asset stores its index
    and under the texts' hashes, so that asset encodes nothing: an index at scale where retrieval
    quality is not measured. Returns the number of memories."""
    refresh_memories(store)
    live = sorted(store.read_memories(), key=lambda m: m.key)
    vectors = np.random.default_rng(seed).standard_normal((len(live), embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    EmbeddingIndex(
        model=embedder.identity,
        user_ids=np.array([m.user_id for m in live]),
        memory_ids=np.array([m.memory_id for m in live]),
        hashes=np.array([content_hash(embedding_text(m)) for m in live]),
        vectors=vectors,
    ).save(store.home / EMBEDDINGS_DIR)
    return len(live)


def materialize_for_context(
    store: EventStore, embedder: Embedder, *, tier_config: dict[str, Any] | None = None, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Run the assets the context resource reads, with their blocking checks, on a temporary instance;
    then the tier partition of the last day with memories, when that day is a partition (`tier_config`:
    the migration's `TiersConfig` fields, e.g. capacities). Returns the seconds of each step."""
    from hms_assets import domain_assets
    from hms_assets.tiers.partitions import all_shards_of_days, build_daily_partitions

    assets = domain_assets(("memory_store", "semantic", "tiers"))
    resources = {"event_store": store, "embedder": embedder}
    seconds: dict[str, float] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(*SEMANTIC_ASSETS),
            resources=resources,
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
        if not result.success:
            raise RuntimeError("materializing the semantic assets failed; see the Dagster log above")
        seconds["semantic_assets"] = time.perf_counter() - started
        log(f"materialized {', '.join(SEMANTIC_ASSETS)} in {seconds['semantic_assets']:.1f}s")
        _, last = store.event_time_range()
        day = (last or "")[:10]
        if day and day in build_daily_partitions().get_partition_keys(dynamic_partitions_store=instance):
            started = time.perf_counter()
            result = dg.materialize(
                assets,
                selection=dg.AssetSelection.assets("memory_tiers", "tier_migrations"),
                resources=resources,
                instance=instance,
                tags=all_shards_of_days(day),
                run_config={**QUIET, "ops": {"memory_tier_migration": {"config": tier_config or {}}}},
                raise_on_error=False,
            )
            if not result.success:
                raise RuntimeError(f"materializing the memory tiers for {day} failed; see the Dagster log above")
            seconds["memory_tiers"] = time.perf_counter() - started
            log(f"materialized memory_tiers for {day} in {seconds['memory_tiers']:.1f}s")
        else:
            log(f"no tier partition for {day or 'an empty dataset'}: every memory counts as hot")
    return seconds


def build_home(
    store: EventStore,
    embedder: Embedder,
    memories: Iterable[dict[str, Any]],
    *,
    source: str = "<memories>",
    random_vectors: bool = False,
    tier_config: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """`memories` ingested into `store`'s home and every asset the context resource reads materialized
    (with `random_vectors`, random unit vectors stand in for encoding). Returns the assets' seconds."""
    ingest_memories(store, memories, source=source)
    if random_vectors:
        save_random_embeddings(store, embedder)
    return materialize_for_context(store, embedder, tier_config=tier_config, log=log)


def build_dataset_home(
    path: str | Path, home: str | Path, *, log: Callable[[str], None] = print
) -> tuple[Dataset, EventStore, Embedder, dict[str, float]]:
    """A dataset file of `hms eval retrieval`'s format built into a fresh home at `home`, with the
    configured embedder. Returns the dataset, the open store (the caller closes it), the embedder
    and the assets' seconds."""
    dataset = load_dataset(path)
    log(f"{path}: {len(dataset.memories)} memories of {dataset.users} users, {len(dataset.questions)} questions")
    store = EventStore(hms_home=str(home))
    embedder = Embedder.from_env()
    try:
        ingest_memories(store, dataset.memories, source=str(path))
    except RuntimeError:
        store.close()
        raise
    return dataset, store, embedder, materialize_for_context(store, embedder, log=log)
