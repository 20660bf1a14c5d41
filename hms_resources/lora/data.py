"""Training data for a LoRA adapter from one candidate set, built to teach facts rather than strings,
saved as a versioned `datasets` dataset with four splits:

- `facts`: each distinct memory text once (duplicates dropped), with its cue words;
- `train`: every fact asked several ways (one template family, several of the fact's own cue words)
  and stated by the user, with answers that restate it;
- `validation`: paraphrases from a second template family on a held-back cue word, what training
  stops on;
- `eval`: paraphrases from a third family on another held-back word, sharing no content word with
  any training prompt (checked), what the registry's gate and the comparison score.

A cue is a content word that only one fact of the set uses, so a question on it names one fact.
Rehearsal examples (the base model's own replies to unrelated prompts) are not user data: the
trainer mixes them in per base model (`lora.rehearsal`)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hms_resources.common.limits import file_name
from hms_resources.common.text import surface_words
from hms_resources.lora.candidates import CandidateSet
from hms_resources.lora.training import RECIPES
from hms_resources.store.memory_state import Memory

TRAIN_QUESTIONS = (
    "What did I tell you about {cue}?",
    "What do you know about {cue}?",
    "Do you remember anything I said about {cue}?",
    "Tell me what I shared about {cue}.",
    "I mentioned {cue} once. What was it?",
    "{Cue}? What was that about?",
    "Can you recall my note on {cue}?",
)
QUESTIONS_PER_CUE = 4
TRAIN_STATEMENTS = (
    ("Please remember this about me: {fact}", "Noted, I will remember it: {fact}"),
    ("Here is something about me. {fact}", "Thanks for telling me: {fact}"),
)
ANSWERS = ("You told me: {fact}", "You mentioned this: {fact}", "From what you said: {fact}")
VALIDATION_QUESTIONS = ("Is there something about {cue} worth bringing up again?", "Which detail did you keep on {cue}?")
EVAL_QUESTIONS = ("Remind me, what's the story with {cue}?", "I forgot the details regarding {cue}. Could you fill me in?")
SPLITS = ("facts", "train", "validation", "eval")


class TrainingDataError(ValueError):
    """A candidate set whose examples fail a check; the message names the set and the check."""


class TooFewFacts(TrainingDataError):
    """A set with fewer distinct facts than the minimum: not a fault in the data, it is not trained."""


@dataclass(frozen=True)
class DataLimits:
    max_tokens: int = 256
    """Longest example (prompt and answer) in the base model's tokens."""
    min_facts: int = 4
    """Fewer distinct facts than this are not trained: a forced choice among two or three facts says little."""


@dataclass
class FactExamples:
    facts: list[dict] = field(default_factory=list)
    train: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)

    def splits(self) -> dict[str, list[dict]]:
        return {name: getattr(self, name) for name in SPLITS}


def fact_cues(contents: Sequence[str]) -> list[list[str]]:
    """Per text, its words no other text uses, in order: each one alone names the fact."""
    frequency = Counter(w for text in contents for w in set(surface_words(text)))
    return [list(dict.fromkeys(w for w in surface_words(text) if frequency[w] == 1)) for text in contents]


def answer_words(content: str, question: str) -> list[str]:
    """The content words of a fact that a question does not give away: what recall looks for."""
    asked = set(surface_words(question))
    return sorted({w for w in surface_words(content) if w not in asked})


def _said(memory: Memory) -> str:
    return " ".join((memory.content or "").split())


def _template_words(templates: Sequence[str]) -> set[str]:
    return {w for t in templates for w in surface_words(t.replace("{cue}", "").replace("{Cue}", ""))}


