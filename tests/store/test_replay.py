"""The memory state is a pure, deterministic fold over events."""

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from hms_resources.store.events import parse_event
from hms_resources.store.memory_state import apply_events, replay_events
from tests.helpers import created, event

USERS = ("u1", "u2")
MEMORIES = ("m1", "m2", "m3")
OPERATIONS = ("created", "updated", "accessed", "tagged", "related", "archived", "forgotten")


@st.composite
def event_logs(draw):
    """Valid logs: events only for memories that exist and are not forgotten, as the store enforces."""
    status: dict[tuple[str, str], str] = {}
    log = []
    steps = draw(st.lists(st.tuples(st.sampled_from(OPERATIONS), st.sampled_from(USERS), st.sampled_from(MEMORIES),
                                    st.integers(0, 10_000), st.floats(0, 1), st.booleans()), max_size=40))
    for n, (op, user, memory, minute, number, flag) in enumerate(steps):
        key = (user, memory)
        if op == "created":
            if key in status:
                continue
            status[key] = "live"
            record = created(user, memory, f"memory {memory} of {user} #{n}", minute, importance=number, tags=["t"])
        elif status.get(key) in (None, "forgotten"):
            continue
        elif op == "updated":
            record = event("updated", user, memory, minute, content=f"update #{n}", confidence=number)
        elif op == "accessed":
            record = event("accessed", user, memory, minute, was_relevant=flag, relevance_score=number)
        elif op == "tagged":
            record = event("tagged", user, memory, minute, tags=[f"tag{n % 3}"], remove=["t"] if flag else [])
        elif op == "related":
            targets = [m for (u, m), s in status.items() if u == user and m != memory and s != "forgotten"]
            if not targets:
                continue
            record = event("related", user, memory, minute, target=targets[0], relationship_type="supports", strength=number)
        elif op == "archived":
            status[key] = "archived"
            record = event("archived", user, memory, minute, reason="stale")
        else:
            status[key] = "forgotten"
            record = event("forgotten", user, memory, minute)
        ev = parse_event(record)
        ev.sequence = len(log) + 1
        log.append(ev)
    return log


@settings(max_examples=200, deadline=None)
@given(log=event_logs(), data=st.data())
def test_incremental_apply_equals_full_replay(log, data):
    split = data.draw(st.integers(0, len(log)))
    incremental = apply_events(replay_events(log[:split]), log[split:])
    assert incremental == replay_events(log)


@settings(max_examples=100, deadline=None)
@given(log=event_logs())
def test_replay_is_deterministic_and_does_not_touch_its_input(log):
    before = copy.deepcopy(log)
    first = replay_events(log)
    assert replay_events(log) == first
    assert log == before


@settings(max_examples=100, deadline=None)
@given(log=event_logs())
def test_no_forgotten_memory_keeps_content(log):
    for memory in replay_events(log).values():
        if memory.is_forgotten:
            assert memory.content is None and memory.tags == [] and memory.metadata == {}


def test_fold_tracks_accesses_feedback_tags_relations_and_archive():
    log = [
        parse_event(r)
        for r in [
            created("u1", "m1", "lives in Lisbon", 0, tags=["home"], importance=0.5),
            created("u1", "m2", "works remotely", 1),
            event("updated", "u1", "m1", 2, content="moved to Porto"),
            event("accessed", "u1", "m1", 5, was_relevant=True, relevance_score=0.9),
            event("accessed", "u1", "m1", 4, was_relevant=False),
            event("tagged", "u1", "m1", 6, tags=["city"], remove=["home"]),
            event("related", "u1", "m1", 7, target="m2", relationship_type="supports", strength=0.4),
            event("related", "u1", "m1", 8, target="m2", relationship_type="supports", strength=0.8),
            event("archived", "u1", "m2", 9, reason="superseded"),
        ]
    ]
    state = replay_events(log)
    m1, m2 = state[("u1", "m1")], state[("u1", "m2")]
    assert m1.content == "moved to Porto"
    assert (m1.access_count, m1.relevant_count, m1.irrelevant_count) == (2, 1, 1)
    assert m1.last_accessed_at == "2026-03-01T09:05:00.000000Z"
    assert m1.tags == ["city"]
    assert m1.relations == [{"target": "m2", "relationship_type": "supports", "strength": 0.8}]
    assert m1.last_modified_at == "2026-03-01T09:08:00.000000Z"
    assert (m2.is_archived, m2.archive_reason, m2.status) == (True, "superseded", "archived")


def test_events_after_forgetting_never_bring_content_back():
    log = [
        parse_event(r)
        for r in [
            created("u1", "m1", "my bank PIN is 1234", 0),
            event("forgotten", "u1", "m1", 1),
            event("updated", "u1", "m1", 2, content="my bank PIN is 1234"),
            created("u1", "m1", "my bank PIN is 1234", 3),
        ]
    ]
    memory = replay_events(log)[("u1", "m1")]
    assert memory.is_forgotten and memory.content is None
