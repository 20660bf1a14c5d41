"""The seeded event generator and the bundled sample: deterministic, valid, replayable into the memories it
describes, each user's events their own and in time order, and the sample is what `hms generate` writes."""

import collections
from datetime import datetime, timedelta

import orjson
import pytest
from click.testing import CliRunner

from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.datasets.synthetic import HOME, MOVED, PERSONAS, generate_bulk_events, generate_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import parse_event
from hms_resources.store.ingest import ingest_records
from hms_resources.store.memory_state import replay_events

RUNS = [
    {"users": 4, "sessions_per_user": 12, "seed": 7},
    {"users": 6, "sessions_per_user": 15, "seed": 1},
    {"users": 9, "sessions_per_user": 5, "seed": 2},
]


def by_user(records):
    events = collections.defaultdict(list)
    for record in records:
        events[record["user_id"]].append(record)
    return events


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


@pytest.mark.parametrize("run", RUNS, ids=lambda run: f"seed{run['seed']}")
def test_every_event_is_valid_and_belongs_to_its_user(run):
    records = list(generate_events(**run))
    events = [parse_event(r) for r in records]
    assert len({e.event_id for e in events}) == len(events)
    created = {(r["user_id"], r["memory_id"]) for r in records if r["type"] == "memory.created"}
    for e in events:
        assert e.event_id.startswith(e.user_id + "-") and e.memory_id.startswith(e.user_id + "-"), e
        assert e.key in created, e
        if e.type == "memory.related":
            assert (e.user_id, e.payload["target"]) in created and e.payload["target"] != e.memory_id, e
    assert len(by_user(records)) == run["users"]


@pytest.mark.parametrize("run", RUNS, ids=lambda run: f"seed{run['seed']}")
def test_each_users_events_follow_one_another_and_refer_only_to_memories_that_exist(run):
    for user, records in by_user(generate_events(**run)).items():
        times = [parse_event(r).occurred_at for r in records]
        assert times == sorted(set(times)), user  # strictly increasing
        created_in: dict[str, str] = {}
        forgotten: set[str] = set()
        sessions = []
        for r in records:
            memory_id, payload = r["memory_id"], r["payload"]
            assert memory_id not in forgotten, r
            if r["type"] == "memory.created":
                assert memory_id not in created_in, r
                if "parent_memory_id" in payload:
                    assert created_in.get(payload["parent_memory_id"]) == payload["session_id"], r
                created_in[memory_id] = payload["session_id"]
                sessions.append(payload["session_id"])
            else:
                assert memory_id in created_in, r
                assert r["type"] != "memory.related" or payload["target"] in created_in, r
            if r["type"] == "memory.forgotten":
                forgotten.add(memory_id)
        assert sessions == sorted(sessions), user


@pytest.mark.parametrize("run", RUNS, ids=lambda run: f"seed{run['seed']}")
def test_replaying_the_events_gives_the_memories_they_describe(run):
    records = list(generate_events(**run))
    state = replay_events(parse_event(r) for r in records)
    said = {(r["user_id"], r["memory_id"]): r["payload"]["content"] for r in records if r["type"] == "memory.created"}
    assert set(state) == set(said)
    for r in records:
        if r["type"] == "memory.updated":
            said[(r["user_id"], r["memory_id"])] = r["payload"]["content"]
    gone = {(r["user_id"], r["memory_id"]) for r in records if r["type"] == "memory.forgotten"}
    archived = {(r["user_id"], r["memory_id"]) for r in records if r["type"] == "memory.archived"}
    assert gone and archived
    for key, memory in state.items():
        assert memory.is_forgotten == (key in gone)
        assert memory.content == (None if key in gone else said[key])
        assert memory.is_archived == (key in archived and key not in gone)
    accessed = collections.Counter((r["user_id"], r["memory_id"]) for r in records if r["type"] == "memory.accessed")
    assert all(state[key].access_count == n for key, n in accessed.items() if key not in gone)


