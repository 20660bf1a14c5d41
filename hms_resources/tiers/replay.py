"""What tiers are computed from, for many days from one read of the log.

The state at the end of day D is the state at the end of the day before plus the events that occurred
in between. Events are folded in sequence order, so an event that arrives late (it occurred on a day
whose events were already folded after it) makes its memory be folded again from that memory's own
events: the result equals a replay of everything that occurred up to the end of D, for any log. A read
of several memories counts as one access of each (`accesses_of`)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np

from hms_resources.common.bulk import gc_paused
from hms_resources.semantic.concepts import Concept
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ACCESSED, MemoryEvent, accesses_of
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
    """Store timestamps (`...Z`, always UTC) as numpy microseconds."""
    return np.array([t[:-1] for t in text], dtype="datetime64[us]")


def _age_days(stamps: np.ndarray, as_of: datetime) -> np.ndarray:
    now = np.datetime64(as_of.replace(tzinfo=None), "us")
    return (now - stamps).astype("timedelta64[us]").astype(np.float64) / 1e6 / SECONDS_PER_DAY


@dataclass
class TierInputs:
    """What the score of every memory not forgotten is computed from, as of the end of a day, in the
    order of (user id, memory id)."""

    day: date
    as_of: str
    keys: list[MemoryKey]
    features: ImportanceFeatures
    accessed_today: np.ndarray
    archived: np.ndarray

    @property
    def user_ids(self) -> list[str]:
        return [user_id for user_id, _ in self.keys]

    @property
    def memory_ids(self) -> list[str]:
        return [memory_id for _, memory_id in self.keys]


class _Columns:
    """The feature columns of every memory the log names, by its rank in (user, memory) order, kept up
    to date as its events are folded: a day costs the memories that changed, not all of them."""

    def __init__(self, keys: list[MemoryKey]) -> None:
        n = len(keys)
        self.live = np.zeros(n, dtype=bool)
        self.archived = np.zeros(n, dtype=bool)
        self.pinned = np.zeros(n, dtype=bool)
        self.importance = np.full(n, np.nan)
        self.confidence = np.full(n, np.nan)
        self.relevant = np.zeros(n)
        self.irrelevant = np.zeros(n)
        self.relevance_mean = np.full(n, np.nan)
        self.changed = np.zeros(n, dtype="datetime64[us]")

    def update(self, key_id: int, memory: Memory | None) -> None:
        live = memory is not None and not memory.is_forgotten
        self.live[key_id] = live
        if not live:
            return
        self.archived[key_id] = memory.is_archived
        self.pinned[key_id] = PIN_TAG in memory.tags
        self.importance[key_id] = np.nan if memory.importance is None else memory.importance
        self.confidence[key_id] = np.nan if memory.confidence is None else memory.confidence
        self.relevant[key_id] = memory.relevant_count
        self.irrelevant[key_id] = memory.irrelevant_count
        count = memory.relevance_score_count
        self.relevance_mean[key_id] = memory.relevance_score_sum / count if count else np.nan
        self.changed[key_id] = np.datetime64((memory.last_modified_at or memory.created_at)[:-1], "us")


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
    access_keys: list[MemoryKey] = []
    access_times: list[str] = []
    access_days: list[int] = []
    with gc_paused():
        for page in store.read_event_pages(until_time=ends[-1]):
            for stored in page:
                if users is not None and not users(stored.user_id):
                    continue
                index = bisect_left(ends, stored.occurred_at)
                for event in accesses_of(stored) if stored.type == MEMORY_ACCESSED else (stored,):
                    arrived[index].append(event)
                    if event.type == MEMORY_ACCESSED:
                        access_keys.append(event.key)
                        access_times.append(event.occurred_at)
                        access_days.append(index)
        keys = sorted({event.key for bucket in arrived for event in bucket})
        key_ids = {key: i for i, key in enumerate(keys)}
        access = (
            np.array([key_ids[k] for k in access_keys], dtype=np.int64),
            np.array(access_times, dtype=str),
            _stamps(access_times),
            np.array(access_days, dtype=np.int64),
        )
        del access_keys, access_times, access_days
        concept_members = [
            (concept, np.array([key_ids[k] for k in ((concept.user_id, m) for m in concept.member_ids) if k in key_ids], dtype=np.int64))
            for concept in concepts
        ]
        columns = _Columns(keys)
        state: dict[MemoryKey, Memory] = {}
        folded: dict[MemoryKey, list[MemoryEvent]] = {}
        last_sequence: dict[MemoryKey, int] = {}
        for index, day in enumerate(days):
            late: set[MemoryKey] = set()
            touched: set[MemoryKey] = set()
            for event in arrived[index]:
                key = event.key
                folded.setdefault(key, []).append(event)
                touched.add(key)
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
            for key in touched:
                columns.update(key_ids[key], state.get(key))
            arrived[index] = []
            yield _inputs(day, windows[index], keys, columns, access, index, concept_members, config)


def _inputs(
    day: date,
    window: tuple[str, str],
    keys: list[MemoryKey],
    columns: _Columns,
    access: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    index: int,
    concept_members: list[tuple[Concept, np.ndarray]],
    config: ImportanceConfig,
) -> TierInputs:
    start, end = window
    as_of = datetime.fromisoformat(end.replace("Z", "+00:00"))
    live = np.flatnonzero(columns.live)
    n = len(live)
    row_of_id = np.full(len(keys), -1, dtype=np.int64)
    row_of_id[live] = np.arange(n)
    decayed = np.zeros(n)
    accessed_today = np.zeros(n, dtype=bool)
    access_ids, access_text, access_stamps, access_days = access
    upto = access_days <= index
    if upto.any():
        rows = row_of_id[access_ids[upto]]
        ages = _age_days(access_stamps[upto], as_of)
        keep = rows >= 0
        np.add.at(decayed, rows[keep], np.power(0.5, np.maximum(ages[keep], 0) / config.access_half_life_days))
        today = access_text[upto] >= start
        accessed_today[rows[keep & today]] = True
    concept_size = np.zeros(n)
    concept_cohesion = np.zeros(n)
    for concept, member_ids in concept_members:
        present = row_of_id[member_ids]
        present = present[present >= 0]
        concept_size[present] = len(present)
        concept_cohesion[present] = concept.cohesion
    features = ImportanceFeatures(
        importance=columns.importance[live],
        confidence=columns.confidence[live],
        age_days=_age_days(columns.changed[live], as_of),
        decayed_accesses=decayed,
        relevant=columns.relevant[live],
        irrelevant=columns.irrelevant[live],
        relevance_mean=columns.relevance_mean[live],
        concept_size=concept_size,
        concept_cohesion=concept_cohesion,
        pinned=columns.pinned[live],
    )
    return TierInputs(day, end, [keys[i] for i in live.tolist()], features, accessed_today, columns.archived[live])
