"""PEFT LoRA on the real default base (SmolLM2-135M-Instruct from its GGUF file), a few steps on CPU."""

import pytest
import torch

from hms_resources.lora.training import (
    TrainingConfig,
    TrainingFailed,
    evaluate,
    load_adapter,
    load_base,
    save_adapter,
    train_adapter,
)

FACTS = [
    ("cello", "You told me: I practise the cello every morning before work.", ["cello", "morning", "practise", "work"]),
    ("teacher", "You told me: My cello teacher Marta wants more scales from me.", ["cello", "marta", "scales", "teacher"]),
    ("recital", "You told me: The cello recital is at the community hall in June.", ["cello", "community", "hall", "june"]),
]
ROWS = [{"prompt": f"What did I tell you about {cue}?", "answer": answer} for cue, answer, _ in FACTS]
PROBES = [{**row, "answer_words": words} for row, (_, _, words) in zip(ROWS, FACTS)]


@pytest.fixture(scope="module")
def base():
    return load_base()


def logits(model, tokenizer, text="What did I tell you about recital?"):
    batch = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits


def test_an_adapter_learns_its_facts_changes_outputs_and_loads_back(base, tmp_path):
    model, tokenizer = base
    before = evaluate(model, tokenizer, PROBES, max_new_tokens=24)
    plain = logits(model, tokenizer)
    result = train_adapter(model, tokenizer, ROWS, TrainingConfig(steps=16, batch_size=3, learning_rate=3e-3))
    try:
        assert len(result.losses) == 16 and result.losses[-1] < result.losses[0] / 4
        assert result.tokens > 0 and result.device == "cpu"
        after = evaluate(result.adapter, tokenizer, PROBES, max_new_tokens=24)
        assert after["fact_recall"] > before["fact_recall"] and after["fact_recall"] >= 2 / 3
        assert after["perplexity"] < before["perplexity"]
        tuned = logits(result.adapter, tokenizer)
        assert not torch.allclose(tuned, plain, atol=1e-3)
        saved = save_adapter(result.adapter, tmp_path / "adapter")
        assert (saved / "adapter_config.json").exists()
    finally:
        result.adapter.unload()
    assert torch.allclose(logits(model, tokenizer), plain, atol=1e-5), "unloading gives the plain base back"
    loaded = load_adapter(model, tmp_path / "adapter")
    try:
        assert torch.allclose(logits(loaded, tokenizer), tuned, atol=1e-4)
    finally:
        loaded.unload()


def test_a_diverging_run_fails_and_leaves_the_base_as_it_was(base):
    model, tokenizer = base
    plain = logits(model, tokenizer)
    with pytest.raises(TrainingFailed, match="diverged"):
        train_adapter(model, tokenizer, ROWS, TrainingConfig(steps=8, batch_size=3, learning_rate=50.0))
    assert torch.allclose(logits(model, tokenizer), plain, atol=1e-5)
    with pytest.raises(ValueError, match="no training examples"):
        train_adapter(model, tokenizer, [], TrainingConfig(steps=1))
