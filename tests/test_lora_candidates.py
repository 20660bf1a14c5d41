"""LoRA candidate sets: the criteria, curation, and the asset on a real store."""

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from hms_resources.concepts import Concept
from hms_resources.lora_candidates import (
    APPROVED,
    PENDING,
    REJECTED,
    CandidateCriteria,
    Curation,
    CurationError,
    load_curation,
    save_curation,
    select_candidate_sets,
    set_id_for,
)
from hms_resources.memory_state import Memory
from hms_resources.mlflow_tracking import MlflowTracking

AS_OF = datetime(2026, 4, 30, tzinfo=timezone.utc)
OLD = "2026-03-01T09:00:00.000000Z"
NEW = "2026-04-29T09:00:00.000000Z"


def memory(memory_id: str, user: str = "ana", *, changed: str = OLD, accesses: int = 2, confidence=None, content="likes tea") -> Memory:
    return Memory(user_id=user, memory_id=memory_id, content=f"{content} {memory_id}", created_at=changed,
                  last_modified_at=changed, access_count=accesses, confidence=confidence)


def concept(members: list[str], user: str = "ana", cohesion: float = 0.8, concept_id: str = "concept-a") -> Concept:
    return Concept(concept_id=concept_id, user_id=user, label=["tea", "drinks"], summary="", summary_member_ids=[],
                   member_ids=members, centroid=np.zeros(3, dtype=np.float32), size=len(members), cohesion=cohesion,
                   first_seen=OLD, last_seen=OLD, member_tokens=0, summary_tokens=0)


def test_each_criterion_leaves_out_its_memories_and_says_why():
    memories = [
        memory("m1"), memory("m2"), memory("m3"),
        memory("fresh", changed=NEW),
        memory("unsure", confidence=0.2),
        memory("unread", accesses=0),
        memory("minor"),
    ]
    importance = {("ana", m.memory_id): 0.9 for m in memories} | {("ana", "minor"): 0.1}
    [found] = select_candidate_sets(memories, [concept([m.memory_id for m in memories] + ["gone"])], importance, CandidateCriteria(), AS_OF)
    assert found.memory_ids == ["m1", "m2", "m3"]
    assert found.left_out == {"not stable": 1, "not confident": 1, "not accessed": 1, "not important": 1, "not live": 1}
    assert found.status == PENDING and found.set_id == "ana/concept-a"
    assert found.criteria["stable_days"] == 7.0


def test_small_or_loose_concepts_give_no_set():
    memories = [memory(f"m{i}") for i in range(4)]
    importance = {m.key: 0.9 for m in memories}
    ids = [m.memory_id for m in memories]
    assert select_candidate_sets(memories, [concept(ids, cohesion=0.1)], importance, CandidateCriteria(), AS_OF) == []
    assert select_candidate_sets(memories, [concept(ids[:2])], importance, CandidateCriteria(min_concept_size=2), AS_OF) == []


def test_curation_rejects_and_approves_memories_and_sets():
    memories = [memory(f"m{i}") for i in range(5)] + [memory("quiet", accesses=0)]
    importance = {m.key: 0.9 for m in memories}
    ids = [m.memory_id for m in memories]
    curation = Curation(rejected_memories={("ana", "m0")}, approved_memories={("ana", "quiet")}, approved_sets={"ana/concept-a"})
    [found] = select_candidate_sets(memories, [concept(ids)], importance, CandidateCriteria(), AS_OF, curation)
    assert "m0" not in found.memory_ids and "quiet" in found.memory_ids
    assert found.left_out == {"rejected by curation": 1}
    assert found.status == APPROVED
    curation.approved_sets.clear()
    curation.rejected_sets.add("ana/concept-a")
    [found] = select_candidate_sets(memories, [concept(ids)], importance, CandidateCriteria(), AS_OF, curation)
    assert found.status == REJECTED


