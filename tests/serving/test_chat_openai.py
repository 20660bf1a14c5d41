"""`/v1/chat/completions` answers as OpenAI does: `finish_reason` says whether `max_tokens` cut the
reply (streamed or not), `stream_options.include_usage` ends the stream with a usage chunk, fields HMS
cannot honour are a 400 naming them, `user` (top level or through `extra_body`) picks whose memory is
used and `hms` says so, and a provider's failure is a 502 that says why without a secret."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hms_resources.context.assembler import ContextAssembler
from hms_resources.integration.plugin import CONTEXT_HEADER
from hms_resources.integration.providers import provider_of
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.chat import ChatService, parse_chat
from hms_resources.serving.errors import ApiError
from hms_resources.serving.keys import create_key
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from tests.helpers import app_in_thread
from tests.serving.conftest import Running, new_key

HI = [{"role": "user", "content": "hi"}]


def parsed(**fields: Any):
    return parse_chat({"model": "hms-local", "messages": HI, **fields}, session_header=None, request_id=None)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"stop": ["\n"]}, "stop"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"temprature": 0.5}, "temprature"),
        ({"extra_body": {"user": "alice"}}, "extra_body"),
    ],
)
def test_a_field_hms_cannot_honour_is_a_400_naming_it(fields: dict, field: str):
    with pytest.raises(ApiError) as refused:
        parsed(**fields)
    assert (refused.value.status, refused.value.code, refused.value.field) == (400, "invalid", field)
    assert field in refused.value.message


def test_harmless_fields_pass_and_the_honoured_ones_are_read():
    request = parsed(top_p=0.9, seed=7, store=False, presence_penalty=0.1, frequency_penalty=0.1, parallel_tool_calls=True,
                     n=1, tools=[], tool_choice="none", logprobs=False, response_format={"type": "text"}, stop=None,
                     service_tier="auto", max_completion_tokens=5, stream=True, stream_options={"include_usage": True},
                     metadata={"user_id": "bob", "session_id": "s-1"})
    assert (request.max_tokens, request.include_usage, request.user, request.session_id) == (5, True, "bob", "s-1")
    assert parsed(user="alice", metadata={"user_id": "bob"}).user == "alice"
    for bad, field in (({"max_completion_tokens": 0}, "max_completion_tokens"), ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
                       ({"user": 7}, "user")):
        with pytest.raises(ApiError) as refused:
            parsed(**bad)
        assert (refused.value.status, refused.value.field) == (422, field)


def test_litellm_names_the_provider_of_a_bare_model_name():
    assert provider_of("gpt-4o-mini") == "openai"
    assert provider_of("openai/gpt-4o-mini") == "openai"
    assert provider_of("ollama/llama3") == "ollama"
    assert provider_of("no-such-model-anywhere") is None


# ---------------------------------------------------------------------------------------------
# Through the official openai client, with the real local model


@pytest.fixture(scope="module")
def local_model():
    from hms_resources.integration.local_model import LocalModel

    return LocalModel()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MemoryService]:
    store = EventStore(hms_home=str(tmp_path / "home"))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    yield MemoryService(store, assembler)
    assembler.close()
    store.close()


def stream_of(client: openai.OpenAI, **request: Any) -> list[Any]:
    return list(client.chat.completions.create(model="hms-local", stream=True, temperature=0, **request))


@pytest.mark.timeout(600)
def test_finish_reason_usage_and_whose_memory_through_the_openai_client(service: MemoryService, local_model):
    store = service.store
    key = create_key(store, "acme", "write", "maya's app", capture=False, default_user="maya").secret  # no captured turn changes a later prompt
    with Running(service, chat=ChatService(service, local_model=local_model)) as running:
        with running.client(key) as api:
            for user, memory, content in (("maya", "m-maya", "Maya is allergic to peanuts."), ("alice", "m-alice", "Alice is allergic to shellfish.")):
                assert api.post("/v1/memories", json={"user_id": user, "memory_id": memory, "content": content}).status_code == 201
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key=key, max_retries=0)

        # Cut by max_tokens: "length", streamed or not; a reply the model ended: "stop".
        cut = client.chat.completions.create(model="hms-local", messages=HI, user="nobody", max_tokens=1, temperature=0)
        assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 1
        chunks = stream_of(client, messages=HI, user="nobody", max_tokens=1)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert all(c.usage is None for c in chunks)
        short = [{"role": "user", "content": "Reply with exactly one word: yes or no. Is the sky blue?"}]
        ended = client.chat.completions.create(model="hms-local", messages=short, user="nobody", max_completion_tokens=8, temperature=0)
        assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens < 8

        # Roles the local model's template has no turn for: `developer` is read as system, a `tool` result as
        # the user's turn (an agent replaying a tool loop), streamed or not: answered, never a 500.
        agent = [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": "What is the weather?"},
                 {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                        "function": {"name": "weather", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 21 C."}]
        assert client.chat.completions.create(model="hms-local", messages=agent, user="nobody", max_tokens=2).choices[0].message.content
        assert stream_of(client, messages=agent, user="nobody", max_tokens=2)[-1].choices[0].finish_reason == "length"

        # stream_options.include_usage: a last chunk with no choices and the usage; every other chunk has usage null.
        chunks = stream_of(client, messages=short, user="nobody", max_tokens=8, stream_options={"include_usage": True})
        assert chunks[-1].choices == [] and chunks[-1].usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == \
            ended.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
        assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason == "stop"

        # Whose memory: `user=` and `extra_body={"user": ...}` (merged into the body by the client) pick
        # alice; without a user, the key's default user; `hms` names the user and the memories used.
        question = [{"role": "user", "content": "What am I allergic to?"}]
        for given in ({"user": "alice"}, {"extra_body": {"user": "alice"}}, {"extra_body": {"metadata": {"user_id": "alice"}}}):
            hms = client.chat.completions.create(model="hms-local", messages=question, max_tokens=1, **given).model_extra["hms"]
            assert (hms["user"], hms["memories"], hms["memory_in_request"]) == ("alice", ["m-alice"], False), given
        raw = client.chat.completions.with_raw_response.create(model="hms-local", messages=question, max_tokens=1)
        assert raw.parse().model_extra["hms"]["memories"] == ["m-maya"] and raw.headers["X-HMS-Memories"] == "m-maya"

        # Memory already in the system turn (a plugin in front): none added, none claimed.
        given = [{"role": "system", "content": f"{CONTEXT_HEADER}\nAlice is allergic to shellfish."}, *question]
        hms = client.chat.completions.create(model="hms-local", messages=given, user="alice", max_tokens=1).model_extra["hms"]
        assert (hms["user"], hms["memories"], hms["memory_in_request"], hms["context_tokens"]) == ("alice", [], True, 0)

        # What HMS cannot honour is a 400 naming the field, before any model runs.
        for refused, field in (({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"), ({"n": 2}, "n")):
            with pytest.raises(openai.BadRequestError) as error:
                client.chat.completions.create(model="hms-local", messages=HI, max_tokens=1, **refused)
            assert json.loads(error.value.response.text)["error"]["field"] == field


# ---------------------------------------------------------------------------------------------
# A provider that refuses: its cause in the 502 and the log, its key in neither


def _refusing_provider(seen: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible server that answers 401 quoting the key it was sent, as careless proxies do."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        seen.append(dict(request.headers))
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}. Authorization: Bearer {key}",
                                       "type": "invalid_request_error", "code": "invalid_api_key"}}, status_code=401)

    return app


@pytest.fixture
def refusing_provider() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with app_in_thread(_refusing_provider(seen)) as url:
        yield f"{url}/v1", seen


def test_a_provider_error_names_the_provider_and_the_cause_without_the_key(service: MemoryService, refusing_provider, monkeypatch, caplog):
    url, seen = refusing_provider
    fake_key = f"sk-test-{secrets.token_hex(16)}"
    monkeypatch.setenv("OPENAI_API_KEY", fake_key)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    key = new_key(service.store, "acme", "write")
    caplog.set_level(logging.WARNING, logger="hms.chat")
    with Running(service, warm=False, chat=ChatService(service)) as running, running.client(key) as api:
        for model in ("gpt-4o-mini", "openai/gpt-4o-mini"):
            for stream in (False, True):
                answered = api.post("/v1/chat/completions", json={"model": model, "user": "ana", "messages": HI, "max_tokens": 4, "stream": stream})
                assert answered.status_code == 502, answered.text
                error = answered.json()["error"]
                assert (error["code"], error["field"]) == ("provider_error", "model")
                assert "'openai'" in error["message"] and "401" in error["message"] and "Incorrect API key provided" in error["message"]
                assert fake_key not in answered.text and fake_key[8:] not in answered.text
        unknown = api.post("/v1/chat/completions", json={"model": "no-such-model-anywhere", "user": "ana", "messages": HI})
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "model"
    assert seen and all(h["authorization"] == f"Bearer {fake_key}" for h in seen)  # the key did reach the provider
    logged = [r.getMessage() for r in caplog.records if r.name == "hms.chat"]
    assert any("'openai'" in line and "401" in line for line in logged)
    assert not any(fake_key[8:] in line for line in logged)
