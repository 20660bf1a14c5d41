"""What an adapter must leave alone: prompts unrelated to any user, answered by the base model itself,
and plain text.

`REHEARSAL_PROMPTS` are mixed into training with the base model's own replies, so the adapter keeps
answering them as the base does; passages of the docstrings of standard-library modules
(`TEXT_MODULES`, shipped with every interpreter, and apart from the language reference that general
perplexity is measured on) are mixed in as plain language modelling, so it keeps the base's language. `CONTROL_PROMPTS` (general questions and personal questions about
nothing a user told) never reach training: leakage is measured on them. Both are fixed and shipped,
so every adapter is judged on the same questions. Base replies are generated once per base model and
generation length, and cached under the HMS home."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hms_resources.common.files import read_json, write_json

REHEARSAL_PROMPTS = (
    "What is photosynthesis?",
    "Give me a tip for writing a clear email.",
    "How many continents are there?",
    "Explain what a prime number is.",
    "What does a thermometer measure?",
    "Suggest a healthy breakfast.",
    "Why is the sky blue?",
    "How do I convert Celsius to Fahrenheit?",
    "What is the difference between weather and climate?",
    "Write one sentence about the ocean.",
    "Name three primary colors.",
    "What is a verb?",
    "How can I improve my sleep?",
    "What causes tides?",
    "Give me a synonym for happy.",
    "How do vaccines work?",
    "What is the boiling point of water at sea level?",
    "Recommend a way to stay focused while studying.",
    "What is gravity?",
    "Describe a rainbow in one sentence.",
    "How do bees make honey?",
    "What is the largest planet in the solar system?",
    "Translate 'thank you' into Spanish.",
    "What should I do if I feel stressed?",
    "Explain recursion in simple terms.",
    "What is a haiku?",
    "How do I make a cup of tea?",
    "What is the purpose of a budget?",
    "Why do leaves change color in autumn?",
    "Give me an example of a metaphor.",
    "What is an atom made of?",
    "How often should I water a cactus?",
    "What is the difference between a virus and a bacterium?",
    "Give me three ideas for a rainy afternoon.",
    "How does a compass work?",
    "What is the main ingredient of guacamole?",
    "Summarise the water cycle.",
    "What is a noun?",
    "How do airplanes stay in the air?",
    "Suggest a polite way to decline an invitation.",
    "What is the speed of light?",
    "Why do we have seasons?",
    "How can I save money on groceries?",
    "What is a spreadsheet used for?",
    "Describe a cat in two sentences.",
    "What are the three states of matter?",
    "How do I start a conversation with a stranger?",
    "What is democracy?",
    "Give me a motivational quote.",
    "How do plants drink water?",
    "What is an adjective?",
    "Explain what a calendar is.",
    "What is the moon made of?",
    "How do I tie a simple knot?",
    "What is the purpose of exercise?",
    "Name a famous painting.",
)
CONTROL_PROMPTS = (
    "What is the capital of France?",
    "How do I boil an egg?",
    "Can you suggest a name for a pet cat?",
    "Who wrote Romeo and Juliet?",
    "What is two plus two?",
    "Explain what a black hole is.",
    "How many days are in a leap year?",
    "Give me a simple recipe for pancakes.",
    "What is the tallest mountain on Earth?",
    "How does a rainbow form?",
    "What should I name my new houseplant?",
    "Can you help me plan a birthday party?",
    "What are some good stretches after a run?",
    "How do I apologise to a friend?",
    "What is a good book for a long flight?",
    "How should I organise my desk?",
    "Hello! How are you today?",
    "Tell me a fun fact.",
    "What time zone is Tokyo in?",
    "Write a short poem about rain.",
)
REHEARSAL_DIR = "rehearsal"
CACHE_FORMAT = "2"


def replies_cache_path(home: Path, base_model: str, prompts: Sequence[str], max_new_tokens: int) -> Path:
    from hms_resources.lora.paths import lora_dir

    key = hashlib.sha256("\n".join([CACHE_FORMAT, base_model or "default", str(max_new_tokens), *prompts]).encode()).hexdigest()[:16]
    return lora_dir(home) / REHEARSAL_DIR / f"{key}.json"


REHEARSAL_WATCHED = 8
"""The last rehearsal prompts are held out of training: their loss is what training watches."""
TEXT_MODULES = ("json", "csv", "argparse", "logging", "collections", "itertools", "textwrap", "unittest", "statistics", "heapq",
                "shutil", "tempfile")
TEXT_PASSAGES = 24
TEXT_WATCHED = 4
PASSAGE_CHARACTERS = 600


def text_passages(count: int = TEXT_PASSAGES) -> list[dict]:
    """Plain-text rows (`text`): passages of standard-library docstrings, one module after another."""
    import importlib
    import inspect

    per_module = []
    for name in TEXT_MODULES:
        module = importlib.import_module(name)
        members = [getattr(module, n) for n in sorted(dir(module)) if not n.startswith("_")]
        docs = [inspect.getdoc(module) or ""] + [inspect.getdoc(m) or "" for m in members if inspect.isclass(m) or inspect.isfunction(m)]
        words = " ".join(" ".join(d.split()) for d in docs if len(d) > 80).split()
        chunks, current = [], []
        for word in words:
            current.append(word)
            if sum(len(w) + 1 for w in current) >= PASSAGE_CHARACTERS:
                chunks.append(" ".join(current))
                current = []
        per_module.append(chunks)
    ordered = [chunks[i] for i in range(max(map(len, per_module), default=0)) for chunks in per_module if i < len(chunks)]
    return [{"text": text} for text in ordered[:count]]


def base_replies(home: Path, base: tuple[Any, Any], base_model: str, prompts: Sequence[str], max_new_tokens: int) -> list[dict]:
    """The base model's greedy replies to `prompts` (`prompt`, `answer`, `finished`, and the reply's
    `loss` per token under the base), generated once per base model and length."""
    from hms_resources.lora.evaluation import generate_replies, reply_losses

    path = replies_cache_path(home, base_model, prompts, max_new_tokens)
    cached = read_json(path, None)
    if cached is not None and [r["prompt"] for r in cached["replies"]] == list(prompts):
        return cached["replies"]
    model, tokenizer = base
    finished: list[bool] = []
    replies = generate_replies(model, tokenizer, prompts, max_new_tokens, finished=finished)
    rows = [{"prompt": p, "answer": r, "finished": f} for p, r, f in zip(prompts, replies, finished)]
    for row, loss in zip(rows, reply_losses(model, tokenizer, rows)):
        row["loss"] = round(loss, 6)
    write_json(path, {"base_model": base_model or "default", "max_new_tokens": max_new_tokens, "replies": rows})
    return rows


def rehearsal_splits(home: Path, base: tuple[Any, Any], base_model: str, max_new_tokens: int) -> tuple[list[dict], list[dict]]:
    """(rows to mix into training, rows whose loss training watches): the base's replies and plain text."""
    rows = base_replies(home, base, base_model, REHEARSAL_PROMPTS, max_new_tokens)
    texts = text_passages()
    return rows[:-REHEARSAL_WATCHED] + texts[:-TEXT_WATCHED], rows[-REHEARSAL_WATCHED:] + texts[-TEXT_WATCHED:]


def mix_rehearsal(fact_rows: Sequence[dict], rehearsal: Sequence[dict], ratio: float) -> list[dict]:
    """The fact examples and `ratio` times as many rehearsal examples, cycling through them."""
    count = round(ratio * len(fact_rows)) if rehearsal else 0
    return [*fact_rows, *(rehearsal[i % len(rehearsal)] for i in range(count))]
