"""Memory for code that calls a provider's own client: `with_memory(client, user_id=..., memory=...)`
wraps an `openai` client (`chat.completions.create`) or an `anthropic` client (`messages.create`),
sync or async, so each call goes through the plugin: `before_call` puts the user's memory in the
system turn, the real client is called, and `after_call` records the exchange (at the end of the
stream when `stream=True`). Neither SDK is imported here: the client is recognised by its shape.

Two keyword arguments of `create` are the wrapper's own and never reach the provider:
`hms_call_id` (the caller's request id: a retried call then records nothing twice) and
`hms_session_id` (overrides the wrapper's session for this call)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
from typing import Any

from hms_resources.common.home import redact_secrets
from hms_resources.integration.plugin import (
    CONTEXT_HEADER,
    MemoryCall,
    MemoryPlugin,
    new_call_id,
    text_of,
)

__all__ = ["WrappedAnthropic", "WrappedOpenAI", "anthropic_request", "import_litellm", "openai_messages_from_anthropic",
           "provider_failure", "provider_of", "with_memory"]


# ---------------------------------------------------------------------------------------------
# LiteLLM: imported offline-safe, the provider of a model, a failure said without secrets


def import_litellm() -> Any:
    """LiteLLM, told (unless the environment says otherwise) to read the model cost map it ships:
    by default its import fetches the map from GitHub, three tries that stall seconds offline, in
    every process that imports it (`hms serve`, the callback)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def provider_of(model: str) -> str | None:
    """The provider LiteLLM sends `model` to (`gpt-4o-mini` -> `openai`, `ollama/x` -> `ollama`);
    None when it knows none."""
    litellm = import_litellm()
    try:
        return str(litellm.get_llm_provider(model)[1])
    except Exception:  # noqa: BLE001 - LiteLLM raises its BadRequestError for a model it cannot place
        return None


def provider_failure(model: str, provider: str, error: BaseException) -> str:
    """One line saying why a provider did not answer: the provider, the model, where LiteLLM sent
    it, the error's type, the provider's HTTP status (or that it was unreachable: LiteLLM reports a
    connection failure as a 500 of its own) and its message, secrets redacted."""
    message = str(getattr(error, "message", None) or error or "").strip().replace("\n", " ")
    status = getattr(error, "status_code", None)
    said = " (unreachable)" if _unreachable(error) else f" (HTTP {status})" if str(status or "").isdigit() else ""
    base = _API_BASE.search(str(getattr(error, "litellm_debug_info", None) or ""))
    where = f" at {base[1]}" if base else ""
    return redact_secrets(f"the provider {provider!r} could not answer for model {model!r}{where}: {type(error).__name__}{said}: {message}")[:2000]


_API_BASE = re.compile(r"API Base: `([^`]+)`")


