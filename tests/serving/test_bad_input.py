"""Every bad input is a documented 4xx in the one error body, naming the field or header at fault:
lone surrogates, bodies that are not JSON, wrong JSON types, empty times, bad `Idempotency-Key`s,
NaN, over-long queries; and user ids holding a `/` round-trip over HTTP and the MCP tools.
A real server (uvicorn on a loopback port) over SQLite for the module, and one over PostgreSQL for
what only PostgreSQL refuses (NUL in text)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from mcp import Client
from sqlalchemy.engine import make_url

from hms_resources.context.assembler import ContextAssembler
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.api.models import ERRORS
from hms_resources.serving.chat import ChatService
from hms_resources.serving.mcp_server import build_server
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from tests.conftest import PG_SERVER_URL
from tests.serving.conftest import new_key
from tests.serving.conftest import Running

JSON = {"content-type": "application/json"}
README = Path(__file__).resolve().parents[2] / "README.md"


def shared_home(factory: pytest.TempPathFactory) -> Path:
    """One HMS home for the session's modules that serve on SQLite: the tokenizer the context resource
    converts on its first start is cached there once (each module keeps its own store file)."""
    return factory.getbasetemp() / "served-home"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, str]]:
    """The API (with the chat routes: no model is loaded, every request here is refused before one
    would be) and a write key of tenant `acme`; `alice` has one memory, `m1`."""
    home = tmp_path_factory.mktemp("bad-input")
    store = EventStore(database_url=f"sqlite:///{home / 'store.db'}", hms_home=str(shared_home(tmp_path_factory)))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    service = MemoryService(store, assembler)
    key = new_key(store, "acme", "write")
    with Running(service, chat=ChatService(service)) as running:
        with running.client(key) as api:
            assert api.post("/v1/memories", json={"user_id": "alice", "memory_id": "m1", "content": "Alice keeps bees."}).status_code == 201
        yield running, key
    assembler.close()
    store.close()


@pytest.fixture(scope="module")
def served_on_postgres(tmp_path_factory: pytest.TempPathFactory, postgres_server: sa.Engine) -> Iterator[tuple[Running, str]]:
    """The API over a fresh PostgreSQL database (which, unlike SQLite, cannot hold NUL in text)."""
    name = f"hms_test_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    store = EventStore(database_url=make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False),
                       hms_home=str(shared_home(tmp_path_factory)))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    service = MemoryService(store, assembler)
    key = new_key(store, "acme", "write")
    try:
        with Running(service) as running:
            yield running, key
    finally:
        assembler.close()
        store.close()
        with postgres_server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def api(served: tuple[Running, str]) -> Iterator[httpx.Client]:
    running, key = served
    with running.client(key) as client:
        yield client


def refusal(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    """The one error body, with the status expected."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    return body["error"]


SURROGATE = "\\ud800"
"""A lone surrogate as a JSON escape: valid JSON syntax, not Unicode text."""

LONE_SURROGATES = [
    ("POST", "/v1/search", '{"user_id": "alice", "query": "bees SURROGATE"}', "query"),
    ("POST", "/v1/context", '{"user_id": "alSURROGATEice", "query": "bees"}', "user_id"),
    ("POST", "/v1/memories", '{"user_id": "alice", "content": "hi", "event_id": "eSURROGATE"}', "event_id"),
    ("POST", "/v1/memories", '{"user_id": "alice", "content": "' + "long " * 4000 + 'SURROGATE"}', "content"),
    ("POST", "/v1/memories", '{"memories": [{"user_id": "alice", "content": "fine"}, {"user_id": "alice", "content": "SURROGATE"}]}', "memories.1.content"),
    ("POST", "/v1/memories", '{"user_id": "alice", "content": "hi", "metadata": {"SURROGATE": 1}}', "metadata"),
    ("PATCH", "/v1/memories/m1?user_id=alice", '{"content": "SURROGATE"}', "content"),
    ("POST", "/v1/feedback", '{"user_id": "alice", "memory_id": "mSURROGATE", "was_relevant": true}', "memory_id"),
    ("POST", "/v1/events", '{"events": [{"event_id": "SURROGATE", "type": "memory.created"}]}', "events.0.event_id"),
    ("POST", "/v1/chat/completions", '{"model": "hms-local", "user": "SURROGATE", "messages": [{"role": "user", "content": "hi"}]}', "user"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), LONE_SURROGATES, ids=[f"{m} {p} {f}" for m, p, _, f in LONE_SURROGATES])
