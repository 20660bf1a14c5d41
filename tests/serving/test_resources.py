"""Search filters, users and sessions as resources, OpenAI's embeddings API, and request bodies that
name any field the API does not know: real HTTP (uvicorn in a thread), the real embedder, SQLite
(and PostgreSQL for the tenant's users, read by a range of stored ids)."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from hms_resources.memory.exchange import Exchange, exchange_records
from hms_resources.serving.embeddings import MAX_INPUTS
from hms_resources.serving.service import MemoryService
from tests.serving.conftest import Running, new_key
from tests.serving.test_api import error_of

SQLITE = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


@pytest.fixture
def service(ranking_service: MemoryService) -> MemoryService:
    return ranking_service


def memory(memory_id: str, content: str, memory_type: str, occurred_at: str, **fields: object) -> dict:
    return {"user_id": "alice", "memory_id": memory_id, "content": content, "memory_type": memory_type, "occurred_at": occurred_at, **fields}


TEA_FACTS = [memory(f"fact-{i}", f"Alice drinks green tea number {i} from the green tea tin.", "fact", f"2026-02-{i + 1:02d}T08:00:00Z",
                    category="drinks", tags=["tea"]) for i in range(12)]
PREFERENCE = memory("pref", "Alice prefers her tea without sugar.", "preference", "2026-01-05T08:00:00Z", category="taste", tags=["sugar"])
OLD_EVENT = memory("kettle", "Alice bought a tea kettle in Lisbon.", "event", "2025-06-01T08:00:00Z", category="shopping",
                   tags=["travel", "kitchen"])


@SQLITE
def test_search_filters_keep_only_matching_memories_even_when_others_rank_higher(service: MemoryService):
    with Running(service) as running, running.client(new_key(service.store, "acme", "read")) as api:
        with running.client(new_key(service.store, "acme", "write")) as writer:
            assert writer.post("/v1/memories", json={"memories": [*TEA_FACTS, PREFERENCE, OLD_EVENT]}).json()["created"] == 14

        def found(filters: dict | None, limit: int = 2) -> list[str]:
            body = {"user_id": "alice", "query": "green tea tin", "limit": limit, **({"filters": filters} if filters is not None else {})}
            response = api.post("/v1/search", json=body)
            assert response.status_code == 200, response.text
            return [r["memory_id"] for r in response.json()["results"]]

        unfiltered = found(None)
        assert unfiltered and all(m.startswith("fact-") for m in unfiltered), "the tea facts rank above the others"
        assert found({"memory_type": "preference"}) == ["pref"]
        assert found({"category": "shopping"}) == ["kettle"]
        assert found({"tag": "sugar"}) == ["pref"]
        assert found({"tags": ["travel", "kitchen"]}) == ["kettle"]
        assert found({"tags": ["travel", "sugar"]}) == [], "every tag must be there"
        assert found({"created_before": "2026-01-01T00:00:00Z"}) == ["kettle"]
        assert sorted(found({"created_after": "2026-01-01T00:00:00Z", "created_before": "2026-02-01T00:00:00Z"}, 10)) == ["pref"]
        assert set(found({"memory_type": "fact", "category": "drinks"}, 20)) == {m["memory_id"] for m in TEA_FACTS}
        assert found({"tier": "cold"}) == [], "nothing was tiered yet"

        bad_time = api.post("/v1/search", json={"user_id": "alice", "query": "tea", "filters": {"created_after": "yesterday"}})
        assert bad_time.status_code == 422 and error_of(bad_time)["field"] == "filters.created_after"


@SQLITE
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/search", {"user_id": "alice", "query": "tea", "tag": "sugar"}, "tag"),
        ("/v1/search", {"user_id": "alice", "query": "tea", "filters": {"colour": "green"}}, "filters.colour"),
        ("/v1/context", {"user_id": "alice", "query": "tea", "max_token": 64}, "max_token"),
        ("/v1/feedback", {"user_id": "alice", "memory_id": "m1", "was_relevant": True, "why": "x"}, "why"),
        ("/v1/events", {"events": [], "dry_run": True}, "dry_run"),
        ("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "tea", "truncate": True}, "truncate"),
        ("/v1/keys", {"scope": "read", "scopes": ["write"]}, "scopes"),
    ],
)
def test_an_unknown_field_is_a_422_naming_it(written_service: MemoryService, path: str, body: dict, field: str):
    with Running(written_service, warm=False) as running, running.client(new_key(written_service.store, "acme", "admin")) as api:
        response = api.post(path, json=body)
        assert response.status_code == 422, response.text
        error = error_of(response)
        assert error["field"] == field and field.split(".")[-1] in error["message"]


def test_users_are_paged_with_their_counts_and_each_tenant_sees_only_its_own(written_service: MemoryService):
    store = written_service.store
    with Running(written_service, warm=False) as running:
        acme, globex = running.client(new_key(store, "acme", "read")), running.client(new_key(store, "globex", "write"))
        with running.client(new_key(store, "acme", "write")) as writer:
            rows = [{"user_id": user, "content": f"{user} note {i}"} for user, n in (("alice", 2), ("bob", 1), ("acme/team/carol", 1)) for i in range(n)]
            assert writer.post("/v1/memories", json={"memories": rows}).json()["created"] == 4
        assert globex.post("/v1/memories", json={"user_id": "zed", "content": "Zed's own note"}).status_code == 201
        # A tenant whose name sorts inside acme's range of stored ids: its users are not acme's.
        assert running.client(new_key(store, "acme-x", "write")).post("/v1/memories", json={"user_id": "amy", "content": "hi"}).status_code == 201

        pages, cursor = [], None
        while True:
            page = acme.get("/v1/users", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            pages.append(page.json()["users"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert pages == [[{"user_id": "alice", "memories": 2}], [{"user_id": "bob", "memories": 1}], [{"user_id": "acme/team/carol", "memories": 1}]]
        assert globex.get("/v1/users").json() == {"users": [{"user_id": "zed", "memories": 1}], "next_cursor": None}

        assert acme.get("/v1/users/alice").json() == {"user_id": "alice", "memories": 2}
        assert acme.get("/v1/users/acme/team/carol").json() == {"user_id": "acme/team/carol", "memories": 1}
        unknown = acme.get("/v1/users/zed")
        assert unknown.status_code == 404 and error_of(unknown)["field"] == "user_id", "globex's user is no user of acme"
        assert acme.get("/v1/users/globex/zed").status_code == 403
        bad_cursor = acme.get("/v1/users", params={"cursor": "not-a-cursor"})
        assert bad_cursor.status_code == 422 and error_of(bad_cursor)["field"] == "cursor"


def test_a_session_answers_its_captured_turns_in_time_order(written_service: MemoryService):
    store = written_service.store
    calls = [("c1", "s1", "What tea should I buy?", "Try a sencha.", "2026-03-01T10:00:00Z"),
             ("c2", "s2", "Where is Lisbon?", "In Portugal.", "2026-03-01T10:30:00Z"),
             ("c3", "s1", "And for the evening?", "A rooibos, no caffeine.", "2026-03-01T11:00:00Z")]
    records = [r for call_id, session, query, reply, when in calls
               for r in exchange_records(Exchange("alice", call_id, query, reply, session_id=session), at=when)]
    with Running(written_service, warm=False) as running, running.client(new_key(store, "acme", "write")) as api:
        assert api.post("/v1/events", json={"events": records}).json()["created"] == 6
        session = api.get("/v1/sessions/s1", params={"user_id": "alice"})
        assert session.status_code == 200, session.text
        turns = session.json()["turns"]
        assert [(t["created_by"], t["content"]) for t in turns] == [
            ("user", "What tea should I buy?"), ("assistant", "Try a sencha."),
            ("user", "And for the evening?"), ("assistant", "A rooibos, no caffeine."),
        ]
        assert session.json()["user_id"] == "alice" and all(t["session_id"] == "s1" and t["user_id"] == "alice" for t in turns)

        first = api.get("/v1/sessions/s1", params={"user_id": "alice", "limit": 3}).json()
        rest = api.get("/v1/sessions/s1", params={"user_id": "alice", "limit": 3, "cursor": first["next_cursor"]}).json()
        assert [t["memory_id"] for t in first["turns"] + rest["turns"]] == [t["memory_id"] for t in turns] and rest["next_cursor"] is None

        missing = api.get("/v1/sessions/s9", params={"user_id": "alice"})
        assert missing.status_code == 404 and error_of(missing)["field"] == "session_id"
        with running.client(new_key(store, "globex", "read")) as other:
            assert other.get("/v1/sessions/s1", params={"user_id": "alice"}).status_code == 404, "globex's alice is another user"
            assert other.get("/v1/sessions/s1", params={"user_id": "acme/alice"}).status_code == 403


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@SQLITE
def test_embeddings_answer_the_official_openai_client(written_service: MemoryService):
    texts = ["How old is your dog?", "What is the age of your puppy?", "The central bank raised interest rates."]
    with Running(written_service, warm=False) as running:
        key = new_key(written_service.store, "acme", "read")
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key=key, max_retries=0)
        answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
        vectors = [d.embedding for d in answer.data]
        assert [d.index for d in answer.data] == [0, 1, 2] and all(len(v) == 384 for v in vectors)
        assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
        assert answer.model == "all-MiniLM-L6-v2" and answer.usage.prompt_tokens == answer.usage.total_tokens >= 3 * 5

        floats = client.embeddings.create(model="hms-embedding", input=texts[0], encoding_format="float", user="someone")
        assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-6), "base64 (the client's default) and float agree"
        stored = written_service.assembler.embedder.encode([texts[0]])[0]
        assert np.allclose(floats.data[0].embedding, stored, atol=1e-5), "the vectors HMS stores for memories"

        with pytest.raises(openai.NotFoundError, match="text-embedding-3-small"):
            client.embeddings.create(model="text-embedding-3-small", input="tea")
        with running.client(key) as api:
            too_many = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["tea"] * (MAX_INPUTS + 1)})
            assert too_many.status_code == 413 and error_of(too_many)["field"] == "input"
            empty = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["tea", ""]})
            assert empty.status_code == 422 and error_of(empty)["field"] == "input.1"
            tokens = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [[1, 2, 3]]})
            assert tokens.status_code == 422 and error_of(tokens)["field"] in ("input", "input.0"), error_of(tokens)
            wrong_size = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "tea", "dimensions": 1536})
            assert wrong_size.status_code == 422 and error_of(wrong_size)["field"] == "dimensions"
        assert running.client(None).post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "tea"}).status_code == 401
