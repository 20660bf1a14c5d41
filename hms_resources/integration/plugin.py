"""The one plugin interface every integration goes through (the chat endpoint, the LiteLLM callback,
the `openai` and `anthropic` wrappers, `hms chat`): before a model call, the messages with the user's
memory in the system turn and the adapter to apply; after it, the exchange recorded as events.

Two implementations: `LocalMemory` over the door for writes and the context resource in this process
(`hms chat`, and `hms serve`'s own chat endpoint, as the key's tenant), and `RemoteMemory` over a
running `hms serve` (for code that calls providers itself)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from hms_resources.context.prompt import CONTEXT_HEADER
from hms_resources.memory.exchange import Exchange, exchange_records
from hms_resources.memory.writes import AS_STORED, Captured, MemoryWriter, Names

DEFAULT_CONTEXT_SHARE = 0.5
"""Share of the model's context window the memory context may take."""


@dataclass
class MemoryCall:
    """One model call with memory: what went in, and what to record after it."""

    user_id: str
    query: str
    messages: list[dict[str, Any]]
    call_id: str
    session_id: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    """The context items used: memory_id, text, tokens, score, tier, kind, source_ids."""
    prompt: str = ""
    adapter: dict[str, Any] | None = None
    """The champion adapter the context named (name, version, uri, path, base_model, ...), if any."""
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def memory_ids(self) -> list[str]:
        return sorted({s for item in self.items for s in item.get("source_ids", [])})


class MemoryPlugin(Protocol):
    def before_call(
        self, user_id: str, messages: list[dict[str, Any]], *, max_tokens: int, session_id: str | None = None, call_id: str | None = None
    ) -> MemoryCall: ...

    def after_call(self, call: MemoryCall, reply: str) -> None: ...


