"""The incremental graph sync, in three steps: read what the server holds for the users concerned,
plan the difference against the desired graph (a pure function: which nodes and edges to upsert or
delete), and write the plan in batched, idempotent statements. Because the diff is recomputed from the
server, re-running an interrupted sync completes it exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hms_resources.semantic import cypher
from hms_resources.semantic.cypher import EdgeId, NodeId
from hms_resources.semantic.graph_model import EDGE_TYPES, NODE_LABELS
from hms_resources.semantic.graph_statements import GraphStatements

Progress = Callable[[str, int, int], None]
Desired = dict[Any, tuple[str, dict[str, Any]]]
"""A desired node or edge by id: its fingerprint and the row that writes it."""


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
class SyncStep:
    """The rows of one statement, written in batches: e.g. upsert edges SIMILAR_TO."""

    action: str
    kind: str
    name: str
    query: str
    rows: list[dict[str, Any]]

    @property
    def title(self) -> str:
        return f"{self.action} {self.kind} {self.name}"


def held_nodes(statements: GraphStatements, users: list[str] | None) -> dict[NodeId, str | None]:
    """The fingerprint of every node the server holds for `users` (every user when None)."""
    held: dict[NodeId, str | None] = {}
    for label in NODE_LABELS:
        query = cypher.held_nodes_query(label, of_users=users is not None)
        for chunk in _user_chunks(statements, f"read nodes {label}", query, users):
            for user_id, key, fingerprint in statements.read(f"read nodes {label}", query, {"user_ids": chunk}, sized=True):
                held[(label, user_id, key)] = fingerprint
    return held


def held_edges(statements: GraphStatements, users: list[str] | None) -> dict[EdgeId, str | None]:
    """The fingerprint of every edge the server holds for `users` (every user when None)."""
    held: dict[EdgeId, str | None] = {}
    for edge_type in EDGE_TYPES:
        query = cypher.held_edges_query(edge_type, of_users=users is not None)
        for chunk in _user_chunks(statements, f"read edges {edge_type}", query, users):
            for user_id, source, target, qualifier, fingerprint in statements.read(
                f"read edges {edge_type}", query, {"user_ids": chunk}, sized=True
            ):
                held[(edge_type, user_id, source, target, qualifier)] = fingerprint
    return held


def _user_chunks(statements: GraphStatements, what: str, query: str, users: list[str] | None) -> Iterator[list[str] | None]:
    if users is None:
        yield None
    elif users:
        yield from statements.batches(what, query, "user_ids", users, None)


def plan_sync(
    wanted_nodes: Desired, wanted_edges: Desired, held_nodes: dict[NodeId, str | None], held_edges: dict[EdgeId, str | None]
) -> tuple[SyncReport, list[SyncStep]]:
    """What to write so the server holds the wanted graph: new or changed nodes and edges upserted, those
    no longer wanted deleted (edges before nodes); the report counts them (its `batches` still 0)."""
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
    steps: list[SyncStep] = []
    for label in NODE_LABELS:
        rows = [row for nid, row in changed_nodes.items() if nid[0] == label]
        steps.append(SyncStep("upsert", "nodes", label, cypher.upsert_nodes_query(label), rows))
    for edge_type in EDGE_TYPES:
        rows = [row for eid, row in changed_edges.items() if eid[0] == edge_type]
        steps.append(SyncStep("upsert", "edges", edge_type, cypher.upsert_edges_query(edge_type), rows))
    for edge_type in EDGE_TYPES:
        rows = [{"user_id": u, "source": s, "target": t, "qualifier": q} for (et, u, s, t, q) in stale_edges if et == edge_type]
        steps.append(SyncStep("delete", "edges", edge_type, cypher.delete_edges_query(edge_type), rows))
    for label in NODE_LABELS:
        rows = [{"user_id": u, "key": k} for (lb, u, k) in stale_nodes if lb == label]
        steps.append(SyncStep("delete", "nodes", label, cypher.delete_nodes_query(label), rows))
    return report, steps


def write_steps(
    statements: GraphStatements, steps: list[SyncStep], batch_size: int, report: SyncReport, progress: Progress | None = None
) -> None:
    """Write every step in batches (all cut before the first write, so a batch too long fails the sync
    before anything is written), counting them in `report`."""
    planned = [(step, list(statements.batches(step.title, step.query, "rows", step.rows, batch_size))) for step in steps]
    for step, batches in planned:
        done = 0
        for number, batch in enumerate(batches, 1):
            statements.write(f"{step.title} batch {number} of {len(batches)}", step.query, {"rows": batch}, sized=True)
            report.batches += 1
            done += len(batch)
            if progress is not None:
                progress(step.title, done, len(step.rows))
