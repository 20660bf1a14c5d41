"""Ranking and packing for context assembly: pure functions over one user's `UserIndex`.

`rank_memories` fuses BM25 and dense similarity, weighs in dynamic importance and time decay, and
spreads score to a strong hit's session neighbours, `SIMILAR_TO` neighbours and concept members;
`pack_context` fills a token budget, preferring a concept summary where it carries its members'
content in fewer tokens. The baselines (`rank_lexical`, `rank_dense`, `rank_hybrid`) rank the same
index by one signal, for the retrieval harness."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hms_resources.context.index import TIER_NAMES, UserIndex
from hms_resources.context.temporal import TimeScope

DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class RetrievalConfig:
    candidates: int = 64
    """Candidates taken from each of the lexical and dense rankings."""
    dense_weight: float = 0.8
    importance_weight: float = 0.15
    recency_weight: float = 0.1
    recency_half_life_days: float = 30.0
    expand_top: int = 8
    session_factor: float = 0.6
    similar_factor: float = 0.5
    concept_factor: float = 0.3
    concept_members: int = 4
    recent_count: int = 3
    recent_share: float = 0.1
    """At most this share of the budget goes to the most recent memories."""
    time_weight: float = 1.0
    """Score added, as a share, to memories inside the query's time window or on its anchor's day."""
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


def rank_memories(
    index: UserIndex,
    similarities: np.ndarray | None,
    query_tokens: list[str],
    eligible: np.ndarray,
    now: float,
    config: RetrievalConfig = RetrievalConfig(),
    scope: TimeScope = TimeScope(),
    anchor_tokens: list[str] = (),
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Candidate rows and their scores, best first, with per-stage timings in ms. `similarities`:
    the query embedding's cosine with every row's vector, or None without a query or a model."""
    import time

    timings: dict[str, float] = {}
    started = time.perf_counter()
    prior = index.prior
    boost = 1.0 + config.importance_weight * prior + config.recency_weight * recency(
        index.created, now, config.recency_half_life_days
    )
    focus = time_focus(index, scope, list(anchor_tokens), eligible)
    if focus is not None:
        boost = boost * np.where(focus, 1.0 + config.time_weight, 1.0)
    if similarities is None and not query_tokens:
        score = np.where(eligible, boost, -np.inf)
        rows = _top(score, config.candidates * 2)
        timings["rank"] = (time.perf_counter() - started) * 1e3
        return rows, score[rows], timings
    lexical = index.lexical_scores(query_tokens)
    lexical = np.where(eligible, lexical, 0.0)
    timings["lexical"] = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    rows_lexical = _top(np.where(lexical > 0, lexical, -np.inf), config.candidates)
    if focus is not None:
        rows_lexical = np.union1d(rows_lexical, _top(np.where(focus & (lexical > 0), lexical, -np.inf), config.candidates // 2))
    usable = eligible & index.has_vector
    if similarities is not None and usable.any():
        dense = np.where(usable, similarities, -np.inf)
        rows_dense = _top(dense, config.candidates)
        high, low = float(dense[rows_dense[0]]), float(dense[rows_dense[-1]])
        if focus is not None:
            rows_dense = np.union1d(rows_dense, _top(np.where(focus, dense, -np.inf), config.candidates // 2))
            low = min(low, float(dense[rows_dense].min()))
    else:
        dense = np.zeros(len(index), dtype=np.float32)
        rows_dense = np.zeros(0, dtype=np.int64)
    timings["dense"] = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    rows = np.union1d(rows_lexical, rows_dense)
    relevance = np.zeros(len(rows), dtype=np.float32)
    if len(rows_dense):
        span = max(high - low, 1e-6)
        relevance += config.dense_weight * np.clip((np.where(np.isfinite(dense[rows]), dense[rows], low) - low) / span, 0.0, 1.0)
    if len(rows_lexical):
        lexical_weight = 1.0 - config.dense_weight if len(rows_dense) else 1.0
        relevance += lexical_weight * lexical[rows] / max(float(lexical[rows_lexical].max()), 1e-6)
    fused = relevance * boost[rows]
    if scope.order and len(rows) > 1:
        fused = fused * _order_boost(index.created[rows], fused, scope.order, config.order_weight)
    scores = dict(zip(rows.tolist(), fused.tolist()))
    _expand(index, scores, eligible, dense, config)
    rows = np.fromiter(scores.keys(), dtype=np.int64, count=len(scores))
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    order = np.argsort(-values, kind="stable")
    timings["fuse"] = (time.perf_counter() - started) * 1e3
    return rows[order], values[order], timings


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


def _expand(index: UserIndex, scores: dict[int, float], eligible: np.ndarray, dense: np.ndarray, config: RetrievalConfig) -> None:
    """Spread part of each strong hit's score to the memories around it, keeping the larger score."""
    strongest = sorted(scores.items(), key=lambda item: -item[1])[: config.expand_top]
    concepts_seen: set[int] = set()

    def offer(row: int, value: float) -> None:
        if row >= 0 and eligible[row] and value > scores.get(row, 0.0):
            scores[row] = value

    for row, score in strongest:
        offer(int(index.prev_row[row]), score * config.session_factor)
        offer(int(index.next_row[row]), score * config.session_factor)
        neighbours, weights = index.similar(row)
        for neighbour, weight in zip(neighbours.tolist(), weights.tolist()):
            offer(neighbour, score * config.similar_factor * weight)
        concept = int(index.concept_of[row])
        if concept >= 0 and concept not in concepts_seen:
            concepts_seen.add(concept)
            members = index.concepts[concept].carried_rows
            best = members[np.argsort(-dense[members], kind="stable")[: config.concept_members]]
            for member in best.tolist():
                offer(member, score * config.concept_factor)


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


def pack_context(ranked: list[Candidate], recent: list[Candidate], budget: int, recent_share: float) -> list[Candidate]:
    """Fill `budget` tokens: recent memories within their share, then the rest by score; each memory
    at most once, duplicates of an included text skipped, a summary replacing the members it carries."""
    chosen: list[Candidate] = []
    used = 0
    covered: set[str] = set()
    texts: set[int] = set()

    def take(candidate: Candidate, limit: int) -> bool:
        nonlocal used
        if candidate.kind == "concept_summary":
            if any(s in covered for s in candidate.source_ids):
                return False
        elif candidate.memory_id in covered or (candidate.dedup and candidate.dedup in texts):
            return False
        if used + candidate.tokens > limit:
            return False
        chosen.append(candidate)
        used += candidate.tokens
        covered.update(candidate.source_ids)
        if candidate.dedup:
            texts.add(candidate.dedup)
        return True

    recent_limit = int(budget * recent_share)
    for candidate in recent:
        take(candidate, recent_limit)
    for candidate in sorted(ranked, key=lambda c: -c.score):
        if used >= budget:
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


def pack_ranked(index: UserIndex, rows: np.ndarray, budget: int) -> list[Candidate]:
    """The baseline packing: memories in rank order while they fit."""
    chosen: list[Candidate] = []
    used = 0
    for row in rows.tolist():
        tokens = int(index.tokens[row])
        if used + tokens <= budget:
            chosen.append(memory_candidate(index, row, 0.0))
            used += tokens
        if budget - used < 8:
            break
    return chosen
