"""Ranking and packing for context assembly: pure functions over one user's `UserIndex`.

`rank_memories` gathers candidates from BM25, dense similarity, the query's time window and session
neighbours, and scores them with the learned reranker (`reranker.py`); `pack_context` fills a token
budget by probability per token, one date line per day, preferring a concept summary where it
carries its members' content in fewer tokens. The baselines (`rank_lexical`, `rank_dense`, `rank_hybrid`) rank the same
index by one signal, for the retrieval harness."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from hms_resources.context.index import TIER_NAMES, UserIndex
from hms_resources.context.reranker import FEATURES, QuerySignals, Reranker, candidate_features, is_time_question, question_word
from hms_resources.context.temporal import TimeScope

DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class RetrievalConfig:
    candidates: int = 100
    """Candidates taken from each of the lexical and dense rankings, before the reranker."""
    neighbours_of: int = 20
    """The session neighbours of this many of the best fused candidates join the candidates."""
    seeds: int = 3
    """The best fused candidates every candidate is compared with in meaning (`seed_dense`)."""
    recency_half_life_days: float = 30.0
    recent_count: int = 3
    recent_share: float = 0.1
    """At most this share of the budget goes to the most recent memories, when the query asks for them
    ("most recently", "lately") or says nothing a memory can match."""
    order_weight: float = 0.3
    """How far "first" or "most recent" lifts the earliest or latest of the relevant memories."""


@dataclass
class Candidate:
    """Something that may go into a context: a memory, a concept summary or a recent memory."""

    kind: str
    memory_id: str
    text: str
    tokens: int
    score: float
    tier: str
    source_ids: list[str]
    created_at: str = ""
    dedup: int = 0
    rows: list[int] = field(default_factory=list)


def recency(created: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    age_days = np.maximum(now - created, 0.0) / DAY_SECONDS
    return np.power(0.5, age_days / half_life_days).astype(np.float32)


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k largest finite values, best first."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.argpartition(-values, k - 1)[:k] if len(values) > k else np.arange(len(values))
    rows = rows[np.isfinite(values[rows])]
    return rows[np.argsort(-values[rows], kind="stable")]


def time_focus(index: UserIndex, scope: TimeScope, anchor_tokens: list[str], eligible: np.ndarray) -> np.ndarray | None:
    """Rows the query's time points at: inside its window, narrowed to the day of the memory that best
    matches its anchor event when it names one."""
    mask = None
    if scope.has_window:
        mask = eligible & (index.created >= scope.start) & (index.created < scope.end)
    if anchor_tokens:
        scores = np.where(eligible if mask is None else mask, index.lexical_scores(anchor_tokens), 0.0)
        best = int(np.argmax(scores))
        if scores[best] > 0:
            day = np.floor(index.created / DAY_SECONDS)
            mask = eligible & (day == day[best])
    return mask


@dataclass
class Ranking:
    """Candidate rows best first, their probability of being evidence, and the features it came from."""

    rows: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def _positions(rows: np.ndarray) -> dict[int, int]:
    return {int(r): i for i, r in enumerate(rows.tolist())}


def rank_memories(
    index: UserIndex,
    similarities: np.ndarray | None,
    query: str,
    query_tokens: list[str],
    eligible: np.ndarray,
    now: float,
    reranker: Reranker,
    config: RetrievalConfig = RetrievalConfig(),
    scope: TimeScope = TimeScope(),
    anchor_tokens: list[str] = (),
) -> Ranking:
    """Candidates from BM25, dense similarity (`similarities`: the query embedding's cosine with every
    row, or None), the query's time window and the session neighbours of the best of them, scored by
    the reranker. With nothing to match, the most important and recent memories."""
    import time

    timings: dict[str, float] = {}
    started = time.perf_counter()
    lexical, coverage, session_coverage = index.term_matches(query_tokens)
    lexical = np.where(eligible, lexical, 0.0)
    timings["lexical"] = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    usable = eligible & index.has_vector
    dense = np.where(usable, similarities, 0.0) if similarities is not None else np.zeros(len(index), dtype=np.float32)
    rows_lexical = _top(np.where(lexical > 0, lexical, -np.inf), config.candidates)
    rows_dense = _top(np.where(usable, dense, -np.inf), config.candidates) if similarities is not None else rows_lexical[:0]
    if not len(rows_lexical) and not len(rows_dense):
        standing = 0.5 * (index.prior + recency(index.created, now, config.recency_half_life_days))
        rows = _top(np.where(eligible, standing, -np.inf), config.candidates)
        return Ranking(rows, standing[rows].astype(np.float64), np.zeros((len(rows), len(FEATURES))), timings)
    focus = time_focus(index, scope, list(anchor_tokens), eligible)
    pool = [rows_lexical, rows_dense]
    if focus is not None:
        pool.append(_top(np.where(focus & usable, dense, -np.inf), config.candidates // 2))
        pool.append(_top(np.where(focus & (lexical > 0), lexical, -np.inf), config.candidates // 2))
    lexical_rank, dense_rank = _positions(rows_lexical), _positions(rows_dense)
    fused: dict[int, float] = {}
    for ranks in (lexical_rank, dense_rank):
        for row, position in ranks.items():
            fused[row] = fused.get(row, 0.0) + 1.0 / (61 + position)
    best = sorted(fused, key=lambda r: -fused[r])[: config.neighbours_of]
    seeds = np.array(best[: config.seeds], dtype=np.int64)

    around = np.concatenate([index.prev_row[best], index.next_row[best]]).astype(np.int64)
    pool.append(around[(around >= 0)])
    rows = np.unique(np.concatenate(pool).astype(np.int64))
    rows = rows[eligible[rows]]
    timings["candidates"] = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    query_lower = query.lower()
    signals = QuerySignals(
        lexical=lexical,
        coverage=coverage,
        context_lexical=np.where(eligible, index.context_lexical_scores(query_tokens), 0.0),
        dense=dense.astype(np.float64),
        lexical_rank=lexical_rank,
        dense_rank=dense_rank,
        pool=config.candidates,
        named_speakers={i for i, name in enumerate(index.speakers) if _names(name, query_lower)},
        time_question=is_time_question(query),
        window=focus,
        has_window=focus is not None,
        starts=question_word(query),
        session_coverage=session_coverage,
        seeds=seeds,
    )
    features = candidate_features(index, rows, signals)
    scores = reranker.probabilities(features)
    if scope.order and len(rows) > 1:
        scores = scores * _order_boost(index.created[rows], scores, scope.order, config.order_weight)
    order = np.argsort(-scores, kind="stable")
    timings["rerank"] = (time.perf_counter() - started) * 1e3
    return Ranking(rows[order], scores[order], features[order], timings)


def _names(name: str, query_lower: str) -> bool:
    return re.search(rf"\b{re.escape(name.lower())}\b", query_lower) is not None


def _order_boost(created: np.ndarray, scores: np.ndarray, order: str, weight: float) -> np.ndarray:
    """Lift the earliest (or latest) of the clearly relevant candidates: those within half the best score."""
    relevant = scores >= 0.5 * scores.max()
    factor = np.ones(len(scores), dtype=np.float32)
    if relevant.sum() < 2:
        return factor
    times = created[relevant]
    position = (times - times.min()) / max(float(times.max() - times.min()), 1.0)
    factor[relevant] += weight * (1.0 - position if order == "earliest" else position)
    return factor


def memory_candidate(index: UserIndex, row: int, score: float, kind: str = "memory") -> Candidate:
    return Candidate(
        kind=kind,
        memory_id=index.memory_ids[row],
        text=index.texts[row],
        tokens=int(index.tokens[row]),
        score=float(score),
        tier=TIER_NAMES[int(index.tier[row])],
        source_ids=[index.memory_ids[row]],
        created_at=index.created_at[row],
        dedup=int(index.dedup[row]),
        rows=[row],
    )


def summary_candidates(index: UserIndex, rows: np.ndarray, scores: np.ndarray, eligible: np.ndarray) -> list[Candidate]:
    """Concept summaries that carry at least two ranked members in fewer tokens than those members."""
    score_of = dict(zip(rows.tolist(), scores.tolist()))
    found: list[Candidate] = []
    for concept_index in {int(index.concept_of[r]) for r in rows.tolist()} - {-1}:
        concept = index.concepts[concept_index]
        carried = [r for r in concept.carried_rows.tolist() if eligible[r]]
        if len(carried) < len(concept.carried_rows):
            continue
        covered = [r for r in carried if r in score_of]
        if len(covered) < 2 or concept.tokens >= int(index.tokens[covered].sum()):
            continue
        found.append(
            Candidate(
                kind="concept_summary",
                memory_id=concept.concept_id,
                text=concept.text,
                tokens=concept.tokens,
                score=max(score_of[r] for r in covered),
                tier=TIER_NAMES[int(index.tier[carried].min())],
                source_ids=[index.memory_ids[r] for r in carried],
                created_at=max(index.created_at[r] for r in carried),
                rows=carried,
            )
        )
    return found


@dataclass(frozen=True)
class Packing:
    """How a budget is spent: `header_tokens` for each day's date line, and the order of candidates by
    score / tokens ** `cost_exponent` (0: by score alone)."""

    header_tokens: int = 0
    cost_exponent: float = 0.0

    def priority(self, candidate: Candidate) -> float:
        if self.cost_exponent == 0.0:
            return candidate.score
        return candidate.score / max(candidate.tokens, 1) ** self.cost_exponent


def pack_context(
    ranked: list[Candidate], recent: list[Candidate], budget: int, recent_share: float, packing: Packing = Packing()
) -> list[Candidate]:
    """Fill `budget` tokens: recent memories within their share, then the rest by priority; each memory
    at most once, duplicates of an included text skipped, a summary replacing the members it carries.
    A memory of a day not yet in the context pays for that day's date line (its `tokens` include it)."""
    chosen: list[Candidate] = []
    used = 0
    covered: set[str] = set()
    texts: set[int] = set()
    days: set[str] = set()

    def take(candidate: Candidate, limit: int) -> bool:
        nonlocal used
        if candidate.kind == "concept_summary":
            if any(s in covered for s in candidate.source_ids):
                return False
        elif candidate.memory_id in covered or (candidate.dedup and candidate.dedup in texts):
            return False
        day = candidate.created_at[:10] if candidate.kind != "concept_summary" else ""
        cost = candidate.tokens + (packing.header_tokens if day and day not in days else 0)
        if used + cost > limit:
            return False
        chosen.append(replace(candidate, tokens=cost) if cost != candidate.tokens else candidate)
        used += cost
        covered.update(candidate.source_ids)
        if day:
            days.add(day)
        if candidate.dedup:
            texts.add(candidate.dedup)
        return True

    recent_limit = int(budget * recent_share)
    for candidate in recent:
        take(candidate, recent_limit)
    for candidate in sorted(ranked, key=lambda c: -packing.priority(c)):
        if budget - used < 8:
            break
        take(candidate, budget)
    return chosen


