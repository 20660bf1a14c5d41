"""Jobs an operator launches from the UI, a schedule or a sensor."""

import dagster as dg

TIER_ASSETS = dg.AssetSelection.assets("memory_tiers", "tier_migrations")
LORA_ASSETS = dg.AssetSelection.groups("lora")

memories_job = dg.define_asset_job(
    "memories_job",
    selection=dg.AssetSelection.assets("memories", "forget_purge"),
    description="Apply new memory events to the memories table, and purge what a forget removes beyond it.",
)

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.all() - TIER_ASSETS - dg.AssetSelection.assets("cold_archive") - LORA_ASSETS,
    description="Everything HMS derives from the event store that is not partitioned, in dependency order.",
)

tier_migration_job = dg.define_asset_job(
    "tier_migration_job",
    selection=TIER_ASSETS,
    description="Score every memory and move it between the hot, warm and cold tiers, for one day.",
)

cold_archive_job = dg.define_asset_job(
    "cold_archive_job",
    selection=dg.AssetSelection.assets("cold_archive"),
    description="Compact the cold tier of the latest tier migration to Parquet.",
)

lora_job = dg.define_asset_job(
    "lora_job",
    selection=LORA_ASSETS,
    description="Select the memories worth crystallizing, build the approved sets' datasets, train, register and compare their LoRA adapters.",
)

lora_evaluation_job = dg.define_asset_job(
    "lora_evaluation_job",
    selection=dg.AssetSelection.assets("lora_registry", "adapter_comparison"),
    description="Re-apply the registry's promotion rules and score every registered adapter against the base on current probes.",
)
