"""Building the typed memory graph from memories, embeddings and concepts, and keeping its edges in
the embedded store (the Neo4j sync in `graph_store.py` is optional)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import orjson

from hms_resources.semantic.concepts import Concept
from hms_resources.semantic.embeddings import EmbeddingIndex
from hms_resources.semantic.graph_model import (
    CHILD_OF,
    CONCEPT,
    HAS_MEMORY,
    IN_CONCEPT,
    MEMORY,
    MEMORY_EDGE_TYPES,
    NEXT_IN_SESSION,
    RELATED_TO,
    SIMILAR_TO,
    USER,
    GraphEdge,
    GraphNode,
    concept_node_key,
    local_id,
    memory_node_key,
)
from hms_resources.store.memory_state import Memory

if TYPE_CHECKING:
    from hms_resources.store.event_store import EventStore


@dataclass(frozen=True)
class GraphConfig:
    neighbours: int = 5
    """k of the k-nearest-neighbour SIMILAR_TO edges per memory."""
    similarity_threshold: float = 0.5
    block_rows: int = 1024


def similar_pairs(vectors: np.ndarray, k: int, threshold: float, block_rows: int = 1024) -> list[tuple[int, int, float]]:
    """Undirected k-nearest-neighbour pairs (i < j) with cosine similarity at or above `threshold`,
    computed a block of rows at a time so memory stays linear in the number of memories."""
    n = len(vectors)
    best: dict[tuple[int, int], float] = {}
    if n < 2 or k < 1:
        return []
    k = min(k, n - 1)
    for start in range(0, n, block_rows):
        block = vectors[start : start + block_rows] @ vectors.T
        rows = np.arange(block.shape[0])
        block[rows, rows + start] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        for offset, neighbours in enumerate(top):
            i = start + offset
            for j in neighbours.tolist():
                similarity = float(block[offset, j])
                if similarity >= threshold:
                    pair = (i, j) if i < j else (j, i)
                    best[pair] = max(best.get(pair, -1.0), similarity)
    return sorted((i, j, round(s, 6)) for (i, j), s in best.items())


def _live(memories: Sequence[Memory]) -> list[Memory]:
    return sorted((m for m in memories if not m.is_archived and not m.is_forgotten), key=lambda m: m.key)


def build_nodes(memories: Sequence[Memory], concepts: Sequence[Concept]) -> list[GraphNode]:
    """User, Memory (live memories only) and Concept nodes."""
    live = _live(memories)
    nodes = [GraphNode(USER, user_id, user_id, {"user_id": user_id}) for user_id in sorted({m.user_id for m in live})]
    for m in live:
        nodes.append(
            GraphNode(
                MEMORY,
                memory_node_key(m.user_id, m.memory_id),
                m.user_id,
                {
                    "memory_id": m.memory_id,
                    "preview": _preview(m.content or ""),
                    "memory_type": m.memory_type or "",
                    "category": m.category or "",
                    "session_id": m.session_id or "",
                    "created_at": m.created_at or "",
                    "importance": m.importance if m.importance is not None else -1.0,
                },
            )
        )
    for concept in concepts:
        nodes.append(
            GraphNode(
                CONCEPT,
                concept_node_key(concept.user_id, concept.concept_id),
                concept.user_id,
                {
                    "concept_id": concept.concept_id,
                    "label": list(concept.label),
                    "summary": concept.summary,
                    "size": concept.size,
                    "cohesion": concept.cohesion,
                },
            )
        )
    return nodes


PREVIEW_CHARACTERS = 200


def _preview(text: str) -> str:
    """The start of a memory's content: the graph holds relations, the store holds the text."""
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARACTERS else text[: PREVIEW_CHARACTERS - 1] + "…"


