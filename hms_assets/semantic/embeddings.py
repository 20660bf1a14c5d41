"""The `embeddings` asset: one vector per live memory, re-encoded only when its content changes."""

import dagster as dg

from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, EmbeddingIndex, refresh_embeddings
from hms_resources.store.event_store import EventStore


def load_index(event_store: EventStore) -> EmbeddingIndex | None:
    return EmbeddingIndex.load(event_store.home / EMBEDDINGS_DIR)


def require_index(event_store: EventStore) -> EmbeddingIndex:
    index = load_index(event_store)
    if index is None:
        raise dg.Failure(f"no embedding index under {event_store.home / EMBEDDINGS_DIR}: materialize `embeddings` first")
    return index


@dg.asset(
    group_name="semantic",
    deps=["memories"],
    kinds={"pytorch", "numpy"},
    automation_condition=dg.AutomationCondition.eager(),
    description="A vector per live memory from the local sentence-transformers model, in an index under HMS_HOME; "
    "only changed memories are embedded again. Concepts cluster it and the context resource searches it.",
)
def embeddings(context: dg.AssetExecutionContext, event_store: EventStore, embedder: Embedder) -> dg.MaterializeResult:
    memories = event_store.read_memories()
    previous = load_index(event_store)
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done += count
        context.log.info(f"encoded {done:,} memories")

    index, report = refresh_embeddings(
        memories,
        previous,
        model=embedder.identity,
        encode=lambda texts: embedder.encode(texts, on_batch=progress),
        count_tokens=embedder.count_tokens,
        max_tokens=embedder.max_tokens,
        dimension=embedder.dimension,
    )
    path = index.save(event_store.home / EMBEDDINGS_DIR)
    notes = []
    if report.model_changed:
        notes.append(f"The model changed to {report.model}: every memory was re-encoded.")
    if report.truncated:
        notes.append(f"{report.truncated} memories were longer than the model's {embedder.max_tokens}-token limit; only their beginning is embedded.")
    if report.empty_content:
        notes.append(f"{report.empty_content} memories have empty or blank content.")
    context.log.info(
        f"{report.memories} vectors: {report.encoded} encoded, {report.reused} reused, {report.removed} removed"
    )
    return dg.MaterializeResult(
        metadata={
            "model": report.model,
            "dimension": int(index.vectors.shape[1]),
            "vectors": report.memories,
            "encoded": report.encoded,
            "reused": report.reused,
            "removed": report.removed,
            "truncated": report.truncated,
            "empty_content": report.empty_content,
            "encode_seconds": round(report.encode_seconds, 3),
            "memories_per_s": round(report.encoded / report.encode_seconds, 1) if report.encoded else 0.0,
            "path": dg.MetadataValue.path(str(path)),
            "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "none"),
            "dagster/row_count": report.memories,
        }
    )


@dg.asset_check(asset=embeddings, blocking=True, description="Exactly the live memories have a unit vector.")
def embeddings_cover_live_memories(event_store: EventStore) -> dg.AssetCheckResult:
    import numpy as np

    index = load_index(event_store)
    live = {m.key for m in event_store.read_memories() if not m.is_archived}
    indexed = set(index.keys()) if index is not None else set()
    norms = np.linalg.norm(index.vectors, axis=1) if index is not None and len(index) else np.ones(0)
    unit = bool(np.all(np.abs(norms - 1) < 1e-3))
    return dg.AssetCheckResult(
        passed=indexed == live and unit,
        metadata={"missing": len(live - indexed), "extra": len(indexed - live), "all_unit_length": unit},
    )
