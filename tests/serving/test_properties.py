"""Property-based runs over every route's schema against a real server (uvicorn on a loopback port,
SQLite): no input yields a 5xx, and every refusal is the one error body, a 422 naming its field.

Two sources of input: schemathesis, which reads the OpenAPI schema and generates requests that fit
it and requests that break it (wrong types, missing fields, out-of-range values); and hostile values
(lone surrogates, NUL, control characters, huge integers, NaN, deep nesting, wrong types, `/` in
ids, huge strings) put by hypothesis into each field of a valid body. The chat route is left out:
a request that fits its schema runs a model (tests/serving/test_bad_input.py covers its refusals).
Both runs are derandomized and bounded; `TALLY` counts requests tried and 5xx answered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from hms_resources.context.assembler import ContextAssembler
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from tests.serving.conftest import new_key
from tests.serving.conftest import Running
from tests.serving.test_bad_input import shared_home

TALLY: Counter[str] = Counter()
"""Requests tried and 5xx answered by the runs of this module (`tried`, `server_errors`)."""

LEFT_OUT = {"/v1/chat/completions"}
EXAMPLES_PER_OPERATION = 15
HOSTILE_EXAMPLES = 350


def bounded(examples: int) -> settings:
    """A fixed number of derandomized examples, no deadline and no example database, so the run is
    the same on every machine."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, str]]:
    """The API over SQLite with an admin key of tenant `acme`, whose user `alice` has memory `m1`."""
    home = tmp_path_factory.mktemp("properties")
    store = EventStore(database_url=f"sqlite:///{home / 'store.db'}", hms_home=str(shared_home(tmp_path_factory)))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    service = MemoryService(store, assembler)
    key = new_key(store, "acme", "admin")
    with Running(service) as running:
        with running.client(key) as api:
            assert api.post("/v1/memories", json={"user_id": "alice", "memory_id": "m1", "content": "Alice keeps bees."}).status_code == 201
        yield running, key
    assembler.close()
    store.close()


def documented(schema: dict[str, Any], method: str, path: str) -> set[int]:
    """The statuses the OpenAPI schema documents for an operation."""
    return {int(status) for status in schema["paths"][path][method.lower()]["responses"] if status.isdigit()}


def answered(status: int, body: bytes, where: str, statuses: set[int]) -> None:
    """What every answer must be: below 500 and documented; a refusal is the one error body, and a 422
    or 413 names its field (or `body`)."""
    TALLY["tried"] += 1
    if status >= 500:
        TALLY["server_errors"] += 1
    assert status < 500, f"{where}: {status} {body[:300]!r}"
    if status < 400:
        return
    assert status in statuses, f"{where}: {status} is not documented for the route: {body[:300]!r}"
    error = orjson.loads(body)
    assert set(error) == {"error"} and set(error["error"]) == {"code", "message", "field"}, f"{where}: {body[:300]!r}"
    if status in (413, 422):
        assert error["error"]["field"], f"{where}: {body[:300]!r}"


def items_answered(body: bytes, where: str) -> None:
    """A batch's refused items name their field too, when the refusal is about the input."""
    for item in orjson.loads(body).get("results", ()):
        if item["status"] == "rejected" and item["error"]["code"] == "invalid":
            assert item["error"]["field"], f"{where}: {item}"


def test_no_request_generated_from_the_schema_gets_a_5xx_and_every_refusal_names_its_field(served: tuple[Running, str]):
    running, key = served
    base = f"http://127.0.0.1:{running.port}"
    with running.client(key) as api:
        openapi = api.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(openapi)
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path not in LEFT_OUT]
    assert {"POST /v1/memories", "POST /v1/context", "PATCH /v1/memories/{memory_id}"} <= {o.label for o in operations}
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {key}"
        for operation in operations:
            cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

            @bounded(EXAMPLES_PER_OPERATION)
            @given(case=cases)
            def each(case: schemathesis.Case) -> None:
                response = case.call(base_url=base, session=session, timeout=60)
                where = f"{case.method} {case.formatted_path} {response.request.body!r:.300}"
                answered(response.status_code, response.content, where, documented(openapi, case.method, case.path))
                if case.method == "POST" and case.path == "/v1/memories" and response.status_code == 200:
                    items_answered(response.content, where)

            each()
    print(f"\nproperty runs so far: {dict(TALLY)}")
    assert TALLY["server_errors"] == 0


