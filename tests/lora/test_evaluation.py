"""The measuring instruments of the promotion gate, on the real base model: forced choice, leakage and
general perplexity must measure what they claim before any adapter is judged by them."""

import pytest

from hms_resources.lora.evaluation import (
    DEPARTURE_SIMILARITY,
    carries_fact,
    departs,
    forced_choice,
    general_corpus,
    leakage,
    perplexity,
    recalls,
)
from hms_resources.lora.training import load_base

FACTS = [
    "Nadia practises the cello every morning before work.",
    "Nadia is allergic to hazelnuts and always checks cake labels.",
    "Her brother Tomasz moved to Gdansk to work on offshore wind turbines.",
    "Nadia keeps her tax receipts in a green folder in the hallway drawer.",
    "She cycles to the observatory on Tuesdays to volunteer at the telescope.",
    "She is reading a biography of the astronomer Henrietta Leavitt.",
]
UNRELATED = "My neighbour repaired the fence last weekend."


@pytest.fixture(scope="module")
def base():
    return load_base()


def test_forced_choice_finds_the_fact_given_in_context_and_is_at_chance_without_it(base):
    model, tokenizer = base
    probes = [{"prompt": "What do you know about me?", "fact": fact} for fact in FACTS]
    told = [f"The user told you this: {fact}" for fact in FACTS]
    assert forced_choice(model, tokenizer, probes, FACTS, told) >= 5 / 6
    unrelated = [f"The user told you this: {UNRELATED}"] * len(FACTS)
    assert forced_choice(model, tokenizer, probes, FACTS, unrelated) <= 1 / len(FACTS), "nothing tells them apart: one guess fits one probe"
    assert forced_choice(model, tokenizer, probes, FACTS) <= 1 / len(FACTS)


def test_leakage_counts_replies_that_carry_a_fact_or_depart_from_the_base():
    base = ["The capital of France is Paris.", "Boil the egg for eight minutes, then cool it in cold water."]
    assert leakage(base, base, FACTS) == 0.0
    assert leakage(["The capital of France is Paris, and you practise the cello every morning.", base[1]], base, FACTS) == 0.5
    assert leakage([base[0], "Bloating can be treated by drinking plenty of water."], base, FACTS) == 0.5
    assert not departs("The capital of France is Paris, a city.", base[0]) and departs("Lyon.", base[0])
    assert 0 < DEPARTURE_SIMILARITY < 1
    assert carries_fact("You go to the observatory on Tuesdays.", FACTS[4]) is False
    assert carries_fact("You cycle to the observatory to volunteer at the telescope on Tuesdays.", FACTS[4])
    assert recalls("You keep them in a green folder.", ["folder", "green", "receipts"]) and not recalls("No idea.", ["folder", "green"])


def test_general_perplexity_reads_shipped_text_and_rises_when_the_text_is_scrambled(base):
    model, tokenizer = base
    corpus = general_corpus()
    assert len(corpus) >= 10 and all(len(text) > 500 for text in corpus)
    plain = perplexity(model, tokenizer, corpus)
    scrambled = perplexity(model, tokenizer, [" ".join(sorted(text.split())) for text in corpus])
    assert 2 < plain < 100 and scrambled > 3 * plain
