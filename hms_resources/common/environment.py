"""The one map from environment variables to what they configure, and the only place HMS reads them.

`VARIABLES` maps resource fields: `Resource.from_env()` (plain Python) and the Dagster definitions
(`hms_jobs/resources.py`) both build their resources here, so every documented variable is honoured on
both paths. For Dagster, strings stay `EnvVar`s: the UI shows a variable's name, never its value (URLs,
passwords). `SETTINGS` maps the process settings (the home, partitions, executors, the local model, the
service a client calls), each with its default and parser, read when a resource or a definition is
built or a call needs it, never at import time. A bad value fails with the variable's name."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import dagster as dg

R = TypeVar("R", bound="dg.ConfigurableResource")

VARIABLES: dict[str, dict[str, str]] = {
    "EventStore": {"database_url": "HMS_DATABASE_URL", "hms_home": "HMS_HOME", "max_content_bytes": "HMS_MAX_CONTENT_BYTES"},
    "Embedder": {"model": "HMS_EMBEDDING_MODEL", "device": "HMS_EMBEDDING_DEVICE", "query_backend": "HMS_QUERY_BACKEND"},
    "ContextAssembler": {
        "tokenizer": "HMS_TOKENIZER",
        "reranker": "HMS_CONTEXT_RERANKER",
        "memory_budget_mb": "HMS_CONTEXT_MEMORY_BUDGET_MB",
        "shard": "HMS_CONTEXT_SHARD",
        "shards": "HMS_CONTEXT_SHARDS",
        "online_index": "HMS_CONTEXT_ONLINE_INDEX",
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


def raw(name: str) -> str | None:
    """The variable's text as the environment holds it (None when unset): the one read of the environment."""
    return os.environ.get(name)


def is_set(name: str) -> bool:
    return bool(raw(name))


# Parsers: (variable, text) -> value, failing with the variable's name. -----------------------------


def text(_name: str, value: str) -> str:
    return value


def positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _shard_count(name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}: a whole number of shards, at least 1, was expected; got {value!r}")
    return int(value)


