"""The `concept_clusters` asset: concept compaction per user, with stable concept ids."""

import dagster as dg

from hms_assets.plots import histogram_markdown
from hms_assets.semantic.embeddings import require_index
from hms_resources.semantic.concepts import (
    Concept,
    ConceptConfig,
    assistant_replies_included,
    build_concepts,
    load_concepts,
    save_concepts,
)
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore


class ConceptsConfig(dg.Config):
    distance_threshold: float = ConceptConfig.distance_threshold
    min_size: int = ConceptConfig.min_size
    summary_token_budget: int = ConceptConfig.summary_token_budget
    include_assistant_replies: bool | None = None
    """Cluster the assistant's captured replies too; None: the `HMS_INCLUDE_ASSISTANT_REPLIES` setting."""

    def to_domain(self) -> ConceptConfig:
        return ConceptConfig(
            distance_threshold=self.distance_threshold,
            min_size=self.min_size,
            summary_token_budget=self.summary_token_budget,
            include_assistant_replies=assistant_replies_included(self.include_assistant_replies),
        )


def compute_concepts(
    event_store: EventStore, embedder: Embedder, config: ConceptConfig, previous: list[Concept]
) -> dict[str, list[Concept]]:
    """Every user's concepts from the current memories and embedding index."""
    index = require_index(event_store)
    memories = {m.key: m for m in event_store.read_memories()}
    previous_by_user: dict[str, list[Concept]] = {}
    for concept in previous:
        previous_by_user.setdefault(concept.user_id, []).append(concept)
    result = {}
    for user_id in sorted(set(index.user_ids.tolist())):
        memory_ids, vectors = index.for_user(user_id)
        user_memories = [memories[(user_id, m)] for m in memory_ids]
        result[user_id] = build_concepts(
            user_id, user_memories, vectors, previous_by_user.get(user_id, []), config, embedder.count_tokens
        )
    for user_id in previous_by_user.keys() - result.keys():
        result[user_id] = []
    return result


@dg.asset(
    group_name="semantic",
    deps=["embeddings"],
    kinds={"scikitlearn"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Per user, groups of related memories (concepts) with keywords and a short summary, clustered from "
    "the embeddings. Tiers, the graph and the LoRA candidates read them.",
)
def concept_clusters(
    context: dg.AssetExecutionContext, config: ConceptsConfig, event_store: EventStore, embedder: Embedder
) -> dg.MaterializeResult:
    previous = load_concepts(event_store)
    domain = config.to_domain()
    concepts = compute_concepts(event_store, embedder, domain, previous)
    save_concepts(event_store, concepts)
    everything = [c for user_concepts in concepts.values() for c in user_concepts]
    kept = {c.concept_id for c in previous} & {c.concept_id for c in everything}
    member_tokens = sum(c.member_tokens for c in everything)
    summary_tokens = sum(c.summary_tokens for c in everything)
    largest = sorted(everything, key=lambda c: (-c.size, c.concept_id))[:15]
    context.log.info(f"{len(everything)} concepts for {len(concepts)} users ({len(kept)} ids carried over)")
    return dg.MaterializeResult(
        metadata={
            "concepts": len(everything),
            "users": len(concepts),
            "ids_carried_over": len(kept),
            "clustered_memories": sum(c.size for c in everything),
            "member_tokens": member_tokens,
            "summary_tokens": summary_tokens,
            "compaction_ratio": round(member_tokens / max(summary_tokens, 1), 2),
            "distance_threshold": config.distance_threshold,
            "min_size": config.min_size,
            "summary_token_budget": config.summary_token_budget,
            "include_assistant_replies": domain.include_assistant_replies,
            "size_histogram": dg.MetadataValue.md(
                histogram_markdown([c.size for c in everything], title="Concept sizes", xlabel="members")
            ),
            "largest_concepts": dg.MetadataValue.md(_concept_table(largest)),
            "dagster/row_count": len(everything),
        }
    )


def _concept_table(concepts: list[Concept]) -> str:
    """Figures only: metadata outlives the memories (a forgotten memory's words must not stay in the run
    history), so labels and summaries are read from the store, not from here."""
    lines = ["| concept | user | size | cohesion | member tokens | summary tokens |", "|---|---|---|---|---|---|"]
    for c in concepts:
        cells = [c.concept_id, c.user_id, str(c.size), f"{c.cohesion:.2f}", str(c.member_tokens), str(c.summary_tokens)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def _config_used(context: dg.AssetCheckExecutionContext) -> ConceptConfig:
    """The clustering config of the latest materialization, from its metadata."""
    event = context.instance.get_latest_materialization_event(concept_clusters.key)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    defaults = ConceptConfig()
    return ConceptConfig(
        distance_threshold=float(metadata["distance_threshold"].value) if "distance_threshold" in metadata else defaults.distance_threshold,
        min_size=int(metadata["min_size"].value) if "min_size" in metadata else defaults.min_size,
        summary_token_budget=int(metadata["summary_token_budget"].value)
        if "summary_token_budget" in metadata
        else defaults.summary_token_budget,
        include_assistant_replies=bool(metadata["include_assistant_replies"].value)
        if "include_assistant_replies" in metadata
        else defaults.include_assistant_replies,
    )


@dg.asset_check(asset=concept_clusters, blocking=True, description="Every summary fits its token budget.")
def concept_summaries_within_budget(context: dg.AssetCheckExecutionContext, event_store: EventStore) -> dg.AssetCheckResult:
    budget = _config_used(context).summary_token_budget
    over = [c.concept_id for c in load_concepts(event_store) if c.summary_tokens > budget]
    return dg.AssetCheckResult(passed=not over, metadata={"over_budget": len(over), "budget": budget})


@dg.asset_check(
    asset=concept_clusters, blocking=True, description="Every live memory is in at most one concept (or noise)."
)
def memories_in_at_most_one_concept(event_store: EventStore) -> dg.AssetCheckResult:
    seen: dict[tuple[str, str], int] = {}
    for concept in load_concepts(event_store):
        for memory_id in concept.member_ids:
            key = (concept.user_id, memory_id)
            seen[key] = seen.get(key, 0) + 1
    live = {m.key for m in event_store.read_memories() if not m.is_archived}
    repeated = sum(1 for n in seen.values() if n > 1)
    not_live = sum(1 for key in seen if key not in live)
    return dg.AssetCheckResult(
        passed=repeated == 0 and not_live == 0,
        metadata={"in_several_concepts": repeated, "not_live": not_live, "clustered": len(seen)},
    )


@dg.asset_check(
    asset=concept_clusters,
    blocking=True,
    description="Re-clustering the same data gives the same concepts under the same ids.",
)
def concept_ids_stable(
    context: dg.AssetCheckExecutionContext, event_store: EventStore, embedder: Embedder
) -> dg.AssetCheckResult:
    stored = load_concepts(event_store)
    again = compute_concepts(event_store, embedder, _config_used(context), stored)
    before = {(c.user_id, c.concept_id): sorted(c.member_ids) for c in stored}
    after = {(c.user_id, c.concept_id): sorted(c.member_ids) for cs in again.values() for c in cs}
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    return dg.AssetCheckResult(
        passed=not changed,
        metadata={"concepts": len(before), "changed": len(changed)},
    )

