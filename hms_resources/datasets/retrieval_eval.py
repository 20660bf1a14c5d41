"""Retrieval-quality datasets and metrics: conversations with questions whose evidence is known.

A dataset is JSON Lines of `{"kind": "memory", ...}` and `{"kind": "question", ...}` records; every
memory becomes a `memory.created` event, and every question is asked of its own user only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hms_resources.store.events import EventError, normalize_timestamp
from hms_resources.store.memory_state import CONVERSATION_TURN


class DatasetError(ValueError):
    """A dataset line that cannot be used; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Question:
    id: str
    user_id: str
    question: str
    evidence: tuple[str, ...]
    asked_at: str | None
    category: str


@dataclass
class Dataset:
    memories: list[dict[str, Any]] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)

    @property
    def users(self) -> int:
        return len({m["user_id"] for m in self.memories})


def _required_text(record: dict[str, Any], name: str, where: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {name} must be a non-empty string")
    return value


def load_dataset(path: str | Path) -> Dataset:
    """Parse and check a dataset; every problem names `file:line` and the field."""
    dataset = Dataset()
    seen: set[tuple[str, str]] = set()
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{where}: a line must be a JSON object")
            kind = record.get("kind")
            user_id = _required_text(record, "user_id", where)
            record_id = _required_text(record, "id", where)
            if kind == "memory":
                key = (user_id, record_id)
                if key in seen:
                    raise DatasetError(f"{where}: memory id {record_id!r} repeats for user {user_id!r}")
                seen.add(key)
                try:
                    created_at = normalize_timestamp(record.get("created_at"), "created_at")
                except EventError as exc:
                    raise DatasetError(f"{where}: {exc}") from None
                speaker = record.get("speaker")
                if speaker is not None and (not isinstance(speaker, str) or not speaker.strip()):
                    raise DatasetError(f"{where}: speaker must be a non-empty string when given")
                dataset.memories.append(
                    {
                        "id": record_id,
                        "user_id": user_id,
                        "session_id": _required_text(record, "session_id", where),
                        "created_at": created_at,
                        "text": _required_text(record, "text", where),
                        "speaker": speaker,
                    }
                )
            elif kind == "question":
                evidence = record.get("evidence")
                if not isinstance(evidence, list) or not evidence or not all(isinstance(e, str) and e for e in evidence):
                    raise DatasetError(f"{where}: evidence must be a non-empty list of memory ids")
                asked_at = record.get("asked_at")
                if asked_at is not None:
                    try:
                        asked_at = normalize_timestamp(asked_at, "asked_at")
                    except EventError as exc:
                        raise DatasetError(f"{where}: {exc}") from None
                dataset.questions.append(
                    Question(
                        id=record_id,
                        user_id=user_id,
                        question=_required_text(record, "question", where),
                        evidence=tuple(dict.fromkeys(evidence)),
                        asked_at=asked_at,
                        category=str(record.get("category") or "unlabelled"),
                    )
                )
            else:
                raise DatasetError(f"{where}: kind must be \"memory\" or \"question\", not {kind!r}")
    for question in dataset.questions:
        missing = [e for e in question.evidence if (question.user_id, e) not in seen]
        if missing:
            raise DatasetError(f"{path}: question {question.id!r} names evidence that is not a memory of {question.user_id!r}: {missing}")
    return dataset


FILLER_ASKS = (
    "{question}",
    "Hey, quick one: {question}",
    "Can you remind me? {question}",
    "I forgot, {question}",
)
FILLER_REPLIES = (
    "I'm not sure what you're looking for; could you tell me more?",
    "I don't have enough information to answer that. Could you give me more details?",
    "Sorry, I can't recall that. What would you like to know about {topic}?",
    "I'm not certain about {topic}. Can you tell me a bit more so I can help?",
    "Good question! I don't know much about {topic} yet; tell me more and I'll remember it.",
    "Hmm, I'm not sure. Could you clarify what you mean by {topic}?",
)
"""A captured chat exchange in which the local model could not help: the user's words and the model's
filler, as the chat endpoint records them (speakers "user" and "assistant")."""


def with_filler(dataset: Dataset, exchanges: int, *, seed: int = 0) -> Dataset:
    """`dataset` with `exchanges` captured exchanges per user: the user asks one of their own questions
    (a captured chat asks what the evaluation asks) and the assistant answers with filler, at a time
    among the user's sessions. No question names them as evidence, so the reranker learns to rank
    the assistant's filler below the turns that state the facts; recall shows what it costs."""
    if exchanges < 0:
        raise ValueError(f"filler exchanges must be 0 or more, got {exchanges}")
    if not exchanges:
        return dataset
    rng = np.random.default_rng(seed)
    memories = list(dataset.memories)
    for user in sorted({m["user_id"] for m in dataset.memories}):
        own = [m for m in dataset.memories if m["user_id"] == user]
        questions = [q.question for q in dataset.questions if q.user_id == user] or ["what did we talk about?"]
        for k in range(exchanges):
            at = datetime.fromisoformat(own[int(rng.integers(len(own)))]["created_at"]) + timedelta(minutes=5)
            question = questions[int(rng.integers(len(questions)))]
            topic = " ".join(question.rstrip("?.! ").split()[-3:]).lower()
            ask = FILLER_ASKS[int(rng.integers(len(FILLER_ASKS)))].format(question=question)
            reply = FILLER_REPLIES[int(rng.integers(len(FILLER_REPLIES)))].format(topic=topic)
            for turn, (speaker, text) in enumerate((("user", ask), ("assistant", reply))):
                memories.append({
                    "id": f"filler-{k}-{turn}", "user_id": user, "session_id": f"filler-{k}", "speaker": speaker, "text": text,
                    "created_at": (at + timedelta(seconds=30 * turn)).isoformat(),
                })
    return Dataset(memories, list(dataset.questions))


def write_dataset(dataset: Dataset, path: str | Path) -> Path:
    """`dataset` as JSON Lines that `load_dataset` reads back."""
    lines = [orjson.dumps({"kind": "memory", **m}) for m in dataset.memories]
    lines += [
        orjson.dumps({"kind": "question", "id": q.id, "user_id": q.user_id, "question": q.question, "evidence": list(q.evidence),
                      "asked_at": q.asked_at, "category": q.category})
        for q in dataset.questions
    ]
    Path(path).write_bytes(b"\n".join(lines) + b"\n")
    return Path(path)


def memory_events(memories: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """One `memory.created` event per dataset memory; the event id is derived, so re-ingesting is a no-op."""
    for m in memories:
        payload: dict[str, Any] = {"content": m["text"], "session_id": m["session_id"], "memory_type": CONVERSATION_TURN}
        if m.get("speaker"):
            payload["created_by"] = m["speaker"]
        yield {
            "event_id": f"dataset:{m['user_id']}:{m['id']}",
            "type": "memory.created",
            "user_id": m["user_id"],
            "memory_id": m["id"],
            "occurred_at": m["created_at"],
            "payload": payload,
        }


def evidence_recall(evidence: Sequence[str], source_ids: Iterable[str]) -> float:
    found = set(source_ids)
    return sum(1 for e in evidence if e in found) / len(evidence)


def latency_summary(milliseconds: Sequence[float]) -> dict[str, float]:
    values = np.asarray(milliseconds, dtype=np.float64)
    if not len(values):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    return {name: round(float(np.percentile(values, q)), 3) for name, q in (("p50", 50), ("p95", 95), ("p99", 99))}
