"""The promotion gate on real adapters of the real base model (CPU): the old recipe memorizes strings
and fails on leakage and harm; the new recipe (varied questions, rehearsal, early stopping) on six
facts leaks less and keeps the base's language. What it cannot do on a 135M model is answer questions
on words it was never asked with (paraphrase recall, forced choice), and the gate says so rather than
promote it."""

from dataclasses import replace

import pytest

from hms_resources.lora.candidates import CandidateSet
from hms_resources.lora.data import build_examples
from hms_resources.lora.evaluation import evaluate_model, with_base
from hms_resources.lora.registry import PromotionGate, gate_failures
from hms_resources.lora.rehearsal import CONTROL_PROMPTS, base_replies, mix_rehearsal, rehearsal_splits
from hms_resources.lora.training import TrainingConfig, load_base, train_adapter
from hms_resources.store.memory_state import Memory
from tests.helpers import PERSONAL_FACTS

FACTS = PERSONAL_FACTS
TOKENS = 24


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

    def judge(rows, config, **held_out) -> tuple[dict, list[str]]:
        result = train_adapter(*base, rows, config, **held_out)
        try:
            figures = with_base(evaluate_model(result.adapter, base[1], examples, controls, TOKENS), base_figures, len(examples.facts))
        finally:
            result.adapter.unload()
        return figures, gate_failures(figures, PromotionGate())

    return home, base, examples, base_figures, judge


@pytest.mark.timeout(1200)
def test_the_base_model_knows_none_of_the_facts(judged):
    _, _, _, base_figures, _ = judged
    assert base_figures["paraphrase_recall"] <= 0.1 and base_figures["leakage"] == 0.0


@pytest.fixture(scope="module")
def old_recipe(judged):
    """The recipe before the gate: one cue word, the same three prompts per fact (one of them about
    nothing in particular), no rehearsal, a high learning rate, attention projections."""
    _, _, examples, _, judge = judged
    rows = [{"prompt": prompt.format(cue=fact["cues"][0]), "answer": f"You told me: {fact['fact']}"} for fact in examples.facts
            for prompt in ("What did I tell you about {cue}?", "What have I said about {cue}?", "Tell me something you remember about me.")]
    return judge(rows, TrainingConfig(learning_rate=2e-3, steps=30, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")))


@pytest.fixture(scope="module")
def new_recipe(judged):
    home, base, examples, _, judge = judged
    rehearsal, watched = rehearsal_splits(home, base, "", 64)
    config = replace(TrainingConfig(), steps=30)
    return judge(mix_rehearsal(examples.train, rehearsal, config.rehearsal_ratio), config, validation=examples.validation, rehearsal=watched)


@pytest.mark.timeout(1200)
def test_an_adapter_that_memorizes_strings_fails_the_gate_on_leakage_and_harm(old_recipe):
    figures, failures = old_recipe
    assert figures["leakage"] > 0.05 and figures["general_perplexity_change"] > 0.05, figures
    assert any(f.startswith("leakage") for f in failures) and any(f.startswith("general perplexity") for f in failures)


@pytest.mark.timeout(1500)
def test_the_new_recipe_leaks_less_harms_less_and_is_judged_on_what_it_recalls(judged, old_recipe, new_recipe):
    figures, failures = new_recipe
    old = old_recipe[0]
    assert figures["leakage"] < old["leakage"] and figures["general_perplexity_change"] < old["general_perplexity_change"], (figures, old)
    assert figures["paraphrase_recall"] > figures["base_paraphrase_recall"], figures
    assert figures["perplexity"] < judged[3]["perplexity"] / 10, "it learned to answer the held-out questions with the facts"
    recall_held = not any(f.startswith(("paraphrase recall", "forced choice")) for f in failures)
    assert recall_held == (figures["paraphrase_recall"] >= figures["base_paraphrase_recall"] + 0.2
                           and figures["forced_choice"] >= max(figures["chance"], figures["base_forced_choice"]) + 0.2)