def test_every_user_says_where_they_live_and_later_that_they_moved():
    records = list(generate_events(users=len(PERSONAS), sessions_per_user=10, seed=5))
    state = replay_events(parse_event(r) for r in records)
    for persona in PERSONAS:
        user = f"user-{persona['name'].lower()}"
        homes = [r["memory_id"] for r in records if r["type"] == "memory.created" and r["user_id"] == user
                 and r["payload"]["content"] == HOME.format(**persona)]
        assert len(homes) == 1, user
        assert state[(user, homes[0])].content == MOVED.format(**persona)


def told_together(records, user: str) -> tuple[list[dict], collections.Counter]:
    """A user's memories tagged `pinned` (the facts told together) and how often each was recalled."""
    told = [r for r in records if r["type"] == "memory.created" and r["user_id"] == user and "pinned" in r["payload"]["tags"]]
    ids = {r["memory_id"] for r in told}
    recalled = collections.Counter(r["memory_id"] for r in records if r["type"] == "memory.accessed" and r["memory_id"] in ids)
    return told, recalled


@pytest.mark.parametrize("run", RUNS, ids=lambda run: f"seed{run['seed']}")
def test_maya_tells_six_distinct_facts_about_her_dog_that_stay_stable_important_and_recalled(run):
    """What the sample's LoRA candidate set trains on: one topic's distinct facts, told in one session a
    week or more before the last event, stated as important and pinned, each recalled later and never
    archived or forgotten; the same for a seed."""
    records = list(generate_events(**run))
    told, recalled = told_together(records, "user-maya")
    contents = [r["payload"]["content"] for r in told]
    assert len(set(contents)) == len(contents) >= 6
    assert all("Biscuit" in c for c in contents) and len({r["payload"]["session_id"] for r in told}) == 1
    def at(record: dict) -> datetime:
        return datetime.fromisoformat(record["occurred_at"])

    last = max(map(at, records))
    assert all(last - at(r) > timedelta(days=7) for r in told)
    assert all(r["payload"]["importance"] >= 0.5 and r["payload"]["confidence"] >= 0.6 for r in told)
    assert set(recalled) == {r["memory_id"] for r in told}
    ids = set(recalled)
    assert not [r for r in records if r["memory_id"] in ids and r["type"] in ("memory.updated", "memory.archived", "memory.forgotten")]
    again, _ = told_together(list(generate_events(**run)), "user-maya")
    assert again == told


def test_only_a_persona_with_facts_told_together_has_them_and_they_change_no_other_users_events(monkeypatch):
    with_them = list(generate_events(users=4, sessions_per_user=12, seed=7))
    assert [p["name"] for p in PERSONAS if p.get("told_together")] == ["Maya"]
    assert all(not told_together(with_them, user)[0] for user in ("user-sam", "user-lena", "user-omar"))
    monkeypatch.setitem(PERSONAS[0], "told_together", None)
    without = list(generate_events(users=4, sessions_per_user=12, seed=7))
    others = by_user(with_them), by_user(without)
    assert all(others[0][user] == others[1][user] for user in ("user-sam", "user-lena", "user-omar"))
    assert len(others[0]["user-maya"]) > len(others[1]["user-maya"])


def test_bulk_generation_gives_the_requested_count():
    assert sum(1 for _ in generate_bulk_events(5_000, users=10)) == 5_000


def test_the_bundled_sample_is_what_hms_generate_writes_for_seed_7(tmp_path):
    from hms_jobs.cli import main

    out = tmp_path / "sample.jsonl"
    result = CliRunner().invoke(main, ["generate", "--users", "4", "--sessions", "12", "--seed", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == SAMPLE_EVENTS.read_bytes()
    shipped = [orjson.loads(line) for line in SAMPLE_EVENTS.read_bytes().splitlines()]
    assert shipped == list(generate_events(users=4, sessions_per_user=12, seed=7))
