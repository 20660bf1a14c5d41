"""Online context assembly: the memories, concept summaries and recent turns that best answer a
user's query, within a token budget, in milliseconds.

`ContextAssembler` is the resource: its configuration, and three parts it composes on first use:
- `SnapshotCache` (`context/cache.py`): the materialized assets users' indexes are loaded from,
  moved to a new snapshot in the background when an asset is materialized again (only the users
  whose data changed are reloaded); the loaded users within a memory budget; the shard it serves;
- `FreshOverlay` (`context/fresh.py`): the memories stored, changed or forgotten since the snapshot,
  read from the event store, so a just-ingested memory is found and a just-forgotten one never returned;
- `OnlineIndexer` (`context/online.py`): embeds those memories and merges them into their users'
  indexes in the background, so they rank exactly like the rest without waiting for a Dagster run;
- `Assembly` (`context/assembly.py`): ranking and packing over the two, into a `Context`
  (`context/contexts.py`), whose prompt `context/prompt.py` renders."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
from pydantic import PrivateAttr, model_validator

from hms_resources.common.tokens import TokenCounter
from hms_resources.context.assembly import MAX_QUERY_CHARS, Assembly
from hms_resources.context.cache import SnapshotCache
from hms_resources.context.contexts import Context, ContextItem
from hms_resources.context.fresh import FreshOverlay
from hms_resources.context.index import UserIndex
from hms_resources.context.online import OnlineIndexer
from hms_resources.context.prompt import day_header_tokens
from hms_resources.context.reranker import Reranker
from hms_resources.context.residency import ResidentUsers, UserNotServed
from hms_resources.context.retrieval import Ranking, RetrievalConfig
from hms_resources.context.snapshot import ContextSnapshot
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore

__all__ = ["MAX_QUERY_CHARS", "Context", "ContextAssembler", "ContextItem", "UserNotServed"]


@dataclass(frozen=True)
class _Parts:
    cache: SnapshotCache
    overlay: FreshOverlay
    indexer: OnlineIndexer | None
    assembly: Assembly


class ContextAssembler(dg.ConfigurableResource):
    """Assembles a user's context for a query. Works inside Dagster and as a plain object:
    `ContextAssembler.from_env()` or `ContextAssembler.from_home(path)`."""

    event_store: EventStore
    embedder: Embedder
    tokenizer: str = ""
    """A local tokenizer directory or hub id; empty for the base LLM's (SmolLM2-135M-Instruct)."""
    refresh_seconds: float = 5.0
    candidates: int = 100
    """Candidates taken from each of the lexical and dense rankings for the reranker."""
    reranker: str = ""
    """A reranker JSON file (`hms eval fit-reranker`); empty for the one shipped with HMS."""
    adapter_min_similarity: float = 0.3
    """For a champion adapter trained without a fitted route threshold: how close a query's embedding
    must be to its concept's centroid or facts to route to it."""
    online_index: bool = True
    """Embed the memories stored since the indexes were built and merge them in, in the background, so
    they rank like every other; false leaves them ranked apart (by their words) until the next run."""
    fresh_seconds: float = 0.0
    """How often, at most, assembly reads the log for events stored since the indexes; 0 reads it on
    every call. A write announced with `note_written` is always read by the next call."""
    memory_budget_mb: float = 1024.0
    """Memory for the loaded users' indexes, in MiB (`index_bytes`): past it the least recently used
    users are dropped, and loaded again on their next call."""
    shard: int = 0
    shards: int = 1
    """This process serves the users whose `user_shard(user_id, shards)` is `shard` and refuses the
    others, so `shards` processes with the same `shards` split the users between them."""

    _lock: Any = PrivateAttr(default_factory=threading.RLock)
    """Composes the parts once; shared by the cache and the overlay, so a fold of the log never
    interleaves with a move to a new snapshot."""
    _parts: Any = PrivateAttr(default=None)
    _counter: Any = PrivateAttr(default=None)
    _reranker: Any = PrivateAttr(default=None)
    _header_tokens: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_shard(self) -> "ContextAssembler":
        if not isinstance(self.shards, int) or self.shards < 1:
            raise ValueError(f"ContextAssembler.shards (HMS_CONTEXT_SHARDS) must be at least 1, got {self.shards!r}")
        if not isinstance(self.shard, int) or not 0 <= self.shard < self.shards:
            raise ValueError(f"ContextAssembler.shard (HMS_CONTEXT_SHARD) must be from 0 to {self.shards - 1}, got {self.shard!r}")
        if not self.memory_budget_mb > 0:
            raise ValueError(
                f"ContextAssembler.memory_budget_mb (HMS_CONTEXT_MEMORY_BUDGET_MB) must be positive, got {self.memory_budget_mb!r}"
            )
        return self

    @classmethod
    def from_env(cls, **config: Any) -> "ContextAssembler":
        from hms_resources.common.environment import from_environment

        return from_environment(cls, event_store=EventStore.from_env(), embedder=Embedder.from_env(), **config)

    @classmethod
    def from_home(cls, home: str | os.PathLike[str], **config: Any) -> "ContextAssembler":
        return cls(event_store=EventStore(hms_home=str(home)), embedder=Embedder.from_env(), **config)

    # The parts ------------------------------------------------------------------------------

    def _composed(self) -> _Parts:
        if self._parts is None:
            with self._lock:
                if self._parts is None:
                    cache = SnapshotCache(
                        self.event_store, self.embedder, lambda: self.tokens, budget_bytes=int(self.memory_budget_mb * 2**20),
                        refresh_seconds=self.refresh_seconds, shard=self.shard, shards=self.shards, lock=self._lock,
                    )
                    overlay = FreshOverlay(self.event_store, serves=cache.serves, fresh_seconds=self.fresh_seconds, lock=self._lock)
                    cache.when_installed(overlay.restart)
                    indexer = OnlineIndexer(cache, overlay, self.embedder) if self.online_index else None
                    if indexer is not None:
                        cache.when_installed(lambda _snapshot: indexer.vectors.restart())
                    assembly = Assembly(
                        cache, overlay, indexer=indexer, reranker=lambda: self.active_reranker, tokens=lambda: self.tokens,
                        header_tokens=lambda: self.header_tokens, config=self.retrieval_config,
                        adapter_min_similarity=self.adapter_min_similarity,
                    )
                    self._parts = _Parts(cache, overlay, indexer, assembly)
        return self._parts

    @property
    def cache(self) -> SnapshotCache:
        """The snapshot, the loaded users and the shard (`context/cache.py`)."""
        return self._composed().cache

    @property
    def overlay(self) -> FreshOverlay:
        """The memories changed since the snapshot (`context/fresh.py`)."""
        return self._composed().overlay

    @property
    def retrieval_config(self) -> RetrievalConfig:
        return RetrievalConfig(candidates=self.candidates)

    @property
    def active_reranker(self) -> Reranker:
        if self._reranker is None:
            self._reranker = Reranker.load(self.reranker or None)
        return self._reranker

    def use_reranker(self, reranker: Reranker) -> None:
        """Rank with `reranker` from now on (the harness's cross-validation fits one per fold)."""
        self._reranker = reranker

    @property
    def header_tokens(self) -> int:
        """Tokens of one day's date line in a prompt, with its line break."""
        if self._header_tokens is None:
            self._header_tokens = day_header_tokens(self.tokens.count)
        return self._header_tokens

    @property
    def tokens(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter(self.tokenizer, cache_dir=self.event_store.home / "tokenizers")
        return self._counter

    # Users, shards and snapshots: the cache ---------------------------------------------------

    def serves(self, user_id: str) -> bool:
        """Whether `user_id` is in this process's shard."""
        return self.cache.serves(user_id)

    @property
    def residents(self) -> ResidentUsers:
        """The users whose indexes are loaded, within `memory_budget_mb`."""
        return self.cache.residents

    def user_index(self, user_id: str) -> UserIndex | None:
        """`user_id`'s index (None: no indexed memory), loaded now if it is not cached."""
        return self.cache.user_index(user_id)

    @property
    def snapshot(self) -> ContextSnapshot:
        return self.cache.snapshot

    @property
    def loaded_snapshot(self) -> ContextSnapshot | None:
        """The snapshot if opened, without opening it (for readiness checks)."""
        return self._parts.cache.loaded_snapshot if self._parts is not None else None

    def refresh(self) -> bool:
        """Move to a new snapshot now if an asset was materialized since the current one was opened,
        keeping the loaded users whose data did not change."""
        return self.cache.refresh()

    def when_reloaded(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every move to a new snapshot (the service settles its heap)."""
        self.cache.when_reloaded(callback)

    def note_written(self, sequence: int | None) -> None:
        """This process stored events up to `sequence`: the next assembly reads them, whatever
        `fresh_seconds`, and the online indexer merges them now."""
        parts = self._composed()
        parts.overlay.note_written(sequence)
        if parts.indexer is not None:
            parts.indexer.wake()

    def watch(self) -> None:
        """Move to each new snapshot in the background within `refresh_seconds` of its materialization,
        whether or not calls arrive (`hms serve`)."""
        self.cache.watch()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until the memories written so far are merged into their users' indexes (tests and
        benchmarks); False on timeout."""
        indexer = self._composed().indexer
        return indexer.settle(timeout) if indexer is not None else True

    # Assembly -------------------------------------------------------------------------------

    def assemble(
        self,
        user_id: str,
        query: str,
        token_budget: int = 1024,
        *,
        now: str | datetime | None = None,
        deep: bool = False,
    ) -> Context:
        """The context for `query`: at most `token_budget` tokens of `user_id`'s memories only. The
        resource only reads: what a context returned is recorded by the caller, through the write door
        (`hms_resources/memory/`)."""
        return self._composed().assembly.assemble(user_id, query, token_budget, now=now, deep=deep)

    def rank(self, user_id: str, query: str, *, now: str | datetime | None = None) -> tuple[UserIndex | None, Ranking | None]:
        """The reranker's candidates for `query` among `user_id`'s indexed memories, with their features:
        what `assemble` ranks, for fitting and inspecting the reranker."""
        return self._composed().assembly.rank(user_id, query, now=now)

    def search(self, user_id: str, query: str, limit: int = 10, *, now: str | datetime | None = None) -> list[ContextItem]:
        """`user_id`'s memories ranked for `query`, best first, with the reranker's probability of being
        evidence; memories stored since the indexes were built are scored as in `assemble`."""
        return self._composed().assembly.search(user_id, query, limit, now=now)

    def close(self) -> None:
        """Let go of the snapshot and the loaded users' indexes; a later call opens them again."""
        with self._lock:
            parts, self._parts = self._parts, None
        if parts is not None:
            parts.cache.stop()
            if parts.indexer is not None:
                parts.indexer.close()
