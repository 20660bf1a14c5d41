"""Writing one user's sessions: the persona, wordings spread evenly over a user's sessions, and a session
of turns with the facts it states and the questions those facts can answer."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from hms_resources.datasets.conversations.data import (
    ACKS,
    ALLERGENS,
    ASSISTANT_FOLLOWUPS,
    ASSISTANT_LEADS,
    COMMUTE_KM,
    COMMUTES,
    CURRENCY,
    DEFAULT_CURRENCY,
    DIETS,
    FEMALE,
    FILLER,
    FIRST_NAMES_SET,
    FRIEND_PARAS,
    GROUP_QUESTIONS,
    HOBBIES,
    HOME_CITIES,
    HOMETOWN_DETAILS,
    HOMETOWNS,
    INSTRUMENTS,
    JOBS,
    LANGUAGES,
    MALE,
    MONEY_SCALE,
    PARTNER_JOBS,
    PARTNER_PARAS,
    PET_NAMES,
    PET_QUIRKS,
    PETS,
    RELATIONS,
    TURN_CHOICES,
    TURN_LINES,
    USER_ASIDES,
    USER_PREFIXES,
)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def day_phrase(d: datetime) -> str:
    """`Thursday the 19th`."""
    return f"{WEEKDAYS[d.weekday()]} the {ordinal(d.day)}"


def date_phrase(d: datetime) -> str:
    """`April 3rd`."""
    return f"{MONTHS[d.month - 1]} {ordinal(d.day)}"


def span_phrase(a: datetime, b: datetime) -> str:
    if a.month == b.month:
        return f"from the {ordinal(a.day)} to the {ordinal(b.day)} of {MONTHS[a.month - 1]}"
    return f"from {date_phrase(a)} to {date_phrase(b)}"


def clock_phrase(hour: int, minute: int) -> str:
    half = "am" if hour < 12 else "pm"
    h12 = hour % 12 or 12
    return f"{h12}{half}" if minute == 0 else f"{h12}:{minute:02d}{half}"


def window_phrase(d: datetime) -> str:
    """`in early May`, `in mid-May`: the part of a month a temporal question names."""
    part = "early" if d.day <= 10 else "mid" if d.day <= 20 else "late"
    return f"in {part}-{MONTHS[d.month - 1]}" if part == "mid" else f"in {part} {MONTHS[d.month - 1]}"


def timestamp(d: datetime) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_article(phrase: str) -> str:
    """`a` or `an` before `phrase`, with the phrase."""
    return ("an " if phrase[:1].lower() in "aeio" or phrase.startswith("HR") else "a ") + phrase


def pronouns(gender: str) -> dict[str, str]:
    return {"she": "she", "her": "her", "hers": "her"} if gender == "f" else {"she": "he", "her": "him", "hers": "his"}


def refer_to(person: dict[str, Any]) -> dict[str, Any]:
    """How to refer to a person: `my sister Ana` in text, `my sister` in a question, a paraphrase, a key."""
    rel, name = person["rel"], person["name"]
    if rel == "friend":
        return {"text": f"my friend {name}", "q": f"my friend {name}", "paras": FRIEND_PARAS, "key": f"friend:{name}",
                "para_key": "friend", "name": name, "rel": rel}
    paras = PARTNER_PARAS if rel == "partner" else RELATIONS[rel][1]
    return {"text": f"my {rel} {name}", "q": f"my {rel}", "paras": paras, "key": rel, "para_key": rel, "name": name, "rel": rel}


class Turn:
    __slots__ = ("speaker", "text", "id", "at", "session")

    def __init__(self, speaker: str, text: str, session: int) -> None:
        self.speaker, self.text, self.session = speaker, text, session
        self.id = ""
        self.at: datetime | None = None


class Fact:
    """Something the user said, with the turns that say it and the questions it can answer."""

    def __init__(self, kind: str, keys: list[tuple], turns: list[Turn], session: int, day: datetime) -> None:
        self.kind, self.keys, self.turns, self.session, self.day = kind, keys, turns, session, day
        self.cands: list[dict[str, Any]] = []
        self.stale = False
        self.group: str | None = None
        self.label: str | None = None
        self.answer: list[Turn] = []
        self.t_anchor: str | None = None
        self.t_ask: str | None = None
        self.appointment: str | None = None
        self.when: datetime | None = None

    def ask(self, category: str, tag: str, questions: str | list[str], evidence: list[Turn], keys=(),
            fresh_only: bool = False) -> None:
        """A candidate question; a list of questions means paraphrases to try in turn."""
        self.cands.append({"category": category, "tag": tag, "questions": [questions] if isinstance(questions, str) else questions,
                           "evidence": evidence, "keys": tuple(keys), "fresh_only": fresh_only, "fact": self})

    def grouped(self, group: str, label: str, answer: list[Turn]) -> Fact:
        """One of a kind of fact (trips, books...) that questions compare across sessions; `t_ask` starts a
        question about the one said on the same day as another fact, where the group has one."""
        self.group, self.label, self.answer = group, label, answer
        self.t_ask = GROUP_QUESTIONS[group].get("same_day")
        return self


class User:
    """One user: the persona, the random stream all their sessions draw from, and what they have said."""

    def __init__(self, rng: random.Random, uid: str, name: str, hard: bool, width: int) -> None:
        self.rng, self.id, self.hard, self.width = rng, uid, hard, width
        self.facts: list[Fact] = []
        self.sessions: list[list[Turn]] = []
        self.used: dict[str, list] = {}
        self.tmpl_use: dict[tuple[str, int], int] = {}
        self.series: dict[str, dict[str, Any]] = {}
        self.names = [name]
        self.p = self._persona(name)

    def take(self, pool_name: str, pool: list, unique: bool = False):
        """A value from `pool` this user has not had yet (the pool starts over when it runs out)."""
        used = self.used.setdefault(pool_name, [])
        free = [v for v in pool if v not in used]
        if not free:
            if unique:
                return None
            used.clear()
            free = list(pool)
        value = self.rng.choice(free)
        used.append(value)
        return value

    def name(self, gender: str | None = None) -> tuple[str, str]:
        gender = gender or self.rng.choice("fm")
        pool = FEMALE if gender == "f" else MALE
        free = [n for n in pool if n not in self.names] or pool
        chosen = self.rng.choice(free)
        self.names.append(chosen)
        return chosen, gender

    def tpl(self, key: str, options: list, avoid: set | None = None):
        """The least used of `options` for this user, at random among ties, none of `avoid` while it can."""
        counts = [self.tmpl_use.get((key, i), 0) for i in range(len(options))]
        allowed = [i for i in range(len(options)) if not avoid or (key, i) not in avoid] or list(range(len(options)))
        low = min(counts[i] for i in allowed)
        index = self.rng.choice([i for i in allowed if counts[i] == low])
        self.tmpl_use[(key, index)] = low + 1
        if avoid is not None:
            avoid.add((key, index))
        return options[index]

    def _persona(self, name: str) -> dict[str, Any]:
        rng = self.rng
        home = rng.choice(HOME_CITIES)
        job = rng.choice(JOBS)
        p: dict[str, Any] = {"home": home, "currency": CURRENCY.get(home, DEFAULT_CURRENCY),
                             "money_scale": MONEY_SCALE.get(CURRENCY.get(home, ""), 1),
                             "hometown": rng.choice(HOMETOWNS), "hometown_detail": rng.choice(HOMETOWN_DETAILS),
                             "job": {**job, "employer": rng.choice(job["employers"])}}
        self.used["home"] = [home]
        p["partner"] = None
        if rng.random() < 0.65:
            pname, gender = self.name()
            job, detail = rng.choice(PARTNER_JOBS)
            p["partner"] = {"name": pname, "gender": gender, "job": job, "detail": detail}
        relatives = []
        for rel in rng.sample(list(RELATIONS), rng.randint(4, 5)):
            gender = RELATIONS[rel][0] or rng.choice("fm")
            rname, gender = self.name(gender)
            relatives.append({"rel": rel, "name": rname, "gender": gender,
                              "city": self.take("home", HOME_CITIES), "hobby": self.take("hobby", HOBBIES)})
        p["relatives"] = relatives
        friends = []
        for _ in range(3):
            fname, gender = self.name()
            friends.append({"rel": "friend", "name": fname, "gender": gender, "hobby": self.take("hobby", HOBBIES)})
        p["friends"] = friends
        pets = []
        species = rng.choice(["dog", "dog", "cat", "cat", "rabbit"])
        count = 2 if rng.random() < 0.6 else 1
        for i in range(count):
            sp = species if i == 0 or rng.random() < 0.6 else rng.choice([s for s in PETS if s != species])
            pets.append({"species": sp, "breed": self.take("breed", PETS[sp]), "name": self.take("pet", PET_NAMES),
                         "gender": rng.choice("fm"), "age": rng.randint(1, 11), "quirk": rng.choice(PET_QUIRKS)})
        p["pets"] = pets
        p["allergy"] = rng.choice(ALLERGENS) if rng.random() < 0.6 else None
        p["diet"] = rng.choice(DIETS)
        p["instrument"] = rng.choice(INSTRUMENTS) if rng.random() < 0.7 else None
        verb, rest = rng.choice(COMMUTES)
        p["commute"] = (verb, rng.randint(*COMMUTE_KM[verb]), rest)
        p["language"] = rng.choice(LANGUAGES)
        return p

    def excluded_tags(self) -> set[str]:
        """What the user's diet and allergy rule out of dishes and restaurants."""
        tags = set(self.p["diet"][1])
        if self.p["allergy"]:
            tags.add(self.p["allergy"][1])
        return tags

    def people(self, partner: bool = True, friends: bool = True) -> list[dict[str, Any]]:
        out = list(self.p["relatives"])
        if friends:
            out += self.p["friends"]
        if partner and self.p["partner"]:
            out.append({"rel": "partner", **self.p["partner"]})
        return out

    def person(self, purpose: str, **kw) -> dict[str, Any]:
        """Someone not yet used for `purpose`, while there is one."""
        return self.take("person:" + purpose, self.people(**kw))


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


