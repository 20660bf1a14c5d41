"""Jobs an operator launches from the UI, a schedule or a sensor."""

import dagster as dg

memories_job = dg.define_asset_job(
    "memories_job",
    selection=dg.AssetSelection.assets("memories"),
    description="Apply new memory events to the memories table.",
)

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.all(),
    description="Everything HMS derives from the event store, in dependency order.",
)
