"""What launches LoRA work: the training sensor, the weekly re-evaluation, and curation from the CLI."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._utils.schedules import cron_string_iterator

from hms_jobs.cli import main
from hms_jobs.schedules import weekly_registry_evaluation
from hms_jobs.sensors import lora_training_sensor
from hms_resources.common.files import write_json
from hms_resources.lora.adapters import ADAPTERS_MANIFEST, sets_due_for_training
from hms_resources.lora.candidates import CandidateSet, CurationError, changed_share, content_digest, load_curation, save_candidate_sets
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created

SET = "ana/concept-a"


def a_set(texts: dict[str, str], set_id: str = SET) -> CandidateSet:
    user, concept = set_id.split("/")
    return CandidateSet(set_id=set_id, user_id=user, concept_id=concept, label=["cello"], memory_ids=sorted(texts),
                        fingerprint=content_digest(json.dumps(texts, sort_keys=True)), status="pending", criteria={},
                        member_digests={m: content_digest(t) for m, t in texts.items()})


TEXTS = {f"m{i}": f"cello fact {i}" for i in range(5)}


@pytest.fixture
def store(tmp_path):
    found = EventStore(hms_home=str(tmp_path))
    yield found
    found.close()


def tick(store: EventStore, cursor: str | None = None):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"event_store": store})
        return lora_training_sensor.evaluate_tick(context)


def trained_on(store: EventStore, texts: dict[str, str]) -> None:
    write_json(store.home / "lora" / ADAPTERS_MANIFEST, {SET: {"run_id": "r1", "member_digests": a_set(texts).member_digests}})


def test_changed_share_counts_added_removed_and_reworded_members():
    old = {"a": "1", "b": "2", "c": "3", "d": "4"}
    assert changed_share(old, old) == 0.0
    assert changed_share(old, {**old, "d": "changed"}) == 0.25
    assert changed_share(old, {"a": "1", "b": "2", "c": "3", "e": "5"}) == 0.4
    assert changed_share({}, {}) == 0.0


def test_the_sensor_waits_for_approval_then_trains_a_new_set_once(store):
    save_candidate_sets(store.home / "lora", [a_set(TEXTS)])
    assert "no approved candidate set" in tick(store).skip_message
    (store.home / "curation.json").write_text(json.dumps({"approved_sets": [SET]}))
    result = tick(store)
    [request] = result.run_requests
    assert lora_training_sensor.job_name == "lora_job" and request.tags["hms/lora_sets"] == SET
    assert tick(store).run_requests[0].run_key == request.run_key, "the same sets give the same run key, so Dagster runs them once"


def test_the_sensor_retrains_only_when_enough_of_a_set_changed(store):
    (store.home / "curation.json").write_text(json.dumps({"approved_sets": [SET]}))
    trained_on(store, TEXTS)
    save_candidate_sets(store.home / "lora", [a_set(TEXTS)])
    assert tick(store).skip_message
    save_candidate_sets(store.home / "lora", [a_set({**TEXTS, "m5": "a sixth fact"})])
    assert tick(store).skip_message, "one new member of six is below the 20% threshold"
    save_candidate_sets(store.home / "lora", [a_set({**TEXTS, "m0": "reworded", "m5": "a sixth fact"})])
    [request] = tick(store).run_requests
    assert sets_due_for_training(store.home)[0]["reason"] == "33% of its members changed since its adapter was trained"
    (store.home / "curation.json").write_text(json.dumps({"rejected_sets": [SET]}))
    assert tick(store).skip_message, "a rejected set is never trained"


def test_a_malformed_curation_file_fails_the_tick_naming_the_file(store):
    save_candidate_sets(store.home / "lora", [a_set(TEXTS)])
    (store.home / "curation.json").write_text('{"approved_sets": "ana/concept-a"}')
    with pytest.raises(CurationError) as failure:
        tick(store)
    assert str(failure.value) == f"{store.home / 'curation.json'}: approved_sets must be a list of set ids (user/concept)"


def ticks(schedule: dg.ScheduleDefinition, start: datetime, end: datetime) -> list[datetime]:
    """The times Dagster's scheduler would tick `schedule` in [start, end)."""
    found = []
    for at in cron_string_iterator(start.timestamp(), schedule.cron_schedule, schedule.execution_timezone):
        if at >= end:
            return found
        found.append(at)


def test_the_weekly_schedule_re_evaluates_the_registry_once_a_week_early_on_monday():
    from hms_jobs.definitions import defs

    start = datetime(2026, 12, 2, 15, 17, tzinfo=timezone.utc)
    found = ticks(weekly_registry_evaluation, start, start + timedelta(weeks=4))
    assert len(found) == 4 and all(b - a == timedelta(weeks=1) for a, b in zip(found, found[1:])), found
    assert all(at.weekday() == 0 and at.utcoffset() == timedelta(0) for at in found), f"Mondays in UTC: {found}"
    for at in found:
        [request] = weekly_registry_evaluation.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=at)).run_requests
        assert request.run_key == f"lora-evaluation-{at.date().isoformat()}", "one run per Monday, however often the tick is retried"
    job = defs().resolve_job_def("lora_evaluation_job")
    assert weekly_registry_evaluation.job_name == job.name
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == {"lora_registry", "adapter_comparison"}


def test_hms_curate_approves_rejects_and_resets_sets_and_memories(store, monkeypatch):
    monkeypatch.setenv("HMS_HOME", str(store.home))
    monkeypatch.delenv("HMS_DATABASE_URL", raising=False)
    ingest_records(store, [created("ana", "m1", "cello on Mondays")])
    save_candidate_sets(store.home / "lora", [a_set(TEXTS), a_set(TEXTS, "ana/concept-b")])
    runner = CliRunner()
    assert runner.invoke(main, ["curate", "approve", SET]).exit_code == 0
    assert runner.invoke(main, ["curate", "reject", "ana/concept-b", "--tenant", "", "--memory", "ana", "m1"]).exit_code == 0
    curation = load_curation(store.home)
    assert curation.approved_sets == {SET} and curation.rejected_sets == {"ana/concept-b"}
    assert curation.rejected_memories == {("ana", "m1")}
    listed = json.loads(runner.invoke(main, ["curate", "list", "--json"]).output)
    assert [(s["set_id"], s["status"]) for s in listed["sets"]] == [(SET, "approved"), ("ana/concept-b", "rejected")]
    assert runner.invoke(main, ["curate", "reject", SET]).exit_code == 0
    assert load_curation(store.home).approved_sets == set(), "a decision replaces the opposite one"
    assert runner.invoke(main, ["curate", "reset", SET, "ana/concept-b", "--tenant", "", "--memory", "ana", "m1"]).exit_code == 0
    assert load_curation(store.home) == load_curation(store.home / "nowhere")
    unknown = runner.invoke(main, ["curate", "approve", "ana/concept-typo"])
    assert unknown.exit_code == 1 and "no candidate set 'ana/concept-typo'" in unknown.output
    missing = runner.invoke(main, ["curate", "reject", "--tenant", "", "--memory", "ana", "m404"])
    assert missing.exit_code == 1 and "no memory ana/m404 in the store" in missing.output
    assert runner.invoke(main, ["curate", "approve"]).exit_code == 2
    assert load_curation(store.home) == load_curation(store.home / "nowhere"), "a refused command changes nothing"
