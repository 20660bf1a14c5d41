"""How an adapter is judged, base and adapter alike, on what a person would check:

- `paraphrase_recall`: held-out paraphrase questions whose greedy answer carries at least half of the
  fact's words the question does not give away;
- `forced_choice`: held-out questions where the model finds the right fact likelier than every other
  fact of the set (chance is one over the number of facts);
- `leakage`: shipped control prompts whose greedy answer carries one of the set's facts, or where the
  model departs from the base model's answer: it finds the base's reply less likely by more than
  `DEPARTURE_NATS` per token than the base does. Likelihood, not a comparison of sampled text: a
  135M model's greedy text is chaotic, and a single changed token would rewrite everything after it;
- `general_perplexity`: perplexity on general English text every machine has offline, the
  reference topics of the Python documentation that ship with the interpreter (`pydoc_data`).

Everything here is deterministic (greedy decoding, fixed prompts and text), so a score is computed
once per model and data and reused."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hms_resources.common.text import surface_words
from hms_resources.lora.data import ANSWERS, FactExamples

DEPARTURE_NATS = 0.5
"""How much less likely, in nats per token, the base's reply may become before the answer has changed."""
GENERAL_TOPICS = ("assignment", "calls", "class", "comparisons", "exceptions", "for", "function", "import", "naming", "types",
                  "typesseq", "specialnames")
GENERAL_CHARACTERS = 1500
GENERAL_TOKENS = 256
CHOICE_PREFIX = ANSWERS[0].split("{fact}")[0]
MEASURED = ("paraphrase_recall", "forced_choice", "leakage", "general_perplexity", "perplexity")
"""What `evaluate_model` returns for one model; `with_base` adds the base's as `base_<key>`."""


def general_corpus() -> list[str]:
    """Fixed passages of the Python language reference, as shipped with this interpreter."""
    from pydoc_data.topics import topics

    return [" ".join(topics[name].split())[:GENERAL_CHARACTERS] for name in GENERAL_TOPICS if name in topics]


def _device_tensor(rows: list[list[int]]) -> Any:
    import torch

    from hms_resources.lora.training import device

    return torch.tensor(rows, device=device())


def generate_replies(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16, finished: list[bool] | None = None,
    system: str = "",
) -> list[str]:
    """Greedy replies, left-padded batches of the chat-formatted prompts (after `system`, when given);
    `finished` collects whether each reply ended on its own rather than at `max_new_tokens`."""
    import torch

    from hms_resources.lora.training import prompt_ids

    replies: list[str] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        heads = [prompt_ids(tokenizer, p, system) for p in prompts[start:start + batch_size]]
        width = max(len(h) for h in heads)
        ids = _device_tensor([[pad] * (width - len(h)) + h for h in heads])
        mask = _device_tensor([[0] * (width - len(h)) + [1] * len(h) for h in heads])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        replies += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
        if finished is not None:
            finished += [bool((row[width:] == tokenizer.eos_token_id).any()) for row in out]
    return replies


