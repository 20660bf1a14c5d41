"""The `forget_purge` asset: after `memories` applied a forget, remove the forgotten memories from what no
rebuild touches (LoRA dataset versions and adapters, rejected lines, tier reasons, old page images).
Its own step, so a purge failure fails the purge, not `memories`; it runs in every job that refreshes
`memories`, so a forget is purged by the same run."""

import dagster as dg

from hms_resources.privacy.forget import purge_forgotten
from hms_resources.store.event_store import EventStore


def forgets_applied(context: dg.AssetExecutionContext) -> int:
    """How many forgets the latest `memories` materialization applied (0 when it has none)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("memories"))
    materialization = event.asset_materialization if event else None
    entry = materialization.metadata.get("memories_forgotten") if materialization else None
    return int(entry.value) if entry is not None else 0


@dg.asset(
    deps=["memories"],
    group_name="memory_store",
    kinds={"python"},
    pool="hms_memory_store",
    description="What a forgotten memory left outside the event log (LoRA datasets and adapters, rejected lines, tier "
    "reasons), purged after `memories` applies a forget, so a forget erases the memory everywhere.",
)
def forget_purge(context: dg.AssetExecutionContext, event_store: EventStore) -> dg.MaterializeResult:
    forgotten = forgets_applied(context)
    purged = purge_forgotten(event_store, log=context.log.info).counts() if forgotten else {}
    return dg.MaterializeResult(
        metadata={"memories_forgotten": forgotten, **{f"purged_{name}": count for name, count in purged.items()}}
    )
