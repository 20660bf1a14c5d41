"""GraphStore against a real Bolt server (FalkorDB, from hms_resources/semantic/bolt_server.py)."""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any

import pytest

from hms_resources.semantic.graph_model import (
    CHILD_OF,
    CONCEPT,
    HAS_MEMORY,
    IN_CONCEPT,
    MEMORY,
    NEXT_IN_SESSION,
    RELATED_TO,
    SIMILAR_TO,
    USER,
    GraphEdge,
    GraphNode,
    concept_node_key,
    memory_node_key,
)
from hms_resources.semantic.graph_store import GraphStore, GraphSyncError
from hms_resources.semantic.bolt_server import BoltServer

# Ids that would break or rewrite a query if any of them reached its text.
EVIL = [
    "it's",
    'say "hi"',
    "back`tick",
    "}) DETACH DELETE n //",
    "x' MATCH (n) DETACH DELETE n //",
    "\\' OR 1=1 //",
    "trailing\\",
    "new\nline\ttab",
    "üñí 😀",
    "$rows",
    "{key: 'x'}",
]


def user_node(user: str) -> GraphNode:
    return GraphNode(USER, user, user, {"user_id": user})


def memory(user: str, memory_id: str, **properties: Any) -> GraphNode:
    return GraphNode(MEMORY, memory_node_key(user, memory_id), user, {"memory_id": memory_id, **properties})


def concept(user: str, concept_id: str) -> GraphNode:
    return GraphNode(CONCEPT, concept_node_key(user, concept_id), user, {"concept_id": concept_id, "label": ["a", "b"]})


def edge(edge_type: str, user: str, source: str, target: str, weight: float = 1.0, qualifier: str = "", **properties: Any) -> GraphEdge:
    source_key = user if edge_type == HAS_MEMORY else memory_node_key(user, source)
    target_key = concept_node_key(user, target) if edge_type == IN_CONCEPT else memory_node_key(user, target)
    return GraphEdge(edge_type, source_key, target_key, user, weight, properties, qualifier)


def user_graph(user: str, ids: list[str] | None = None) -> tuple[list[GraphNode], list[GraphEdge]]:
    """Memories m1..m7 (or `ids`), two concepts, and edges of every type.

    Memory-to-memory edges: m1-m2-m3-m4 SIMILAR_TO, m1->m3 RELATED_TO twice (two relationship
    types), m4->m5 NEXT_IN_SESSION, m6->m1 CHILD_OF; m7 has none."""
    m = ids or [f"m{i}" for i in range(1, 8)]
    nodes = [user_node(user), concept(user, "c1"), concept(user, "c2")]
    nodes += [memory(user, mid, content=f"memory {mid} of {user}", importance=0.5, tags=["x", mid], pinned=i % 2 == 0) for i, mid in enumerate(m)]
    edges = [edge(HAS_MEMORY, user, "", mid) for mid in m]
    edges += [
        edge(SIMILAR_TO, user, m[0], m[1], 0.9),
        edge(SIMILAR_TO, user, m[1], m[2], 0.8),
        edge(SIMILAR_TO, user, m[2], m[3], 0.7),
        edge(RELATED_TO, user, m[0], m[2], 0.5, "supports", relationship_type="supports"),
        edge(RELATED_TO, user, m[0], m[2], 0.25, "contradicts", relationship_type="contradicts"),
        edge(NEXT_IN_SESSION, user, m[3], m[4]),
        edge(CHILD_OF, user, m[5], m[0]),
        edge(IN_CONCEPT, user, m[0], "c1", 0.75),
        edge(IN_CONCEPT, user, m[1], "c1", 0.625),
        edge(IN_CONCEPT, user, m[2], "c2", 0.5),
    ]
    return nodes, edges


def two_users() -> tuple[list[GraphNode], list[GraphEdge]]:
    a_nodes, a_edges = user_graph("alice")
    b_nodes, b_edges = user_graph("bob")
    return a_nodes + b_nodes, a_edges + b_edges


def expected(nodes: list[GraphNode], edges: list[GraphEdge]) -> tuple[dict, dict]:
    """What the graph must hold for these nodes and edges: every property, exactly."""
    want_nodes = {
        (n.label, n.key): {**n.properties, "key": n.key, "user_id": n.user_id, "fingerprint": n.fingerprint}
        for n in nodes
    }
    want_edges = {
        (e.type, e.source, e.target, e.qualifier): {
            **e.properties,
            "user_id": e.user_id,
            "weight": e.weight,
            "qualifier": e.qualifier,
            "fingerprint": e.fingerprint,
        }
        for e in edges
    }
    return want_nodes, want_edges


