"""Forget is total: a unique marker planted in a memory (content, metadata, context, an access query,
an archive reason, a rejected line) is found under the HMS home before, and nowhere after `hms forget`
and a run of every job: not in any file (the store, its WAL, Parquet, LoRA datasets, MLflow, the
Dagster instance's run history) nor in any PostgreSQL table."""

import io
import json

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hms_assets import domain_assets
from hms_assets.tiers.partitions import all_shards_of_days
from hms_jobs.cli import main
from hms_resources.lora.adapters import load_champions, lora_dir
from hms_resources.lora.candidates import load_candidate_sets
from hms_resources.lora.registry import registered_versions
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records, ingest_stream
from tests.helpers import created, event, marker_counts

MARKER = "Zyqvexmarker"
CELLO = ["I practise the cello every morning before work at the Zyqvexmarker hall.", "My cello teacher wants more scales from me.",
         "The cello recital is at the community hall.", "I bought new strings for my cello.", "Cello lessons are on Thursday evenings."]
OTHER = ["My sister lives in Porto.", "I am allergic to peanuts.", "Our dog is called Biscuit."]
LORA = {  # the gate held open: these tests are about forgetting, and a 4-step adapter never passes it
    "lora_candidate_sets": {"config": {"min_importance": 0.0, "min_concept_cohesion": 0.0, "min_concept_size": 3, "stable_days": 7.0}},
    "lora_training_data": {"config": {"min_facts": 4}},
    "trained_adapters": {"config": {"steps": 4, "batch_size": 6, "max_new_tokens": 16}},
    "lora_registry": {"config": {"max_new_tokens": 16, "recall_margin": -1.0, "teacher_share": 0.0, "max_routed_leakage": 1.0,
                                 "max_perplexity_change_off": 100.0, "max_perplexity_change": 100.0}},
    "adapter_comparison": {"config": {"max_new_tokens": 16}},
}


def planted_events() -> list[dict]:
    records = [created("ana", f"c{i}", text, minutes=i * 60) for i, text in enumerate(CELLO)]
    records[0]["payload"].update(metadata={"venue": MARKER}, context={"custom": f"near {MARKER}"})
    records += [created("ana", f"o{i}", text, minutes=600 + i * 60) for i, text in enumerate(OTHER)]
    records += [created("ben", f"b{i}", text, minutes=i * 60) for i, text in enumerate(CELLO[1:])]
    records += [event("accessed", "ana", f"c{i}", 30 * 24 * 60, access_method="context", query=f"what about {MARKER if i == 0 else 'music'}?")
                for i in range(5)]
    records.append(event("archived", "ana", "o0", 31 * 24 * 60, reason=f"moved it to {MARKER} storage"))
    return records


def run_every_job(store: EventStore, embedder: Embedder, instance: dg.DagsterInstance) -> None:
    """The main job's assets, a tier migration, the cold archive, then the LoRA assets."""
    assets = domain_assets()
    resources = {"event_store": store, "embedder": embedder, "mlflow_tracking": MlflowTracking()}
    partitioned = dg.AssetSelection.assets("memory_tiers", "tier_migrations")
    steps = [
        (dg.AssetSelection.all() - partitioned - dg.AssetSelection.assets("cold_archive") - dg.AssetSelection.groups("lora"), None, {}),
        (partitioned, "2026-04-01", {"memory_tier_migration": {"config": {"hot_threshold": 0.99, "warm_threshold": 0.98}}}),
        (dg.AssetSelection.assets("cold_archive"), None, {}),
        (dg.AssetSelection.groups("lora"), None, LORA),
    ]
    for selection, partition, ops in steps:
        result = dg.materialize(assets, selection=selection, tags=all_shards_of_days(partition) if partition else None, resources=resources, instance=instance,
                                run_config={"ops": ops})
        assert result.success


