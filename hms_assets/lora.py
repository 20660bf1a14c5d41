"""Knowledge crystallization: the `lora_candidate_sets` asset, the memories worth training into a
LoRA adapter per user and concept, with the curation a person applied."""

from datetime import datetime, timezone

import dagster as dg

from hms_resources.concepts import load_concepts
from hms_resources.event_store import EventStore
from hms_resources.lora_candidates import (
    APPROVED,
    PENDING,
    REJECTED,
    CandidateCriteria,
    CandidateSet,
    load_curation,
    save_candidate_sets,
    select_candidate_sets,
)
from hms_resources.tiers import current_importance

LORA_DIR = "lora"


class CandidateSetsConfig(dg.Config):
    stable_days: float = CandidateCriteria.stable_days
    min_importance: float = CandidateCriteria.min_importance
    min_confidence: float = CandidateCriteria.min_confidence
    min_accesses: int = CandidateCriteria.min_accesses
    min_concept_size: int = CandidateCriteria.min_concept_size
    min_concept_cohesion: float = CandidateCriteria.min_concept_cohesion
    min_set_size: int = CandidateCriteria.min_set_size

    def to_domain(self) -> CandidateCriteria:
        return CandidateCriteria(**self.model_dump())


@dg.asset(
    group_name="lora",
    deps=["memories", "concept_clusters", dg.AssetDep("memory_tiers", partition_mapping=dg.LastPartitionMapping())],
    kinds={"json"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Per user and concept, the stable, important, confident, accessed memories worth a LoRA adapter, and their curation.",
)
def lora_candidate_sets(context: dg.AssetExecutionContext, config: CandidateSetsConfig, event_store: EventStore) -> dg.MaterializeResult:
    """As of the newest event, not the wall clock, so a re-run over the same store selects the same sets."""
    _, last = event_store.event_time_range()
    as_of = datetime.fromisoformat(last.replace("Z", "+00:00")) if last else datetime.now(timezone.utc)
    curation = load_curation(event_store.home)
    sets = select_candidate_sets(
        event_store.read_memories(), load_concepts(event_store), current_importance(event_store), config.to_domain(), as_of, curation
    )
    path = save_candidate_sets(event_store.home / LORA_DIR, sets)
    by_status = {status: sum(1 for s in sets if s.status == status) for status in (APPROVED, PENDING, REJECTED)}
    context.log.info(f"{len(sets)} candidate sets ({by_status}) as of {as_of.isoformat()}")
    return dg.MaterializeResult(
        metadata={
            "sets": len(sets),
            **by_status,
            "memories": sum(len(s.memory_ids) for s in sets),
            "criteria": dg.MetadataValue.json(config.model_dump()),
            "candidate_sets": dg.MetadataValue.md(_sets_table(sets)),
            "path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": len(sets),
        }
    )


def _sets_table(sets: list[CandidateSet]) -> str:
    if not sets:
        return "no concept has enough candidate memories"
    lines = ["| set | concept | memories | status | left out |", "|---|---|---|---|---|"]
    for s in sets[:50]:
        left = ", ".join(f"{reason}: {count}" for reason, count in sorted(s.left_out.items()))
        lines.append(f"| {s.set_id} | {', '.join(s.label[:3])} | {len(s.memory_ids)} | {s.status} | {left or '-'} |")
    return "\n".join(lines)