def dump(store: GraphStore, user: str | None = None) -> tuple[dict, dict]:
    """Everything in the store's graph (or one user's part of it), read without GraphStore's code."""
    run = store.driver.execute_query
    nodes: dict = {}
    node_rows = run("MATCH (n) RETURN labels(n) AS labels, properties(n) AS props", database_=store.database).records
    for row in node_rows:
        props = row["props"]
        if user is None or props.get("user_id") == user:
            nodes[(row["labels"][0], props["key"])] = props
    edge_rows = run(
        "MATCH (a)-[r]->(b) RETURN type(r) AS type, a.key AS source, b.key AS target, properties(r) AS props",
        database_=store.database,
    ).records
    edges: dict = {}
    for row in edge_rows:
        props = row["props"]
        if user is None or props.get("user_id") == user:
            edges[(row["type"], row["source"], row["target"], props.get("qualifier"))] = props
    if user is None:
        assert len(nodes) == len(node_rows), "duplicate nodes"
        assert len(edges) == len(edge_rows), "duplicate edges"
    return nodes, edges


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sync_creates_nodes_and_typed_edges(graph_store: GraphStore) -> None:
    nodes, edges = two_users()
    report = graph_store.sync(nodes, edges)
    assert (report.nodes_upserted, report.edges_upserted, report.nodes_deleted, report.edges_deleted) == (20, 34, 0, 0)
    assert dump(graph_store) == expected(nodes, edges)
    assert graph_store.node_counts() == {USER: 2, MEMORY: 14, CONCEPT: 4}
    assert graph_store.edge_counts("alice") == {
        HAS_MEMORY: 7, SIMILAR_TO: 3, IN_CONCEPT: 3, NEXT_IN_SESSION: 1, CHILD_OF: 1, RELATED_TO: 2
    }  # fmt: skip


def test_second_sync_changes_nothing(graph_store: GraphStore) -> None:
    nodes, edges = two_users()
    graph_store.sync(nodes, edges)
    report = graph_store.sync(nodes, edges)
    assert (report.nodes_upserted, report.nodes_deleted, report.edges_upserted, report.edges_deleted) == (0, 0, 0, 0)
    assert (report.nodes_unchanged, report.edges_unchanged, report.batches) == (20, 34, 0)
    assert dump(graph_store) == expected(nodes, edges)


def test_changing_one_edge_weight_rewrites_only_that_edge(graph_store: GraphStore) -> None:
    nodes, edges = two_users()
    graph_store.sync(nodes, edges)
    # A mark on every edge: an edge that is rewritten (SET r = ...) loses it.
    graph_store.driver.execute_query("MATCH ()-[r]->() SET r.mark = 1", database_=graph_store.database)
    changed = next(e for e in edges if e.type == SIMILAR_TO and e.user_id == "alice")
    edges = [
        GraphEdge(e.type, e.source, e.target, e.user_id, 0.125, e.properties, e.qualifier) if e is changed else e
        for e in edges
    ]
    report = graph_store.sync(nodes, edges)
    assert (report.edges_upserted, report.edges_unchanged, report.nodes_upserted, report.batches) == (1, 33, 0, 1)
    _, held = dump(graph_store)
    rewritten = [key for key, props in held.items() if "mark" not in props]
    assert rewritten == [(SIMILAR_TO, changed.source, changed.target, "")]
    assert held[rewritten[0]]["weight"] == 0.125


def test_removing_a_memory_deletes_its_node_and_edges(graph_store: GraphStore) -> None:
    nodes, edges = two_users()
    graph_store.sync(nodes, edges)
    gone = memory_node_key("alice", "m3")
    nodes = [n for n in nodes if n.key != gone]
    edges = [e for e in edges if gone not in (e.source, e.target)]
    report = graph_store.sync(nodes, edges)
    # m3's edges: HAS_MEMORY, two SIMILAR_TO, two RELATED_TO, IN_CONCEPT c2.
    assert (report.nodes_deleted, report.edges_deleted, report.nodes_upserted, report.edges_upserted) == (1, 6, 0, 0)
    assert dump(graph_store) == expected(nodes, edges)


