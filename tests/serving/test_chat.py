"""`POST /v1/chat/completions` through the official `openai` client against the service on a loopback
port, with the real local model: memory in the system turn, streaming, capture and its switch."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from hms_resources.context.assembler import ContextAssembler
from hms_resources.integration.plugin import CONTEXT_HEADER, LocalMemory
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.chat import ChatService, parse_chat
from hms_resources.serving.errors import ApiError
from hms_resources.serving.keys import create_key
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from tests.serving.conftest import Running, new_key


@pytest.fixture(scope="module")
def local_model():
    from hms_resources.integration.local_model import LocalModel

    return LocalModel()


@pytest.fixture
def chat_service(tmp_path: Path, local_model) -> MemoryService:
    store = EventStore(hms_home=str(tmp_path / "home"))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    service = MemoryService(store, assembler)
    yield service
    assembler.close()
    store.close()


def started(service: MemoryService, local_model) -> Running:
    return Running(service, chat=ChatService(service, local_model=local_model))


@pytest.mark.timeout(600)
def test_chat_completions_with_memory_through_the_openai_client(chat_service: MemoryService, local_model):
    store = chat_service.store
    key = new_key(store, "acme", "write")
    quiet = new_key(store, "acme", "write")
    from hms_resources.store.api_keys import list_keys

    with store.engine.begin() as conn:
        from hms_resources.store.schema import api_keys

        quiet_id = quiet.split("_")[1]
        conn.execute(api_keys.update().where(api_keys.c.key_id == quiet_id).values(capture=False))
    assert {k.key_id: k.capture for k in list_keys(store)}[quiet_id] is False
    with started(chat_service, local_model) as running:
        with running.client(key) as api:
            added = api.post("/v1/memories", json={"user_id": "alice", "memory_id": "allergy", "content": "Alice is allergic to peanuts."})
            assert added.status_code == 201
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{running.port}/v1", api_key=key, max_retries=0)
        assert [m.id for m in client.models.list()] == ["hms-local"]
        question = [{"role": "user", "content": "What is Alice allergic to?"}]
        raw = client.chat.completions.with_raw_response.create(
            model="hms-local", messages=question, user="alice", max_tokens=24, temperature=0, extra_headers={"Idempotency-Key": "turn-1"}
        )
        reply = raw.parse()
        assert raw.headers["X-HMS-Memories"] == "allergy"
        assert reply.model_extra["hms"]["memories"] == ["allergy"] and reply.model_extra["hms"]["user"] == "alice"
        text = reply.choices[0].message.content
        assert text and reply.usage.completion_tokens > 0

        stream = client.chat.completions.create(model="hms-local", messages=question, user="alice", max_tokens=24, temperature=0, stream=True)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert streamed == text

        # Capture: the turn, the reply and the access, once, even for a retried request.
        before = store.max_sequence()
        client.chat.completions.create(
            model="hms-local", messages=question, user="alice", max_tokens=24, temperature=0, extra_headers={"Idempotency-Key": "turn-1"}
        )
        assert store.max_sequence() == before
        call_id = reply.id.removeprefix("chatcmpl-")
        events = [e for e in store.read_events(user_id="acme/alice") if e.event_id.startswith(f"acme/chat-{call_id}-")]
        first_call = {e.type for e in events}
        assert first_call == {"memory.created", "memory.accessed"}
        turns = sorted((e.payload["created_by"], e.payload["content"]) for e in events if e.type == "memory.created")
        assert ("user", "What is Alice allergic to?") in turns and ("assistant", text) in turns
        assert {e.memory_id for e in events if e.type == "memory.accessed"} == {"allergy"}

        # The captured turn is found by the next call at once.
        follow = client.chat.completions.create(model="hms-local", messages=[{"role": "user", "content": "What did I ask about allergies?"}], user="alice", max_tokens=8)
        assert any(m.startswith("chat-") for m in follow.model_extra["hms"]["memories"])

        # A key with capture off stores nothing; another tenant sees none of alice's memories.
        quiet_client = openai.OpenAI(base_url=f"http://127.0.0.1:{running.port}/v1", api_key=quiet, max_retries=0)
        before = store.max_sequence()
        quiet_client.chat.completions.create(model="hms-local", messages=question, user="alice", max_tokens=8)
        assert store.max_sequence() == before
        other = openai.OpenAI(base_url=f"http://127.0.0.1:{running.port}/v1", api_key=new_key(store, "globex", "write"), max_retries=0)
        assert other.chat.completions.create(model="hms-local", messages=question, user="alice", max_tokens=8).model_extra["hms"]["memories"] == []

        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(model="hms-local", messages=question, max_tokens=8)
        with pytest.raises(openai.APIStatusError) as unreachable:
            client.chat.completions.create(model="ollama/nowhere", messages=question, user="alice", max_tokens=8)
        assert unreachable.value.status_code == 502 and "ollama" in str(unreachable.value)


def test_the_context_goes_into_the_system_turn_in_the_tenants_names(chat_service: MemoryService):
    principal = chat_service.authenticate(new_key(chat_service.store, "acme", "write"))
    chat_service.add_memories(principal, [{"user_id": "bob", "content": "Bob's sister is called Ines."}])
    memory = LocalMemory(chat_service.assembler, writer=chat_service.writer, names=principal)
    call = memory.before_call(
        "bob", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is my sister called?"}], max_tokens=256
    )
    system = call.messages[0]
    assert system["role"] == "system" and system["content"].startswith(CONTEXT_HEADER)
    assert "Bob's sister is called Ines." in system["content"] and system["content"].endswith("Be brief.")
    assert call.messages[1] == {"role": "user", "content": "What is my sister called?"}
    assert call.user_id == "bob"
    memory.after_call(call, "Ines.")
    turns = {e.payload["created_by"]: e for e in chat_service.store.read_events(user_id="acme/bob") if e.payload.get("source_type") == "chat"}
    assert set(turns) == {"user", "assistant"} and all(e.event_id.startswith("acme/chat-") for e in turns.values())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "hms-local", "messages": []}, "messages"),
        ({"model": "hms-local", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": "hms-local", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": 7}]}, "messages.1.content"),
        ({"model": "hms-local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "hms-local", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ],
)
def test_a_bad_chat_request_names_its_field(body: dict, field: str):
    with pytest.raises(ApiError) as refused:
        parse_chat(body, session_header=None, request_id=None)
    assert refused.value.status == 422 and refused.value.field == field


def test_the_chat_settings_come_from_the_environment(chat_service: MemoryService, monkeypatch):
    monkeypatch.setenv("HMS_CHAT_WINDOW", "4096")
    monkeypatch.setenv("HMS_CHAT_CONTEXT_SHARE", "0.25")
    chat = ChatService.from_env(chat_service)
    assert (chat.window, chat.context_share) == (4096, 0.25)
    principal = chat_service.authenticate(new_key(chat_service.store, "acme", "write"))
    chat_service.add_memories(principal, [{"user_id": "bob", "content": f"Bob's note number {n} is about the garden shed."} for n in range(200)])
    memory, call = chat.prepare(principal, parse_chat({"model": "gpt-x", "user": "bob", "messages": [{"role": "user", "content": "the shed?"}]},
                                                      session_header=None, request_id=None))
    assert 0 < sum(int(i["tokens"]) for i in call.items) <= 1024 and memory.context_share == 0.25
    for bad in ("0", "1.5", "half"):
        monkeypatch.setenv("HMS_CHAT_CONTEXT_SHARE", bad)
        with pytest.raises(ValueError, match="HMS_CHAT_CONTEXT_SHARE"):
            ChatService.from_env(chat_service)


@pytest.mark.timeout(600)
def test_litellm_sdk_to_hms_local_with_the_callback_injecting_once(chat_service: MemoryService, local_model, monkeypatch):
    """LiteLLM with `model="openai/hms-local"` and `api_base` at the service: the HMS callback (over
    `RemoteMemory`) injects and records; the service sees the memory already in the system turn and
    adds none, and the leg's key, with capture off, records nothing more."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from hms_resources.integration.litellm_callback import HmsMemoryCallback
    from hms_resources.integration.plugin import RemoteMemory

    store = chat_service.store
    memory_key = new_key(store, "acme", "write")
    leg_key = create_key(store, "acme", "write", "litellm leg", capture=False).secret
    with started(chat_service, local_model) as running:
        url = f"http://127.0.0.1:{running.port}"
        with running.client(memory_key) as api:
            assert api.post("/v1/memories", json={"user_id": "alice", "memory_id": "tea", "content": "Alice drinks only green tea."}).status_code == 201
        sent: list = []

        class Recorded(RemoteMemory):
            def before_call(self, *args, **kwargs):
                sent.append(super().before_call(*args, **kwargs))
                return sent[-1]

        remote = Recorded(url, memory_key)
        hook = HmsMemoryCallback(memory=remote, max_context_tokens=256)
        question = [{"role": "user", "content": "What tea should I buy for Alice?"}]
        # LiteLLM forwards `user` only for models in OpenAI's catalogue, or when `allowed_openai_params` names it.
        response = hook.completion(model="openai/hms-local", api_base=f"{url}/v1", api_key=leg_key, user="alice", allowed_openai_params=["user"],
                                   messages=question, max_tokens=12, temperature=0)
        remote.close()
        reply = response.choices[0].message.content
        assert reply and [i["memory_id"] for i in sent[0].items] == ["tea"]
        system = sent[0].messages[0]["content"]
        assert system.count(CONTEXT_HEADER) == 1 and "Alice drinks only green tea." in system
        assert response.usage.prompt_tokens == len(local_model._prompt(sent[0].messages))

        turns = sorted((e.payload["created_by"], e.payload["content"]) for e in store.read_events(user_id="acme/alice")
                       if e.type == "memory.created" and e.memory_id.startswith("chat-"))
        assert turns == [("assistant", reply), ("user", question[0]["content"])]


