"""What tiers are computed from, for many days from one read of the log.

The state at the end of day D is the state at the end of the day before plus the events that occurred
in between. Events are folded in sequence order, so an event that arrives late (it occurred on a day
whose events were already folded after it) makes its memory be folded again from that memory's own
events: the result equals a replay of everything that occurred up to the end of D, for any log."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np

from hms_resources.common.bulk import gc_paused
from hms_resources.semantic.concepts import Concept
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ACCESSED, MemoryEvent
from hms_resources.store.memory_state import Memory, MemoryKey, apply_event
from hms_resources.tiers.importance import ImportanceConfig, ImportanceFeatures

PIN_TAG = "pinned"
SECONDS_PER_DAY = 86_400.0


def day_window(day: date) -> tuple[str, str]:
    """The first and last instants of a UTC day, as the store's timestamp text."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    end = start + timedelta(days=1) - timedelta(microseconds=1)
    return _text(start), _text(end)


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stamps(text: Iterable[str]) -> np.ndarray:
    return np.array([np.datetime64(t[:-1]) for t in text], dtype="datetime64[us]")


def _age_days(stamps: np.ndarray, as_of: datetime) -> np.ndarray:
    now = np.datetime64(as_of.replace(tzinfo=None), "us")
    return (now - stamps).astype("timedelta64[us]").astype(np.float64) / 1e6 / SECONDS_PER_DAY


@dataclass
class TierInputs:
    """What the score of every memory not forgotten is computed from, as of the end of a day.
    `memories` are the replay's own objects: read them before asking for the next day."""

    day: date
    as_of: str
    memories: list[Memory]
    features: ImportanceFeatures
    accessed_today: np.ndarray


class _Accesses:
    """Every access read, in sequence order, with the index of the day it falls in."""

    def __init__(self) -> None:
        self.keys: list[MemoryKey] = []
        self.times: list[str] = []
        self.days: list[int] = []

    def add(self, event: MemoryEvent, day_index: int) -> None:
        self.keys.append(event.key)
        self.times.append(event.occurred_at)
        self.days.append(day_index)

    def freeze(self) -> None:
        ids: dict[MemoryKey, int] = {}
        self.key_ids = np.array([ids.setdefault(k, len(ids)) for k in self.keys], dtype=np.int64)
        self.ids = ids
        self.text = np.array(self.times, dtype=str)
        self.stamps = _stamps(self.times)
        self.day_index = np.array(self.days, dtype=np.int64)
        del self.keys, self.times, self.days


def tier_inputs_by_day(
    store: EventStore,
    days: Iterable[date],
    concepts: list[Concept],
    config: ImportanceConfig,
    users: Callable[[str], bool] | None = None,
) -> Iterator[TierInputs]:
    """The tier inputs at the end of each of `days`, in date order, from one read of the log. With
    `users`, only the events of users it accepts count: a shard of users is computed on its own."""
    days = sorted(set(days))
    if not days:
        return
    windows = [day_window(d) for d in days]
    ends = [end for _, end in windows]
    arrived: list[list[MemoryEvent]] = [[] for _ in days]
    accesses = _Accesses()
    with gc_paused():
        for page in store.read_event_pages(until_time=ends[-1]):
            for event in page:
                if users is not None and not users(event.user_id):
                    continue
                index = bisect_left(ends, event.occurred_at)
                arrived[index].append(event)
                if event.type == MEMORY_ACCESSED:
                    accesses.add(event, index)
        accesses.freeze()
        state: dict[MemoryKey, Memory] = {}
        folded: dict[MemoryKey, list[MemoryEvent]] = {}
        last_sequence: dict[MemoryKey, int] = {}
        for index, day in enumerate(days):
            late: set[MemoryKey] = set()
            for event in arrived[index]:
                key = event.key
                folded.setdefault(key, []).append(event)
                if key in late:
                    continue
                if event.sequence < last_sequence.get(key, 0):
                    late.add(key)
                    continue
                apply_event(state, event)
                last_sequence[key] = event.sequence
            for key in late:
                history = folded[key] = sorted(folded[key], key=lambda e: e.sequence)
                state.pop(key, None)
                for event in history:
                    apply_event(state, event)
                last_sequence[key] = history[-1].sequence
            arrived[index] = []
            yield _inputs(day, windows[index], state, accesses, index, concepts, config)


def _inputs(
    day: date,
    window: tuple[str, str],
    state: dict[MemoryKey, Memory],
    accesses: _Accesses,
    index: int,
    concepts: list[Concept],
    config: ImportanceConfig,
) -> TierInputs:
    start, end = window
    as_of = datetime.fromisoformat(end.replace("Z", "+00:00"))
    memories = sorted((m for m in state.values() if not m.is_forgotten), key=lambda m: m.key)
    position = {m.key: i for i, m in enumerate(memories)}
    n = len(memories)
    decayed = np.zeros(n)
    accessed_today = np.zeros(n, dtype=bool)
    upto = accesses.day_index <= index
    if upto.any():
        row_of_id = np.full(len(accesses.ids), -1, dtype=np.int64)
        for key, key_id in accesses.ids.items():
            row = position.get(key)
            if row is not None:
                row_of_id[key_id] = row
        rows = row_of_id[accesses.key_ids[upto]]
        ages = _age_days(accesses.stamps[upto], as_of)
        keep = rows >= 0
        np.add.at(decayed, rows[keep], np.power(0.5, np.maximum(ages[keep], 0) / config.access_half_life_days))
        today = accesses.text[upto] >= start
        accessed_today[rows[keep & today]] = True
    concept_size = np.zeros(n)
    concept_cohesion = np.zeros(n)
    for concept in concepts:
        present = [position[key] for key in ((concept.user_id, m) for m in concept.member_ids) if key in position]
        concept_size[present] = len(present)
        concept_cohesion[present] = concept.cohesion
    features = ImportanceFeatures(
        importance=np.array([np.nan if m.importance is None else m.importance for m in memories], dtype=float),
        confidence=np.array([np.nan if m.confidence is None else m.confidence for m in memories], dtype=float),
        age_days=_age_days(_stamps(m.last_modified_at or m.created_at or end for m in memories), as_of),
        decayed_accesses=decayed,
        relevant=np.array([m.relevant_count for m in memories], dtype=float),
        irrelevant=np.array([m.irrelevant_count for m in memories], dtype=float),
        relevance_mean=np.array(
            [m.relevance_score_sum / m.relevance_score_count if m.relevance_score_count else np.nan for m in memories],
            dtype=float,
        ),
        concept_size=concept_size,
        concept_cohesion=concept_cohesion,
        pinned=np.array([PIN_TAG in m.tags for m in memories], dtype=bool),
    )
    return TierInputs(day, end, memories, features, accessed_today)
