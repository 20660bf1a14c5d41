"""A read of several memories is one stored event; forgetting one of them leaves its id in no stored
event but its own (erased) ones, and the others keep their accesses."""

from sqlalchemy import select

from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ACCESSED, parse_event, read_records
from hms_resources.store.ingest import ingest_records
from tests.helpers import at, created, event


def read(event_id: str, memory_ids: list[str], minutes: int) -> dict:
    [record] = read_records(event_id, "ana", memory_ids, at(minutes), {"access_method": "context", "query": "what do I like?"})
    return record


def rows_naming(store: EventStore, memory_id: str) -> list[tuple[str, str, str, bool]]:
    """(event id, type, memory id, erased) of every stored event whose envelope or payload names it."""
    from hms_resources.store.schema import events

    with store.reading() as conn:
        found = conn.execute(select(events.c.event_id, events.c.type, events.c.memory_id, events.c.payload, events.c.erased)).all()
    return [(e, t, m, erased) for e, t, m, payload, erased in found if m == memory_id or f'"{memory_id}"' in payload]


def access_counts(store: EventStore) -> dict[str, int]:
    return {memory_id: m.access_count for (_, memory_id), m in store.replay(user_id="ana").items() if not m.is_forgotten}


def test_forgetting_a_memory_takes_its_id_out_of_every_read_that_named_it(store):
    ingest_records(store, [created("ana", f"m{n}", f"secret {n}") for n in (1, 2, 3)] + [
        read("r-anchor", ["m1", "m2", "m3"], 10),
        read("r-middle", ["m2", "m1"], 20),
        read("r-alone", ["m1"], 30),
        read("r-other", ["m2", "m3"], 40),
    ])
    assert access_counts(store) == {"m1": 3, "m2": 3, "m3": 2}
    ingest_records(store, [event("forgotten", "ana", "m1", 50)])
    naming = rows_naming(store, "m1")
    assert sorted(t for _, t, _, _ in naming) == [MEMORY_ACCESSED, "memory.created", "memory.forgotten"]
    assert all(memory_id == "m1" and erased for _, _, memory_id, erased in naming), "only m1's own events name it, erased"
    kept = {e.event_id: (e.memory_id, e.payload.get("memory_ids")) for e in store.read_events(user_id="ana") if e.type == MEMORY_ACCESSED}
    assert kept == {"r-anchor": ("m2", ["m2", "m3"]), "r-middle": ("m2", ["m2"]), "r-alone": ("m1", None), "r-other": ("m2", ["m2", "m3"])}
    assert access_counts(store) == {"m2": 3, "m3": 2}


def test_a_batch_that_reads_and_forgets_a_memory_stores_the_read_without_it(store):
    ingest_records(store, [created("ana", f"m{n}") for n in (1, 2)] + [read("r1", ["m1", "m2"], 10), event("forgotten", "ana", "m1", 11)])
    assert [(memory_id, erased) for _, _, memory_id, erased in rows_naming(store, "m1")] == [("m1", True)] * 2
    [accessed] = [e for e in store.read_events(user_id="ana") if e.type == MEMORY_ACCESSED]
    assert (accessed.memory_id, accessed.payload["memory_ids"]) == ("m2", ["m2"])


def test_a_read_is_stored_once_and_a_retry_after_a_forget_is_a_duplicate(store):
    ingest_records(store, [created("ana", f"m{n}") for n in (1, 2, 3)] + [event("forgotten", "ana", "m2", 5)])
    record = read("r1", ["m1", "m2", "m404", "m3"], 10)
    first = store.append([parse_event(record)])
    again = store.append([parse_event(record)])
    assert (first.accepted, again.accepted, again.duplicates, again.conflicts) == (1, 0, 1, [])
    [accessed] = [e for e in store.read_events(user_id="ana") if e.type == MEMORY_ACCESSED]
    assert (accessed.memory_id, accessed.payload["memory_ids"]) == ("m1", ["m1", "m3"])
    changed = parse_event({**record, "payload": {**record["payload"], "query": "something else"}})
    assert "different payload" in store.append([changed]).conflicts[0][1]
    nothing_left = store.append([parse_event(read("r2", ["m2", "m404"], 20))])
    assert nothing_left.accepted == 0 and "was forgotten" in nothing_left.rejected[0][1]
