"""A seeded generator of realistic multi-user memory events, for the demo, the tests and the benchmarks.

Each user is a persona with facts, preferences and habits; over sessions the assistant records
memories, restates recurring facts (as updates), recalls memories (accesses with feedback), tags and
relates them, archives stale ones and now and then forgets one on request. The same seed gives the
same events, byte for byte. The personas and wordings are data, in `templates/synthetic_personas.json`.
"""

from __future__ import annotations

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
        for order, event in enumerate(_user_events(rng, persona, user_id, sessions_per_user, start, days)):
            timeline.append((event["occurred_at"], user_index * 1_000_000 + order, event))
    timeline.sort(key=lambda item: (item[0], item[1]))
    for _, _, event in timeline:
        yield event


def _user_events(
    rng: random.Random, persona: dict[str, Any], user_id: str, sessions: int, start: datetime, days: int
) -> Iterator[dict[str, Any]]:
    counter = 0
    memories: list[dict[str, Any]] = []
    forgotten: set[str] = set()
    archived: set[str] = set()
    home_memory: str | None = None
    session_starts = sorted(start + timedelta(minutes=rng.randrange(days * 24 * 60)) for _ in range(sessions))

    def event(kind: str, memory_id: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        return {
            "event_id": f"{user_id}-e{counter:06d}",
            "type": kind,
            "user_id": user_id,
            "memory_id": memory_id,
            "occurred_at": _timestamp(at),
            "payload": payload,
        }

    pool: list[tuple[str, str, str]] = (
        list(persona["facts"])
        + list(persona["preferences"])
        + [("event", "life", text) for text in persona["events"]]
        + [("insight", "self", text) for text in persona["insights"]]
    )
    rng.shuffle(pool)
    at = start
    for session_number, moment in enumerate(session_starts, start=1):
        session_id = f"{user_id}-s{session_number:03d}"
        at = max(moment, at + timedelta(minutes=30))
        created_here: list[str] = []
        for _ in range(rng.randint(2, 5)):
            at += timedelta(minutes=rng.randint(1, 9))
            if pool:
                memory_type, category, content = pool.pop()
            else:
                topic = rng.choice(persona["topics"])
                memory_type, category = rng.choice([("pattern", "habit"), ("insight", "self"), ("event", "life")])
                content = rng.choice(TOPIC_MENTIONS).format(topic=topic)
            memory_id = f"{user_id}-m{len(memories) + 1:05d}"
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
                payload["context"] = {kind: {"session_hour": at.hour, "weekday": at.strftime("%A")}}
            if created_here and rng.random() < 0.25:
                payload["parent_memory_id"] = created_here[-1]
            memories.append({"memory_id": memory_id, "created_at": at})
            created_here.append(memory_id)
            yield event("memory.created", memory_id, at, payload)
        if home_memory is None:
            at += timedelta(minutes=2)
            home_memory = f"{user_id}-m{len(memories) + 1:05d}"
            memories.append({"memory_id": home_memory, "created_at": at})
            yield event(
                "memory.created",
                home_memory,
                at,
                {
                    "content": HOME.format(**persona),
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
        elif session_number == sessions - 2 and home_memory not in forgotten:
            at += timedelta(minutes=3)
            yield event(
                "memory.updated",
                home_memory,
                at,
                {"content": MOVED.format(**persona), "confidence": 0.9},
            )
        usable = [m["memory_id"] for m in memories if m["memory_id"] not in forgotten]
        for _ in range(rng.randint(1, 4)):
            at += timedelta(minutes=rng.randint(1, 5))
            target = rng.choice(usable)
            payload = {"access_method": rng.choice(ACCESS_METHODS), "query": rng.choice(persona["topics"])}
            if rng.random() < 0.6:
                payload["was_relevant"] = rng.random() < 0.75
                payload["relevance_score"] = round(rng.uniform(0.2, 1.0), 2)
            yield event("memory.accessed", target, at, payload)
        if len(usable) >= 2 and rng.random() < 0.5:
            at += timedelta(minutes=1)
            source, target = rng.sample(usable, 2)
            yield event(
                "memory.related",
                source,
                at,
                {
                    "target": target,
                    "relationship_type": rng.choice(["supports", "elaborates", "contradicts", "same_topic"]),
                    "strength": round(rng.uniform(0.4, 1.0), 2),
                },
            )
        if rng.random() < 0.3:
            at += timedelta(minutes=1)
            yield event("memory.tagged", rng.choice(usable), at, {"tags": [rng.choice(persona["topics"])]})
        if session_number % 5 == 0:
            stale = [m for m in usable if m not in archived and m != home_memory]
            if stale:
                at += timedelta(minutes=1)
                memory_id = stale[0]
                archived.add(memory_id)
                yield event("memory.archived", memory_id, at, {"reason": "superseded by newer memories"})
        if session_number == sessions - 1:
            candidates = [m for m in usable if m != home_memory]
            if candidates:
                at += timedelta(minutes=1)
                memory_id = rng.choice(candidates)
                forgotten.add(memory_id)
                yield event("memory.forgotten", memory_id, at, {"reason": "user asked to forget it"})


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