def _held_back(cues: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(eval cue, validation cue, training cues): the rarest-looking (longest) words are held back, so a
    held-out question names its fact as clearly as a training one. No cue is a word of the other
    side's templates, so held-out questions share no word with training questions."""
    asked = _template_words(TRAIN_QUESTIONS)
    held = _template_words(VALIDATION_QUESTIONS + EVAL_QUESTIONS)
    ranked = sorted((w for w in cues if w not in asked), key=lambda w: (-len(w), cues.index(w)))
    held_eval = ranked[0] if len(cues) >= 2 and ranked else None
    held_validation = ranked[1] if len(cues) >= 3 and len(ranked) > 1 else None
    return held_eval, held_validation, [w for w in cues if w not in (held_eval, held_validation) and w not in held]


PHRASE_WORDS = 3


def cue_phrase(content: str, cue: str) -> str:
    """The cue with its neighbours as the fact writes them (up to `PHRASE_WORDS` words, trimmed of
    function words at both ends): how a person names a fact ("sister Priya", "beagle named Biscuit")."""
    from hms_resources.common.text import STOPWORDS

    words = [w.strip(".,;:!?\"()") for w in content.split()]
    at = next((i for i, w in enumerate(words) if w.lower() == cue or w.lower().startswith(cue)), None)
    if at is None:
        return cue
    chosen = [w for w in words[max(at - 1, 0):at + PHRASE_WORDS] if w]
    plain = {"i", "my", "me", "i'm", "we", "our"} | set(STOPWORDS)
    while len(chosen) > 1 and chosen[0].lower() in plain:
        chosen = chosen[1:]
    chosen = chosen[:PHRASE_WORDS]
    while len(chosen) > 1 and chosen[-1].lower() in plain:
        chosen = chosen[:-1]
    return " ".join(chosen) or cue


def build_examples(candidate_set: CandidateSet, memories: dict[tuple[str, str], Memory], recipe: str = "distillation") -> FactExamples:
    """The set's examples, one fact per distinct text; every memory must be the set's user's. Under
    `distillation` each question names its fact by a phrase and no statement rows are made (the
    teacher answers the questions); held-out questions use held-out templates and held-back cues."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
    phrased = recipe == "distillation"
    chosen = []
    for memory_id in candidate_set.memory_ids:
        memory = memories.get((candidate_set.user_id, memory_id))
        if memory is None or not memory.content:
            raise TrainingDataError(f"{candidate_set.set_id}: memory {memory_id} is not a live memory of {candidate_set.user_id}")
        chosen.append(memory)
    seen: set[str] = set()
    chosen = [m for m in chosen if not (_said(m) in seen or seen.add(_said(m)))]
    contents = [_said(m) for m in chosen]
    examples = FactExamples()
    for position, (memory, content, cues) in enumerate(zip(chosen, contents, fact_cues(contents))):
        base = {"user_id": memory.user_id, "memory_id": memory.memory_id, "fact": content}
        held_eval, held_validation, train_cues = _held_back(cues)
        examples.facts.append({**base, "cues": cues})
        if phrased:
            held_eval, held_validation = held_eval or (cues[0] if cues else None), held_validation or held_eval or (cues[0] if cues else None)
            train_cues = train_cues or list(cues[:1])

        def named(cue: str) -> str:
            return cue_phrase(content, cue) if phrased else cue

        for n, cue in enumerate(train_cues[:3]):
            for k in range(QUESTIONS_PER_CUE):
                template = TRAIN_QUESTIONS[(position + n * QUESTIONS_PER_CUE + k) % len(TRAIN_QUESTIONS)]
                reply = ANSWERS[(position + n + k) % len(ANSWERS)]
                examples.train.append({**base, "prompt": template.format(cue=named(cue), Cue=_capital(named(cue))), "answer": reply.format(fact=content)})
        for prompt, reply in () if phrased else TRAIN_STATEMENTS:
            examples.train.append({**base, "prompt": prompt.format(fact=content), "answer": reply.format(fact=content)})
        for split, cue, templates in (("validation", held_validation, VALIDATION_QUESTIONS), ("eval", held_eval, EVAL_QUESTIONS)):
            if cue is None:
                continue
            for k, template in enumerate(templates):
                question = template.format(cue=named(cue), Cue=_capital(named(cue)))
                getattr(examples, split).append({**base, "prompt": question, "answer": ANSWERS[k % len(ANSWERS)].format(fact=content),
                                                 "answer_words": answer_words(content, question)})
    return examples


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def prompt_words(rows: Sequence[dict]) -> set[str]:
    return {w for row in rows for w in surface_words(row["prompt"])}


def check_examples(
    set_id: str, user_id: str, examples: FactExamples, count_tokens: Callable[[list[str]], Sequence[int]], limits: DataLimits,
    recipe: str = "distillation",
) -> dict[str, Any]:
    """Raise on: too few distinct facts, duplicates, another user's memory, a held-out question asked in
    training (under `imitation`, one sharing any content word with the training questions; a phrase
    names its fact with the fact's own words, so under `distillation` held-out questions differ by
    template and cue), an example over the length limit. Returns the figures the checks saw. Messages name memories by id, never by what they say: they reach logs and
    metadata, which outlive a forgotten memory."""
    if len(examples.facts) < limits.min_facts:
        raise TooFewFacts(f"{set_id}: {len(examples.facts)} distinct facts, fewer than the minimum of {limits.min_facts}")
    train = examples.train
    keys = Counter((e["prompt"], e["answer"]) for e in train)
    duplicates = sorted({e["memory_id"] for e in train if keys[(e["prompt"], e["answer"])] > 1})
    if duplicates:
        raise TrainingDataError(f"{set_id}: duplicate training examples of memories {duplicates[:5]}")
    rows = [row for split in examples.splits().values() for row in split]
    strangers = sorted({e["memory_id"] for e in rows if e["user_id"] != user_id})
    if strangers:
        raise TrainingDataError(f"{set_id}: examples from another user's memories: {strangers[:5]}")
    if recipe == "imitation":
        asked = prompt_words([e for e in train if e["fact"] not in e["prompt"]])
        leaked = sorted({e["memory_id"] for e in examples.validation + examples.eval if set(surface_words(e["prompt"])) & asked})
    else:
        questions = {e["prompt"] for e in train}
        leaked = sorted({e["memory_id"] for e in examples.validation + examples.eval if e["prompt"] in questions})
    if leaked:
        raise TrainingDataError(f"{set_id}: held-out questions share words with training questions, of memories {leaked[:5]}")
    if not examples.eval:
        raise TrainingDataError(f"{set_id}: no fact has a word of its own to ask a held-out question with")
    lengths = [int(n) for n in count_tokens([f"{e['prompt']}\n{e['answer']}" for e in rows if "prompt" in e])]
    longest = max(lengths, default=0)
    if longest > limits.max_tokens:
        raise TrainingDataError(f"{set_id}: an example has {longest} tokens, over the limit of {limits.max_tokens}")
    return {"facts": len(examples.facts), "train_examples": len(train), "validation_examples": len(examples.validation),
            "probes": len(examples.eval), "longest_tokens": longest, "mean_tokens": round(sum(lengths) / max(len(lengths), 1), 1)}


def dataset_version(examples: FactExamples) -> str:
    """Names the exact examples: the same set and memories always give the same version."""
    body = json.dumps(examples.splits(), sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(body).hexdigest()[:12]


def save_dataset(directory: Path, set_id: str, examples: FactExamples) -> tuple[str, Path]:
    """A `datasets.DatasetDict` of the four splits under `<directory>/<set>/<version>`; an existing
    version is left as it is."""
    from datasets import Dataset, DatasetDict

    version = dataset_version(examples)
    target = Path(directory) / file_name(set_id) / version
    if not (target / "dataset_dict.json").exists():
        DatasetDict({name: Dataset.from_list(rows) for name, rows in examples.splits().items()}).save_to_disk(str(target))
    return version, target


def load_examples(path: str | Path) -> FactExamples:
    from datasets import load_from_disk

    data = load_from_disk(str(path))
    return FactExamples(**{name: data[name].to_list() if name in data else [] for name in SPLITS})