def _unreachable(error: BaseException) -> bool:
    """Whether the request never got an answer: a connection error anywhere in the chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if name in ("APIConnectionError", "APITimeoutError", "ConnectError", "ConnectTimeout", "Timeout") or "Connection error" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


# ---------------------------------------------------------------------------------------------
# Anthropic request shape: pure functions


def _as_dict(block: Any) -> Any:
    """An Anthropic content block as a dict (blocks replayed from a response are pydantic models)."""
    if isinstance(block, dict):
        return block
    dump = getattr(block, "model_dump", None)
    return dump() if callable(dump) else block


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _block_text(block: Any) -> str:
    """The text one Anthropic content block contributes to the memory's view of the conversation:
    text as is, a tool call as JSON of its name and input, a tool result as its text (or JSON when
    it holds no text); images, documents and thinking contribute nothing."""
    block = _as_dict(block)
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text") or "")
    if kind == "tool_use":
        return _json({"tool_use": block.get("name"), "input": block.get("input")})
    if kind == "tool_result":
        content = block.get("content")
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            parts = [_as_dict(part) for part in content]
            text = text_of([p for p in parts if isinstance(p, dict)])
            return text if text.strip() else _json(parts)
        return _json(content)
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (_block_text(block) for block in content) if t)
    return ""


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return text_of([_as_dict(block) for block in system])
    return ""  # None, NOT_GIVEN, omit


def openai_messages_from_anthropic(system: Any, messages: list[Any]) -> list[dict[str, Any]]:
    """Anthropic's `system` and `messages` as the OpenAI-style messages `before_call` reads: the
    system text as a first system turn (when there is one), then each user/assistant turn as its
    text (see `_block_text`); turns with no text are left out."""
    out: list[dict[str, Any]] = []
    given = _system_text(system)
    if given:
        out.append({"role": "system", "content": given})
    for message in messages or []:
        message = _as_dict(message)
        role = message.get("role")
        if role not in ("user", "assistant"):
            continue
        text = _content_text(message.get("content"))
        if text:
            out.append({"role": role, "content": text})
    return out


def anthropic_request(kwargs: dict[str, Any], call: MemoryCall) -> dict[str, Any]:
    """The exact kwargs to send to `messages.create`: the caller's, with the memory context (what
    `with_context` puts in the system turn) before any `system` they gave. A string system stays a
    string; a list of blocks gets a text block in front (the caller's blocks, and any cache_control
    on them, are kept as they are). Messages are sent unchanged."""
    out = dict(kwargs)
    if not call.prompt:
        return out
    memory = f"{CONTEXT_HEADER}\n{call.prompt}"
    system = kwargs.get("system")
    if isinstance(system, list):
        out["system"] = [{"type": "text", "text": memory}, *system]
    elif isinstance(system, str) and system:
        out["system"] = f"{memory}\n\n{system}"
    else:
        out["system"] = memory
    return out


# ---------------------------------------------------------------------------------------------
# Reply text


def _openai_reply(response: Any) -> str:
    try:
        return response.choices[0].message.content or ""
    except (AttributeError, IndexError, TypeError):
        return ""


def _openai_chunk_text(chunk: Any) -> str:
    try:
        return chunk.choices[0].delta.content or ""
    except (AttributeError, IndexError, TypeError):
        return ""


def _anthropic_reply(response: Any) -> str:
    return "".join(_block_text(block) for block in getattr(response, "content", None) or [] if _as_dict(block).get("type") == "text")


def _anthropic_event_text(event: Any) -> str:
    if getattr(event, "type", None) == "content_block_delta" and getattr(event.delta, "type", None) == "text_delta":
        return event.delta.text or ""
    return ""


def _annotated(response: Any, call: MemoryCall) -> Any:
    """The response with the wrapper's own account in its `hms` field: whose memory it put in the
    system turn and which memories (`memory_user`, `memories`, `memory_in_request: true`), over what
    `hms serve` said when it was the provider (its `user` is then the user whose adapter it used).
    The SDKs keep unknown fields of a response in `__pydantic_extra__`; a response without one is
    returned as it is."""
    extra = getattr(response, "__pydantic_extra__", None)
    if isinstance(extra, dict):
        served = extra.get("hms") if isinstance(extra.get("hms"), dict) else {}
        extra["hms"] = {**served, "memory_user": call.user_id, "memories": call.memory_ids, "memory_in_request": True}
    return response


# ---------------------------------------------------------------------------------------------
# Streams: pass every chunk through, record the collected text once the stream ends


class _RecordingStream:
    def __init__(self, stream: Any, text_of_chunk: Any, done: Any):
        self._stream = stream
        self._text_of_chunk = text_of_chunk
        self._done = done
        self._parts: list[str] = []
        self._recorded = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _finish(self) -> Any:
        if self._recorded:
            return None
        self._recorded = True
        return self._done("".join(self._parts))

    def __iter__(self) -> Any:
        for chunk in self._stream:
            self._parts.append(self._text_of_chunk(chunk))
            yield chunk
        self._finish()

    def __enter__(self) -> "_RecordingStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        close = getattr(self._stream, "close", None)
        if callable(close):
            close()

    async def __aiter__(self) -> Any:
        async for chunk in self._stream:
            self._parts.append(self._text_of_chunk(chunk))
            yield chunk
        done = self._finish()
        if inspect.isawaitable(done):
            await done

    async def __aenter__(self) -> "_RecordingStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        close = getattr(self._stream, "close", None)
        if callable(close):
            result = close()
            if inspect.isawaitable(result):
                await result


# ---------------------------------------------------------------------------------------------
# The wrappers


class _Memoryful:
    def __init__(self, memory: MemoryPlugin, user_id: str, max_context_tokens: int, session_id: str | None):
        self.memory = memory
        self.user_id = user_id
        self.max_context_tokens = max_context_tokens
        self.session_id = session_id

    def _before(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> MemoryCall:
        given = kwargs.pop("hms_call_id", None)
        session_id = kwargs.pop("hms_session_id", None) or self.session_id
        return self.memory.before_call(
            self.user_id, messages, max_tokens=self.max_context_tokens, session_id=session_id,
            call_id=new_call_id(given=given) if given else None,
        )


def _is_async(method: Any) -> bool:
    """Whether a client method is a coroutine function (the SDKs wrap theirs in decorators)."""
    return inspect.iscoroutinefunction(method) or inspect.iscoroutinefunction(inspect.unwrap(method))


class _Passthrough:
    """Every attribute but the wrapped one comes from the real object."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _OpenAICompletions(_Passthrough):
    def __init__(self, inner: Any, owner: _Memoryful):
        super().__init__(inner)
        self._owner = owner
        self._async = _is_async(inner.create)

    def create(self, **kwargs: Any) -> Any:
        if self._async:
            return self._acreate(**kwargs)
        call = self._owner._before(list(kwargs.get("messages") or []), kwargs)
        kwargs["messages"] = call.messages
        response = self._inner.create(**kwargs)
        if kwargs.get("stream"):
            return _RecordingStream(response, _openai_chunk_text, lambda text: self._owner.memory.after_call(call, text))
        self._owner.memory.after_call(call, _openai_reply(response))
        return _annotated(response, call)

    async def _acreate(self, **kwargs: Any) -> Any:
        call = await asyncio.to_thread(self._owner._before, list(kwargs.get("messages") or []), kwargs)
        kwargs["messages"] = call.messages
        response = await self._inner.create(**kwargs)
        if kwargs.get("stream"):
            return _RecordingStream(response, _openai_chunk_text, lambda text: asyncio.to_thread(self._owner.memory.after_call, call, text))
        await asyncio.to_thread(self._owner.memory.after_call, call, _openai_reply(response))
        return _annotated(response, call)


