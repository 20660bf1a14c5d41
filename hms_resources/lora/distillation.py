"""Context distillation: a LoRA student that answers without a set's facts the way the same model
answers with them in its system turn.

The teacher is the base model reading the facts as `hms serve` puts them in front of it (the memory
header, one line per fact). For many questions per fact (templates over the fact's own words, the
`train` split of `lora.data`), the teacher answers greedily; the student, the base with a LoRA adapter
and NO facts in its context, is trained to match the teacher's token distribution at every token of
that answer: its `top_k` most likely tokens and, as one more outcome, the rest of the vocabulary
together. Without that tail a student lowers the loss by piling all its mass on the top-k, which
costs it the rare tokens of ordinary text (its perplexity rose by 14% on the dev split). On unrelated
prompts (the base's own replies) and plain text the student is trained to match the base itself, so it
keeps its language where the facts do not apply. Training stops on the distillation loss of held-out paraphrases
(`validation`), keeping the best check whose loss on held-out unrelated rows stayed near zero.

Kujanpää et al. 2024 (arXiv 2412.14964) and Caccia et al. 2025 (arXiv 2503.08727) report this beating
fine-tuning on the facts' text. Nothing here depends on the model: any causal LM with a chat
template works (`HMS_LOCAL_MODEL`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hms_resources.lora.training import TrainingConfig



def facts_system(facts: Sequence[str]) -> str:
    """The facts as the served path shows them to the model: the memory header, one line each."""
    from hms_resources.context.prompt import CONTEXT_HEADER, render_memory

    return CONTEXT_HEADER + "\n" + "\n".join(render_memory(None, f) for f in facts)


@dataclass
class SoftRow:
    """One training row: token ids and, per scored position, the target's top-k token ids and probabilities."""

    ids: list[int]
    positions: list[int]
    """Indices into `ids` whose next-token distribution is scored."""
    top_ids: Any
    top_probs: Any
    kind: str = "fact"


@dataclass
class DistillationResult:
    adapter: Any = field(repr=False)
    losses: list[float]
    checks: list[dict]
    best_step: int
    stopped_because: str
    seconds: float
    tokens: int
    teacher_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, systems: Sequence[str] | None = None,
             batch_size: int = 16) -> list[list[int]]:
    """Greedy answer token ids per prompt (after its system turn, when given), without the end token."""
    import torch

    from hms_resources.lora.training import device, prompt_ids

    answers: list[list[int]] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        heads = [prompt_ids(tokenizer, prompts[i], systems[i] if systems else "") for i in chunk]
        width = max(len(h) for h in heads)
        ids = torch.tensor([[pad] * (width - len(h)) + h for h in heads], device=device())
        mask = torch.tensor([[0] * (width - len(h)) + [1] * len(h) for h in heads], device=device())
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        for row in out[:, width:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[:row.index(tokenizer.eos_token_id) + 1]
            answers.append(row)
    return answers


def _soft_targets(model: Any, tokenizer: Any, sequences: Sequence[tuple[list[int], int]], top_k: int,
                  batch_size: int = 8) -> list[tuple[Any, Any]]:
    """Per (ids, first scored position): the model's top-k next-token ids and their probabilities (not
    renormalized: the rest is the tail's) at every position from there to the second-to-last token."""
    import torch

    from hms_resources.lora.training import device

    found = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in chunk], device=device())
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chunk], device=device())
        low = min(first for _, first in chunk)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=torch.arange(low, width, device=device())).logits.float()
        for row, (sequence, first) in enumerate(chunk):
            scored = logits[row, first - low:len(sequence) - 1 - low]
            values, indices = torch.topk(torch.softmax(scored, dim=-1), top_k, dim=-1)
            found.append((indices.cpu(), values.cpu()))
    return found


