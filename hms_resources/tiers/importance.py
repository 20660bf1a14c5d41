"""Dynamic importance and tier assignment, vectorised over all memories at once (numpy).

The score of a memory is a weighted mean of terms in [0, 1]:
- importance and confidence as recorded (defaults when missing);
- recency: 0.5 ** (age / half-life), age since the memory last changed;
- access: 1 - exp(-decayed accesses / saturation), each access decayed by its own half-life;
- feedback: relevant / irrelevant counts (Laplace-smoothed) averaged with the mean relevance score;
- concept support: the cohesion of the memory's concept, scaled by its size (0 for noise).
A pinned memory scores 1."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

HOT, WARM, COLD, ARCHIVED = 0, 1, 2, 3
TIER_NAMES = ("hot", "warm", "cold", "archived")


@dataclass(frozen=True)
class ImportanceConfig:
    recency_half_life_days: float = 30.0
    access_half_life_days: float = 14.0
    access_saturation: float = 1.0
    concept_size_saturation: float = 8.0
    default_importance: float = 0.5
    default_confidence: float = 0.7
    weight_importance: float = 0.30
    weight_confidence: float = 0.10
    weight_recency: float = 0.25
    weight_access: float = 0.20
    weight_feedback: float = 0.10
    weight_concept: float = 0.05


@dataclass
class ImportanceFeatures:
    """One entry per memory; NaN marks a missing importance, confidence or relevance mean."""

    importance: np.ndarray
    confidence: np.ndarray
    age_days: np.ndarray
    decayed_accesses: np.ndarray
    relevant: np.ndarray
    irrelevant: np.ndarray
    relevance_mean: np.ndarray
    concept_size: np.ndarray
    concept_cohesion: np.ndarray
    pinned: np.ndarray

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, f.name)) for f in fields(self)}
        if len(lengths) > 1:
            raise ValueError(f"importance features differ in length: {sorted(lengths)}")


def score_importance(features: ImportanceFeatures, config: ImportanceConfig = ImportanceConfig()) -> np.ndarray:
    f = features
    importance = np.where(np.isnan(f.importance), config.default_importance, f.importance)
    confidence = np.where(np.isnan(f.confidence), config.default_confidence, f.confidence)
    recency = np.power(0.5, np.maximum(f.age_days, 0) / config.recency_half_life_days)
    access = 1.0 - np.exp(-np.maximum(f.decayed_accesses, 0) / config.access_saturation)
    votes = (f.relevant + 1.0) / (f.relevant + f.irrelevant + 2.0)
    feedback = np.where(np.isnan(f.relevance_mean), votes, (votes + f.relevance_mean) / 2)
    concept = f.concept_cohesion * (1.0 - np.exp(-f.concept_size / config.concept_size_saturation))
    weights = np.array(
        [
            config.weight_importance,
            config.weight_confidence,
            config.weight_recency,
            config.weight_access,
            config.weight_feedback,
            config.weight_concept,
        ]
    )
    terms = np.stack([importance, confidence, recency, access, feedback, np.clip(concept, 0, 1)])
    score = (weights[:, None] * terms).sum(axis=0) / weights.sum()
    return np.where(f.pinned, 1.0, np.clip(score, 0.0, 1.0))


def decayed_access_count(access_age_days: np.ndarray, half_life_days: float) -> float:
    """Accesses weighted by 0.5 ** (age / half-life): recent accesses count fully, old ones fade."""
    return float(np.power(0.5, np.maximum(access_age_days, 0) / half_life_days).sum())


@dataclass(frozen=True)
class TierConfig:
    hot_capacity: int = 1_000
    warm_capacity: int = 10_000
    cold_capacity: int = 100_000
    hot_threshold: float = 0.7
    warm_threshold: float = 0.3


def assign_tiers(
    user_index: np.ndarray,
    scores: np.ndarray,
    order_key: np.ndarray,
    promote: np.ndarray,
    config: TierConfig = TierConfig(),
) -> np.ndarray:
    """The tier of every memory, per user: hot for scores at or above the hot threshold, warm at or
    above the warm threshold, cold below; each tier holds at most its capacity (the best scores stay,
    the overflow moves one tier down), and beyond cold capacity a memory is archived. `promote` marks
    cold memories accessed since the last migration: they rank as warm. `order_key` (an integer rank
    of the memory ids) breaks ties, so the result is deterministic."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    wanted = np.where(scores >= config.hot_threshold, HOT, np.where(scores >= config.warm_threshold, WARM, COLD))
    wanted = np.where(promote & (wanted == COLD), WARM, wanted)
    order = np.lexsort((order_key, -scores, wanted, user_index))
    sorted_users = user_index[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    rank = np.arange(n) - starts[group]
    sorted_wanted = wanted[order]
    hot = np.minimum(_per_group_count(sorted_wanted == HOT, group, len(starts)), config.hot_capacity)
    warm = np.minimum(_per_group_count(sorted_wanted <= WARM, group, len(starts)) - hot, config.warm_capacity)
    hot_end = hot[group]
    warm_end = hot_end + warm[group]
    cold_end = warm_end + config.cold_capacity
    tier = np.select([rank < hot_end, rank < warm_end, rank < cold_end], [HOT, WARM, COLD], ARCHIVED).astype(np.int8)
    result = np.empty(n, dtype=np.int8)
    result[order] = tier
    return result


def _per_group_count(mask: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    return np.bincount(group[mask], minlength=groups)
