"""The resources every HMS run connects to, configured from the environment.

Values come through `EnvVar`, so the UI shows the variable's name, never its value (URLs, passwords)."""

from __future__ import annotations

import os

import dagster as dg

from hms_resources.context.assembler import ContextAssembler
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore


def _env(name: str, default: str = "") -> str | dg.EnvVar:
    return dg.EnvVar(name) if os.environ.get(name) else default


def event_store_resource() -> EventStore:
    """The embedded SQLite store under `HMS_HOME`, or PostgreSQL when `HMS_DATABASE_URL` is set."""
    return EventStore(database_url=_env("HMS_DATABASE_URL"), hms_home=_env("HMS_HOME"))


def graph_store_configured() -> bool:
    return bool(os.environ.get("NEO4J_URI"))


def resources() -> dict[str, object]:
    embedder = Embedder(model=_env("HMS_EMBEDDING_MODEL"), device=_env("HMS_EMBEDDING_DEVICE"))
    found: dict[str, object] = {
        "event_store": event_store_resource(),
        "embedder": embedder,
        "context_assembler": ContextAssembler(
            event_store=event_store_resource(), embedder=embedder, tokenizer=_env("HMS_TOKENIZER")
        ),
        "mlflow_tracking": MlflowTracking(tracking_uri=_env("MLFLOW_TRACKING_URI")),
    }
    if graph_store_configured():
        from hms_resources.semantic.graph_store import GraphStore

        found["graph_store"] = GraphStore(
            uri=dg.EnvVar("NEO4J_URI"),
            user=_env("NEO4J_USER", "neo4j"),
            password=_env("NEO4J_PASSWORD"),
            database=_env("NEO4J_DATABASE", "neo4j"),
            dialect=_env("HMS_GRAPH_DIALECT", "neo4j"),
        )
    return found
