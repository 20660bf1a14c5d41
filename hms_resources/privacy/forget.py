"""Forget is total when acknowledged: what `memory.forgotten` must remove beyond the event log, and
the check that it did.

The append that forgets erases the memory's payloads and what the assets derived from it in the
database (the memories row, concept memberships and summaries, graph edges: `append.erase_derived`).
The files are purged here, before the forget answers (`MemoryWriter.forget`): the memory's vector
in the embedding index, its rows in the cold archive, LoRA candidate sets and the dataset versions
that hold it, the adapters trained on them (retired from the registry and from `Context.adapter`
until retrained without it), rejected input lines that name it, user text in tier reasons of past
days, and its node on the graph server when one is configured. SQLite then drops the old page images
(`secure_delete` is always on; the WAL is checkpointed and truncated)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hms_resources.lora.purge import (
    dataset_members,
    dataset_versions,
    purge_datasets,
    purged_dataset_versions,
    registered_on,
    retire_adapters,
)
from hms_resources.store import erasure
from hms_resources.store.event_store import EventStore
from hms_resources.store.memory_state import MemoryKey
from hms_resources.store.rejects import rejected_lines_naming, scrub_rejects

Log = Callable[[str], None]


@dataclass
class PurgeReport:
    dataset_versions: list[str] = field(default_factory=list)
    retired_runs: list[str] = field(default_factory=list)
    rejected_lines: int = 0
    tier_reasons: int = 0
    vectors: int = 0
    cold_archive_rows: int = 0
    candidate_sets: int = 0
    graph_users: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"dataset_versions": len(self.dataset_versions), "retired_adapters": len(self.retired_runs),
                "rejected_lines": self.rejected_lines, "tier_reasons": self.tier_reasons, "vectors": self.vectors,
                "cold_archive_rows": self.cold_archive_rows, "candidate_sets": self.candidate_sets,
                "graph_users_synced": len(self.graph_users)}


def purge_forgotten(
    store: EventStore, tracking: Any | None = None, log: Log = lambda _m: None, *, keys: set[MemoryKey] | None = None, graph_store: Any | None = None
) -> PurgeReport:
    """Remove forgotten memories (`keys`, else every one) from the files under the home and the rows
    no append touches; idempotent, and cheap when nothing is left to purge. `tracking` (an
    `MlflowTracking`) retires adapters; without it, adapters are only dropped from the local
    manifests. `graph_store` (a configured `GraphStore`) has the users' graphs synced now."""
    from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, drop_vectors
    from hms_resources.tiers.archive import COLD_ARCHIVE_DIR, drop_from_cold_archive
    from hms_resources.tiers.assignment import erase_tier_reasons

    report = PurgeReport()
    home = store.home
    forgotten = erasure.forgotten_memories(store) if keys is None else keys
    if not forgotten:
        return report
    report.vectors = drop_vectors(home / EMBEDDINGS_DIR, forgotten)
    report.cold_archive_rows = drop_from_cold_archive(home / COLD_ARCHIVE_DIR, forgotten)
    report.candidate_sets = drop_from_candidate_sets(store, forgotten)
    report.dataset_versions = purge_datasets(home, forgotten, log)
    purged = purged_dataset_versions(home)
    if report.dataset_versions or (keys is None and purged and tracking is not None):
        report.retired_runs = retire_adapters(home, purged, tracking, log)
    report.rejected_lines = scrub_rejects(home, forgotten)
    report.tier_reasons = erase_tier_reasons(store, forgotten)
    if graph_store is not None:
        report.graph_users = sync_graphs(store, graph_store, {u for u, _ in forgotten}, log)
    erasure.drop_erased_pages(store)
    return report


def forget_at_acknowledgement(store: EventStore, keys: set[MemoryKey], log: Log = lambda _m: None) -> PurgeReport:
    """What a forget does after its append and before it answers: the files and servers the append's
    transaction cannot reach, purged of `keys` (the registry and the graph server when configured)."""
    from hms_resources.lora.tracking import MlflowTracking
    from hms_resources.semantic.graph_store import GraphStore

    tracking = MlflowTracking.from_env()
    graph_store = GraphStore.from_env()
    try:
        return purge_forgotten(store, tracking if tracking.in_use(store.home) else None, log, keys=keys,
                               graph_store=graph_store if graph_store.configured else None)
    finally:
        graph_store.close()


def drop_from_candidate_sets(store: EventStore, keys: set[MemoryKey]) -> int:
    """Take forgotten memories out of the LoRA candidate sets (their label becomes their concept's,
    which the forget left without the memory's words). Returns the sets changed."""
    from hms_resources.lora.adapters import lora_dir
    from hms_resources.lora.candidates import load_candidate_sets, save_candidate_sets
    from hms_resources.semantic.concepts import load_concepts

    directory = lora_dir(store.home)
    sets = load_candidate_sets(directory)
    changed = [s for s in sets if any((s.user_id, m) in keys for m in s.memory_ids)]
    for s in changed:
        labels = {c.concept_id: c.label for c in load_concepts(store, user_id=s.user_id)}
        s.memory_ids = [m for m in s.memory_ids if (s.user_id, m) not in keys]
        s.member_digests = {m: d for m, d in s.member_digests.items() if (s.user_id, m) not in keys}
        s.label = [word for word in s.label if word in labels.get(s.concept_id, ())]
    if changed:
        save_candidate_sets(directory, sets)
    return len(changed)


