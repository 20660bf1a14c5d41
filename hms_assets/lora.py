"""Knowledge crystallization: candidate sets with their curation, training datasets, trained adapters
logged to MLflow, and the LoRA registry."""

import hashlib
import json
from datetime import datetime, timezone

import dagster as dg

from hms_resources.concepts import load_concepts
from hms_resources.event_store import EventStore
from hms_resources.jsonfile import read_json, write_json
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
from hms_resources.lora_registry import CHALLENGER, CHAMPION, alias_version, decide_promotion, model_name, promote, register_version
from hms_resources.lora_training import (
    TrainingConfig,
    TrainingFailed,
    base_name,
    evaluate,
    load_adapter,
    load_base,
    save_adapter,
    train_adapter,
)
from hms_resources.mlflow_tracking import MlflowTracking, masked
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
    manifest = write_json(event_store.home / LORA_DIR / TRAINING_DATA_MANIFEST, {"datasets": built, "failed": failed})
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
    failed = read_json(event_store.home / LORA_DIR / TRAINING_DATA_MANIFEST, {"failed": {}})["failed"]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failed_sets": len(failed), "problems": dg.MetadataValue.json(failed)},
    )


class AdapterTrainingConfig(dg.Config):
    base_model: str = ""
    rank: int = TrainingConfig.rank
    alpha: int = TrainingConfig.alpha
    target_modules: list[str] = list(TrainingConfig.target_modules)
    learning_rate: float = TrainingConfig.learning_rate
    steps: int = TrainingConfig.steps
    batch_size: int = TrainingConfig.batch_size
    seed: int = TrainingConfig.seed
    max_new_tokens: int = TrainingConfig.max_new_tokens

    def to_domain(self) -> TrainingConfig:
        return TrainingConfig(**{**self.model_dump(), "target_modules": tuple(self.target_modules)})


ADAPTERS_MANIFEST = "adapters.json"


