"""The seeded generator and the bundled sample: deterministic, valid, and realistic in shape."""

import collections

import orjson

from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.datasets.synthetic import generate_bulk_events, generate_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import parse_event
from hms_resources.store.ingest import ingest_records


def test_the_same_seed_gives_the_same_events_and_another_seed_others():
    assert list(generate_events(seed=3)) == list(generate_events(seed=3))
    assert list(generate_events(seed=3)) != list(generate_events(seed=4))


def test_generated_events_are_all_valid_in_time_order_and_cover_every_event_type(tmp_path):
    records = list(generate_events(users=6, sessions_per_user=15, seed=1))
    report = ingest_records(EventStore(hms_home=str(tmp_path)), records)
    assert report.counts() == {"accepted": len(records), "duplicates": 0, "conflicts": 0, "rejected": 0}
    times = [parse_event(r).occurred_at for r in records]
    assert times == sorted(times)
    kinds = collections.Counter(r["type"] for r in records)
    assert set(kinds) == {"memory.created", "memory.updated", "memory.accessed", "memory.tagged",
                          "memory.related", "memory.archived", "memory.forgotten"}
    assert len({r["user_id"] for r in records}) == 6
    assert any("was_relevant" in r["payload"] for r in records if r["type"] == "memory.accessed")
    assert len({r["payload"].get("session_id") for r in records if r["type"] == "memory.created"}) >= 60


def test_bulk_generation_gives_the_requested_count():
    assert sum(1 for _ in generate_bulk_events(5_000, users=10)) == 5_000


def test_the_bundled_sample_is_the_generators_output_for_seed_7():
    shipped = [orjson.loads(line) for line in SAMPLE_EVENTS.read_bytes().splitlines()]
    assert shipped == list(generate_events(users=4, sessions_per_user=12, seed=7))
