"""The memories changed since the snapshot, followed from the log: a just-ingested memory is found
and a just-forgotten one is never returned before the next `memories` run.

`FreshOverlay` keeps, per user, the latest state of each memory whose text or visibility changed
after the snapshot's cursor (`FreshMemories`), folding the log's new events at most every
`fresh_seconds`, and at once after a write this process announced with `note_written`. The online
indexer (`online.py`) merges them into the user's index; until it has, assembly ranks them apart."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ARCHIVED, MEMORY_CREATED, MEMORY_FORGOTTEN, MEMORY_UPDATED, MemoryEvent
from hms_resources.store.memory_state import Memory


def changes_text(event: MemoryEvent) -> bool:
    """Whether an event changes what a memory adds to a context: its text, or whether it may be returned."""
    if event.type == MEMORY_UPDATED:
        return bool(event.payload.get("content"))
    return event.type in (MEMORY_CREATED, MEMORY_FORGOTTEN, MEMORY_ARCHIVED)


@dataclass
class FreshMemories:
    """A user's memories changed since the snapshot: the latest state of each live one (`live`, a copy
    no later fold changes), and for every changed id the log's sequence its change was folded at
    (`changed`: its indexed row, in an index built through an earlier sequence, is stale)."""

    live: dict[str, Memory] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)

    def copy(self) -> "FreshMemories":
        return FreshMemories(dict(self.live), dict(self.changed))

    @property
    def through(self) -> int:
        """The sequence an index must reflect to hold every change here (0: nothing changed)."""
        return max(self.changed.values(), default=0)

    def stale_since(self, through: int) -> list[str]:
        """The ids changed after an index built through `through` was read."""
        return [m for m, at in self.changed.items() if at > through]


NOTHING_FRESH = FreshMemories()


class FreshOverlay:
    """The overlays of the users of one snapshot. `lock` is shared with the snapshot cache, so that
    a fold never interleaves with the move to a new snapshot (`restart`)."""

    def __init__(
        self,
        store: EventStore,
        *,
        serves: Callable[[str], bool] = lambda _user_id: True,
        fresh_seconds: float = 0.0,
        lock: Any = None,
    ):
        self.store = store
        self.serves = serves
        self.fresh_seconds = fresh_seconds
        self.lock = lock if lock is not None else threading.RLock()
        self._fresh: tuple = (None, {})
        """The snapshot and the overlays folded on it, replaced as one, so a reader never pairs a new
        snapshot with overlays of the old one (or the reverse)."""
        self.followed: dict = {}
        """The current state of the memories in the overlays, kept up to date with the log."""
        self._after = 0
        self._folded_at = float("-inf")
        self._written = 0
        self._on_changed: list[Callable[[set[str]], None]] = []

    def when_changed(self, callback: Callable[[set[str]], None]) -> None:
        """Call `callback(user_ids)` after a fold changed those users' overlays (the online indexer)."""
        self._on_changed.append(callback)

    def fold_now(self) -> None:
        """Fold the log's new events now (the online indexer, after a write)."""
        with self.lock:
            self._fold()

    def restart(self, snapshot: Any) -> None:
        """Follow the log from `snapshot`'s cursor with empty overlays (called under `lock`)."""
        self._fresh = (snapshot, {})
        self.followed = {}
        self._after = snapshot.cursor
        self._folded_at = float("-inf")

    def note_written(self, sequence: int | None) -> None:
        """This process stored events up to `sequence`: the next read folds them, whatever `fresh_seconds`."""
        if sequence is not None and sequence > self._written:
            self._written = sequence

    def read(self, user_id: str) -> tuple[Any, FreshMemories]:
        """The snapshot and the user's overlay of memories whose text or visibility changed since it.
        One thread at a time folds new events into the overlays (one query when nothing is new); the
        others use the overlays as they are, unless they must see a write this process made."""
        behind = self._written > self._after
        if behind or time.monotonic() - self._folded_at >= self.fresh_seconds:
            if self.lock.acquire(blocking=behind):
                try:
                    if self._written > self._after or time.monotonic() - self._folded_at >= self.fresh_seconds:
                        self._fold()
                finally:
                    self.lock.release()
        snapshot, overlays = self._fresh
        return snapshot, overlays.get(user_id, NOTHING_FRESH)

    def _fold(self) -> None:
        """Copy on write: a reader holding an overlay never sees it change under it. The overlays are
        published before the sequence they reach: a reader that finds itself caught up (it does not
        wait for the lock) must already find the overlays of that sequence."""
        after, changed = self.store.fold_since(self.followed, self._after, follow=self._follows)
        users: set[str] = set()
        if changed:
            overlays = self._overlaid(changed, after)
            users = {self.followed[key].user_id for key in changed}
            self._fresh = (self._fresh[0], overlays)
        self._after = after
        self._folded_at = time.monotonic()
        if users:
            for callback in self._on_changed:
                callback(users)

    def _follows(self, event: MemoryEvent) -> bool:
        return changes_text(event) and self.serves(event.user_id)

    def _overlaid(self, changed: Any, sequence: int) -> dict[str, FreshMemories]:
        overlays = dict(self._fresh[1])
        copied: set[str] = set()
        for key in changed:
            memory = self.followed[key]
            if memory.user_id not in copied:
                overlays[memory.user_id] = overlays[memory.user_id].copy() if memory.user_id in overlays else FreshMemories()
                copied.add(memory.user_id)
            fresh = overlays[memory.user_id]
            fresh.changed[memory.memory_id] = sequence
            if memory.status == "live" and memory.content:
                fresh.live[memory.memory_id] = copy.copy(memory)
            else:
                fresh.live.pop(memory.memory_id, None)
        return overlays
