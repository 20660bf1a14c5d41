"""Training data for a LoRA adapter from one candidate set: chat examples that state each memory and
ask for it, and held-out probe questions phrased differently from every training prompt, saved as a
versioned `datasets` dataset.

Each memory gets a cue: its most distinctive content word within the set. Training asks "What did I
tell you about <cue>?", "What have I said about <cue>?" and "Tell me something you remember about
me."; probes ask "Remind me what I mentioned regarding <cue>." and score recall by the answer's own
content words."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hms_resources.common.limits import file_name
from hms_resources.common.text import surface_words
from hms_resources.lora.candidates import CandidateSet
from hms_resources.store.memory_state import Memory

TRAIN_TEMPLATES = ("What did I tell you about {cue}?", "What have I said about {cue}?", "Tell me something you remember about me.")
PROBE_TEMPLATE = "Remind me what I mentioned regarding {cue}."
ANSWER_TEMPLATE = "You told me: {content}"


class TrainingDataError(ValueError):
    """A candidate set whose examples fail a check; the message names the set and the check."""


@dataclass(frozen=True)
class DataLimits:
    max_tokens: int = 256
    """Longest example (prompt and answer) in the base model's tokens."""
    min_examples: int = 6


def cues(contents: Sequence[str]) -> list[str]:
    """Per text, its word that is rarest across the texts (ties: the earlier word)."""
    frequency = Counter(w for text in contents for w in set(surface_words(text)))
    found = []
    for text in contents:
        words = surface_words(text)
        found.append(min(words, key=lambda w: (frequency[w], words.index(w))) if words else "that")
    return found


def answersurface_words(content: str, question: str) -> list[str]:
    """The content words of a memory that a question does not give away: what fact recall looks for."""
    asked = set(surface_words(question))
    return sorted({w for w in surface_words(content) if w not in asked})


def _said(memory: Memory) -> str:
    return " ".join((memory.content or "").split())


def build_examples(candidate_set: CandidateSet, memories: dict[tuple[str, str], Memory]) -> tuple[list[dict], list[dict]]:
    """Training examples and probes for a set, one memory per distinct text; every memory must be
    the set's user's."""
    chosen = []
    for memory_id in candidate_set.memory_ids:
        memory = memories.get((candidate_set.user_id, memory_id))
        if memory is None or not memory.content:
            raise TrainingDataError(f"{candidate_set.set_id}: memory {memory_id} is not a live memory of {candidate_set.user_id}")
        chosen.append(memory)
    seen: set[str] = set()
    chosen = [m for m in chosen if not (_said(m) in seen or seen.add(_said(m)))]
    contents = [_said(m) for m in chosen]
    train: list[dict] = []
    probes: list[dict] = []
    for memory, content, cue in zip(chosen, contents, cues(contents)):
        answer = ANSWER_TEMPLATE.format(content=content)
        base = {"user_id": memory.user_id, "memory_id": memory.memory_id}
        for template in TRAIN_TEMPLATES:
            train.append({**base, "prompt": template.format(cue=cue), "answer": answer})
        question = PROBE_TEMPLATE.format(cue=cue)
        probes.append({**base, "prompt": question, "answer": answer, "answer_words": answersurface_words(content, question)})
    return train, probes


def check_examples(
    set_id: str, user_id: str, train: list[dict], probes: list[dict], count_tokens: Callable[[list[str]], Sequence[int]], limits: DataLimits
) -> dict[str, Any]:
    """Raise on: duplicates, another user's memory, a probe asked as in training, an example over the
    length limit, too few examples. Returns the figures the checks saw. Messages name memories by id,
    never by what they say: they reach logs and metadata, which outlive a forgotten memory."""
    keys = Counter((e["prompt"], e["answer"]) for e in train)
    duplicates = sorted({e["memory_id"] for e in train if keys[(e["prompt"], e["answer"])] > 1})
    if duplicates:
        raise TrainingDataError(f"{set_id}: duplicate training examples of memories {duplicates[:5]}")
    strangers = sorted({e["memory_id"] for e in train + probes if e["user_id"] != user_id})
    if strangers:
        raise TrainingDataError(f"{set_id}: examples from another user's memories: {strangers[:5]}")
    trained_prompts = {e["prompt"] for e in train}
    leaked = sorted({e["memory_id"] for e in probes if e["prompt"] in trained_prompts})
    if leaked:
        raise TrainingDataError(f"{set_id}: probes phrased as training prompts, of memories {leaked[:5]}")
    lengths = [int(n) for n in count_tokens([f"{e['prompt']}\n{e['answer']}" for e in train + probes])]
    longest = max(lengths, default=0)
    if longest > limits.max_tokens:
        raise TrainingDataError(f"{set_id}: an example has {longest} tokens, over the limit of {limits.max_tokens}")
    if len(train) < limits.min_examples:
        raise TrainingDataError(f"{set_id}: {len(train)} training examples, fewer than the minimum of {limits.min_examples}")
    return {"train_examples": len(train), "probes": len(probes), "longest_tokens": longest, "mean_tokens": round(sum(lengths) / max(len(lengths), 1), 1)}


def dataset_version(train: list[dict], probes: list[dict]) -> str:
    """Names the exact examples: the same set and memories always give the same version."""
    body = json.dumps([train, probes], sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(body).hexdigest()[:12]


def save_dataset(directory: Path, set_id: str, train: list[dict], probes: list[dict]) -> tuple[str, Path]:
    """A `datasets.DatasetDict` with `train` and `eval` splits under `<directory>/<set>/<version>`;
    an existing version is left as it is."""
    from datasets import Dataset, DatasetDict

    version = dataset_version(train, probes)
    target = Path(directory) / file_name(set_id) / version
    if not (target / "dataset_dict.json").exists():
        DatasetDict({"train": Dataset.from_list(train), "eval": Dataset.from_list(probes)}).save_to_disk(str(target))
    return version, target

