"""The Dagster definitions as a reviewer reads them: a change to an asset's group, dependencies,
partitions or automation, to a check, job, schedule or sensor shows up as a diff of
`definitions_snapshot.json`, to be accepted on purpose with HMS_UPDATE_SNAPSHOT=1."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from hms_jobs.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")
UPDATE_VARIABLE = "HMS_UPDATE_SNAPSHOT"


def condition_summary(condition: dg.AutomationCondition | None) -> str | None:
    """A condition by its label (`eager`, `on_cron(0 3 * * 0, UTC)`), else its operator over its parts."""
    if condition is None:
        return None
    return condition.get_label() or f"{condition.name}({', '.join(condition_summary(c) for c in condition.children)})"


def describe(definitions: dg.Definitions) -> dict:
    graph = definitions.resolve_asset_graph()
    checks: dict[str, list[dict]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), []).append({"name": key.name, "blocking": graph.get_check_spec(key).blocking})
    assets = {
        key.to_user_string(): {
            "group": node.group_name,
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "partitions": str(node.partitions_def) if node.partitions_def else None,
            "automation": condition_summary(node.automation_condition),
            "checks": sorted(checks.get(key.to_user_string(), []), key=lambda c: c["name"]),
        }
        for key, node in ((key, graph.get(key)) for key in graph.get_all_asset_keys())
    }
    jobs = {
        job.name: {
            "assets": sorted(key.to_user_string() for key in job.asset_layer.selected_asset_keys),
            "checks": sorted(f"{key.asset_key.to_user_string()}:{key.name}" for key in job.asset_layer.asset_graph.asset_check_keys),
            "partitions": str(job.partitions_def) if job.partitions_def else None,
        }
        for job in definitions.resolve_all_job_defs()
        if not job.name.startswith("__")
    }
    schedules = {
        schedule.name: {"cron": schedule.cron_schedule, "timezone": schedule.execution_timezone, "job": schedule.job_name,
                        "default_status": schedule.default_status.value}
        for schedule in definitions.schedules
    }
    sensors = {
        sensor.name: {"jobs": sorted(target.job_name for target in sensor.targets),
                      "assets": str(sensor.asset_selection) if sensor.asset_selection is not None else None,
                      "default_status": sensor.default_status.value, "minimum_interval_seconds": sensor.minimum_interval_seconds}
        for sensor in definitions.sensors
    }
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def current_snapshot(monkeypatch: pytest.MonkeyPatch) -> str:
    """Both shapes the definitions take: without a graph store, and with one (which adds `neo4j_graph`)."""
    variants = {}
    monkeypatch.delenv("NEO4J_URI", raising=False)
    variants["default"] = describe(defs())
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:7687")
    variants["with_graph_store"] = describe(defs())
    return json.dumps(variants, indent=2, sort_keys=True) + "\n"


def test_the_definitions_match_the_reviewed_snapshot(hms_home, monkeypatch):
    """On a fresh home (partitions from the default start date), whatever `.hms` the checkout holds."""
    monkeypatch.delenv("HMS_TIERS_START_DATE", raising=False)
    monkeypatch.delenv("HMS_USER_SHARDS", raising=False)
    current = current_snapshot(monkeypatch)
    if os.environ.get(UPDATE_VARIABLE) == "1":
        SNAPSHOT.write_text(current)
        pytest.skip(f"{UPDATE_VARIABLE}=1: wrote {SNAPSHOT}; review its diff before committing it")
    update = f"if the change is intended: {UPDATE_VARIABLE}=1 .venv/bin/python -m pytest {Path(__file__).resolve().relative_to(ROOT)}"
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing; {update}"
    expected = SNAPSHOT.read_text()
    if current != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), current.splitlines(keepends=True),
                                            fromfile=f"{SNAPSHOT.name} (reviewed)", tofile="definitions now"))
        pytest.fail(f"the Dagster definitions changed:\n{diff}\n{update}", pytrace=False)


FIRST_START = """
from pathlib import Path
from hms_jobs.definitions import defs
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created

store = EventStore.from_env()
ingest_records(store, [created("u1", "m1", minutes=0)])
store.close()
defs().resolve_asset_graph()
MlflowTracking.from_env().experiment_id(Path(store.home))
"""


def test_a_fresh_home_loads_the_definitions_and_creates_mlflow_tables_without_a_warning_or_log_line(hms_home):
    """What a first `hms run` or `hms ui` does beside the runs: any warning fails (`-W error`), and
    nothing at all reaches stderr (MLflow announces each table it creates unless quieted)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HMS_TIERS_START_DATE", "MLFLOW_TRACKING_URI", "PYTHONWARNINGS")}
    done = subprocess.run([sys.executable, "-W", "error", "-c", FIRST_START], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    assert (hms_home / "mlflow" / "mlflow.db").is_file()
