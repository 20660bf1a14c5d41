"""The project as an operator meets it: `hms run`, the workspace, and a PostgreSQL-backed instance."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from hms_jobs.definitions import defs
from hms_jobs.instance import prepare_dagster_home
from hms_resources.datasets import SAMPLE_EVENTS
from tests.helpers import created

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hms_jobs.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ}, **kwargs)


def hms_run_json(*args: str, timeout: int = 300) -> tuple[dict, subprocess.CompletedProcess]:
    """`hms run --json`: the report is the last stdout line."""
    result = run_cli("run", "--json", *args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result


def last_complete_day() -> str:
    return (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()


def recorded(instance: dg.DagsterInstance, run_id: str) -> dict:
    """What the Dagster instance holds for a run: the assets it materialized and its check outcomes."""
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    ).records
    events = [r.event_log_entry.dagster_event for r in records]
    return {
        "materialized": {e.asset_key.to_user_string() for e in events if e.is_step_materialization},
        "checks": {(e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name):
                   e.asset_check_evaluation_data.passed for e in events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION},
    }


def assert_every_selected_asset_materialized_and_every_check_passed(report: dict) -> None:
    """Each run of the report succeeded, materialized every asset its job selects and passed every
    check defined on them, as the definitions say and the instance recorded; the report agrees."""
    definitions = defs()
    with dg.DagsterInstance.get() as instance:
        for run in report["runs"]:
            job = definitions.resolve_job_def(run["job"]).asset_layer
            selected = {key.to_user_string() for key in job.selected_asset_keys}
            checks = {(key.asset_key.to_user_string(), key.name) for key in job.asset_graph.asset_check_keys}
            found = recorded(instance, run["run_id"])
            assert instance.get_run_by_id(run["run_id"]).is_success and run["success"], run["job"]
            assert found["materialized"] == selected == set(run["materialized"]), run["job"]
            assert found["checks"] == dict.fromkeys(checks, True), f"{run['job']}: every check recorded and passed"
            assert {(c["asset"], c["check"]): c["passed"] for c in run["checks"]} == found["checks"]


def test_hms_run_ingests_the_sample_runs_every_job_and_says_where_to_look(hms_home):
    last_complete_days = {last_complete_day()}
    report, result = hms_run_json()
    last_complete_days.add(last_complete_day())
    assert [r["job"] for r in report["runs"]] == ["main_job", "tier_migration_job", "cold_archive_job", "lora_job"]
    assert report["runs"][1]["partition"] in last_complete_days, "the tier migration is for the last complete day"
    assert_every_selected_asset_materialized_and_every_check_passed(report)
    assert report["success"] and "make ui" in result.stderr, "under --json the lines for a person go to stderr"
    context = report["context"]
    assert 0 < context["token_count"] <= context["token_budget"] and len(context["items"]) >= 2
    assert {item["kind"] for item in context["items"]} <= {"memory", "concept_summary", "recent"}
    stats = json.loads(run_cli("stats", "--json").stdout)
    assert stats["users"] == 4 and stats["memories"]["live"] > 100 and stats["concepts"] > 5
    assert sum(stats["tiers"][t] for t in ("hot", "warm", "cold")) == stats["memories"]["live"]
    tiers_of_run = report["runs"][1]["materialized"]["memory_tiers"]
    assert sum(tiers_of_run[t] for t in ("hot", "warm", "cold")) == stats["memories"]["live"], "the run adds up its shards' counts"
    sample_events = sum(1 for line in SAMPLE_EVENTS.read_text().splitlines() if line.strip())
    accesses = stats["events"] - sample_events
    assert accesses > 0, "the sample context's accesses are recorded as events"
    again, _ = hms_run_json()
    assert (again["ingested"]["accepted"], again["ingested"]["duplicates"]) == (0, sample_events)
    assert again["runs"][0]["materialized"]["memories"]["events_applied"] == accesses
    assert_the_local_key_sees_the_sample(context["user"])


def assert_the_local_key_sees_the_sample(user: str) -> None:
    """The sample is the `local` tenant's: the admin key the first `hms serve` prints lists the user
    the run's context named, by the same name."""
    from hms_jobs.cli.serve import build_service, first_key
    from tests.serving.conftest import Running

    assert user in {"user-lena", "user-maya", "user-omar", "user-sam"}, "the run names the user as the API does"
    service = build_service()
    key = first_key(service.store)
    with Running(service, warm=False) as running, running.client(key) as api:
        listed = api.get("/v1/memories", params={"user_id": user, "limit": 500})
        lena = api.get("/v1/memories", params={"user_id": "user-lena"})
    service.close()
    assert listed.status_code == 200 and len(listed.json()["memories"]) > 10, listed.text[:500]
    assert lena.status_code == 200 and lena.json()["memories"], lena.text[:500]


@pytest.mark.timeout(2460)
def test_hms_run_approve_reports_the_gates_verdict_on_the_samples_set(hms_home):
    """The sample's largest set is Maya's facts about her dog Biscuit, six distinct ones: it is trained,
    registered and judged, and the run says the gate's verdict in one line and its figures in the next."""
    report, result = hms_run_json("--approve", "1", timeout=2400)
    [set_id] = report["approved"]
    assert set_id.startswith("local/user-maya/concept-")
    assert [r["job"] for r in report["runs"]] == ["main_job", "tier_migration_job", "cold_archive_job", "lora_job", "lora_job"]
    assert_every_selected_asset_materialized_and_every_check_passed(report)
    trained = report["runs"][-1]["materialized"]
    assert trained["lora_training_data"]["datasets"] == 1 and trained["lora_training_data"]["too_few_facts"] == 0
    assert trained["trained_adapters"]["trained"] == 1 and report["not_trained"] == {}
    [verdict] = report["gate_verdicts"]
    assert verdict["set_id"] == set_id and verdict["verdict"].startswith("gate passed: " if verdict["passed"] else "gate failed: ")
    assert {"teacher_paraphrase_recall", "paraphrase_recall", "base_paraphrase_recall", "tokens_saved"} <= verdict["figures"].keys()
    assert f"LoRA {set_id}: {verdict['verdict']}\n  {verdict['figures_line']}\n" in result.stderr
    [model] = json.loads(run_cli("lora", "list", "--json").stdout)
    [version] = model["versions"]
    assert model["set_id"] == set_id and version["gate"].endswith("passed" if verdict["passed"] else verdict["verdict"].removeprefix("gate "))
    assert ("champion" in version["aliases"]) == verdict["promoted"] == ("adapter" in report)
    statuses = {s["set_id"]: s["status"] for s in json.loads(run_cli("curate", "list", "--json").stdout)["sets"]}
    assert statuses[set_id] == "approved" and list(statuses.values()).count("approved") == 1


def test_hms_run_on_the_users_own_data_tells_a_person_what_ran(hms_home, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps(created("me", "m1", "I keep my notes in Obsidian")) + "\n")
    result = run_cli("run", "--data", str(data))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"ingested {data}: ") for line in lines)
    assert any(line.startswith("main_job run ") and line.endswith(": succeeded") for line in lines)
    assert any(line.startswith("  materialized memories: ") for line in lines)
    assert "make ui" in lines[-1], "without --json the report is for a person, on stdout"
    stats = json.loads(run_cli("stats", "--json").stdout)
    assert (stats["users"], stats["memories"]["live"]) == (1, 1)


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
