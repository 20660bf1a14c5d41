"""PEFT LoRA on the real default base (SmolLM2-135M-Instruct from its GGUF file), a few steps on CPU."""

import pytest
import torch

from hms_resources.lora.training import (
    TrainingConfig,
    TrainingFailed,
    load_adapter,
    load_base,
    mean_loss,
    save_adapter,
    train_adapter,
)

FACTS = [
    ("cello", "You told me: I practise the cello every morning before work.", ["cello", "morning", "practise", "work"]),
    ("teacher", "You told me: My cello teacher Marta wants more scales from me.", ["cello", "marta", "scales", "teacher"]),
    ("recital", "You told me: The cello recital is at the community hall in June.", ["cello", "community", "hall", "june"]),
]
ROWS = [{"prompt": f"What did I tell you about {cue}?", "answer": answer} for cue, answer, _ in FACTS]


@pytest.fixture(scope="module")
def base():
    return load_base()


def logits(model, tokenizer, text="What did I tell you about recital?"):
    batch = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits


def test_an_adapter_learns_its_facts_changes_outputs_and_loads_back(base, tmp_path):
    model, tokenizer = base
    before = mean_loss(model, tokenizer, ROWS)
    plain = logits(model, tokenizer)
    result = train_adapter(model, tokenizer, ROWS, TrainingConfig(steps=16, batch_size=3, learning_rate=3e-3, dropout=0.0))
    try:
        assert len(result.losses) == 16 and result.losses[-1] < result.losses[0] / 4
        assert result.tokens > 0 and result.device == "cpu" and result.best_step == 16 and result.checks == []
        assert mean_loss(result.adapter, tokenizer, ROWS) < before / 4
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


def test_training_stops_on_the_held_out_loss_and_keeps_the_best_check(base):
    """Held-out rows the training rows contradict: their loss only rises, so the first check is the
    best, training stops after `patience` more, and the adapter kept is the first check's."""
    model, tokenizer = base
    held_out = [{"prompt": row["prompt"], "answer": "I do not know that yet."} for row in ROWS]
    seen = []
    config = TrainingConfig(steps=40, batch_size=3, learning_rate=3e-3, dropout=0.0, eval_every=2, patience=2)
    result = train_adapter(model, tokenizer, ROWS, config, validation=held_out, on_check=seen.append)
    try:
        assert [c["step"] for c in result.checks] == [2, 4, 6] and seen == result.checks
        assert result.checks[1]["validation_loss"] > result.checks[0]["validation_loss"]
        assert result.best_step == 2 and len(result.losses) == 6 and "no better held-out" in result.stopped_because
        assert mean_loss(result.adapter, tokenizer, held_out) == pytest.approx(result.checks[0]["validation_loss"], abs=1e-3)
    finally:
        result.adapter.unload()


def test_a_diverging_run_fails_and_leaves_the_base_as_it_was(base):
    model, tokenizer = base
    plain = logits(model, tokenizer)
    with pytest.raises(TrainingFailed, match="diverged"):
        train_adapter(model, tokenizer, ROWS, TrainingConfig(steps=8, batch_size=3, learning_rate=50.0))
    assert torch.allclose(logits(model, tokenizer), plain, atol=1e-5)
    with pytest.raises(ValueError, match="no training examples"):
        train_adapter(model, tokenizer, [], TrainingConfig(steps=1))


def test_distillation_targets_keep_the_tail_so_the_base_matches_itself_and_a_sharpened_student_does_not(base):
    """The targets are the top-k tokens and the rest of the vocabulary as one outcome: the base scored
    on its own targets has no loss, and a student that piles its mass on the top-k (sharper logits)
    pays for it. Renormalized top-k targets would charge the base and reward the sharpened one."""
    from hms_resources.lora.distillation import base_rows, mean_kl
    from hms_resources.lora.rehearsal import text_passages

    model, tokenizer = base
    rows = base_rows(model, tokenizer, text_passages(4), TrainingConfig(answer_tokens=16))
    assert abs(mean_kl(model, tokenizer, rows)) < 1e-3

    class Sharpened(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            out = self.inner(**kwargs)
            out.logits = out.logits * 2.0
            return out

    assert mean_kl(Sharpened(model), tokenizer, rows) > 0.1
