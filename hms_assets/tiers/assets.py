"""Memory tiers: the daily `memory_tiers` assignment and its `tier_migrations` log, and the
`cold_archive` they leave behind."""

from collections import Counter
from datetime import date, timedelta

import dagster as dg

from hms_assets.tiers.partitions import DAY, USER_SHARD, build_daily_user_shard_partitions, users_of_shard
from hms_resources.semantic.concepts import load_concepts
from hms_resources.store.event_store import EventStore
from hms_resources.tiers.access_predictor import load_predictor, save_predictor, train_and_evaluate, weekly_samples
from hms_resources.tiers.archive import COLD_ARCHIVE_DIR, write_cold_archive
from hms_resources.tiers.assignment import TieringConfig, TierMigration, TierSnapshot, backfill_tiers, save_tier_partition
from hms_resources.tiers.importance import TIER_NAMES, ImportanceConfig, TierConfig

MODELS_DIR = "models"


class TiersConfig(dg.Config):
    hot_capacity: int = TierConfig.hot_capacity
    warm_capacity: int = TierConfig.warm_capacity
    cold_capacity: int = TierConfig.cold_capacity
    hot_threshold: float = TierConfig.hot_threshold
    warm_threshold: float = TierConfig.warm_threshold
    recency_half_life_days: float = ImportanceConfig.recency_half_life_days
    access_half_life_days: float = ImportanceConfig.access_half_life_days
    use_predictor: str = "auto"
    """`auto`: feed the access predictor into the score only if it beat the heuristic; `on`; `off`."""

    def to_domain(self) -> TieringConfig:
        return TieringConfig(
            importance=ImportanceConfig(
                recency_half_life_days=self.recency_half_life_days, access_half_life_days=self.access_half_life_days
            ),
            tiers=TierConfig(
                hot_capacity=self.hot_capacity,
                warm_capacity=self.warm_capacity,
                cold_capacity=self.cold_capacity,
                hot_threshold=self.hot_threshold,
                warm_threshold=self.warm_threshold,
            ),
        )


TIERING_CONFIG = "tiering_config"
"""The `memory_tiers` metadata entry that records the config a migration ran with."""


def last_migration_config(instance: dg.DagsterInstance) -> TiersConfig:
    """The config the latest tier migration ran with (the defaults before any has run), so the
    overflow sensor and the access predictor judge by the capacities and half-lives in use."""
    event = instance.get_latest_materialization_event(dg.AssetKey("memory_tiers"))
    recorded = event.asset_materialization.metadata.get(TIERING_CONFIG) if event and event.asset_materialization else None
    return TiersConfig(**recorded.value) if recorded is not None else TiersConfig()


def build_assets() -> list[dg.AssetsDefinition]:
    """The assets partitioned by the environment (`HMS_TIERS_START_DATE`, `HMS_USER_SHARDS`), built when
    the definitions are built (`hms_assets.domain_assets`)."""
    partitions = build_daily_user_shard_partitions()

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                "memory_tiers",
                deps=["memories", "concept_clusters", "access_predictor"],
                group_name="tiers",
                kinds={"sql"},
                description="For each day and user shard: whether each memory is hot, warm, cold or archived, and the "
                "importance score that placed it. The context resource reads the latest day.",
            ),
            dg.AssetSpec(
                "tier_migrations",
                deps=["memories", "concept_clusters"],
                group_name="tiers",
                kinds={"sql"},
                description="For each day and user shard: the memories that changed tier since the day before, from where to "
                "where and why. Operators read it to see why a memory went cold.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                "tiers_within_capacity",
                asset="memory_tiers",
                blocking=True,
                description="No user holds more memories in a tier than the capacity this run was configured with.",
            )
        ],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def memory_tier_migration(context: dg.AssetExecutionContext, config: TiersConfig, event_store: EventStore):
        """Tiers for day D of a user shard come from that shard's events up to the end of D and the config
        alone, so partitions can be backfilled in any order, in parallel, and twice with identical
        results. A run's days of one shard are computed from one read of the log."""
        yield from _migrate_tiers(context, config, event_store, partitions)

    return [memory_tier_migration]