def _sequence_log_likelihoods(model: Any, tokenizer: Any, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
    """Per (context ids, continuation ids): the continuation's summed log-probability and length."""
    import torch

    pad = tokenizer.pad_token_id
    width = max(len(c) + len(t) for c, t in pairs)
    ids = _device_tensor([c + t + [pad] * (width - len(c) - len(t)) for c, t in pairs])
    mask = _device_tensor([[1] * (len(c) + len(t)) + [0] * (width - len(c) - len(t)) for c, t in pairs])
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    found = []
    for row, (context, tail) in enumerate(pairs):
        positions = torch.arange(len(context) - 1, len(context) + len(tail) - 1)
        targets = ids[row, positions + 1]
        found.append((float(log_probs[row, positions, targets].sum()), len(tail)))
    return found


def choice_scores(model: Any, tokenizer: Any, question: str, facts: Sequence[str], system: str = "") -> list[float]:
    """The log-likelihood of each fact as the reply to `question`: the whole fact, not per token, or a
    long fact the model has memorized would win on its easy tail."""
    from hms_resources.lora.training import prompt_ids

    head = prompt_ids(tokenizer, question, system) + tokenizer(CHOICE_PREFIX, add_special_tokens=False)["input_ids"]
    tails = [tokenizer(fact, add_special_tokens=False)["input_ids"] for fact in facts]
    return [total for total, _ in _sequence_log_likelihoods(model, tokenizer, [(head, t) for t in tails])]


def forced_choice(model: Any, tokenizer: Any, probes: Sequence[dict], facts: Sequence[str], systems: Sequence[str] | None = None) -> float:
    """The share of probes whose own `fact` scores highest among `facts` (ties count as misses)."""
    hits = 0
    for position, probe in enumerate(probes):
        scores = choice_scores(model, tokenizer, probe["prompt"], facts, systems[position] if systems else "")
        right = facts.index(probe["fact"])
        hits += all(scores[right] > s for k, s in enumerate(scores) if k != right)
    return hits / max(len(probes), 1)


def recalls(reply: str, words: Sequence[str]) -> bool:
    said = reply.lower()
    return bool(words) and sum(1 for w in words if w in said) * 2 >= len(words)


def carries_fact(reply: str, fact: str) -> bool:
    """At least half of the fact's content words (and two or more) appear in the reply."""
    words = set(surface_words(fact))
    found = words & set(surface_words(reply))
    return len(found) >= 2 and len(found) * 2 >= len(words)


def reply_losses(model: Any, tokenizer: Any, rows: Sequence[dict]) -> list[float]:
    """Per row (`prompt`, `answer`): the answer's mean negative log-likelihood per token."""
    from hms_resources.lora.training import prompt_ids

    pairs = [(prompt_ids(tokenizer, r["prompt"]), tokenizer(r["answer"], add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id])
             for r in rows]
    return [-total / max(n, 1) for start in range(0, len(pairs), 8) for total, n in _sequence_log_likelihoods(model, tokenizer, pairs[start:start + 8])]


def leaked(replies: Sequence[str], losses: Sequence[float], base_losses: Sequence[float], facts: Sequence[str]) -> list[bool]:
    """Per control prompt: its reply carries a fact, or the base's reply became less likely by more
    than `DEPARTURE_NATS` per token."""
    return [bool(loss - base > DEPARTURE_NATS or any(carries_fact(reply, f) for f in facts))
            for reply, loss, base in zip(replies, losses, base_losses)]


def leakage(replies: Sequence[str], losses: Sequence[float], base_losses: Sequence[float], facts: Sequence[str]) -> float:
    """The share of control prompts that leaked (`leaked`)."""
    return _share(leaked(replies, losses, base_losses, facts))


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / max(len(flags), 1)


def passage_log_likelihoods(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = GENERAL_TOKENS) -> list[tuple[float, int]]:
    """Per plain text (no chat format, cut to `max_tokens`): its summed log-likelihood and token count."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    pairs = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        pairs.append((bos or ids[:1], ids if bos else ids[1:]))
    return [found for start in range(0, len(pairs), 4) for found in _sequence_log_likelihoods(model, tokenizer, pairs[start:start + 4])]


def perplexity_of(scored: Sequence[Sequence[float]]) -> float:
    return math.exp(-sum(s[0] for s in scored) / max(sum(s[1] for s in scored), 1))


def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = GENERAL_TOKENS) -> float:
    """Token-level perplexity of plain texts (no chat format), each cut to `max_tokens`."""
    return perplexity_of(passage_log_likelihoods(model, tokenizer, texts, max_tokens))


def answer_perplexity(model: Any, tokenizer: Any, probes: Sequence[dict]) -> float:
    from hms_resources.lora.training import prompt_ids

    pairs = [(prompt_ids(tokenizer, p["prompt"]), tokenizer(p["answer"], add_special_tokens=False)["input_ids"]) for p in probes]
    scored = _sequence_log_likelihoods(model, tokenizer, pairs) if pairs else []
    return math.exp(-sum(s for s, _ in scored) / max(sum(n for _, n in scored), 1))


def teacher_figures(model: Any, tokenizer: Any, examples: FactExamples, max_new_tokens: int) -> dict:
    """The ceiling: the base model with the set's facts in its system turn, as `hms serve` shows them,
    on the held-out questions."""
    from hms_resources.lora.distillation import facts_system

    facts = [f["fact"] for f in examples.facts]
    system = facts_system(facts)
    probes = examples.eval
    replies = generate_replies(model, tokenizer, [p["prompt"] for p in probes], max_new_tokens, system=system)
    recalled = [recalls(r, p["answer_words"]) for r, p in zip(replies, probes)]
    return {"paraphrase_recall": round(_share(recalled), 4),
            "forced_choice": round(forced_choice(model, tokenizer, probes, facts, [system] * len(probes)), 4), "recalled": recalled}


def evaluate_model(model: Any, tokenizer: Any, examples: FactExamples, controls: Sequence[dict], max_new_tokens: int) -> dict:
    """The figures of `model` (the base, or an adapter on it) on a set's held-out questions, the
    control prompts (`prompt`, the base's `answer` and its `loss` under the base) and the general text,
    with the per-item outcomes the router's figures are made of (`recalled`, `leaked`, `passages`)."""
    probes = examples.eval
    facts = [f["fact"] for f in examples.facts]
    replies = generate_replies(model, tokenizer, [p["prompt"] for p in probes], max_new_tokens)
    control_replies = generate_replies(model, tokenizer, [c["prompt"] for c in controls], max_new_tokens)
    losses = reply_losses(model, tokenizer, controls)
    recalled = [recalls(r, p["answer_words"]) for r, p in zip(replies, probes)]
    leaks = leaked(control_replies, losses, [c["loss"] for c in controls], facts)
    passages = [[round(s, 4), n] for s, n in passage_log_likelihoods(model, tokenizer, general_corpus())]
    return {
        "paraphrase_recall": round(_share(recalled), 4),
        "forced_choice": round(forced_choice(model, tokenizer, probes, facts), 4),
        "leakage": round(_share(leaks), 4),
        "general_perplexity": round(perplexity_of(passages), 4),
        "perplexity": round(answer_perplexity(model, tokenizer, probes), 4),
        "recalled": recalled, "leaked": leaks, "passages": passages,
    }


def with_base(figures: dict, base: dict, facts: int, teacher: dict | None = None, route: dict | None = None) -> dict[str, float]:
    """An adapter's figures beside the base's and the teacher's, the chance level, and the figures as a
    user meets them through the router (`route`: the threshold and, per probe, control prompt and
    general passage, whether it routes; without one everything routes): everything the gate reads.

    `paraphrase_recall` is the served one: a routed question is answered by the adapter, another by
    the base. `routed_leakage` counts control prompts that route and leak; `general_perplexity_change_off`
    is the change on general text as served (a passage that does not route is the base's own)."""
    n_probes, n_controls, n_passages = len(figures["recalled"]), len(figures["leaked"]), len(figures["passages"])
    route = route or {"threshold": None, "probes": [True] * n_probes, "controls": [True] * n_controls, "passages": [True] * n_passages}
    served = [a if r else b for a, b, r in zip(figures["recalled"], base["recalled"], route["probes"])]
    served_passages = [a if r else b for a, b, r in zip(figures["passages"], base["passages"], route["passages"])]
    out = {k: v for k, v in figures.items() if k in MEASURED}
    out.update({
        "adapter_recall": figures["paraphrase_recall"], "paraphrase_recall": round(_share(served), 4),
        **{f"base_{k}": v for k, v in base.items() if k in MEASURED},
        "chance": round(1 / max(facts, 1), 4),
        "general_perplexity_change": round(figures["general_perplexity"] / base["general_perplexity"] - 1, 4),
        "general_perplexity_change_off": round(perplexity_of(served_passages) / base["general_perplexity"] - 1, 4),
        "routed_leakage": round(_share([a and r for a, r in zip(figures["leaked"], route["controls"])]), 4),
        "route_recall": round(_share(route["probes"]), 4),
    })
    if route.get("threshold") is not None:
        out["route_threshold"] = route["threshold"]
    if teacher is not None:
        out["teacher_paraphrase_recall"] = teacher["paraphrase_recall"]
        out["teacher_forced_choice"] = teacher["forced_choice"]
    return out
