"""A seeded generator of a synthetic multi-session conversational retrieval dataset (JSON Lines).

Each user is a persona drawn from large pools; sessions a few days apart are user/assistant talks on one or
two recurring topics (trips, cooking, appointments, books, a move...), mostly templated filler around the
turns that state a fact. Questions come from those facts, with exactly the answering turns as evidence;
paraphrases are checked to share no content word with it. The same arguments give the same records.

The pools and wordings are data, in `templates/conversation_*.json`; the episodes that write a topic are
in `episodes` and `series`, the question choice in `questions`, the persona and turn writing in `writing`.
`python -m hms_resources.datasets.conversations` rewrites the two shipped datasets."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hms_resources.datasets import DATA_DIR
from hms_resources.datasets.conversations.data import (
    CLOSE_LEAVING,
    CLOSE_REPLIES,
    CLOSE_THANKS,
    CLOSE_WISHES,
    OPEN_CONTEXTS,
    OPEN_GREETINGS,
    OPEN_REPLIES,
    TIME_WORDS,
    USER_NAMES,
)
from hms_resources.datasets.conversations.episodes import (
    episode_conference,
    episode_film,
    episode_gift,
    episode_home,
    episode_mealprep,
    episode_reading,
    episode_restaurant,
    episode_trip,
    episode_visit,
    episode_weekend,
    profile_kinds,
    write_profile,
)
from hms_resources.datasets.conversations.questions import QUESTION_CATEGORIES, choose_questions
from hms_resources.datasets.conversations.series import (
    episode_budget,
    episode_fitness,
    episode_health,
    episode_language,
    episode_move,
    episode_pet,
    episode_work,
)
from hms_resources.datasets.conversations.writing import Episode, Session, User, timestamp

__all__ = ["DEFAULT_ARGS", "DEFAULT_PATH", "HARD_ARGS", "HARD_PATH", "QUESTION_CATEGORIES", "generate_conversations", "write_jsonl"]

DEFAULT_PATH = DATA_DIR / "conversations.jsonl"
HARD_PATH = DATA_DIR / "conversations_hard.jsonl"
DEFAULT_ARGS: dict[str, Any] = {"users": 6, "sessions_per_user": 20, "seed": 11, "hard": False}
HARD_ARGS: dict[str, Any] = {"users": 6, "sessions_per_user": 40, "seed": 13, "hard": True}

EPISODES: dict[str, tuple[Episode, float, float]] = {
    # name: (episode, weight, weight when hard)
    "trip": (episode_trip, 2.5, 3.5),
    "conference": (episode_conference, 0.8, 0.8),
    "visit": (episode_visit, 1.6, 2.0),
    "mealprep": (episode_mealprep, 1.2, 2.0),
    "restaurant": (episode_restaurant, 2.0, 3.0),
    "pet": (episode_pet, 1.8, 1.8),
    "move": (episode_move, 1.4, 1.4),
    "health": (episode_health, 1.8, 3.0),
    "reading": (episode_reading, 2.0, 3.0),
    "film": (episode_film, 1.2, 2.0),
    "gift": (episode_gift, 1.3, 1.5),
    "budget": (episode_budget, 1.2, 1.2),
    "language": (episode_language, 1.2, 1.2),
    "fitness": (episode_fitness, 1.3, 1.8),
    "work": (episode_work, 1.8, 2.5),
    "weekend": (episode_weekend, 2.0, 3.0),
    "home": (episode_home, 0.6, 0.6),
}


def _fits_hour(text: str, hour: int) -> bool:
    """Whether the time words in an opener or closer (`morning`, `dinner`...) fit the session's hour."""
    lowered = text.lower()
    return all(hour in hours for word, hours in TIME_WORDS.items() if word in lowered)


