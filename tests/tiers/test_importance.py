"""Dynamic importance and tier assignment (groundwork of the tiers issue): pure, vectorised functions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hms_resources.tiers.importance import (
    ARCHIVED,
    COLD,
    HOT,
    WARM,
    ImportanceConfig,
    ImportanceFeatures,
    TierConfig,
    assign_tiers,
    decayed_access_count,
    score_importance,
)


def features(n=1, **overrides):
    base = dict(
        importance=np.full(n, 0.5), confidence=np.full(n, 0.7), age_days=np.zeros(n), decayed_accesses=np.zeros(n),
        relevant=np.zeros(n), irrelevant=np.zeros(n), relevance_mean=np.full(n, np.nan),
        concept_size=np.zeros(n), concept_cohesion=np.zeros(n), pinned=np.zeros(n, dtype=bool),
    )
    base.update({k: np.asarray(v, dtype=base[k].dtype) for k, v in overrides.items()})
    return ImportanceFeatures(**base)


@pytest.mark.parametrize(
    "field, low, high",
    [
        ("importance", [0.1], [0.9]),
        ("confidence", [0.1], [0.9]),
        ("age_days", [90.0], [1.0]),
        ("decayed_accesses", [0.0], [5.0]),
        ("relevant", [0.0], [6.0]),
        ("concept_cohesion", [0.0], [0.9]),
    ],
)
def test_each_signal_raises_the_score(field, low, high):
    extra = {"concept_size": [10.0]} if field == "concept_cohesion" else {}
    assert score_importance(features(**{field: high}, **extra))[0] > score_importance(features(**{field: low}, **extra))[0]


def test_negative_feedback_lowers_the_score_and_a_pin_sets_it_to_one():
    assert score_importance(features(irrelevant=[5.0]))[0] < score_importance(features())[0]
    assert score_importance(features(importance=[0.0], age_days=[400.0], pinned=[True]))[0] == 1.0


def test_recency_halves_the_term_every_half_life():
    config = ImportanceConfig(weight_importance=0, weight_confidence=0, weight_access=0, weight_feedback=0, weight_concept=0)
    scores = score_importance(features(2, age_days=[0.0, 30.0]), config)
    assert scores == pytest.approx([1.0, 0.5])
    assert decayed_access_count(np.array([0.0, 14.0, 28.0]), 14.0) == pytest.approx(1.75)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1000), st.floats(0, 50), st.booleans()), min_size=1, max_size=50))
def test_scores_stay_within_zero_and_one(rows):
    imp, conf, age, acc, pin = (np.array(c) for c in zip(*rows))
    scores = score_importance(features(len(rows), importance=imp, confidence=conf, age_days=age, decayed_accesses=acc, pinned=pin))
    assert ((scores >= 0) & (scores <= 1)).all()


def test_tiers_follow_thresholds_then_capacities_and_archive_beyond_cold():
    users = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.9, 0.8, 0.5, 0.1, 0.95, 0.2])
    tiers = assign_tiers(users, scores, np.arange(6), np.zeros(6, bool), TierConfig(1, 1, 1))
    assert tiers.tolist() == [HOT, WARM, COLD, ARCHIVED, HOT, COLD]
    roomy = assign_tiers(users, scores, np.arange(6), np.zeros(6, bool))
    assert roomy.tolist() == [HOT, HOT, WARM, COLD, HOT, COLD]


def test_an_accessed_cold_memory_is_promoted():
    tiers = assign_tiers(np.zeros(2, int), np.array([0.1, 0.1]), np.arange(2), np.array([True, False]))
    assert tiers.tolist() == [WARM, COLD]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1)), max_size=200), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))
def test_no_user_ever_exceeds_a_tier_capacity_and_the_result_is_deterministic(rows, hot, warm, cold):
    users = np.array([u for u, _ in rows], dtype=int)
    scores = np.array([s for _, s in rows], dtype=float)
    config = TierConfig(hot, warm, cold)
    tiers = assign_tiers(users, scores, np.arange(len(rows)), np.zeros(len(rows), bool), config)
    for user in set(users.tolist()):
        mine = tiers[users == user]
        assert (mine == HOT).sum() <= hot and (mine == WARM).sum() <= warm and (mine == COLD).sum() <= cold
        if (mine == ARCHIVED).any():
            assert (mine == COLD).sum() == cold, "a memory is archived only when cold is full"
    assert assign_tiers(users, scores, np.arange(len(rows)), np.zeros(len(rows), bool), config).tolist() == tiers.tolist()
