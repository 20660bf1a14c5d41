"""A seeded generator of realistic multi-user memory events, for the demo, the tests and the benchmarks.

Each user is a persona with facts, preferences and habits; over sessions the assistant records
memories, restates recurring facts (as updates), recalls memories (accesses with feedback), tags and
relates them, archives stale ones and now and then forgets one on request. A persona may also tell
several facts on one topic together (`told_together`), halfway through its sessions, which the assistant
recalls in the sessions after: a group large enough for a LoRA candidate set to train on. The same
seed gives the same events, byte for byte. The personas and wordings are data, in
`templates/synthetic_personas.json`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from hms_resources.datasets import read_templates

_TEMPLATES = read_templates("synthetic_personas")


def _persona(spec: dict[str, Any]) -> dict[str, Any]:
    """A persona from `templates/synthetic_personas.json`, its facts and preferences as (type, category, content)."""
    return {
        **spec,
        "facts": [("fact", f["category"], f["content"]) for f in spec["facts"]],
        "preferences": [("preference", p["category"], p["content"]) for p in spec["preferences"]],
    }


PERSONAS: list[dict[str, Any]] = [_persona(spec) for spec in _TEMPLATES["personas"]]
HOME: str = _TEMPLATES["home"]
MOVED: str = _TEMPLATES["moved"]
TOPIC_MENTIONS: list[str] = _TEMPLATES["topic_mentions"]

ACCESS_METHODS = ("semantic_search", "keyword_search", "context_assembly", "direct")
CONTEXT_KINDS = ("temporal", "social", "technical", "emotional")


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def generate_events(
    *,
    users: int = 4,
    sessions_per_user: int = 12,
    seed: int = 0,
    start: datetime = datetime(2026, 9, 1, 8, 0, tzinfo=timezone.utc),
    days: int = 60,
) -> Iterator[dict[str, Any]]:
    """Events of `users` personas over `days`, in time order; deterministic for a given seed."""
    rng = random.Random(seed)
    timeline: list[tuple[str, int, dict[str, Any]]] = []
    for user_index in range(users):
        persona = PERSONAS[user_index % len(PERSONAS)]
        suffix = "" if user_index < len(PERSONAS) else f"-{user_index // len(PERSONAS)}"
        user_id = f"user-{persona['name'].lower()}{suffix}"
        told_rng = random.Random(f"{seed}/{user_id}")
        for order, event in enumerate(_user_events(rng, told_rng, persona, user_id, sessions_per_user, start, days)):
            timeline.append((event["occurred_at"], user_index * 1_000_000 + order, event))
    timeline.sort(key=lambda item: (item[0], item[1]))
    for _, _, event in timeline:
        yield event


def _user_events(
    rng: random.Random,
    told_rng: random.Random,
    persona: dict[str, Any],
    user_id: str,
    sessions: int,
    start: datetime,
    days: int,
) -> Iterator[dict[str, Any]]:
    """One persona's sessions, phase by phase; the phases draw from `rng` in a fixed order, so a seed
    gives the same events. The facts told together draw from `told_rng` alone and stay out of the
    memories `rng` picks from, so that adding them changes no other draw, and no other user's events."""
    session_starts = sorted(start + timedelta(minutes=rng.randrange(days * 24 * 60)) for _ in range(sessions))
    history = _UserHistory(rng, persona, user_id, start)
    told = persona.get("told_together")
    told_in = max(1, sessions // 2)
    told_per_session = max(2, math.ceil(len(told["facts"]) / max(1, sessions - told_in))) if told else 0
    pool: list[tuple[str, str, str]] = (
        list(persona["facts"])
        + list(persona["preferences"])
        + [("event", "life", text) for text in persona["events"]]
        + [("insight", "self", text) for text in persona["insights"]]
    )
    rng.shuffle(pool)
    for session_number, moment in enumerate(session_starts, start=1):
        session_id = f"{user_id}-s{session_number:03d}"
        history.at = max(moment, history.at + timedelta(minutes=30))
        yield from history.created(pool, session_id)
        if told and session_number == told_in:
            yield from history.told_together(told_rng, told, session_id)
        yield from history.home(session_id, moved=session_number == sessions - 2)
        usable = [m["memory_id"] for m in history.memories if m["memory_id"] not in history.forgotten and m["memory_id"] not in history.told]
        yield from history.recalled(usable)
        if told and (session_number > told_in or sessions == told_in):
            yield from history.told_recalled(told_rng, told["query"], per_session=told_per_session)
        if session_number % 5 == 0:
            yield from history.archived_one(usable)
        if session_number == sessions - 1:
            yield from history.forgotten_one(usable)


class _UserHistory:
    """What one user's generator remembers between sessions: its memories, what was archived or
    forgotten, where the home fact is, the facts told together, and the clock."""

    def __init__(self, rng: random.Random, persona: dict[str, Any], user_id: str, start: datetime) -> None:
        self.rng, self.persona, self.user_id, self.at = rng, persona, user_id, start
        self.counter = 0
        self.memories: list[dict[str, Any]] = []
        self.forgotten: set[str] = set()
        self.archived: set[str] = set()
        self.home_memory: str | None = None
        self.told: list[str] = []
        self.told_recalls = 0

    def event(self, kind: str, memory_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.counter += 1
        return {
            "event_id": f"{self.user_id}-e{self.counter:06d}",
            "type": kind,
            "user_id": self.user_id,
            "memory_id": memory_id,
            "occurred_at": _timestamp(self.at),
            "payload": payload,
        }

    def created(self, pool: list[tuple[str, str, str]], session_id: str) -> Iterator[dict[str, Any]]:
        """The session's new memories: from the persona's pool first, then mentions of its topics."""
        rng, persona = self.rng, self.persona
        created_here: list[str] = []
        for _ in range(rng.randint(2, 5)):
            self.at += timedelta(minutes=rng.randint(1, 9))
            if pool:
                memory_type, category, content = pool.pop()
            else:
                topic = rng.choice(persona["topics"])
                memory_type, category = rng.choice([("pattern", "habit"), ("insight", "self"), ("event", "life")])
                content = rng.choice(TOPIC_MENTIONS).format(topic=topic)
            memory_id = f"{self.user_id}-m{len(self.memories) + 1:05d}"
            payload: dict[str, Any] = {
                "content": content,
                "session_id": session_id,
                "memory_type": memory_type,
                "category": category,
                "tags": sorted(rng.sample(persona["topics"], k=rng.randint(1, 2))),
                "importance": round(rng.uniform(0.3, 0.95), 2),
                "confidence": round(rng.uniform(0.6, 1.0), 2),
                "source_type": "conversation",
                "source_id": session_id,
                "created_by": "assistant",
            }
            if rng.random() < 0.4:
                kind = rng.choice(CONTEXT_KINDS)
                payload["context"] = {kind: {"session_hour": self.at.hour, "weekday": self.at.strftime("%A")}}
            if created_here and rng.random() < 0.25:
                payload["parent_memory_id"] = created_here[-1]
            self.memories.append({"memory_id": memory_id, "created_at": self.at})
            created_here.append(memory_id)
            yield self.event("memory.created", memory_id, payload)

    def told_together(self, rng: random.Random, told: dict[str, Any], session_id: str) -> Iterator[dict[str, Any]]:
        """The persona's facts on one topic, told in one session, important to the user and pinned."""
        for content in told["facts"]:
            self.at += timedelta(minutes=rng.randint(1, 3))
            memory_id = f"{self.user_id}-m{len(self.memories) + 1:05d}"
            self.memories.append({"memory_id": memory_id, "created_at": self.at})
            self.told.append(memory_id)
            yield self.event(
                "memory.created",
                memory_id,
                {
                    "content": content,
                    "session_id": session_id,
                    "memory_type": "fact",
                    "category": told["category"],
                    "tags": sorted(told["tags"]),
                    "importance": round(rng.uniform(0.8, 0.95), 2),
                    "confidence": round(rng.uniform(0.85, 1.0), 2),
                    "source_type": "conversation",
                    "source_id": session_id,
                    "created_by": "assistant",
                },
            )

    def told_recalled(self, rng: random.Random, query: str, *, per_session: int) -> Iterator[dict[str, Any]]:
        """The next `per_session` facts told together, in turn, recalled and found relevant."""
        for _ in range(per_session):
            self.at += timedelta(minutes=rng.randint(1, 5))
            target = self.told[self.told_recalls % len(self.told)]
            self.told_recalls += 1
            payload = {"access_method": rng.choice(ACCESS_METHODS), "query": query, "was_relevant": True,
                       "relevance_score": round(rng.uniform(0.7, 1.0), 2)}
            yield self.event("memory.accessed", target, payload)

    def home(self, session_id: str, *, moved: bool) -> Iterator[dict[str, Any]]:
        """The home fact in the first session, restated as a move near the end (unless forgotten)."""
        if self.home_memory is None:
            self.at += timedelta(minutes=2)
            self.home_memory = f"{self.user_id}-m{len(self.memories) + 1:05d}"
            self.memories.append({"memory_id": self.home_memory, "created_at": self.at})
            yield self.event(
                "memory.created",
                self.home_memory,
                {
                    "content": HOME.format(**self.persona),
                    "session_id": session_id,
                    "memory_type": "fact",
                    "category": "personal",
                    "tags": ["home"],
                    "importance": 0.8,
                    "confidence": 0.95,
                    "source_type": "conversation",
                    "created_by": "assistant",
                },
            )
        elif moved and self.home_memory not in self.forgotten:
            self.at += timedelta(minutes=3)
            yield self.event("memory.updated", self.home_memory, {"content": MOVED.format(**self.persona), "confidence": 0.9})

    def recalled(self, usable: list[str]) -> Iterator[dict[str, Any]]:
        """Accesses (some with feedback), now and then a relation between two memories and a tag."""
        rng, topics = self.rng, self.persona["topics"]
        for _ in range(rng.randint(1, 4)):
            self.at += timedelta(minutes=rng.randint(1, 5))
            target = rng.choice(usable)
            payload = {"access_method": rng.choice(ACCESS_METHODS), "query": rng.choice(topics)}
            if rng.random() < 0.6:
                payload["was_relevant"] = rng.random() < 0.75
                payload["relevance_score"] = round(rng.uniform(0.2, 1.0), 2)
            yield self.event("memory.accessed", target, payload)
        if len(usable) >= 2 and rng.random() < 0.5:
            self.at += timedelta(minutes=1)
            source, target = rng.sample(usable, 2)
            relationship = rng.choice(["supports", "elaborates", "contradicts", "same_topic"])
            strength = round(rng.uniform(0.4, 1.0), 2)
            yield self.event("memory.related", source, {"target": target, "relationship_type": relationship, "strength": strength})
        if rng.random() < 0.3:
            self.at += timedelta(minutes=1)
            yield self.event("memory.tagged", rng.choice(usable), {"tags": [rng.choice(topics)]})

    def archived_one(self, usable: list[str]) -> Iterator[dict[str, Any]]:
        stale = [m for m in usable if m not in self.archived and m != self.home_memory]
        if stale:
            self.at += timedelta(minutes=1)
            self.archived.add(stale[0])
            yield self.event("memory.archived", stale[0], {"reason": "superseded by newer memories"})

    def forgotten_one(self, usable: list[str]) -> Iterator[dict[str, Any]]:
        candidates = [m for m in usable if m != self.home_memory]
        if candidates:
            self.at += timedelta(minutes=1)
            memory_id = self.rng.choice(candidates)
            self.forgotten.add(memory_id)
            yield self.event("memory.forgotten", memory_id, {"reason": "user asked to forget it"})


def generate_bulk_events(count: int, *, users: int = 50, seed: int = 0) -> Iterator[dict[str, Any]]:
    """About `count` events for benchmarks: the same generator, with as many sessions as it takes."""
    per_session = 5.5
    sessions = max(3, int(count / (users * per_session)) + 1)
    produced = 0
    for event in generate_events(users=users, sessions_per_user=sessions, seed=seed, days=365):
        if produced >= count:
            return
        produced += 1
        yield event