def test_sync_for_one_user_never_touches_another(graph_store: GraphStore) -> None:
    nodes, edges = two_users()
    graph_store.sync(nodes, edges)
    bob_before = dump(graph_store, "bob")
    alice_nodes, alice_edges = user_graph("alice", ["m1", "m2", "m3", "m4", "m5", "m6", "m8"])
    report = graph_store.sync(alice_nodes, alice_edges, user_ids={"alice"})
    assert (report.nodes_deleted, report.nodes_upserted) == (1, 1)
    assert dump(graph_store, "bob") == bob_before
    assert dump(graph_store, "alice") == expected(alice_nodes, alice_edges)
    # Bob's memories share alice's ids; no query of alice's sees them, and a stranger sees nothing.
    assert {n["memory_id"] for n in graph_store.neighbours("alice", "m1")} == {"m2", "m3", "m6"}
    assert graph_store.neighbours("carol", "m1") == []
    assert graph_store.shortest_path("carol", "m1", "m2") is None
    assert graph_store.concept_members("carol", "c1") == []
    with pytest.raises(ValueError, match="outside user_ids"):
        graph_store.sync(nodes, edges, user_ids={"alice"})
    # An edge of alice's may not end at bob's node.
    crossing = GraphEdge(SIMILAR_TO, memory_node_key("alice", "m1"), memory_node_key("bob", "m2"), "alice")
    with pytest.raises(ValueError, match="no Memory node"):
        graph_store.sync(nodes, [*edges, crossing])
    assert dump(graph_store, "bob") == bob_before


def test_values_that_look_like_cypher_are_stored_verbatim(graph_store: GraphStore) -> None:
    victim_nodes, victim_edges = user_graph("bob")
    user = "alice'`}) DETACH DELETE n //"
    ids = EVIL[:7]
    nodes, edges = user_graph(user, ids)
    nodes = [
        GraphNode(n.label, n.key, n.user_id, {**n.properties, "note": EVIL, "title": EVIL[4]}) if n.label == MEMORY else n
        for n in nodes
    ]
    edges += [
        edge(RELATED_TO, user, ids[0], ids[1], 0.5, evil, relationship_type=evil)
        for evil in EVIL
    ]
    nodes += [memory(user, evil) for evil in EVIL[7:]]
    edges += [edge(HAS_MEMORY, user, "", evil) for evil in EVIL[7:]]
    graph_store.sync(nodes + victim_nodes, edges + victim_edges)
    assert dump(graph_store) == expected(nodes + victim_nodes, edges + victim_edges)
    report = graph_store.sync(nodes + victim_nodes, edges + victim_edges)
    assert (report.nodes_upserted, report.edges_upserted, report.nodes_deleted, report.edges_deleted) == (0, 0, 0, 0)
    assert graph_store.shortest_path(user, ids[5], ids[4]) == [ids[5], ids[0], ids[2], ids[3], ids[4]]
    assert {n["qualifier"] for n in graph_store.neighbours(user, ids[0], edge_types=[RELATED_TO])} >= set(EVIL)
    assert graph_store.concept_members(user, "c1") == sorted(ids[:2])
    # Removing the user's graph leaves the other user's exactly as it was.
    graph_store.sync([], [], user_ids={user})
    assert dump(graph_store) == expected(victim_nodes, victim_edges)


def test_labels_types_and_names_outside_the_whitelist_are_refused_before_any_query() -> None:
    # Nothing listens at this address: any query would raise GraphSyncError, not ValueError.
    store = GraphStore(uri=f"bolt://127.0.0.1:{closed_port()}", dialect="falkordb", retry_time_s=0)
    nodes, edges = user_graph("alice")
    m1, m2 = memory_node_key("alice", "m1"), memory_node_key("alice", "m2")
    bad_inputs = [
        ([*nodes, GraphNode("Memory:Admin", "k", "alice")], edges),
        ([*nodes, GraphNode("Memory`) DETACH DELETE n //", "k", "alice")], edges),
        (nodes, [*edges, GraphEdge("SIMILAR_TO]->() MATCH (n) DETACH DELETE n //", m1, m2, "alice")]),
        (nodes, [*edges, GraphEdge("KNOWS", m1, m2, "alice")]),
        ([*nodes, memory("alice", "m9", **{"a` = 1, n.b": 1})], edges),
        ([*nodes, memory("alice", "m9", nested={"a": 1})], edges),
        ([*nodes, memory("alice", "m9", score=float("nan"))], edges),
        ([*nodes, GraphNode(USER, "alice", "alice", {"user_id": "mallory"})], edges),
        ([*nodes, nodes[3]], edges),
        ([*nodes, memory("alice", "m1\x00")], edges),
    ]
    for bad_nodes, bad_edges in bad_inputs:
        with pytest.raises(ValueError):
            store.sync(bad_nodes, bad_edges)
    with pytest.raises(ValueError):
        store.neighbours("alice", "m1", edge_types=["KNOWS"])
    with pytest.raises(ValueError):
        store.shortest_path("alice", "m1", "m2", max_hops="3) DETACH DELETE n //")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.neighbours("alice", "m1", limit=0)
    with pytest.raises(ValueError, match="NUL"):
        store.neighbours("alice", "m1\x00")
    store.close()


