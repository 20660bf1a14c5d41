"""The `memories` asset: the current state of every memory, replayed incrementally from the event store.
What a forget must remove beyond the log is purged downstream, by `forget_purge`."""

import dagster as dg

from hms_assets.plots import bar_chart_markdown
from hms_resources.store.erasure import unerased_events_of_forgotten
from hms_resources.store.event_store import EventStore
from hms_resources.store.projection import MEMORIES_CURSOR, refresh_memories


class MemoriesConfig(dg.Config):
    full_replay: bool = False
    """Rebuild every memory from the whole log instead of applying only the new events."""


def _count_table(rows: list[tuple[str, int]], name: str) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: label, "memories": count}) for label, count in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, "string"), dg.TableColumn("memories", "int")]),
    )


@dg.asset(
    group_name="memory_store",
    kinds={"sql"},
    pool="hms_memory_store",
    description="Every memory as it stands now (content, type, importance, archived or forgotten), rebuilt by "
    "replaying the events stored since the last run. Every other asset, and the service, start from it.",
)
def memories(context: dg.AssetExecutionContext, config: MemoriesConfig, event_store: EventStore) -> dg.MaterializeResult:
    def progress(applied: int, total: int) -> None:
        context.log.info(f"replayed {applied:,} of {total:,} new events")

    report = refresh_memories(event_store, full_replay=config.full_replay, on_page=progress)
    summary = event_store.memory_summary()
    context.log.info(
        f"memories at sequence {report.to_sequence}: {summary['live']} live, {summary['archived']} archived, "
        f"{summary['forgotten']} forgotten ({report.events_applied} new events)"
    )
    return dg.MaterializeResult(
        metadata={
            "cursor_from": report.from_sequence,
            "cursor": report.to_sequence,
            "events_applied": report.events_applied,
            "memories_changed": report.memories_changed,
            "memories_forgotten": report.memories_forgotten,
            "users": summary["users"],
            "live": summary["live"],
            "archived": summary["archived"],
            "forgotten": summary["forgotten"],
            "dagster/row_count": summary["live"] + summary["archived"] + summary["forgotten"],
            "store": event_store.display_url,
            "memory_types": _count_table(summary["by_type"], "memory_type"),
            "live_memories_by_type": dg.MetadataValue.md(
                bar_chart_markdown(summary["by_type"], title="Live memories by type")
            ),
        }
    )


@dg.asset_check(asset=memories, blocking=True, description="Every live memory has content.")
def live_memories_have_content(event_store: EventStore) -> dg.AssetCheckResult:
    missing = event_store.memory_summary()["live_without_content"]
    return dg.AssetCheckResult(passed=missing == 0, metadata={"live_without_content": missing})


@dg.asset_check(
    asset=memories,
    blocking=True,
    description="No forgotten memory keeps content, neither in the memories table nor in the event log.",
)
def forgotten_memories_keep_no_content(event_store: EventStore) -> dg.AssetCheckResult:
    in_table = event_store.memory_summary()["forgotten_with_content"]
    in_log = unerased_events_of_forgotten(event_store)
    return dg.AssetCheckResult(
        passed=in_table == 0 and in_log == 0,
        metadata={"forgotten_with_content": in_table, "unerased_events": in_log},
    )


@dg.asset_check(
    asset=memories,
    blocking=True,
    description="Live, archived and forgotten counts agree with a count over the raw log at the same cursor.",
)
def memory_counts_match_store(event_store: EventStore) -> dg.AssetCheckResult:
    cursor = event_store.projection_cursor(MEMORIES_CURSOR)
    summary = event_store.memory_summary()
    table = {k: summary[k] for k in ("live", "archived", "forgotten")}
    log = event_store.counts_at(cursor)
    return dg.AssetCheckResult(
        passed=table == log,
        metadata={"cursor": cursor, **{f"table_{k}": v for k, v in table.items()}, **{f"log_{k}": v for k, v in log.items()}},
    )