def _write_session(u: User, index: int, start: datetime, profile_kind: str | None, last_kinds: list[str]) -> list[str]:
    """An opener or a profile fact, one or two episodes, filler up to five exchanges, maybe a closer."""
    rng = u.rng
    c = Session(u, index, start)
    exchanges = rng.randint(7, 10)
    if profile_kind:
        write_profile(c, profile_kind)
    elif rng.random() < 0.5:
        hour = start.hour
        c.ex(u.tpl("open1", [g for g in OPEN_GREETINGS if _fits_hour(g, hour)]) + " "
             + u.tpl("open2", [o for o in OPEN_CONTEXTS if _fits_hour(o, hour)]), u.tpl("open3", OPEN_REPLIES))
    closer = rng.random() < 0.6
    two = rng.random() < (0.55 if u.hard else 0.4) and exchanges - closer - len(c.turns) // 2 >= 6
    kinds: list[str] = []
    for round_ in range(2 if two else 1):
        room = exchanges - closer - len(c.turns) // 2
        if round_ == 1 and room < 3:
            break
        budget = room if round_ == 1 or not two else room // 2 + rng.randint(0, 1)
        names = [k for k in EPISODES if k not in kinds and k not in last_kinds]
        weights = [EPISODES[k][2 if u.hard else 1] for k in names]
        while names:
            k = rng.choices(names, weights)[0]
            i = names.index(k)
            del names[i], weights[i]
            if EPISODES[k][0](c, max(2, budget)):
                kinds.append(k)
                break
    while len(c.turns) // 2 + closer < 5:
        c.fill("generic")
    if closer:
        hour = start.hour
        leaving = u.tpl("close2", [o for o in CLOSE_LEAVING if _fits_hour(o, hour)])
        wishes = [w for w in CLOSE_WISHES if _fits_hour(w, hour) and ("sleep" in w.lower()) == ("sleep" in leaving)]
        c.ex(u.tpl("close1", CLOSE_THANKS) + " " + leaving, u.tpl("close3", CLOSE_REPLIES) + " " + u.tpl("close4", wishes or CLOSE_WISHES))
    moment = start
    for number, turn in enumerate(c.turns, start=1):
        turn.id = f"s{index:0{u.width}d}-t{number:02d}"
        turn.at = moment
        moment += timedelta(seconds=rng.randint(25, 190))
    u.sessions.append(c.turns)
    u.facts.extend(c.facts)
    return kinds


def _parse_start(start: str) -> datetime:
    moment = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def generate_conversations(users: int = 6, sessions_per_user: int = 20, seed: int = 11,
                           start: str = "2026-03-02T09:00:00Z", hard: bool = False) -> list[dict[str, Any]]:
    """Memory records (every user's turns, in time order) then question records; the same arguments
    give the same records."""
    master = random.Random(seed)
    first = _parse_start(start)
    names = master.sample(USER_NAMES, min(users, len(USER_NAMES)))
    while len(names) < users:
        names.append(f"{USER_NAMES[len(names) % len(USER_NAMES)]}{len(names) // len(USER_NAMES) + 1}")
    memories: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    for name in names:
        uid = f"user-{name.lower()}"
        u = User(random.Random(master.getrandbits(64)), uid, name, hard, width=max(2, len(str(sessions_per_user))))
        rng = u.rng
        kinds = profile_kinds(u)
        rng.shuffle(kinds)
        slots = rng.sample(range(sessions_per_user), min(len(kinds), sessions_per_user))
        profile_at = dict(zip(slots, kinds))
        day = first
        last: list[str] = []
        for index in range(1, sessions_per_user + 1):
            if index > 1:
                day = (day + timedelta(days=rng.randint(1, 4))).replace(hour=rng.randint(7, 22), minute=rng.randint(0, 59))
            last = _write_session(u, index, day, profile_at.get(index - 1), last)
        for turns in u.sessions:
            for turn in turns:
                memories.append({"kind": "memory", "id": turn.id, "user_id": uid, "session_id": f"{uid}-s{turn.session:0{u.width}d}",
                                 "created_at": timestamp(turn.at), "text": turn.text, "speaker": turn.speaker})
        asked = u.sessions[-1][-1].at + timedelta(days=1, hours=rng.randint(0, 10))
        for number, (category, question, evidence) in enumerate(choose_questions(u), start=1):
            questions.append({"kind": "question", "id": f"{uid}-q{number:02d}", "user_id": uid, "question": question,
                              "evidence": [t.id for t in evidence], "asked_at": timestamp(asked + timedelta(minutes=number)),
                              "category": category})
    return memories + questions


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> None:
    """One JSON object a line, keys sorted, UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as stream:
        for record in records:
            stream.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
