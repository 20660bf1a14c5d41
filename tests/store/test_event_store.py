"""The event store's guarantees, on the embedded SQLite file and on the real PostgreSQL server."""

import multiprocessing
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from hms_resources.datasets.synthetic import generate_events
from hms_resources.semantic.concepts import Concept, save_concepts
from hms_resources.semantic.graph import save_edges
from hms_resources.semantic.graph_model import NEXT_IN_SESSION, SIMILAR_TO, GraphEdge, memory_node_key
from hms_resources.store.derived import derived_state, edges_of_type, latest_tiers, live_memory_columns
from hms_resources.store.erasure import forgotten_memories, unerased_events, unerased_events_of_forgotten
from hms_resources.store.event_store import EventStore, StoreError
from hms_resources.store.events import MEMORY_ACCESSED, EventError, parse_event
from hms_resources.store.memory_state import replay_events
from hms_resources.store.projection import MEMORIES_CURSOR, refresh_memories
from hms_resources.tiers.assignment import TierSnapshot, current_importance, current_tiers, save_tier_partition
from tests.helpers import created, event


def events_of(*records):
    return [parse_event(r) for r in records]


def test_appending_a_stored_event_id_is_a_counted_no_op(store):
    batch = events_of(created("u1", "m1"), event("accessed", "u1", "m1", 1))
    first = store.append(batch)
    second = store.append(batch)
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (second.accepted, second.duplicates, second.rejected) == (0, 2, [])
    assert store.stats()["events"] == 2


def test_a_duplicate_inside_one_batch_is_stored_once(store):
    record = created("u1", "m1")
    result = store.append(events_of(record, record))
    assert (result.accepted, result.duplicates) == (1, 1)


def test_sequence_numbers_are_dense_monotonic_and_give_the_replay_order(store):
    store.append(events_of(created("u1", "m1", minutes=10), created("u1", "m2", minutes=0)))
    store.append(events_of(event("updated", "u1", "m1", 5, content="second"), created("u2", "m1", minutes=1)))
    stored = list(store.read_events(page_size=1))
    assert [e.sequence for e in stored] == [1, 2, 3, 4]
    assert [e.memory_id for e in stored] == ["m1", "m2", "m1", "m1"]
    assert store.replay()[("u1", "m1")].content == "second"


def _install_poison_trigger(store: EventStore) -> None:
    """A real database fault: inserting the memory key 'poison' aborts the transaction."""
    with store.engine.begin() as conn:
        if store.is_postgres:
            conn.execute(sa.text(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.memory_id = 'poison' THEN RAISE EXCEPTION 'poisoned memory key'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            ))
            conn.execute(sa.text(
                "CREATE TRIGGER poison BEFORE INSERT ON memory_keys FOR EACH ROW EXECUTE FUNCTION poison()"
            ))
        else:
            conn.execute(sa.text(
                "CREATE TRIGGER poison BEFORE INSERT ON memory_keys WHEN NEW.memory_id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned memory key'); END"
            ))


def test_a_batch_that_fails_in_the_database_stores_nothing(store):
    store.append(events_of(created("u1", "secret", "my passport number is X123")))
    _install_poison_trigger(store)
    batch = events_of(
        event("forgotten", "u1", "secret", 1),
        created("u1", "m2", "fine", 2),
        created("u1", "poison", "this insert fails", 3),
    )
    with pytest.raises(sa.exc.DBAPIError, match="poisoned memory key"):
        store.append(batch)
    assert store.stats()["events"] == 1
    assert store.stats()["memories"]["live"] == 1
    assert [e.payload["content"] for e in store.read_events()] == ["my passport number is X123"]


def test_a_strict_batch_with_one_invalid_event_stores_nothing(store):
    batch = events_of(created("u1", "m1"), event("accessed", "u1", "missing", 1))
    with pytest.raises(StoreError, match="event 1 .*memory 'missing' does not exist for user 'u1'"):
        store.append(batch, strict=True)
    assert store.stats()["events"] == 0