def test_a_lone_surrogate_anywhere_in_a_body_is_a_422_naming_its_field(api: httpx.Client, method: str, path: str, body: str, field: str):
    error = refusal(api.request(method, path, content=body.replace("SURROGATE", SURROGATE).encode(), headers=JSON))
    assert error["code"] == "invalid" and error["field"] == field and "surrogate" in error["message"]
    assert api.get("/v1/memories/m1", params={"user_id": "alice"}).json()["content"] == "Alice keeps bees."


NOT_JSON = [
    ("invalid UTF-8", b'{"user_id": "alice", "query": "\xff\xfe"}'),
    ("deep nesting", b'{"user_id": "alice", "query": "x", "now": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("5,000-digit integer", b'{"user_id": "alice", "query": "x", "limit": ' + b"9" * 5000 + b"}"),
    ("truncated", b'{"user_id": "alice", "query": '),
    ("byte order mark", b'\xef\xbb\xbf{"user_id": "alice", "query": "x"}'),
]


@pytest.mark.parametrize("body", [b for _, b in NOT_JSON], ids=[n for n, _ in NOT_JSON])
def test_a_body_that_is_not_json_is_a_documented_422_on_body(api: httpx.Client, body: bytes):
    error = refusal(api.post("/v1/search", content=body, headers=JSON))
    assert error["code"] == "invalid" and error["field"] == "body" and error["message"].startswith("the body is not valid JSON")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/context", {"user_id": "alice", "query": "bees", "deep": "yes"}, "deep"),
        ("/v1/context", {"user_id": "alice", "query": "bees", "max_tokens": "100"}, "max_tokens"),
        ("/v1/context", {"user_id": "alice", "query": "bees", "max_tokens": 100.5}, "max_tokens"),
        ("/v1/context", {"user_id": 7, "query": "bees"}, "user_id"),
        ("/v1/search", {"user_id": "alice", "query": ["bees"]}, "query"),
        ("/v1/search", {"user_id": "alice", "query": "bees", "limit": True}, "limit"),
        ("/v1/feedback", {"user_id": "alice", "memory_id": "m1", "was_relevant": "yes"}, "was_relevant"),
        ("/v1/feedback", {"user_id": "alice", "memory_id": "m1", "was_relevant": 1}, "was_relevant"),
        ("/v1/feedback", {"user_id": "alice", "memory_id": "m1", "was_relevant": True, "relevance_score": "0.5"}, "relevance_score"),
        ("/v1/events", {"events": "all of them"}, "events"),
    ],
)
def test_a_wrong_json_type_is_a_422_naming_the_field_never_coerced(api: httpx.Client, path: str, body: dict, field: str):
    error = refusal(api.post(path, json=body))
    assert error["code"] == "invalid" and error["field"] == field
    assert api.get("/v1/memories/m1/history", params={"user_id": "alice"}).json()["events"][-1]["type"] == "memory.created"


@pytest.mark.parametrize("value", ["", 0, False, [], "yesterday"])
def test_an_empty_or_malformed_occurred_at_is_refused_not_taken_as_now(api: httpx.Client, value: Any):
    error = refusal(api.post("/v1/memories", json={"user_id": "alice", "content": "Alice moved to Porto.", "occurred_at": value}))
    assert error["field"] == "occurred_at"
    batch = api.post("/v1/memories", json={"memories": [{"user_id": "alice", "content": "Alice moved to Porto.", "occurred_at": value}]}).json()
    assert batch["rejected"] == 1 and batch["results"][0]["error"]["field"] == "occurred_at"


@pytest.mark.parametrize(("field", "value"), [("memory_id", ""), ("event_id", ""), ("memory_id", 0)])
def test_an_empty_id_is_refused_not_replaced_by_a_fresh_one(api: httpx.Client, field: str, value: Any):
    error = refusal(api.post("/v1/memories", json={"user_id": "alice", "content": "Alice moved to Porto.", field: value}))
    assert error["field"] == field


