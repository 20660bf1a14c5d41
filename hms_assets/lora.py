"""Knowledge crystallization: the `lora_candidate_sets` asset, the memories worth training into a
LoRA adapter per user and concept, with the curation a person applied."""

import json
import os
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
    load_candidate_sets,
    load_curation,
    save_candidate_sets,
    select_candidate_sets,
)
from hms_resources.lora_data import DataLimits, TrainingDataError, build_examples, check_examples, save_dataset
from hms_resources.tiers import current_importance
from hms_resources.tokens import TokenCounter

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


class TrainingDataConfig(dg.Config):
    max_tokens: int = DataLimits.max_tokens
    min_examples: int = DataLimits.min_examples


TRAINING_DATA_MANIFEST = "training_data.json"


@dg.asset(
    group_name="lora",
    deps=["lora_candidate_sets"],
    kinds={"huggingface"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Versioned train/eval datasets (Hugging Face `datasets`) for every approved candidate set.",
)
def lora_training_data(context: dg.AssetExecutionContext, config: TrainingDataConfig, event_store: EventStore) -> dg.MaterializeResult:
    """Only approved sets are built; a set failing a check is reported and the others are kept."""
    sets = load_candidate_sets(event_store.home / LORA_DIR)
    approved = [s for s in sets if s.status == APPROVED]
    memories = {m.key: m for m in event_store.read_memories()} if approved else {}
    counter = TokenCounter(cache_dir=event_store.home / "tokenizers")
    limits = DataLimits(max_tokens=config.max_tokens, min_examples=config.min_examples)
    built: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for candidate_set in approved:
        try:
            train, probes = build_examples(candidate_set, memories)
            figures = check_examples(candidate_set.set_id, candidate_set.user_id, train, probes, counter.count, limits)
        except TrainingDataError as exc:
            failed[candidate_set.set_id] = str(exc)
            context.log.error(str(exc))
            continue
        version, path = save_dataset(event_store.home / LORA_DIR / "datasets", candidate_set.set_id, train, probes)
        built[candidate_set.set_id] = {
            "version": version, "path": str(path), "fingerprint": candidate_set.fingerprint,
            "user_id": candidate_set.user_id, "concept_id": candidate_set.concept_id,
            "memory_ids": [e["memory_id"] for e in probes], **figures,
        }
        context.log.info(f"{candidate_set.set_id}: dataset {version} with {figures['train_examples']} examples")
    waiting = sum(1 for s in sets if s.status == PENDING)
    if not approved:
        context.log.info(f"no approved candidate set: {waiting} await curation in {event_store.home / 'curation.json'}")
    manifest = event_store.home / LORA_DIR / TRAINING_DATA_MANIFEST
    manifest.parent.mkdir(parents=True, exist_ok=True)
    partial = manifest.with_name(f".{TRAINING_DATA_MANIFEST}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"datasets": built, "failed": failed}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, manifest)
    return dg.MaterializeResult(
        metadata={
            "datasets": len(built),
            "failed_checks": len(failed),
            "awaiting_curation": waiting,
            "examples": sum(d["train_examples"] for d in built.values()),
            "datasets_table": dg.MetadataValue.md(_datasets_table(built, failed)),
            "path": dg.MetadataValue.path(str(manifest)),
        }
    )


def _datasets_table(built: dict[str, dict], failed: dict[str, str]) -> str:
    if not built and not failed:
        return "no approved candidate set"
    lines = ["| set | version | train | probes | longest tokens | problem |", "|---|---|---|---|---|---|"]
    for set_id, d in sorted(built.items()):
        lines.append(f"| {set_id} | {d['version']} | {d['train_examples']} | {d['probes']} | {d['longest_tokens']} | - |")
    for set_id, reason in sorted(failed.items()):
        lines.append(f"| {set_id} | - | - | - | - | {reason.split(': ', 1)[-1]} |")
    return "\n".join(lines)


@dg.asset_check(asset="lora_training_data", description="Every approved candidate set passed the training-data checks.")
def approved_sets_pass_data_checks(event_store: EventStore) -> dg.AssetCheckResult:
    path = event_store.home / LORA_DIR / TRAINING_DATA_MANIFEST
    failed = json.loads(path.read_text(encoding="utf-8"))["failed"] if path.exists() else {}
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failed_sets": len(failed), "problems": dg.MetadataValue.json(failed)},
    )