def test_neighbours_shortest_path_and_concept_members(graph_store: GraphStore) -> None:
    nodes, edges = two_users()
    graph_store.sync(nodes, edges)
    assert graph_store.neighbours("alice", "m1") == [
        {"memory_id": "m6", "edge_type": CHILD_OF, "weight": 1.0, "direction": "in", "qualifier": ""},
        {"memory_id": "m2", "edge_type": SIMILAR_TO, "weight": 0.9, "direction": "out", "qualifier": ""},
        {"memory_id": "m3", "edge_type": RELATED_TO, "weight": 0.5, "direction": "out", "qualifier": "supports"},
        {"memory_id": "m3", "edge_type": RELATED_TO, "weight": 0.25, "direction": "out", "qualifier": "contradicts"},
    ]
    assert [n["memory_id"] for n in graph_store.neighbours("alice", "m3", edge_types=[SIMILAR_TO])] == ["m2", "m4"]
    assert [n["direction"] for n in graph_store.neighbours("alice", "m3", edge_types=[SIMILAR_TO])] == ["in", "out"]
    assert len(graph_store.neighbours("alice", "m1", limit=2)) == 2
    assert graph_store.neighbours("alice", "m7") == []
    assert graph_store.shortest_path("alice", "m1", "m4") == ["m1", "m3", "m4"]
    assert graph_store.shortest_path("alice", "m4", "m1") == ["m4", "m3", "m1"]
    assert graph_store.shortest_path("alice", "m1", "m4", edge_types=[SIMILAR_TO]) == ["m1", "m2", "m3", "m4"]
    assert graph_store.shortest_path("alice", "m6", "m5") == ["m6", "m1", "m3", "m4", "m5"]
    assert graph_store.shortest_path("alice", "m6", "m5", max_hops=3) is None
    assert graph_store.shortest_path("alice", "m1", "m7") is None
    assert graph_store.shortest_path("alice", "m1", "m1") == ["m1"]
    assert graph_store.shortest_path("alice", "m1", "nope") is None
    assert graph_store.concept_members("alice", "c1") == ["m1", "m2"]
    assert graph_store.concept_members("alice", "c2") == ["m3"]
    assert graph_store.concept_members("alice", "nope") == []


def test_unreachable_server_raises_a_clear_error_without_the_password() -> None:
    port = closed_port()
    store = GraphStore(uri=f"bolt://127.0.0.1:{port}", password="s3cret-pw", dialect="falkordb", retry_delay_s=0.01, retry_time_s=0.05)
    assert "s3cret-pw" not in repr(store) and "s3cret-pw" not in str(store)
    with pytest.raises(GraphSyncError) as caught:
        store.sync(*user_graph("alice"))
    message = str(caught.value)
    assert f"bolt://127.0.0.1:{port}" in message and "unavailable after retrying for 0.05 s" in message
    assert "s3cret-pw" not in message
    store.close()
    with_credentials = GraphStore(uri=f"bolt://admin:s3cret-pw@127.0.0.1:{port}", password="s3cret-pw", retry_time_s=0)
    assert "s3cret-pw" not in repr(with_credentials)
    with pytest.raises(GraphSyncError) as caught:
        with_credentials.sync([], [])
    assert "s3cret-pw" not in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    with_credentials.close()


