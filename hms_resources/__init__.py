"""HMS's domain library, one subpackage per domain in the order data flows: `store` (the event log
and the fold) -> `semantic` (embeddings, concepts, graph) -> `tiers` -> `context` and `lora`;
`datasets` (generators and eval formats), `privacy` (forgetting), `common` (home, files, text, limits).

The resources are exported here and imported on first use, so `import hms_resources` stays cheap."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

RESOURCES = {
    "EventStore": "hms_resources.store.event_store",
    "Embedder": "hms_resources.semantic.embedder",
    "GraphStore": "hms_resources.semantic.graph_store",
    "ContextAssembler": "hms_resources.context.assembler",
    "MlflowTracking": "hms_resources.lora.tracking",
}
__all__ = ["ContextAssembler", "Embedder", "EventStore", "GraphStore", "MlflowTracking"]

if TYPE_CHECKING:
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.lora.tracking import MlflowTracking
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.semantic.graph_store import GraphStore
    from hms_resources.store.event_store import EventStore


def __getattr__(name: str) -> Any:
    if name not in RESOURCES:
        raise AttributeError(f"module 'hms_resources' has no attribute {name!r}")
    return getattr(import_module(RESOURCES[name]), name)
