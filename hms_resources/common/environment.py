"""The one map from environment variables to resource fields.

`Resource.from_env()` (plain Python) and the Dagster definitions (`hms_jobs/resources.py`) both build
their resources here, so every variable the README documents is honoured on both paths. For Dagster,
strings stay `EnvVar`s: the UI shows a variable's name, never its value (URLs, passwords)."""

from __future__ import annotations

import os
from typing import Any, TypeVar

import dagster as dg

from hms_resources.common.home import positive_int_from_env

R = TypeVar("R", bound=dg.ConfigurableResource)

VARIABLES: dict[str, dict[str, str]] = {
    "EventStore": {"database_url": "HMS_DATABASE_URL", "hms_home": "HMS_HOME", "max_content_bytes": "HMS_MAX_CONTENT_BYTES"},
    "Embedder": {"model": "HMS_EMBEDDING_MODEL", "device": "HMS_EMBEDDING_DEVICE", "query_backend": "HMS_QUERY_BACKEND"},
    "ContextAssembler": {
        "tokenizer": "HMS_TOKENIZER",
        "reranker": "HMS_CONTEXT_RERANKER",
        "memory_budget_mb": "HMS_CONTEXT_MEMORY_BUDGET_MB",
        "shard": "HMS_CONTEXT_SHARD",
        "shards": "HMS_CONTEXT_SHARDS",
    },
    "MlflowTracking": {"tracking_uri": "MLFLOW_TRACKING_URI"},
    "GraphStore": {
        "uri": "NEO4J_URI",
        "user": "NEO4J_USER",
        "password": "NEO4J_PASSWORD",
        "database": "NEO4J_DATABASE",
        "dialect": "HMS_GRAPH_DIALECT",
        "batch_size": "HMS_GRAPH_BATCH_SIZE",
    },
}
"""Per resource class: field -> variable. An unset or empty variable leaves the field's default."""

COUNTED_FROM_ZERO = {("ContextAssembler", "shard")}
"""Integer fields whose variable may be 0 (a shard's number); every other integer is positive."""


def environment_fields(resource_class: type, *, env_vars: bool = False) -> dict[str, Any]:
    """The fields of `resource_class` that the environment sets. Numbers are parsed now, so a bad
    value fails with the variable's name on either path."""
    fields: dict[str, Any] = {}
    for field, name in VARIABLES[resource_class.__name__].items():
        if not os.environ.get(name):
            continue
        annotation = resource_class.model_fields[field].annotation
        if annotation is int and (resource_class.__name__, field) in COUNTED_FROM_ZERO:
            fields[field] = _number(name, int, "a whole number from 0")
        elif annotation is int:
            fields[field] = positive_int_from_env(name, 0)
        elif annotation is float:
            fields[field] = _number(name, float, "a positive number")
        else:
            fields[field] = dg.EnvVar(name) if env_vars else os.environ[name]
    return fields


def _number(name: str, kind: type, expected: str) -> Any:
    raw = os.environ[name]
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0 or (kind is float and not value > 0):
        raise ValueError(f"{name} must be {expected}, got {raw!r}")
    return value


def from_environment(resource_class: type[R], *, env_vars: bool = False, **fields: Any) -> R:
    """`resource_class` configured from the environment; `fields` (e.g. nested resources) added."""
    return resource_class(**environment_fields(resource_class, env_vars=env_vars), **fields)


def graph_store_configured() -> bool:
    return bool(os.environ.get("NEO4J_URI"))
