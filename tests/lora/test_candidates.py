"""LoRA candidate sets: the criteria, curation, and the asset on a real store."""

from datetime import datetime, timezone

import numpy as np
import pytest

from hms_resources.lora.candidates import (
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
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.semantic.concepts import Concept
from hms_resources.store.memory_state import Memory

AS_OF = datetime(2026, 4, 30, tzinfo=timezone.utc)
OLD = "2026-03-01T09:00:00.000000Z"
NEW = "2026-04-29T09:00:00.000000Z"


def memory(memory_id: str, user: str = "ana", *, changed: str = OLD, accesses: int = 2, confidence=None, content="likes tea",
           **fields) -> Memory:
    return Memory(user_id=user, memory_id=memory_id, content=f"{content} {memory_id}", created_at=changed,
                  last_modified_at=changed, access_count=accesses, confidence=confidence, **fields)


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


def test_the_assistants_replies_and_questions_are_left_out_but_a_named_speaker_is_the_users_side():
    turn = {"memory_type": "conversation_turn"}
    memories = [
        memory("m1"), memory("m2"),
        memory("said", content="I adopted a beagle", created_by="Caroline", **turn),
        memory("reply", content="Happy to help with that", created_by="assistant", **turn),
        memory("asked", content="What should I cook tonight", created_by="user", **turn),
    ]
    memories[-1].content += "?"
    importance = {m.key: 0.9 for m in memories}
    ids = [m.memory_id for m in memories]
    [found] = select_candidate_sets(memories, [concept(ids)], importance, CandidateCriteria(), AS_OF)
    assert found.memory_ids == ["m1", "m2", "said"]
    assert found.left_out == {"the assistant's words": 1, "a question": 1}
    [found] = select_candidate_sets(memories, [concept(ids)], importance, CandidateCriteria(include_assistant_replies=True), AS_OF)
    assert found.memory_ids == ["m1", "m2", "reply", "said"] and found.left_out == {"a question": 1}
    assert found.criteria["include_assistant_replies"] is True


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


def test_an_unreachable_tracking_server_fails_clearly(tmp_path, monkeypatch):
    from hms_resources.lora.tracking import TrackingUnavailable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracking = MlflowTracking(tracking_uri="http://user:secret@127.0.0.1:9")
    with pytest.raises(TrackingUnavailable, match=r"http://user:\*\*\*@127.0.0.1:9 is unreachable") as caught:
        tracking.experiment_id(tmp_path)
    assert "secret" not in str(caught.value)


STATED = ["I practise the cello every morning before work.", "My cello teacher wants more scales from me.",
          "The cello recital is at the community hall.", "I bought new strings for my cello."]
ASKED = ["Which cello scales should I practise this week?", "When is my cello recital?", "What strings suit my cello?"]
FILLER = ["I'm not sure what you're looking for, but I'm happy to help.",
          "I'm not sure what you're looking for. Tell me a bit more and I'll help.",
          "Sorry, I'm not sure what you're looking for; I'm happy to help though."]
RELAXED = {"stable_days": 0.0, "min_importance": 0.0, "min_accesses": 0, "min_concept_cohesion": 0.0}
"""Every other criterion open, so what leaves a memory out is whose words it is."""


def test_captured_assistant_filler_joins_no_concept_and_no_candidate_set_unless_configured(tmp_path, monkeypatch):
    import dagster as dg

    from hms_assets import domain_assets
    from hms_jobs.homes import materialize_for_context
    from hms_resources.lora.candidates import load_candidate_sets
    from hms_resources.memory.exchange import Exchange, exchange_records
    from hms_resources.semantic.concepts import load_concepts
    from hms_resources.semantic.embedder import Embedder
    from hms_resources.store.event_store import EventStore
    from hms_resources.store.ingest import ingest_records
    from tests.helpers import at, created

    records = [created("maya", f"fact-{i}", text, minutes=i, memory_type="fact") for i, text in enumerate(STATED)]
    for i, (query, reply) in enumerate(zip(ASKED, FILLER)):
        records += exchange_records(Exchange(user_id="maya", call_id=f"call-{i}", query=query, reply=reply, session_id="chat"),
                                    at=at(10 + i))
    store, embedder = EventStore(hms_home=str(tmp_path)), Embedder()
    assert ingest_records(store, records).accepted == len(records)
    replies = {f"chat-call-{i}-assistant" for i in range(3)}
    questions = {f"chat-call-{i}-user" for i in range(3)}

    def whose_words(include: str) -> tuple[set[str], list]:
        monkeypatch.setenv("HMS_INCLUDE_ASSISTANT_REPLIES", include)
        materialize_for_context(store, embedder, log=lambda _m: None)
        with dg.DagsterInstance.ephemeral() as instance:
            assert dg.materialize(domain_assets(), selection=dg.AssetSelection.assets("lora_candidate_sets"), instance=instance,
                                  resources={"event_store": store, "embedder": embedder, "mlflow_tracking": MlflowTracking()},
                                  run_config={"ops": {"lora_candidate_sets": {"config": RELAXED}}}).success
        members = {m for c in load_concepts(store, "maya") for m in c.member_ids}
        return members, load_candidate_sets(store.home / "lora")

    try:
        members, sets = whose_words("false")
        assert not members & replies and members >= {f"fact-{i}" for i in range(4)}
        [stated] = sets
        assert stated.memory_ids == [f"fact-{i}" for i in range(4)] and stated.left_out == {"a question": 3}

        members, sets = whose_words("true")
        assert members >= replies
        assert any(set(s.memory_ids) >= replies for s in sets)
        assert not questions & {m for s in sets for m in s.memory_ids}, "a question is never a fact to train"
    finally:
        store.close()


def test_the_run_config_overrides_the_setting_and_a_bad_setting_names_its_variable(monkeypatch):
    from hms_assets.lora.assets import CandidateSetsConfig
    from hms_assets.semantic.concepts import ConceptsConfig

    monkeypatch.setenv("HMS_INCLUDE_ASSISTANT_REPLIES", "yes")
    assert ConceptsConfig().to_domain().include_assistant_replies is True
    assert CandidateSetsConfig(include_assistant_replies=False).to_domain().include_assistant_replies is False
    monkeypatch.setenv("HMS_INCLUDE_ASSISTANT_REPLIES", "maybe")
    with pytest.raises(ValueError, match="HMS_INCLUDE_ASSISTANT_REPLIES must be true or false"):
        CandidateSetsConfig().to_domain()
    monkeypatch.delenv("HMS_INCLUDE_ASSISTANT_REPLIES")
    assert CandidateSetsConfig().to_domain().include_assistant_replies is False
