"""LoRA candidate sets: per user and concept, the memories worth crystallizing into adapter weights,
and the curation a person applies to them.

A memory is a candidate when it is stable (not changed for a while), important (its dynamic
importance from the latest tier partition, or its stated importance before any), confident,
accessed, and in a well-supported concept; it is the user's words, not the assistant's reply, and a
statement, not a question asked in a conversation. The criteria are recorded with every set, and every
memory left out is counted by its first failing criterion, so an operator sees why a set is small.

Curation lives in one JSON file under the HMS home (`curation.json`): sets and memories a person
approved or rejected. A rejected memory is never in any set; a rejected set is never trained; an
approved memory is kept even where the criteria would leave it out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hms_resources.common.files import read_json, write_json
from hms_resources.semantic.concepts import Concept, is_assistant_reply
from hms_resources.store.memory_state import CONVERSATION_TURN, Memory

CURATION_FILE = "curation.json"
CANDIDATE_SETS_FILE = "candidate_sets.json"
APPROVED, REJECTED, PENDING = "approved", "rejected", "pending"


@dataclass(frozen=True)
class CandidateCriteria:
    stable_days: float = 7.0
    """A memory changed more recently than this is still settling."""
    min_importance: float = 0.5
    min_confidence: float = 0.6
    """Applies only to memories that state a confidence."""
    min_accesses: int = 1
    min_concept_size: int = 3
    min_concept_cohesion: float = 0.5
    min_set_size: int = 3
    include_assistant_replies: bool = False
    """Let the assistant's captured replies be candidates; off, an adapter learns the user's words only."""


@dataclass
class CandidateSet:
    set_id: str
    user_id: str
    concept_id: str
    label: list[str]
    memory_ids: list[str]
    fingerprint: str
    """Changes whenever a member is added, removed or reworded: what the training sensor watches."""
    status: str
    criteria: dict[str, Any]
    left_out: dict[str, int] = field(default_factory=dict)
    member_digests: dict[str, str] = field(default_factory=dict)
    """Per member, a digest of its text: how the training sensor tells how much of a set changed."""


@dataclass
class Curation:
    approved_sets: set[str] = field(default_factory=set)
    rejected_sets: set[str] = field(default_factory=set)
    approved_memories: set[tuple[str, str]] = field(default_factory=set)
    rejected_memories: set[tuple[str, str]] = field(default_factory=set)

    def set_status(self, set_id: str) -> str:
        if set_id in self.rejected_sets:
            return REJECTED
        return APPROVED if set_id in self.approved_sets else PENDING


class CurationError(ValueError):
    """A curation file that cannot be used; the message names the file and the entry."""


def set_id_for(user_id: str, concept_id: str) -> str:
    return f"{user_id}/{concept_id}"


def load_curation(home: Path) -> Curation:
    path = Path(home) / CURATION_FILE
    if not path.exists():
        return Curation()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CurationError(f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise CurationError(f"{path}: expected an object with approved_sets, rejected_sets, approved_memories, rejected_memories")
    curation = Curation()
    for name in ("approved_sets", "rejected_sets"):
        values = raw.get(name, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise CurationError(f"{path}: {name} must be a list of set ids (user/concept)")
        getattr(curation, name).update(values)
    for name in ("approved_memories", "rejected_memories"):
        values = raw.get(name, [])
        for position, value in enumerate(values if isinstance(values, list) else [None]):
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
                raise CurationError(f"{path}: {name}[{position}] must be [user_id, memory_id]")
            getattr(curation, name).add((value[0], value[1]))
    both = curation.approved_sets & curation.rejected_sets
    if both:
        raise CurationError(f"{path}: sets both approved and rejected: {sorted(both)[:5]}")
    return curation


def save_curation(home: Path, curation: Curation) -> Path:
    """Write atomically, sorted, so the file diffs cleanly under version control."""
    body = {
        "approved_sets": sorted(curation.approved_sets),
        "rejected_sets": sorted(curation.rejected_sets),
        "approved_memories": sorted(map(list, curation.approved_memories)),
        "rejected_memories": sorted(map(list, curation.rejected_memories)),
    }
    return write_json(Path(home) / CURATION_FILE, body)


def _parse(timestamp: str | None) -> datetime | None:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")) if timestamp else None


def why_left_out(memory: Memory, importance: float | None, criteria: CandidateCriteria, as_of: datetime) -> str | None:
    """The first criterion a memory fails, or None when it is a candidate."""
    if not memory.content or memory.is_forgotten or memory.is_archived:
        return "not live"
    if is_assistant_reply(memory) and not criteria.include_assistant_replies:
        return "the assistant's words"
    if is_question(memory):
        return "a question"
    changed = _parse(memory.last_modified_at or memory.created_at)
    if changed is None or changed > as_of - timedelta(days=criteria.stable_days):
        return "not stable"
    if importance is None or importance < criteria.min_importance:
        return "not important"
    if memory.confidence is not None and memory.confidence < criteria.min_confidence:
        return "not confident"
    if memory.access_count < criteria.min_accesses:
        return "not accessed"
    return None


def is_question(memory: Memory) -> bool:
    """A conversation turn that asks: training would restate it as something the user told ("You told
    me: What should I cook?"), which teaches no fact."""
    return memory.memory_type == CONVERSATION_TURN and (memory.content or "").rstrip().endswith("?")


def select_candidate_sets(
    memories: list[Memory],
    concepts: list[Concept],
    importance: dict[tuple[str, str], float],
    criteria: CandidateCriteria,
    as_of: datetime,
    curation: Curation = Curation(),
) -> list[CandidateSet]:
    """Candidate sets of every well-supported concept with at least `min_set_size` candidates after
    curation, in a stable order. `importance`: the dynamic importance of each (user, memory)."""
    by_key = {m.key: m for m in memories}
    found: list[CandidateSet] = []
    for concept in sorted(concepts, key=lambda c: (c.user_id, c.concept_id)):
        if concept.size < criteria.min_concept_size or concept.cohesion < criteria.min_concept_cohesion:
            continue
        chosen: list[Memory] = []
        left_out: dict[str, int] = {}
        for memory_id in sorted(concept.member_ids):
            key = (concept.user_id, memory_id)
            memory = by_key.get(key)
            if memory is None:
                reason = "not live"
            elif key in curation.rejected_memories:
                reason = "rejected by curation"
            elif key in curation.approved_memories and memory.content and not memory.is_forgotten:
                reason = None
            else:
                stated = memory.importance
                reason = why_left_out(memory, importance.get(key, stated), criteria, as_of)
            if reason is None:
                chosen.append(memory)
            else:
                left_out[reason] = left_out.get(reason, 0) + 1
        if len(chosen) < criteria.min_set_size:
            continue
        set_id = set_id_for(concept.user_id, concept.concept_id)
        digest = hashlib.sha256()
        for memory in chosen:
            digest.update(f"{memory.memory_id}\x1f{memory.content}\x1e".encode())
        found.append(
            CandidateSet(
                set_id=set_id,
                user_id=concept.user_id,
                concept_id=concept.concept_id,
                label=list(concept.label),
                memory_ids=[m.memory_id for m in chosen],
                fingerprint=digest.hexdigest()[:16],
                status=curation.set_status(set_id),
                criteria=asdict(criteria),
                left_out=left_out,
                member_digests={m.memory_id: content_digest(m.content) for m in chosen},
            )
        )
    return found


def content_digest(content: str | None) -> str:
    return hashlib.sha256((content or "").encode()).hexdigest()[:12]


def changed_share(trained: dict[str, str], current: dict[str, str]) -> float:
    """The share of a set's members (old and new together) added, removed or reworded since training."""
    members = trained.keys() | current.keys()
    if not members:
        return 0.0
    return sum(1 for m in members if trained.get(m) != current.get(m)) / len(members)


def save_candidate_sets(directory: Path, sets: list[CandidateSet]) -> Path:
    return write_json(Path(directory) / CANDIDATE_SETS_FILE, [asdict(s) for s in sets])


def load_candidate_sets(directory: Path) -> list[CandidateSet]:
    return [CandidateSet(**record) for record in read_json(Path(directory) / CANDIDATE_SETS_FILE, [])]


CURATION_ACTIONS = ("approve", "reject", "reset")


def curate(curation: Curation, action: str, set_ids: list[str] = (), memories: list[tuple[str, str]] = ()) -> Curation:
    """`action` on sets and (user, memory) pairs: approve or reject them, or reset them to undecided.
    A decision replaces the opposite one, so no set or memory is ever both."""
    if action not in CURATION_ACTIONS:
        raise ValueError(f"unknown curation action {action!r}; expected one of {', '.join(CURATION_ACTIONS)}")
    sets_in = {"approve": curation.approved_sets, "reject": curation.rejected_sets}
    memories_in = {"approve": curation.approved_memories, "reject": curation.rejected_memories}
    for group, items in ((sets_in, set(set_ids)), (memories_in, set(memories))):
        for name, members in group.items():
            if name == action:
                members |= items
            else:
                members -= items
    return curation
