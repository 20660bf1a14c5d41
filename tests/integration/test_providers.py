"""The provider wrappers and the LiteLLM callback, offline: a real OpenAI/Anthropic-compatible HTTP
server on a loopback port (it echoes back the system turn it received), the real `openai`,
`anthropic` and `litellm` clients, and `LocalMemory` over a real store."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the remote cost map (there is no network)
os.environ.setdefault("LITELLM_TELEMETRY", "False")

from hms_resources.context.assembler import ContextAssembler  # noqa: E402
from hms_resources.integration.plugin import (  # noqa: E402
    CONTEXT_HEADER,
    LocalMemory,
    MemoryCall,
    new_call_id,
)
from hms_resources.integration.providers import (  # noqa: E402
    anthropic_request,
    openai_messages_from_anthropic,
    with_memory,
)
from hms_resources.store.event_store import EventStore  # noqa: E402
from hms_resources.store.events import accesses_of  # noqa: E402
from hms_resources.store.ingest import ingest_records  # noqa: E402
from tests.helpers import app_in_thread, created  # noqa: E402

FACT = "Alice drinks oolong tea every afternoon."
QUESTION = "What do I drink in the afternoon?"


# ---------------------------------------------------------------------------------------------
# A real OpenAI- and Anthropic-compatible server that echoes the system turn


def _echo_app(seen: list[dict[str, Any]]) -> Any:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        seen.append(body)
        system = "\n".join(m["content"] if isinstance(m["content"], str) else json.dumps(m["content"])
                           for m in body["messages"] if m["role"] == "system")
        reply = f"SYSTEM:{system}"
        if body.get("stream"):
            def chunks() -> Iterator[str]:
                head = {"id": "echo-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
                for i in range(0, len(reply), 16):
                    yield "data: " + json.dumps({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": reply[i:i + 16]},
                                                                     "finish_reason": None}]}) + "\n\n"
                yield "data: " + json.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(chunks(), media_type="text/event-stream")
        return JSONResponse({"id": "echo-1", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    @app.post("/v1/messages")
    async def messages(request: Request) -> Any:
        body = await request.json()
        seen.append(body)
        system = body.get("system") or ""
        if isinstance(system, list):
            system = "\n".join(block["text"] for block in system)
        return JSONResponse({"id": "msg_echo", "type": "message", "role": "assistant", "model": body["model"],
                             "content": [{"type": "text", "text": f"SYSTEM:{system}"}], "stop_reason": "end_turn", "stop_sequence": None,
                             "usage": {"input_tokens": 1, "output_tokens": 1}})

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with app_in_thread(_echo_app(seen)) as url:
        yield url, seen


CACHES = ("tokenizers", "models")
"""What a home derives once and keeps (the tokenizer converted from its GGUF, the query encoder's
ONNX export): made once for the module and copied into each test's home, so a test takes
milliseconds instead of seconds."""


@pytest.fixture(scope="module")
def warm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("warm") / "hms"
    store = EventStore(hms_home=str(home))
    ingest_records(store, [created("warm", "m-warm", FACT)])
    assembler = ContextAssembler.from_home(home)
    LocalMemory(assembler).before_call("warm", [{"role": "user", "content": QUESTION}], max_tokens=256)
    assembler.close()
    return home


def _warm(home: Path, warm_home: Path) -> None:
    for name in CACHES:
        if (warm_home / name).exists():
            shutil.copytree(warm_home / name, home / name, dirs_exist_ok=True)


@pytest.fixture
def memory(hms_home: Path, warm_home: Path) -> Iterator[LocalMemory]:
    _warm(hms_home, warm_home)
    ingest_records(EventStore(hms_home=str(hms_home)), [created("alice", "m-tea", FACT)])
    assembler = ContextAssembler.from_home(hms_home)
    yield LocalMemory(assembler)
    assembler.close()


def _events(memory: LocalMemory) -> list[Any]:
    return list(memory.assembler.event_store.read_events())


def _turns(memory: LocalMemory) -> dict[str, str]:
    """created_by -> content of the recorded conversation turns."""
    return {e.payload["created_by"]: e.payload["content"] for e in _events(memory) if e.memory_id.startswith("chat-") and e.type == "memory.created"}


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _memory_system(system: str) -> None:
    assert system.startswith(f"{CONTEXT_HEADER}\n"), system
    assert FACT in system


# ---------------------------------------------------------------------------------------------
# The Anthropic request shape (pure)


def test_openai_messages_from_anthropic_system_string_and_turns() -> None:
    messages = [
        {"role": "user", "content": "What's the weather in Lisbon?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lisbon", "unit": "c"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C and sunny"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is 21C."}]},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}, {"type": "image", "source": {"type": "base64", "data": "AA=="}}]},
    ]
    assert openai_messages_from_anthropic("Be brief.", messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What's the weather in Lisbon?"},
        {"role": "assistant", "content": 'Let me look.\n{"input": {"city": "Lisbon", "unit": "c"}, "tool_use": "get_weather"}'},
        {"role": "user", "content": "21C and sunny"},
        {"role": "assistant", "content": "It is 21C."},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_openai_messages_from_anthropic_system_blocks_and_tool_results() -> None:
    system = [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}}]
    messages = [
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "row 1"}, {"type": "text", "text": "row 2"}]},
            {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]},
            {"type": "tool_result", "tool_use_id": "t3", "is_error": True},
        ]},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]},
    ]
    assert openai_messages_from_anthropic(system, messages) == [
        {"role": "system", "content": "You are terse.\nAnswer in English."},
        {"role": "user", "content": 'row 1\nrow 2\n[{"source": {"type": "url", "url": "u"}, "type": "image"}]'},
    ]
    assert openai_messages_from_anthropic(None, [{"role": "user", "content": "hi"}]) == [{"role": "user", "content": "hi"}]


def _call(prompt: str) -> MemoryCall:
    return MemoryCall(user_id="alice", query="q", messages=[], call_id="c1", prompt=prompt)


def test_anthropic_request_prepends_the_context_to_system() -> None:
    memory = f"{CONTEXT_HEADER}\n[1 Mar 2026]\n{FACT}"
    messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    base = {"model": "claude-x", "max_tokens": 100, "messages": messages}

    assert anthropic_request(base, _call(f"[1 Mar 2026]\n{FACT}")) == {**base, "system": memory}
    assert anthropic_request({**base, "system": "Be brief."}, _call(f"[1 Mar 2026]\n{FACT}")) == {**base, "system": f"{memory}\n\nBe brief."}
    blocks = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    assert anthropic_request({**base, "system": blocks}, _call(f"[1 Mar 2026]\n{FACT}")) == {
        **base, "system": [{"type": "text", "text": memory}, {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    }
    sent = anthropic_request({**base, "system": "Be brief."}, _call(""))
    assert sent == {**base, "system": "Be brief."}
    assert anthropic_request(base, _call(f"[1 Mar 2026]\n{FACT}"))["messages"] is messages  # messages unchanged


# ---------------------------------------------------------------------------------------------
# The openai and anthropic wrappers, over real HTTP


def test_openai_wrapper_injects_and_records_once(echo: tuple[str, list], memory: LocalMemory) -> None:
    openai = pytest.importorskip("openai")
    url, seen = echo
    client = with_memory(openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0), user_id="alice", memory=memory, session_id="s1")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]

    response = client.chat.completions.create(model="echo", messages=messages, hms_call_id="request-1")

    sent = seen[-1]
    assert "hms_call_id" not in sent
    system = sent["messages"][0]["content"]
    _memory_system(system)
    assert system.endswith("\n\nBe brief.")
    assert sent["messages"][1:] == [{"role": "user", "content": QUESTION}]
    assert response.choices[0].message.content == f"SYSTEM:{system}"
    assert messages[0] == {"role": "system", "content": "Be brief."}  # the caller's list is not changed
    assert response.model_extra["hms"] == {"memory_user": "alice", "memories": ["m-tea"], "memory_in_request": True}

    call_id = new_call_id(given="request-1")
    events = _events(memory)
    by_id = {e.memory_id: e for e in events}
    assert by_id[f"chat-{call_id}-user"].payload["content"] == QUESTION
    assert by_id[f"chat-{call_id}-assistant"].payload["content"] == f"SYSTEM:{system}"
    assert by_id[f"chat-{call_id}-user"].payload["session_id"] == "s1"
    assert any(a.type == "memory.accessed" and a.memory_id == "m-tea" for e in events for a in accesses_of(e))

    client.chat.completions.create(model="echo", messages=messages, hms_call_id="request-1")  # a retry
    assert len(_events(memory)) == len(events)


def test_openai_wrapper_stream_records_at_the_end(echo: tuple[str, list], memory: LocalMemory) -> None:
    openai = pytest.importorskip("openai")
    url, seen = echo
    client = with_memory(openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0), user_id="alice", memory=memory)

    stream = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": QUESTION}], stream=True)
    assert _turns(memory) == {}
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    _memory_system(seen[-1]["messages"][0]["content"])
    assert text == f"SYSTEM:{seen[-1]['messages'][0]['content']}"
    assert _turns(memory) == {"user": QUESTION, "assistant": text}


def test_async_openai_wrapper(echo: tuple[str, list], memory: LocalMemory) -> None:
    openai = pytest.importorskip("openai")
    url, seen = echo

    async def run() -> str:
        client = with_memory(openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0), user_id="alice", memory=memory)
        response = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": QUESTION}])
        return response.choices[0].message.content

    reply = asyncio.run(run())
    _memory_system(seen[-1]["messages"][0]["content"])
    assert _turns(memory) == {"user": QUESTION, "assistant": reply}


def test_anthropic_wrapper(echo: tuple[str, list], memory: LocalMemory) -> None:
    anthropic = pytest.importorskip("anthropic")
    url, seen = echo
    client = with_memory(anthropic.Anthropic(base_url=url, api_key="x", max_retries=0), user_id="alice", memory=memory)

    response = client.messages.create(model="claude-echo", max_tokens=64, system=[{"type": "text", "text": "Be brief."}],
                                      messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])

    sent = seen[-1]
    _memory_system(sent["system"][0]["text"])
    assert sent["system"][1] == {"type": "text", "text": "Be brief."}
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    assert _turns(memory) == {"user": QUESTION, "assistant": response.content[0].text}
    assert response.model_extra["hms"] == {"memory_user": "alice", "memories": ["m-tea"], "memory_in_request": True}


def test_with_memory_rejects_other_clients(memory: LocalMemory) -> None:
    with pytest.raises(TypeError):
        with_memory(object(), user_id="alice", memory=memory)


# ---------------------------------------------------------------------------------------------
# LiteLLM


@pytest.fixture
def litellm_callbacks(monkeypatch: pytest.MonkeyPatch) -> Any:
    """LiteLLM's global callback lists, restored after the test."""
    litellm = pytest.importorskip("litellm")
    for name in ("callbacks", "input_callback", "success_callback", "failure_callback", "_async_success_callback",
                 "_async_failure_callback", "_async_input_callback", "service_callback"):
        if isinstance(getattr(litellm, name, None), list):
            monkeypatch.setattr(litellm, name, list(getattr(litellm, name)))
    return litellm


