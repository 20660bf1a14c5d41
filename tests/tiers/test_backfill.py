"""A backfill of many days from one read of the log equals today's per-day replay, for any history:
late events (occurred on a day already folded), archives, forgets and accesses included; and a user
shard's tiers equal its users' slice of the unsharded tiers."""

import os
import tempfile
from datetime import date, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hms_resources.common.sharding import user_shard
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from hms_resources.tiers.assignment import TieringConfig, backfill_tiers, compute_tiers, tier_migrations
from hms_resources.tiers.importance import TierConfig
from tests.helpers import event

FIRST_DAY = date(2026, 3, 1)
DAYS = [FIRST_DAY + timedelta(days=i) for i in range(6)]
SMALL = TieringConfig(tiers=TierConfig(hot_capacity=2, warm_capacity=2, cold_capacity=2, hot_threshold=0.6, warm_threshold=0.45))


@st.composite
def histories(draw):
    """Events on a few memories of three users, at random minutes from the day before the first day
    to the last day, appended in random order: the log's sequence disagrees with time."""
    records = []
    for position in range(draw(st.integers(1, 40))):
        user = draw(st.sampled_from(["ana", "ben", "caro"]))
        memory = f"m{draw(st.integers(0, 5))}"
        minutes = draw(st.integers(-24 * 60, 6 * 24 * 60))
        kind = draw(st.sampled_from(["created", "created", "updated", "accessed", "accessed", "tagged", "archived", "forgotten"]))
        payload = {
            "created": lambda: {"content": f"fact {position}", "importance": draw(st.floats(0, 1))},
            "updated": lambda: {"content": f"revised {position}", "importance": draw(st.floats(0, 1))},
            "accessed": lambda: draw(st.sampled_from([{"was_relevant": True}, {"was_relevant": False}, {}])),
            "tagged": lambda: {"tags": ["pinned"]},
            "archived": lambda: {"reason": "done"},
            "forgotten": lambda: {},
        }[kind]()
        records.append(event(kind, user, memory, minutes, event_id=f"e{position}", **payload))
    return records


def rows(snapshot):
    return list(zip(snapshot.user_ids, snapshot.memory_ids, snapshot.scores.tolist(), snapshot.tiers.tolist(), snapshot.reasons))


@settings(max_examples=int(os.environ.get("HMS_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=histories(), wanted=st.sets(st.sampled_from(DAYS), min_size=1))
def test_one_pass_backfill_equals_a_replay_per_day(records, wanted):
    with tempfile.TemporaryDirectory() as home:
        store = EventStore(database_url=f"sqlite:///{home}/store.db", hms_home=home)
        try:
            ingest_records(store, records)
            one_pass = list(backfill_tiers(store, sorted(wanted), [], SMALL))
            assert [day for day, _, _ in one_pass] == sorted(wanted)
            for day, snapshot, moves in one_pass:
                current = compute_tiers(store, day, [], SMALL)
                previous = compute_tiers(store, day - timedelta(days=1), [], SMALL)
                assert rows(snapshot) == rows(current), day
                assert moves == tier_migrations(previous, current), day
            for shard in range(2):
                users = lambda user_id, shard=shard: user_shard(user_id, 2) == shard  # noqa: E731
                for (day, whole, _), (_, part, _) in zip(one_pass, backfill_tiers(store, sorted(wanted), [], SMALL, users=users)):
                    assert rows(part) == [row for row in rows(whole) if users(row[0])], (day, shard)
        finally:
            store.close()


def test_a_late_event_is_folded_into_the_day_it_occurred_on_and_later_days(store):
    """Sequence order says the update came after the rename, but it occurred two days earlier."""
    ingest_records(store, [
        event("created", "ana", "m1", 0, content="first", importance=0.2),
        event("updated", "ana", "m1", 3 * 1440, content="renamed", importance=0.9),
        event("updated", "ana", "m1", 1440, content="late", importance=0.1),
    ])
    days = DAYS[:5]
    by_day = {day: snapshot for day, snapshot, _ in backfill_tiers(store, days, [])}
    for day in days:
        assert np.array_equal(by_day[day].scores, compute_tiers(store, day, []).scores), day
    assert by_day[DAYS[1]].scores[0] < by_day[DAYS[0]].scores[0], "the late update lowered the importance on its own day"
