"""The Cypher the graph sync and its queries send, and the rows they carry.

Labels, relationship types and property names enter a statement's text only from the whitelist in
`graph_model` (or after a strict name check); every value is a parameter, checked here before
anything is sent."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hms_resources.semantic.graph_model import (
    CONCEPT,
    EDGE_TYPES,
    IN_CONCEPT,
    MEMORY_EDGE_TYPES,
    NODE_LABELS,
    SOURCE_LABEL,
    TARGET_LABEL,
    GraphEdge,
    GraphNode,
)

NodeId = tuple[str, str, str]  # label, user_id, key
EdgeId = tuple[str, str, str, str, str]  # type, user_id, source key, target key, qualifier

_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT64 = (-(2**63), 2**63 - 1)


def checked_label(label: str) -> str:
    if label not in NODE_LABELS:
        raise ValueError(f"node label {label!r} is not one of {', '.join(NODE_LABELS)}")
    return label


def checked_edge_type(edge_type: str) -> str:
    if edge_type not in EDGE_TYPES:
        raise ValueError(f"edge type {edge_type!r} is not one of {', '.join(EDGE_TYPES)}")
    return edge_type


def memory_edge_types(edge_types: Iterable[str] | None) -> tuple[str, ...]:
    if edge_types is None:
        return MEMORY_EDGE_TYPES
    types = tuple(dict.fromkeys(edge_types))
    for edge_type in types:
        if edge_type not in MEMORY_EDGE_TYPES:
            raise ValueError(f"edge type {edge_type!r} is not one of {', '.join(MEMORY_EDGE_TYPES)}")
    return types


def edge_pattern(edge_type: str) -> str:
    checked_edge_type(edge_type)
    return f"(a:{checked_label(SOURCE_LABEL[edge_type])})-[r:{edge_type}]->(b:{checked_label(TARGET_LABEL[edge_type])})"


# Schema (Neo4j) ------------------------------------------------------------------------------


def schema_statements(label: str) -> list[str]:
    """A unique key and a user_id index for `label`; each a no-op when it exists."""
    name = checked_label(label).lower()
    return [
        f"CREATE CONSTRAINT hms_{name}_key IF NOT EXISTS FOR (n:{label}) REQUIRE n.key IS UNIQUE",
        f"CREATE INDEX hms_{name}_user_id IF NOT EXISTS FOR (n:{label}) ON (n.user_id)",
    ]


# Sync ----------------------------------------------------------------------------------------


def held_nodes_query(label: str, *, of_users: bool) -> str:
    owner = "n.user_id IN $user_ids" if of_users else "n.user_id IS NOT NULL"
    return f"MATCH (n:{checked_label(label)}) WHERE {owner} AND n.key IS NOT NULL RETURN n.user_id, n.key, n.fingerprint"


def held_edges_query(edge_type: str, *, of_users: bool) -> str:
    owner = "a.user_id IN $user_ids" if of_users else "a.user_id IS NOT NULL"
    return (
        f"MATCH {edge_pattern(edge_type)} WHERE {owner} AND a.key IS NOT NULL AND b.key IS NOT NULL "
        "RETURN a.user_id, a.key, b.key, coalesce(r.qualifier, ''), r.fingerprint"
    )


def upsert_nodes_query(label: str) -> str:
    return f"UNWIND $rows AS row MERGE (n:{checked_label(label)} {{key: row.key, user_id: row.user_id}}) SET n = row.properties"


def delete_nodes_query(label: str) -> str:
    return f"UNWIND $rows AS row MATCH (n:{checked_label(label)} {{key: row.key, user_id: row.user_id}}) DETACH DELETE n"


def upsert_edges_query(edge_type: str) -> str:
    source, target = checked_label(SOURCE_LABEL[edge_type]), checked_label(TARGET_LABEL[edge_type])
    return (
        f"UNWIND $rows AS row "
        f"MATCH (a:{source} {{key: row.source, user_id: row.user_id}}) "
        f"MATCH (b:{target} {{key: row.target, user_id: row.user_id}}) "
        f"MERGE (a)-[r:{checked_edge_type(edge_type)} {{qualifier: row.qualifier}}]->(b) "
        "SET r = row.properties"
    )


def delete_edges_query(edge_type: str) -> str:
    source, target = checked_label(SOURCE_LABEL[edge_type]), checked_label(TARGET_LABEL[edge_type])
    return (
        f"UNWIND $rows AS row "
        f"MATCH (a:{source} {{key: row.source, user_id: row.user_id}})-[r:{checked_edge_type(edge_type)}]->"
        f"(b:{target} {{key: row.target, user_id: row.user_id}}) "
        "WHERE coalesce(r.qualifier, '') = row.qualifier DELETE r"
    )


# Queries -------------------------------------------------------------------------------------

NEIGHBOURS_QUERY = (
    "MATCH (m:Memory {key: $key, user_id: $user_id})-[r]-(o:Memory {user_id: $user_id}) "
    "WHERE type(r) IN $edge_types "
    "RETURN o.key AS key, type(r) AS edge_type, r.weight AS weight, startNode(r) = m AS outgoing, "
    "r.qualifier AS qualifier ORDER BY weight DESC, key, edge_type LIMIT $limit"
)
PATH_ENDS = "MATCH (a:Memory {key: $a, user_id: $user_id}), (b:Memory {key: $b, user_id: $user_id}) "


def shortest_path_query(edge_types: Sequence[str], max_hops: int) -> str:
    """Neo4j's shortestPath() in either direction; types and hops are checked, then written into the text."""
    pattern = "|".join(checked_edge_type(t) for t in edge_types)
    return (
        f"{PATH_ENDS}MATCH p = shortestPath((a)-[:{pattern}*..{int(max_hops)}]-(b)) "
        "WHERE all(n IN nodes(p) WHERE n.user_id = $user_id) "
        "RETURN [n IN nodes(p) | n.key] AS keys"
    )


