"""A chat call either stores its turns or says why, without the local model: a session id the store
would refuse is a 422 at parse time, and an `Idempotency-Key` reused with another message is a 409
before any model is called."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hms_resources.context.assembler import ContextAssembler
from hms_resources.integration.plugin import new_call_id
from hms_resources.memory.exchange import Exchange
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.chat import ChatService, parse_chat
from hms_resources.serving.errors import ApiError
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from tests.serving.conftest import Running, new_key

NOWHERE = "ollama/nowhere"
"""A provider that cannot answer: a call that reaches the model is a 502."""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MemoryService]:
    store = EventStore(hms_home=str(tmp_path / "home"))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env(), online_index=False)
    yield MemoryService(store, assembler)
    assembler.close()
    store.close()


def ask(text: str, **extra) -> dict:
    return {"model": NOWHERE, "user": "ana", "max_tokens": 8, "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("metadata", "header", "field"),
    [
        ({"session_id": "s\x01ession"}, None, "metadata.session_id"),
        ({"session_id": "x" * 1000}, None, "metadata.session_id"),
        ({"session_id": 7}, None, "metadata.session_id"),
        ({"session_id": "ok"}, "bad\x7fheader", "X-HMS-Session"),
    ],
)
def test_a_session_id_the_store_would_refuse_is_refused_at_parse_time(metadata: dict, header: str | None, field: str):
    with pytest.raises(ApiError) as refused:
        parse_chat(ask("hi", metadata=metadata), session_header=header, request_id=None)
    assert (refused.value.status, refused.value.field) == (422, field)
    assert parse_chat(ask("hi", metadata={"session_id": "s-1"}), session_header=None, request_id=None).session_id == "s-1"


def test_a_reused_idempotency_key_with_another_message_is_a_409_before_the_model(service: MemoryService):
    """The first call's turns are stored as the chat endpoint stores them (its call id derives from
    the tenant and the key); the retry of the same message passes the check (`test_writes.py`)."""
    key = new_key(service.store, "acme", "write")
    chat = ChatService(service)
    principal = service.authenticate(f"Bearer {key}")
    first = Exchange("ana", new_call_id(given="acme/turn-1"), "What is my cat called?", "Your cat is called Miso.")
    assert service.writer.capture_exchange(first, names=principal).stored
    stored = service.store.max_sequence()
    with Running(service, warm=False, chat=chat) as running, running.client(key) as api:
        control = api.post("/v1/chat/completions", json=ask("hi", metadata={"session_id": "s\x01"}))
        assert control.status_code == 422 and control.json()["error"]["field"] == "metadata.session_id"
        for stream in (False, True):
            reused = api.post("/v1/chat/completions", json=ask("What is my dog called?", stream=stream), headers={"Idempotency-Key": "turn-1"})
            assert reused.status_code == 409, reused.text
            assert reused.json()["error"]["code"] == "conflict" and reused.json()["error"]["field"] == "Idempotency-Key"
    assert service.store.max_sequence() == stored
