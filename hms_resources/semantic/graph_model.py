"""The typed memory graph: nodes and edges as plain values, and the whitelist of labels and types.

Labels and relationship types come only from these constants; nothing from data ever becomes a
label, a type or any other part of a query's text."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from hms_resources.store.node_keys import KEY_SEPARATOR, concept_node_key, memory_node_key  # noqa: F401 - the graph's names

USER = "User"
MEMORY = "Memory"
CONCEPT = "Concept"
NODE_LABELS = (USER, MEMORY, CONCEPT)

HAS_MEMORY = "HAS_MEMORY"          # User -> Memory
SIMILAR_TO = "SIMILAR_TO"          # Memory -> Memory, k nearest neighbours above a threshold
IN_CONCEPT = "IN_CONCEPT"          # Memory -> Concept
NEXT_IN_SESSION = "NEXT_IN_SESSION"  # Memory -> Memory, order within a session
CHILD_OF = "CHILD_OF"              # Memory -> Memory (its parent_memory_id)
RELATED_TO = "RELATED_TO"          # Memory -> Memory, explicit memory.related; its type is a property
EDGE_TYPES = (HAS_MEMORY, SIMILAR_TO, IN_CONCEPT, NEXT_IN_SESSION, CHILD_OF, RELATED_TO)



def local_id(user_id: str, key: str) -> str:
    """A memory's or concept's own id from its node key."""
    prefix = f"{user_id}{KEY_SEPARATOR}"
    return key[len(prefix) :] if key.startswith(prefix) else key


@dataclass(frozen=True)
class GraphNode:
    label: str
    key: str
    user_id: str
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.properties)


@dataclass(frozen=True)
class GraphEdge:
    type: str
    source: str
    target: str
    user_id: str
    weight: float = 1.0
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # `qualifier` lets two edges of one type join the same nodes (RELATED_TO with different relationship types).
    qualifier: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.type, self.source, self.target, self.qualifier)

    @property
    def fingerprint(self) -> str:
        return _fingerprint({"weight": round(self.weight, 6), **self.properties})


def _fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha1(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


SOURCE_LABEL = {
    HAS_MEMORY: USER,
    SIMILAR_TO: MEMORY,
    IN_CONCEPT: MEMORY,
    NEXT_IN_SESSION: MEMORY,
    CHILD_OF: MEMORY,
    RELATED_TO: MEMORY,
}
TARGET_LABEL = {
    HAS_MEMORY: MEMORY,
    SIMILAR_TO: MEMORY,
    IN_CONCEPT: CONCEPT,
    NEXT_IN_SESSION: MEMORY,
    CHILD_OF: MEMORY,
    RELATED_TO: MEMORY,
}

# Edges between memories: what neighbour and path queries follow (a path through the User node or a
# concept would join everything in two hops).
MEMORY_EDGE_TYPES = tuple(t for t in EDGE_TYPES if SOURCE_LABEL[t] == MEMORY and TARGET_LABEL[t] == MEMORY)
