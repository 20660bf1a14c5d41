"""Knowledge crystallization: candidate sets with their curation, training datasets, trained adapters
logged to MLflow, and the LoRA registry."""

from dataclasses import asdict
from datetime import datetime, timezone

import dagster as dg

from hms_assets.plots import metric_panels_markdown
from hms_resources.common.files import read_json, write_json
from hms_resources.common.home import redact_url
from hms_resources.common.tokens import TokenCounter
from hms_resources.lora.adapters import (
    ADAPTERS_MANIFEST,
    TRAINING_DATA_MANIFEST,
    AdapterScorer,
    compare_adapters,
    config_key,
    format_comparison,
    lora_dir,
    publish_champions,
    train_logged_adapter,
    training_datasets,
    untrained,
)
from hms_resources.lora.adapters import (
    trained_adapters as read_adapters,
)
from hms_resources.lora.candidates import (
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
from hms_resources.lora.data import DataLimits, TooFewFacts, TrainingDataError, build_examples, check_examples, load_examples, save_dataset
from hms_resources.lora.registry import PromotionGate, demote_ungated, update_registry
from hms_resources.lora.routing import SetRouter
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.lora.training import TrainingConfig, TrainingFailed, load_base
from hms_resources.privacy.forget import purge_forgotten
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.concepts import assistant_replies_included, load_concepts
from hms_resources.store.event_store import EventStore
from hms_resources.tiers.assignment import current_importance

TRAINING_QUEUE = "hms-training"
"""The Celery queue of the steps that load the base model (`HMS_EXECUTOR=celery`): only workers started
for it (`hms worker -q hms-training`) take them, so training never holds up the light steps."""
TRAINING_STEP_TAGS = {"dagster-celery/queue": TRAINING_QUEUE}


class CandidateSetsConfig(dg.Config):
    stable_days: float = CandidateCriteria.stable_days
    min_importance: float = CandidateCriteria.min_importance
    min_confidence: float = CandidateCriteria.min_confidence
    min_accesses: int = CandidateCriteria.min_accesses
    min_concept_size: int = CandidateCriteria.min_concept_size
    min_concept_cohesion: float = CandidateCriteria.min_concept_cohesion
    min_set_size: int = CandidateCriteria.min_set_size
    include_assistant_replies: bool | None = None
    """Let the assistant's captured replies be candidates; None: the `HMS_INCLUDE_ASSISTANT_REPLIES` setting."""

    def to_domain(self) -> CandidateCriteria:
        chosen = self.model_dump()
        chosen["include_assistant_replies"] = assistant_replies_included(self.include_assistant_replies)
        return CandidateCriteria(**chosen)


@dg.asset(
    group_name="lora",
    deps=["memories", "concept_clusters", dg.AssetDep("memory_tiers", partition_mapping=dg.LastPartitionMapping())],
    kinds={"json"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Per user and concept, the stable, important, often used facts worth teaching the model as a LoRA "
    "adapter, each set waiting for an operator's approval (`hms lora`).",
)
def lora_candidate_sets(context: dg.AssetExecutionContext, config: CandidateSetsConfig, event_store: EventStore) -> dg.MaterializeResult:
    """As of the newest event, not the wall clock, so a re-run over the same store selects the same sets."""
    _, last = event_store.event_time_range()
    as_of = datetime.fromisoformat(last.replace("Z", "+00:00")) if last else datetime.now(timezone.utc)
    curation = load_curation(event_store.home)
    criteria = config.to_domain()
    sets = select_candidate_sets(
        event_store.read_memories(), load_concepts(event_store), current_importance(event_store), criteria, as_of, curation
    )
    path = save_candidate_sets(lora_dir(event_store.home), sets)
    by_status = {status: sum(1 for s in sets if s.status == status) for status in (APPROVED, PENDING, REJECTED)}
    context.log.info(f"{len(sets)} candidate sets ({by_status}) as of {as_of.isoformat()}")
    return dg.MaterializeResult(
        metadata={
            "sets": len(sets),
            **by_status,
            "memories": sum(len(s.memory_ids) for s in sets),
            "criteria": dg.MetadataValue.json(asdict(criteria)),
            "candidate_sets": dg.MetadataValue.md(_sets_table(sets)),
            "path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": len(sets),
        }
    )


def _sets_table(sets: list[CandidateSet]) -> str:
    if not sets:
        return "no concept has enough candidate memories"
    lines = ["| set | memories | status | left out |", "|---|---|---|---|"]
    for s in sets[:50]:
        left = ", ".join(f"{reason}: {count}" for reason, count in sorted(s.left_out.items()))
        lines.append(f"| {s.set_id} | {len(s.memory_ids)} | {s.status} | {left or '-'} |")
    return "\n".join(lines)


class TrainingDataConfig(dg.Config):
    max_tokens: int = DataLimits.max_tokens
    min_facts: int = DataLimits.min_facts
    recipe: str = TrainingConfig.recipe
    """The questions to build: `distillation` (phrases, answered by the teacher) or `imitation` (the earlier recipe)."""


@dg.asset(
    group_name="lora",
    deps=["lora_candidate_sets"],
    kinds={"huggingface"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Versioned train and eval datasets (Hugging Face `datasets`) built from every approved candidate "
    "set; the adapter training reads them.",
)
def lora_training_data(
    context: dg.AssetExecutionContext, config: TrainingDataConfig, event_store: EventStore, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """Only approved sets are built; a set failing a check is reported and the others are kept. Data of
    forgotten memories is purged first, and adapters trained on it retired."""
    purged = purge_forgotten(event_store, mlflow_tracking, log=context.log.info).counts()
    sets = load_candidate_sets(lora_dir(event_store.home))
    approved = [s for s in sets if s.status == APPROVED and s.memory_ids]
    current = {s.set_id for s in sets if s.memory_ids}
    skipped = sorted(load_curation(event_store.home).approved_sets - current)
    for set_id in skipped:
        context.log.warning(f"{set_id}: approved, but it has no candidate memories now; skipped, nothing is trained for it")
    memories = {m.key: m for m in event_store.read_memories()} if approved else {}
    counter = TokenCounter(cache_dir=event_store.home / "tokenizers")
    limits = DataLimits(max_tokens=config.max_tokens, min_facts=config.min_facts)
    built: dict[str, dict] = {}
    failed: dict[str, str] = {}
    too_few: dict[str, str] = {}
    for candidate_set in approved:
        try:
            examples = build_examples(candidate_set, memories, config.recipe)
            figures = check_examples(candidate_set.set_id, candidate_set.user_id, examples, counter.count, limits, config.recipe)
        except TooFewFacts as exc:
            too_few[candidate_set.set_id] = str(exc)
            context.log.warning(f"{exc}; not trained")
            continue
        except TrainingDataError as exc:
            failed[candidate_set.set_id] = str(exc)
            context.log.error(str(exc))
            continue
        version, path = save_dataset(lora_dir(event_store.home) / "datasets", candidate_set.set_id, examples)
        built[candidate_set.set_id] = {
            "version": version, "path": str(path), "fingerprint": candidate_set.fingerprint,
            "user_id": candidate_set.user_id, "concept_id": candidate_set.concept_id,
            "memory_ids": [f["memory_id"] for f in examples.facts], "member_digests": candidate_set.member_digests, **figures,
        }
        context.log.info(f"{candidate_set.set_id}: dataset {version}: {figures['facts']} facts, {figures['train_examples']} training "
                         f"examples, {figures['probes']} held-out questions")
    waiting = sum(1 for s in sets if s.status == PENDING)
    if not approved:
        context.log.info(f"no approved candidate set: {waiting} await curation in {event_store.home / 'curation.json'}")
    manifest = write_json(lora_dir(event_store.home) / TRAINING_DATA_MANIFEST, {"datasets": built, "failed": failed, "too_few_facts": too_few})
    return dg.MaterializeResult(
        metadata={
            "datasets": len(built),
            "failed_checks": len(failed),
            "too_few_facts": len(too_few),
            "awaiting_curation": waiting,
            "skipped_empty_sets": dg.MetadataValue.json(skipped),
            "examples": sum(d["train_examples"] for d in built.values()),
            "datasets_table": dg.MetadataValue.md(_datasets_table(built, {**too_few, **failed})),
            **{f"purged_{name}": count for name, count in purged.items()},
            "path": dg.MetadataValue.path(str(manifest)),
        }
    )


def _datasets_table(built: dict[str, dict], failed: dict[str, str]) -> str:
    if not built and not failed:
        return "no approved candidate set"
    lines = ["| set | version | facts | train | validation | held-out | longest tokens | problem |", "|---|---|---|---|---|---|---|---|"]
    for set_id, d in sorted(built.items()):
        lines.append(f"| {set_id} | {d['version']} | {d['facts']} | {d['train_examples']} | {d['validation_examples']} | {d['probes']} | "
                     f"{d['longest_tokens']} | - |")
    for set_id, reason in sorted(failed.items()):
        lines.append(f"| {set_id} | - | - | - | - | - | - | {reason.split(': ', 1)[-1]} |")
    return "\n".join(lines)


@dg.asset_check(asset="lora_training_data", description="Every approved candidate set passed the training-data checks.")
def approved_sets_pass_data_checks(event_store: EventStore) -> dg.AssetCheckResult:
    failed = read_json(lora_dir(event_store.home) / TRAINING_DATA_MANIFEST, {"failed": {}})["failed"]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failed_sets": len(failed), "problems": dg.MetadataValue.json(failed)},
    )


class AdapterTrainingConfig(dg.Config):
    base_model: str = ""
    recipe: str = TrainingConfig.recipe
    top_k: int = TrainingConfig.top_k
    answer_tokens: int = TrainingConfig.answer_tokens
    keep_tolerance: float = TrainingConfig.keep_tolerance
    layer_share: float = TrainingConfig.layer_share
    rank: int = TrainingConfig.rank
    alpha: int = TrainingConfig.alpha
    target_modules: list[str] = list(TrainingConfig.target_modules)
    learning_rate: float = TrainingConfig.learning_rate
    steps: int = TrainingConfig.steps
    batch_size: int = TrainingConfig.batch_size
    seed: int = TrainingConfig.seed
    max_new_tokens: int = TrainingConfig.max_new_tokens
    dropout: float = TrainingConfig.dropout
    rehearsal_ratio: float = TrainingConfig.rehearsal_ratio
    eval_every: int = TrainingConfig.eval_every
    patience: int = TrainingConfig.patience
    rehearsal_tolerance: float = TrainingConfig.rehearsal_tolerance

    def to_domain(self) -> TrainingConfig:
        return TrainingConfig(**{**self.model_dump(), "target_modules": tuple(self.target_modules)})


@dg.asset(
    group_name="lora",
    deps=["lora_training_data"],
    kinds={"pytorch", "mlflow"},
    pool="lora_training",
    op_tags=TRAINING_STEP_TAGS,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    description="A small LoRA adapter of the local model per training dataset, trained on the CPU, evaluated "
    "against the base model and logged to MLflow.",
)
def trained_adapters(
    context: dg.AssetExecutionContext, config: AdapterTrainingConfig, event_store: EventStore, mlflow_tracking: MlflowTracking,
    embedder: Embedder,
) -> dg.MaterializeResult:
    """A dataset version already trained under the same config is not trained again; each adapter is
    kept as soon as it is trained, and a diverging loss fails the run without retries."""
    home = event_store.home
    datasets, adapters = training_datasets(home), read_adapters(home)
    training = config.to_domain()
    todo = untrained(datasets, adapters, config_key(training))
    if not todo:
        message = "no approved training dataset" if not datasets else "every dataset is already trained with this config"
        context.log.info(message)
        return dg.MaterializeResult(metadata={"trained": 0, "adapters": len(adapters), "note": message})
    experiment_id = mlflow_tracking.experiment_id(home)
    client = mlflow_tracking.client(home)
    base = load_base(training.base_model)
    router = SetRouter.of_store(event_store, embedder)
    trained = 0
    for set_id, built in todo.items():
        try:
            entry = train_logged_adapter(set_id, built, base, training, client, experiment_id, home, log=context.log.info, router=router)
        except TrainingFailed as exc:
            raise dg.Failure(f"{set_id}: {exc}; nothing from this run is registered", allow_retries=False) from exc
        if entry is not None:
            adapters[set_id] = entry
            write_json(lora_dir(home) / ADAPTERS_MANIFEST, adapters)
            trained += 1
    lines = ["| set | run | paraphrase recall base → adapter | forced choice (chance) | leakage | general perplexity | kept step | tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    for set_id, a in sorted(adapters.items()):
        if "paraphrase_recall" not in a:
            lines.append(f"| {set_id} | {a['run_id'][:8]} | trained before the gate: judged at the next registry run | - | - | - | - | - |")
            continue
        lines.append(f"| {set_id} | {a['run_id'][:8]} | {a['base_paraphrase_recall']} → {a['paraphrase_recall']} | {a['forced_choice']} "
                     f"({a['chance']}) | {a['leakage']} | {a['general_perplexity_change']:+.1%} | {a['best_step']} | {a['tokens_per_second']} |")
    return dg.MaterializeResult(
        metadata={"trained": trained, "adapters": len(adapters), "adapters_table": dg.MetadataValue.md("\n".join(lines)),
                  "tracking_uri": redact_url(mlflow_tracking.uri(home))}
    )


class RegistryConfig(dg.Config):
    margin: float = 0.05
    """How much higher a challenger's paraphrase recall must be than the champion's on the same data."""
    max_new_tokens: int = TrainingConfig.max_new_tokens
    teacher_share: float = PromotionGate.teacher_share
    recall_margin: float = PromotionGate.recall_margin
    max_routed_leakage: float = PromotionGate.max_routed_leakage
    max_perplexity_change_off: float = PromotionGate.max_perplexity_change_off
    max_perplexity_change: float = PromotionGate.max_perplexity_change

    def gate(self) -> PromotionGate:
        return PromotionGate(**{k: getattr(self, k) for k in PromotionGate.__dataclass_fields__})


@dg.asset(
    group_name="lora",
    deps=["trained_adapters"],
    kinds={"mlflow"},
    pool="lora_training",
    op_tags=TRAINING_STEP_TAGS,
    description="Every adapter as a version of its set's model in MLflow's registry; the `champion` alias marks "
    "the one the chat endpoint loads.",
)
def lora_registry(
    context: dg.AssetExecutionContext, config: RegistryConfig, event_store: EventStore, mlflow_tracking: MlflowTracking, embedder: Embedder
) -> dg.MaterializeResult:
    """The newest adapter of a set becomes its challenger; it replaces the champion only if it passes the
    promotion gate (recall, forced choice, leakage, harm) and beats the champion's paraphrase recall on
    the same data by the margin. A champion promoted before the gate is judged once and demoted if it fails."""
    home = event_store.home
    purge_forgotten(event_store, mlflow_tracking, log=context.log.info)
    adapters = read_adapters(home)
    if not adapters:
        context.log.info("no trained adapter to register")
        return dg.MaterializeResult(metadata={"registered": 0, "note": "no trained adapter to register"})
    mlflow_tracking.experiment_id(home)
    client = mlflow_tracking.client(home)
    datasets = training_datasets(home)
    for set_id in sorted(set(adapters) - set(datasets)):
        context.log.warning(f"{set_id}: no longer an approved set with training data; its adapter is not registered or served")
        if demote_ungated(client, set_id, "its set has no training data under the gate's rules (see lora_training_data)"):
            context.log.warning(f"{set_id}: its champion, promoted before the gate and not judgeable now, is demoted")
    current = {s: a for s, a in adapters.items() if s in datasets}
    scorer = AdapterScorer(client, home, config.max_new_tokens, router=SetRouter.of_store(event_store, embedder))

    def evaluate(set_id: str, run_id: str) -> dict:
        built = datasets[set_id]
        return scorer.figures(run_id, built, load_examples(built["path"]))

    rows = update_registry(client, current, evaluate, config.gate(), config.margin)
    for row in rows:
        context.log.info(f"{row['set_id']}: {'promoted' if row['promoted'] else 'no promotion'}: {row['reason']}")
    champions = publish_champions(client, home)
    table = ["| set | champion | challenger | decision |", "|---|---|---|---|"]
    table += [f"| {r['set_id']} | {r['champion'] or '-'} | {r['challenger'] or '-'} | {r['reason']} |" for r in rows]
    return dg.MaterializeResult(
        metadata={"registered": len(current), "promoted": sum(r["promoted"] for r in rows), "demoted": sum(r["demoted"] for r in rows),
                  "champions": len(champions), "gate": dg.MetadataValue.json(asdict(config.gate())),
                  "registry": dg.MetadataValue.md("\n".join(table)), "tracking_uri": redact_url(mlflow_tracking.uri(home))}
    )


class ComparisonConfig(dg.Config):
    max_new_tokens: int = TrainingConfig.max_new_tokens


@dg.asset(
    group_name="lora",
    deps=["lora_registry"],
    kinds={"mlflow"},
    pool="lora_training",
    op_tags=TRAINING_STEP_TAGS,
    description="The base model and every registered adapter of a set, scored on the same questions (a table, a "
    "chart and MLflow runs): read it to judge whether an adapter helps.",
)
def adapter_comparison(
    context: dg.AssetExecutionContext, config: ComparisonConfig, event_store: EventStore, mlflow_tracking: MlflowTracking, embedder: Embedder
) -> dg.MaterializeResult:
    """Each set's newest probes; every evaluation is an MLflow run in the comparison experiment with the
    same metric keys, so MLflow's compare view lines them up."""
    home = event_store.home
    datasets = training_datasets(home)
    if not read_adapters(home):
        context.log.info("no registered adapter to compare")
        return dg.MaterializeResult(metadata={"compared": 0, "note": "no registered adapter to compare"})
    experiment_id = mlflow_tracking.comparison_experiment_id(home)
    client = mlflow_tracking.client(home)
    scorer = AdapterScorer(client, home, config.max_new_tokens, router=SetRouter.of_store(event_store, embedder))
    rows = compare_adapters(client, experiment_id, datasets, scorer, home, log=context.log.info)
    gate = PromotionGate()
    chart = metric_panels_markdown(
        [f"{r['set_id']} {r['model']}" + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "") for r in rows],
        [("recall without the facts (teacher with them: %s)" % ", ".join(sorted({str(r["teacher_paraphrase_recall"]) for r in rows})),
          [r["paraphrase_recall"] for r in rows], None),
         ("forced choice", [r["forced_choice"] for r in rows], None),
         ("routed leakage", [r["routed_leakage"] for r in rows], gate.max_routed_leakage),
         ("general perplexity change, routed on", [r["general_perplexity_change"] for r in rows], gate.max_perplexity_change)],
        title="recall, leakage and harm on each set's held-out data", highlight=[r["model"] != "base" for r in rows],
    )
    return dg.MaterializeResult(
        metadata={"compared": len(rows), "sets": len({r["set_id"] for r in rows}),
                  "comparison": dg.MetadataValue.md(format_comparison(rows)), "chart": dg.MetadataValue.md(chart),
                  "experiment_id": experiment_id, "tracking_uri": redact_url(mlflow_tracking.uri(home))}
    )