def sync_graphs(store: EventStore, graph_store: Any, user_ids: set[str], log: Log) -> list[str]:
    """The users' graphs on the graph server made equal to the store's now (the forgotten memory's node
    and edges deleted, its concepts rewritten), as `neo4j_graph` would; a server that cannot be reached
    is logged and left to that asset's next run, which completes the sync."""
    from hms_resources.semantic.concepts import load_concepts
    from hms_resources.semantic.graph import build_nodes, load_edges

    synced = []
    for user_id in sorted(user_ids):
        nodes = build_nodes(store.read_memories(user_id=user_id), load_concepts(store, user_id=user_id))
        try:
            graph_store.sync(nodes, load_edges(store, user_id), user_ids=[user_id])
        except Exception as exc:  # noqa: BLE001 - the forget is stored; the graph catches up at the next neo4j_graph run
            log(f"graph server {graph_store.server}: could not sync user {user_id!r} now ({type(exc).__name__}); the next neo4j_graph run will")
            continue
        synced.append(user_id)
    return synced


@dataclass(frozen=True)
class Check:
    place: str
    clean: bool
    detail: str


def verify_forgotten(store: EventStore, user_id: str, memory_id: str, tracking: Any | None = None) -> list[Check]:
    """Every place a memory's text or a model trained on it could be, checked for one forgotten memory."""
    from hms_resources.lora.adapters import load_champions, lora_dir, trained_adapters, training_datasets
    from hms_resources.lora.candidates import load_candidate_sets
    from hms_resources.semantic.concepts import load_concepts
    from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, EmbeddingIndex
    from hms_resources.semantic.graph import load_edges
    from hms_resources.semantic.graph_model import memory_node_key
    from hms_resources.tiers.archive import COLD_ARCHIVE_DIR, read_cold_archive
    from hms_resources.tiers.assignment import tier_reasons_with_user_text

    home, key = store.home, (user_id, memory_id)
    checks: list[Check] = []

    def check(place: str, clean: bool, ok: str, remains: str) -> None:
        checks.append(Check(place, clean, ok if clean else remains))

    status = store.memory_statuses([key]).get(key)
    check("event log: status", status == "forgotten", "forgotten", f"the memory is {status or 'not in the store'}")
    unerased = erasure.unerased_events(store, user_id, memory_id)
    check("event log: payloads", unerased == 0, "every event of the memory is erased", f"{unerased} event(s) still hold what the user said")
    [memory] = store.load_memories([key]).values() or [None]
    held = memory is not None and (memory.content is not None or memory.metadata or memory.context or memory.archive_reason)
    check("memories table", not held, "a tombstone without content" if memory else "no row",
          "the row still holds content: run the memories job")
    concepts = [c.concept_id for c in load_concepts(store, user_id=user_id) if memory_id in c.member_ids or memory_id in c.summary_member_ids]
    check("concepts table", not concepts, "in no concept or summary", f"in concept(s) {', '.join(concepts)}: run concept_clusters")
    node = memory_node_key(user_id, memory_id)
    edges = [e for e in load_edges(store, user_id) if node in (e.source, e.target)]
    check("graph_edges table", not edges, "no edge", f"{len(edges)} edge(s): run graph_edges (and neo4j_graph)")
    index = EmbeddingIndex.load(home / EMBEDDINGS_DIR)
    indexed = index is not None and key in set(index.keys())
    check("embedding index", not indexed, "no vector", "a vector remains: run embeddings")
    reasons = tier_reasons_with_user_text(store, [key])
    check("memory tiers (every day)", reasons == 0, "ids, scores and reasons only (no user text)", f"{reasons} reason(s) quote the user")
    cold = [r for r in read_cold_archive(home / COLD_ARCHIVE_DIR, user_id) if r["memory_id"] == memory_id]
    check("cold archive (Parquet)", not cold, "not archived", "still in the cold archive: run cold_archive_job")
    sets = [s.set_id for s in load_candidate_sets(lora_dir(home)) if s.user_id == user_id and memory_id in s.memory_ids]
    check("LoRA candidate sets", not sets, "in no set", f"in set(s) {', '.join(sets)}: run lora_job")
    holding = [v for v, path in dataset_versions(home) if key in dataset_members(path)]
    check("LoRA dataset versions", not holding, "no version holds it", f"held by version(s) {', '.join(holding)}")
    manifest = [s for s, d in training_datasets(home).items() if memory_id in d.get("memory_ids", ()) and d.get("user_id") == user_id]
    check("LoRA training manifest", not manifest, "no current dataset names it", f"named by {', '.join(manifest)}")
    purged = purged_dataset_versions(home)
    stale = [s for s, a in trained_adapters(home).items() if a.get("key", "").split(":")[0] in purged]
    check("LoRA adapters manifest", not stale, "no adapter trained on a purged dataset", f"adapter(s) of {', '.join(stale)} trained on one")
    served = [c["set_id"] for c in load_champions(home) if c.get("dataset_version") in purged or c["set_id"] in stale]
    check("Context.adapter (champions.json)", not served, "no champion trained on a purged dataset",
          f"champion(s) of {', '.join(served)} still served")
    if tracking is not None and tracking.in_use(home):
        registered = registered_on(tracking, home, purged)
        check("MLflow registry", not registered, "no version trained on a purged dataset", f"{', '.join(registered)} still registered")
    naming = rejected_lines_naming(home, key)
    check("rejected lines", naming == 0, "no raw line names it", f"{naming} raw line(s) name it")
    clean, detail = erasure.erased_pages_state(store)
    checks.append(Check("database files", clean, detail))
    return checks