def teacher_rows(model: Any, tokenizer: Any, questions: Sequence[str], system: str, config: TrainingConfig) -> list[SoftRow]:
    """The teacher (the bare `model` reading `system`) answers each question; each row is the student's
    view: the question alone and that answer, scored on the teacher's distributions."""
    from hms_resources.lora.training import prompt_ids

    answers = generate(model, tokenizer, questions, config.answer_tokens, [system] * len(questions))
    taught, learned = [], []
    for question, answer in zip(questions, answers):
        teacher_head, student_head = prompt_ids(tokenizer, question, system), prompt_ids(tokenizer, question)
        taught.append((teacher_head + answer, len(teacher_head) - 1))
        learned.append((student_head + answer, len(student_head) - 1))
    targets = _soft_targets(model, tokenizer, taught, config.top_k)
    return [SoftRow(ids, list(range(first, len(ids) - 1)), top_ids, top_probs)
            for (ids, first), (top_ids, top_probs) in zip(learned, targets)]


def base_rows(model: Any, tokenizer: Any, rows: Sequence[dict], config: TrainingConfig) -> list[SoftRow]:
    """Unrelated rows the student must answer as the base does: chat rows (`prompt`, `answer`) scored on
    the answer, plain text (`text`, its first `4 * answer_tokens` tokens) on every token."""
    from hms_resources.lora.training import encode_row

    sequences = []
    for row in rows:
        ids, labels = encode_row(tokenizer, row)
        ids = ids[:4 * config.answer_tokens] if "text" in row else ids
        first = next((i for i, label in enumerate(labels) if label != -100), 1) - 1
        sequences.append((ids, max(first, 0)))
    targets = _soft_targets(model, tokenizer, sequences, config.top_k)
    return [SoftRow(ids, list(range(first, len(ids) - 1)), top_ids, top_probs, kind="base")
            for (ids, first), (top_ids, top_probs) in zip(sequences, targets)]


def _distillation_loss(model: Any, tokenizer: Any, rows: Sequence[SoftRow]) -> Any:
    """Mean over scored positions of KL(target || student) over the target's top-k tokens and the tail
    (every other token, one outcome). Logits are computed only from the first scored position on: the
    prompt's would be thrown away."""
    import torch

    from hms_resources.lora.training import device

    pad = tokenizer.pad_token_id
    width = max(len(r.ids) for r in rows)
    ids = torch.tensor([r.ids + [pad] * (width - len(r.ids)) for r in rows], device=device())
    mask = torch.tensor([[1] * len(r.ids) + [0] * (width - len(r.ids)) for r in rows], device=device())
    low = min(r.positions[0] for r in rows)
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=torch.arange(low, width, device=device())).logits
    rows_at = torch.cat([torch.full((len(r.positions),), n, dtype=torch.long) for n, r in enumerate(rows)]).to(device())
    positions = torch.cat([torch.tensor(r.positions, dtype=torch.long) for r in rows]).to(device()) - low
    top_ids = torch.cat([r.top_ids for r in rows]).to(device())
    top_probs = torch.cat([r.top_probs for r in rows]).to(device())
    log_all = torch.log_softmax(logits[rows_at, positions].float(), dim=-1)
    log_q = log_all.gather(-1, top_ids)
    log_q_tail = torch.logsumexp(log_all.scatter(-1, top_ids, float("-inf")), dim=-1)
    p_tail = (1.0 - top_probs.sum(-1)).clamp_min(0.0)
    head = (top_probs * (torch.log(top_probs.clamp_min(1e-12)) - log_q)).sum(-1)
    return (head + p_tail * (torch.log(p_tail.clamp_min(1e-12)) - log_q_tail)).mean()


def mean_kl(model: Any, tokenizer: Any, rows: Sequence[SoftRow], batch_size: int = 16) -> float:
    import torch

    if not rows:
        return 0.0
    total = count = 0.0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        scored = sum(len(r.positions) for r in chunk)
        with torch.inference_mode():
            total += float(_distillation_loss(model, tokenizer, chunk)) * scored
        count += scored
    return total / max(count, 1)


DIVERGENCE_ROWS = 32
"""Fact rows whose highest KL before training is the start a diverging loss is measured against (no
batch's mean can exceed its worst row's): the first batch's loss will not do, as a batch of unrelated
rows starts near zero."""


