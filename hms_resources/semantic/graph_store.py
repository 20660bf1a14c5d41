"""The memory graph in Neo4j (or FalkorDB, which speaks Bolt): an incremental, idempotent sync and
the queries users run on it.

A sync reads what the server holds for the users concerned, diffs it against the desired graph and
writes only the difference, in batched MERGE statements of one transaction each. Because every batch
is idempotent and the diff is recomputed from the server, re-running an interrupted sync completes it
exactly. Labels and relationship types enter a query's text only from the whitelist in
`graph_model`; every value is a parameter.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import neo4j
from neo4j.exceptions import DriverError, Neo4jError, ServiceUnavailable, SessionExpired, TransientError
from pydantic import Field, PrivateAttr

from hms_resources.common.home import positive_int_from_env, redact_url
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
    concept_node_key,
    local_id,
    memory_node_key,
)

NEO4J = "neo4j"
FALKORDB = "falkordb"
DIALECTS = (NEO4J, FALKORDB)


FALKORDB_STATEMENT_LIMIT = 3584
"""Bytes a statement may take on FalkorDB. Its Bolt listener (4.16) reads a message into one 4 KB
buffer and pastes the parameters into the query's text in another; a longer statement crashes the
server. Batches are cut to fit, and a statement that cannot fit is refused before it is sent."""

_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RETRYABLE = (ServiceUnavailable, SessionExpired, TransientError)
_INT64 = (-(2**63), 2**63 - 1)

Progress = Callable[[str, int, int], None]
NodeId = tuple[str, str, str]  # label, user_id, key
EdgeId = tuple[str, str, str, str, str]  # type, user_id, source key, target key, qualifier


class GraphSyncError(RuntimeError):
    """The graph server could not do what was asked (unreachable, refused, failed mid-sync)."""


@dataclass
class SyncReport:
    nodes_upserted: int = 0
    nodes_deleted: int = 0
    edges_upserted: int = 0
    edges_deleted: int = 0
    nodes_unchanged: int = 0
    edges_unchanged: int = 0
    batches: int = 0


@dataclass(frozen=True)
class _Step:
    """The rows of one statement, written in batches: e.g. upsert edges SIMILAR_TO."""

    action: str
    kind: str
    name: str
    query: str
    rows: list[dict[str, Any]]

    @property
    def title(self) -> str:
        return f"{self.action} {self.kind} {self.name}"


class GraphStore(dg.ConfigurableResource):
    """The memory graph on a Bolt server: Neo4j 5, or FalkorDB with `dialect="falkordb"`.

    FalkorDB (4.16) over Bolt is a stand-in for tests and small setups, with limits of its own: it
    ignores `database` (everything goes to its graph "falkordb"), keeps 6 decimals of a float
    parameter, has no multi-statement transactions (each batch is one statement, atomic on its own)
    and no unique constraints, and takes statements of a few KB only (batches are cut to fit)."""

    uri: str = ""
    user: str = "neo4j"
    password: str = Field(default="", repr=False)
    database: str = "neo4j"
    batch_size: int = 1000
    dialect: str = NEO4J
    """"neo4j" or "falkordb": selects the statements that differ (schema, shortest path) and, on
    FalkorDB, how parameters are sent (escaped strings, statements cut to fit)."""
    max_retries: int = 3
    retry_delay_s: float = 1.0

    _driver: neo4j.Driver | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "GraphStore":
        store = cls(
            uri=os.environ.get("NEO4J_URI", ""),
            user=os.environ.get("NEO4J_USER") or "neo4j",
            password=os.environ.get("NEO4J_PASSWORD", ""),
            database=os.environ.get("NEO4J_DATABASE") or "neo4j",
            dialect=os.environ.get("HMS_GRAPH_DIALECT") or NEO4J,
            batch_size=positive_int_from_env("HMS_GRAPH_BATCH_SIZE", 1000),
        )
        store._check_dialect()
        return store

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "password":
                continue
            yield name, (self.server if name == "uri" and value else value)

    @property
    def configured(self) -> bool:
        return bool(self.uri)

    @property
    def server(self) -> str:
        """The server as `scheme://host:port`, safe to show: never the URI's credentials or options."""
        try:
            parts = urlsplit(self.uri)
            host, port = parts.hostname, parts.port
        except ValueError:
            return "<malformed graph URI>"
        if not host:
            return "<malformed graph URI>"
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme or 'bolt'}://{host}:{port or 7687}"

    @property
    def driver(self) -> neo4j.Driver:
        if self._driver is None:
            if not self.configured:
                raise GraphSyncError("no graph server is configured (NEO4J_URI is empty)")
            self._check_dialect()
            # Retries are ours (`max_retries`), per batch, so the driver's own are switched off.
            options: dict[str, Any] = {"max_transaction_retry_time": 0}
            if self.dialect == FALKORDB:
                # FalkorDB 4.16 never answers the handshake of the first connection it accepts after
                # a client's GOODBYE; give up on such a connection soon (and retry) rather than in 60 s.
                options["connection_acquisition_timeout"] = 5.0
            try:
                self._driver = neo4j.GraphDatabase.driver(self.uri, auth=(self.user, self.password), **options)
            except Exception as exc:  # noqa: BLE001 - the driver's message may quote the URI with its credentials
                raise GraphSyncError(f"cannot use the graph server URI {self.server}: {type(exc).__name__}") from None
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    # Schema ---------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Unique keys and user_id indexes for every label; a no-op when they exist."""
        if self._check_dialect() == NEO4J:
            for label in NODE_LABELS:
                name = _checked_label(label).lower()
                self._write(
                    f"schema for {label}",
                    f"CREATE CONSTRAINT hms_{name}_key IF NOT EXISTS FOR (n:{label}) REQUIRE n.key IS UNIQUE",
                )
                self._write(
                    f"schema for {label}",
                    f"CREATE INDEX hms_{name}_user_id IF NOT EXISTS FOR (n:{label}) ON (n.user_id)",
                )
            return
        # FalkorDB has neither IF NOT EXISTS nor unique constraints in Cypher, and reports a
        # duplicate index only as an unknown error over Bolt: create what db.indexes() lacks.
        existing = self._falkordb_indexes()
        for label in NODE_LABELS:
            for prop in ("key", "user_id"):
                if (label, prop) in existing:
                    continue
                try:
                    self._write(f"schema for {label}", f"CREATE INDEX FOR (n:{_checked_label(label)}) ON (n.{prop})")
                except GraphSyncError:
                    if (label, prop) not in self._falkordb_indexes():
                        raise

    def _falkordb_indexes(self) -> set[tuple[str, str]]:
        rows = self._read("schema", "CALL db.indexes() YIELD label, properties RETURN label, properties")
        return {(label, prop) for label, props in rows for prop in props or ()}

    # Sync -----------------------------------------------------------------------------------

    def sync(
        self,
        nodes: Sequence[GraphNode],
        edges: Sequence[GraphEdge],
        *,
        user_ids: Iterable[str] | None = None,
        progress: Progress | None = None,
    ) -> SyncReport:
        """Make the graph of `user_ids` (of every user when None) equal to `nodes` and `edges`.

        Only new or changed nodes and edges are written, and those no longer wanted are deleted; other
        users' nodes are never read or written when `user_ids` is given."""
        users = None if user_ids is None else sorted(set(user_ids))
        dialect = self._check_dialect()
        wanted_nodes = _desired_nodes(nodes, users, dialect)
        wanted_edges = _desired_edges(edges, wanted_nodes, users, dialect)
        self.ensure_schema()
        held_nodes = self._held_nodes(users)
        held_edges = self._held_edges(users)

        changed_nodes = {nid: row for nid, (fp, row) in wanted_nodes.items() if held_nodes.get(nid) != fp}
        changed_edges = {eid: row for eid, (fp, row) in wanted_edges.items() if held_edges.get(eid) != fp}
        stale_edges = sorted(eid for eid in held_edges if eid not in wanted_edges)
        stale_nodes = sorted(nid for nid in held_nodes if nid not in wanted_nodes)
        report = SyncReport(
            nodes_upserted=len(changed_nodes),
            nodes_deleted=len(stale_nodes),
            edges_upserted=len(changed_edges),
            edges_deleted=len(stale_edges),
            nodes_unchanged=len(wanted_nodes) - len(changed_nodes),
            edges_unchanged=len(wanted_edges) - len(changed_edges),
        )
        steps: list[_Step] = []
        for label in NODE_LABELS:
            rows = [row for nid, row in changed_nodes.items() if nid[0] == label]
            steps.append(_Step("upsert", "nodes", label, _upsert_nodes_query(label), rows))
        for edge_type in EDGE_TYPES:
            rows = [row for eid, row in changed_edges.items() if eid[0] == edge_type]
            steps.append(_Step("upsert", "edges", edge_type, _upsert_edges_query(edge_type), rows))
        for edge_type in EDGE_TYPES:
            rows = [
                {"user_id": u, "source": s, "target": t, "qualifier": q}
                for (et, u, s, t, q) in stale_edges
                if et == edge_type
            ]
            steps.append(_Step("delete", "edges", edge_type, _delete_edges_query(edge_type), rows))
        for label in NODE_LABELS:
            rows = [{"user_id": u, "key": k} for (lb, u, k) in stale_nodes if lb == label]
            steps.append(_Step("delete", "nodes", label, _delete_nodes_query(label), rows))

        planned = [(step, list(self._batches(step.title, step.query, "rows", step.rows, self.batch_size))) for step in steps]
        for step, batches in planned:
            done = 0
            for number, batch in enumerate(batches, 1):
                self._write(f"{step.title} batch {number} of {len(batches)}", step.query, {"rows": batch}, sized=True)
                report.batches += 1
                done += len(batch)
                if progress is not None:
                    progress(step.title, done, len(step.rows))
        return report

    def _batches(
        self, what: str, query: str, name: str, values: Sequence[Any], max_rows: int | None
    ) -> Iterator[list[Any]]:
        """`values` cut into lists to pass as the parameter `name` of `query`: at most `max_rows`
        each, and on FalkorDB small enough for its Bolt listener."""
        limit = max(1, max_rows) if max_rows else max(1, len(values))
        if self._check_dialect() != FALKORDB:
            for start in range(0, len(values), limit):
                yield list(values[start : start + limit])
            return
        base = _falkordb_statement_size(query, {name: []})
        batch: list[Any] = []
        text, packed = base
        for value in values:
            value_text, value_packed = _falkordb_size(value)
            cost = (value_text + 2, value_packed + 2)
            if max(base[0] + cost[0], base[1] + cost[1]) > FALKORDB_STATEMENT_LIMIT:
                raise GraphSyncError(
                    f"{what}: {_describe_value(value)} needs {max(base[0] + cost[0], base[1] + cost[1]):,} bytes "
                    f"in one statement, over the {FALKORDB_STATEMENT_LIMIT:,} bytes that FalkorDB's Bolt listener takes"
                )
            if batch and (len(batch) >= limit or max(text + cost[0], packed + cost[1]) > FALKORDB_STATEMENT_LIMIT):
                yield batch
                batch, (text, packed) = [], base
            batch.append(value)
            text, packed = text + cost[0], packed + cost[1]
        if batch:
            yield batch

    def _held_nodes(self, users: list[str] | None) -> dict[NodeId, str | None]:
        held: dict[NodeId, str | None] = {}
        for label in NODE_LABELS:
            owner = "n.user_id IN $user_ids" if users is not None else "n.user_id IS NOT NULL"
            query = (
                f"MATCH (n:{_checked_label(label)}) WHERE {owner} AND n.key IS NOT NULL "
                "RETURN n.user_id, n.key, n.fingerprint"
            )
            for chunk in self._user_chunks(f"read nodes {label}", query, users):
                for user_id, key, fingerprint in self._read(f"read nodes {label}", query, {"user_ids": chunk}, sized=True):
                    held[(label, user_id, key)] = fingerprint
        return held

    def _user_chunks(self, what: str, query: str, users: list[str] | None) -> Iterator[list[str] | None]:
        if users is None:
            yield None
        elif users:
            yield from self._batches(what, query, "user_ids", users, None)

    def _held_edges(self, users: list[str] | None) -> dict[EdgeId, str | None]:
        held: dict[EdgeId, str | None] = {}
        for edge_type in EDGE_TYPES:
            owner = "a.user_id IN $user_ids" if users is not None else "a.user_id IS NOT NULL"
            query = (
                f"MATCH {_edge_pattern(edge_type)} WHERE {owner} AND a.key IS NOT NULL AND b.key IS NOT NULL "
                "RETURN a.user_id, a.key, b.key, coalesce(r.qualifier, ''), r.fingerprint"
            )
            for chunk in self._user_chunks(f"read edges {edge_type}", query, users):
                for user_id, source, target, qualifier, fingerprint in self._read(
                    f"read edges {edge_type}", query, {"user_ids": chunk}, sized=True
                ):
                    held[(edge_type, user_id, source, target, qualifier)] = fingerprint
        return held

    # Queries --------------------------------------------------------------------------------

    def neighbours(
        self,
        user_id: str,
        memory_id: str,
        *,
        edge_types: Iterable[str] | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """The memory's neighbouring memories, strongest edge first: memory_id, edge_type, weight,
        direction ("out" when the edge starts at the memory) and qualifier."""
        types = _memory_edge_types(edge_types)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        query = (
            "MATCH (m:Memory {key: $key, user_id: $user_id})-[r]-(o:Memory {user_id: $user_id}) "
            "WHERE type(r) IN $edge_types "
            "RETURN o.key AS key, type(r) AS edge_type, r.weight AS weight, startNode(r) = m AS outgoing, "
            "r.qualifier AS qualifier ORDER BY weight DESC, key, edge_type LIMIT $limit"
        )
        params = {"key": memory_node_key(user_id, memory_id), "user_id": user_id, "edge_types": list(types), "limit": limit}
        return [
            {
                "memory_id": local_id(user_id, key),
                "edge_type": edge_type,
                "weight": weight,
                "direction": "out" if outgoing else "in",
                "qualifier": qualifier or "",
            }
            for key, edge_type, weight, outgoing, qualifier in self._read("neighbours", query, params)
        ]

    def shortest_path(
        self,
        user_id: str,
        source_memory_id: str,
        target_memory_id: str,
        *,
        max_hops: int = 6,
        edge_types: Iterable[str] | None = None,
    ) -> list[str] | None:
        """Memory ids along a shortest path between two of the user's memories, in either edge
        direction and over memory-to-memory edges only; None when there is none within `max_hops`."""
        types = _memory_edge_types(edge_types)
        if not isinstance(max_hops, int) or isinstance(max_hops, bool) or not 1 <= max_hops <= 100:
            raise ValueError(f"max_hops must be an integer from 1 to 100, got {max_hops!r}")
        params = {
            "a": memory_node_key(user_id, source_memory_id),
            "b": memory_node_key(user_id, target_memory_id),
            "user_id": user_id,
        }
        ends = "MATCH (a:Memory {key: $a, user_id: $user_id}), (b:Memory {key: $b, user_id: $user_id}) "
        if source_memory_id == target_memory_id:
            found = self._read("shortest path", f"{ends}RETURN a.key", params)
            return [source_memory_id] if found else None
        if self._check_dialect() == NEO4J:
            pattern = "|".join(_checked_edge_type(t) for t in types)
            query = (
                f"{ends}MATCH p = shortestPath((a)-[:{pattern}*..{max_hops}]-(b)) "
                "WHERE all(n IN nodes(p) WHERE n.user_id = $user_id) "
                "RETURN [n IN nodes(p) | n.key] AS keys"
            )
        else:
            # FalkorDB's shortestPath() follows one direction only and may not appear in MATCH.
            query = (
                f"{ends}CALL algo.SPpaths({{sourceNode: a, targetNode: b, relTypes: $edge_types, "
                "relDirection: 'both', maxLen: $max_hops, pathCount: 1}) YIELD path "
                "WHERE all(n IN nodes(path) WHERE n.user_id = $user_id) "
                "RETURN [n IN nodes(path) | n.key] AS keys"
            )
            params |= {"edge_types": list(types), "max_hops": max_hops}
        rows = self._read("shortest path", query, params)
        if not rows or not rows[0][0]:
            return None
        return [local_id(user_id, key) for key in rows[0][0]]

    def concept_members(self, user_id: str, concept_id: str) -> list[str]:
        """Ids of the user's memories in the concept, sorted."""
        query = (
            f"MATCH (m:Memory {{user_id: $user_id}})-[:{_checked_edge_type(IN_CONCEPT)}]->"
            f"(c:{_checked_label(CONCEPT)} {{key: $key, user_id: $user_id}}) RETURN m.key ORDER BY m.key"
        )
        params = {"key": concept_node_key(user_id, concept_id), "user_id": user_id}
        return sorted(local_id(user_id, key) for (key,) in self._read("concept members", query, params))

    def node_counts(self, user_id: str | None = None) -> dict[str, int]:
        counts = {}
        for label in NODE_LABELS:
            where = " WHERE n.user_id = $user_id" if user_id is not None else ""
            rows = self._read("count nodes", f"MATCH (n:{_checked_label(label)}){where} RETURN count(n)", {"user_id": user_id})
            counts[label] = rows[0][0]
        return counts

    def edge_counts(self, user_id: str | None = None) -> dict[str, int]:
        counts = {}
        for edge_type in EDGE_TYPES:
            where = " WHERE a.user_id = $user_id" if user_id is not None else ""
            query = f"MATCH {_edge_pattern(edge_type)}{where} RETURN count(r)"
            counts[edge_type] = self._read("count edges", query, {"user_id": user_id})[0][0]
        return counts

    # Running statements ---------------------------------------------------------------------

    def _write(self, what: str, query: str, params: Mapping[str, Any] | None = None, *, sized: bool = False) -> None:
        encoded = self._encode(what, query, params or {}, sized=sized)
        self._with_retries(what, lambda session: session.execute_write(_consume, query, encoded))

    def _read(self, what: str, query: str, params: Mapping[str, Any] | None = None, *, sized: bool = False) -> list[list[Any]]:
        encoded = self._encode(what, query, params or {}, sized=sized)
        return self._with_retries(what, lambda session: session.execute_read(_values, query, encoded))

    def _with_retries(self, what: str, call: Callable[[neo4j.Session], Any]) -> Any:
        """Run `call` in a fresh session; retry it with backoff while the server is unreachable."""
        attempt = 0
        while True:
            try:
                with self.driver.session(database=self.database) as session:
                    return call(session)
            except _RETRYABLE as exc:
                if attempt >= self.max_retries:
                    raise GraphSyncError(
                        f"{what} failed: the graph server {self.server} (database {self.database!r}) is unavailable "
                        f"after {attempt + 1} attempts: {self._describe(exc)}"
                    ) from exc
                time.sleep(self.retry_delay_s * 2**attempt)
                attempt += 1
            except (Neo4jError, DriverError) as exc:
                raise GraphSyncError(
                    f"{what} failed on the graph server {self.server} (database {self.database!r}): {self._describe(exc)}"
                ) from exc

    def _describe(self, exc: BaseException) -> str:
        text = redact_url(f"{type(exc).__name__}: {exc}")
        return text.replace(self.password, "***") if self.password else text

    def _encode(self, what: str, query: str, params: Mapping[str, Any], *, sized: bool = False) -> dict[str, Any]:
        """FalkorDB's Bolt listener pastes string parameters into the query between single quotes
        without escaping them, then parses the text: quotes and backslashes are escaped here so that
        a value stays a value (unescaped, `x' MATCH (n) DETACH DELETE n //` runs as Cypher there).
        A statement too long for it is refused unless `sized` says `_batches` already cut it to fit."""
        if self._check_dialect() != FALKORDB:
            return dict(params)
        if not sized:
            size = max(_falkordb_statement_size(query, params))
            if size > FALKORDB_STATEMENT_LIMIT:
                raise GraphSyncError(
                    f"{what}: the statement needs {size:,} bytes, over the {FALKORDB_STATEMENT_LIMIT:,} bytes "
                    "that FalkorDB's Bolt listener takes"
                )
        return {name: _escape_falkordb(value) for name, value in params.items()}

    def _check_dialect(self) -> str:
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, got {self.dialect!r}")
        return self.dialect


def _consume(tx: neo4j.ManagedTransaction, query: str, params: dict[str, Any]) -> None:
    tx.run(query, params).consume()


def _values(tx: neo4j.ManagedTransaction, query: str, params: dict[str, Any]) -> list[list[Any]]:
    return tx.run(query, params).values()


# Statements: labels and types come from the whitelist, every value is a parameter. --------------


def _checked_label(label: str) -> str:
    if label not in NODE_LABELS:
        raise ValueError(f"node label {label!r} is not one of {', '.join(NODE_LABELS)}")
    return label


def _checked_edge_type(edge_type: str) -> str:
    if edge_type not in EDGE_TYPES:
        raise ValueError(f"edge type {edge_type!r} is not one of {', '.join(EDGE_TYPES)}")
    return edge_type


def _edge_pattern(edge_type: str) -> str:
    _checked_edge_type(edge_type)
    return f"(a:{_checked_label(SOURCE_LABEL[edge_type])})-[r:{edge_type}]->(b:{_checked_label(TARGET_LABEL[edge_type])})"


def _upsert_nodes_query(label: str) -> str:
    return (
        f"UNWIND $rows AS row MERGE (n:{_checked_label(label)} {{key: row.key, user_id: row.user_id}}) "
        "SET n = row.properties"
    )


def _delete_nodes_query(label: str) -> str:
    return f"UNWIND $rows AS row MATCH (n:{_checked_label(label)} {{key: row.key, user_id: row.user_id}}) DETACH DELETE n"


def _upsert_edges_query(edge_type: str) -> str:
    source, target = _checked_label(SOURCE_LABEL[edge_type]), _checked_label(TARGET_LABEL[edge_type])
    return (
        f"UNWIND $rows AS row "
        f"MATCH (a:{source} {{key: row.source, user_id: row.user_id}}) "
        f"MATCH (b:{target} {{key: row.target, user_id: row.user_id}}) "
        f"MERGE (a)-[r:{_checked_edge_type(edge_type)} {{qualifier: row.qualifier}}]->(b) "
        "SET r = row.properties"
    )


def _delete_edges_query(edge_type: str) -> str:
    source, target = _checked_label(SOURCE_LABEL[edge_type]), _checked_label(TARGET_LABEL[edge_type])
    return (
        f"UNWIND $rows AS row "
        f"MATCH (a:{source} {{key: row.source, user_id: row.user_id}})-[r:{_checked_edge_type(edge_type)}]->"
        f"(b:{target} {{key: row.target, user_id: row.user_id}}) "
        "WHERE coalesce(r.qualifier, '') = row.qualifier DELETE r"
    )


# The desired graph, validated before anything is sent. -----------------------------------------


def _desired_nodes(
    nodes: Sequence[GraphNode], users: list[str] | None, dialect: str
) -> dict[NodeId, tuple[str, dict[str, Any]]]:
    allowed = None if users is None else set(users)
    wanted: dict[NodeId, tuple[str, dict[str, Any]]] = {}
    for node in nodes:
        _checked_label(node.label)
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
        properties = _properties(what, node.properties, reserved, dialect)
        for value in (node.key, node.user_id):
            _check_value(what, "key", value, dialect)
        wanted[node_id] = (fingerprint, {"key": node.key, "user_id": node.user_id, "properties": properties})
    return wanted


def _desired_edges(
    edges: Sequence[GraphEdge],
    nodes: Mapping[NodeId, Any],
    users: list[str] | None,
    dialect: str,
) -> dict[EdgeId, tuple[str, dict[str, Any]]]:
    allowed = None if users is None else set(users)
    wanted: dict[EdgeId, tuple[str, dict[str, Any]]] = {}
    for edge in edges:
        _checked_edge_type(edge.type)
        what = f"{edge.type} edge {edge.source!r} -> {edge.target!r}"
        if allowed is not None and edge.user_id not in allowed:
            raise ValueError(f"{what} belongs to user {edge.user_id!r}, outside user_ids")
        for label, key in ((SOURCE_LABEL[edge.type], edge.source), (TARGET_LABEL[edge.type], edge.target)):
            if (label, edge.user_id, key) not in nodes:
                raise ValueError(f"{what}: no {label} node {key!r} of user {edge.user_id!r} among the nodes")
        if not isinstance(edge.qualifier, str):
            raise ValueError(f"{what}: qualifier must be a string")
        _check_value(what, "qualifier", edge.qualifier, dialect)
        if isinstance(edge.weight, bool) or not isinstance(edge.weight, (int, float)) or not math.isfinite(edge.weight):
            raise ValueError(f"{what}: weight must be a finite number, got {edge.weight!r}")
        edge_id = (edge.type, edge.user_id, edge.source, edge.target, edge.qualifier)
        if edge_id in wanted:
            raise ValueError(f"{what} (qualifier {edge.qualifier!r}) appears twice")
        fingerprint = edge.fingerprint
        reserved = {"user_id": edge.user_id, "weight": float(edge.weight), "qualifier": edge.qualifier, "fingerprint": fingerprint}
        properties = _properties(what, edge.properties, reserved, dialect)
        row = {
            "user_id": edge.user_id,
            "source": edge.source,
            "target": edge.target,
            "qualifier": edge.qualifier,
            "properties": properties,
        }
        wanted[edge_id] = (fingerprint, row)
    return wanted


def _properties(what: str, properties: Mapping[str, Any], reserved: dict[str, Any], dialect: str) -> dict[str, Any]:
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
                _check_value(what, name, item, dialect)
            stored[name] = list(value)
        else:
            _check_value(what, name, value, dialect)
            stored[name] = value
    stored.update(reserved)
    return stored


def _check_value(what: str, name: str, value: Any, dialect: str) -> None:
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
        if dialect == FALKORDB and "\x00" in value:
            raise ValueError(f"{what}: property {name!r} holds a NUL character, which FalkorDB cannot store")
        return
    raise ValueError(f"{what}: property {name!r} must be a string, number, boolean or a list of them, got {type(value).__name__}")


def _escape_falkordb(value: Any) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            # FalkorDB would cut the string there: a key could then name another node.
            raise ValueError(f"a parameter for FalkorDB holds a NUL character: {value!r}")
        return value.replace("\\", "\\\\").replace("'", "\\'")
    if isinstance(value, list | tuple):
        return [_escape_falkordb(item) for item in value]
    if isinstance(value, dict):
        return {name: _escape_falkordb(item) for name, item in value.items()}
    return value


def _falkordb_size(value: Any) -> tuple[int, int]:
    """The bytes `value`, once escaped, takes in FalkorDB's text form of a parameter (as its Bolt
    listener prints it) and in its Bolt (PackStream) encoding."""
    if value is None or isinstance(value, bool):
        return 5, 1
    if isinstance(value, int):
        for low, high, packed in ((-16, 128, 1), (-(2**7), 2**7, 2), (-(2**15), 2**15, 3), (-(2**31), 2**31, 5)):
            if low <= value < high:
                return len(str(value)), packed
        return len(str(value)), 9
    if isinstance(value, float):
        return len(f"{value:f}"), 9
    if isinstance(value, str):
        size = len(value.encode()) + value.count("\\") + value.count("'")
        return size + 2, size + _packstream_header(size)
    if isinstance(value, list | tuple):
        text, packed = 2, _packstream_header(len(value))
        for item in value:
            item_text, item_packed = _falkordb_size(item)
            text, packed = text + item_text + 2, packed + item_packed
        return text, packed
    if isinstance(value, dict):
        text, packed = 2, _packstream_header(len(value))
        for name, item in value.items():
            name_text, name_packed = _falkordb_size(name)
            item_text, item_packed = _falkordb_size(item)
            text, packed = text + name_text + item_text + 2, packed + name_packed + item_packed
        return text, packed
    raise ValueError(f"cannot send a {type(value).__name__} to FalkorDB")


def _packstream_header(size: int) -> int:
    return 1 if size < 16 else 2 if size < 256 else 3 if size < 65536 else 5


def _falkordb_statement_size(query: str, params: Mapping[str, Any]) -> tuple[int, int]:
    """Bytes of the statement as FalkorDB's Bolt listener reads it (the message) and rewrites it
    (`CYPHER name=value ... query`), with room for the message's framing."""
    query_text, query_packed = _falkordb_size(query)
    params_text, params_packed = _falkordb_size(dict(params))
    return 7 + query_text + params_text + 16, query_packed + params_packed + 16


def _describe_value(value: Any) -> str:
    if isinstance(value, dict) and "key" in value:
        return f"node {value['key']!r}"
    if isinstance(value, dict) and "source" in value:
        return f"edge {value['source']!r} -> {value['target']!r}"
    return f"value {str(value)[:60]!r}"


def _memory_edge_types(edge_types: Iterable[str] | None) -> tuple[str, ...]:
    if edge_types is None:
        return MEMORY_EDGE_TYPES
    types = tuple(dict.fromkeys(edge_types))
    for edge_type in types:
        if edge_type not in MEMORY_EDGE_TYPES:
            raise ValueError(f"edge type {edge_type!r} is not one of {', '.join(MEMORY_EDGE_TYPES)}")
    return types
