"""`POST /v1/chat/completions` and `GET /v1/models`: an OpenAI-compatible model call with memory.

The user's context goes into the system turn and, on the local model, the user's champion adapter is
applied; any other model name goes to its provider through LiteLLM with the same memory. The
exchange is recorded as events through the one plugin interface (`integration/plugin.py`), unless
the key turns capture off. The response says which memories and which adapter were used, both in an
`hms` field (OpenAI clients ignore it) and in `X-HMS-Memories` / `X-HMS-Adapter` headers.

The request and the answer follow OpenAI's shapes exactly where HMS can honour them; a field it
cannot honour (tools, several choices, logprobs, structured output) or does not know is a 400 naming
it, never silently skipped (the lists are below, and in docs/model-calls.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import orjson

from hms_resources.common.environment import setting
from hms_resources.context.index import SelectedAdapter
from hms_resources.integration.local_model import PromptTooLong
from hms_resources.integration.plugin import DEFAULT_CONTEXT_SHARE, LocalMemory, MemoryCall, holds_memory, last_user_turn, new_call_id
from hms_resources.integration.providers import import_litellm, provider_failure, provider_of
from hms_resources.memory.exchange import Exchange
from hms_resources.memory.writes import WriteRefused
from hms_resources.serving.errors import ApiError, bad_request
from hms_resources.serving.service import MAX_CONTEXT_TOKENS, MemoryService, positive_at_most
from hms_resources.serving.tenants import Principal
from hms_resources.store.events import MEMORY_CREATED, PAYLOAD_FIELDS

log = logging.getLogger("hms.chat")
T = TypeVar("T")

LOCAL_MODEL = "hms-local"
LOCAL_WINDOW = 2048
"""Tokens of the local model's window the service plans a call in: SmolLM2 reads 8,192, but on a CPU
the prefill of a long system turn dominates the time to first token."""
ROLES = ("system", "user", "assistant", "tool", "developer")


HONOURED = ("model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "user", "metadata")
"""The OpenAI fields HMS reads and acts on (`metadata`: its `user_id` and `session_id`)."""
IGNORED = ("top_p", "seed", "presence_penalty", "frequency_penalty", "parallel_tool_calls", "store", "service_tier",
           "reasoning_effort", "verbosity", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
           "prompt_cache_options", "moderation")
"""Documented OpenAI fields clients send by default, accepted and not applied: none changes what a
reply may contain (a sampling knob, a cache or billing hint, a flag about tools that are not sent)."""
UNHONOURED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tools": (lambda v: v not in (None, []), "tools (function calling) are not supported"),
    "tool_choice": (lambda v: v not in (None, "none", "auto"), "tool_choice needs tools, which are not supported"),
    "functions": (lambda v: v not in (None, []), "functions (function calling) are not supported"),
    "function_call": (lambda v: v not in (None, "none"), "function_call needs functions, which are not supported"),
    "n": (lambda v: v not in (None, 1), "n must be 1: one choice is generated"),
    "logprobs": (lambda v: v not in (None, False), "logprobs are not returned"),
    "top_logprobs": (lambda v: v not in (None, 0), "top_logprobs needs logprobs, which are not returned"),
    "response_format": (lambda v: v not in (None, {"type": "text"}), "response_format must be {\"type\": \"text\"}: structured output is not supported"),
    "stop": (lambda v: v not in (None, [], ""), "stop sequences are not supported"),
    "logit_bias": (lambda v: v not in (None, {}), "logit_bias is not supported"),
    "modalities": (lambda v: v not in (None, ["text"]), "modalities must be [\"text\"]"),
    "audio": (lambda v: v is not None, "audio output is not supported"),
    "prediction": (lambda v: v is not None, "predicted outputs are not supported"),
    "web_search_options": (lambda v: v is not None, "web search is not supported"),
}
"""Documented OpenAI fields asking for what HMS cannot give: a 400 naming the field when given with
a value that changes the reply (their neutral values, e.g. `n: 1`, `tools: []` or `tool_choice:
"auto"`, pass)."""


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    user: str | None = None
    stream: bool = False
    max_tokens: int = 256
    temperature: float = 0.0
    session_id: str | None = None
    request_id: str | None = None
    include_usage: bool = False
    """`stream_options.include_usage`: a last chunk with empty `choices` and the `usage`, as OpenAI sends."""


def unsupported(message: str, field: str) -> ApiError:
    """A field HMS will not honour: 400, as OpenAI answers a parameter a model does not take."""
    return ApiError(400, "invalid", message, field)


def _check_fields(body: dict[str, Any]) -> None:
    """Every field either honoured, harmlessly ignored, or refused with its name: a client never
    gets a reply that silently skipped what it asked for."""
    for name, value in body.items():
        if name in HONOURED or name in IGNORED:
            continue
        if name in UNHONOURED:
            asks, why = UNHONOURED[name]
            if asks(value):
                raise unsupported(f"{name}: {why} by /v1/chat/completions", name)
            continue
        if name == "extra_body":
            raise unsupported("extra_body is not a field of the request: the openai client merges extra_body into the body, "
                              "so send its fields (e.g. user) at the top level", name)
        raise unsupported(f"{name} is not a field of OpenAI's chat request", name)


def _max_tokens(body: dict[str, Any]) -> int:
    """`max_completion_tokens` (OpenAI's current name) or `max_tokens`, the same bound either way."""
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(field)
    if value is None:
        return 256
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise bad_request(f"{field} must be an integer from 1 to 4096", field)
    return value


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise bad_request("stream_options must be an object whose include_usage is true or false", "stream_options.include_usage")
    return bool(options.get("include_usage", False))


def _user(body: dict[str, Any], metadata: dict[str, Any]) -> str | None:
    """Whose memory: `user` (where the openai client puts both `user=` and `extra_body={"user": ...}`,
    and where the LiteLLM proxy forwards it when the deployment allows it), else `metadata.user_id`."""
    for field, value in (("user", body.get("user")), ("metadata.user_id", metadata.get("user_id"))):
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise bad_request(f"{field} must be a string", field)
        return value
    return None


def parse_chat(body: dict[str, Any], *, session_header: str | None, request_id: str | None) -> ChatRequest:
    """The fields of an OpenAI chat request HMS reads, each checked with the field named."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object", "body")
    _check_fields(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(f"messages[{i}] needs a role among {', '.join(ROLES)}", f"messages.{i}.role")
        if not isinstance(message.get("content"), (str, list, type(None))):
            raise bad_request(f"messages[{i}].content must be a string or a list of content parts", f"messages.{i}.content")
    temperature = body.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise bad_request("temperature must be a number from 0 to 2", "temperature")
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    given = _session_id(metadata.get("session_id"), "metadata.session_id")
    session = _session_id(session_header, "X-HMS-Session") or given
    stream = body.get("stream", False)
    if not isinstance(stream, (bool, type(None))):
        raise bad_request("stream must be true or false", "stream")
    return ChatRequest(
        model=model,
        messages=messages,
        user=_user(body, metadata),
        stream=bool(stream),
        max_tokens=_max_tokens(body),
        temperature=float(temperature),
        session_id=session,
        request_id=request_id,
        include_usage=_include_usage(body),
    )


def _session_id(value: Any, field: str) -> str | None:
    """The session the turns are stored under, checked as the store checks it, so a call is never
    answered with turns the store then refuses; empty or absent: no session."""
    if value is None or value == "":
        return None
    problem = PAYLOAD_FIELDS[MEMORY_CREATED]["session_id"](value)
    if problem:
        raise bad_request(f"{field} {problem}", field)
    return value


class ChatService:
    """Routes a chat request: the local model (with the user's adapter) or a provider via LiteLLM."""

    def __init__(self, service: MemoryService, local_model: Any = None, window: int = LOCAL_WINDOW,
                 context_share: float = DEFAULT_CONTEXT_SHARE):
        if not 0 < context_share <= 1:
            raise ValueError(f"the context share must be in (0, 1], got {context_share}")
        self.service = service
        self.window = window
        self.context_share = context_share
        self._local = local_model

    @classmethod
    def from_env(cls, service: MemoryService) -> "ChatService":
        """`HMS_CHAT_WINDOW` (tokens a call is planned in) and `HMS_CHAT_CONTEXT_SHARE` (the share of
        them the memory may take); the local model's own settings are read by `LocalModel.from_env`."""
        return cls(service, window=setting("HMS_CHAT_WINDOW"), context_share=setting("HMS_CHAT_CONTEXT_SHARE"))

    @property
    def local(self) -> Any:
        if self._local is None:
            from hms_resources.integration.local_model import LocalModel

            self._local = LocalModel.from_env()
        return self._local

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": LOCAL_MODEL, "object": "model", "created": 0, "owned_by": "hms"}]}

    def prepare(self, principal: Principal, request: ChatRequest) -> tuple[LocalMemory, MemoryCall]:
        """The plugin over the service's own door and context resource, as the key's tenant (its
        names, its capture switch), and the call with the user's memory."""
        principal.require("read")
        if principal.capture:
            principal.require("write")
        user = request.user or principal.default_user
        if not user:
            raise bad_request("user is required (or create the key with a default user: hms keys create --user U)", "user")
        memory = LocalMemory(self.service.assembler, writer=self.service.writer, capture=principal.capture, context_share=self.context_share, names=principal)
        budget = max(1, int(self.window * memory.context_share))
        call_id = new_call_id(given=f"{principal.tenant}/{request.request_id}" if request.request_id else None)
        principal.stored_user(user)
        positive_at_most(budget, "max_tokens", MAX_CONTEXT_TOKENS)
        if principal.capture and request.request_id:
            self._refuse_reuse(principal, Exchange(user, call_id, last_user_turn(request.messages), "", request.session_id))
        call = self.service.guard(lambda: memory.before_call(user, request.messages, max_tokens=budget, session_id=request.session_id, call_id=call_id))
        if holds_memory(request.messages):
            call.items = []  # the memory came with the request: none of this context is used, none is recorded as accessed
        return memory, call

    def _refuse_reuse(self, principal: Principal, exchange: Exchange) -> None:
        """A 409 naming `Idempotency-Key` when it was used with another user turn, before any model
        time is spent on a reply that could not be stored."""
        try:
            self.service.guard(lambda: self.service.writer.check_exchange(exchange, names=principal))
        except WriteRefused as refused:
            raise ApiError(409, "conflict", f"Idempotency-Key was used already for another message: {refused.message}", "Idempotency-Key") from None

    def _record(self, memory: LocalMemory, call: MemoryCall, reply: str) -> dict[str, Any]:
        """The exchange stored, and what the response says of it: `stored`, and when a turn is not in
        the store, `not_stored_reason` (so a caller never loses a turn without a word)."""
        captured = self.service.guard(lambda: memory.after_call(call, reply))
        if captured is None:
            return {"stored": False, "not_stored_reason": "capture is off for this key"}
        if captured.stored:
            return {"stored": True}
        return {"stored": False, "not_stored_reason": "; ".join(captured.not_stored)}

    def _local_reply(self, generate: Callable[[], T]) -> T:
        """The local model's call, a prompt over its window answered as OpenAI answers it (400)."""
        try:
            return generate()
        except PromptTooLong as exc:
            raise ApiError(400, "context_length_exceeded", str(exc), "messages") from None

    def _adapter(self, request: ChatRequest, call: MemoryCall) -> SelectedAdapter | None:
        return self.local.adapter_for(call.adapter) if request.model == LOCAL_MODEL else None

    def complete(self, principal: Principal, request: ChatRequest) -> tuple[dict[str, Any], dict[str, str]]:
        memory, call = self.prepare(principal, request)
        started = time.time()
        reply = self._answer(request, call)
        stored = self._record(memory, call, reply.text)
        body = {
            "id": f"chatcmpl-{call.call_id}",
            "object": "chat.completion",
            "created": int(started),
            "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": reply.finish_reason}],
            "usage": _usage(reply),
            "hms": {**self._used(call, request), **stored},
        }
        return body, {**self._headers(call, request), "X-HMS-Stored": "true" if stored["stored"] else "false"}

    def _answer(self, request: ChatRequest, call: MemoryCall) -> Answer:
        if request.model != LOCAL_MODEL:
            return self._provider(request, call)
        adapter = self._adapter(request, call)
        reply = self._local_reply(lambda: self.local.chat(call.messages, adapter=adapter, max_tokens=request.max_tokens, temperature=request.temperature))
        return Answer(reply.text, reply.finish_reason, reply.prompt_tokens, reply.completion_tokens)

    def stream(self, principal: Principal, request: ChatRequest) -> tuple[Iterator[bytes], dict[str, str]]:
        """Server-sent events in OpenAI's chunk format. What can fail is tried before the first byte (a
        prompt over the window is a 400, a provider that cannot answer a 502); the exchange is
        recorded once the reply is complete, and the chunk with the `finish_reason` carries `hms`,
        saying whether it was stored, before the usage chunk (`stream_options.include_usage`) and
        `data: [DONE]`, so a client that saw the end knows."""
        memory, call = self.prepare(principal, request)
        done: list[Answer] = []
        if request.model == LOCAL_MODEL:
            adapter = self._adapter(request, call)

            def finished(reply: Any) -> None:
                done.append(Answer(reply.text, reply.finish_reason, reply.prompt_tokens, reply.completion_tokens))

            pieces_of = self._local_reply(lambda: self.local.stream(call.messages, adapter=adapter, max_tokens=request.max_tokens,
                                                                    temperature=request.temperature, on_done=finished))
        else:
            done.append(self._provider(request, call))
            pieces_of = iter([done[0].text])
        created = int(time.time())
        chunk_id = f"chatcmpl-{call.call_id}"
        usage_field = {"usage": None} if request.include_usage else {}

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            body = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": request.model,
                    "choices": choices, **usage_field, **extra}
            return b"data: " + orjson.dumps(body) + b"\n\n"

        def events() -> Iterator[bytes]:
            yield chunk({"role": "assistant", "content": ""}, hms=self._used(call, request))
            pieces: list[str] = []
            for piece in pieces_of:
                pieces.append(piece)
                yield chunk({"content": piece})
            answer = done[0]
            yield chunk({}, answer.finish_reason, hms=self._record(memory, call, "".join(pieces)))
            if request.include_usage:
                yield chunk(None, usage=_usage(answer))
            yield b"data: [DONE]\n\n"

        return events(), self._headers(call, request)

    def _provider(self, request: ChatRequest, call: MemoryCall) -> Answer:
        """Any model name but the local one goes to its provider through LiteLLM, which reads the
        provider's key from the environment. A model no provider is known for is a 400; a failure is
        a 502 whose message (and the log line, the same) names the provider, its status and its
        message, with every secret redacted."""
        litellm = import_litellm()
        litellm.suppress_debug_info = True  # no banner on stdout per failure: the reason goes to the log line below
        provider = provider_of(request.model)
        if provider is None:
            raise ApiError(400, "invalid", f"model {request.model!r} is neither {LOCAL_MODEL!r} nor a model LiteLLM knows a provider for: "
                                           "name it as provider/model, e.g. openai/gpt-4o-mini", "model")
        try:
            response = litellm.completion(model=request.model, messages=call.messages, max_tokens=request.max_tokens, temperature=request.temperature)
        except Exception as exc:  # noqa: BLE001 - every provider failure is the same 502 to the client
            message = provider_failure(request.model, provider, exc)
            log.warning("%s", message)
            raise ApiError(502, "provider_error", message, "model") from None
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return Answer(choice.message.content or "", choice.finish_reason or "stop",
                      int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))

    def _used(self, call: MemoryCall, request: ChatRequest) -> dict[str, Any]:
        """Whose memory this service put in the call, and which: a request that came with the memory
        already in its system turn (the LiteLLM callback or `with_memory` in front) gets none added,
        so `memories` is empty and `memory_in_request` says the memory came with it."""
        adapter = self._adapter(request, call)
        return {
            "user": call.user_id,
            "memories": call.memory_ids,
            "memory_in_request": holds_memory(request.messages),
            "adapter": f"{adapter.name}@{adapter.version}" if adapter else None,
            "context_tokens": sum(int(i.get("tokens", 0)) for i in call.items),
            "context_ms": round(call.timings_ms.get("total", 0.0), 3),
        }

    def _headers(self, call: MemoryCall, request: ChatRequest) -> dict[str, str]:
        used = self._used(call, request)
        memories = ",".join(quote(m, safe="-_.~@:") for m in used["memories"])
        return {"X-HMS-Memories": memories[:4000], "X-HMS-Adapter": quote(used["adapter"] or "", safe="-_.~@:")}


@dataclass(frozen=True)
class Answer:
    """A reply as the API reports it, from the local model or a provider."""

    text: str
    finish_reason: str
    """"length" when `max_tokens` cut the reply, "stop" when the model ended it."""
    prompt_tokens: int
    completion_tokens: int


def _usage(answer: Answer) -> dict[str, int]:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}
