"""Every documented variable configures the same resources through `from_env()` and through the
Dagster definitions, and one of each resource is wired."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from hms_jobs.definitions import defs
from hms_jobs.resources import resources
from hms_resources.common.environment import SETTINGS as SETTINGS_MAP
from hms_resources.common.environment import VARIABLES
from hms_resources.context.assembler import ContextAssembler
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.graph_store import GraphStore
from hms_resources.store.event_store import EventStore

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_READERS = {
    "hms_resources/common/environment.py",
    "hms_jobs/instance.py",
}
"""The map; `instance.py` writes DAGSTER_HOME for Dagster."""

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


def configuration_tables() -> str:
    """The configuration table (a `Configuration` section up to the next `##` heading), in the README or
    the docs pages, wherever it now lives."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    sections = [re.split(r"^#{1,2} Configuration\n", p.read_text(), maxsplit=1, flags=re.M) for p in pages if p.exists()]
    return "\n".join(parts[1].split("\n## ", 1)[0] for parts in sections if len(parts) == 2)


def test_every_configuration_variable_in_the_docs_is_in_the_one_map_and_the_map_is_documented():
    documented = set(re.findall(r"`((?:HMS|NEO4J|MLFLOW|DAGSTER)_[A-Z0-9_]+)`", configuration_tables()))
    mapped = {name for fields in VARIABLES.values() for name in fields.values()} | set(SETTINGS_MAP)
    assert sorted(documented - mapped) == [], "documented but not in hms_resources/common/environment.py"
    assert sorted(mapped - documented) == [], "read but undocumented"


def test_the_environment_is_read_in_the_one_map_only():
    source = {p: p.read_text() for pkg in ("hms_resources", "hms_assets", "hms_jobs") for p in (ROOT / pkg).rglob("*.py")}
    readers = sorted(str(p.relative_to(ROOT)) for p, text in source.items() if re.search(r"os\.environ\.get|os\.getenv|environ\[\"", text))
    assert [r for r in readers if r not in ALLOWED_READERS] == []


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
