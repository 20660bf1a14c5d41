"""The project as an operator meets it: `hms run`, the workspace, and a PostgreSQL-backed instance."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from hms_jobs.definitions import defs
from hms_jobs.instance import prepare_dagster_home
from hms_resources.datasets import SAMPLE_EVENTS
from tests.helpers import created

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hms_jobs.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ}, **kwargs)


def test_hms_run_ingests_the_sample_runs_the_main_job_and_says_where_to_look(hms_home):
    result = run_cli("run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "main_job run" in result.stdout and "succeeded" in result.stdout
    for asset in ("memories", "embeddings", "concept_clusters", "graph_edges", "access_predictor", "memory_tiers", "tier_migrations",
                  "cold_archive", "lora_candidate_sets", "lora_training_data", "trained_adapters", "lora_registry",
                  "adapter_comparison"):
        assert f"materialized {asset}:" in result.stdout
    checks = [line for line in result.stdout.splitlines() if line.startswith("  check ")]
    assert len(checks) == 10 and all(line.endswith(": passed") for line in checks)
    assert "make ui" in result.stdout
    context = result.stdout.split("context for ", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "/256 tokens" in context[0] and len(context) > 2
    assert {line.split()[0] for line in context[1:]} <= {"memory", "concept_summary", "recent"}
    stats = json.loads(run_cli("stats", "--json").stdout)
    assert stats["users"] == 4 and stats["memories"]["live"] > 100 and stats["concepts"] > 5
    assert sum(stats["tiers"][t] for t in ("hot", "warm", "cold")) == stats["memories"]["live"]
    sample_events = sum(1 for line in SAMPLE_EVENTS.read_text().splitlines() if line.strip())
    accesses = stats["events"] - sample_events
    assert accesses > 0, "the sample context's accesses are recorded as events"
    again = run_cli("run")
    assert '"accepted":0,"duplicates":%d' % sample_events in again.stdout
    assert "'events_applied': %d" % accesses in again.stdout


def test_hms_run_approve_trains_registers_and_compares_an_adapter_on_the_sample(hms_home):
    result = run_cli("run", "--approve", "1", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    [approved] = [line for line in result.stdout.splitlines() if line.startswith("approved 1 LoRA candidate set")]
    set_id = approved.rsplit(": ", 1)[1]
    assert "materialized trained_adapters: {'trained': 1, 'adapters': 1" in result.stdout
    assert "'promoted': 1, 'champions': 1" in result.stdout
    comparison = result.stdout.split("adapter comparison (the same probes per set):\n", 1)[1]
    rows = {line.split(" | ")[1]: line.split(" | ") for line in comparison.splitlines() if line.startswith(f"| {set_id} |")}
    assert set(rows) == {"base", "v1"} and "champion" in rows["v1"][2]
    assert float(rows["v1"][3]) > float(rows["base"][3]), "the adapter recalls more of its facts than the base"
    [choice] = [line for line in result.stdout.splitlines() if line.startswith("adapter for ")]
    assert f"hms-lora-{set_id.replace('/', '-')}@1 (similarity" in choice, "Context.adapter names the champion for its concept"
    listed = json.loads(run_cli("lora", "list", "--json").stdout)
    assert [m["set_id"] for m in listed] == [set_id] and "champion" in listed[0]["versions"][0]["aliases"]
    assert json.loads(run_cli("curate", "list", "--json").stdout)["sets"][0]["status"] == "approved"
    assert f"| {set_id} | v1 |" in run_cli("lora", "compare").stdout


def test_hms_run_on_the_users_own_data(hms_home, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps(created("me", "m1", "I keep my notes in Obsidian")) + "\n")
    result = run_cli("run", "--data", str(data))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'live': 1" in result.stdout


def test_workspace_validates_with_the_dagster_cli(hms_home):
    prepare_dagster_home()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_main_job_runs_on_a_postgresql_backed_dagster_instance(hms_home, postgres_url, monkeypatch):
    monkeypatch.setenv("HMS_DAGSTER_PG_URL", postgres_url)
    monkeypatch.setenv("HMS_DATABASE_URL", postgres_url)
    home = prepare_dagster_home(postgres=True)
    assert "postgres_url" in (home / "dagster.yaml").read_text()
    from hms_resources.store.event_store import EventStore
    from hms_resources.store.ingest import ingest_records

    ingest_records(EventStore.from_env(), [created("u1", "m1", "likes sailing")])
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = defs().resolve_job_def("main_job").execute_in_process(instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).is_success
        assert instance.get_latest_materialization_event(dg.AssetKey("memories")) is not None
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 1
        assert conn.execute(sa.text("select count(*) from memories")).scalar() == 1
    engine.dispose()