def concept_members_query() -> str:
    return (
        f"MATCH (m:Memory {{user_id: $user_id}})-[:{checked_edge_type(IN_CONCEPT)}]->"
        f"(c:{checked_label(CONCEPT)} {{key: $key, user_id: $user_id}}) RETURN m.key ORDER BY m.key"
    )


def count_nodes_query(label: str, *, of_user: bool) -> str:
    where = " WHERE n.user_id = $user_id" if of_user else ""
    return f"MATCH (n:{checked_label(label)}){where} RETURN count(n)"


def count_edges_query(edge_type: str, *, of_user: bool) -> str:
    where = " WHERE a.user_id = $user_id" if of_user else ""
    return f"MATCH {edge_pattern(edge_type)}{where} RETURN count(r)"


# The desired graph, validated before anything is sent. ---------------------------------------


def desired_nodes(
    nodes: Sequence[GraphNode], users: list[str] | None, *, allow_nul: bool
) -> dict[NodeId, tuple[str, dict[str, Any]]]:
    """Per node, its fingerprint and the row its upsert carries."""
    allowed = None if users is None else set(users)
    wanted: dict[NodeId, tuple[str, dict[str, Any]]] = {}
    for node in nodes:
        checked_label(node.label)
        what = f"{node.label} node {node.key!r}"
        if not isinstance(node.key, str) or not node.key or not isinstance(node.user_id, str) or not node.user_id:
            raise ValueError(f"{what}: key and user_id must be non-empty strings")
        if allowed is not None and node.user_id not in allowed:
            raise ValueError(f"{what} belongs to user {node.user_id!r}, outside user_ids")
        node_id = (node.label, node.user_id, node.key)
        if node_id in wanted:
            raise ValueError(f"{what} appears twice")
        fingerprint = node.fingerprint
        reserved = {"key": node.key, "user_id": node.user_id, "fingerprint": fingerprint}
        properties = _properties(what, node.properties, reserved, allow_nul)
        for value in (node.key, node.user_id):
            _check_value(what, "key", value, allow_nul)
        wanted[node_id] = (fingerprint, {"key": node.key, "user_id": node.user_id, "properties": properties})
    return wanted