def _migrate_tiers(
    context: dg.AssetExecutionContext, config: TiersConfig, event_store: EventStore, partitions: dg.MultiPartitionsDefinition
):
    tiering = config.to_domain()
    concepts = load_concepts(event_store)
    predict = load_predictor(event_store.home / MODELS_DIR, config.use_predictor)
    keys_by_shard: dict[int, dict[date, str]] = {}
    for key in context.partition_keys:
        dimensions = partitions.get_partition_key_from_str(key).keys_by_dimension
        keys_by_shard.setdefault(int(dimensions[USER_SHARD]), {})[date.fromisoformat(dimensions[DAY])] = key
    run = {  # true of every partition of the run, shown after each partition's own counts
        "access_predictor_used": predict is not None,
        TIERING_CONFIG: dg.MetadataValue.json(config.model_dump()),
        "partitions_in_run": len(context.partition_keys),
    }
    sizes: dict[str, dict[str, int]] = {}
    for shard, keys in sorted(keys_by_shard.items()):
        users = users_of_shard(shard)
        current = None
        for day, current, day_moves in backfill_tiers(event_store, sorted(keys), concepts, tiering, predict, users):
            save_tier_partition(event_store, day, current, day_moves, users)
            context.log.info(f"{day} shard {shard}: {len(current.memory_ids)} memories placed, {len(day_moves)} moved")
            _describe_partition(context, keys[day], current, day_moves, run)
        if current is not None:
            sizes.update(current.sizes())
    yield dg.MaterializeResult(asset_key="memory_tiers")
    limits = tiering.tiers
    over = [
        user
        for user, c in sizes.items()
        if c["hot"] > limits.hot_capacity or c["warm"] > limits.warm_capacity or c["cold"] > limits.cold_capacity
    ]
    yield dg.AssetCheckResult(
        check_name="tiers_within_capacity",
        asset_key="memory_tiers",
        passed=not over,
        metadata={"users": len(sizes), "users_over_capacity": len(over), "hot_capacity": limits.hot_capacity,
                  "warm_capacity": limits.warm_capacity, "cold_capacity": limits.cold_capacity},
    )
    yield dg.MaterializeResult(asset_key="tier_migrations")


def _describe_partition(
    context: dg.AssetExecutionContext, key: str, current: TierSnapshot, moves: list[TierMigration], run: dict
) -> None:
    """The metadata of one (day, user shard) partition: that shard's counts on that day, never the run's
    totals, so a shard with no memory shows zeros in the UI; then what the whole run shares (`run`)."""
    sizes = current.sizes()
    totals: Counter = Counter()
    for counts in sizes.values():
        totals.update(counts)
    context.add_asset_metadata(
        {
            "as_of": current.as_of,
            "users": len(sizes),
            **{tier: int(totals.get(tier, 0)) for tier in TIER_NAMES},
            "tier_sizes_per_user": dg.MetadataValue.md(_sizes_table(sizes)),
            "dagster/row_count": len(current.memory_ids),
            **run,
        },
        asset_key="memory_tiers",
        partition_key=key,
    )
    transitions = Counter(f"{m.from_tier or 'new'} → {m.to_tier or 'forgotten'}" for m in moves)
    movers = sorted((m for m in moves if m.score_change is not None), key=lambda m: -abs(m.score_change))[:10]
    context.add_asset_metadata(
        {
            "migrations": len(moves),
            "transitions": dg.MetadataValue.md(_transitions_table(transitions)),
            "biggest_movers": dg.MetadataValue.md(_movers_table(movers)),
            "dagster/row_count": len(moves),
            "partitions_in_run": run["partitions_in_run"],
        },
        asset_key="tier_migrations",
        partition_key=key,
    )