def rank_lexical(index: UserIndex, query_tokens: list[str]) -> np.ndarray:
    scores = index.lexical_scores(query_tokens)
    rows = np.flatnonzero(scores > 0)
    return rows[np.argsort(-scores[rows], kind="stable")]


def rank_dense(index: UserIndex, similarities: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(index.has_vector)
    return rows[np.argsort(-similarities[rows], kind="stable")]


def rank_hybrid(index: UserIndex, similarities: np.ndarray, query_tokens: list[str], k: int = 60) -> np.ndarray:
    """Reciprocal rank fusion of the BM25 and dense rankings."""
    fused = np.zeros(len(index), dtype=np.float64)
    for ranking in (rank_lexical(index, query_tokens), rank_dense(index, similarities)):
        fused[ranking] += 1.0 / (k + 1 + np.arange(len(ranking)))
    rows = np.flatnonzero(fused > 0)
    return rows[np.argsort(-fused[rows], kind="stable")]


def pack_ranked(index: UserIndex, rows: np.ndarray, budget: int, header_tokens: int = 0) -> list[Candidate]:
    """The baseline packing: memories in rank order while they fit, with the same date lines."""
    ranked = [memory_candidate(index, row, -position) for position, row in enumerate(rows.tolist())]
    return pack_context(ranked, [], budget, 0.0, Packing(header_tokens))
