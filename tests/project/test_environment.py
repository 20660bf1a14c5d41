"""Every documented variable configures the same resources through `from_env()` and through the
Dagster definitions, and one of each resource is wired."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from hms_jobs.definitions import defs
from hms_jobs.resources import resources
from hms_resources.common.environment import VARIABLES
from hms_resources.context.assembler import ContextAssembler
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.graph_store import GraphStore
from hms_resources.store.event_store import EventStore

README = Path(__file__).resolve().parents[2] / "README.md"
SETTINGS = {
    "HMS_DATABASE_URL": "postgresql://hms@127.0.0.1:5432/hms",
    "HMS_MAX_CONTENT_BYTES": "1234",
    "HMS_EMBEDDING_MODEL": "/models/minilm",
    "HMS_EMBEDDING_DEVICE": "cpu",
    "HMS_TOKENIZER": "/models/tokenizer",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    "NEO4J_URI": "bolt://127.0.0.1:7687",
    "NEO4J_USER": "memory",
    "NEO4J_DATABASE": "memories",
    "HMS_GRAPH_DIALECT": "falkordb",
    "HMS_GRAPH_BATCH_SIZE": "7",
}


def resolved(resource: dg.ConfigurableResource) -> dict:
    """A resource's fields as Dagster would resolve them: `EnvVar`s read now."""
    return {k: (v.get_value() if isinstance(v, dg.EnvVar) else v) for k, v in resource._get_non_default_public_field_values().items()}


def test_every_configuration_variable_in_the_readme_is_read():
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`((?:HMS|NEO4J|MLFLOW|DAGSTER)_[A-Z0-9_]+)`", table))
    mapped = {name for fields in VARIABLES.values() for name in fields.values()}
    source = "\n".join(p.read_text() for pattern in ("hms_*/**/*.py", "hms_*/**/*.yaml") for p in README.parent.glob(pattern))
    unread = sorted(name for name in documented - mapped if not re.search(rf"[\"' ]{name}[\"'\n]", source))
    assert unread == [], f"documented but never read: {unread}"
    assert mapped <= documented, f"read but undocumented: {sorted(mapped - documented)}"


def test_from_env_and_the_definitions_configure_the_same_resources(monkeypatch, tmp_path):
    for name, value in {**SETTINGS, "HMS_HOME": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    wired = resources()
    assert set(wired) == {"event_store", "embedder", "mlflow_tracking", "graph_store"}
    plain = {"event_store": EventStore.from_env(), "embedder": Embedder.from_env(),
             "mlflow_tracking": MlflowTracking.from_env(), "graph_store": GraphStore.from_env()}
    for key, resource in plain.items():
        assert resolved(wired[key]) == resolved(resource), key
    assert plain["event_store"].max_content_bytes == 1234 and plain["graph_store"].batch_size == 7
    assert plain["graph_store"].dialect == "falkordb" and plain["embedder"].device == "cpu"
    assembler = ContextAssembler.from_env()
    assert assembler.tokenizer == "/models/tokenizer" and assembler.event_store.database_url == SETTINGS["HMS_DATABASE_URL"]
    assert isinstance(wired["event_store"].database_url, dg.EnvVar), "a URL reaches Dagster by name, never by value"


@pytest.mark.parametrize("name", ["HMS_MAX_CONTENT_BYTES", "HMS_GRAPH_BATCH_SIZE"])
def test_a_bad_number_names_its_variable_on_both_paths(monkeypatch, name):
    monkeypatch.setenv(name, "lots")
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:7687")
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got 'lots'"):
        resources()
    with pytest.raises(ValueError, match=name):
        (EventStore if name == "HMS_MAX_CONTENT_BYTES" else GraphStore).from_env()


def test_the_definitions_share_one_event_store_and_wire_nothing_unused(monkeypatch):
    monkeypatch.delenv("NEO4J_URI", raising=False)
    repository = defs().get_repository_def()
    assert set(repository.get_top_level_resources()) - {"io_manager"} == {"event_store", "embedder", "mlflow_tracking"}
    requested = set()
    for asset in repository.asset_graph.assets_defs:
        requested |= set(asset.required_resource_keys)
    for sensor in repository.sensor_defs:
        requested |= set(sensor.required_resource_keys)
    assert requested - {"io_manager"} == {"event_store", "embedder", "mlflow_tracking"}
