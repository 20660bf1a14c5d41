"""The append path over one write transaction: which events of a batch are new, duplicate, in conflict
or rejected, the erasure of what a forget removes, and the rows written (COPY on PostgreSQL,
executemany on SQLite). The caller holds the append lock, so sequence numbers are dense."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, and_, bindparam, or_, select

from hms_resources.common.clock import utc_now
from hms_resources.store import postgres
from hms_resources.store.database import StoreError
from hms_resources.store.events import (
    MEMORY_ACCESSED,
    MEMORY_ARCHIVED,
    MEMORY_CREATED,
    MEMORY_FORGOTTEN,
    MEMORY_RELATED,
    READ_MEMORY_IDS,
    MemoryEvent,
    erase_payload,
    is_read_of_many,
    without_reads_of,
)
from hms_resources.store.log_reads import max_sequence
from hms_resources.store.memory_state import MemoryKey, apply_event
from hms_resources.store.memory_table import load_memories, memory_rows
from hms_resources.store.rows import by_user, chunks, driver_select, insert_many
from hms_resources.store.node_keys import memory_node_key
from hms_resources.store.schema import concepts, events, graph_edges, memories, memory_keys


@dataclass
class AppendResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    conflicts: list[tuple[int, str]] = field(default_factory=list)
    """Events whose id is stored already with other content: never stored twice, reported apart."""
    last_sequence: int | None = None
    duplicated: list[tuple[int, str]] = field(default_factory=list)
    """Each duplicate's index and the stored event's `occurred_at` (a server-stamped retry's answer)."""


class BatchRejected(StoreError):
    """A strict append refused its batch: one event was rejected, so nothing was stored."""


@dataclass(frozen=True)
class _StoredEvent:
    type: str
    user_id: str
    memory_id: str
    occurred_at: str
    payload: str | dict[str, Any]
    erased: bool


@dataclass
class _Decision:
    """What an append decided, event by event, before anything is written."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    new_keys: list[tuple[str, str, str, int]] = field(default_factory=list)
    status_changes: dict[MemoryKey, str] = field(default_factory=dict)
    forgotten: list[MemoryKey] = field(default_factory=list)


def append_batch(conn: Connection, batch: Sequence[MemoryEvent], *, strict: bool = False, stamped: Sequence[bool] = ()) -> AppendResult:
    """Store a batch inside `conn`'s transaction (which holds the append lock).

    Already-stored event ids (or ids earlier in the batch) are skipped: counted as duplicates when
    the content is the same, as conflicts (with a reason) when it differs. `stamped[i]` says the
    server chose event i's `occurred_at` (the client gave none), so its time is no part of its
    content: a retry stamped later is still a duplicate. Events whose memory does not exist (or was
    forgotten) are rejected with a reason; with `strict`, any rejection stores nothing and raises.
    """
    result = AppendResult()
    if not batch:
        return result
    decision = _decide(conn, batch, result, stamped)
    if strict and result.rejected:
        index, reason = result.rejected[0]
        raise BatchRejected(f"event {index} ({batch[index].event_id}): {reason}")
    rows = decision.rows
    if decision.forgotten:
        rows = _erase_forgotten_rows(rows, set(decision.forgotten))
        for key in decision.forgotten:
            erase_stored(conn, key)
    _store_rows(conn, rows, decision.new_keys, decision.status_changes)
    if decision.forgotten:
        erase_derived(conn, rows, set(decision.forgotten))
    result.accepted = len(rows)
    result.last_sequence = rows[-1][0] if rows else None
    return result


def _decide(conn: Connection, batch: Sequence[MemoryEvent], result: AppendResult, stamped: Sequence[bool] = ()) -> _Decision:
    """Sort every event of the batch into duplicate, conflict, rejected or a new row, in batch order."""
    known_ids = _stored_events(conn, [e.event_id for e in batch])
    statuses = _memory_statuses(conn, batch)
    next_sequence = max_sequence(conn) + 1
    recorded_at = utc_now()
    dumps = orjson.dumps
    decision = _Decision()
    rows, statuses_changed = decision.rows, decision.status_changes
    for index, ev in enumerate(batch):
        known = known_ids.get(ev.event_id)
        if known is not None:
            difference = _difference(known, ev, any_time=index < len(stamped) and stamped[index])
            if difference:
                result.conflicts.append((index, f"event_id {ev.event_id!r} is stored already with a different {difference}; the stored event is kept"))
            else:
                result.duplicates += 1
                result.duplicated.append((index, known.occurred_at))
            continue
        if is_read_of_many(ev):
            ev = _readable_part(ev, statuses)
        key = (ev.user_id, ev.memory_id)
        problem = _reference_problem(ev, key, statuses)
        if problem:
            result.rejected.append((index, problem))
            continue
        known_ids[ev.event_id] = _StoredEvent(ev.type, ev.user_id, ev.memory_id, ev.occurred_at, ev.payload, False)
        sequence = next_sequence + len(rows)
        if ev.type == MEMORY_CREATED:
            statuses[key] = "live"
            decision.new_keys.append((ev.user_id, ev.memory_id, "live", sequence))
        elif ev.type == MEMORY_ARCHIVED:
            statuses[key] = statuses_changed[key] = "archived"
        elif ev.type == MEMORY_FORGOTTEN:
            statuses[key] = statuses_changed[key] = "forgotten"
            decision.forgotten.append(key)
        rows.append(
            (sequence, ev.event_id, ev.type, ev.user_id, ev.memory_id, ev.occurred_at, recorded_at, dumps(ev.payload).decode(), False)
        )
    return decision


def _readable_part(ev: MemoryEvent, statuses: dict[MemoryKey, str]) -> MemoryEvent:
    """A read of several memories without those that do not exist or were forgotten (a forget can land
    between a context and the record of its read), anchored on the first left; unchanged when none is."""
    gone = {m for m in ev.payload[READ_MEMORY_IDS] if statuses.get((ev.user_id, m)) in (None, "forgotten")}
    kept = without_reads_of(ev.payload, gone)
    if not gone or not kept:
        return ev
    return MemoryEvent(ev.event_id, ev.type, ev.user_id, kept[0], ev.occurred_at, {**ev.payload, READ_MEMORY_IDS: kept}, ev.sequence)


def _erase_forgotten_rows(rows: list[tuple[Any, ...]], erased_keys: set[MemoryKey]) -> list[tuple[Any, ...]]:
    """The batch's own rows of memories it forgets, stored already erased; its reads of several memories
    without them."""
    dumps = orjson.dumps
    found = []
    for row in rows:
        if row[2] == MEMORY_ACCESSED and READ_MEMORY_IDS in row[7]:
            payload = orjson.loads(row[7])
            reread = _without_forgotten(payload, {m for u, m in erased_keys if u == row[3]})
            if reread is not None:
                found.append((*row[:4], reread[0], row[5], row[6], dumps(reread[1]).decode(), row[8]))
                continue
        found.append((*row[:7], dumps(erase_payload(orjson.loads(row[7]))).decode(), True) if (row[3], row[4]) in erased_keys else row)
    return found


def _without_forgotten(payload: dict[str, Any], forgotten: set[str]) -> tuple[str, dict[str, Any]] | None:
    """A read of several memories with the forgotten ones taken out: (its anchor, its payload), or None
    when it names none of them, or names nothing else (then it is the forgotten memory's own event)."""
    if READ_MEMORY_IDS not in payload or not forgotten.intersection(payload[READ_MEMORY_IDS]):
        return None
    kept = without_reads_of(payload, forgotten)
    if not kept:
        return None
    return kept[0], {**payload, READ_MEMORY_IDS: kept}


def unerased_of(user_id: str, memory_id: str) -> ColumnElement[bool]:
    """The events of one memory whose payload still holds what the user said."""
    return and_(events.c.user_id == user_id, events.c.memory_id == memory_id, events.c.erased.is_(False))


def erase_stored(conn: Connection, key: MemoryKey) -> None:
    """Erase the payloads of a memory's stored events, inside the append that forgets it. A stored read
    of several memories loses the memory's id and stays the others' read (anchored on the first left),
    so nothing names the memory but its own, erased events."""
    _unread_stored(conn, key)
    rows = conn.execute(select(events.c.sequence, events.c.payload).where(unerased_of(*key))).all()
    for sequence, payload in rows:
        erased = orjson.dumps(erase_payload(orjson.loads(payload))).decode()
        conn.execute(events.update().where(events.c.sequence == sequence).values(payload=erased, erased=True))


def erase_derived(conn: Connection, rows: list[tuple[Any, ...]], forgotten: set[MemoryKey]) -> None:
    """What the assets derived from the memories the batch forgets, erased in the same transaction, so
    a forget is total when acknowledged: the memories row becomes the tombstone the fold makes, the
    memory leaves its concepts (`_unlink_concepts_holding`), and the graph edges touching it are deleted."""

    for row in rows:
        key = (row[3], row[4])
        if row[2] != MEMORY_FORGOTTEN or key not in forgotten:
            continue
        state = load_memories(conn, [key])
        if key in state:
            apply_event(state, MemoryEvent(row[1], row[2], row[3], row[4], row[5], {}, row[0]))
            insert_many(conn, memories, memory_rows([state[key]]), upsert_on=("user_id", "memory_id"))
        _unlink_concepts_holding(conn, *key)
        _drop_edges_touching(conn, key[0], [memory_node_key(*key)])


def _unlink_concepts_holding(conn: Connection, user_id: str, memory_id: str) -> None:
    """Take the memory out of the user's concepts, keeping their ids (the next clustering matches them
    again): its id leaves the members, the label is cleared (its words may be the memory's) and a
    summary that quotes it is dropped, until `concept_clusters` runs."""
    mentioned = concepts.c.member_ids.contains(orjson.dumps(memory_id).decode(), autoescape=True)
    found = conn.execute(
        select(concepts.c.concept_id, concepts.c.member_ids, concepts.c.summary_member_ids).where(concepts.c.user_id == user_id, mentioned)
    ).all()
    for concept_id, member_ids, summary_member_ids in found:
        members = orjson.loads(member_ids)
        if memory_id not in members:
            continue
        members.remove(memory_id)
        values: dict[str, Any] = {"member_ids": orjson.dumps(members).decode(), "size": len(members), "label": "[]"}
        if memory_id in orjson.loads(summary_member_ids):
            values.update(summary="", summary_member_ids="[]", summary_tokens=0)
        conn.execute(concepts.update().where(concepts.c.user_id == user_id, concepts.c.concept_id == concept_id).values(**values))


def _drop_edges_touching(conn: Connection, user_id: str, nodes: list[str]) -> None:
    touching = or_(graph_edges.c.source.in_(nodes), graph_edges.c.target.in_(nodes))
    conn.execute(graph_edges.delete().where(graph_edges.c.user_id == user_id, touching))


def _unread_stored(conn: Connection, key: MemoryKey) -> None:
    user_id, memory_id = key
    naming = and_(
        events.c.user_id == user_id,
        events.c.type == MEMORY_ACCESSED,
        events.c.payload.contains(f'"{READ_MEMORY_IDS}"', autoescape=True),
        events.c.payload.contains(orjson.dumps(memory_id).decode(), autoescape=True),
    )
    for sequence, payload in conn.execute(select(events.c.sequence, events.c.payload).where(naming)).all():
        reread = _without_forgotten(orjson.loads(payload), {memory_id})
        if reread is not None:
            conn.execute(events.update().where(events.c.sequence == sequence).values(memory_id=reread[0], payload=orjson.dumps(reread[1]).decode()))


def _stored_events(conn: Connection, event_ids: list[str]) -> dict[str, _StoredEvent]:
    if conn.dialect.name == "postgresql":
        return {event_id: _StoredEvent(*values) for event_id, *values in postgres.stored_events(conn, event_ids)}
    found: dict[str, _StoredEvent] = {}
    sql = "SELECT event_id, type, user_id, memory_id, occurred_at, payload, erased FROM events WHERE event_id IN ({})"
    for chunk in chunks(sorted(set(event_ids))):
        for event_id, *values in driver_select(conn, sql, [], chunk):
            found[event_id] = _StoredEvent(*values)
    return found


def _memory_statuses(conn: Connection, batch: Sequence[MemoryEvent]) -> dict[MemoryKey, str]:
    wanted: set[MemoryKey] = set()
    for ev in batch:
        wanted.add(ev.key)
        if is_read_of_many(ev):
            wanted.update((ev.user_id, m) for m in ev.payload[READ_MEMORY_IDS])
        if ev.type == MEMORY_RELATED:
            wanted.add((ev.user_id, ev.payload["target"]))
    if conn.dialect.name == "postgresql":
        return {(u, m): status for u, m, status in postgres.memory_statuses(conn, wanted)}
    statuses: dict[MemoryKey, str] = {}
    sql = "SELECT memory_id, status FROM memory_keys WHERE user_id = {} AND memory_id IN ({})"
    for user_id, memory_ids in by_user(wanted):
        for memory_id, status in driver_select(conn, sql, [user_id], memory_ids):
            statuses[(user_id, memory_id)] = status
    return statuses


def stored_differences(conn: Connection, batch: Sequence[MemoryEvent], stamped: Sequence[bool] = ()) -> list[tuple[int, str]]:
    """(index, the part that differs) of each event of `batch` whose id is stored with other content."""
    known = _stored_events(conn, [e.event_id for e in batch])
    found = []
    for index, ev in enumerate(batch):
        difference = _difference(known[ev.event_id], ev, any_time=index < len(stamped) and stamped[index]) if ev.event_id in known else None
        if difference:
            found.append((index, difference))
    return found


def _difference(stored: _StoredEvent, ev: MemoryEvent, *, any_time: bool = False) -> str | None:
    """Which part of an event differs from the stored event of the same id (None: a true duplicate).
    A forgotten memory's stored events lost what the user said, so only the rest is compared; a stored
    read of several memories may have lost some of them (forgotten), so it matches a read naming more.
    With `any_time` (the server stamped the event) its `occurred_at` is not compared."""
    envelope = ("type", "user_id", "memory_id") if any_time else ("type", "user_id", "memory_id", "occurred_at")
    if is_read_of_many(ev):
        return _read_difference(stored, ev, envelope)
    for name in envelope:
        if getattr(stored, name) != getattr(ev, name):
            return name
    new = erase_payload(ev.payload) if stored.erased else ev.payload
    if isinstance(stored.payload, str) and stored.payload == orjson.dumps(new).decode():
        return None
    payload = stored.payload if isinstance(stored.payload, dict) else orjson.loads(stored.payload)
    return None if payload == new else "payload"


def _read_difference(stored: _StoredEvent, ev: MemoryEvent, envelope: tuple[str, ...]) -> str | None:
    for name in envelope:
        if name != "memory_id" and getattr(stored, name) != getattr(ev, name):
            return name
    payload = stored.payload if isinstance(stored.payload, dict) else orjson.loads(stored.payload)
    named = ev.payload[READ_MEMORY_IDS]
    if stored.memory_id not in named or not set(payload.get(READ_MEMORY_IDS, [stored.memory_id])) <= set(named):
        return "memory_id"
    new = {k: v for k, v in ev.payload.items() if k != READ_MEMORY_IDS}
    if stored.erased:
        new = erase_payload(new)
    return None if {k: v for k, v in payload.items() if k != READ_MEMORY_IDS} == new else "payload"


def _store_rows(
    conn: Connection, rows: list[tuple[Any, ...]], new_keys: list[tuple[str, str, str, int]], status_changes: dict[MemoryKey, str]
) -> None:
    """Write what an append decided: COPY and one UPDATE on PostgreSQL, executemany on SQLite."""
    if conn.dialect.name == "postgresql":
        postgres.copy_rows(conn, events, rows)
        postgres.copy_rows(conn, memory_keys, new_keys)
        if status_changes:
            postgres.set_statuses(conn, status_changes)
        return
    insert_many(conn, events, rows)
    insert_many(conn, memory_keys, new_keys)
    if status_changes:
        conn.execute(
            memory_keys.update()
            .where(
                and_(
                    memory_keys.c.user_id == bindparam("key_user_id"),
                    memory_keys.c.memory_id == bindparam("key_memory_id"),
                )
            )
            .values(status=bindparam("new_status")),
            [{"key_user_id": u, "key_memory_id": m, "new_status": status} for (u, m), status in status_changes.items()],
        )


def _reference_problem(ev: MemoryEvent, key: MemoryKey, statuses: dict[MemoryKey, str]) -> str | None:
    status = statuses.get(key)
    if ev.type == MEMORY_CREATED:
        return f"memory {ev.memory_id!r} already exists for user {ev.user_id!r}" if status else None
    if status is None:
        return f"memory {ev.memory_id!r} does not exist for user {ev.user_id!r}"
    if status == "forgotten":
        return f"memory {ev.memory_id!r} was forgotten"
    if ev.type == MEMORY_RELATED:
        target = ev.payload["target"]
        if target == ev.memory_id:
            return "payload.target must name another memory, not the memory itself"
        target_status = statuses.get((ev.user_id, target))
        if target_status is None:
            return f"payload.target: memory {target!r} does not exist for user {ev.user_id!r}"
        if target_status == "forgotten":
            return f"payload.target: memory {target!r} was forgotten"
    return None