def text_of(content: Any) -> str:
    """The text of an OpenAI or Anthropic message content: a string, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") in (None, "text"))
    if content is None:
        return ""
    raise ValueError(f"message content must be a string or a list of text parts, not {type(content).__name__}")


def last_user_turn(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def holds_memory(messages: list[dict[str, Any]]) -> bool:
    """Whether a plugin in front has already put the memory in the system turn (the LiteLLM callback
    or a wrapper calling `hms serve`'s chat endpoint)."""
    first = messages[0] if isinstance(messages, list) and messages else None
    if not isinstance(first, dict) or first.get("role") != "system" or not isinstance(first.get("content"), (str, list)):
        return False
    return text_of(first["content"]).startswith(CONTEXT_HEADER)


def with_context(messages: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    """The messages with the memory context in the system turn (added before any system text the
    caller gave, or as a new first turn): the turn the adapters are trained to read. Messages that
    already hold the memory are left as they are, so chained plugins inject it once."""
    if not prompt or holds_memory(messages):
        return [dict(m) for m in messages]
    memory = f"{CONTEXT_HEADER}\n{prompt}"
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        given = text_of(out[0].get("content"))
        out[0]["content"] = f"{memory}\n\n{given}" if given else memory
    else:
        out.insert(0, {"role": "system", "content": memory})
    return out


QUESTION_MEMORY_HEADER = "Facts you remember about me:"
QUESTION_MEMORY_ASK = "Answer in one or two sentences, using the facts above when they answer it."


def memory_in_question(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with the memory `with_context` put in the system turn moved into the last user turn,
    as short bullet facts right before the question, and an instruction to use them: a layout tried for
    the small local model (`LocalModel(memory_layout="question")`; measured in docs/model-calls.md).
    Messages without memory, or without a user turn, are left as they are."""
    out = [dict(m) for m in messages]
    last = next((n for n in range(len(out) - 1, -1, -1) if out[n].get("role") == "user"), None)
    if last is None or not holds_memory(out):
        return out
    system = text_of(out[0]["content"])
    memory, _, given = system[len(CONTEXT_HEADER):].lstrip("\n").partition("\n\n")
    facts = "\n".join(line if line.startswith("[") else f"- {line}" for line in memory.splitlines() if line.strip())
    question = text_of(out[last].get("content"))
    out[last]["content"] = f"{QUESTION_MEMORY_HEADER}\n{facts}\n\n{QUESTION_MEMORY_ASK}\n{question}"
    if given:
        out[0]["content"] = given
    else:
        del out[0]
    return out


def new_call_id(messages: list[dict[str, Any]] | None = None, given: str | None = None) -> str:
    """The caller's request id when it gives one (a retry then records nothing twice), else a new one."""
    if given:
        return hashlib.sha256(given.encode()).hexdigest()[:32]
    return uuid.uuid4().hex


def exchange_of(call: MemoryCall, reply: str) -> Exchange:
    """What the door records of a call (`memory/exchange.py`): the turns, and the memories its context used."""
    return Exchange(call.user_id, call.call_id, call.query, reply, call.session_id, call.memory_ids)


def call_from_context(
    user_id: str, messages: list[dict[str, Any]], found: dict[str, Any], *, session_id: str | None = None, call_id: str | None = None
) -> MemoryCall:
    """A call from a context in the `/v1/context` JSON shape (`items`, `prompt`, `adapter`, `timings_ms`):
    what every plugin builds once it has the context, however it got it."""
    return MemoryCall(
        user_id=user_id,
        query=last_user_turn(messages),
        messages=with_context(messages, found["prompt"]),
        call_id=call_id or new_call_id(),
        session_id=session_id,
        items=found["items"],
        prompt=found["prompt"],
        adapter=found.get("adapter"),
        timings_ms=found.get("timings_ms", {}),
    )


class LocalMemory:
    """The plugin over this process's context resource and door for writes. `names` maps the caller's
    user names to stored ones (a tenant's `Principal`); `writer` is the door to share (the service's),
    else one over the resource's store that tells the resource of each write."""

    def __init__(
        self,
        assembler: Any,
        *,
        writer: MemoryWriter | None = None,
        capture: bool = True,
        context_share: float = DEFAULT_CONTEXT_SHARE,
        names: Names = AS_STORED,
    ):
        self.assembler = assembler
        self.writer = writer if writer is not None else MemoryWriter(assembler.event_store, on_written=lambda r: assembler.note_written(r.last_sequence))
        self.capture = capture
        self.context_share = context_share
        self.names = names

    def before_call(
        self, user_id: str, messages: list[dict[str, Any]], *, max_tokens: int, session_id: str | None = None, call_id: str | None = None
    ) -> MemoryCall:
        """The context for the last user turn; its accesses are recorded with the exchange, after the call."""
        stored = self.names.stored_user(user_id)
        context = self.assembler.assemble(stored, last_user_turn(messages), max(1, max_tokens))
        return call_from_context(user_id, messages, context.to_json(user_id=user_id), session_id=session_id, call_id=call_id)

    def after_call(self, call: MemoryCall, reply: str) -> Captured | None:
        """The exchange stored, and what the door says of it (None: capture is off)."""
        if not self.capture:
            return None
        return self.writer.capture_exchange(exchange_of(call, reply), names=self.names)


class RemoteMemory:
    """The plugin over a running `hms serve`: `/v1/context` before the call, `/v1/events` after it.
    The key comes from the argument or `HMS_API_KEY`, and is never logged or shown."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *, capture: bool = True, timeout: float = 10.0):
        import httpx

        from hms_resources.common.environment import setting

        key = api_key or setting("HMS_API_KEY")
        self.capture = capture
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def __repr__(self) -> str:
        return f"RemoteMemory({str(self._http.base_url)!r})"

    def before_call(
        self, user_id: str, messages: list[dict[str, Any]], *, max_tokens: int, session_id: str | None = None, call_id: str | None = None
    ) -> MemoryCall:
        response = self._http.post("/v1/context", json={"user_id": user_id, "query": last_user_turn(messages), "max_tokens": max(1, max_tokens)})
        response.raise_for_status()
        return call_from_context(user_id, messages, response.json(), session_id=session_id, call_id=call_id)

    def after_call(self, call: MemoryCall, reply: str) -> None:
        if self.capture:
            self._http.post("/v1/events", json={"events": exchange_records(exchange_of(call, reply))}).raise_for_status()

    def close(self) -> None:
        self._http.close()
