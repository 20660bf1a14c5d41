"""Assembly: ranking and packing a user's memories for a query, over the snapshot cache's indexes
(into which the online indexer merges the memories stored since the snapshot) and the few memories
changed too recently to be merged yet (`retrieval.py` holds the pure ranking and packing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from datetime import datetime, timezone

import numpy as np

from hms_resources.common.text import lexical_tokens
from hms_resources.common.tokens import TokenCounter
from hms_resources.context.bounds import FRESH_TERM_CHARS, MAX_FRESH, MAX_QUERY_CHARS, MAX_QUERY_TERMS, fitting_tokens, newest
from hms_resources.context.cache import SnapshotCache
from hms_resources.context.contexts import Context, ContextItem
from hms_resources.context.fresh import NOTHING_FRESH, FreshMemories, FreshOverlay
from hms_resources.context.index import SelectedAdapter, UserIndex, dedup_key, epoch_seconds
from hms_resources.context.prompt import render_memory
from hms_resources.context.reranker import Reranker
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
from hms_resources.context.snapshot import ContextSnapshot, LoadedUser
from hms_resources.context.temporal import TimeScope, parse_time_scope
from hms_resources.store.events import normalize_timestamp
from hms_resources.store.memory_state import CONVERSATION_TURN, Memory


def query_text(query: str) -> str:
    """The query as ranked and recorded: cut to `MAX_QUERY_CHARS`, whitespace collapsed."""
    return " ".join(query[:MAX_QUERY_CHARS].split())


def first_terms(tokens: list[str], most: int = MAX_QUERY_TERMS) -> list[str]:
    """`tokens` up to the first that would make more than `most` distinct terms (a normal query's all)."""
    seen: set[str] = set()
    for position, token in enumerate(tokens):
        if token not in seen:
            if len(seen) == most:
                return tokens[:position]
            seen.add(token)
    return tokens


@dataclass(frozen=True)
class Query:
    """What assembly reads from a query: the time it is asked at, its text, its time scope, and the
    lexical terms of its focus and anchor."""

    as_of: float
    text: str
    scope: TimeScope
    tokens: list[str]
    anchor_tokens: list[str]
    bounded: bool
    """Asked as of a given time (`now`): memories created after it are left out."""


def read_query(query: str, now: str | datetime | None) -> Query:
    as_of = epoch_seconds(normalize_timestamp(now, "now")) if now is not None else time.time()
    text = query_text(query)
    scope = parse_time_scope(text, datetime.fromtimestamp(as_of, timezone.utc))
    query_tokens, anchor_tokens = lexical_tokens([scope.focus, scope.anchor]) if text else ([], [])
    return Query(as_of, text, scope, first_terms(query_tokens), first_terms(anchor_tokens), now is not None)


def _item(c: Candidate, kind: str) -> ContextItem:
    return ContextItem(c.memory_id, c.text, c.tokens, round(c.score, 6), c.tier, kind, list(c.source_ids), c.created_at)


def _best(ranked: list[Candidate]) -> float:
    """The best score of the indexed candidates: the ceiling of a memory not merged yet (an even
    chance when nothing is indexed)."""
    return max((c.score for c in ranked if c.kind == "memory"), default=0.5)


def _speaker(memory: Memory) -> str | None:
    return memory.created_by if memory.memory_type == CONVERSATION_TURN else None


def _add_ms(timings: dict[str, float], name: str, since: float) -> None:
    timings[name] = timings.get(name, 0.0) + (time.perf_counter() - since) * 1e3


class Assembly:
    """Ranks and packs over `cache` and `overlay`. `reranker`, `tokens` and `header_tokens` are asked
    on each call: the resource loads them on first use, and the harness swaps the reranker."""

    def __init__(
        self,
        cache: SnapshotCache,
        overlay: FreshOverlay,
        *,
        indexer: Any = None,
        reranker: Callable[[], Reranker],
        tokens: Callable[[], TokenCounter],
        header_tokens: Callable[[], int],
        config: RetrievalConfig = RetrievalConfig(),
        adapter_min_similarity: float = 0.3,
    ):
        self.cache = cache
        self.overlay = overlay
        self.indexer = indexer
        """The online indexer (`online.py`), asked to merge a user whose index is behind; None: never merged."""
        self.embedder = cache.embedder
        self.reranker = reranker
        self.tokens = tokens
        self.header_tokens = header_tokens
        self.config = config
        self.adapter_min_similarity = adapter_min_similarity

    def read_fresh(self, user_id: str) -> tuple[ContextSnapshot, FreshMemories]:
        """The snapshot (opened now if need be) and the user's fresh memories folded on it."""
        self.cache.snapshot
        return self.overlay.read(user_id)

    def current(self, user_id: str) -> tuple[ContextSnapshot, LoadedUser, FreshMemories]:
        """The snapshot, the user's loaded indexes, and the memories changed since those were built:
        none once the online indexer merged them, else the few it has not merged yet (asked to now)."""
        self.cache.check_served(user_id)
        self.cache.refresh_in_background()
        snapshot, fresh = self.read_fresh(user_id)
        loaded = self.cache.loaded(user_id)
        stale = fresh.stale_since(loaded.through)
        if not stale:
            return snapshot, loaded, NOTHING_FRESH
        if self.indexer is not None:
            self.indexer.want([user_id])
        return snapshot, loaded, FreshMemories({m: fresh.live[m] for m in stale if m in fresh.live}, {m: fresh.changed[m] for m in stale})

    def query_vector(self, snapshot: ContextSnapshot, loaded: LoadedUser, q: Query) -> np.ndarray | None:
        """The query's embedding when there are vectors to compare it with (the snapshot's, or those the
        online indexer embedded before any `embeddings` run)."""
        if not q.text:
            return None
        if snapshot.model or (loaded.index is not None and bool(loaded.index.has_vector.any())):
            return self.embedder.encode_query(q.text)
        return None

    def assemble(self, user_id: str, query: str, token_budget: int = 1024, *, now: str | datetime | None = None, deep: bool = False) -> Context:
        """The context for `query`: at most `token_budget` tokens of `user_id`'s memories only, whatever
        their tier; `deep` searches a larger pool of candidates."""
        if not isinstance(token_budget, int) or isinstance(token_budget, bool) or token_budget < 1:
            raise ValueError(f"token_budget must be a positive integer, got {token_budget!r}")
        if not isinstance(user_id, str) or not isinstance(query, str):
            raise TypeError("user_id and query must be strings")
        timings: dict[str, float] = {}
        started = time.perf_counter()
        context = Context(user_id=user_id, query=query, token_budget=token_budget, timings_ms=timings)
        q = read_query(query, now)
        mark = time.perf_counter()
        snapshot, loaded, fresh = self.current(user_id)
        timings["load"] = (time.perf_counter() - mark) * 1e3
        mark = time.perf_counter()
        vector = self.query_vector(snapshot, loaded, q)
        timings["embed"] = (time.perf_counter() - mark) * 1e3
        context.adapter = self.choose_adapter(loaded, vector)
        reranker = self.reranker()
        config = self.deep_config if deep else self.config
        ranked: list[Candidate] = []
        recent: list[Candidate] = []
        if loaded.index is not None and len(loaded.index):
            ranked, recent = self._index_candidates(loaded.index, q, vector, fresh, reranker, config, timings)
        mark = time.perf_counter()
        fresh_candidates = self.fresh_candidates(
            fresh, q.tokens, q.as_of, q.bounded, ceiling=_best(ranked), budget=token_budget, recent=config.recent_count, work=context.work
        )
        recent = sorted(recent + fresh_candidates, key=lambda c: c.created_at, reverse=True)[: config.recent_count]
        ranked += [c for c in fresh_candidates if c.score > 0]
        wants_recent = q.scope.order == "latest" or not (q.tokens or vector is not None)
        packing = Packing(self.header_tokens(), reranker.cost_exponent)
        share = config.recent_share if wants_recent else 0.0
        context.items = [_item(c, c.kind) for c in pack_context(ranked, recent, token_budget, share, packing)]
        timings["pack"] = (time.perf_counter() - mark) * 1e3
        timings["total"] = (time.perf_counter() - started) * 1e3
        return context

    @property
    def deep_config(self) -> RetrievalConfig:
        """A deep search: three times the candidates from each ranking, and the neighbours of twice as many."""
        return replace(self.config, candidates=self.config.candidates * 3, neighbours_of=self.config.neighbours_of * 2)

    def _index_candidates(
        self, index: UserIndex, q: Query, vector: np.ndarray | None, fresh: FreshMemories, reranker: Reranker,
        config: RetrievalConfig, timings: dict[str, float],
    ) -> tuple[list[Candidate], list[Candidate]]:
        """The index's ranked candidates (memories and the concept summaries that carry them) and its
        newest memories; rows changed since the index was built are out."""
        eligible = self._eligible(index, q, fresh)
        mark = time.perf_counter()
        similarities = self.embedder.similarities(index.vectors, vector) if vector is not None else None
        _add_ms(timings, "dense", mark)
        ranking = rank_memories(index, similarities, q.text, q.tokens, eligible, q.as_of, reranker, config, q.scope, q.anchor_tokens)
        for name, ms in ranking.timings.items():
            timings[name] = timings.get(name, 0.0) + ms
        mark = time.perf_counter()
        newest = np.flatnonzero(eligible)
        newest = newest[np.argsort(-index.created[newest], kind="stable")[: config.recent_count]]
        chosen = np.concatenate([ranking.rows, newest])
        index.tokens.fill(chosen)
        index.dedup.fill(chosen)
        ranked = summary_candidates(index, ranking.rows, ranking.scores, eligible)
        ranked += [memory_candidate(index, r, s) for r, s in zip(ranking.rows.tolist(), ranking.scores.tolist())]
        recent = [memory_candidate(index, r, 0.0, kind="recent") for r in newest.tolist()]
        _add_ms(timings, "candidates", mark)
        return ranked, recent

    @staticmethod
    def _eligible(index: UserIndex, q: Query, fresh: FreshMemories) -> np.ndarray:
        eligible = index.created <= q.as_of if q.bounded else np.ones(len(index), dtype=bool)
        for memory_id in fresh.changed:
            row = index.row_of.get(memory_id)
            if row is not None:
                eligible[row] = False
        return eligible

    def rank(self, user_id: str, query: str, *, now: str | datetime | None = None) -> tuple[UserIndex | None, Ranking | None]:
        """The reranker's candidates for `query` among `user_id`'s indexed memories, with their features:
        what `assemble` ranks, for fitting and inspecting the reranker."""
        snapshot, loaded, fresh = self.current(user_id)
        return self._ranked(snapshot, loaded, fresh, read_query(query, now))

    def _ranked(self, snapshot: ContextSnapshot, loaded: LoadedUser, fresh: FreshMemories, q: Query) -> tuple[UserIndex | None, Ranking | None]:
        index = loaded.index
        if index is None or not len(index):
            return index, None
        vector = self.query_vector(snapshot, loaded, q)
        similarities = self.embedder.similarities(index.vectors, vector) if vector is not None else None
        eligible = self._eligible(index, q, fresh)
        ranking = rank_memories(index, similarities, q.text, q.tokens, eligible, q.as_of, self.reranker(), self.config, q.scope, q.anchor_tokens)
        return index, ranking

    def search(self, user_id: str, query: str, limit: int = 10, *, now: str | datetime | None = None) -> list[ContextItem]:
        """`user_id`'s memories ranked for `query`, best first, with the reranker's probability of being
        evidence; the few stored too recently to be merged yet are scored as in `assemble`."""
        snapshot, loaded, fresh = self.current(user_id)
        q = read_query(query, now)
        index, ranking = self._ranked(snapshot, loaded, fresh, q)
        found: list[Candidate] = []
        if ranking is not None:
            found += [memory_candidate(index, row, score) for row, score in zip(ranking.rows.tolist(), ranking.scores.tolist())]
        found += [c for c in self.fresh_candidates(fresh, q.tokens, q.as_of, q.bounded, ceiling=_best(found)) if c.score > 0]
        found.sort(key=lambda c: (-c.score, c.memory_id))
        return [_item(c, "memory") for c in self.counted(found[:limit])]

    def fresh_candidates(
        self, fresh: FreshMemories, query_tokens: list[str], as_of: float, bounded: bool, *, ceiling: float = 0.5,
        budget: int | None = None, recent: int = 0, work: dict[str, int] | None = None,
    ) -> list[Candidate]:
        """Memories changed too recently to be merged into the index (a fraction of a second after a
        write): no vector or features yet, so placed on the reranker's scale by the share of the
        query's terms they contain: the best indexed memory's score (`ceiling`) times that share, so
        only one holding every term of the question reaches it (and goes just above it).

        Bounded whatever the user wrote: the newest `MAX_FRESH` are ranked, by the words of their
        first `FRESH_TERM_CHARS` characters; with a `budget`, only those packing may take (the
        `recent` newest, then those matching by score) and may fit are tokenized (and deduplicated),
        the others count as `budget + 1` tokens; without one (search), none is (`counted` gives the
        returned ones')."""
        live = [m for m in fresh.live.values() if not bounded or epoch_seconds(m.created_at) <= as_of]
        if not live:
            return []
        live = [live[i] for i in newest([epoch_seconds(m.created_at) for m in live], MAX_FRESH)]
        wanted = set(query_tokens)
        texts = [render_memory(_speaker(m), m.content or "") for m in live]
        words = lexical_tokens([t[:FRESH_TERM_CHARS] for t in texts]) if wanted else [[] for _ in live]
        scores = [(ceiling + 1e-6) * (len(wanted & set(terms)) / len(wanted) if wanted else 0.0) for terms in words]
        tokens = np.zeros(len(live), dtype=np.int64)
        if budget is not None:
            created_at = [m.created_at or "" for m in live]
            newest_first = sorted(range(len(live)), key=lambda i: created_at[i], reverse=True)[:recent]
            matching = sorted((i for i in range(len(live)) if scores[i] > 0), key=lambda i: -scores[i])
            tokens, spent = fitting_tokens(texts, list(dict.fromkeys(newest_first + matching)), budget, self.tokens().count)
            if work is not None:
                work.update(fresh_unmerged=len(fresh.live), fresh_ranked=len(live), fresh_chars_tokenized=spent)
        return [
            Candidate("recent", m.memory_id, text, int(count), score, "hot", [m.memory_id], m.created_at or "",
                      dedup_key(m.content or "") if budget is None or count <= budget else 0)
            for m, text, count, score in zip(live, texts, tokens.tolist(), scores)
        ]

    def counted(self, candidates: list[Candidate]) -> list[Candidate]:
        """`candidates` with the tokens of the unmerged memories `fresh_candidates` left uncounted (0)
        filled in: search counts only the memories it returns."""
        uncounted = [i for i, c in enumerate(candidates) if not c.tokens]
        if not uncounted:
            return candidates
        counts = dict(zip(uncounted, (self.tokens().count([candidates[i].text for i in uncounted]) + 1).tolist()))
        return [replace(c, tokens=counts[i]) if i in counts else c for i, c in enumerate(candidates)]

    def choose_adapter(self, loaded: LoadedUser, vector: np.ndarray | None) -> SelectedAdapter | None:
        """The user's champion adapter the query routes to: the one with the highest similarity to its
        concept's centroid or one of its facts, when that reaches the adapter's fitted threshold
        (`lora.routing`). Otherwise none, and the base model answers."""
        found = loaded.adapters
        if found is None or vector is None or not found.adapters:
            return None
        similarities = self.embedder.similarities(found.anchors, vector)
        best_of = np.full(len(found.adapters), -np.inf, dtype=np.float32)
        np.maximum.at(best_of, found.owners, similarities)
        reached = best_of >= np.array([a.threshold or self.adapter_min_similarity for a in found.adapters], dtype=np.float32)
        if not reached.any():
            return None
        best = int(np.argmax(np.where(reached, best_of, -np.inf)))
        adapter = found.adapters[best]
        return replace(adapter, similarity=round(float(best_of[best]), 4))