def _transitions_table(transitions: Counter) -> str:
    if not transitions:
        return "no memory moved"
    lines = ["| transition | memories |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in transitions.most_common(12)]
    return "\n".join(lines)


def _sizes_table(sizes: dict[str, dict[str, int]]) -> str:
    lines = ["| user | hot | warm | cold | archived |", "|---|---|---|---|---|"]
    for user_id in sorted(sizes)[:50]:
        c = sizes[user_id]
        lines.append(f"| {user_id} | {c['hot']} | {c['warm']} | {c['cold']} | {c['archived']} |")
    return "\n".join(lines)


def _movers_table(movers) -> str:
    if not movers:
        return "no memory changed tier with a known previous score"
    lines = ["| user | memory | from | to | score | change | reason |", "|---|---|---|---|---|---|---|"]
    for m in movers:
        lines.append(
            f"| {m.user_id} | {m.memory_id} | {m.from_tier} | {m.to_tier} | {m.score:.3f} | {m.score_change:+.3f} | {m.reason} |"
        )
    return "\n".join(lines)


@dg.asset(
    group_name="tiers",
    deps=["memories", dg.AssetDep("memory_tiers", partition_mapping=dg.LastPartitionMapping())],
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    description="The cold memories of the latest tiers, compacted to Parquet files per user and month under "
    "HMS_HOME; written again whenever the tiers change.",
)
def cold_archive(context: dg.AssetExecutionContext, event_store: EventStore) -> dg.MaterializeResult:
    directory = event_store.home / COLD_ARCHIVE_DIR
    written = write_cold_archive(event_store, directory)
    context.log.info(f"{written['memories']} cold memories in {written['files']} files")
    return dg.MaterializeResult(
        metadata={**written, "path": dg.MetadataValue.path(str(directory)), "dagster/row_count": written["memories"]}
    )


TRAINING_WEEKS = 52
"""The access predictor learns from the last year of the log: older weeks say little about next week,
and each week costs a replay."""


@dg.asset(
    group_name="tiers",
    deps=["memories", "concept_clusters"],
    kinds={"scikitlearn"},
    automation_condition=dg.AutomationCondition.on_cron("0 3 * * 0"),
    description="A model of which memories will be used in the next 7 days, trained weekly from the log. The tier "
    "migration uses it only when it beats the plain importance score.",
)
def access_predictor(context: dg.AssetExecutionContext, event_store: EventStore) -> dg.MaterializeResult:
    first, last = event_store.event_time_range()
    if first is None:
        raise dg.Failure("the event store is empty: nothing to learn from")
    tiering = last_migration_config(context.instance).to_domain()
    config = tiering.importance
    last_day = date.fromisoformat(last[:10])
    first_day = max(date.fromisoformat(first[:10]) + timedelta(days=7), last_day - timedelta(weeks=TRAINING_WEEKS))
    samples = weekly_samples(event_store, load_concepts(event_store), config, first_day, last_day)
    model, evaluation = train_and_evaluate(samples, config, tiering.tiers.hot_capacity)
    save_predictor(event_store.home / MODELS_DIR, model, evaluation)
    verdict = "beats" if evaluation.model_wins else "does not beat"
    context.log.info(
        f"precision at hot capacity: model {evaluation.precision_model}, heuristic {evaluation.precision_heuristic}: the model {verdict} the heuristic"
    )
    return dg.MaterializeResult(
        metadata={
            "weeks_trained": evaluation.weeks_trained,
            "weeks_held_out": evaluation.weeks_held_out,
            "rows": evaluation.rows,
            "positive_rate": evaluation.positive_rate,
            "precision_at_hot_capacity_model": evaluation.precision_model,
            "precision_at_hot_capacity_heuristic": evaluation.precision_heuristic,
            "k_per_user": evaluation.k_per_user,
            "held_out_accesses": evaluation.held_out_positives,
            "enabled_by_default": bool(model is not None and evaluation.model_wins),
        }
    )
