"""The `graph_edges` asset: typed, weighted edges in the embedded store."""

from collections import Counter

import dagster as dg

from hms_assets.semantic.embeddings import require_index
from hms_resources.semantic.concepts import load_concepts
from hms_resources.semantic.graph import GraphConfig, build_edges, build_nodes, load_edges, save_edges
from hms_resources.semantic.graph_model import EDGE_TYPES, GraphNode
from hms_resources.store.event_store import EventStore


class GraphEdgesConfig(dg.Config):
    neighbours: int = GraphConfig.neighbours
    similarity_threshold: float = GraphConfig.similarity_threshold


def current_nodes(event_store: EventStore) -> list[GraphNode]:
    return build_nodes(event_store.read_memories(), load_concepts(event_store))


@dg.asset(
    group_name="semantic",
    deps=["concept_clusters"],
    kinds={"sql"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Typed, weighted links between memories, concepts and users, kept in the event store's database. "
    "The context resource follows them to bring related memories along.",
)
def graph_edges(context: dg.AssetExecutionContext, config: GraphEdgesConfig, event_store: EventStore) -> dg.MaterializeResult:
    index = require_index(event_store)
    memories = event_store.read_memories()
    concepts = load_concepts(event_store)
    nodes = build_nodes(memories, concepts)
    edges = build_edges(
        memories, index, concepts, GraphConfig(neighbours=config.neighbours, similarity_threshold=config.similarity_threshold)
    )
    save_edges(event_store, edges)
    by_type = Counter(e.type for e in edges)
    context.log.info(f"{len(edges)} edges over {len(nodes)} nodes")
    return dg.MaterializeResult(
        metadata={
            "edges": len(edges),
            "nodes": len(nodes),
            **{f"edges_{t.lower()}": by_type.get(t, 0) for t in EDGE_TYPES},
            "dagster/row_count": len(edges),
        }
    )


@dg.asset_check(asset=graph_edges, blocking=True, description="Every edge joins two nodes of the same user.")
def graph_edges_stay_within_a_user(event_store: EventStore) -> dg.AssetCheckResult:
    owner = {n.key: n.user_id for n in current_nodes(event_store)}
    stored = load_edges(event_store)
    crossing = sum(1 for e in stored if owner.get(e.source) != e.user_id or owner.get(e.target) != e.user_id)
    return dg.AssetCheckResult(passed=crossing == 0, metadata={"edges": len(stored), "crossing_or_dangling": crossing})