@pytest.mark.parametrize(
    "later, reason",
    [
        (event("accessed", "u1", "nope", 1), "memory 'nope' does not exist for user 'u1'"),
        (event("accessed", "u2", "m1", 1), "memory 'm1' does not exist for user 'u2'"),
        (created("u1", "m1", "again", 1), "memory 'm1' already exists for user 'u1'"),
        (event("related", "u1", "m1", 1, target="m9", relationship_type="supports"),
         "payload.target: memory 'm9' does not exist for user 'u1'"),
        (event("related", "u1", "m1", 1, target="m1", relationship_type="supports"),
         "payload.target must name another memory, not the memory itself"),
    ],
)
def test_events_for_memories_that_do_not_exist_are_rejected_and_the_rest_kept(store, later, reason):
    result = store.append(events_of(created("u1", "m1"), later, created("u1", "m2", minutes=2)))
    assert result.rejected == [(1, reason)]
    assert result.accepted == 2


def test_users_are_isolated_even_with_the_same_memory_ids(store):
    store.append(events_of(created("alice", "m1", "alice's secret"), created("bob", "m1", "bob's note")))
    result = store.append(events_of(event("forgotten", "bob", "m1", 1)))
    assert result.accepted == 1
    state = store.replay()
    assert state[("alice", "m1")].content == "alice's secret"
    assert state[("bob", "m1")].is_forgotten
    assert [m.content for m in store.replay(user_id="alice").values()] == ["alice's secret"]


def test_forgetting_erases_the_content_from_every_stored_event(store):
    store.append(events_of(created("u1", "m1", "my bank PIN is 4321", tags=["bank"]),
                           event("accessed", "u1", "m1", 1, query="what is my PIN")))
    store.append(events_of(event("updated", "u1", "m1", 2, content="my bank PIN is 9999"),
                           event("forgotten", "u1", "m1", 3, reason="asked to forget the PIN"),
                           created("u1", "m2", "unrelated", 4)))
    everything = str([e.to_dict() for e in store.read_events()])
    assert "PIN" not in everything
    assert unerased_events_of_forgotten(store) == 0
    assert store.append(events_of(event("updated", "u1", "m1", 5, content="PIN back"))).rejected == [
        (0, "memory 'm1' was forgotten")
    ]
    assert store.replay()[("u1", "m1")].content is None
    assert store.replay()[("u1", "m2")].content == "unrelated"


def test_replay_to_a_sequence_or_a_point_in_time(store):
    store.append(events_of(created("u1", "m1", "v1", 0), event("updated", "u1", "m1", 10, content="v2"),
                           event("updated", "u1", "m1", 20, content="v3")))
    assert store.replay(until_sequence=2)[("u1", "m1")].content == "v2"
    assert store.replay(until_time="2026-03-01T09:15:00.000000Z")[("u1", "m1")].content == "v2"
    assert store.replay(until_time="2026-03-01T08:00:00.000000Z") == {}
    assert store.replay(until_time=datetime(2026, 3, 1, 10, 15, tzinfo=timezone(timedelta(hours=1))))[
        ("u1", "m1")
    ].content == "v2"
    with pytest.raises(EventError, match="until_time must include a time zone"):
        store.replay(until_time="2026-03-01T09:15:00")
    assert store.replay()[("u1", "m1")].content == "v3"


def test_store_replay_equals_the_pure_fold_of_the_sample_data(store):
    records = list(generate_events(users=3, sessions_per_user=6, seed=3))
    store.append([parse_event(r) for r in records])
    assert store.replay() == replay_events(store.read_events())
    stats = store.stats()
    assert stats["events"] == len(records)
    assert stats["users"] == 3


