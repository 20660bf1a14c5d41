"""Forget is total: what `memory.forgotten` must remove beyond the event log, and the check that it did.

The log erases a forgotten memory's payload in the append transaction, and the assets that read the
log rebuild without it (memories, embeddings, concepts, graph, tiers, cold archive, candidate sets).
What no rebuild touches is purged here: LoRA dataset versions that hold the memory, the adapters
trained on them (retired from the registry and from `Context.adapter` until retrained without it),
rejected input lines that name it, and user text in tier reasons of past days. SQLite then drops
the old page images (`secure_delete` is always on; the WAL is checkpointed and truncated)."""

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
from hms_resources.store.rejects import rejected_lines_naming, scrub_rejects

Log = Callable[[str], None]


@dataclass
class PurgeReport:
    dataset_versions: list[str] = field(default_factory=list)
    retired_runs: list[str] = field(default_factory=list)
    rejected_lines: int = 0
    tier_reasons: int = 0

    def counts(self) -> dict[str, int]:
        return {"dataset_versions": len(self.dataset_versions), "retired_adapters": len(self.retired_runs),
                "rejected_lines": self.rejected_lines, "tier_reasons": self.tier_reasons}


def purge_forgotten(store: EventStore, tracking: Any | None = None, log: Log = lambda _m: None) -> PurgeReport:
    """Remove every forgotten memory from the artifacts no rebuild touches; idempotent, and cheap when
    nothing is left to purge. `tracking` (an `MlflowTracking`) retires adapters; without it, adapters
    are only dropped from the local manifests."""
    from hms_resources.tiers.assignment import erase_tier_reasons

    report = PurgeReport()
    home = store.home
    forgotten = erasure.forgotten_memories(store)
    if not forgotten:
        return report
    report.dataset_versions = purge_datasets(home, forgotten, log)
    purged = purged_dataset_versions(home)
    if report.dataset_versions or (purged and tracking is not None):
        report.retired_runs = retire_adapters(home, purged, tracking, log)
    report.rejected_lines = scrub_rejects(home, forgotten)
    report.tier_reasons = erase_tier_reasons(store, forgotten)
    erasure.drop_erased_pages(store)
    return report


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