def test_litellm_sdk_sync_completion(echo: tuple[str, list], memory: LocalMemory, litellm_callbacks: Any) -> None:
    from hms_resources.integration.litellm_callback import HmsMemoryCallback

    litellm = litellm_callbacks
    url, seen = echo
    callback = HmsMemoryCallback(memory=memory)
    litellm.callbacks = [callback]

    # the sync SDK has no hook that can change the messages: the callback's own `completion` injects
    response = callback.completion(model="openai/echo", api_base=f"{url}/v1", api_key="x", user="alice",
                                   messages=[{"role": "user", "content": QUESTION}], litellm_call_id="llm-1")

    system = seen[-1]["messages"][0]["content"]
    _memory_system(system)
    assert response.choices[0].message.content == f"SYSTEM:{system}"
    call_id = new_call_id(given="llm-1")
    _wait_for(lambda: f"chat-{call_id}-assistant" in {e.memory_id for e in _events(memory)})
    assert _turns(memory) == {"user": QUESTION, "assistant": f"SYSTEM:{system}"}
    assert callback.pending("llm-1") is None


def test_litellm_sdk_async_hook(echo: tuple[str, list], memory: LocalMemory, litellm_callbacks: Any) -> None:
    from hms_resources.integration.litellm_callback import HmsMemoryCallback

    litellm = litellm_callbacks
    url, seen = echo
    litellm.callbacks = [HmsMemoryCallback(memory=memory)]

    async def run() -> str:
        response = await litellm.acompletion(model="openai/echo", api_base=f"{url}/v1", api_key="x",
                                             messages=[{"role": "user", "content": QUESTION}], metadata={"user_id": "alice"})
        # the success hook runs as a task on this loop: let it finish before the loop closes
        deadline = time.monotonic() + 10
        while len(_turns(memory)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return response.choices[0].message.content

    reply = asyncio.run(run())
    system = seen[-1]["messages"][0]["content"]
    _memory_system(system)
    assert reply == f"SYSTEM:{system}"
    _wait_for(lambda: len(_turns(memory)) == 2)
    assert _turns(memory) == {"user": QUESTION, "assistant": reply}


def test_litellm_without_user_goes_through_unchanged(echo: tuple[str, list], memory: LocalMemory, litellm_callbacks: Any) -> None:
    from hms_resources.integration.litellm_callback import HmsMemoryCallback

    url, seen = echo
    callback = HmsMemoryCallback(memory=memory)
    callback.completion(model="openai/echo", api_base=f"{url}/v1", api_key="x", messages=[{"role": "user", "content": QUESTION}])
    assert seen[-1]["messages"] == [{"role": "user", "content": QUESTION}]
    assert _turns(memory) == {}


# ---------------------------------------------------------------------------------------------
# The LiteLLM proxy, started with its own CLI


PROXY_MODULE = """
import os
from hms_resources.context.assembler import ContextAssembler
from hms_resources.integration.litellm_callback import HmsMemoryCallback
from hms_resources.integration.plugin import LocalMemory

proxy_handler_instance = HmsMemoryCallback(memory=LocalMemory(ContextAssembler.from_home(os.environ["HMS_HOME"])))
"""


@pytest.fixture
def hms_serve(hms_home: Path, warm_home: Path) -> Iterator[tuple[str, str, Any]]:
    """The service with the local model over the test's home, and a key whose capture is off (the
    leg behind a LiteLLM callback that records the exchange itself) and whose default user is
    another (so a user that does not arrive shows)."""
    from hms_resources.integration.local_model import LocalModel
    from hms_resources.serving.chat import ChatService
    from hms_resources.serving.keys import create_key
    from hms_resources.serving.service import MemoryService
    from tests.serving.conftest import Running

    _warm(hms_home, warm_home)
    store = EventStore(hms_home=str(hms_home))
    assembler = ContextAssembler.from_home(hms_home)
    service = MemoryService(store, assembler, record_access=False)
    key = create_key(store, "local", "write", "litellm leg", capture=False, default_user="maya").secret
    local = LocalModel()
    with Running(service, chat=ChatService(service, local_model=local)) as running:
        yield f"http://127.0.0.1:{running.port}", key, local
    assembler.close()
    store.close()


@pytest.mark.timeout(420)
def test_litellm_proxy(echo: tuple[str, list], hms_home: Path, tmp_path: Path, warm_home: Path, hms_serve: tuple[str, str, Any]) -> None:
    pytest.importorskip("litellm.proxy.proxy_server")
    cli = shutil.which("litellm", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("the litellm CLI is not installed")
    import httpx

    url, seen = echo
    _warm(hms_home, warm_home)
    ingest_records(EventStore(hms_home=str(hms_home)), [created("alice", "m-tea", FACT)])
    (tmp_path / "hms_proxy_callback.py").write_text(textwrap.dedent(PROXY_MODULE))
    master_key = f"sk-{secrets.token_hex(24)}"
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        model_list:
          - model_name: echo
            litellm_params:
              model: openai/echo
              api_base: {url}/v1
              api_key: x
          - model_name: hms
            litellm_params:
              model: openai/hms-local
              api_base: {hms_serve[0]}/v1
              api_key: {hms_serve[1]}
              allowed_openai_params: ["user"]
        litellm_settings:
          callbacks: hms_proxy_callback.proxy_handler_instance
        general_settings:
          master_key: {master_key}
        """))
    port = _free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "HMS_HOME": str(hms_home)}
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "proxy.log").open("wb")
    proxy = subprocess.Popen([cli, "--config", str(config), "--port", str(port), "--host", "127.0.0.1"],
                             cwd=Path(__file__).resolve().parents[2], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        deadline = started + 120
        while True:
            if proxy.poll() is not None:
                pytest.fail(f"the proxy exited: {(tmp_path / 'proxy.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "proxy.log").read_text()[-3000:]
            time.sleep(0.2)
        print(f"proxy started in {time.monotonic() - started:.1f}s")

        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                              headers={"Authorization": f"Bearer {master_key}"},
                              json={"model": "echo", "user": "alice", "messages": [{"role": "user", "content": QUESTION}]})
        assert response.status_code == 200, response.text
        system = seen[-1]["messages"][0]["content"]
        _memory_system(system)
        assert system.count(CONTEXT_HEADER) == 1  # injected once, though both proxy hooks ran
        reply = response.json()["choices"][0]["message"]["content"]
        assert reply == f"SYSTEM:{system}"

        store = EventStore(hms_home=str(hms_home))

        def turns() -> dict[str, str]:
            return {e.payload["created_by"]: e.payload["content"] for e in store.read_events()
                    if e.memory_id.startswith("chat-") and e.type == "memory.created"}

        _wait_for(lambda: len(turns()) == 2, timeout=20)
        assert turns() == {"user": QUESTION, "assistant": reply}

        # Forwarded to hms serve's local model: the callback injects and records; the service finds
        # the memory already in the system turn and adds none, and its leg (capture off) records nothing.
        # LiteLLM drops `user` for a model outside OpenAI's catalogue unless the deployment lists it in
        # `allowed_openai_params`; with it, the user the openai client sends arrives, and `hms` says so.
        import openai

        asked = [{"role": "user", "content": "Which tea do I like?"}]
        expected = LocalMemory(ContextAssembler.from_home(hms_home), capture=False).before_call("alice", asked, max_tokens=1024)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=master_key, max_retries=0, timeout=300)
        raw = client.chat.completions.with_raw_response.create(model="hms", user="alice", messages=asked, max_tokens=8, temperature=0)
        answered = raw.parse()
        local_reply = answered.choices[0].message.content
        assert local_reply and not local_reply.startswith("SYSTEM:")
        assert expected.messages[0]["content"].startswith(CONTEXT_HEADER) and FACT in expected.messages[0]["content"]
        assert answered.usage.prompt_tokens == len(hms_serve[2]._prompt(expected.messages))
        hms = answered.model_extra["hms"]
        assert (hms["user"], hms["memories"], hms["memory_in_request"]) == ("alice", [], True)
        assert raw.headers["llm_provider-x-hms-stored"] == "false"  # the proxy renames the upstream's headers (the leg's capture is off)

        def exchanges() -> list[tuple[str, str]]:
            return sorted((e.payload["created_by"], e.payload["content"]) for e in store.read_events()
                          if e.memory_id.startswith("chat-") and e.type == "memory.created")

        _wait_for(lambda: len(exchanges()) == 4, timeout=20)
        assert exchanges() == sorted([("user", QUESTION), ("assistant", reply), ("user", asked[0]["content"]), ("assistant", local_reply)])
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proxy.kill()
        log.close()
