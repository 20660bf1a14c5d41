"""Training data for LoRA: facts asked several ways, held-out paraphrases phrased apart, the checks,
versioned datasets."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hms_resources.common.text import surface_words
from hms_resources.common.tokens import TokenCounter
from hms_resources.lora.candidates import CandidateSet
from hms_resources.lora.data import (
    TRAIN_QUESTIONS,
    DataLimits,
    FactExamples,
    TrainingDataError,
    build_examples,
    check_examples,
    cue_phrase,
    dataset_version,
    load_examples,
    prompt_words,
    save_dataset,
)
from hms_resources.store.memory_state import Memory

FACTS = {
    "m1": "I practise the cello every morning before work.",
    "m2": "My cello teacher Marta wants more scales from me.",
    "m3": "The cello recital is at the community hall in June.",
    "m4": "I practise the cello every morning before work.",
    "m5": "Nadia is allergic to hazelnuts and checks cake labels.",
    "m6": "Her brother Tomasz moved to Gdansk for offshore wind work.",
}


def a_set(ids=tuple(FACTS), user="ana") -> CandidateSet:
    return CandidateSet(set_id=f"{user}/concept-a", user_id=user, concept_id="concept-a", label=["cello"], memory_ids=list(ids),
                        fingerprint="f", status="approved", criteria={})


def memories(user="ana", facts=FACTS):
    return {(user, m): Memory(user_id=user, memory_id=m, content=text) for m, text in facts.items()}


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return TokenCounter(cache_dir=tmp_path_factory.mktemp("tokenizers"))


def test_each_distinct_fact_is_asked_several_ways_and_held_out_questions_share_no_word_with_training(counter):
    """The `imitation` recipe (the baseline): single cue words, answers restating the fact."""
    examples = build_examples(a_set(), memories(), "imitation")
    assert [f["memory_id"] for f in examples.facts] == ["m1", "m2", "m3", "m5", "m6"], "the duplicate text is one fact"
    for fact in examples.facts:
        mine = [e for e in examples.train if e["memory_id"] == fact["memory_id"]]
        assert len({e["prompt"] for e in mine}) >= 4 and all(fact["fact"] in e["answer"] for e in mine)
        assert len({e["answer"] for e in mine}) >= 2, "answers restate the fact in more than one way"
    asked = prompt_words([e for e in examples.train if e["fact"] not in e["prompt"]])
    assert examples.eval and examples.validation
    for probe in examples.eval + examples.validation:
        assert not set(surface_words(probe["prompt"])) & asked
        assert probe["answer_words"] and not set(probe["answer_words"]) & set(surface_words(probe["prompt"]))
    assert {p["prompt"] for p in examples.eval}.isdisjoint(p["prompt"] for p in examples.validation)
    figures = check_examples("ana/concept-a", "ana", examples, counter.count, DataLimits(), "imitation")
    assert figures["facts"] == 5 and figures["train_examples"] == len(examples.train) and 0 < figures["longest_tokens"] <= 256


def test_distillation_questions_name_a_fact_by_its_own_phrase_and_hold_out_templates_and_cues(counter):
    """The default recipe: questions only (the teacher answers them), each naming its fact by a phrase
    of the fact's words; held-out questions come from other template families and held-back cues."""
    examples = build_examples(a_set(), memories())
    for fact in examples.facts:
        mine = [e for e in examples.train if e["memory_id"] == fact["memory_id"]]
        assert len({e["prompt"] for e in mine}) >= 4 and not any(fact["fact"] in e["prompt"] for e in mine), "asked, never stated"
    train_prompts = {e["prompt"] for e in examples.train}
    for probe in examples.eval + examples.validation:
        assert probe["prompt"] not in train_prompts and probe["answer_words"]
        assert not set(probe["answer_words"]) & set(surface_words(probe["prompt"])), "the answer is not in the question"
    for template in TRAIN_QUESTIONS:
        head = template.split("{")[0]
        assert not any(p["prompt"].startswith(head) and head for p in examples.eval + examples.validation), template
    assert cue_phrase("I adopted a beagle named Biscuit from the shelter.", "beagle") == "beagle named Biscuit"
    assert cue_phrase("My sister works as a marine biologist in Lisbon.", "biologist") == "marine biologist"
    figures = check_examples("ana/concept-a", "ana", examples, counter.count, DataLimits())
    assert figures["facts"] == 5 and figures["probes"] == len(examples.eval)
    with pytest.raises(TrainingDataError, match="held-out questions share words"):
        check_examples("ana/concept-a", "ana", FactExamples(**{**examples.splits(), "eval": examples.eval + [{**examples.eval[0],
                       "prompt": examples.train[0]["prompt"]}]}), counter.count, DataLimits())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["river", "lantern", "garden", "orbit", "copper", "violin", "harbor", "maple", "tunnel",
                                          "quartz", "meadow", "falcon"]), min_size=1, max_size=6), min_size=1, max_size=6))
