"""How memories appear in a prompt, in one place: a memory's line (who said it and the text), a
concept summary's line, the date line above each day's memories, and a context's whole prompt."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

import numpy as np

CONTEXT_HEADER = "What you remember about this user (use it when it helps; never invent beyond it):"
"""The line above the memory in a model's system turn: the chat plugins put it there, and a LoRA
teacher reads its facts under it (`lora.distillation`), so both see the same layout."""
MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class PromptItem(Protocol):
    memory_id: str
    text: str
    kind: str
    created_at: str


def render_memory(speaker: str | None, content: str) -> str:
    """How a memory is indexed and appears in a prompt: who said it and the text. Its date is shown once
    per day above the memories of that day (`day_header`), not on every line."""
    who = f"{speaker}: " if speaker else ""
    return f"{who}{' '.join(content.split())}"


def render_summary(label: Sequence[str], summary: str) -> str:
    return f"[summary: {', '.join(label[:3])}] {' '.join(summary.split())}"


def day_header(created_at: str | None) -> str:
    """The line above a day's memories in a prompt, "[8 May 2023]": temporal questions need the date,
    and the base LLM's tokenizer spends a token per digit, so the month is a word."""
    day = (created_at or "")[:10]
    if not day:
        return ""
    moment = datetime.fromisoformat(day)
    return f"[{moment.day} {MONTH_ABBREVIATIONS[moment.month - 1]} {moment.year}]"


def day_header_tokens(count_tokens: Callable[[list[str]], np.ndarray]) -> int:
    """Tokens of one day's date line in a prompt, with its line break: what packing charges the first
    memory of a day."""
    return int(count_tokens([day_header("2000-01-01")])[0]) + 1


def render_prompt(items: Iterable[PromptItem]) -> str:
    """Summaries first, then memories and recent turns in time order, one per line under a line
    with their day's date; each item's `tokens` includes its line break and, for the first item
    packed of a day, that day's date line, so the prompt stays within the budget."""
    items = list(items)
    lines = [i.text for i in items if i.kind == "concept_summary"]
    shown = ""
    for item in sorted((i for i in items if i.kind != "concept_summary"), key=lambda i: (i.created_at, i.memory_id)):
        header = day_header(item.created_at)
        if header and header != shown:
            lines.append(header)
            shown = header
        lines.append(item.text)
    return "\n".join(lines)
