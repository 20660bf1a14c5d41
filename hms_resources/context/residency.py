"""The users whose indexes a context resource holds: least recently used first out, weighed in bytes
(`index_bytes`) against a budget, so one process can serve many more users than fit in its memory.

An index is cached under the snapshot it was loaded from: when the resource moves to a new snapshot,
`switch` keeps only the users it found unchanged, and a load begun under the old snapshot is used
for its one call but never cached, so no index older than the snapshot's cursor is ever served
with the new snapshot's overlays."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from hms_resources.context.index import UserIndex
from hms_resources.context.snapshot import LoadedUser, snapshot_users


class UserNotServed(LookupError):
    """The user belongs to another shard: a process serving that shard has their indexes."""


class ServedUsers(Mapping):
    """`snapshot.users`: a user's index from the snapshot cache, loaded on first use (a user with no
    indexed memory is missing). Iterating reads every served user's id from the store, for tools;
    the query path never does."""

    def __init__(self, cache: Any):
        self._cache = cache

    def __getitem__(self, user_id: str) -> UserIndex:
        index = self._cache.user_index(user_id)
        if index is None:
            raise KeyError(user_id)
        return index

    def __iter__(self) -> Iterator[str]:
        return (u for u in snapshot_users(self._cache.event_store) if self._cache.serves(u))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ResidentUsers:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.number = 0
        """The snapshot the cached indexes belong to."""
        self.loads = 0
        self.evictions = 0
        self._users: OrderedDict[str, LoadedUser] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._users

    @property
    def nbytes(self) -> int:
        return self._bytes

    def users(self) -> list[tuple[str, LoadedUser]]:
        """The cached users, least recently used first, as of now."""
        with self._lock:
            return list(self._users.items())

    def get(self, user_id: str) -> LoadedUser | None:
        with self._lock:
            found = self._users.get(user_id)
            if found is not None:
                self._users.move_to_end(user_id)
            return found

    def put(self, loaded: LoadedUser, number: int) -> list[str]:
        """Cache `loaded` (loaded under snapshot `number`) as the most recent user and drop the least
        recent ones past the budget; a user bigger than the whole budget stays, alone. Returns the
        users dropped."""
        with self._lock:
            if number != self.number:
                return []
            previous = self._users.pop(loaded.user_id, None)
            if previous is not None:
                self._bytes -= previous.nbytes
            self._users[loaded.user_id] = loaded
            self._bytes += loaded.nbytes
            self.loads += 1
            return self._evict()

    def _evict(self) -> list[str]:
        dropped = []
        while self._bytes > self.budget_bytes and len(self._users) > 1:
            user_id, gone = self._users.popitem(last=False)
            self._bytes -= gone.nbytes
            dropped.append(user_id)
        self.evictions += len(dropped)
        return dropped

    def switch(self, number: int, kept: dict[str, tuple[LoadedUser, LoadedUser]]) -> int:
        """Move to snapshot `number`, keeping a user only if the entry judged unchanged (`kept[user][0]`)
        is still the cached one, replaced by `kept[user][1]`. Returns how many were dropped."""
        with self._lock:
            users: OrderedDict[str, LoadedUser] = OrderedDict()
            for user_id, loaded in self._users.items():
                judged = kept.get(user_id)
                if judged is not None and judged[0] is loaded:
                    users[user_id] = judged[1]
            dropped = len(self._users) - len(users)
            self._users = users
            self._bytes = sum(u.nbytes for u in users.values())
            self.number = number
            return dropped
