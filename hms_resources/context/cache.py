"""The snapshot cache: the materialized assets users' indexes are loaded from, and the users loaded.

A `SnapshotCache` opens a `ContextSnapshot` on first use and moves to a new one in the background
when an asset is materialized again, keeping the loaded users whose data did not change
(`snapshot.unchanged_users`). It loads a user's indexes on the user's first call and keeps the most
recently used users within a memory budget (`ResidentUsers`). It serves one shard of the users
(`shard` of `shards`, by `user_shard`) and refuses the others."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hms_resources.common.bulk import gc_paused
from hms_resources.common.home import redact_url
from hms_resources.common.sharding import user_shard
from hms_resources.common.tokens import TokenCounter
from hms_resources.context.index import UserIndex
from hms_resources.context.lexical import analysed
from hms_resources.context.residency import ResidentUsers, ServedUsers, UserNotServed
from hms_resources.context.snapshot import (
    ContextSnapshot,
    LoadedUser,
    load_user,
    open_snapshot,
    release_freed_memory,
    snapshot_signature,
    unchanged_users,
)
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore

log = logging.getLogger("hms.context")


class SnapshotCache:
    """`lock` guards opening and installing snapshots (share it with whatever must never interleave
    with a move to a new snapshot: the fresh overlay's folds); one user or cold archive loads at a time."""

    def __init__(
        self,
        event_store: EventStore,
        embedder: Embedder,
        tokens: Callable[[], TokenCounter],
        *,
        budget_bytes: int,
        refresh_seconds: float = 5.0,
        shard: int = 0,
        shards: int = 1,
        lock: Any = None,
    ):
        self.event_store = event_store
        self.embedder = embedder
        self._tokens = tokens
        self.refresh_seconds = refresh_seconds
        self.shard = shard
        self.shards = shards
        self.lock = lock if lock is not None else threading.RLock()
        self.residents = ResidentUsers(budget_bytes)
        """The users whose indexes are loaded, within the budget."""
        self._loading = threading.Lock()
        self._snapshot: ContextSnapshot | None = None
        self._installed: list[Callable[[ContextSnapshot], None]] = []
        self._on_reload: list[Callable[[], None]] = []
        self._checked_at = 0.0
        self._reloading = False
        self._watcher: threading.Thread | None = None
        self._refreshing = threading.Lock()
        """One move to a new snapshot at a time (the watcher, a call's background check, `refresh`)."""
        self._stop = threading.Event()

    # Users and shards -----------------------------------------------------------------------

    def serves(self, user_id: str) -> bool:
        """Whether `user_id` is in this cache's shard."""
        return self.shards == 1 or user_shard(user_id, self.shards) == self.shard

    def check_served(self, user_id: str) -> None:
        if not self.serves(user_id):
            raise UserNotServed(
                f"user {user_id!r} belongs to shard {user_shard(user_id, self.shards)} of {self.shards}; "
                f"this context resource serves shard {self.shard}"
            )

    def user_index(self, user_id: str) -> UserIndex | None:
        """`user_id`'s index (None: no indexed memory), loaded now if it is not cached."""
        self.check_served(user_id)
        return self.loaded(user_id).index

    def loaded(self, user_id: str) -> LoadedUser:
        """The user's cached indexes, or loaded now from the current snapshot (one load at a time)."""
        found = self.residents.get(user_id)
        if found is None:
            with self._loading:
                found = self.residents.get(user_id)
                if found is None:
                    snapshot = self.snapshot
                    with gc_paused():
                        found = load_user(snapshot, self.event_store, user_id, self._tokens().count)
                    dropped = self.residents.put(found, snapshot.number)
                    if dropped:
                        log.debug("context indexes of %d users dropped for the memory budget", len(dropped))
        if found.user_id != user_id or (found.index is not None and found.index.user_id != user_id):
            raise RuntimeError(f"the context cache returned {found.user_id!r}'s indexes for {user_id!r}")
        return found

    def merged(self, user_id: str, fresh: Any, online: Any, snapshot: ContextSnapshot) -> LoadedUser | None:
        """Load `user_id`'s indexes again with `fresh` merged in (the online indexer) and cache them in
        place of the older entry, unless the cache moved to another snapshot meanwhile (returns None)."""
        replaced = self.residents.get(user_id)
        with gc_paused():
            found = load_user(
                snapshot, self.event_store, user_id, self._tokens().count, fresh=fresh, online=online,
                previous=replaced.index if replaced is not None else None,
            )
        with self._loading:
            current = self.residents.get(user_id)
            if current is not None and current.through >= found.through:
                return current
            if snapshot is not self._snapshot:
                return None
            self.residents.put(found, snapshot.number)
        return found

    # Watching for new snapshots ----------------------------------------------------------------

    def watch(self) -> None:
        """Move to each new snapshot within `refresh_seconds` of its materialization, on a thread of
        its own, whether or not calls arrive (the service): no call waits for a reload, and none
        answers from a snapshot older than the newest by more than the interval and the reload."""
        if self._watcher is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(self.refresh_seconds):
                self._refresh_logged()

        self._watcher = threading.Thread(target=run, name="hms-context-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop watching (the resource's `close`)."""
        self._stop.set()
        self._watcher = None

    def _refresh_logged(self) -> None:
        try:
            if not self.refresh():
                release_freed_memory(collect=False)
        except Exception as exc:  # noqa: BLE001 - a failed reload keeps serving the loaded indexes
            log.warning("context snapshot refresh failed, keeping the current one: %s", redact_url(str(exc)))
        finally:
            self._checked_at = time.monotonic()

    # Snapshots ------------------------------------------------------------------------------

    @property
    def snapshot(self) -> ContextSnapshot:
        if self._snapshot is None:
            with self.lock:
                if self._snapshot is None:
                    self._install(self._open(), {})
        return self._snapshot

    @property
    def loaded_snapshot(self) -> ContextSnapshot | None:
        """The snapshot if opened, without opening it (for readiness checks)."""
        return self._snapshot

    def when_installed(self, callback: Callable[[ContextSnapshot], None]) -> None:
        """Call `callback(snapshot)` under `lock` as each snapshot is installed, after the cache moved
        to it (the fresh overlay restarts from its cursor)."""
        self._installed.append(callback)

    def when_reloaded(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every move to a new snapshot (the service settles its heap)."""
        self._on_reload.append(callback)

    def _open(self) -> ContextSnapshot:
        snapshot = open_snapshot(self.event_store, model=self.embedder.identity)
        snapshot.number = self._snapshot.number + 1 if self._snapshot is not None else 1
        snapshot.users = ServedUsers(self)
        if self._snapshot is None:
            self._tokens().count(["warm up"])
            analysed(["warm up"])
        if snapshot.model:
            vector = self.embedder.encode_query("warm up")
            self.embedder.similarities(np.zeros((1, snapshot.dimension), dtype=np.float16), vector)
        return snapshot

    def _install(self, snapshot: ContextSnapshot, kept: dict[str, tuple[LoadedUser, LoadedUser]]) -> None:
        """The cache moves first, then the snapshot and its empty overlays, so a reader that finds
        the new overlays finds no index older than the new snapshot."""
        with self.lock:
            dropped = self.residents.switch(snapshot.number, kept)
            self._snapshot = snapshot
            for callback in self._installed:
                callback(snapshot)
            self._checked_at = time.monotonic()
        log.info(
            "context snapshot %d opened in %.2fs: %d users kept loaded (%.1f MiB), %d to reload",
            snapshot.number, snapshot.seconds, len(self.residents), self.residents.nbytes / 2**20, dropped,
        )

    def refresh(self) -> bool:
        """Move to a new snapshot now if an asset was materialized since the current one was opened,
        keeping the loaded users whose data did not change."""
        if self._snapshot is None:
            self.snapshot
            return True
        with self._refreshing:
            if snapshot_signature(self.event_store) == self._snapshot.signature:
                self._checked_at = time.monotonic()
                return False
            old = self._snapshot
            new = self._open()
            self._install(new, unchanged_users(self.event_store, old, new, self.residents.users()))
        for callback in self._on_reload:
            callback()
        return True

    def refresh_in_background(self) -> None:
        """Check for a new snapshot at most every `refresh_seconds`, on a thread of its own: a call
        never waits for a reload, and a failed one keeps serving the loaded indexes."""
        if self._reloading or time.monotonic() - self._checked_at < self.refresh_seconds:
            return
        self._reloading = True

        def run() -> None:
            try:
                self._refresh_logged()
            finally:
                self._reloading = False

        threading.Thread(target=run, name="hms-context-reload", daemon=True).start()
