"""What one model call with memory becomes in the log: the user's turn and the reply as conversation
turns of the session, and one read of the memories the context used. Plain records, so the remote
plugin can send them to `/v1/events` and the door can store them, with the same ids either way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hms_resources.common.clock import utc_now
from hms_resources.memory.accesses import query_digest
from hms_resources.store.events import MEMORY_CREATED, read_records
from hms_resources.store.memory_state import CONVERSATION_TURN


@dataclass(frozen=True)
class Exchange:
    """One model call: whose, which call (ids derive from it), what was asked and answered, and the
    memories its context used."""

    user_id: str
    call_id: str
    query: str
    reply: str
    session_id: str | None = None
    memory_ids: list[str] = field(default_factory=list)


def exchange_records(exchange: Exchange, at: str | None = None) -> list[dict[str, Any]]:
    """The exchange's events as records. Ids derive from the call id, so recording a retried call
    again stores nothing twice (its own earlier turns, which a retry's context may hold, are not
    counted as accessed)."""
    call_id = exchange.call_id
    base = {"user_id": exchange.user_id, "occurred_at": at or utc_now()}
    turn = {"memory_type": CONVERSATION_TURN, "source_type": "chat", "source_id": call_id}
    if exchange.session_id:
        turn["session_id"] = exchange.session_id
    found: list[dict[str, Any]] = []
    if exchange.query.strip():
        found.append({**base, "event_id": f"chat-{call_id}-user", "type": MEMORY_CREATED, "memory_id": f"chat-{call_id}-user",
                      "payload": {**turn, "content": exchange.query, "created_by": "user"}})
    if exchange.reply.strip():
        found.append({**base, "event_id": f"chat-{call_id}-assistant", "type": MEMORY_CREATED, "memory_id": f"chat-{call_id}-assistant",
                      "payload": {**turn, "content": exchange.reply, "created_by": "assistant"}})
    own = f"chat-{call_id}-"
    used = [memory_id for memory_id in exchange.memory_ids if not memory_id.startswith(own)]
    if used:
        found += read_records(f"chat-{call_id}-accessed", exchange.user_id, used, base["occurred_at"],
                              {"access_method": "chat", "query": query_digest(exchange.query)})
    return found
