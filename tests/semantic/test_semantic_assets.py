"""The semantic assets through Dagster on the sample data: embeddings, concept_clusters, graph_edges."""

import dagster as dg
import pytest

from hms_assets import domain_assets
from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.semantic.concepts import load_concepts
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.graph import load_edges
from hms_resources.store.ingest import ingest_path, ingest_records
from tests.helpers import event

ASSETS = domain_assets(["memory_store", "semantic"])


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def run(store, embedder, instance):
    result = dg.materialize(ASSETS, resources={"event_store": store, "embedder": embedder}, instance=instance)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    return {
        m.materialization.asset_key.to_user_string(): {k: v.value for k, v in m.materialization.metadata.items()}
        for m in result.get_asset_materialization_events()
    }


def test_semantic_assets_are_incremental_and_keep_concept_ids(store, embedder):
    ingest_path(store, SAMPLE_EVENTS)
    with dg.instance_for_test() as instance:
        first = run(store, embedder, instance)
        assert first["embeddings"]["encoded"] == first["embeddings"]["vectors"] == store.stats()["memories"]["live"]
        assert first["concept_clusters"]["concepts"] > 5
        assert first["concept_clusters"]["compaction_ratio"] >= 1
        assert first["concept_clusters"]["size_histogram"].startswith("![Concept sizes](data:image/png;base64,")
        assert "| concept | user | size |" in first["concept_clusters"]["largest_concepts"]
        assert first["graph_edges"]["edges_similar_to"] > 0 and first["graph_edges"]["edges_in_concept"] > 0
        ids_before = {c.concept_id for c in load_concepts(store)}

        second = run(store, embedder, instance)
        assert (second["embeddings"]["encoded"], second["embeddings"]["reused"]) == (0, first["embeddings"]["vectors"])
        assert {c.concept_id for c in load_concepts(store)} == ids_before
        assert second["concept_clusters"]["ids_carried_over"] == len(ids_before)

        target, gone = [m for m in store.read_memories() if not m.is_archived][:2]
        report = ingest_records(store, [
            event("updated", target.user_id, target.memory_id, 10_000, content="Now prefers rooibos tea in the evening"),
            event("forgotten", gone.user_id, gone.memory_id, 10_001),
        ])
        assert report.accepted == 2
        third = run(store, embedder, instance)
        assert third["embeddings"]["encoded"] == 1 and third["embeddings"]["removed"] == 1
        forgotten_key = "\x1f".join((gone.user_id, gone.memory_id))
        assert all(forgotten_key not in (e.source, e.target) for e in load_edges(store))


def test_graph_queries_work_on_the_embedded_store_without_neo4j(store, embedder):
    from hms_resources.semantic.concepts import load_concepts
    from hms_resources.semantic.graph import concept_members, neighbours, shortest_path

    ingest_path(store, SAMPLE_EVENTS)
    with dg.instance_for_test() as instance:
        run(store, embedder, instance)
    concept = max(load_concepts(store), key=lambda c: c.size)
    assert concept_members(store, concept.user_id, concept.concept_id) == sorted(concept.member_ids)
    first, second = sorted(concept.member_ids)[:2]
    found = neighbours(store, concept.user_id, first)
    assert found and all(n["edge_type"] in ("SIMILAR_TO", "NEXT_IN_SESSION", "CHILD_OF", "RELATED_TO") for n in found)
    path = shortest_path(store, concept.user_id, first, second)
    assert path[0] == first and path[-1] == second
    assert neighbours(store, "nobody", first) == [] and shortest_path(store, "nobody", first, second) is None


def test_quantizing_the_query_model_prints_no_preprocessing_advice_and_leaves_logging_as_it_was(tmp_path, capfd):
    """onnxruntime advises pre-processing on the root logger (configuring it when bare) on every export."""
    import logging

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hms_resources.semantic.embedder import PREPROCESSING_ADVICE, _quantize_int8

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[weight],
    )
    source = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    root = logging.getLogger()
    handlers, filters = list(root.handlers), list(root.filters)
    _quantize_int8(source, tmp_path / "tiny-int8.onnx")
    assert (tmp_path / "tiny-int8.onnx").stat().st_size > 0
    assert PREPROCESSING_ADVICE not in capfd.readouterr().err
    assert (root.handlers, root.filters) == (handlers, filters)