def _iso_date(name: str, value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None
    return value


def _share(name: str, value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not 0 < share <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return share


def _positive_number(name: str, value: str) -> float:
    """A positive, finite number: seconds, or a rate a second."""
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def _executor(name: str, value: str) -> str:
    kind = value.strip().lower() or "multiprocess"
    if kind not in ("multiprocess", "celery"):
        raise ValueError(f"{name}={kind!r}: expected one of multiprocess, celery")
    return kind


def _flag(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{name} must be true or false (1/0, yes/no, on/off), got {value!r}")
    return word in ("1", "true", "yes", "on")


def _stripped(default: str) -> Callable[[str, str], str]:
    return lambda _name, value: value.strip() or default


@dataclass(frozen=True)
class Setting:
    default: Any
    parse: Callable[[str, str], Any]
    meaning: str


SETTINGS: dict[str, Setting] = {
    "HMS_HOME": Setting(".hms", text, "where the embedded store, rejects and the Dagster instance live"),
    "DAGSTER_HOME": Setting(None, text, "the Dagster instance (None: $HMS_HOME/dagster)"),
    "HMS_DAGSTER_PG_URL": Setting(None, text, "PostgreSQL for Dagster's own storage, read by Dagster from dagster.yaml"),
    "HMS_TIERS_START_DATE": Setting("2026-01-01", _iso_date, "the first day of the daily tier partitions"),
    "HMS_USER_SHARDS": Setting(4, _shard_count, "user shards the tier migration is partitioned by"),
    "HMS_EXECUTOR": Setting("multiprocess", _executor, "where the steps of runs execute: multiprocess or celery"),
    "HMS_CELERY_BROKER": Setting("amqp://guest:guest@127.0.0.1:5672//", text, "the Celery broker"),
    "HMS_CELERY_BACKEND": Setting("rpc://", text, "where Celery returns a step's events to its run"),
    "HMS_CELERY_QUEUE": Setting("hms", _stripped("hms"), "the queue of every step not tagged for another"),
    "HMS_LOCAL_MODEL": Setting("", text, "the causal LM behind hms-local ('' for the shipped SmolLM2)"),
    "HMS_LOCAL_MAX_ADAPTERS": Setting(4, positive_int, "adapters kept loaded in the local model"),
    "HMS_MAX_BODY_BYTES": Setting(16 * 1024 * 1024, positive_int, "largest HTTP request body hms serve reads"),
    "HMS_MAX_QUERY_BYTES": Setting(8 * 1024, positive_int, "longest search or context query, in UTF-8 bytes (longer: 422 on query)"),
    "HMS_READ_TIMEOUT_SECONDS": Setting(10.0, _positive_number, "how long hms serve waits for a request's headers, and for each part of its body"),
    "HMS_TENANT_RATE": Setting(200.0, _positive_number, "requests a second one tenant's keys may make on average (429 above)"),
    "HMS_TENANT_BURST": Setting(400, positive_int, "requests one tenant may make at once, above HMS_TENANT_RATE"),
    "HMS_TENANT_CONCURRENCY": Setting(2, positive_int, "search and context calls one tenant may have running (429 above)"),
    "HMS_RETRIEVAL_DEADLINE_SECONDS": Setting(30.0, _positive_number, "how long a search or context call may wait and run before it is answered 503"),
    "HMS_CHAT_WINDOW": Setting(2048, positive_int, "tokens a chat call is planned in"),
    "HMS_CHAT_CONTEXT_SHARE": Setting(0.5, _share, "share of HMS_CHAT_WINDOW the memory context may take"),
    "HMS_URL": Setting("http://127.0.0.1:8000", text, "the hms serve a RemoteMemory calls by default"),
    "HMS_API_KEY": Setting("", text, "the key hms mcp runs as, and RemoteMemory calls hms serve with"),
    "HMS_OPERATOR_TENANT": Setting("local", text, "the tenant whose admin keys read /metrics and the detailed /readyz (all tenants' figures)"),
    "HMS_INCLUDE_ASSISTANT_REPLIES": Setting(False, _flag, "concepts and LoRA candidate sets take the assistant's replies too"),
}
"""Per process setting: its default (when unset or empty), its parser and what it means."""


def setting(name: str) -> Any:
    """A process setting read now: its parsed value, or its default when unset or empty."""
    spec = SETTINGS[name]
    value = raw(name)
    return spec.parse(name, value) if value else spec.default


def environment_fields(resource_class: type, *, env_vars: bool = False) -> dict[str, Any]:
    """The fields of `resource_class` that the environment sets. Numbers are parsed now, so a bad
    value fails with the variable's name on either path."""
    import dagster as dg

    fields: dict[str, Any] = {}
    for field, name in VARIABLES[resource_class.__name__].items():
        value = raw(name)
        if not value:
            continue
        annotation = resource_class.model_fields[field].annotation
        if annotation is int and (resource_class.__name__, field) in COUNTED_FROM_ZERO:
            fields[field] = _number(name, value, int, "a whole number from 0")
        elif annotation is int:
            fields[field] = positive_int(name, value)
        elif annotation is float:
            fields[field] = _number(name, value, float, "a positive number")
        elif annotation is bool:
            fields[field] = _flag(name, value)
        else:
            fields[field] = dg.EnvVar(name) if env_vars else value
    return fields


def _number(name: str, text_value: str, kind: type, expected: str) -> Any:
    try:
        value = kind(text_value)
    except ValueError:
        value = -1
    if value < 0 or (kind is float and not value > 0):
        raise ValueError(f"{name} must be {expected}, got {text_value!r}")
    return value


def from_environment(resource_class: type[R], *, env_vars: bool = False, **fields: Any) -> R:
    """`resource_class` configured from the environment; `fields` (e.g. nested resources) added."""
    return resource_class(**environment_fields(resource_class, env_vars=env_vars), **fields)


def graph_store_configured() -> bool:
    return is_set("NEO4J_URI")
