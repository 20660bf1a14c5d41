"""The memory graph in Neo4j (or FalkorDB, which speaks Bolt): an incremental, idempotent sync and
the queries users run on it.

A sync reads what the server holds for the users concerned, diffs it against the desired graph and
writes only the difference, in batched MERGE statements of one transaction each. Because every batch
is idempotent and the diff is recomputed from the server, re-running an interrupted sync completes it
exactly. Statements come from `cypher` (labels and types from the whitelist, every value a
parameter); what only FalkorDB needs is in `falkordb`; the sync's steps are in `graph_sync` and the
running of one statement in `graph_statements`.

Retries are the driver's alone: each statement is a managed transaction (`execute_write`,
`execute_read`) that the driver retries while the server is unavailable or the error is transient,
for up to `retry_time_s`; then the sync fails with a `GraphSyncError` naming the step, and the next
run completes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import neo4j
from pydantic import Field, PrivateAttr

from hms_resources.semantic import cypher, falkordb
from hms_resources.semantic.graph_model import (
    EDGE_TYPES,
    NODE_LABELS,
    GraphEdge,
    GraphNode,
    concept_node_key,
    local_id,
    memory_node_key,
)
from hms_resources.semantic.graph_statements import DIALECTS, FALKORDB, NEO4J, GraphStatements, GraphSyncError, checked_dialect
from hms_resources.semantic.graph_sync import Progress, SyncReport, held_edges, held_nodes, plan_sync, write_steps

__all__ = ["DIALECTS", "FALKORDB", "NEO4J", "GraphStore", "GraphSyncError", "Progress", "SyncReport"]

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
    retry_time_s: float = 30.0
    """How long the driver retries one transaction while the server is unavailable or the error is
    transient (its `max_transaction_retry_time`); 0 tries once."""
    retry_delay_s: float = 1.0
    """The driver's first pause between tries; each later pause doubles it."""

    _driver: neo4j.Driver | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "GraphStore":
        from hms_resources.common.environment import from_environment

        store = from_environment(cls)
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
            options: dict[str, Any] = {
                "max_transaction_retry_time": self.retry_time_s,
                "initial_retry_delay": self.retry_delay_s,
            }
            if self._check_dialect() == FALKORDB:
                options |= falkordb.DRIVER_OPTIONS
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
                for statement in cypher.schema_statements(label):
                    self._write(f"schema for {label}", statement)
            return
        # FalkorDB reports a duplicate index only as an unknown error over Bolt: create what it lacks.
        existing = falkordb.indexed(self._read("schema", falkordb.INDEXES_QUERY))
        for label in NODE_LABELS:
            for prop in ("key", "user_id"):
                if (label, prop) in existing:
                    continue
                try:
                    self._write(f"schema for {label}", falkordb.index_statement(label, prop))
                except GraphSyncError:
                    if (label, prop) not in falkordb.indexed(self._read("schema", falkordb.INDEXES_QUERY)):
                        raise

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
        allow_nul = self._check_dialect() != FALKORDB
        wanted_nodes = cypher.desired_nodes(nodes, users, allow_nul=allow_nul)
        wanted_edges = cypher.desired_edges(edges, wanted_nodes, users, allow_nul=allow_nul)
        self.ensure_schema()
        statements = self._statements()
        report, steps = plan_sync(wanted_nodes, wanted_edges, held_nodes(statements, users), held_edges(statements, users))
        write_steps(statements, steps, self.batch_size, report, progress)
        return report

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
        types = cypher.memory_edge_types(edge_types)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        params = {"key": memory_node_key(user_id, memory_id), "user_id": user_id, "edge_types": list(types), "limit": limit}
        return [
            {
                "memory_id": local_id(user_id, key),
                "edge_type": edge_type,
                "weight": weight,
                "direction": "out" if outgoing else "in",
                "qualifier": qualifier or "",
            }
            for key, edge_type, weight, outgoing, qualifier in self._read("neighbours", cypher.NEIGHBOURS_QUERY, params)
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
        types = cypher.memory_edge_types(edge_types)
        if not isinstance(max_hops, int) or isinstance(max_hops, bool) or not 1 <= max_hops <= 100:
            raise ValueError(f"max_hops must be an integer from 1 to 100, got {max_hops!r}")
        params = {
            "a": memory_node_key(user_id, source_memory_id),
            "b": memory_node_key(user_id, target_memory_id),
            "user_id": user_id,
        }
        if source_memory_id == target_memory_id:
            found = self._read("shortest path", f"{cypher.PATH_ENDS}RETURN a.key", params)
            return [source_memory_id] if found else None
        if self._check_dialect() == NEO4J:
            query = cypher.shortest_path_query(types, max_hops)
        else:
            query = falkordb.shortest_path_query(cypher.PATH_ENDS)
            params |= {"edge_types": list(types), "max_hops": max_hops}
        rows = self._read("shortest path", query, params)
        if not rows or not rows[0][0]:
            return None
        return [local_id(user_id, key) for key in rows[0][0]]

    def concept_members(self, user_id: str, concept_id: str) -> list[str]:
        """Ids of the user's memories in the concept, sorted."""
        params = {"key": concept_node_key(user_id, concept_id), "user_id": user_id}
        return sorted(local_id(user_id, key) for (key,) in self._read("concept members", cypher.concept_members_query(), params))

    def node_counts(self, user_id: str | None = None) -> dict[str, int]:
        return {
            label: self._read("count nodes", cypher.count_nodes_query(label, of_user=user_id is not None), {"user_id": user_id})[0][0]
            for label in NODE_LABELS
        }

    def edge_counts(self, user_id: str | None = None) -> dict[str, int]:
        return {
            edge_type: self._read("count edges", cypher.count_edges_query(edge_type, of_user=user_id is not None), {"user_id": user_id})[0][0]
            for edge_type in EDGE_TYPES
        }

    # Running statements ---------------------------------------------------------------------

    def _statements(self) -> GraphStatements:
        return GraphStatements(
            lambda: self.driver,
            database=self.database,
            server=self.server,
            password=self.password,
            retry_time_s=self.retry_time_s,
            dialect=self._check_dialect(),
        )

    def _write(self, what: str, query: str, params: Mapping[str, Any] | None = None) -> None:
        self._statements().write(what, query, params)

    def _read(self, what: str, query: str, params: Mapping[str, Any] | None = None) -> list[list[Any]]:
        return self._statements().read(what, query, params)

    def _check_dialect(self) -> str:
        return checked_dialect(self.dialect)