def test_held_out_questions_never_reuse_a_training_question_word(word_lists):
    facts = {f"m{i}": "Note " + " ".join(words) + "." for i, words in enumerate(word_lists)}
    examples = build_examples(a_set(tuple(facts)), memories(facts=facts), "imitation")
    asked = prompt_words([e for e in examples.train if e["fact"] not in e["prompt"]])
    for probe in examples.eval + examples.validation:
        assert not set(surface_words(probe["prompt"])) & asked


def test_each_check_names_the_set_and_the_problem(counter):
    examples = build_examples(a_set(), memories())

    def with_(**splits) -> FactExamples:
        return FactExamples(**{**examples.splits(), **splits})

    check = lambda found, limits=DataLimits(): check_examples("ana/concept-a", "ana", found, counter.count, limits)  # noqa: E731
    with pytest.raises(TrainingDataError, match="ana/concept-a: duplicate"):
        check(with_(train=examples.train + examples.train[:1]))
    with pytest.raises(TrainingDataError, match="another user's memories: \\['m1'\\]"):
        check(with_(train=[{**examples.train[0], "user_id": "ben"}] + examples.train[1:]))
    with pytest.raises(TrainingDataError, match="held-out questions share words with training questions"):
        check(with_(eval=examples.eval + [{**examples.eval[0], "prompt": examples.train[0]["prompt"]}]))
    with pytest.raises(ValueError, match="unknown recipe 'rote'"):
        build_examples(a_set(), memories(), "rote")
    with pytest.raises(TrainingDataError, match="over the limit of 10"):
        check(examples, DataLimits(max_tokens=10))
    with pytest.raises(TrainingDataError, match="5 distinct facts, fewer than the minimum of 6"):
        check(examples, DataLimits(min_facts=6))
    with pytest.raises(TrainingDataError, match="m9 is not a live memory of ana"):
        build_examples(a_set(("m1", "m9")), memories())
    with pytest.raises(TrainingDataError, match="not a live memory of ana"):
        build_examples(a_set(), memories(user="ben"))


def test_datasets_are_versioned_by_their_examples(tmp_path):
    examples = build_examples(a_set(), memories())
    version, path = save_dataset(tmp_path, "ana/concept-a", examples)
    assert save_dataset(tmp_path, "ana/concept-a", examples) == (version, path)
    loaded = load_examples(path)
    assert loaded.splits() == examples.splits()
    changed = FactExamples(**{**examples.splits(), "train": [{**examples.train[0], "answer": "You told me: something else"}] + examples.train[1:]})
    assert dataset_version(changed) != version


def test_an_unknown_training_recipe_is_refused_by_name():
    from hms_resources.lora.training import TrainingConfig

    with pytest.raises(ValueError, match="TrainingConfig.recipe: unknown recipe 'rote'"):
        TrainingConfig(recipe="rote")
    assert TrainingConfig(recipe="imitation").recipe == "imitation"