@pytest.mark.timeout(600)
def test_a_prompt_over_the_window_is_a_400_and_a_reply_says_whether_its_turns_were_stored(tmp_path: Path, local_model):
    """OpenAI's `context_length_exceeded` (in HMS's error body), streamed or not, before any token;
    a turn past the store's content limit is answered, and the reply says it was not stored."""
    store = EventStore(hms_home=str(tmp_path / "small"), max_content_bytes=200)
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env(), online_index=False)
    service = MemoryService(store, assembler)
    key = new_key(store, "acme", "write")

    def ask(*messages: dict, **extra) -> dict:
        return {"model": "hms-local", "user": "ana", "max_tokens": 6, "messages": list(messages), **extra}

    assert local_model.window == 8192  # loaded here, not in the first request's time
    with Running(service, warm=False, chat=ChatService(service, local_model=local_model)) as running, running.client(key) as api:
        long = {"role": "system", "content": "the garden shed " * 3000}
        for stream in (False, True):
            over = api.post("/v1/chat/completions", json=ask(long, {"role": "user", "content": "Hi"}, stream=stream))
            assert over.status_code == 400, over.text
            error = over.json()["error"]
            assert (error["code"], error["field"]) == ("context_length_exceeded", "messages") and "8192" in error["message"]
        short = api.post("/v1/chat/completions", json=ask({"role": "user", "content": "Say hi."}))
        assert short.status_code == 200 and short.headers["X-HMS-Stored"] == "true" and short.json()["hms"]["stored"] is True
        wordy = {"role": "user", "content": "Tell me about " + "garden sheds " * 20}
        answered = api.post("/v1/chat/completions", json=ask(wordy))
        assert answered.status_code == 200 and answered.headers["X-HMS-Stored"] == "false"
        assert answered.json()["hms"]["stored"] is False and "the user's turn: content" in answered.json()["hms"]["not_stored_reason"]
        streamed = api.post("/v1/chat/completions", json=ask(wordy, stream=True))
        chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
        assert streamed.text.rstrip().endswith("data: [DONE]")
        finish = answered.json()["choices"][0]["finish_reason"]
        assert chunks[-1]["choices"][0]["finish_reason"] == finish and chunks[-1]["hms"]["stored"] is False
    assembler.close()
    store.close()
