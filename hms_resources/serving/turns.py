"""A conversation added as `messages` (Mem0's, Zep's and OpenAI's shape): each message becomes a
memory to add through the door, a conversation turn of the session as chat capture records one
(`memory/exchange.py`: `memory_type` conversation_turn, `created_by` the speaker, `session_id`)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from hms_resources.common.text import is_unicode_text
from hms_resources.serving.errors import bad_request
from hms_resources.store.memory_state import CONVERSATION_TURN

SOURCE_TYPE = "api"
"""The `source_type` of turns added over the API (chat capture's are `chat`)."""


def session_of(session_id: str | None, idempotency_key: str | None) -> str:
    """The session the turns belong to: the one given, else a new one; derived from the
    `Idempotency-Key` when there is one, so a retry stores the same turns (duplicates, not conflicts)."""
    if session_id is not None:
        return session_id
    if idempotency_key is not None:
        return "session-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"session-{uuid.uuid4().hex}"


def turn_items(user_id: str, messages: list[tuple[str, str]], session_id: str, max_content_bytes: int) -> list[dict[str, Any]]:
    """The messages, `(role, content)` in order, as memories to add; a content the store could not
    hold is a 422 naming `messages.<i>.content` before anything is stored."""
    items = []
    for i, (role, content) in enumerate(messages):
        field = f"messages.{i}.content"
        if "\x00" in content or not is_unicode_text(content):
            raise bad_request(f"{field} must be text without NUL or lone surrogates", field)
        size = len(content.encode("utf-8"))
        if size > max_content_bytes:
            raise bad_request(f"{field} is {size} bytes, over the limit of {max_content_bytes} bytes", field)
        items.append({"user_id": user_id, "content": content, "memory_type": CONVERSATION_TURN, "created_by": role,
                      "session_id": session_id, "source_type": SOURCE_TYPE})
    return items