def dagster_instance(home):
    """The instance under the HMS home, as `hms run` has it, so its run history is searched too."""
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return dg.instance_for_test(temp_dir=str(home / "dagster"))


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.mark.timeout(1500)
def test_forget_removes_the_text_from_every_file_and_retires_the_adapter_trained_on_it(hms_home, embedder, seed_base_replies):
    seed_base_replies(hms_home, LORA["trained_adapters"]["config"]["max_new_tokens"])
    store = EventStore(hms_home=str(hms_home))
    ingest_records(store, planted_events())
    bad = json.dumps(event("updated", "ana", "c0", 5, content=f"{MARKER} again", importance="very")).encode()
    ingest_stream(store, io.BytesIO(bad + b"\n"), source="late.jsonl", rejects_path=hms_home / "rejects" / "late.rejects.jsonl")
    with dagster_instance(hms_home) as instance:
        run_every_job(store, embedder, instance)
        [ana_set] = [s for s in load_candidate_sets(lora_dir(hms_home)) if s.user_id == "ana"]
        assert "c0" in ana_set.memory_ids
        (hms_home / "curation.json").write_text(json.dumps({"approved_sets": [ana_set.set_id]}))
        run_every_job(store, embedder, instance)
        [trained] = load_champions(hms_home)
        before = sorted(marker_counts(hms_home, MARKER))
        assert any(f.startswith("hms.db") for f in before), before
        assert any(f.startswith("lora/datasets/") for f in before), before
        assert any(f.startswith("rejects/") for f in before), before

        runner = CliRunner()
        for memory in ("c0", "o0"):
            result = runner.invoke(main, ["forget", "--tenant", "", "ana", memory])
            assert result.exit_code in (0, 2), result.output
        assert not any(f.startswith("lora/datasets/") for f in sorted(marker_counts(hms_home, MARKER)))
        assert load_champions(hms_home) == [], "the adapter trained on the memory is not served any more"
        client = MlflowTracking().client(hms_home)
        assert trained["run_id"] not in {v.run_id for v in registered_versions(client, ana_set.set_id)}
        assert client.get_run(trained["run_id"]).info.lifecycle_stage == "deleted"

        run_every_job(store, embedder, instance)
    store.close()
    assert sorted(marker_counts(hms_home, MARKER)) == []
    verified = CliRunner().invoke(main, ["forget", "--tenant", "", "--verify", "--json", "ana", "c0"])
    checks = json.loads(verified.output)
    assert verified.exit_code == 0, [c for c in checks if not c["clean"]]
    places = {c["place"] for c in checks}
    assert {"event log: payloads", "memories table", "concepts table", "embedding index", "cold archive (Parquet)",
            "LoRA dataset versions", "Context.adapter (champions.json)", "MLflow registry", "rejected lines", "database files"} <= places
    assert all(c["clean"] for c in checks)
    retrained = load_champions(hms_home)
    assert trained["run_id"] not in {c["run_id"] for c in retrained}


def test_forget_is_clean_everywhere_with_no_job_run(hms_home, embedder):
    store = EventStore(hms_home=str(hms_home))
    ingest_records(store, planted_events())
    with dagster_instance(hms_home) as instance:
        dg.materialize(domain_assets(["memory_store", "semantic"]), selection=["memories", "embeddings", "concept_clusters"], resources={"event_store": store, "embedder": embedder}, instance=instance)
    result = CliRunner().invoke(main, ["forget", "--tenant", "", "--json", "ana", "c0"])
    remains = {c["place"]: c["detail"] for c in json.loads(result.stdout_bytes.decode().splitlines()[-1]) if not c["clean"]}
    assert (result.exit_code, remains) == (0, {})
    unknown = CliRunner().invoke(main, ["forget", "--tenant", "", "ana", "nope"])
    assert unknown.exit_code == 1 and "no memory 'nope' of user 'ana'" in unknown.output
    store.close()


@pytest.mark.postgres
def test_forget_leaves_the_text_in_no_postgresql_table(hms_home, postgres_url, monkeypatch, embedder):
    monkeypatch.setenv("HMS_DATABASE_URL", postgres_url)
    store = EventStore(database_url=postgres_url, hms_home=str(hms_home))
    ingest_records(store, planted_events())
    assets = domain_assets(["memory_store", "semantic"])
    with dg.instance_for_test() as instance:
        dg.materialize(assets, resources={"event_store": store, "embedder": embedder}, instance=instance)
        assert tables_holding(store, MARKER)
        assert CliRunner().invoke(main, ["forget", "--tenant", "", "ana", "c0"]).exit_code in (0, 2)
        assert CliRunner().invoke(main, ["forget", "--tenant", "", "ana", "o0"]).exit_code in (0, 2)
        dg.materialize(assets, resources={"event_store": store, "embedder": embedder}, instance=instance)
    assert tables_holding(store, MARKER) == []
    store.close()


def tables_holding(store: EventStore, text: str) -> list[str]:
    found = []
    with store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                if any(text.lower() in (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).lower() for v in row):
                    found.append(table)
                    break
    return found


def test_rejected_lines_naming_a_forgotten_memory_lose_their_text_and_nothing_else(hms_home):
    from hms_resources.privacy.forget import purge_forgotten
    from hms_resources.store.rejects import ERASED_LINE

    store = EventStore(hms_home=str(hms_home))
    ingest_records(store, [created("ana", "c0", f"{MARKER} secret"), event("forgotten", "ana", "c0", 1)])
    rejects = hms_home / "rejects" / "late.rejects.jsonl"
    rejects.parent.mkdir(parents=True)
    named = {"source": "late.jsonl", "line": 1, "reason": "bad", "raw": json.dumps(event("updated", "ana", "c0", 2, content=MARKER))}
    other = {"source": "late.jsonl", "line": 3, "reason": "bad", "raw": json.dumps(event("updated", "ana", "c9", 2, content="kept"))}
    rejects.write_bytes(b"\n".join([json.dumps(named).encode(), b"edited by hand", json.dumps(other).encode()]) + b"\n")
    report = purge_forgotten(store)
    first, middle, last = rejects.read_bytes().splitlines()
    assert json.loads(first) == {**named, "raw": ERASED_LINE}
    assert (middle, json.loads(last)) == (b"edited by hand", other)
    assert report.rejected_lines == 1 and sorted(marker_counts(hms_home, MARKER)) == []
    store.close()