HOSTILE = [
    b'"\\ud800"', b'"a\\udfffb"', b'"\\u0000"', b'"bee\\u0007s"', b'"\\n\\t"', b'""', b'" "',
    b"1" + b"0" * 30, b"9" * 5000, b"-9223372036854775809", b"NaN", b"-Infinity", b"1e400", b"-0.0", b"1.5", b"-1", b"0",
    b"true", b"null", b"[]", b"{}", b"[" * 2000 + b"]" * 2000, b'{"a":' * 40 + b"1" + b"}" * 40,
    b'"team/bob"', b'"acme/team/bob"', b'"globex/alice"', b'"/"', b'"acme/"', b'"x' + b"y" * 300 + b'"', b'"' + b"z" * 70_000 + b'"',
    b'["\\ud800"]', b'{"\\ud800": 1}', b'"2026-02-30T00:00:00Z"', b'"0001-01-01T00:00:00+00:00"', b'"9999-12-31T23:59:59-23:59"',
]
"""Raw JSON text (or what passes for it) put in place of one value of a valid body."""

MEMORY = {"user_id": "alice", "content": "Alice keeps bees.", "memory_type": "fact", "category": "hobby", "tags": ["bees"],
          "importance": 0.5, "metadata": {"hive": 2}, "event_id": "e-1", "memory_id": "m-1", "occurred_at": "2026-01-01T00:00:00Z"}
BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/memories", MEMORY),
    ("POST", "/v1/memories", {"memories": [MEMORY, {**MEMORY, "event_id": "e-2", "memory_id": "m-2"}]}),
    ("PATCH", "/v1/memories/{memory_id}", {"content": "Alice keeps two hives.", "importance": 0.7, "tags": ["bees"]}),
    ("POST", "/v1/memories/{memory_id}/archive", {"reason": "moved"}),
    ("POST", "/v1/events", {"events": [{"event_id": "ev-1", "type": "memory.created", "user_id": "alice", "memory_id": "m-3",
                                        "occurred_at": "2026-01-01T00:00:00Z", "payload": {"content": "Alice sells honey.", "tags": ["honey"]}}]}),
    ("POST", "/v1/search", {"user_id": "alice", "query": "bees", "limit": 3, "now": "2026-06-01T00:00:00Z"}),
    ("POST", "/v1/context", {"user_id": "alice", "query": "bees", "max_tokens": 64, "deep": False, "now": "2026-06-01T00:00:00Z"}),
    ("POST", "/v1/feedback", {"user_id": "alice", "memory_id": "m1", "was_relevant": True, "relevance_score": 0.5}),
    ("POST", "/v1/memories", {"user_id": "alice", "messages": [{"role": "user", "content": "Alice keeps bees."}], "session_id": "s1"}),
    ("POST", "/v1/search", {"user_id": "alice", "query": "bees", "filters": {"tags": ["bees"], "created_after": "2026-01-01T00:00:00Z"}}),
    ("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["Alice keeps bees."], "encoding_format": "float"}),
]
MARK = "@@hostile@@"


def places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value inside a body, containers included."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += places(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += places(child, (*path, i))
    return found


def marked(value: Any, path: tuple) -> Any:
    if not path:
        return MARK
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: marked(v, rest) if k == head else v for k, v in value.items()}
    return [marked(v, rest) if i == head else v for i, v in enumerate(value)]


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    method, path, body = draw(st.sampled_from(BODIES))
    place = draw(st.sampled_from(places(body)))
    raw = orjson.dumps(marked(body, place)).replace(orjson.dumps(MARK), draw(st.sampled_from(HOSTILE)))
    return method, path, raw


def test_a_hostile_value_in_any_field_is_never_a_5xx_and_its_refusal_names_the_field(served: tuple[Running, str]):
    running, key = served
    with running.client(key) as api:
        openapi = api.get("/openapi.json").json()

        @bounded(HOSTILE_EXAMPLES)
        @given(request=hostile_requests())
        def each(request: tuple[str, str, bytes]) -> None:
            method, path, raw = request
            url = path.replace("{memory_id}", "m1") + ("?user_id=alice" if "{memory_id}" in path else "")
            response = api.request(method, url, content=raw, headers={"content-type": "application/json"})
            where = f"{method} {path} {raw[:300]!r}"
            answered(response.status_code, response.content, where, documented(openapi, method, path))
            if path == "/v1/memories" and response.status_code == 200:
                items_answered(response.content, where)

        each()
    print(f"\nproperty runs so far: {dict(TALLY)}")
    assert TALLY["tried"] >= HOSTILE_EXAMPLES and TALLY["server_errors"] == 0
