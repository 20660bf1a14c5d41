"""The measuring instruments of the promotion gate, on the real base model: forced choice, leakage and
general perplexity must measure what they claim before any adapter is judged by them."""

import pytest

from hms_resources.lora.evaluation import (
    DEPARTURE_NATS,
    carries_fact,
    forced_choice,
    general_corpus,
    leakage,
    perplexity,
    recalls,
)
from hms_resources.lora.training import load_base
from tests.helpers import PERSONAL_FACTS

FACTS = PERSONAL_FACTS
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


def test_leakage_counts_replies_that_carry_a_fact_or_make_the_base_reply_unlikely():
    base = ["The capital of France is Paris.", "Boil the egg for eight minutes, then cool it in cold water."]
    assert leakage(base, [1.0, 1.2], [1.0, 1.2], FACTS) == 0.0
    assert leakage(["The capital of France is Paris, and Nadia, you play the cello every morning before work.", base[1]], [1.0, 1.2], [1.0, 1.2],
                   FACTS) == 0.5
    assert leakage(base, [1.0, 1.2 + DEPARTURE_NATS + 0.01], [1.0, 1.2], FACTS) == 0.5
    assert leakage(base, [0.2, 1.2 + DEPARTURE_NATS - 0.01], [1.0, 1.2], FACTS) == 0.0, "more likely, or barely less, is no departure"
    assert carries_fact("You go to the observatory on Tuesdays.", FACTS[4]) is False
    assert carries_fact("You cycle to the observatory to volunteer at the telescope on Tuesdays.", FACTS[4])
    assert recalls("You keep them in a green folder.", ["folder", "green", "receipts"]) and not recalls("No idea.", ["folder", "green"])


def test_reply_losses_score_the_base_replies_it_generated_as_likely(base):
    from hms_resources.lora.evaluation import generate_replies, reply_losses

    model, tokenizer = base
    prompts = ["What is the capital of France?", "Name three primary colors."]
    replies = generate_replies(model, tokenizer, prompts, 16)
    own = reply_losses(model, tokenizer, [{"prompt": p, "answer": r} for p, r in zip(prompts, replies)])
    swapped = reply_losses(model, tokenizer, [{"prompt": p, "answer": r} for p, r in zip(prompts, replies[::-1])])
    assert all(o < s for o, s in zip(own, swapped)), (own, swapped)


def test_general_perplexity_reads_shipped_text_and_rises_when_the_text_is_scrambled(base):
    model, tokenizer = base
    corpus = general_corpus()
    assert len(corpus) >= 10 and all(len(text) > 1000 for text in corpus)
    plain = perplexity(model, tokenizer, corpus)
    scrambled = perplexity(model, tokenizer, [" ".join(sorted(text.split())) for text in corpus])
    assert 2 < plain < 100 and scrambled > 3 * plain
