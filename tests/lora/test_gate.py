"""The promotion gate on real adapters of the real base model (CPU), judged as a user meets them:
through the router fitted on real embeddings of the set's facts, beside the teacher (the base with
the facts in context). An adapter that memorizes strings leaks and harms forced on; the router keeps
the unrelated prompts and text from it, and the gate still refuses it for what it does when it
answers. A distilled adapter (the default recipe) is judged on recall without the facts against the
teacher's with them and the base's without; whether it recalls enough is the gate's to say."""

from dataclasses import replace

import numpy as np
import pytest

from hms_resources.lora.candidates import CandidateSet
from hms_resources.lora.data import build_examples
from hms_resources.lora.evaluation import (
    evaluate_model,
    general_corpus,
    teacher_figures,
    with_base,
)
from hms_resources.lora.registry import PromotionGate, gate_failures
from hms_resources.lora.distillation import base_rows, distil_adapter, facts_system, teacher_rows
from hms_resources.lora.rehearsal import (
    CONTROL_PROMPTS,
    REHEARSAL_PROMPTS,
    base_replies,
    rehearsal_splits,
)
from hms_resources.lora.routing import set_route
from hms_resources.lora.training import TrainingConfig, load_base, train_adapter
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.memory_state import Memory
from tests.helpers import PERSONAL_FACTS

FACTS = PERSONAL_FACTS
TOKENS = 16


@pytest.fixture(scope="module")
def judged(tmp_path_factory, seed_base_replies):
    home = tmp_path_factory.mktemp("gate")
    seed_base_replies(home, TOKENS)
    memories = {("nadia", f"m{i}"): Memory(user_id="nadia", memory_id=f"m{i}", content=text) for i, text in enumerate(FACTS)}
    candidate_set = CandidateSet(set_id="nadia/concept-1", user_id="nadia", concept_id="concept-1", label=[],
                                 memory_ids=[m for _, m in sorted(memories)], fingerprint="f", status="approved", criteria={})
    examples = build_examples(candidate_set, memories)
    base = load_base()
    controls = base_replies(home, base, "", CONTROL_PROMPTS, TOKENS)
    base_figures = evaluate_model(*base, examples, controls, TOKENS)
    teacher = teacher_figures(*base, examples, TOKENS)
    embedder = Embedder()
    facts = embedder.encode([f["fact"] for f in examples.facts])
    centroid = facts.mean(axis=0) / np.linalg.norm(facts.mean(axis=0))
    route = set_route(embedder.encode, np.vstack([centroid[None, :], facts]), [r["prompt"] for r in examples.validation],
                      REHEARSAL_PROMPTS, [p["prompt"] for p in examples.eval], CONTROL_PROMPTS, general_corpus())

    def judge(rows, config, **held_out) -> tuple[dict, dict, list[str]]:
        """(the figures with the adapter forced on, as served through the router, the gate's failures)."""
        result = train_adapter(*base, rows, config, **held_out)
        try:
            raw = evaluate_model(result.adapter, base[1], examples, controls, TOKENS)
        finally:
            result.adapter.unload()
        served = with_base(raw, base_figures, len(examples.facts), teacher, route)
        return with_base(raw, base_figures, len(examples.facts), teacher), served, gate_failures(served, PromotionGate())

    return home, base, examples, base_figures, judge, teacher, route


@pytest.mark.timeout(1200)
def test_the_base_model_knows_none_of_the_facts_and_no_unrelated_prompt_or_text_routes(judged):
    _, _, _, base_figures, _, _, route = judged
    assert base_figures["paraphrase_recall"] <= 0.1 and base_figures["leakage"] == 0.0
    assert not any(route["controls"]) and not any(route["passages"]), route


@pytest.fixture(scope="module")
def old_recipe(judged):
    """The recipe before the gate: one cue word, the same three prompts per fact (one of them about
    nothing in particular), no rehearsal, a high learning rate, attention projections."""
    _, _, examples, _, judge, _, _ = judged
    rows = [{"prompt": prompt.format(cue=fact["cues"][0]), "answer": f"You told me: {fact['fact']}"} for fact in examples.facts
            for prompt in ("What did I tell you about {cue}?", "What have I said about {cue}?", "Tell me something you remember about me.")]
    return judge(rows, TrainingConfig(learning_rate=2e-3, steps=30, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")))


@pytest.fixture(scope="module")
def distilled(judged):
    """The default recipe, briefly: the teacher (the base with the facts in context) answers the
    training questions; the student without them matches its answers, with unrelated rows matched to
    the base."""
    home, base, examples, base_figures, _, teacher, route = judged
    config = replace(TrainingConfig(), steps=16, answer_tokens=16, eval_every=8)
    system = facts_system([f["fact"] for f in examples.facts])
    taught = teacher_rows(*base, [r["prompt"] for r in examples.train], system, config)
    held_out = teacher_rows(*base, [r["prompt"] for r in examples.validation], system, config)
    rehearsal, watched = rehearsal_splits(home, base, "", 64)
    result = distil_adapter(*base, taught, base_rows(*base, rehearsal, config), config, validation=held_out,
                            watched=base_rows(*base, watched, config))
    try:
        controls = base_replies(home, base, "", CONTROL_PROMPTS, TOKENS)
        raw = evaluate_model(result.adapter, base[1], examples, controls, TOKENS)
    finally:
        result.adapter.unload()
    served = with_base(raw, base_figures, len(examples.facts), teacher, route)
    return result, served, gate_failures(served, PromotionGate())


@pytest.mark.timeout(1200)
def test_an_adapter_that_memorizes_strings_leaks_forced_on_is_kept_from_unrelated_prompts_by_the_router_and_fails_on_harm(old_recipe):
    forced, served, failures = old_recipe
    assert forced["leakage"] > 0.05 and forced["general_perplexity_change"] > 0.05, forced
    assert any(f.startswith("routed leakage") for f in gate_failures(forced, PromotionGate())), "forced on, it leaks"
    assert served["routed_leakage"] == 0.0 and served["general_perplexity_change_off"] == 0.0, served
    assert any(f.startswith("general perplexity") and "routed on" in f for f in failures), failures


@pytest.mark.timeout(1500)
def test_a_distilled_adapter_is_judged_against_the_teacher_and_the_base_through_the_router(distilled):
    result, served, failures = distilled
    kept = [c for c in result.checks if c["step"] == result.best_step]
    assert kept and kept[0]["unrelated_kl"] <= TrainingConfig().keep_tolerance, result.checks
    assert result.checks[-1]["validation_kl"] < result.checks[0]["validation_kl"] or result.best_step == result.checks[0]["step"]
    assert served["routed_leakage"] == 0.0 and served["general_perplexity_change_off"] == 0.0, "no unrelated prompt or text routes"
    assert served["route_recall"] == 1.0 and served["paraphrase_recall"] == served["adapter_recall"], served
    assert {"teacher_paraphrase_recall", "teacher_forced_choice", "base_paraphrase_recall"} <= served.keys()
    recall_held = not any(f.startswith("recall without the facts") for f in failures)
    assert recall_held == (served["paraphrase_recall"] >= served["base_paraphrase_recall"] + 0.2
                           and served["paraphrase_recall"] >= 0.8 * served["teacher_paraphrase_recall"]), (served, failures)
    perplexity_held = not any(f.startswith("general perplexity") for f in failures)
    assert perplexity_held == (served["general_perplexity_change"] <= 0.05), (served, failures)