@dg.asset(
    group_name="lora",
    deps=["lora_training_data"],
    kinds={"pytorch", "mlflow"},
    pool="lora_training",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    description="A PEFT LoRA adapter per training dataset, evaluated against the base model and logged to MLflow.",
)
def trained_adapters(
    context: dg.AssetExecutionContext, config: AdapterTrainingConfig, event_store: EventStore, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """A dataset version already trained under the same config is not trained again; a diverging
    loss fails the run without retries, and nothing from it is kept."""
    datasets_built = read_json(event_store.home / LORA_DIR / TRAINING_DATA_MANIFEST, {"datasets": {}})["datasets"]
    adapters_path = event_store.home / LORA_DIR / ADAPTERS_MANIFEST
    adapters = read_json(adapters_path, {})
    training = config.to_domain()
    config_key = hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
    todo = {s: d for s, d in sorted(datasets_built.items()) if adapters.get(s, {}).get("key") != f"{d['version']}:{config_key}"}
    if not todo:
        message = "no approved training dataset" if not datasets_built else "every dataset is already trained with this config"
        context.log.info(message)
        return dg.MaterializeResult(metadata={"trained": 0, "adapters": len(adapters), "note": message})
    experiment_id = mlflow_tracking.experiment_id(event_store.home)
    client = mlflow_tracking.client(event_store.home)
    model, tokenizer = load_base(training.base_model)
    for set_id, built in todo.items():
        from datasets import load_from_disk

        data = load_from_disk(built["path"])
        rows, probes = data["train"].to_list(), data["eval"].to_list()
        base_scores = evaluate(model, tokenizer, probes, training.max_new_tokens)
        run = client.create_run(experiment_id, run_name=f"{set_id} {built['version']}", tags={
            "hms.set_id": set_id, "hms.user_id": built["user_id"], "hms.concept_id": built["concept_id"],
            "hms.dataset_version": built["version"], "hms.fingerprint": built["fingerprint"],
            "hms.memory_ids_sha256": hashlib.sha256("\n".join(sorted(built["memory_ids"])).encode()).hexdigest(),
        })
        run_id = run.info.run_id
        params = {"base_model": base_name(training), "rank": training.rank, "alpha": training.alpha,
                  "target_modules": ",".join(training.target_modules), "learning_rate": training.learning_rate,
                  "steps": training.steps, "batch_size": training.batch_size, "dataset_version": built["version"]}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        try:
            result = train_adapter(model, tokenizer, rows, training,
                                   on_step=lambda step, loss: client.log_metric(run_id, "loss", loss, step=step))
        except TrainingFailed as exc:
            client.set_terminated(run_id, status="FAILED")
            raise dg.Failure(f"{set_id}: {exc}", allow_retries=False) from exc
        try:
            scores = evaluate(result.adapter, tokenizer, probes, training.max_new_tokens)
            directory = save_adapter(result.adapter, event_store.home / LORA_DIR / "adapters" / run_id)
        finally:
            result.adapter.unload()
        metrics = {"perplexity": scores["perplexity"], "fact_recall": scores["fact_recall"],
                   "base_perplexity": base_scores["perplexity"], "base_fact_recall": base_scores["fact_recall"],
                   "tokens_per_second": round(result.tokens_per_second, 2)}
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_artifacts(run_id, str(directory), "adapter")
        client.set_terminated(run_id, status="FINISHED")
        adapters[set_id] = {"key": f"{built['version']}:{config_key}", "run_id": run_id, "path": str(directory), **metrics}
        context.log.info(f"{set_id}: fact recall {base_scores['fact_recall']} -> {scores['fact_recall']}, perplexity "
                         f"{base_scores['perplexity']} -> {scores['perplexity']} (run {run_id})")
    write_json(adapters_path, adapters)
    lines = ["| set | run | fact recall base → adapter | perplexity base → adapter |", "|---|---|---|---|"]
    for set_id, a in sorted(adapters.items()):
        lines.append(f"| {set_id} | {a['run_id'][:8]} | {a['base_fact_recall']} → {a['fact_recall']} | {a['base_perplexity']} → {a['perplexity']} |")
    return dg.MaterializeResult(
        metadata={"trained": len(todo), "adapters": len(adapters), "adapters_table": dg.MetadataValue.md("\n".join(lines)),
                  "tracking_uri": masked(mlflow_tracking.uri(event_store.home))}
    )


class RegistryConfig(dg.Config):
    margin: float = 0.05
    """How much higher a challenger's fact recall must be than the champion's on the same probes."""
    max_new_tokens: int = TrainingConfig.max_new_tokens


@dg.asset(
    group_name="lora",
    deps=["trained_adapters"],
    kinds={"mlflow"},
    pool="lora_training",
    description="Every adapter as a version of its set's registered model, with champion and challenger aliases.",
)
def lora_registry(
    context: dg.AssetExecutionContext, config: RegistryConfig, event_store: EventStore, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """The newest adapter of a set becomes its challenger; it replaces the champion only if it beats it
    on the challenger's own probes, both evaluated here, by the margin, and beats the base model."""
    lora_dir = event_store.home / LORA_DIR
    adapters = read_json(lora_dir / ADAPTERS_MANIFEST, {})
    if not adapters:
        context.log.info("no trained adapter to register")
        return dg.MaterializeResult(metadata={"registered": 0, "note": "no trained adapter to register"})
    mlflow_tracking.experiment_id(event_store.home)
    client = mlflow_tracking.client(event_store.home)
    datasets_built = read_json(lora_dir / TRAINING_DATA_MANIFEST, {"datasets": {}})["datasets"]
    base = None
    rows = ["| set | champion | challenger | decision |", "|---|---|---|---|"]
    for set_id, adapter in sorted(adapters.items()):
        version = register_version(client, set_id, adapter["run_id"])
        champion = alias_version(client, set_id, CHAMPION)
        if champion is not None and champion.run_id == adapter["run_id"]:
            rows.append(f"| {set_id} | {champion.version} | - | already champion |")
            continue
        client.set_registered_model_alias(model_name(set_id), CHALLENGER, str(version.version))
        challenger_scores = {"fact_recall": adapter["fact_recall"], "base_fact_recall": adapter["base_fact_recall"]}
        champion_scores = None
        if champion is not None:
            from datasets import load_from_disk

            if base is None:
                base = load_base(TrainingConfig().base_model)
            model, tokenizer = base
            probes = load_from_disk(datasets_built[set_id]["path"])["eval"].to_list()
            loaded = load_adapter(model, lora_dir / "adapters" / champion.run_id)
            try:
                champion_scores = evaluate(loaded, tokenizer, probes, config.max_new_tokens)
            finally:
                loaded.unload()
        decision = decide_promotion(challenger_scores, champion_scores, config.margin)
        if decision.promote:
            promote(client, set_id, version.version, decision.reason)
        context.log.info(f"{set_id}: version {version.version} {'promoted' if decision.promote else 'kept as challenger'}: {decision.reason}")
        rows.append(f"| {set_id} | {champion.version if champion else '-'} | {version.version} | {decision.reason} |")
    return dg.MaterializeResult(
        metadata={"registered": len(adapters), "registry": dg.MetadataValue.md("\n".join(rows)),
                  "tracking_uri": masked(mlflow_tracking.uri(event_store.home))}
    )
