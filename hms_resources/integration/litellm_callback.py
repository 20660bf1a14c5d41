"""Memory for LiteLLM, the SDK and the proxy, through the plugin interface.

Which LiteLLM hooks can change the request (litellm 1.108, read from its sources):

- Proxy: `async_pre_call_hook(user_api_key_dict, cache, data, call_type)` runs on every request
  before routing and may return a modified `data`. Proxy-only.
- SDK async (`litellm.acompletion`, and the proxy's router below it): `async_pre_call_deployment_hook
  (kwargs, call_type)`, run by the `client` wrapper of every async call for each callback in
  `litellm.callbacks`; its return value replaces the call's kwargs.
- SDK sync (`litellm.completion`): no callback can change the messages. `log_pre_api_call` runs only
  after the provider request body is built (it is for logging), and the prompt-management hooks
  (`get_chat_completion_prompt`) run only when the call names a `prompt_id`. So the sync path is
  `HmsMemoryCallback.completion(**kwargs)`, which injects, calls `litellm.completion`, and records.

Recording: `log_success_event` (sync calls) and `async_log_success_event` (async calls and the
proxy) take the reply (for a stream, the complete response LiteLLM assembles at its end) and the
`MemoryCall` kept since the pre-call hook under the call's `litellm_call_id`, and call `after_call`.

The user id is the request's `user` field, else `metadata.user_id`; a request with neither goes
through without memory. The session id is `metadata.session_id`, when given. Memory failing never
fails the model call: it is logged and the request goes through as it came.

Proxy config (`litellm --config config.yaml`):

    litellm_settings:
      callbacks: hms_resources.integration.litellm_callback.proxy_handler_instance

with `HMS_URL` and `HMS_API_KEY` in the proxy's environment (the default memory is `RemoteMemory`
over a running `hms serve`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict
from typing import Any

from hms_resources.common.environment import setting
from hms_resources.integration.plugin import CONTEXT_HEADER, MemoryCall, MemoryPlugin, RemoteMemory, holds_memory, new_call_id
from hms_resources.integration.providers import anthropic_request, import_litellm, openai_messages_from_anthropic

litellm = import_litellm()  # before LiteLLM's first import: its bundled cost map, no fetch

from litellm.integrations.custom_logger import CustomLogger  # noqa: I001 - after import_litellm()

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
"""Calls kept between the pre-call hook and the success hook; the oldest go first (a call that
failed, or whose success hook never came, is forgotten once this many newer calls came)."""

_CHAT_CALL_TYPES = {"completion", "acompletion"}
_ANTHROPIC_CALL_TYPES = {"anthropic_messages"}


def _call_type_name(call_type: Any) -> str:
    return str(getattr(call_type, "value", call_type) or "")


def _metadata(request: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in ("litellm_metadata", "metadata"):
        value = request.get(key)
        if isinstance(value, dict):
            requester = value.get("requester_metadata")
            if isinstance(requester, dict):
                found = {**requester, **found}
            found = {**value, **found}
    params = request.get("litellm_params")
    if isinstance(params, dict) and isinstance(params.get("metadata"), dict):
        found = {**params["metadata"], **found}
    return found


def user_of(request: dict[str, Any]) -> str | None:
    """The user a request is for: its `user` field, else `metadata.user_id`."""
    user = request.get("user")
    if isinstance(user, str) and user:
        return user
    user = _metadata(request).get("user_id")
    return str(user) if user else None


def _already_injected(messages: Any, system: Any = None) -> bool:
    if isinstance(system, str) and system.startswith(CONTEXT_HEADER):
        return True
    if isinstance(system, list) and system and isinstance(system[0], dict) and str(system[0].get("text", "")).startswith(CONTEXT_HEADER):
        return True
    return holds_memory(messages)


def reply_text(response: Any) -> str:
    """The text of a LiteLLM chat response (OpenAI shape) or Anthropic-shape `/v1/messages` response."""
    if response is None:
        return ""
    if isinstance(response, dict):
        choices = response.get("choices")
        if choices:
            return str((choices[0].get("message") or {}).get("content") or "")
        return "".join(b.get("text", "") for b in response.get("content") or [] if isinstance(b, dict) and b.get("type") == "text")
    choices = getattr(response, "choices", None)
    if choices:
        message = getattr(choices[0], "message", None)
        return str(getattr(message, "content", None) or "")
    return "".join(getattr(b, "text", "") or "" for b in getattr(response, "content", None) or [] if getattr(b, "type", None) == "text")


class HmsMemoryCallback(CustomLogger):
    """Puts the user's memory in the system turn before the call, records the exchange after it."""

    def __init__(self, memory: MemoryPlugin | None = None, max_context_tokens: int = 1024, **kwargs: Any):
        super().__init__(**kwargs)
        if memory is None:
            memory = RemoteMemory(setting("HMS_URL"), setting("HMS_API_KEY") or None)
        self.memory = memory
        self.max_context_tokens = max_context_tokens
        self._pending: OrderedDict[str, MemoryCall] = OrderedDict()
        self._lock = threading.Lock()

    # -- the request ---------------------------------------------------------------------------

    def inject(self, request: dict[str, Any], call_type: Any = "completion") -> dict[str, Any]:
        """The request with memory in its system turn, the `MemoryCall` kept under its
        `litellm_call_id` (set here when missing). Unchanged when there is no user, the call is
        not a chat call, memory is already there, or memory fails."""
        kind = _call_type_name(call_type)
        messages = request.get("messages")
        if kind not in _CHAT_CALL_TYPES | _ANTHROPIC_CALL_TYPES or not isinstance(messages, list):
            return request
        anthropic = kind in _ANTHROPIC_CALL_TYPES
        if _already_injected(None if anthropic else messages, request.get("system") if anthropic else None):
            return request
        user_id = user_of(request)
        if not user_id:
            return request
        litellm_call_id = request.get("litellm_call_id") or str(uuid.uuid4())
        session_id = _metadata(request).get("session_id")
        view = openai_messages_from_anthropic(request.get("system"), messages) if anthropic else messages
        try:
            call = self.memory.before_call(
                user_id, view, max_tokens=self.max_context_tokens, session_id=str(session_id) if session_id else None,
                call_id=new_call_id(given=litellm_call_id),
            )
        except Exception:  # noqa: BLE001 - memory must never fail the model call
            log.warning("HMS memory: before_call failed; the request goes on without memory", exc_info=True)
            return request
        out = anthropic_request(request, call) if anthropic else {**request, "messages": call.messages}
        out["litellm_call_id"] = litellm_call_id
        with self._lock:
            self._pending[litellm_call_id] = call
            self._pending.move_to_end(litellm_call_id)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        return out

    def record(self, litellm_call_id: str | None, reply: str) -> bool:
        """`after_call` for the call kept under this id (once: the entry is taken)."""
        if not litellm_call_id:
            return False
        with self._lock:
            call = self._pending.pop(litellm_call_id, None)
        if call is None:
            return False
        try:
            self.memory.after_call(call, reply)
        except Exception:  # noqa: BLE001
            log.warning("HMS memory: after_call failed; the exchange was not recorded", exc_info=True)
            return False
        return True

    def pending(self, litellm_call_id: str) -> MemoryCall | None:
        with self._lock:
            return self._pending.get(litellm_call_id)

    # -- LiteLLM hooks -------------------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        """Proxy: every request, before routing."""
        return await asyncio.to_thread(self.inject, data, call_type)

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any] | None:
        """SDK async calls (and the proxy's router, where the request already has memory)."""
        return await asyncio.to_thread(self.inject, kwargs, call_type or "acompletion")

    @staticmethod
    def _call_id_of(kwargs: dict[str, Any]) -> str | None:
        params = kwargs.get("litellm_params")
        return kwargs.get("litellm_call_id") or (params.get("litellm_call_id") if isinstance(params, dict) else None)

    @staticmethod
    def _reply_of(kwargs: dict[str, Any], response_obj: Any) -> str:
        return reply_text(kwargs.get("complete_streaming_response") or response_obj)

    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.record(self._call_id_of(kwargs), self._reply_of(kwargs, response_obj))

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        await asyncio.to_thread(self.record, self._call_id_of(kwargs), self._reply_of(kwargs, response_obj))

    # -- the sync SDK path ---------------------------------------------------------------------

    def completion(self, **kwargs: Any) -> Any:
        """`litellm.completion(**kwargs)` with memory (the sync SDK has no hook that can change the
        messages). A stream is passed through and recorded at its end."""
        kwargs.setdefault("litellm_call_id", str(uuid.uuid4()))
        request = self.inject(kwargs, "completion")
        litellm_call_id = request["litellm_call_id"]
        response = litellm.completion(**request)
        if request.get("stream"):
            return self._recorded_stream(response, litellm_call_id)
        self.record(litellm_call_id, reply_text(response))
        return response

    def _recorded_stream(self, stream: Any, litellm_call_id: str) -> Any:
        parts: list[str] = []
        for chunk in stream:
            try:
                parts.append(chunk.choices[0].delta.content or "")
            except (AttributeError, IndexError):
                pass
            yield chunk
        self.record(litellm_call_id, "".join(parts))


proxy_handler_instance = HmsMemoryCallback()
"""For the proxy config: `litellm_settings: callbacks: hms_resources.integration.litellm_callback.proxy_handler_instance`."""
