"""The memory API in the shapes Mem0, Zep and OpenAI users reach for, over real HTTP: a conversation
added as `messages`, a memory read without `user_id`, every memory of a user forgotten at once, and a
history whose updates show their values before and after."""

from __future__ import annotations

from pathlib import Path

import pytest

from hms_resources.memory.writes import FORGET_CHUNK
from hms_resources.serving.keys import create_key
from hms_resources.serving.service import MemoryService
from tests.helpers import marker_counts
from tests.privacy.test_forget import tables_holding
from tests.serving.conftest import Running, new_key
from tests.serving.test_api import error_of

MARKER = "Quorvathmarker"
CONVERSATION = [
    {"role": "system", "content": "You are a helpful travel assistant."},
    {"role": "user", "content": "I am flying to Reykjavik in February to see the northern lights."},
    {"role": "assistant", "content": "Pack thermal layers: February nights in Reykjavik are cold."},
]


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_conversation_added_as_messages_is_stored_as_turns_of_its_session_in_order(written_service: MemoryService):
    store = written_service.store
    with Running(written_service, warm=False) as running, running.client(new_key(store, "acme")) as api:
        added = api.post("/v1/memories", json={"user_id": "maya", "messages": CONVERSATION, "session_id": "trip-1"},
                         headers={"Idempotency-Key": "conv-1"})
        assert added.status_code == 200, added.text
        body = added.json()
        assert (body["created"], body["duplicates"], body["rejected"], body["session_id"]) == (3, 0, 0, "trip-1")
        ids = [r["memory_id"] for r in body["results"]]
        assert ids == ["conv-1:0", "conv-1:1", "conv-1:2"]

        again = api.post("/v1/memories", json={"user_id": "maya", "messages": CONVERSATION, "session_id": "trip-1"},
                         headers={"Idempotency-Key": "conv-1"}).json()
        assert (again["created"], again["duplicates"]) == (0, 3)

        listed = api.get("/v1/memories", params={"user_id": "maya"}).json()["memories"]
        turns = {m["memory_id"]: m for m in listed}
        assert [(turns[i]["created_by"], turns[i]["content"]) for i in ids] == [(m["role"], m["content"]) for m in CONVERSATION]
        assert {(m["memory_type"], m["session_id"], m["source_type"]) for m in listed} == {("conversation_turn", "trip-1", "api")}
        stored = list(store.read_events(user_id="acme/maya"))
        assert [e.memory_id for e in stored] == ids, "the turns are stored in the conversation's order"

        # Without a session id, a new one is made, the same for a retry with the same Idempotency-Key.
        first = api.post("/v1/memories", json={"user_id": "maya", "messages": CONVERSATION[1:2]}, headers={"Idempotency-Key": "conv-2"}).json()
        retry = api.post("/v1/memories", json={"user_id": "maya", "messages": CONVERSATION[1:2]}, headers={"Idempotency-Key": "conv-2"}).json()
        assert first["session_id"].startswith("session-") and retry["session_id"] == first["session_id"] and retry["duplicates"] == 1
        assert [r["memory_id"] for r in first["results"]] == ["conv-2:0"], "one turn is numbered as many are"
        grown = api.post("/v1/memories", json={"user_id": "maya", "messages": CONVERSATION[1:3]}, headers={"Idempotency-Key": "conv-2"}).json()
        assert (grown["created"], grown["duplicates"]) == (1, 1), "a retry with one more turn stores only that turn"
        fresh = api.post("/v1/memories", json={"user_id": "maya", "messages": CONVERSATION[1:2]}).json()
        assert fresh["created"] == 1 and fresh["session_id"] not in (first["session_id"], "trip-1")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "maya", "messages": [CONVERSATION[0], {"role": "user", "content": ""}]}, "messages.1.content"),
        ({"user_id": "maya", "messages": [CONVERSATION[0], CONVERSATION[1], CONVERSATION[2], {"role": "user", "content": "  "}]}, "messages.3.content"),
        ({"user_id": "maya", "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"user_id": "maya", "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
        ({"user_id": "maya", "messages": [{"role": "user", "content": "hi", "name": "m"}]}, "messages.0.name"),
        ({"user_id": "maya", "messages": [{"role": "user", "content": "x" * 70_000}]}, "messages.0.content"),
        ({"user_id": "maya", "messages": [{"role": "user", "content": "a\u0000b"}]}, "messages.0.content"),
        ({"user_id": "maya", "messages": []}, "messages"),
        ({"messages": [CONVERSATION[1]]}, "user_id"),
        ({"user_id": "maya", "messages": [CONVERSATION[1]], "metadata": {"a": 1}}, "metadata"),
        ({"user_id": "maya", "messages": [CONVERSATION[1]], "session_id": "a\nb"}, "session_id"),
        ({"memories": [{"user_id": "maya", "content": "x"}], "infer": True}, "infer"),
        ({"user_id": "maya", "content": "Maya keeps bees.", "infer": True}, "infer"),
    ],
)
def test_a_bad_conversation_or_an_unknown_field_is_a_422_naming_it_and_stores_nothing(written_service: MemoryService, body, field):
    with Running(written_service, warm=False, max_body_bytes=1 << 20) as running, running.client(new_key(written_service.store, "acme")) as api:
        refused = api.post("/v1/memories", json=body)
        assert refused.status_code == 422, refused.text
        assert error_of(refused)["field"] == field, refused.text
        assert written_service.store.stats()["events"] == 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_every_documented_payload_field_is_still_accepted_on_an_add(written_service: MemoryService):
    memory = {"user_id": "maya", "content": "Maya keeps bees.", "memory_type": "fact", "category": "hobby", "tags": ["bees"],
              "importance": 0.5, "confidence": 0.9, "session_id": "s1", "source_type": "import", "source_id": "file-1",
              "created_by": "user", "parent_memory_id": "p1", "related_memory_ids": ["p1"], "context": {"custom": "garden"},
              "metadata": {"hives": 2}, "memory_id": "bees", "event_id": "e-bees", "occurred_at": "2026-01-01T00:00:00Z"}
    with Running(written_service, warm=False) as running, running.client(new_key(written_service.store, "acme")) as api:
        assert api.post("/v1/memories", json=memory).status_code == 201
        assert api.post("/v1/memories/bees/archive", params={"user_id": "maya"}, json={"reason": "x", "why": "y"}).status_code == 422


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_memory_is_read_without_user_id_when_its_owner_is_clear(written_service: MemoryService):
    store = written_service.store
    plain, for_bob = new_key(store, "acme", "read"), create_key(store, "acme", "read", default_user="bob").secret
    writer, globex = new_key(store, "acme"), new_key(store, "globex")
    with Running(written_service, warm=False) as running, running.client(writer) as api:
        for user, memory_id in (("alice", "shared"), ("bob", "shared"), ("alice", "solo"), ("carol", "bobless")):
            assert api.post("/v1/memories", json={"user_id": user, "memory_id": memory_id, "content": f"{user} wrote {memory_id}"}).status_code == 201
        with running.client(globex) as other:
            assert other.post("/v1/memories", json={"user_id": "dan", "memory_id": "theirs", "content": "Dan's own"}).status_code == 201

        with running.client(plain) as reader, running.client(for_bob) as bobs:
            solo = reader.get("/v1/memories/solo").json()
            assert (solo["user_id"], solo["content"]) == ("alice", "alice wrote solo")
            assert reader.get("/v1/memories/solo/history").json()["events"][0]["payload"]["content"] == "alice wrote solo"
            ambiguous = reader.get("/v1/memories/shared")
            assert ambiguous.status_code == 409 and error_of(ambiguous)["field"] == "user_id"
            assert bobs.get("/v1/memories/shared").json()["user_id"] == "bob", "the key's default user has it"
            assert bobs.get("/v1/memories/bobless").json()["user_id"] == "carol", "else the one user who has it"
            for missing in ("nothing", "theirs"):
                answer = reader.get(f"/v1/memories/{missing}")
                assert answer.status_code == 404 and error_of(answer)["field"] == "memory_id", missing
            assert reader.get("/v1/memories/shared", params={"user_id": "alice"}).json()["content"] == "alice wrote shared"


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_deleting_a_users_memories_forgets_every_one_of_them_totally_and_no_one_elses(written_service: MemoryService, tmp_path: Path):
    store = written_service.store
    writer, reader = new_key(store, "acme"), new_key(store, "acme", "read")
    with Running(written_service, warm=False) as running, running.client(writer) as api:
        memories = [{"user_id": "alice", "memory_id": f"a{i}", "content": f"Alice's {MARKER} secret number {i}", "tags": [f"{MARKER}-{i}"]}
                    for i in range(FORGET_CHUNK + 3)]  # more than one transaction's worth
        memories.append({"user_id": "bob", "memory_id": "b0", "content": f"Bob's {MARKER}Bob note"})
        assert api.post("/v1/memories", json={"memories": memories}).json()["created"] == len(memories)
        assert api.post("/v1/memories", json={"user_id": "alice", "messages": [{"role": "user", "content": f"{MARKER} in a turn"}]}).json()["created"] == 1
        assert api.patch("/v1/memories/a1", params={"user_id": "alice"}, json={"content": f"Alice's {MARKER} changed"}).status_code == 200
        assert api.delete("/v1/memories/a2", params={"user_id": "alice"}).status_code == 200

        missing = api.delete("/v1/memories")
        assert missing.status_code == 422 and error_of(missing)["field"] == "user_id"
        with running.client(reader) as read_only:
            assert read_only.delete("/v1/memories", params={"user_id": "alice"}).status_code == 403
        bad_reason = api.delete("/v1/memories", params={"user_id": "alice", "reason": "a\x00b"})
        assert bad_reason.status_code == 422 and error_of(bad_reason)["field"] == "reason"

        answer = api.delete("/v1/memories", params={"user_id": "alice", "reason": "account closed"})
        assert answer.status_code == 200 and answer.json() == {"user_id": "alice", "forgotten": FORGET_CHUNK + 3}
        assert api.get("/v1/memories", params={"user_id": "alice", "status": "live"}).json()["memories"] == []
        assert {m["status"] for m in api.get("/v1/memories", params={"user_id": "alice", "status": "any"}).json()["memories"]} == {"forgotten"}
        assert api.get("/v1/memories/b0", params={"user_id": "bob"}).json()["status"] == "live"

        left = marker_counts(tmp_path, MARKER)
        held = tables_holding(store, MARKER)
        bob_only = tables_holding(store, f"{MARKER}Bob")
        assert bob_only and held == bob_only, f"alice's content is left in {held}"
        if not store.is_postgres:
            assert sum(left.values()) == sum(marker_counts(tmp_path, f"{MARKER}Bob").values()), left
        assert api.delete("/v1/memories", params={"user_id": "alice"}).json()["forgotten"] == 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_history_shows_each_updates_values_before_and_after_and_keeps_erased_ones_erased(written_service: MemoryService):
    with Running(written_service, warm=False) as running, running.client(new_key(written_service.store, "acme")) as api:
        assert api.post("/v1/memories", json={"user_id": "maya", "memory_id": "home", "content": f"Maya lives in {MARKER}ville.",
                                              "importance": 0.4, "tags": ["home"]}).status_code == 201
        assert api.patch("/v1/memories/home", params={"user_id": "maya"}, json={"content": "Maya lives in Lisbon.", "importance": 0.8}).status_code == 200
        assert api.patch("/v1/memories/home", params={"user_id": "maya"}, json={"tags": ["home", "city"]}).status_code == 200
        events = api.get("/v1/memories/home/history", params={"user_id": "maya"}).json()["events"]
        assert "changes" not in events[0]
        assert events[1]["changes"] == {"content": {"before": f"Maya lives in {MARKER}ville.", "after": "Maya lives in Lisbon."},
                                        "importance": {"before": 0.4, "after": 0.8}}
        assert events[2]["changes"] == {"tags": {"before": ["home"], "after": ["home", "city"]}}

        assert api.delete("/v1/memories/home", params={"user_id": "maya"}).status_code == 200
        erased = api.get("/v1/memories/home/history", params={"user_id": "maya"})
        assert MARKER not in erased.text and "Lisbon" not in erased.text
        assert erased.json()["events"][1]["changes"] == {"importance": {"before": 0.4, "after": 0.8}}