def _append_worker(url: str, worker: int, out) -> None:
    store = EventStore(database_url=url)
    accepted = duplicates = 0
    for batch_number in range(8):
        # Neighbouring workers share half their ids, so every id is offered twice.
        start = (worker * 200 + batch_number * 25) % 800
        batch = [
            parse_event(created("u1", f"m{n}", f"memory {n}", minutes=n, event_id=f"e{n}"))
            for n in range(start, start + 25)
        ] + [
            parse_event(created("u1", f"m{n}", f"memory {n}", minutes=n, event_id=f"e{n}"))
            for n in range((start + 100) % 800, (start + 100) % 800 + 25)
        ]
        result = store.append(batch)
        accepted += result.accepted
        duplicates += result.duplicates
    store.close()
    out.put((accepted, duplicates))


def test_concurrent_appending_processes_lose_nothing_and_duplicate_nothing(store, store_url):
    store.stats()  # creates the schema before the workers race
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_append_worker, args=(store_url, w, out)) for w in range(4)]
    for w in workers:
        w.start()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    offered = 4 * 8 * 50
    stored = list(store.read_events())
    ids = [e.event_id for e in stored]
    assert len(ids) == len(set(ids))
    assert sum(a for a, _ in results) == len(ids)
    assert sum(a + d for a, d in results) == offered
    assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
    assert store.stats()["memories"]["live"] == len(ids)


def _selects_during(store: EventStore, action):
    """The SELECT statements the store sends while `action` runs, counted at the driver."""
    sent: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        return action(), len(sent)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)


def _not_an_access(ev) -> bool:
    return ev.type != MEMORY_ACCESSED


def test_fold_since_keeps_followed_memories_equal_to_the_full_replay(store):
    store.append(events_of(created("u1", "m1", "v1"), created("u1", "m2", "other", 1), event("accessed", "u1", "m1", 2)))
    refresh_memories(store)
    followed = {}
    assert store.fold_since(followed, 3, follow=_not_an_access) == (3, set())
    store.append(events_of(event("updated", "u1", "m1", 3, content="v2"), event("accessed", "u1", "m2", 4),
                           created("u2", "m1", "new", 5)))
    last, changed = store.fold_since(followed, 3, follow=_not_an_access)
    assert (last, changed) == (6, {("u1", "m1"), ("u2", "m1")})
    replayed = store.replay()
    assert followed == {key: replayed[key] for key in changed}, "the projection row plus the new events is the replay"
    store.append(events_of(event("accessed", "u1", "m1", 6), event("archived", "u2", "m1", 7)))
    last, changed = store.fold_since(followed, last, follow=_not_an_access)
    assert (last, changed) == (8, {("u2", "m1")}), "an access is counted, not a change of what the memory says"
    assert followed[("u1", "m1")].access_count == 2 and followed[("u2", "m1")].is_archived
    assert ("u1", "m2") not in followed, "an access alone does not make a memory followed"


def test_fold_since_sends_one_query_when_nothing_is_new(store):
    store.append(events_of(created("u1", "m1")))
    followed = {}
    result, selects = _selects_during(store, lambda: store.fold_since(followed, 1, follow=lambda e: True))
    assert (result, selects) == ((1, set()), 1)


def test_derived_state_changes_whenever_a_derived_table_is_written(store):
    empty = derived_state(store, MEMORIES_CURSOR)
    assert empty.cursor is None and empty.sequence == 0 and empty.tier_partition is None
    store.append(events_of(created("u1", "m1"), created("u1", "m2", minutes=1)))
    refresh_memories(store)
    projected = derived_state(store, MEMORIES_CURSOR)
    assert projected.sequence == 2 and projected != empty
    assert derived_state(store, MEMORIES_CURSOR) == projected, "nothing written, nothing changed"
    save_edges(store, [GraphEdge(SIMILAR_TO, memory_node_key("u1", "m1"), memory_node_key("u1", "m2"), "u1", weight=0.75)])
    with_edges = derived_state(store, MEMORIES_CURSOR)
    assert with_edges.edges == (1, 0.75) and with_edges != projected
    concept = Concept("c1", "u1", ["tea"], "tea", ["m1", "m2"], ["m1", "m2"], np.ones(3, dtype=np.float32), 2, 0.9,
                      "2026-03-01T09:00:00.000000Z", "2026-03-01T09:01:00.000000Z", 10, 3)
    save_concepts(store, {"u1": [concept]})
    with_concepts = derived_state(store, MEMORIES_CURSOR)
    assert with_concepts.concepts == (1, 2, "2026-03-01T09:01:00.000000Z", "c1", "c1") and with_concepts != with_edges
    _save_tiers(store, date(2026, 3, 1), {("u1", "m1"): (0, 0.9)})
    assert derived_state(store, MEMORIES_CURSOR).tier_partition == "2026-03-01"


