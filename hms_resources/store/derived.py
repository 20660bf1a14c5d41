"""Reads of the tables the assets derive from the log (the memories projection, concepts, graph edges,
tier partitions), shaped for a reader on the query path that loads them all at once: one statement
each, rows streamed rather than built into objects, and a cheap fingerprint to poll for changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import func, select

from hms_resources.store.memory_state import MemoryKey
from hms_resources.store.schema import concepts, graph_edges, memories, memory_tiers, projection_cursors

if TYPE_CHECKING:
    from hms_resources.store.event_store import EventStore


class DerivedState(NamedTuple):
    """A fingerprint of the derived tables: it changes whenever one of them is written again."""

    cursor: tuple[int, str] | None
    """The projection cursor's sequence and when it last moved; None before the first refresh."""
    concepts: tuple[Any, ...]
    """Count, total size, latest `last_seen`, largest and smallest id."""
    edges: tuple[Any, ...]
    """Count and total weight."""
    tier_partition: str | None
    """The latest tier partition's date."""

    @property
    def sequence(self) -> int:
        """The sequence the memories table was replayed to: later events are not in it yet."""
        return self.cursor[0] if self.cursor else 0


def derived_state(store: EventStore, cursor_name: str) -> DerivedState:
    """Aggregates over the derived tables, in one read transaction; `cursor_name` names the projection."""
    with store.reading() as conn:
        cursor = conn.execute(
            select(projection_cursors.c.sequence, projection_cursors.c.updated_at).where(projection_cursors.c.name == cursor_name)
        ).first()
        concept_state = conn.execute(
            select(
                func.count(),
                func.sum(concepts.c.size),
                func.max(concepts.c.last_seen),
                func.max(concepts.c.concept_id),
                func.min(concepts.c.concept_id),
            )
        ).first()
        edge_state = conn.execute(select(func.count(), func.sum(graph_edges.c.weight))).first()
        partition = conn.execute(select(func.max(memory_tiers.c.partition_date))).scalar()
    return DerivedState(tuple(cursor) if cursor else None, tuple(concept_state), tuple(edge_state), partition)


def live_memory_columns(store: EventStore, *names: str) -> Iterator[tuple[Any, ...]]:
    """The named columns of every memory neither archived nor forgotten, ordered by user and memory id,
    streamed from one read transaction (consume it fully or close it)."""
    query = (
        select(*(memories.c[name] for name in names))
        .where(memories.c.is_forgotten.is_(False), memories.c.is_archived.is_(False))
        .order_by(memories.c.user_id, memories.c.memory_id)
    )
    with store.reading() as conn:
        yield from conn.execute(query)


def latest_tiers(store: EventStore, user_id: str | None = None) -> dict[MemoryKey, tuple[str, float]]:
    """The tier and score of every memory (of `user_id`, or everyone's) in its user's latest tier
    partition, read in one statement; empty before the first migration. Per user, because user shards
    migrate a day one after another: a shard not yet migrated keeps its previous day."""
    if user_id is not None:
        latest = select(func.max(memory_tiers.c.partition_date)).where(memory_tiers.c.user_id == user_id).scalar_subquery()
        query = select(memory_tiers.c.user_id, memory_tiers.c.memory_id, memory_tiers.c.tier, memory_tiers.c.score).where(
            memory_tiers.c.user_id == user_id, memory_tiers.c.partition_date == latest
        )
    else:
        latest = (
            select(memory_tiers.c.user_id, func.max(memory_tiers.c.partition_date).label("day"))
            .group_by(memory_tiers.c.user_id)
            .subquery()
        )
        query = select(memory_tiers.c.user_id, memory_tiers.c.memory_id, memory_tiers.c.tier, memory_tiers.c.score).join(
            latest, (memory_tiers.c.user_id == latest.c.user_id) & (memory_tiers.c.partition_date == latest.c.day)
        )
    with store.reading() as conn:
        return {(u, m): (t, s) for u, m, t, s in conn.execute(query)}


def edges_of_type(store: EventStore, edge_type: str) -> Iterator[tuple[str, str, str, float]]:
    """`(user_id, source, target, weight)` of every graph edge of one type, streamed from one read
    transaction; node keys as stored (`graph_model.memory_node_key`)."""
    query = select(graph_edges.c.user_id, graph_edges.c.source, graph_edges.c.target, graph_edges.c.weight).where(
        graph_edges.c.edge_type == edge_type
    )
    with store.reading() as conn:
        yield from conn.execute(query)
