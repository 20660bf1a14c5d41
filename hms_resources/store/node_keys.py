"""How a memory or a concept is named as a graph node (`<user>\\x1f<id>`): the graph domain builds
edges with these keys, and the append that forgets a memory deletes its edges by them."""

from __future__ import annotations

KEY_SEPARATOR = "\x1f"


def memory_node_key(user_id: str, memory_id: str) -> str:
    """Memory ids are unique per user only; ids never contain control characters, so this is unambiguous."""
    return f"{user_id}{KEY_SEPARATOR}{memory_id}"


def concept_node_key(user_id: str, concept_id: str) -> str:
    return f"{user_id}{KEY_SEPARATOR}{concept_id}"
