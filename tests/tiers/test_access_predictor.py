"""Predictive tiering: the model is trained on weekly cutoffs, judged on later held-out weeks, and
switched on only where it clearly beats the heuristic score."""

import random
from datetime import date

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.store.ingest import ingest_path, ingest_records
from hms_resources.tiers.access_predictor import feature_matrix, load_predictor, save_predictor, train_and_evaluate, weekly_samples
from hms_resources.tiers.importance import ImportanceConfig, score_importance
from tests.helpers import created, event

DAY = 1440


def six_users_with_a_reading_habit() -> list[dict]:
    """Per user, 60 memories of random confidence: 4 of the low-confidence ones (which the heuristic
    ranks low) are read in random weeks, one memory ("weekly") is read every week, the rest never."""
    rng = random.Random(0)
    records = []
    for user in range(6):
        for n in range(60):
            records.append(created(f"u{user}", f"m{n}", f"memory {n}", minutes=n, confidence=round(rng.random(), 3), importance=0.5))
        records.append(created(f"u{user}", "weekly", "read every week", minutes=70, confidence=0.9, importance=0.5))
    low = {(r["user_id"], r["memory_id"]) for r in records if r["payload"]["confidence"] < 0.3}
    for week in range(1, 11):
        for user in range(6):
            mine = sorted(m for u, m in low if u == f"u{user}")
            for memory_id in rng.sample(mine, 4):
                records.append(event("accessed", f"u{user}", memory_id, week * 7 * DAY + rng.randrange(6 * DAY)))
            records.append(event("accessed", f"u{user}", "weekly", week * 7 * DAY + 3 * DAY + user * 60))
    return sorted(records, key=lambda r: r["occurred_at"])


def test_the_model_predicts_next_week_s_reads_beats_the_heuristic_and_is_switched_on(store, tmp_path):
    ingest_records(store, six_users_with_a_reading_habit())
    config = ImportanceConfig()
    samples = weekly_samples(store, [], config, date(2026, 3, 8), date(2026, 5, 17))
    assert len(samples) == 10

    # Trained without the last two weeks, it ranks those weeks' reads far better than chance and the heuristic.
    earlier, _ = train_and_evaluate(samples[:-2], config, hot_capacity=1000)
    for week in samples[-2:]:
        probability = earlier.predict_proba(feature_matrix(week.inputs.features))[:, 1]
        read = week.accessed_next_week
        assert 0 < read.mean() < 0.2
        assert roc_auc_score(read, probability) >= 0.85
        assert roc_auc_score(read, probability) >= roc_auc_score(read, score_importance(week.inputs.features, config)) + 0.1
        ids = np.array(week.inputs.memory_ids)
        never_read = (week.inputs.features.confidence >= 0.3) & (ids != "weekly")
        assert probability[ids == "weekly"].min() >= 0.8, "a memory read every week will be read next week"
        assert probability[never_read].max() <= 0.1, "a memory never read will not be"

    model, evaluation = train_and_evaluate(samples, config, hot_capacity=1000)
    assert evaluation.held_out_positives >= 30
    assert evaluation.model_wins and evaluation.precision_model > evaluation.precision_heuristic

    save_predictor(tmp_path, model, evaluation)
    features = samples[-1].inputs.features
    probability = model.predict_proba(feature_matrix(features))[:, 1]
    expected_ranks = rankdata(probability, method="ordinal") / len(probability)
    for mode in ("auto", "on"):
        assert np.array_equal(load_predictor(tmp_path, mode)(features), expected_ranks), "the saved model predicts what the trained one did"
    assert load_predictor(tmp_path, "off") is None


def test_on_the_sample_data_the_heuristic_stays_in_charge(tmp_path):
    from hms_resources.store.event_store import EventStore

    store = EventStore(hms_home=str(tmp_path))
    ingest_path(store, SAMPLE_EVENTS)
    config = ImportanceConfig()
    samples = weekly_samples(store, [], config, date(2026, 9, 8), date(2026, 11, 1))
    model, evaluation = train_and_evaluate(samples, config, hot_capacity=1000)
    assert not evaluation.model_wins
    save_predictor(tmp_path, model, evaluation)
    assert load_predictor(tmp_path, "auto") is None
    assert load_predictor(tmp_path, "on") is not None
    assert np.isfinite(evaluation.precision_heuristic)
