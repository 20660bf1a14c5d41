"""The `neo4j_graph` asset: the memory graph synced to Neo4j, defined only when NEO4J_URI is set.

No retry policy: the driver already retries each statement while the server is away (see
`GraphStore.retry_time_s`); past that the run fails with the step named, and the next run, which
recomputes the diff from the server, completes the sync exactly."""

import dagster as dg

from hms_assets.semantic.graph import current_nodes
from hms_resources.semantic.graph import load_edges
from hms_resources.semantic.graph_store import GraphStore
from hms_resources.store.event_store import EventStore


@dg.asset(
    group_name="semantic",
    deps=["graph_edges"],
    kinds={"neo4j"},
    automation_condition=dg.AutomationCondition.eager(),
    description="The memory graph copied to Neo4j (only what changed is written), to explore it with Cypher. "
    "Present only when NEO4J_URI is set.",
)
def neo4j_graph(context: dg.AssetExecutionContext, event_store: EventStore, graph_store: GraphStore) -> dg.MaterializeResult:
    nodes = current_nodes(event_store)
    edges = load_edges(event_store)

    def progress(what: str, done: int, total: int) -> None:
        context.log.info(f"{what}: {done:,} of {total:,}")

    report = graph_store.sync(nodes, edges, progress=progress)
    return dg.MaterializeResult(
        metadata={
            "nodes_upserted": report.nodes_upserted,
            "nodes_deleted": report.nodes_deleted,
            "nodes_unchanged": report.nodes_unchanged,
            "edges_upserted": report.edges_upserted,
            "edges_deleted": report.edges_deleted,
            "edges_unchanged": report.edges_unchanged,
            "batches": report.batches,
            "database": graph_store.database,
        }
    )