def desired_edges(
    edges: Sequence[GraphEdge], nodes: Mapping[NodeId, Any], users: list[str] | None, *, allow_nul: bool
) -> dict[EdgeId, tuple[str, dict[str, Any]]]:
    """Per edge, its fingerprint and the row its upsert carries; both ends must be among `nodes`."""
    allowed = None if users is None else set(users)
    wanted: dict[EdgeId, tuple[str, dict[str, Any]]] = {}
    for edge in edges:
        checked_edge_type(edge.type)
        what = f"{edge.type} edge {edge.source!r} -> {edge.target!r}"
        if allowed is not None and edge.user_id not in allowed:
            raise ValueError(f"{what} belongs to user {edge.user_id!r}, outside user_ids")
        for label, key in ((SOURCE_LABEL[edge.type], edge.source), (TARGET_LABEL[edge.type], edge.target)):
            if (label, edge.user_id, key) not in nodes:
                raise ValueError(f"{what}: no {label} node {key!r} of user {edge.user_id!r} among the nodes")
        if not isinstance(edge.qualifier, str):
            raise ValueError(f"{what}: qualifier must be a string")
        _check_value(what, "qualifier", edge.qualifier, allow_nul)
        if isinstance(edge.weight, bool) or not isinstance(edge.weight, (int, float)) or not math.isfinite(edge.weight):
            raise ValueError(f"{what}: weight must be a finite number, got {edge.weight!r}")
        edge_id = (edge.type, edge.user_id, edge.source, edge.target, edge.qualifier)
        if edge_id in wanted:
            raise ValueError(f"{what} (qualifier {edge.qualifier!r}) appears twice")
        fingerprint = edge.fingerprint
        reserved = {"user_id": edge.user_id, "weight": float(edge.weight), "qualifier": edge.qualifier, "fingerprint": fingerprint}
        properties = _properties(what, edge.properties, reserved, allow_nul)
        row = {"user_id": edge.user_id, "source": edge.source, "target": edge.target, "qualifier": edge.qualifier, "properties": properties}
        wanted[edge_id] = (fingerprint, row)
    return wanted


def _properties(what: str, properties: Mapping[str, Any], reserved: dict[str, Any], allow_nul: bool) -> dict[str, Any]:
    """The properties to store: the given ones (flat scalars or lists of scalars; None means absent)
    and the reserved ones, which a given property may repeat but not contradict."""
    stored: dict[str, Any] = {}
    for name, value in properties.items():
        if not isinstance(name, str) or not _PROPERTY_NAME.match(name):
            raise ValueError(f"{what}: property name {name!r} must be a letter or _ followed by letters, digits or _")
        if name in reserved:
            if value != reserved[name]:
                raise ValueError(f"{what}: property {name!r} contradicts the {name} the graph stores")
            continue
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            for item in value:
                _check_value(what, name, item, allow_nul)
            stored[name] = list(value)
        else:
            _check_value(what, name, value, allow_nul)
            stored[name] = value
    stored.update(reserved)
    return stored


def _check_value(what: str, name: str, value: Any, allow_nul: bool) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{what}: property {name!r} is outside the 64-bit integer range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what}: property {name!r} must be finite, got {value!r}")
        return
    if isinstance(value, str):
        if not allow_nul and "\x00" in value:
            raise ValueError(f"{what}: property {name!r} holds a NUL character, which FalkorDB cannot store")
        return
    raise ValueError(f"{what}: property {name!r} must be a string, number, boolean or a list of them, got {type(value).__name__}")