def test_the_fingerprint_follows_the_members_and_their_words():
    memories = [memory(f"m{i}") for i in range(3)]
    importance = {m.key: 0.9 for m in memories}
    ids = [m.memory_id for m in memories]
    first = select_candidate_sets(memories, [concept(ids)], importance, CandidateCriteria(), AS_OF)[0].fingerprint
    again = select_candidate_sets(memories, [concept(ids)], importance, CandidateCriteria(), AS_OF)[0].fingerprint
    memories[1] = memory("m1", content="likes coffee")
    reworded = select_candidate_sets(memories, [concept(ids)], importance, CandidateCriteria(), AS_OF)[0].fingerprint
    assert first == again != reworded


def test_sets_never_mix_users():
    memories = [memory(f"m{i}") for i in range(3)] + [memory(f"m{i}", user="ben") for i in range(3)]
    importance = {m.key: 0.9 for m in memories}
    found = select_candidate_sets(memories, [concept(["m0", "m1", "m2"]), concept(["m0", "m1", "m2"], user="ben")], importance,
                                  CandidateCriteria(), AS_OF, Curation(rejected_memories={("ben", "m0"), ("ben", "m1")}))
    assert [(s.user_id, s.memory_ids) for s in found] == [("ana", ["m0", "m1", "m2"])]


def test_the_curation_file_round_trips_and_a_bad_one_names_the_entry(tmp_path):
    assert load_curation(tmp_path) == Curation()
    curation = Curation(approved_sets={set_id_for("ana", "c1")}, rejected_memories={("ana", "m2")})
    save_curation(tmp_path, curation)
    assert load_curation(tmp_path) == curation
    (tmp_path / "curation.json").write_text('{"rejected_memories": [["ana", "m1"], ["ana"]]}')
    with pytest.raises(CurationError, match=r"curation.json: rejected_memories\[1\]"):
        load_curation(tmp_path)
    (tmp_path / "curation.json").write_text('{"approved_sets": ["a/c"], "rejected_sets": ["a/c"]}')
    with pytest.raises(CurationError, match="both approved and rejected"):
        load_curation(tmp_path)