@pytest.mark.parametrize("now", ["", "soon", 5])
def test_an_empty_or_malformed_now_is_refused(api: httpx.Client, now: Any):
    assert refusal(api.post("/v1/context", json={"user_id": "alice", "query": "bees", "now": now}))["field"] == "now"


@pytest.mark.parametrize("key", ["k" * 300, "tab\there"])
def test_a_bad_idempotency_key_names_the_header(api: httpx.Client, key: str):
    error = refusal(api.post("/v1/memories", json={"user_id": "alice", "content": "Alice likes figs."}, headers={"Idempotency-Key": key}))
    assert error["field"] == "Idempotency-Key" and "Idempotency-Key" in error["message"]
    batch = api.post("/v1/memories", json={"memories": [{"user_id": "alice", "content": "Alice likes figs."}]}, headers={"Idempotency-Key": key})
    assert refusal(batch)["field"] == "Idempotency-Key"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_is_named_as_what_it_is(api: httpx.Client, constant: str):
    body = f'{{"user_id": "alice", "content": "Alice likes figs.", "importance": {constant}}}'.encode()
    error = refusal(api.post("/v1/memories", content=body, headers=JSON))
    assert error["field"] == "importance" and constant in error["message"] and "null" not in error["message"]


def test_a_query_over_the_limit_is_refused_naming_query(api: httpx.Client, monkeypatch: pytest.MonkeyPatch):
    long_query = "bees " * 1700
    assert len(long_query.encode()) > 8 * 1024
    for path in ("/v1/search", "/v1/context"):
        error = refusal(api.post(path, json={"user_id": "alice", "query": long_query}))
        assert error["field"] == "query" and "8192 bytes" in error["message"]
    assert api.post("/v1/search", json={"user_id": "alice", "query": long_query[:8000]}).status_code == 200
    monkeypatch.setenv("HMS_MAX_QUERY_BYTES", "100")
    assert refusal(api.post("/v1/search", json={"user_id": "alice", "query": "bees " * 30}))["field"] == "query"


def test_nul_and_control_characters_in_ids_filters_and_queries_are_a_422_on_postgresql(served_on_postgres: tuple[Running, str]):
    running, key = served_on_postgres
    with running.client(key) as api:
        assert api.post("/v1/memories", json={"user_id": "alice", "memory_id": "m1", "content": "Alice keeps bees."}).status_code == 201
        for method, url, field in [
            ("GET", "/v1/memories/%00?user_id=alice", "memory_id"),
            ("POST", "/v1/memories/m%01/archive?user_id=alice", "memory_id"),
            ("GET", "/v1/memories?user_id=al%00ice", "user_id"),
            ("GET", "/v1/memories?user_id=alice&category=%00", "category"),
            ("GET", "/v1/memories?user_id=alice&memory_type=x%1f", "memory_type"),
            ("GET", "/v1/memories?user_id=alice&tag=%00", "tag"),
            ("DELETE", "/v1/memories/m1?user_id=alice&reason=%00", "reason"),
        ]:
            assert refusal(api.request(method, url))["field"] == field, url
        for path in ("/v1/search", "/v1/context"):
            assert refusal(api.post(path, json={"user_id": "alice", "query": "bees\u0000"}))["field"] == "query"
        assert refusal(api.post("/v1/feedback", json={"user_id": "alice", "memory_id": "m\u0000", "was_relevant": True}))["field"] == "memory_id"
        assert api.get("/v1/memories/m1", params={"user_id": "alice"}).json()["status"] == "live"


def test_a_chat_body_is_refused_by_its_field_before_any_model_runs(api: httpx.Client):
    error = refusal(api.post("/v1/chat/completions", content=b'{"model": "hms-local", "messages": [{"role": "user", "content": NaN}]}', headers=JSON))
    assert error["field"] == "messages.0.content"
    assert refusal(api.post("/v1/chat/completions", json={"model": "hms-local", "messages": "hi"}))["field"] == "messages"


