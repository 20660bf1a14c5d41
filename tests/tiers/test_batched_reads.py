"""A read of several memories stored as one event (what a context call appends) counts exactly as one
access event per memory would: in the memories' state, in the tier inputs and tiers of every day, and
in the access predictor's features and labels."""

import random
import tempfile
from datetime import date, timedelta

import numpy as np
import pytest

from hms_resources.store.event_store import EventStore
from hms_resources.store.events import read_records
from hms_resources.store.ingest import ingest_records
from hms_resources.tiers.access_predictor import feature_matrix, weekly_samples
from hms_resources.tiers.assignment import TieringConfig, backfill_tiers
from hms_resources.tiers.importance import ImportanceConfig, TierConfig
from tests.helpers import at, created, event

DAY = 1440
FIRST_DAY = date(2026, 3, 1)
DAYS = [FIRST_DAY + timedelta(days=i) for i in range(0, 28, 3)]
SMALL = TieringConfig(tiers=TierConfig(hot_capacity=3, warm_capacity=4, cold_capacity=4, hot_threshold=0.6, warm_threshold=0.45))


def history(seed: int, batched: bool) -> list[dict]:
    """Two users' memories, archives, feedback and 80 reads of 1 to 6 memories over four weeks, in one
    random order; each read is one event (`batched`) or one `memory.accessed` per memory."""
    rng = random.Random(seed)
    records = [created(user, f"m{n}", f"fact {n}", minutes=-rng.randrange(DAY), importance=round(rng.random(), 2))
               for user in ("ana", "ben") for n in range(12)]
    later = [[event("archived", "ana", "m3", 9 * DAY, reason="done")], [event("accessed", "ben", "m1", 5 * DAY, was_relevant=True)],
             [event("accessed", "ana", "m2", 12 * DAY, was_relevant=False, relevance_score=0.2)]]
    for read in range(80):
        user = rng.choice(["ana", "ben"])
        memory_ids = [f"m{n}" for n in rng.sample(range(12), rng.randint(1, 6))]
        minutes = rng.randrange(28 * DAY)
        payload = {"access_method": "context", "query": f"question {read}"}
        if batched:
            later.append(read_records(f"read-{read}", user, memory_ids, at(minutes), payload))
        else:
            later.append([event("accessed", user, m, minutes, event_id=f"read-{read}-{m}", **payload) for m in memory_ids])
    rng.shuffle(later)
    return records + [record for group in later for record in group]


def stored(records: list[dict], home: str) -> EventStore:
    store = EventStore(database_url=f"sqlite:///{home}/store.db", hms_home=home)
    report = ingest_records(store, records)
    assert report.rejected == 0
    return store


def counters(store: EventStore) -> dict:
    return {m.key: (m.access_count, m.last_accessed_at, m.relevant_count, m.irrelevant_count, m.relevance_score_sum, m.event_count)
            for m in store.replay().values()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_batched_read_counts_in_state_tiers_and_predictor_as_single_accesses_do(seed):
    with tempfile.TemporaryDirectory() as singles_home, tempfile.TemporaryDirectory() as batched_home:
        singles, batched = stored(history(seed, False), singles_home), stored(history(seed, True), batched_home)
        try:
            assert batched.stats()["events"] < singles.stats()["events"]
            assert counters(batched) == counters(singles)
            for (day, one, _), (_, other, _) in zip(backfill_tiers(singles, DAYS, [], SMALL), backfill_tiers(batched, DAYS, [], SMALL)):
                assert (one.user_ids, one.memory_ids, one.tiers.tolist(), one.reasons) == (
                    other.user_ids, other.memory_ids, other.tiers.tolist(), other.reasons), day
                np.testing.assert_allclose(one.scores, other.scores, err_msg=str(day))
            config = ImportanceConfig()
            for one, other in zip(*(weekly_samples(s, [], config, FIRST_DAY, FIRST_DAY + timedelta(days=28)) for s in (singles, batched))):
                assert one.inputs.keys == other.inputs.keys
                np.testing.assert_array_equal(one.accessed_next_week, other.accessed_next_week)
                np.testing.assert_allclose(feature_matrix(one.inputs.features), feature_matrix(other.inputs.features))
        finally:
            singles.close()
            batched.close()