class Session:
    """One session being written."""

    def __init__(self, user: User, index: int, day: datetime) -> None:
        self.user, self.index, self.day = user, index, day
        self.rng = user.rng
        self.turns: list[Turn] = []
        self.facts: list[Fact] = []
        self.used: set = set()

    def say(self, speaker: str, text: str) -> Turn:
        text = re.sub(r"([.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), re.sub(r"\s+", " ", text).strip())
        turn = Turn(speaker, _capitalised(text), self.index)
        self.turns.append(turn)
        return turn

    def ex(self, user_text: str, assistant_text: str) -> tuple[Turn, Turn]:
        return self.say("user", user_text), self.say("assistant", assistant_text)

    def pick(self, key: str, **slots) -> str:
        """One of the wordings `key` in templates/conversation_turns.json, the user's least used, filled in."""
        return self.user.tpl(key, TURN_CHOICES[key]).format(**slots)

    def line(self, key: str, **slots) -> str:
        """The one wording `key`, filled in (it draws nothing from the random stream)."""
        return TURN_LINES[key].format(**slots)

    def reply(self, key: str, **slots) -> str:
        return self.vary(self.pick(key, **slots), [], ASSISTANT_FOLLOWUPS, 0.0, 0.25)

    def aside(self, key: str) -> str:
        """The assistant's answer to a decoy: a remark, sometimes with a follow-up."""
        return self.vary(self.pick(key), [], ASSISTANT_FOLLOWUPS, 0, 0.3)

    def ack(self, topic: str) -> str:
        return self.vary(self.user.tpl("ack:" + topic, ACKS[topic]), [], ASSISTANT_FOLLOWUPS, 0.0, 0.2)

    def fill(self, topic: str, slots: dict[str, str] | None = None) -> None:
        if topic != "generic" and self.rng.random() < 0.1:
            topic = "generic"
        users, assistants = self.user.tpl("fill:" + topic, FILLER[topic], self.used)
        user_text = self.rng.choice(users).format(**(slots or {}))
        assistant_text = self.rng.choice(assistants).format(**(slots or {}))
        self.ex(self.vary(user_text, USER_PREFIXES, USER_ASIDES, 0.45, 0.3),
                self.vary(assistant_text, ASSISTANT_LEADS if user_text.endswith("?") else [], ASSISTANT_FOLLOWUPS, 0.4, 0.35))

    def vary(self, text: str, leads: list[str], tails: list[str], p_lead: float, p_tail: float) -> str:
        """The text with, now and then, a lead-in and a closing remark, within 45 words."""
        rng = self.rng
        if leads and rng.random() < p_lead:
            lead = rng.choice(leads)
            first = text.split(" ", 1)[0]
            lowered = text if first == "I" or first.startswith("I'") or first[1:2].isupper() or first in FIRST_NAMES_SET \
                else text[:1].lower() + text[1:]
            candidate = lead + (lowered if not lead.endswith((". ", "? ", "! ")) else text)
            if len(candidate.split()) <= 45:
                text = candidate
        if rng.random() < p_tail:
            candidate = text + rng.choice(tails)
            if len(candidate.split()) <= 45:
                text = candidate
        return text

    def fact(self, kind: str, keys: list[tuple], turns: list[Turn]) -> Fact:
        fact = Fact(kind, keys, turns, self.index, self.day)
        self.facts.append(fact)
        return fact

    def weave(self, topic: str, blocks: list[tuple], budget: int, slots: dict[str, str] | None = None) -> None:
        """Run the fact blocks, `(exchanges, function[, optional])`, in order, with `budget` exchanges in all:
        optional blocks that do not fit are dropped, and the rest is filler placed at random."""
        kept = []
        for block in blocks:
            needed = sum(b[0] for b in kept) + block[0] + sum(b[0] for b in blocks[blocks.index(block) + 1:] if len(b) < 3)
            if len(block) < 3 or needed < budget:
                kept.append(block)
        fill = max(1, budget - sum(b[0] for b in kept))
        where = [0] * (len(kept) + 1)
        for _ in range(fill):
            where[self.rng.randrange(len(kept) + 1)] += 1
        for i, block in enumerate(kept):
            for _ in range(where[i]):
                self.fill(topic, slots)
            block[1]()
        for _ in range(where[-1]):
            self.fill(topic, slots)

    def decoy(self, chance: float) -> bool:
        """Whether to add a turn that looks like a fact but answers nothing (three times as often when hard)."""
        return self.rng.random() < (chance * 3 if self.user.hard else chance)


Episode = Callable[[Session, int], bool]
