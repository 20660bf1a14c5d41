"""The `memories` asset, its checks and the new-events sensor, run through Dagster on real stores."""

import dagster as dg
import sqlalchemy as sa

from hms_assets import domain_assets
from hms_jobs.definitions import defs
from hms_jobs.sensors import new_events_sensor
from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.datasets.synthetic import generate_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import parse_event
from hms_resources.store.ingest import ingest_path, ingest_records
from hms_resources.store.memory_state import replay_events
from tests.helpers import created, event

ASSETS = domain_assets(["memory_store"])


def materialize(store: EventStore, instance: dg.DagsterInstance, **config) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"memories": {"config": config}}} if config else None
    return dg.materialize(
        ASSETS,
        resources={"event_store": store},
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def latest_metadata(instance: dg.DagsterInstance) -> dict:
    record = instance.get_latest_materialization_event(dg.AssetKey("memories"))
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_memories_replays_the_sample_data_and_passes_its_checks(store):
    ingest_path(store, SAMPLE_EVENTS)
    with dg.instance_for_test() as instance:
        result = materialize(store, instance)
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {
            "live_memories_have_content": True,
            "forgotten_memories_keep_no_content": True,
            "memory_counts_match_store": True,
        }
        meta = latest_metadata(instance)
    stats = store.stats()["memories"]
    assert (meta["live"], meta["archived"], meta["forgotten"]) == (stats["live"], stats["archived"], stats["forgotten"])
    assert meta["events_applied"] == store.stats()["events"]
    assert meta["live_memories_by_type"].startswith("![Live memories by type](data:image/png;base64,")
    assert {r.data["memory_type"] for r in meta["memory_types"].records} >= {"fact", "preference"}
    table = {m.key: m for m in store.read_memories(include_forgotten=True)}
    assert table == store.replay()


def test_a_second_run_applies_only_the_events_after_the_cursor(store):
    records = list(generate_events(users=3, sessions_per_user=10, seed=5))
    assert len(records) > 150
    ingest_records(store, records[:100])
    with dg.instance_for_test() as instance:
        assert materialize(store, instance).success
        first = latest_metadata(instance)
        ingest_records(store, records[100:])
        assert materialize(store, instance).success
        second = latest_metadata(instance)
        assert materialize(store, instance).success
        third = latest_metadata(instance)
    assert (first["cursor_from"], first["cursor"], first["events_applied"]) == (0, 100, 100)
    assert (second["cursor_from"], second["events_applied"]) == (100, len(records) - 100)
    assert (third["events_applied"], third["memories_changed"]) == (0, 0)
    table = {m.key: m for m in store.read_memories(include_forgotten=True)}
    assert table == store.replay()
    assert {k: m.content for k, m in table.items()} == {
        k: m.content for k, m in replay_events(parse_event(r) for r in records).items()
    }


def test_full_replay_rebuilds_a_damaged_table(store):
    ingest_records(store, [created("u1", "m1", "tea"), created("u1", "m2", "coffee", 1)])
    with dg.instance_for_test() as instance:
        assert materialize(store, instance).success
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE memories SET content = NULL WHERE memory_id = 'm1'"))
        failed = materialize(store, instance, full_replay=False)
        assert not failed.success
        assert {c.check_name: c.passed for c in failed.get_asset_check_evaluations()}["live_memories_have_content"] is False
        rebuilt = materialize(store, instance, full_replay=True)
        assert all(c.passed for c in rebuilt.get_asset_check_evaluations())
    assert store.load_memories([("u1", "m1")])[("u1", "m1")].content == "tea"


def test_checks_fail_when_a_forgotten_memory_keeps_content(store):
    ingest_records(store, [created("u1", "m1", "secret"), event("forgotten", "u1", "m1", 1)])
    with dg.instance_for_test() as instance:
        assert materialize(store, instance).success
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE events SET erased = false"))
        result = materialize(store, instance)
    assert not result.success
    evaluations = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert evaluations["forgotten_memories_keep_no_content"].passed is False
    assert evaluations["forgotten_memories_keep_no_content"].metadata["unerased_events"].value == 2


def test_sensor_requests_one_run_per_new_sequence_and_skips_when_caught_up(store):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"event_store": store})
        assert isinstance(new_events_sensor.evaluate_tick(context).skip_message, str)
        ingest_records(store, [created("u1", "m1"), created("u1", "m2", minutes=1)])
        context = dg.build_sensor_context(instance=instance, resources={"event_store": store})
        tick = new_events_sensor.evaluate_tick(context)
        assert [r.run_key for r in tick.run_requests] == ["memories-through-2"]
        assert tick.cursor == "2"
        again = new_events_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources={"event_store": store})
        )
        assert again.run_requests == [] and "no new events after sequence 2" in again.skip_message
        materialize(store, instance)
        fresh = new_events_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"event_store": store})
        )
        assert fresh.run_requests == []


def test_definitions_load_with_the_asset_checks_jobs_and_sensor():
    definitions = defs()
    assert definitions.resolve_job_def("main_job") is not None
    assert definitions.resolve_sensor_def("new_events_sensor").job_name == "memories_job"
    specs = {spec.key.to_user_string() for spec in definitions.resolve_all_asset_specs()}
    assert "memories" in specs


def test_a_memories_run_makes_the_semantic_layer_due_through_automation(store):
    from hms_resources.semantic.embedder import Embedder

    assets = domain_assets(["memory_store", "semantic"])
    definitions = dg.Definitions(assets=assets, resources={"event_store": store, "embedder": Embedder()})
    ingest_records(store, [created("u1", "m1", "tea"), created("u1", "m2", "coffee", 1)])
    with dg.instance_for_test() as instance:
        before = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
        assert before.get_num_requested(dg.AssetKey("embeddings")) == 0
        dg.materialize(ASSETS, resources={"event_store": store}, instance=instance)
        result = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=before.cursor)
    assert result.get_num_requested(dg.AssetKey("embeddings")) == 1
    assert result.get_num_requested(dg.AssetKey("memories")) == 0
    sensors = {s.name: s.default_status for s in defs().get_repository_def().sensor_defs}
    assert sensors["hms_automation_sensor"] == dg.DefaultSensorStatus.RUNNING



def purge_metadata(instance: dg.DagsterInstance) -> dict:
    record = instance.get_latest_materialization_event(dg.AssetKey("forget_purge"))
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_a_forget_is_purged_in_the_same_run_by_the_forget_purge_asset(store):
    ingest_records(store, [created("u1", "m1", "secret"), event("forgotten", "u1", "m1", 1)])
    with dg.instance_for_test() as instance:
        assert materialize(store, instance).success
        purged = purge_metadata(instance)
    assert purged["memories_forgotten"] == 1 and "purged_tier_reasons" in purged


def test_a_failing_purge_fails_forget_purge_and_leaves_memories_materialized(store, monkeypatch):
    import hms_assets.memory_store.forget_purge as forget_purge

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(forget_purge, "purge_forgotten", fail)
    ingest_records(store, [created("u1", "m1", "secret"), event("forgotten", "u1", "m1", 1)])
    with dg.instance_for_test() as instance:
        result = materialize(store, instance)
        assert latest_metadata(instance)["memories_forgotten"] == 1
    assert not result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [dg.AssetKey("memories")]