def impatient(graph_store: GraphStore, **options: Any) -> GraphStore:
    """A store on the same server and graph whose driver gives up on an unavailable server soon."""
    return GraphStore(
        uri=graph_store.uri, user="falkordb", database=graph_store.database, dialect="falkordb", retry_delay_s=0.1, **options
    )


def test_stopped_server_fails_the_sync_once_the_retry_time_is_spent_and_a_restart_recovers(
    graph_store: GraphStore, bolt_server: BoltServer
) -> None:
    nodes, edges = user_graph("alice")
    store = impatient(graph_store, retry_time_s=0.5)
    bolt_server.stop()
    started = time.monotonic()
    try:
        with pytest.raises(GraphSyncError, match=rf"schema failed: .*{re.escape(bolt_server.uri)}.*unavailable after retrying for 0.5 s"):
            store.sync(nodes, edges)
    finally:
        bolt_server.start()
    assert time.monotonic() - started >= 0.5, "the driver retried before giving up"
    store.sync(nodes, edges)
    assert dump(graph_store) == expected(nodes, edges)
    store.close()


def test_a_server_back_within_the_retry_time_is_waited_for(graph_store: GraphStore, bolt_server: BoltServer) -> None:
    nodes, edges = user_graph("alice")
    store = impatient(graph_store, retry_time_s=30)
    bolt_server.stop()
    restart = threading.Timer(1.0, bolt_server.start)
    restart.start()
    try:
        report = store.sync(nodes, edges)
    finally:
        restart.join()
    assert (report.nodes_upserted, report.edges_upserted) == (len(nodes), len(edges))
    assert dump(graph_store) == expected(nodes, edges)
    store.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_server_lost_mid_sync_then_rerun_completes_exactly(graph_store: GraphStore, bolt_server: BoltServer, how: str) -> None:
    nodes, edges = two_users()
    graph_store.sync(nodes[:5], [])
    nodes = [GraphNode(n.label, n.key, n.user_id, {**n.properties, "version": 2}) for n in nodes]
    small = impatient(graph_store, batch_size=3, retry_time_s=0.5)
    steps: list[str] = []

    def lose_server_after_first_batch(what: str, done: int, total: int) -> None:
        steps.append(what)
        if len(steps) == 1:
            # stop: a clean shutdown that saves the graph; kill: a crash that loses what was not saved.
            if how == "stop":
                bolt_server.stop()
            else:
                bolt_server.kill()

    try:
        with pytest.raises(GraphSyncError, match=r"upsert nodes Memory batch 1 of 5 failed: .*unavailable"):
            small.sync(nodes, edges, progress=lose_server_after_first_batch)
    finally:
        bolt_server.start()
    assert steps == ["upsert nodes User"]
    report = small.sync(nodes, edges)
    if how == "stop":
        # The first batch (both User nodes) survived the restart; the rest is written now, once.
        assert (report.nodes_upserted, report.nodes_unchanged, report.edges_upserted) == (18, 2, 34)
    assert dump(graph_store) == expected(nodes, edges)
    again = small.sync(nodes, edges)
    assert (again.nodes_upserted, again.edges_upserted, again.nodes_deleted, again.edges_deleted) == (0, 0, 0, 0)
    small.close()


def test_falkordb_batches_are_cut_to_what_its_bolt_listener_takes(graph_store: GraphStore) -> None:
    nodes = [user_node("alice")] + [memory("alice", f"m{i:03d}", content="c" * 200) for i in range(300)]
    edges = [edge(HAS_MEMORY, "alice", "", f"m{i:03d}") for i in range(300)]
    report = graph_store.sync(nodes, edges)
    assert report.batches > 20 and (report.nodes_upserted, report.edges_upserted) == (301, 300)
    assert dump(graph_store) == expected(nodes, edges)
    # A memory just under the limit goes in a batch of its own; one over it is refused before
    # anything is written (sent, it would crash the server).
    nodes.append(memory("alice", "large", content="l" * 3000))
    edges.append(edge(HAS_MEMORY, "alice", "", "large"))
    report = graph_store.sync(nodes, edges)
    assert (report.nodes_upserted, report.edges_upserted, report.batches) == (1, 1, 2)
    too_big = memory("alice", "huge", content="h" * 4000)
    with pytest.raises(GraphSyncError, match="upsert nodes Memory: node .*huge.* over the 3,584 bytes"):
        graph_store.sync([*nodes[:10], too_big], edges[:9])
    assert dump(graph_store) == expected(nodes, edges)
