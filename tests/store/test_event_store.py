"""The event store's guarantees, on the embedded SQLite file and on the real PostgreSQL server."""

import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from hms_resources.datasets.synthetic import generate_events
from hms_resources.store.event_store import EventStore, StoreError
from hms_resources.store.events import EventError, parse_event
from hms_resources.store.memory_state import replay_events
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
    assert store.unerased_events_of_forgotten() == 0
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
