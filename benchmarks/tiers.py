"""Scoring and tier assignment throughput: `score_importance` + `assign_tiers` over 1,000,000
memories of 1,000 users, against a per-memory Python loop of the same score in the same run.

Prints one JSON object. Goal: at least 1,000,000 memories scored and assigned per minute."""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from benchmarks.common import print_json
from hms_resources.tiers.importance import ImportanceConfig, ImportanceFeatures, assign_tiers, score_importance


def random_features(n: int, rng: np.random.Generator) -> ImportanceFeatures:
    importance = rng.uniform(0, 1, n)
    importance[rng.uniform(size=n) < 0.1] = np.nan
    return ImportanceFeatures(
        importance=importance,
        confidence=rng.uniform(0.5, 1, n),
        age_days=rng.exponential(40, n),
        decayed_accesses=rng.exponential(1.5, n),
        relevant=rng.poisson(1.0, n).astype(float),
        irrelevant=rng.poisson(0.3, n).astype(float),
        relevance_mean=np.where(rng.uniform(size=n) < 0.5, rng.uniform(0, 1, n), np.nan),
        concept_size=rng.poisson(4, n).astype(float),
        concept_cohesion=rng.uniform(0, 1, n),
        pinned=rng.uniform(size=n) < 0.001,
    )


def loop_score(f: ImportanceFeatures, i: int, c: ImportanceConfig) -> float:
    """The same score, one memory at a time in plain Python: the baseline."""
    if f.pinned[i]:
        return 1.0
    importance = c.default_importance if math.isnan(f.importance[i]) else f.importance[i]
    recency = 0.5 ** (max(f.age_days[i], 0) / c.recency_half_life_days)
    access = 1 - math.exp(-max(f.decayed_accesses[i], 0) / c.access_saturation)
    votes = (f.relevant[i] + 1) / (f.relevant[i] + f.irrelevant[i] + 2)
    feedback = votes if math.isnan(f.relevance_mean[i]) else (votes + f.relevance_mean[i]) / 2
    concept = min(max(f.concept_cohesion[i] * (1 - math.exp(-f.concept_size[i] / c.concept_size_saturation)), 0), 1)
    weights = (c.weight_importance, c.weight_confidence, c.weight_recency, c.weight_access, c.weight_feedback, c.weight_concept)
    terms = (importance, f.confidence[i], recency, access, feedback, concept)
    return min(max(sum(w * t for w, t in zip(weights, terms)) / sum(weights), 0.0), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-sample", type=int, default=50_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    features = random_features(args.memories, rng)
    users = rng.integers(0, args.users, args.memories)
    order_key = rng.permutation(args.memories)
    promote = rng.uniform(size=args.memories) < 0.01
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores = score_importance(features)
        tiers = assign_tiers(users, scores, order_key, promote)
        runs.append(time.perf_counter() - start)
    seconds = sorted(runs)[len(runs) // 2]
    config = ImportanceConfig()
    sample = min(args.baseline_sample, args.memories)
    start = time.perf_counter()
    looped = [loop_score(features, i, config) for i in range(sample)]
    loop_seconds = time.perf_counter() - start
    assert np.allclose(looped, scores[:sample])
    per_minute = args.memories / seconds * 60
    print_json({
        "benchmark": "tiers",
        "memories": args.memories,
        "users": args.users,
        "seconds": round(seconds, 3),
        "memories_per_minute": round(per_minute),
        "tier_counts": {name: int((tiers == code).sum()) for code, name in enumerate(("hot", "warm", "cold", "archived"))},
        "python_loop_score_only": {"memories": sample, "memories_per_minute": round(sample / loop_seconds * 60)},
        "ratio_to_python_loop": round(per_minute / (sample / loop_seconds * 60), 1),
        "goal_memories_per_minute": 1_000_000,
        "meets_goal": per_minute >= 1_000_000,
    })


if __name__ == "__main__":
    main()