class _OpenAIChat(_Passthrough):
    def __init__(self, inner: Any, owner: _Memoryful):
        super().__init__(inner)
        self.completions = _OpenAICompletions(inner.completions, owner)


class WrappedOpenAI(_Passthrough, _Memoryful):
    """An `openai.OpenAI` / `openai.AsyncOpenAI` whose `chat.completions.create` goes through memory."""

    def __init__(self, client: Any, memory: MemoryPlugin, user_id: str, max_context_tokens: int, session_id: str | None):
        _Passthrough.__init__(self, client)
        _Memoryful.__init__(self, memory, user_id, max_context_tokens, session_id)
        self.chat = _OpenAIChat(client.chat, self)


class _AnthropicMessages(_Passthrough):
    def __init__(self, inner: Any, owner: _Memoryful):
        super().__init__(inner)
        self._owner = owner
        self._async = _is_async(inner.create)

    def _prepare(self, kwargs: dict[str, Any]) -> tuple[MemoryCall, dict[str, Any]]:
        messages = openai_messages_from_anthropic(kwargs.get("system"), list(kwargs.get("messages") or []))
        call = self._owner._before(messages, kwargs)
        return call, anthropic_request(kwargs, call)

    def create(self, **kwargs: Any) -> Any:
        if self._async:
            return self._acreate(**kwargs)
        call, request = self._prepare(kwargs)
        response = self._inner.create(**request)
        if request.get("stream"):
            return _RecordingStream(response, _anthropic_event_text, lambda text: self._owner.memory.after_call(call, text))
        self._owner.memory.after_call(call, _anthropic_reply(response))
        return _annotated(response, call)

    async def _acreate(self, **kwargs: Any) -> Any:
        call, request = await asyncio.to_thread(self._prepare, kwargs)
        response = await self._inner.create(**request)
        if request.get("stream"):
            return _RecordingStream(response, _anthropic_event_text, lambda text: asyncio.to_thread(self._owner.memory.after_call, call, text))
        await asyncio.to_thread(self._owner.memory.after_call, call, _anthropic_reply(response))
        return _annotated(response, call)


class WrappedAnthropic(_Passthrough, _Memoryful):
    """An `anthropic.Anthropic` / `anthropic.AsyncAnthropic` whose `messages.create` goes through memory."""

    def __init__(self, client: Any, memory: MemoryPlugin, user_id: str, max_context_tokens: int, session_id: str | None):
        _Passthrough.__init__(self, client)
        _Memoryful.__init__(self, memory, user_id, max_context_tokens, session_id)
        self.messages = _AnthropicMessages(client.messages, self)


def with_memory(
    client: Any, *, user_id: str, memory: MemoryPlugin, max_context_tokens: int = 1024, session_id: str | None = None
) -> WrappedOpenAI | WrappedAnthropic:
    """The client with memory on its chat call: an OpenAI-style client (it has `chat.completions`)
    or an Anthropic-style one (it has `messages.create`). `max_context_tokens` bounds the memory
    context put in the system turn."""
    chat = getattr(client, "chat", None)
    if chat is not None and callable(getattr(getattr(chat, "completions", None), "create", None)):
        return WrappedOpenAI(client, memory, user_id, max_context_tokens, session_id)
    if callable(getattr(getattr(client, "messages", None), "create", None)):
        return WrappedAnthropic(client, memory, user_id, max_context_tokens, session_id)
    raise TypeError(f"with_memory needs an openai client (chat.completions.create) or an anthropic one (messages.create), not {type(client).__name__}")
