"""The `neo4j_graph` asset on a real Bolt server (FalkorDB): the sample's graph synced, a re-run
changing nothing, and a forgotten memory's node and edges deleted."""

import dagster as dg
import pytest

from hms_assets import domain_assets
from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.graph_model import MEMORY
from hms_resources.store.ingest import ingest_path, ingest_records
from tests.helpers import event


@pytest.fixture(params=["sqlite"])
def store_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


def sync(store, graph_store, bolt_server, instance) -> dict:
    result = dg.materialize(
        domain_assets(["memory_store", "semantic"], graph_sync=True),
        resources={"event_store": store, "embedder": Embedder(), "graph_store": graph_store},
        instance=instance,
    )
    bolt_server.settle()
    assert result.success
    [synced] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("neo4j_graph")]
    return {k: v.value for k, v in synced.materialization.metadata.items()}


def test_the_graph_reaches_the_bolt_server_once_and_follows_forgetting(store, graph_store, bolt_server):
    ingest_path(store, SAMPLE_EVENTS)
    with dg.instance_for_test() as instance:
        first = sync(store, graph_store, bolt_server, instance)
        assert first["edges_upserted"] > 500 and first["nodes_upserted"] > 150
        assert first["edges_deleted"] == first["nodes_deleted"] == 0
        second = sync(store, graph_store, bolt_server, instance)
        assert (second["nodes_upserted"], second["edges_upserted"], second["nodes_deleted"], second["edges_deleted"]) == (0, 0, 0, 0)
        gone = next(m for m in store.read_memories() if not m.is_archived)
        before = graph_store.node_counts(gone.user_id)[MEMORY]
        ingest_records(store, [event("forgotten", gone.user_id, gone.memory_id, 10_000_000)])
        third = sync(store, graph_store, bolt_server, instance)
        assert third["nodes_deleted"] == 1 and third["edges_deleted"] >= 1
    assert graph_store.node_counts(gone.user_id)[MEMORY] == before - 1
    assert graph_store.neighbours(gone.user_id, gone.memory_id) == []
