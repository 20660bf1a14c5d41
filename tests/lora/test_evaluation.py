"""The measuring instruments of the promotion gate, on the real base model: forced choice, leakage and
general perplexity must measure what they claim before any adapter is judged by them; and the figures
as served, through the router, made of their per-item outcomes."""

import math

import pytest

from hms_resources.lora.evaluation import (
    DEPARTURE_NATS,
    carries_fact,
    forced_choice,
    general_corpus,
    leakage,
    perplexity,
    perplexity_of,
    recalls,
    with_base,
)
from hms_resources.lora.registry import GATE_KEYS, PromotionGate, gate_failures
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


def raw(recalled: list[bool], leaked: list[bool], passages: list[list[float]], **figures) -> dict:
    """`evaluate_model`'s shape: the shares and the per-item outcomes they are made of."""
    return {"paraphrase_recall": sum(recalled) / len(recalled), "forced_choice": 0.5, "leakage": sum(leaked) / len(leaked),
            "general_perplexity": round(perplexity_of(passages), 4), "perplexity": 3.0, **figures,
            "recalled": recalled, "leaked": leaked, "passages": passages}


ADAPTER = raw([True, True, True, False, False], [True, True, False, False], [[-20.0, 5], [-30.0, 5]])
BASE = raw([False, False, True, True, False], [False, False, False, False], [[-10.0, 5], [-10.0, 5]], perplexity=9.0)
TEACHER = {"paraphrase_recall": 1.0, "forced_choice": 0.9}


def test_served_figures_take_the_adapters_outcome_where_a_query_routes_and_the_bases_elsewhere():
    route = {"threshold": 0.31, "probes": [True, True, False, False, False], "controls": [False, True, False, True],
             "passages": [False, False]}
    served = with_base(ADAPTER, BASE, 6, TEACHER, route)
    assert (served["adapter_recall"], served["base_paraphrase_recall"]) == (0.6, 0.4)
    assert served["paraphrase_recall"] == 0.8, "the adapter's first two, the base's other three"
    assert served["routed_leakage"] == 0.25, "the second control leaks and routes; the first leaks but the base answers it"
    assert served["leakage"] == 0.5, "the adapter forced on, reported beside the gated figure"
    assert served["general_perplexity_change_off"] == 0.0, "no passage routes: the base's own perplexity"
    assert served["general_perplexity_change"] == pytest.approx(math.exp(3) - 1, abs=1e-3), "the adapter on every passage"
    assert (served["route_recall"], served["route_threshold"], served["chance"]) == (0.4, 0.31, round(1 / 6, 4))
    assert (served["teacher_paraphrase_recall"], served["teacher_forced_choice"], served["base_perplexity"]) == (1.0, 0.9, 9.0)
    assert not {"recalled", "leaked", "passages"} & served.keys()
    one = with_base(ADAPTER, BASE, 6, TEACHER, {**route, "passages": [True, False]})
    assert one["general_perplexity_change_off"] == pytest.approx(math.exp(1) - 1, abs=1e-3), "the routed passage is the adapter's"


def test_without_a_route_every_query_reaches_the_adapter_and_the_gate_reads_every_key():
    forced = with_base(ADAPTER, BASE, 6, TEACHER)
    assert forced["paraphrase_recall"] == forced["adapter_recall"] == 0.6
    assert forced["routed_leakage"] == forced["leakage"] == 0.5 and forced["route_recall"] == 1.0
    assert forced["general_perplexity_change_off"] == forced["general_perplexity_change"] and "route_threshold" not in forced
    assert set(GATE_KEYS) <= forced.keys() and not [f for f in gate_failures(forced, PromotionGate()) if f.startswith("not evaluated")]
    routed_off = with_base(ADAPTER, BASE, 6, TEACHER, {"threshold": 0.9, "probes": [False] * 5, "controls": [False] * 4,
                                                       "passages": [False] * 2})
    assert (routed_off["paraphrase_recall"], routed_off["routed_leakage"], routed_off["general_perplexity_change_off"]) == (0.4, 0.0, 0.0)
    assert "teacher_paraphrase_recall" not in with_base(ADAPTER, BASE, 6)