def build_edges(
    memories: Sequence[Memory],
    index: EmbeddingIndex,
    concepts: Sequence[Concept],
    config: GraphConfig = GraphConfig(),
) -> list[GraphEdge]:
    """Edges of every type in `graph_model.EDGE_TYPES` between the nodes of `build_nodes`."""
    live = _live(memories)
    live_keys = {m.key for m in live}
    edges: list[GraphEdge] = []
    for m in live:
        key = memory_node_key(m.user_id, m.memory_id)
        edges.append(GraphEdge(HAS_MEMORY, m.user_id, key, m.user_id))
        if m.parent_memory_id and (m.user_id, m.parent_memory_id) in live_keys:
            edges.append(GraphEdge(CHILD_OF, key, memory_node_key(m.user_id, m.parent_memory_id), m.user_id))
        for relation in m.relations:
            if (m.user_id, relation["target"]) in live_keys:
                edges.append(
                    GraphEdge(
                        RELATED_TO,
                        key,
                        memory_node_key(m.user_id, relation["target"]),
                        m.user_id,
                        weight=float(relation["strength"]),
                        properties={"relationship_type": relation["relationship_type"]},
                        qualifier=relation["relationship_type"],
                    )
                )
    sessions: dict[tuple[str, str], list[Memory]] = {}
    for m in live:
        if m.session_id:
            sessions.setdefault((m.user_id, m.session_id), []).append(m)
    for (user_id, _), members in sessions.items():
        members.sort(key=lambda m: (m.created_at or "", m.memory_id))
        for earlier, later in zip(members, members[1:]):
            edges.append(
                GraphEdge(NEXT_IN_SESSION, memory_node_key(user_id, earlier.memory_id), memory_node_key(user_id, later.memory_id), user_id)
            )
    for user_id in sorted({m.user_id for m in live}):
        memory_ids, vectors = index.for_user(user_id)
        for i, j, similarity in similar_pairs(vectors, config.neighbours, config.similarity_threshold, config.block_rows):
            edges.append(
                GraphEdge(
                    SIMILAR_TO,
                    memory_node_key(user_id, memory_ids[i]),
                    memory_node_key(user_id, memory_ids[j]),
                    user_id,
                    weight=similarity,
                )
            )
    rows = {(u, m): row for row, (u, m) in enumerate(zip(index.user_ids.tolist(), index.memory_ids.tolist()))}
    for concept in concepts:
        concept_key = concept_node_key(concept.user_id, concept.concept_id)
        for memory_id in concept.member_ids:
            row = rows.get((concept.user_id, memory_id))
            if row is None or (concept.user_id, memory_id) not in live_keys:
                continue
            weight = round(float(index.vectors[row] @ concept.centroid), 6)
            edges.append(
                GraphEdge(IN_CONCEPT, memory_node_key(concept.user_id, memory_id), concept_key, concept.user_id, weight=weight)
            )
    return sorted(edges, key=lambda e: e.key)


def save_edges(store: "EventStore", edges: Sequence[GraphEdge]) -> int:
    """Replace the embedded store's edges with `edges`, in one transaction."""
    from hms_resources.store.schema import graph_edges

    rows = [
        {
            "edge_type": e.type,
            "source": e.source,
            "target": e.target,
            "qualifier": e.qualifier,
            "user_id": e.user_id,
            "weight": e.weight,
            "properties": orjson.dumps(e.properties).decode(),
        }
        for e in edges
    ]
    with store.writing() as conn:
        conn.execute(graph_edges.delete())
        for start in range(0, len(rows), 5000):
            conn.execute(graph_edges.insert(), rows[start : start + 5000])
    return len(rows)


def load_edges(store: "EventStore", user_id: str | None = None) -> list[GraphEdge]:
    from sqlalchemy import select

    from hms_resources.store.schema import graph_edges as table

    query = select(table).order_by(table.c.edge_type, table.c.source, table.c.target, table.c.qualifier)
    if user_id is not None:
        query = query.where(table.c.user_id == user_id)
    with store.reading() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        GraphEdge(r["edge_type"], r["source"], r["target"], r["user_id"], r["weight"], orjson.loads(r["properties"]), r["qualifier"])
        for r in rows
    ]


def neighbours(
    store: "EventStore", user_id: str, memory_id: str, *, edge_types: Sequence[str] = MEMORY_EDGE_TYPES
) -> list[dict]:
    """A memory's neighbours in the embedded graph, strongest first, with the edge that joins them."""
    key = memory_node_key(user_id, memory_id)
    found = []
    for e in load_edges(store, user_id):
        if e.type not in edge_types or key not in (e.source, e.target):
            continue
        other = e.target if e.source == key else e.source
        found.append(
            {
                "memory_id": local_id(user_id, other),
                "edge_type": e.type,
                "weight": e.weight,
                "direction": "out" if e.source == key else "in",
                "qualifier": e.qualifier,
            }
        )
    return sorted(found, key=lambda n: (-n["weight"], n["memory_id"], n["edge_type"]))


def shortest_path(
    store: "EventStore", user_id: str, source_memory_id: str, target_memory_id: str, *, max_hops: int = 6
) -> list[str] | None:
    """Memory ids along a shortest path between two memories of a user (edges in either direction)."""
    from collections import deque

    adjacency: dict[str, set[str]] = {}
    for e in load_edges(store, user_id):
        if e.type in MEMORY_EDGE_TYPES:
            adjacency.setdefault(e.source, set()).add(e.target)
            adjacency.setdefault(e.target, set()).add(e.source)
    start, goal = memory_node_key(user_id, source_memory_id), memory_node_key(user_id, target_memory_id)
    previous: dict[str, str | None] = {start: None}
    queue = deque([(start, 0)])
    while queue:
        node, hops = queue.popleft()
        if node == goal:
            path = []
            while node is not None:
                path.append(local_id(user_id, node))
                node = previous[node]
            return path[::-1]
        if hops < max_hops:
            for nxt in sorted(adjacency.get(node, ())):
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append((nxt, hops + 1))
    return None


def concept_members(store: "EventStore", user_id: str, concept_id: str) -> list[str]:
    key = concept_node_key(user_id, concept_id)
    return sorted(local_id(user_id, e.source) for e in load_edges(store, user_id) if e.type == IN_CONCEPT and e.target == key)