def test_the_asset_selects_curated_sets_from_a_real_store(tmp_path):
    import dagster as dg

    from hms_assets import concepts, embeddings, graph, lora, tiers
    from hms_assets import memories as memories_domain
    from hms_jobs.evaluation import materialize_for_context
    from hms_resources.embedder import Embedder
    from hms_resources.event_store import EventStore
    from hms_resources.ingest import ingest_records
    from hms_resources.lora_candidates import load_candidate_sets
    from tests.helpers import created, event

    cello = ["I practise the cello every morning before work.", "My cello teacher wants more scales from me.",
             "The cello recital is at the community hall.", "I bought new strings for my cello.",
             "Cello lessons are on Thursday evenings."]
    records = [created("ana", f"c{i}", text, minutes=i * 60) for i, text in enumerate(cello)]
    records += [created("ana", f"o{i}", text, minutes=600 + i * 60) for i, text in enumerate(
        ["My sister lives in Porto.", "I am allergic to peanuts.", "Our dog is called Biscuit."])]
    records += [event("accessed", "ana", f"c{i}", 30 * 24 * 60, access_method="context") for i in range(5)]
    store = EventStore(hms_home=str(tmp_path))
    ingest_records(store, records)
    embedder = Embedder()
    materialize_for_context(store, embedder, log=lambda _m: None)
    (tmp_path / "curation.json").write_text('{"rejected_memories": [["ana", "c4"]]}')
    criteria = {"min_importance": 0.0, "min_concept_cohesion": 0.0, "min_concept_size": 3, "stable_days": 7.0}
    domains = [memories_domain, embeddings, concepts, graph, tiers, lora]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            dg.load_assets_from_modules(domains), selection=dg.AssetSelection.assets("lora_candidate_sets"),
            resources={"event_store": store, "embedder": embedder, "mlflow_tracking": MlflowTracking()}, instance=instance,
            run_config={"ops": {"lora_candidate_sets": {"config": criteria}}},
        )
    assert result.success
    [found] = load_candidate_sets(tmp_path / "lora")
    assert found.user_id == "ana" and found.status == PENDING
    assert set(found.memory_ids) <= {"c0", "c1", "c2", "c3"} and len(found.memory_ids) >= 3
    assert found.left_out.get("rejected by curation") == 1
    metadata = result.asset_materializations_for_node("lora_candidate_sets")[0].metadata
    assert metadata["sets"].value == 1 and metadata["pending"].value == 1

    def run_lora(steps: int = 12) -> dg.ExecuteInProcessResult:
        with dg.DagsterInstance.ephemeral() as instance:
            return dg.materialize(
                [*dg.load_assets_from_modules(domains), *dg.load_asset_checks_from_modules([lora])],
                selection=dg.AssetSelection.groups("lora"),
                resources={"event_store": store, "embedder": embedder, "mlflow_tracking": MlflowTracking()}, instance=instance,
                run_config={"ops": {"lora_candidate_sets": {"config": criteria}, "lora_training_data": {"config": {"min_examples": 4}},
                                    "trained_adapters": {"config": {"steps": steps, "batch_size": 6, "max_new_tokens": 24}},
                                    "lora_registry": {"config": {"max_new_tokens": 24}}}},
            )

    pending = run_lora()
    assert pending.asset_materializations_for_node("lora_training_data")[0].metadata["awaiting_curation"].value == 1
    assert not (tmp_path / "lora" / "datasets").exists()
    (tmp_path / "curation.json").write_text(f'{{"rejected_memories": [["ana", "c4"]], "approved_sets": ["{found.set_id}"]}}')
    approved = run_lora()
    metadata = approved.asset_materializations_for_node("lora_training_data")[0].metadata
    assert metadata["datasets"].value == 1 and metadata["failed_checks"].value == 0
    assert all(check.passed for check in approved.get_asset_check_evaluations())
    manifest = json.loads((tmp_path / "lora" / "training_data.json").read_text())
    [entry] = manifest["datasets"].values()
    assert sorted(entry["memory_ids"]) == sorted(found.memory_ids) and "c4" not in entry["memory_ids"]

    trained = approved.asset_materializations_for_node("trained_adapters")[0].metadata
    assert trained["trained"].value == 1
    [adapter] = json.loads((tmp_path / "lora" / "adapters.json").read_text()).values()
    run = MlflowTracking().client(tmp_path).get_run(adapter["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["hms.set_id"] == found.set_id and run.data.tags["hms.dataset_version"] == entry["version"]
    assert run.data.params["base_model"] == "SmolLM2-135M-Instruct" and run.data.params["steps"] == "12"
    assert {"loss", "perplexity", "fact_recall", "base_perplexity", "base_fact_recall"} <= set(run.data.metrics)
    assert run.data.metrics["perplexity"] < run.data.metrics["base_perplexity"]
    assert (tmp_path / "lora" / "adapters" / adapter["run_id"] / "adapter_config.json").exists()
    from hms_resources.lora_registry import CHAMPION, alias_version

    champion = alias_version(MlflowTracking().client(tmp_path), found.set_id, CHAMPION)
    assert champion.run_id == adapter["run_id"] and champion.tags["hms.dataset_version"] == entry["version"]
    assert "first adapter" in champion.tags["hms.promoted_because"]
    again = run_lora()
    assert again.asset_materializations_for_node("trained_adapters")[0].metadata["trained"].value == 0
    assert "already champion" in again.asset_materializations_for_node("lora_registry")[0].metadata["registry"].value
    retrained = run_lora(steps=4)
    assert retrained.asset_materializations_for_node("trained_adapters")[0].metadata["trained"].value == 1
    table = retrained.asset_materializations_for_node("lora_registry")[0].metadata["registry"].value
    assert f"| {found.set_id} | 1 | 2 |" in table, table
    client = MlflowTracking().client(tmp_path)
    assert str(alias_version(client, found.set_id, "challenger").version) == "2"
    champion_now = str(alias_version(client, found.set_id, CHAMPION).version)
    assert champion_now == ("2" if "beats the champion" in table else "1")
    store.close()


def test_an_unreachable_tracking_server_fails_clearly(tmp_path, monkeypatch):
    from hms_resources.mlflow_tracking import TrackingUnavailable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracking = MlflowTracking(tracking_uri="http://user:secret@127.0.0.1:9")
    with pytest.raises(TrackingUnavailable, match=r"http://\*\*\*@127.0.0.1:9 is unreachable") as caught:
        tracking.experiment_id(tmp_path)
    assert "secret" not in str(caught.value)
