"""The resources every HMS run connects to: one of each, configured from the environment by the same
map `from_env()` uses (`hms_resources.common.environment`)."""

from __future__ import annotations

import dagster as dg

from hms_resources.common.environment import from_environment, graph_store_configured
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore


def resources() -> dict[str, dg.ConfigurableResource]:
    """What the assets, checks and sensors request; the graph store only when `NEO4J_URI` is set."""
    found: dict[str, dg.ConfigurableResource] = {
        "event_store": from_environment(EventStore, env_vars=True),
        "embedder": from_environment(Embedder, env_vars=True),
        "mlflow_tracking": from_environment(MlflowTracking, env_vars=True),
    }
    if graph_store_configured():
        from hms_resources.semantic.graph_store import GraphStore

        found["graph_store"] = from_environment(GraphStore, env_vars=True)
    return found
