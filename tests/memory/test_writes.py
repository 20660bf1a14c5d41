"""The door for writes (`MemoryWriter`): what each write stores, what it refuses and why, its one
clock, its one read of stored ids per batch, and whom it tells."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hms_resources.memory.accesses import AccessLog, query_digest
from hms_resources.memory.exchange import Exchange, exchange_records
from hms_resources.memory.writes import CONFLICT, FORGOTTEN, INVALID, MISSING, REJECTED, MemoryWriter, NewMemory, WriteRefused
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ACCESSED
from hms_resources.store.projection import refresh_memories
from tests.helpers import created, event

NOW = "2026-05-01T12:00:00.000000Z"


@pytest.fixture
def store(tmp_path: Path):
    found = EventStore(hms_home=str(tmp_path / "home"))
    yield found
    found.close()


@pytest.fixture
def written() -> list:
    return []


@pytest.fixture
def writer(store: EventStore, written: list, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("hms_resources.memory.writes.utc_now", lambda: NOW)
    door = MemoryWriter(store, on_written=written.append)
    yield door
    door.close()


def test_added_memories_are_stamped_by_the_one_clock_and_a_retry_is_a_duplicate(writer, store, written, monkeypatch):
    first = writer.add_memories([NewMemory("e1", "ana", "m1", {"content": "likes tea"}), NewMemory("e2", "ana", "m2", {"content": "a dog"}, "2026-01-01T00:00:00Z")])
    assert [o.status for o in first] == ["created", "created"]
    assert [e.occurred_at for e in store.memory_events("ana", "m1")] == [NOW]
    assert [(r.accepted, r.last_sequence) for r in written] == [(2, 2)]
    monkeypatch.setattr("hms_resources.memory.writes.utc_now", lambda: "2026-05-02T00:00:00.000000Z")
    again = writer.add_memories([NewMemory("e1", "ana", "m1", {"content": "likes tea"}), NewMemory("e2", "ana", "m2", {"content": "a dog"}, "2026-01-02T00:00:00Z")])
    assert [o.status for o in again] == ["duplicate", CONFLICT]
    assert "occurred_at" in again[1].reason


def test_a_batch_is_decided_inside_its_append_transaction_with_no_read_before_the_lock(writer, monkeypatch):
    """Which events are retries is decided under the append lock: a read before it would race with a
    concurrent retry (two requests both finding the id unstored)."""
    reads = []
    original = EventStore.reading
    monkeypatch.setattr(EventStore, "reading", lambda self: reads.append(1) or original(self))
    writer.add_memories([NewMemory(f"e{i}", "ana", f"m{i}", {"content": f"fact {i}"}) for i in range(5)])
    writer.append_events([writer.read_event(event("accessed", "ana", "m1", 1))])
    assert reads == []


def test_a_batchs_own_repeats_are_duplicates_and_a_stamped_retry_answers_with_the_stored_time(writer, store, monkeypatch):
    tea = NewMemory("e1", "ana", "m1", {"content": "likes tea"})
    outcomes = writer.add_memories([tea, tea, NewMemory("e1", "ana", "m1", {"content": "likes coffee"})])
    assert [o.status for o in outcomes] == ["created", "duplicate", CONFLICT] and "payload" in outcomes[2].reason
    monkeypatch.setattr("hms_resources.memory.writes.utc_now", lambda: "2026-05-02T00:00:00.000000Z")
    [again] = writer.add_memories([tea])
    assert (again.status, again.event.occurred_at) == ("duplicate", NOW)
    assert [e.event_id for e in store.read_events()] == ["e1"]


def test_an_invalid_memory_stores_nothing_and_the_rest_is_stored(writer, store):
    outcomes = writer.add_memories([
        NewMemory("e1", "ana", "m1", {"content": " "}),
        NewMemory("e2", "ana", "m2", {"content": "fine", "type": "memory.updated"}),
        NewMemory("e3", "ana", "m3", {"content": "fine"}),
    ])
    assert [(o.status, o.reason.split(" ")[0]) for o in outcomes] == [(INVALID, "payload.content"), (INVALID, "type"), ("created", "")]
    assert [m.memory_id for m in store.current_memories("ana")] == ["m3"]


def test_raw_events_are_read_as_ingest_reads_a_line_and_the_store_refuses_the_rest(writer):
    with pytest.raises(ValueError, match="payload.content is required"):
        writer.read_event({"event_id": "x", "type": "memory.created", "user_id": "ana", "occurred_at": NOW})
    events = [writer.read_event(r) for r in (created("ana", "m1"), event("accessed", "ana", "m404", 1))]
    assert [(o.status, o.reason) for o in writer.append_events(events)] == [
        ("created", ""), (REJECTED, "memory 'm404' does not exist for user 'ana'")
    ]


def test_a_change_names_why_it_is_refused(writer, store, written):
    writer.add_memories([NewMemory("e1", "ana", "m1", {"content": "my PIN is 1234"})])
    with pytest.raises(WriteRefused) as missing:
        writer.archive("ana", "m404")
    with pytest.raises(WriteRefused) as invalid:
        writer.update("ana", "m1", {"importance": 3})
    with pytest.raises(WriteRefused) as envelope:
        writer.update("ana", "m1", {"user_id": "ben"})
    assert (missing.value.kind, invalid.value.kind, invalid.value.field, envelope.value.message) == (
        MISSING, INVALID, "importance", "user_id cannot be updated"
    )
    forgotten = writer.forget("ana", "m1", "asked to", stem="forget")
    assert forgotten.event_id.startswith("forget-") and forgotten.occurred_at == NOW
    assert all("content" not in e.payload for e in store.memory_events("ana", "m1"))
    with pytest.raises(WriteRefused) as gone:
        writer.update("ana", "m1", {"content": "again"})
    assert gone.value.kind == FORGOTTEN and len(written) == 2


def test_feedback_is_stored_without_announcing_a_write(writer, store, written):
    writer.add_memories([NewMemory("e1", "ana", "m1", {"content": "likes tea"})])
    writer.feedback("ana", "m1", True, 0.9)
    with pytest.raises(WriteRefused) as refused:
        writer.feedback("ana", "m404", True)
    with pytest.raises(WriteRefused, match="relevance_score"):
        writer.feedback("ana", "m1", True, 1.5)
    assert refused.value.kind == MISSING and len(written) == 1
    refresh_memories(store)
    [memory] = store.read_memories(user_id="ana")
    assert memory.relevant_count == 1 and memory.relevance_score_sum == pytest.approx(0.9)


def test_accesses_are_recorded_off_the_call_as_one_event_with_the_digest_of_the_query_as_the_resource_read_it(writer, store, written):
    writer.add_memories([NewMemory("e1", "ana", "m1", {"content": "likes tea"}), NewMemory("e2", "ana", "m2", {"content": "a dog"})])
    writer.record_accesses("ana", ["m1", "m2", "m1"], "  what   do I\nlike? ")
    writer.flush()
    [accessed] = [e for e in store.read_events(user_id="ana") if e.type == MEMORY_ACCESSED]
    assert (accessed.memory_id, accessed.payload["memory_ids"], accessed.payload["query"]) == ("m1", ["m1", "m2"], query_digest("What do I like?"))
    assert len(written) == 1
    refresh_memories(store)
    assert {m.memory_id: (m.access_count, m.last_accessed_at) for m in store.read_memories(user_id="ana")} == {
        "m1": (1, accessed.occurred_at), "m2": (1, accessed.occurred_at)
    }


def test_a_read_of_a_memory_forgotten_meanwhile_is_stored_for_the_others(writer, store):
    writer.add_memories([NewMemory(f"e{i}", "ana", f"m{i}", {"content": f"fact {i}"}) for i in (1, 2, 3)])
    writer.forget("ana", "m1")
    writer.record_accesses("ana", ["m1", "m2", "m404", "m3"], "facts")
    writer.record_accesses("ana", ["m1", "m404"], "gone")
    writer.flush()
    [accessed] = [e for e in store.read_events(user_id="ana") if e.type == MEMORY_ACCESSED]
    assert (accessed.memory_id, accessed.payload["memory_ids"]) == ("m2", ["m2", "m3"])


def test_a_failure_to_record_accesses_never_fails_the_call(caplog):
    unreachable = EventStore(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    log = AccessLog(unreachable, interval=0.01)
    with caplog.at_level(logging.WARNING, logger="hms.context"):
        log.record("ana", ["m1", "m2"], "query")
        log.flush()
    log.close()
    assert any("could not record 2 memory accesses" in r.message for r in caplog.records)


class Tenant:
    def stored_user(self, user_id: str) -> str:
        return f"acme/{user_id}"

    def stored_id(self, event_id: str) -> str:
        return f"acme/{event_id}"


def test_a_captured_exchange_is_stored_under_the_callers_names_once(writer, store, written):
    writer.add_memories([NewMemory("acme/e1", "acme/ana", "m1", {"content": "likes tea"})])
    exchange = Exchange("ana", "c1", "what do I like?", "tea" * 30_000, "s1", ["m1", "chat-c1-user"])
    captured = writer.capture_exchange(exchange, names=Tenant())
    assert not captured.stored and captured.not_stored[0].startswith("the reply: content is")
    stored = {e.event_id: e for e in store.read_events(user_id="acme/ana") if e.event_id != "acme/e1"}
    assert sorted(stored) == sorted(["acme/chat-c1-user", "acme/chat-c1-accessed"])
    assert stored["acme/chat-c1-accessed"].memory_id == "m1" and "memory_ids" not in stored["acme/chat-c1-accessed"].payload
    assert stored["acme/chat-c1-user"].memory_id == "chat-c1-user" and stored["acme/chat-c1-user"].payload["session_id"] == "s1"
    again = writer.capture_exchange(exchange, names=Tenant())
    assert again.result.accepted == 0 and again.result.duplicates == 2 and len(written) == 3
    assert writer.capture_exchange(Exchange("ana", "c1", "what do I like?", "tea", "s1"), names=Tenant()).not_stored == []
    other = writer.capture_exchange(Exchange("ana", "c1", "what do I love?", "coffee", "s1"), names=Tenant())
    assert len(other.not_stored) == 2 and "a call with this id is stored already" in other.not_stored[0]
    with pytest.raises(WriteRefused) as reused:
        writer.check_exchange(Exchange("ana", "c1", "what do I love?", ""), names=Tenant())
    assert (reused.value.kind, reused.value.field) == (CONFLICT, "call_id")
    writer.check_exchange(Exchange("ana", "c1", "what do I like?", "", "s1"), names=Tenant())


def test_a_captured_exchange_reads_its_memories_in_one_event_and_a_retry_stores_it_once(writer, store):
    writer.add_memories([NewMemory(f"e{i}", "ana", f"m{i}", {"content": f"fact {i}"}) for i in (1, 2, 3)])
    exchange = Exchange("ana", "c2", "what do I like?", "tea", None, ["m1", "m2", "chat-c2-user", "m3"])
    records = exchange_records(exchange, at=NOW)
    assert [o.status for o in writer.append_events([writer.read_event(r) for r in records])] == ["created"] * 3
    writer.forget("ana", "m2")
    assert writer.append_events([writer.read_event(r) for r in records])[-1].status == "duplicate"
    [accessed] = [e for e in store.read_events(user_id="ana") if e.type == MEMORY_ACCESSED]
    assert (accessed.event_id, accessed.payload["memory_ids"]) == ("chat-c2-accessed", ["m1", "m3"])


def test_ingesting_a_file_goes_through_the_door(writer, store, written, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (created("ana", "m1"), created("ana", "m2", minutes=1))) + "\n")
    report = writer.ingest_file(path)
    assert report.accepted == 2 and written[-1].last_sequence == store.max_sequence() == 2
