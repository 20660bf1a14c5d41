"""Predictive tiering: the model is trained on weekly cutoffs, judged on later held-out weeks, and
switched on only where it clearly beats the heuristic score."""

import random
from datetime import date

import numpy as np

from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.store.ingest import ingest_path, ingest_records
from hms_resources.tiers.access_predictor import load_predictor, save_predictor, train_and_evaluate, weekly_samples
from hms_resources.tiers.importance import ImportanceConfig
from tests.helpers import created, event

DAY = 1440


def test_a_model_that_learns_what_the_heuristic_misses_is_switched_on(store, tmp_path):
    rng = random.Random(0)
    records = []
    for user in range(6):
        for n in range(60):
            records.append(created(f"u{user}", f"m{n}", f"memory {n}", minutes=n, confidence=round(rng.random(), 3), importance=0.5))
    low = {(r["user_id"], r["memory_id"]) for r in records if r["payload"]["confidence"] < 0.3}
    for week in range(1, 11):
        for user in range(6):
            mine = sorted(m for u, m in low if u == f"u{user}")
            for memory_id in rng.sample(mine, 4):
                records.append(event("accessed", f"u{user}", memory_id, week * 7 * DAY + rng.randrange(6 * DAY)))
    ingest_records(store, sorted(records, key=lambda r: r["occurred_at"]))
    config = ImportanceConfig()
    samples = weekly_samples(store, [], config, date(2026, 3, 8), date(2026, 5, 17))
    model, evaluation = train_and_evaluate(samples, config, hot_capacity=1000)
    assert evaluation.held_out_positives >= 30
    assert evaluation.precision_model > evaluation.precision_heuristic
    assert evaluation.model_wins
    save_predictor(tmp_path, model, evaluation)
    predict = load_predictor(tmp_path, "auto")
    ranks = predict(samples[-1].inputs.features)
    assert ((ranks > 0) & (ranks <= 1)).all()
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
