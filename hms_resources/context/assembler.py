"""Online context assembly: the memories, concept summaries and recent turns that best answer a
user's query, within a token budget, in milliseconds.

`ContextAssembler` loads a user's indexes from the materialized assets on the user's first call
(`context/index.py`) and keeps the most recently used users within a memory budget
(`context/residency.py`). When an asset is materialized again it moves to the new snapshot in the
background, reloading only the users whose data changed; events stored since the last `memories` run
are read straight from the event store, so a just-ingested memory is found and a just-forgotten one
is never returned. A process can serve one shard of the users (`shard` of `shards`, by
`user_shard`), so several processes split them. What it returns is recorded as `memory.accessed`
events off the hot path."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import numpy as np
from pydantic import PrivateAttr, model_validator

from hms_resources.common.bulk import gc_paused
from hms_resources.common.home import redact_url
from hms_resources.common.sharding import user_shard
from hms_resources.common.text import lexical_tokens
from hms_resources.common.tokens import TokenCounter
from hms_resources.context.access_log import AccessLog, utc_now
from hms_resources.context.index import SelectedAdapter, UserIndex, day_header, dedup_key, epoch_seconds, index_bytes, render_memory
from hms_resources.context.lexical import analysed
from hms_resources.context.reranker import Reranker
from hms_resources.context.residency import ResidentUsers, ServedUsers, UserNotServed
from hms_resources.context.retrieval import (
    Candidate,
    Packing,
    Ranking,
    RetrievalConfig,
    memory_candidate,
    pack_context,
    rank_memories,
    summary_candidates,
)
from hms_resources.context.snapshot import (
    NOT_LOADED,
    ContextSnapshot,
    LoadedUser,
    load_cold_index,
    load_user,
    open_snapshot,
    release_freed_memory,
    snapshot_signature,
    unchanged_users,
)
from hms_resources.context.temporal import TimeScope, parse_time_scope
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import (
    MEMORY_ACCESSED,
    MEMORY_ARCHIVED,
    MEMORY_CREATED,
    MEMORY_FORGOTTEN,
    MEMORY_UPDATED,
    MemoryEvent,
    normalize_timestamp,
)
from hms_resources.store.memory_state import CONVERSATION_TURN

log = logging.getLogger("hms.context")

MAX_QUERY_CHARS = 2048
"""Longer queries are cut before embedding and lexical analysis; the encoder truncates further."""


@dataclass(frozen=True)
class ContextItem:
    memory_id: str
    text: str
    tokens: int
    score: float
    tier: str
    kind: str
    source_ids: list[str]
    created_at: str = ""


@dataclass
class Context:
    user_id: str
    query: str
    token_budget: int
    items: list[ContextItem] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    adapter: SelectedAdapter | None = None
    """The user's champion LoRA adapter whose concept best matches the query, if any matches well enough."""

    @property
    def token_count(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def source_ids(self) -> list[str]:
        return [s for item in self.items for s in item.source_ids]

    def to_json(self, user_id: str | None = None) -> dict[str, Any]:
        """The one JSON shape of a context (HTTP, MCP, the plugins); `user_id` is the name the caller
        knows the user by (a tenant's own name), the stored id when omitted."""
        return {
            "user_id": self.user_id if user_id is None else user_id,
            "query": self.query,
            "token_budget": self.token_budget,
            "items": [asdict(item) for item in self.items],
            "prompt": self.to_prompt(),
            "token_count": self.token_count,
            "timings_ms": {name: round(ms, 3) for name, ms in self.timings_ms.items()},
            "adapter": asdict(self.adapter) if self.adapter is not None else None,
        }

    def to_prompt(self) -> str:
        """Summaries first, then memories and recent turns in time order, one per line under a line
        with their day's date; each item's `tokens` includes its line break and, for the first item
        packed of a day, that day's date line, so the prompt stays within the budget."""
        lines = [i.text for i in self.items if i.kind == "concept_summary"]
        shown = ""
        for item in sorted((i for i in self.items if i.kind != "concept_summary"), key=lambda i: (i.created_at, i.memory_id)):
            header = day_header(item.created_at)
            if header and header != shown:
                lines.append(header)
                shown = header
            lines.append(item.text)
        return "\n".join(lines)


def _read_query(query: str, now: str | datetime | None) -> tuple[float, str, TimeScope, list[str], list[str]]:
    """What `assemble` and `rank` read from a query: the time it is asked at, its text cut to
    `MAX_QUERY_CHARS`, its time scope, and the lexical terms of its focus and anchor."""
    as_of = epoch_seconds(normalize_timestamp(now, "now")) if now is not None else time.time()
    text = " ".join(query[:MAX_QUERY_CHARS].split())
    scope = parse_time_scope(text, datetime.fromtimestamp(as_of, timezone.utc))
    query_tokens, anchor_tokens = lexical_tokens([scope.focus, scope.anchor]) if text else ([], [])
    return as_of, text, scope, query_tokens, anchor_tokens


def _changes_text(event: MemoryEvent) -> bool:
    """Whether an event changes what a memory adds to a context: its text, or whether it may be returned."""
    if event.type == MEMORY_UPDATED:
        return bool(event.payload.get("content"))
    return event.type in (MEMORY_CREATED, MEMORY_FORGOTTEN, MEMORY_ARCHIVED)


@dataclass
class _Fresh:
    """A user's memories changed since the snapshot: their latest text, or their removal."""

    texts: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def copy(self) -> "_Fresh":
        return _Fresh(dict(self.texts), set(self.removed))


_NOTHING_FRESH = _Fresh()


class ContextAssembler(dg.ConfigurableResource):
    """Assembles a user's context for a query. Works inside Dagster and as a plain object:
    `ContextAssembler.from_env()` or `ContextAssembler.from_home(path)`."""

    event_store: EventStore
    embedder: Embedder
    tokenizer: str = ""
    """A local tokenizer directory or hub id; empty for the base LLM's (SmolLM2-135M-Instruct)."""
    record_access: bool = True
    refresh_seconds: float = 5.0
    candidates: int = 100
    """Candidates taken from each of the lexical and dense rankings for the reranker."""
    reranker: str = ""
    """A reranker JSON file (`hms eval fit-reranker`); empty for the one shipped with HMS."""
    adapter_min_similarity: float = 0.3
    """How close a query's embedding must be to a champion adapter's concept centroid to name it."""
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

    _snapshot: Any = PrivateAttr(default=None)
    _residents: Any = PrivateAttr(default=None)
    _loading: Any = PrivateAttr(default_factory=threading.Lock)
    _counter: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.RLock)
    _fresh: tuple = PrivateAttr(default=(None, {}))
    """The snapshot and the overlays folded on it, replaced as one, so a reader never pairs a new
    snapshot with overlays of the old one (or the reverse)."""
    _followed: dict = PrivateAttr(default_factory=dict)
    """The current state of the memories in the overlays, kept up to date with the log."""
    _fresh_after: int = PrivateAttr(default=0)
    _folded_at: float = PrivateAttr(default=float("-inf"))
    _written: int = PrivateAttr(default=0)
    _on_reload: list = PrivateAttr(default_factory=list)
    _checked_at: float = PrivateAttr(default=0.0)
    _reloading: bool = PrivateAttr(default=False)
    _recorder: Any = PrivateAttr(default=None)
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
            self._header_tokens = int(self.tokens.count([day_header("2000-01-01")])[0]) + 1
        return self._header_tokens

    @property
    def tokens(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter(self.tokenizer, cache_dir=self.event_store.home / "tokenizers")
        return self._counter

    # Users and shards -----------------------------------------------------------------------

    def serves(self, user_id: str) -> bool:
        """Whether `user_id` is in this process's shard."""
        return self.shards == 1 or user_shard(user_id, self.shards) == self.shard

    def _check_served(self, user_id: str) -> None:
        if not self.serves(user_id):
            raise UserNotServed(
                f"user {user_id!r} belongs to shard {user_shard(user_id, self.shards)} of {self.shards}; "
                f"this context resource serves shard {self.shard}"
            )

    @property
    def residents(self) -> ResidentUsers:
        """The users whose indexes are loaded, within `memory_budget_mb`."""
        if self._residents is None:
            with self._lock:
                if self._residents is None:
                    self._residents = ResidentUsers(int(self.memory_budget_mb * 2**20))
        return self._residents

    def user_index(self, user_id: str) -> UserIndex | None:
        """`user_id`'s index (None: no indexed memory), loaded now if it is not cached."""
        self._check_served(user_id)
        return self._loaded(user_id).index

    def _loaded(self, user_id: str) -> LoadedUser:
        """The user's cached indexes, or loaded now from the current snapshot (one load at a time)."""
        found = self.residents.get(user_id)
        if found is None:
            with self._loading:
                found = self.residents.get(user_id)
                if found is None:
                    snapshot = self.snapshot
                    with gc_paused():
                        found = load_user(snapshot, self.event_store, user_id, self.tokens.count)
                    dropped = self.residents.put(found, snapshot.number)
                    if dropped:
                        log.debug("context indexes of %d users dropped for the memory budget", len(dropped))
        if found.user_id != user_id or (found.index is not None and found.index.user_id != user_id):
            raise RuntimeError(f"the context cache returned {found.user_id!r}'s indexes for {user_id!r}")
        return found

    # Snapshots ------------------------------------------------------------------------------

    @property
    def snapshot(self) -> ContextSnapshot:
        if self._snapshot is None:
            with self._lock:
                if self._snapshot is None:
                    self._install(self._open(), {})
        return self._snapshot

    @property
    def loaded_snapshot(self) -> ContextSnapshot | None:
        """The snapshot if opened, without opening it (for readiness checks)."""
        return self._snapshot

    def _open(self) -> ContextSnapshot:
        snapshot = open_snapshot(self.event_store, model=self.embedder.identity)
        snapshot.number = self._snapshot.number + 1 if self._snapshot is not None else 1
        snapshot.users = ServedUsers(self)
        if self._snapshot is None:
            self.tokens.count(["warm up"])
            analysed(["warm up"])
        if snapshot.model:
            vector = self.embedder.encode_query("warm up")
            self.embedder.similarities(np.zeros((1, snapshot.dimension), dtype=np.float16), vector)
        return snapshot

    def _install(self, snapshot: ContextSnapshot, kept: dict[str, tuple[LoadedUser, LoadedUser]]) -> None:
        """The cache moves first, then the snapshot and its empty overlays, so a reader that finds
        the new overlays finds no index older than the new snapshot."""
        with self._lock:
            dropped = self.residents.switch(snapshot.number, kept)
            self._snapshot = snapshot
            self._fresh = (snapshot, {})
            self._followed = {}
            self._fresh_after = snapshot.cursor
            self._folded_at = float("-inf")
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
        if snapshot_signature(self.event_store) == self._snapshot.signature:
            self._checked_at = time.monotonic()
            return False
        old = self._snapshot
        new = self._open()
        self._install(new, unchanged_users(self.event_store, old, new, self.residents.users()))
        for callback in self._on_reload:
            callback()
        return True

    def when_reloaded(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every move to a new snapshot (the service settles its heap)."""
        self._on_reload.append(callback)

    def note_written(self, sequence: int | None) -> None:
        """This process stored events up to `sequence`: the next assembly reads them, whatever `fresh_seconds`."""
        if sequence is not None and sequence > self._written:
            self._written = sequence

    def _refresh_in_background(self) -> None:
        if self._reloading or time.monotonic() - self._checked_at < self.refresh_seconds:
            return
        self._reloading = True

        def run() -> None:
            try:
                if not self.refresh():
                    release_freed_memory(collect=False)
            except Exception as exc:  # noqa: BLE001 - a failed reload keeps serving the loaded indexes
                log.warning("context snapshot refresh failed, keeping the current one: %s", redact_url(str(exc)))
            finally:
                self._checked_at = time.monotonic()
                self._reloading = False

        threading.Thread(target=run, name="hms-context-reload", daemon=True).start()

    def _read_fresh(self, user_id: str) -> tuple[ContextSnapshot, _Fresh]:
        """The snapshot and the user's overlay of memories whose text or visibility changed since it.
        One thread at a time folds new events into the overlays (one query when nothing is new); the
        others use the overlays as they are, unless they must see a write this process made."""
        self.snapshot
        behind = self._written > self._fresh_after
        if behind or time.monotonic() - self._folded_at >= self.fresh_seconds:
            if self._lock.acquire(blocking=behind):
                try:
                    if self._written > self._fresh_after or time.monotonic() - self._folded_at >= self.fresh_seconds:
                        self._fold_fresh()
                finally:
                    self._lock.release()
        snapshot, overlays = self._fresh
        return snapshot, overlays.get(user_id, _NOTHING_FRESH)

    def _fold_fresh(self) -> None:
        """Copy on write: a reader holding an overlay never sees it change under it. The overlays are
        published before the sequence they reach: a reader that finds itself caught up (it does not
        wait for the lock) must already find the overlays of that sequence."""
        after, changed = self.event_store.fold_since(self._followed, self._fresh_after, follow=self._follows)
        if changed:
            self._fresh = (self._fresh[0], self._overlaid(changed))
        self._fresh_after = after
        self._folded_at = time.monotonic()

    def _follows(self, event: MemoryEvent) -> bool:
        return _changes_text(event) and self.serves(event.user_id)

    def _overlaid(self, changed: Any) -> dict[str, _Fresh]:
        overlays = dict(self._fresh[1])
        copied: set[str] = set()
        for key in changed:
            memory = self._followed[key]
            if memory.user_id not in copied:
                overlays[memory.user_id] = overlays[memory.user_id].copy() if memory.user_id in overlays else _Fresh()
                copied.add(memory.user_id)
            fresh = overlays[memory.user_id]
            fresh.removed.add(memory.memory_id)
            if memory.status == "live" and memory.content:
                speaker = memory.created_by if memory.memory_type == CONVERSATION_TURN else None
                fresh.texts[memory.memory_id] = (memory.content, memory.created_at or "", speaker)
            else:
                fresh.texts.pop(memory.memory_id, None)
        return overlays

    # Assembly -------------------------------------------------------------------------------

    def assemble(
        self,
        user_id: str,
        query: str,
        token_budget: int = 1024,
        *,
        now: str | datetime | None = None,
        deep: bool = False,
        record_access: bool | None = None,
    ) -> Context:
        """The context for `query`: at most `token_budget` tokens of `user_id`'s memories only.
        `record_access=False` leaves the accesses to the caller (chat capture records them itself)."""
        if not isinstance(token_budget, int) or isinstance(token_budget, bool) or token_budget < 1:
            raise ValueError(f"token_budget must be a positive integer, got {token_budget!r}")
        if not isinstance(user_id, str) or not isinstance(query, str):
            raise TypeError("user_id and query must be strings")
        self._check_served(user_id)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        self._refresh_in_background()
        context = Context(user_id=user_id, query=query, token_budget=token_budget, timings_ms=timings)
        as_of, text, scope, query_tokens, anchor_tokens = _read_query(query, now)
        mark = time.perf_counter()
        snapshot, fresh = self._read_fresh(user_id)
        timings["fresh"] = (time.perf_counter() - mark) * 1e3
        mark = time.perf_counter()
        loaded = self._loaded(user_id)
        timings["load"] = (time.perf_counter() - mark) * 1e3
        mark = time.perf_counter()
        vector = self.embedder.encode_query(text) if text and snapshot.model else None
        timings["embed"] = (time.perf_counter() - mark) * 1e3
        context.adapter = self._choose_adapter(loaded, vector)
        config = self.retrieval_config
        reranker = self.active_reranker
        ranked: list[Candidate] = []
        recent: list[Candidate] = []
        indexes = [loaded.index]
        if deep:
            indexes.append(self._cold_index(loaded))
        for index in indexes:
            if index is None or not len(index):
                continue
            eligible = index.created <= as_of if now is not None else np.ones(len(index), dtype=bool)
            if fresh.removed:
                for memory_id in fresh.removed:
                    row = index.row_of.get(memory_id)
                    if row is not None:
                        eligible[row] = False
            mark = time.perf_counter()
            similarities = self.embedder.similarities(index.vectors, vector) if vector is not None else None
            timings["dense"] = timings.get("dense", 0.0) + (time.perf_counter() - mark) * 1e3
            ranking = rank_memories(index, similarities, text, query_tokens, eligible, as_of, reranker, config, scope, anchor_tokens)
            for name, ms in ranking.timings.items():
                timings[name] = timings.get(name, 0.0) + ms
            mark = time.perf_counter()
            newest = np.zeros(0, dtype=np.int64)
            if index is indexes[0]:
                newest = np.flatnonzero(eligible)
                newest = newest[np.argsort(-index.created[newest], kind="stable")[: config.recent_count]]
            chosen = np.concatenate([ranking.rows, newest])
            index.tokens.fill(chosen)
            index.dedup.fill(chosen)
            ranked += summary_candidates(index, ranking.rows, ranking.scores, eligible)
            ranked += [memory_candidate(index, r, s) for r, s in zip(ranking.rows.tolist(), ranking.scores.tolist())]
            recent += [memory_candidate(index, r, 0.0, kind="recent") for r in newest.tolist()]
            timings["candidates"] = timings.get("candidates", 0.0) + (time.perf_counter() - mark) * 1e3
        mark = time.perf_counter()
        fresh_candidates = self._fresh_candidates(fresh, query_tokens, as_of, now is not None)
        recent = sorted(recent + fresh_candidates, key=lambda c: c.created_at, reverse=True)[: config.recent_count]
        ranked += [c for c in fresh_candidates if c.score > 0]
        wants_recent = scope.order == "latest" or not (query_tokens or vector is not None)
        packing = Packing(self.header_tokens, reranker.cost_exponent)
        chosen = pack_context(ranked, recent, token_budget, config.recent_share if wants_recent else 0.0, packing)
        context.items = [
            ContextItem(c.memory_id, c.text, c.tokens, round(c.score, 6), c.tier, c.kind, list(c.source_ids), c.created_at)
            for c in chosen
        ]
        timings["pack"] = (time.perf_counter() - mark) * 1e3
        timings["total"] = (time.perf_counter() - started) * 1e3
        if (self.record_access if record_access is None else record_access) and context.items:
            self._access_log().record(user_id, context.source_ids, text)
        return context

    def rank(self, user_id: str, query: str, *, now: str | datetime | None = None) -> tuple[UserIndex | None, Ranking | None]:
        """The reranker's candidates for `query` among `user_id`'s indexed memories, with their features:
        what `assemble` ranks, for fitting and inspecting the reranker."""
        snapshot = self.snapshot
        index = self.user_index(user_id)
        if index is None or not len(index):
            return index, None
        as_of, text, scope, query_tokens, anchor_tokens = _read_query(query, now)
        vector = self.embedder.encode_query(text) if text and snapshot.model else None
        similarities = self.embedder.similarities(index.vectors, vector) if vector is not None else None
        eligible = index.created <= as_of if now is not None else np.ones(len(index), dtype=bool)
        ranking = rank_memories(index, similarities, text, query_tokens, eligible, as_of, self.active_reranker, self.retrieval_config, scope, anchor_tokens)
        return index, ranking

    def search(self, user_id: str, query: str, limit: int = 10, *, now: str | datetime | None = None) -> list[ContextItem]:
        """`user_id`'s memories ranked for `query`, best first, with the reranker's probability of being
        evidence; memories stored since the indexes were built are scored as in `assemble`."""
        self._check_served(user_id)
        _, fresh = self._read_fresh(user_id)
        index, ranking = self.rank(user_id, query, now=now)
        found: list[Candidate] = []
        if ranking is not None:
            found += [
                memory_candidate(index, row, score)
                for row, score in zip(ranking.rows.tolist(), ranking.scores.tolist())
                if index.memory_ids[row] not in fresh.removed
            ]
        as_of, _, _, query_tokens, _ = _read_query(query, now)
        found += [c for c in self._fresh_candidates(fresh, query_tokens, as_of, now is not None) if c.score > 0]
        found.sort(key=lambda c: (-c.score, c.memory_id))
        return [
            ContextItem(c.memory_id, c.text, c.tokens, round(c.score, 6), c.tier, "memory", list(c.source_ids), c.created_at)
            for c in found[:limit]
        ]

    def _fresh_candidates(self, fresh: _Fresh, query_tokens: list[str], as_of: float, bounded: bool) -> list[Candidate]:
        """Memories stored since the indexes were built: no vector or features yet, so scored by the
        share of the query's terms they contain, at most an even chance of being evidence."""
        if not fresh.texts:
            return []
        wanted = set(query_tokens)
        items = list(fresh.texts.items())
        texts = [render_memory(speaker, content) for _, (content, _, speaker) in items]
        counts = self.tokens.count(texts) + 1
        words = lexical_tokens(texts) if wanted else [[] for _ in items]
        created = np.array([epoch_seconds(created) for _, (_, created, _) in items], dtype=np.float64)
        found = []
        for (memory_id, (content, created_at, _)), text, count, terms, at in zip(items, texts, counts, words, created):
            if bounded and at > as_of:
                continue
            score = 0.5 * len(wanted & set(terms)) / len(wanted) if wanted else 0.0
            found.append(
                Candidate("recent", memory_id, text, int(count), score, "hot", [memory_id], created_at, dedup_key(content))
            )
        return found

    def _choose_adapter(self, loaded: LoadedUser, vector: np.ndarray | None) -> SelectedAdapter | None:
        found = loaded.adapters
        if found is None or vector is None:
            return None
        similarities = self.embedder.similarities(found.centroids, vector)
        best = int(np.argmax(similarities))
        if similarities[best] < self.adapter_min_similarity:
            return None
        return replace(found.adapters[best], similarity=round(float(similarities[best]), 4))

    def _cold_index(self, loaded: LoadedUser) -> UserIndex | None:
        """The user's cold archive, loaded on their first deep search and weighed with their indexes."""
        if loaded.cold is NOT_LOADED:
            with self._loading:
                if loaded.cold is NOT_LOADED:
                    cold = load_cold_index(self.snapshot, loaded.user_id, self.tokens.count)
                    loaded.cold = cold
                    self.residents.grow(loaded, index_bytes(cold))
        return loaded.cold

    # Accesses and feedback -------------------------------------------------------------------

    def _access_log(self) -> AccessLog:
        if self._recorder is not None:
            return self._recorder
        with self._lock:
            if self._recorder is None:
                self._recorder = AccessLog(self.event_store)
            return self._recorder

    def flush_accesses(self, timeout: float = 10.0) -> None:
        """Wait until the accesses recorded so far are stored (or dropped after a failure)."""
        if self._recorder is not None:
            self._recorder.flush(timeout)

    def feedback(self, memory_id: str, was_relevant: bool, relevance_score: float | None = None, *, user_id: str) -> None:
        """Record whether a returned memory helped. `user_id` is required: memory ids are unique per user."""
        payload: dict[str, Any] = {"access_method": "feedback", "was_relevant": was_relevant}
        if relevance_score is not None:
            payload["relevance_score"] = relevance_score
        event = {
            "event_id": f"feedback-{uuid.uuid4().hex}",
            "type": MEMORY_ACCESSED,
            "user_id": user_id,
            "memory_id": memory_id,
            "occurred_at": utc_now(),
            "payload": payload,
        }
        from hms_resources.store.events import parse_event

        result = self.event_store.append([parse_event(event)])
        if result.rejected:
            raise ValueError(f"feedback on {user_id}/{memory_id}: {result.rejected[0][1]}")

    def close(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()