def test_live_memory_columns_stream_only_live_memories_in_key_order(store):
    store.append(events_of(created("u2", "m1", "bob"), created("u1", "m3", "archived"), created("u1", "m2", "forgotten"),
                           created("u1", "m1", "ana")))
    store.append(events_of(event("archived", "u1", "m3", 1), event("forgotten", "u1", "m2", 2)))
    refresh_memories(store)
    assert list(live_memory_columns(store, "user_id", "memory_id", "content")) == [("u1", "m1", "ana"), ("u2", "m1", "bob")]


def _save_tiers(store: EventStore, day: date, tiers: dict[tuple[str, str], tuple[int, float]]) -> None:
    keys = sorted(tiers)
    snapshot = TierSnapshot(
        as_of=f"{day.isoformat()}T23:59:59.999999Z",
        user_ids=[u for u, _ in keys],
        memory_ids=[m for _, m in keys],
        scores=np.array([tiers[k][1] for k in keys]),
        tiers=np.array([tiers[k][0] for k in keys]),
        reasons=["test"] * len(keys),
    )
    save_tier_partition(store, day, snapshot, [])


def test_latest_tiers_are_the_newest_partition_with_tier_and_score_together(store):
    assert latest_tiers(store) == {}
    _save_tiers(store, date(2026, 3, 2), {("u1", "m1"): (0, 0.9), ("u1", "m2"): (2, 0.1), ("u2", "m1"): (1, 0.5)})
    _save_tiers(store, date(2026, 3, 1), {("u1", "m1"): (2, 0.2), ("u1", "m3"): (0, 0.8)})
    tiers = latest_tiers(store)
    assert tiers == {("u1", "m1"): ("hot", 0.9), ("u1", "m2"): ("cold", 0.1), ("u2", "m1"): ("warm", 0.5)}
    assert tiers == {key: (tier, current_importance(store)[key]) for key, tier in current_tiers(store).items()}


def test_edges_of_type_stream_one_edge_type_only(store):
    a, b, c = (memory_node_key("u1", m) for m in ("m1", "m2", "m3"))
    save_edges(store, [GraphEdge(SIMILAR_TO, a, b, "u1", weight=0.8), GraphEdge(NEXT_IN_SESSION, b, c, "u1"),
                       GraphEdge(SIMILAR_TO, b, c, "u1", weight=0.6)])
    assert sorted(edges_of_type(store, SIMILAR_TO)) == [("u1", a, b, 0.8), ("u1", b, c, 0.6)]
    assert list(edges_of_type(store, "NO_SUCH_TYPE")) == []


def test_unerased_events_count_a_memory_until_it_is_forgotten(store):
    store.append(events_of(created("u1", "m1", "my PIN"), event("updated", "u1", "m1", 1, content="new PIN"),
                           created("u1", "m2", minutes=2)))
    assert unerased_events(store, "u1", "m1") == 2
    store.append(events_of(event("forgotten", "u1", "m1", 3)))
    assert (unerased_events(store, "u1", "m1"), unerased_events(store, "u1", "m2")) == (0, 1)
    assert forgotten_memories(store) == {("u1", "m1")}
