"""Training data for LoRA: examples and probes from a candidate set, their checks, versioned datasets."""

import pytest

from hms_resources.common.tokens import TokenCounter
from hms_resources.lora.candidates import CandidateSet
from hms_resources.lora.data import (
    DataLimits,
    TrainingDataError,
    build_examples,
    check_examples,
    dataset_version,
    save_dataset,
)
from hms_resources.store.memory_state import Memory

FACTS = {
    "m1": "I practise the cello every morning before work.",
    "m2": "My cello teacher Marta wants more scales from me.",
    "m3": "The cello recital is at the community hall in June.",
    "m4": "I practise the cello every morning before work.",
}


def a_set(ids=("m1", "m2", "m3", "m4"), user="ana") -> CandidateSet:
    return CandidateSet(set_id=f"{user}/concept-a", user_id=user, concept_id="concept-a", label=["cello"], memory_ids=list(ids),
                        fingerprint="f", status="approved", criteria={})


def memories(user="ana"):
    return {(user, m): Memory(user_id=user, memory_id=m, content=text) for m, text in FACTS.items()}


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return TokenCounter(cache_dir=tmp_path_factory.mktemp("tokenizers"))


def test_examples_state_and_ask_each_distinct_memory_and_probes_are_phrased_apart(counter):
    train, probes = build_examples(a_set(), memories())
    assert [p["memory_id"] for p in probes] == ["m1", "m2", "m3"]
    assert len(train) == 9
    assert {e["prompt"] for e in train}.isdisjoint(p["prompt"] for p in probes)
    for probe in probes:
        assert FACTS[probe["memory_id"]] in probe["answer"]
        assert probe["answer_words"] and not set(probe["answer_words"]) & set(probe["prompt"].lower().strip(".").split())
    figures = check_examples("ana/concept-a", "ana", train, probes, counter.count, DataLimits())
    assert figures["train_examples"] == 9 and 0 < figures["longest_tokens"] <= 256


def test_each_check_names_the_set_and_the_problem(counter):
    train, probes = build_examples(a_set(), memories())
    with pytest.raises(TrainingDataError, match="ana/concept-a: duplicate"):
        check_examples("ana/concept-a", "ana", train + train[:1], probes, counter.count, DataLimits())
    stranger = [{**train[0], "user_id": "ben"}] + train[1:]
    with pytest.raises(TrainingDataError, match="another user's memories: \\['m1'\\]"):
        check_examples("ana/concept-a", "ana", stranger, probes, counter.count, DataLimits())
    leaked = probes + [{**probes[0], "prompt": train[0]["prompt"]}]
    with pytest.raises(TrainingDataError, match="probes phrased as training prompts"):
        check_examples("ana/concept-a", "ana", train, leaked, counter.count, DataLimits())
    with pytest.raises(TrainingDataError, match="over the limit of 10"):
        check_examples("ana/concept-a", "ana", train, probes, counter.count, DataLimits(max_tokens=10))
    with pytest.raises(TrainingDataError, match="fewer than the minimum of 10"):
        check_examples("ana/concept-a", "ana", train, probes, counter.count, DataLimits(min_examples=10))
    with pytest.raises(TrainingDataError, match="m9 is not a live memory of ana"):
        build_examples(a_set(("m1", "m9")), memories())
    with pytest.raises(TrainingDataError, match="not a live memory of ana"):
        build_examples(a_set(), memories(user="ben"))


def test_datasets_are_versioned_by_their_examples(tmp_path):
    from datasets import load_from_disk

    train, probes = build_examples(a_set(), memories())
    version, path = save_dataset(tmp_path, "ana/concept-a", train, probes)
    assert save_dataset(tmp_path, "ana/concept-a", train, probes) == (version, path)
    loaded = load_from_disk(str(path))
    assert loaded["train"].num_rows == 9 and loaded["eval"].num_rows == 3
    assert loaded["eval"][0]["answer_words"] == probes[0]["answer_words"]
    changed = [{**train[0], "answer": "You told me: something else"}] + train[1:]
    assert dataset_version(changed, probes) != version