def distil_adapter(
    model: Any,
    tokenizer: Any,
    facts: Sequence[SoftRow],
    unrelated: Sequence[SoftRow],
    config: TrainingConfig,
    validation: Sequence[SoftRow] = (),
    watched: Sequence[SoftRow] = (),
    on_step: Callable[[int, float], None] | None = None,
    on_check: Callable[[dict], None] | None = None,
) -> DistillationResult:
    """A LoRA adapter on `model` trained on `facts` (teacher targets) mixed with `unrelated` (base
    targets), `rehearsal_ratio` of them per fact row, in a seeded order. Every `eval_every` steps the KL on
    held-out paraphrases (`validation`) and held-out unrelated rows (`watched`) is measured; training
    stops when the first has not improved for `patience` checks, and the best check whose second stayed
    within `keep_tolerance` is kept. A NaN loss, or one past `divergence_factor` times the untrained
    student's worst KL on fact rows, unloads the adapter and raises."""
    import torch
    from peft import LoraConfig, get_peft_model

    from hms_resources.lora.training import TrainingFailed, device

    if not facts:
        raise ValueError("no fact rows to distil")
    torch.manual_seed(config.seed)
    layers = int(model.config.num_hidden_layers)
    adapted = list(range(layers - max(1, math.ceil(layers * config.layer_share)), layers))
    adapter = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.target_modules),
                                               lora_dropout=config.dropout, task_type="CAUSAL_LM", layers_to_transform=adapted))
    extra = [unrelated[i % len(unrelated)] for i in range(round(config.rehearsal_ratio * len(facts)))] if unrelated else []
    rows = list(facts) + extra
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(config.seed)).tolist()
    optimizer = torch.optim.AdamW([p for p in adapter.parameters() if p.requires_grad], lr=config.learning_rate)
    result = DistillationResult(adapter, [], [], 0, "reached the most steps", 0.0, 0)
    best: tuple[float, int, dict] | None = None
    started = time.perf_counter()
    adapter.eval()
    sampled = [facts[i] for i in order if i < len(facts)][:DIVERGENCE_ROWS]
    start = max([mean_kl(adapter, tokenizer, [row]) for row in sampled] + [1e-2])
    checking = time.perf_counter() - started
    for step in range(config.steps):
        adapter.train()
        chosen = [rows[order[(step * config.batch_size + i) % len(order)]] for i in range(min(config.batch_size, len(order)))]
        loss = _distillation_loss(adapter, tokenizer, chosen)
        value = float(loss.item())
        if not math.isfinite(value) or value > config.divergence_factor * start:
            adapter.unload()
            raise TrainingFailed(f"distillation loss {value} at step {step} (the untrained student's {start:.4f}): the run diverged")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(value)
        result.tokens += sum(len(r.ids) for r in chosen)
        if on_step is not None:
            on_step(step, value)
        if validation and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            began = time.perf_counter()
            adapter.eval()
            check = {"step": step + 1, "validation_kl": round(mean_kl(adapter, tokenizer, validation), 4),
                     "unrelated_kl": round(mean_kl(adapter, tokenizer, watched), 4)}
            result.checks.append(check)
            if on_check is not None:
                on_check(check)
            if check["unrelated_kl"] <= config.keep_tolerance and (best is None or check["validation_kl"] < best[0]):
                best = (check["validation_kl"], step + 1, {n: p.detach().clone() for n, p in adapter.named_parameters() if p.requires_grad})
            checking += time.perf_counter() - began
            if sum(1 for c in result.checks if c["step"] > (best[1] if best else 0)) >= config.patience:
                result.stopped_because = f"no better held-out paraphrase KL (with unrelated KL <= {config.keep_tolerance}) for {config.patience} checks"
                break
    result.seconds = time.perf_counter() - started - checking
    if best is not None:
        with torch.no_grad():
            for name, p in adapter.named_parameters():
                if name in best[2]:
                    p.copy_(best[2][name].to(device()))
        result.best_step = best[1]
    else:
        result.best_step = len(result.losses)
    adapter.eval()
    return result