def test_a_user_id_with_a_slash_round_trips_over_http(api: httpx.Client):
    added = api.post("/v1/memories", json={"user_id": "acme/team/bob", "memory_id": "standup", "content": "The team meets at nine."})
    assert added.status_code == 201 and added.json()["user_id"] == "acme/team/bob"
    got = api.get("/v1/memories/standup", params={"user_id": added.json()["user_id"]})
    assert got.status_code == 200 and got.json()["user_id"] == "acme/team/bob"
    listed = api.get("/v1/memories", params={"user_id": "acme/team/bob"}).json()["memories"]
    assert [(m["memory_id"], m["user_id"]) for m in listed] == [("standup", "acme/team/bob")]
    context = api.post("/v1/context", json={"user_id": "acme/team/bob", "query": "when does the team meet?"}).json()
    assert context["user_id"] == "acme/team/bob" and [i["memory_id"] for i in context["items"]] == ["standup"]
    events = api.post("/v1/events", json={"events": [{"event_id": "bob-2", "type": "memory.created", "user_id": "acme/team/bob",
                                                       "occurred_at": "2026-05-01T09:00:00Z", "payload": {"content": "Bob chairs it."}}]}).json()
    assert events["results"][0]["user_id"] == "acme/team/bob"
    # Without the prefix, `team/bob` names the tenant `team`: refused, never another tenant's user.
    assert refusal(api.get("/v1/memories/standup", params={"user_id": "team/bob"}), 403)["field"] == "user_id"
    # A plain name still comes back plain.
    assert api.get("/v1/memories/m1", params={"user_id": "acme/alice"}).json()["user_id"] == "alice"


def test_a_user_id_with_a_slash_round_trips_over_the_mcp_tools(served: tuple[Running, str]):
    running, key = served
    service = running.service
    principal = service.authenticate(key)
    server = build_server(service, lambda ctx: principal)

    async def walk() -> dict[str, Any]:
        async with Client(server) as client:
            added = await client.call_tool("remember", {"user_id": "acme/ops/eve", "content": "Eve is on call this week.", "memory_id": "oncall"})
            assert not added.is_error and added.structured_content["user_id"] == "acme/ops/eve"
            got = await client.call_tool("get_memory", {"user_id": added.structured_content["user_id"], "memory_id": "oncall"})
            assert not got.is_error and got.structured_content["user_id"] == "acme/ops/eve"
            listed = await client.call_tool("list_memories", {"user_id": "acme/ops/eve"})
            assert [m["user_id"] for m in listed.structured_content["memories"]] == ["acme/ops/eve"]
            recalled = await client.call_tool("recall", {"user_id": "acme/ops/eve", "query": "who is on call?"})
            assert recalled.structured_content["user_id"] == "acme/ops/eve"
            # Tool arguments are strict too: "yes" is not true, "5" is not 5.
            for tool, arguments, field in [("recall", {"user_id": "alice", "query": "bees", "deep": "yes"}, "deep"),
                                           ("feedback", {"user_id": "alice", "memory_id": "m1", "was_relevant": "yes"}, "was_relevant"),
                                           ("search_memories", {"user_id": "alice", "query": "bees", "limit": "5"}, "limit")]:
                refused = await client.call_tool(tool, arguments)
                assert refused.is_error and field in refused.content[0].text, (tool, refused.content)
        # The client writes NaN as null; the server's JSON-RPC parser reads a NaN literal as NaN.
        nan = await server.call_tool("remember", {"user_id": "alice", "content": "x", "importance": float("nan")})
        return {"nan": nan.content[0].text}

    found = anyio.run(walk)
    assert found["nan"].startswith("invalid:") and "NaN" in found["nan"] and "null" not in found["nan"]


def test_every_status_the_service_answers_is_documented_in_openapi_and_the_readme(api: httpx.Client):
    schema = api.get("/openapi.json").json()
    answered = {"401", "403", "404", "408", "409", "410", "413", "421", "422", "429", "503"}
    assert answered <= {str(s) for s in ERRORS}
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert answered <= documented, (method, path, sorted(answered - documented))
            assert all(operation["responses"][s]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut") for s in answered)
    assert {"400", "502"} <= set(schema["paths"]["/v1/chat/completions"]["post"]["responses"])
    table = README.read_text()
    for status in sorted(answered | {"400", "500", "502"}):
        assert f"| {status} |" in table, f"README's error table lacks {status}"
