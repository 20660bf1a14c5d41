"""The store's guarantees hold on its bulk paths: batches of thousands of events (PostgreSQL appends
them with COPY) and logs longer than a page (PostgreSQL reads them from one server-side cursor)."""

import random

import pytest
import sqlalchemy as sa

from hms_resources.datasets.synthetic import generate_events
from hms_resources.store.erasure import unerased_events
from hms_resources.store.event_store import EventStore, StoreError
from hms_resources.store.events import MemoryEvent, parse_event
from hms_resources.store.salvage import append_salvaging
from hms_resources.store.memory_state import replay_events
from tests.helpers import created, event


def events_of(*records):
    return [parse_event(r) for r in records]


def many_created(count: int, *, user: str = "u1", prefix: str = "e") -> list[MemoryEvent]:
    return events_of(*(created(user, f"m{n}", f"memory {n}", minutes=n, event_id=f"{prefix}{n}") for n in range(count)))


def assert_consistent(store: EventStore) -> None:
    """Dense sequences, one stored event per id, and the memory keys agree with the fold of the log."""
    stored = list(store.read_events())
    assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
    assert len({e.event_id for e in stored}) == len(stored)
    folded = replay_events(stored)
    assert store.memory_statuses(folded) == {key: memory.status for key, memory in folded.items()}
    assert store.stats()["events"] == len(stored)


def test_duplicate_event_ids_within_and_across_large_batches_are_stored_once(store):
    first = many_created(3000)
    result = store.append(first + first[:1000])
    assert (result.accepted, result.duplicates, result.conflicts, result.rejected) == (3000, 1000, [], [])
    second = first[2000:] + many_created(6000)[3000:]
    random.Random(7).shuffle(second)
    result = store.append(second)
    assert (result.accepted, result.duplicates, result.last_sequence) == (3000, 1000, 6000)
    again = store.append(many_created(6000))
    assert (again.accepted, again.duplicates, again.last_sequence) == (0, 6000, None)
    assert_consistent(store)


def test_a_conflicting_duplicate_is_reported_naming_the_event_and_never_stored(store):
    store.append(many_created(2000))
    changed = parse_event(created("u1", "m1500", "a different text", minutes=1500, event_id="e1500"))
    moved = parse_event({**created("u1", "m7", "memory 7", minutes=7, event_id="e7"), "user_id": "u2"})
    fresh = many_created(2100)[2000:]
    result = store.append([*fresh[:50], changed, *fresh[50:], moved])
    assert result.accepted == 100
    assert result.conflicts == [
        (50, "event_id 'e1500' is stored already with a different payload; the stored event is kept"),
        (101, "event_id 'e7' is stored already with a different user_id; the stored event is kept"),
    ]
    in_batch = store.append(events_of(created("u3", "m1", "first", event_id="x1"), created("u3", "m2", "second", event_id="x1")))
    assert (in_batch.accepted, in_batch.conflicts) == (1, [(1, "event_id 'x1' is stored already with a different memory_id; the stored event is kept")])
    assert [e.payload["content"] for e in store.read_events() if e.event_id in ("e1500", "x1")] == ["memory 1500", "first"]
    assert_consistent(store)


def test_sequence_order_is_append_order_not_time_order(store):
    order = list(range(9000))
    random.Random(3).shuffle(order)
    batch = events_of(*(created(f"u{n % 7}", f"m{n}", f"memory {n}", minutes=n, event_id=f"e{n}") for n in order))
    for start in range(0, len(batch), 4000):
        store.append(batch[start : start + 4000])
    stored = list(store.read_events(page_size=1000))
    assert [e.event_id for e in stored] == [f"e{n}" for n in order]
    assert [e.sequence for e in stored] == list(range(1, 9001))


def _unstorable(user_id: object) -> MemoryEvent:
    """An event built without validation, with a value no store can hold."""
    return MemoryEvent("bad", "memory.created", user_id, "m-bad", "2026-03-01T09:00:00.000000Z", {"content": "x"})


def event_of_forgetting(user: str, memory: str) -> MemoryEvent:
    return parse_event(event("forgotten", user, memory, 99, event_id=f"forget-{user}-{memory}"))


@pytest.mark.parametrize(
    "user_id, error",
    [("lone surrogate \ud800", "surrogates not allowed"), ("u" * 300, "value too long for type character varying")],
    ids=["surrogate", "too-long"],
)
def test_an_event_the_store_cannot_hold_fails_its_batch_whole_and_is_rejected_alone_when_salvaged(store, user_id, error):
    """The batch also forgets a memory: its erasure is undone with the rest when the batch fails."""
    if len(user_id) > 255 and not store.is_postgres:
        pytest.skip("SQLite does not limit the length of text")
    store.append(many_created(10))
    batch = [*many_created(2000, user="u2", prefix="f"), _unstorable(user_id), event_of_forgetting("u1", "m3")]
    with pytest.raises((sa.exc.DBAPIError, ValueError, TypeError), match=error):
        store.append(batch)
    assert store.stats()["events"] == 10
    assert store.memory_statuses([("u1", "m3"), ("u2", "m0")]) == {("u1", "m3"): "live"}
    assert unerased_events(store, "u1", "m3") == 1
    result = append_salvaging(store, batch)
    assert result.accepted == 2001
    [(index, reason)] = result.rejected
    assert index == 2000 and reason.startswith("the store cannot hold this event: ")
    assert store.memory_statuses([("u1", "m3")]) == {("u1", "m3"): "forgotten"}
    assert unerased_events(store, "u1", "m3") == 0
    assert_consistent(store)


def test_a_strict_batch_names_its_first_invalid_event_and_stores_nothing(store):
    batch = [*many_created(3000), parse_event(event("accessed", "u1", "nowhere", 1, event_id="lost")), *many_created(3100)[3000:]]
    with pytest.raises(StoreError, match="event 3000 \\(lost\\): memory 'nowhere' does not exist for user 'u1'"):
        store.append(batch, strict=True)
    assert store.stats()["events"] == 0
    result = store.append(batch)
    assert (result.accepted, result.rejected) == (3100, [(3000, "memory 'nowhere' does not exist for user 'u1'")])
    assert_consistent(store)


BACKSLASHES = ["back\\slash", "\\N", "\\.", "\\", "end\\", 'a "quoted" word', "ünïcödé ✓", "\x7f"]
CONTROLS = ["tab\there", "line\nbreak", "carriage\rreturn", "all\t\n\r\\N"]


def _tricky(texts: list[str]) -> list[MemoryEvent]:
    """Events built without validation, so that ids can hold what validation would refuse."""
    return [
        MemoryEvent(f"id-{n}-{text}", "memory.created", f"user-{text}", f"memory-{text}", "2026-03-01T09:00:00.000000Z",
                    {"content": f"said: {text}", "metadata": {text: [text, "\\N"]}})
        for n, text in enumerate(texts)
    ]


@pytest.mark.parametrize("texts", [BACKSLASHES, CONTROLS], ids=["backslashes", "tabs-and-line-breaks"])
def test_text_with_the_copy_formats_special_characters_is_stored_exactly(store, texts):
    events = _tricky(texts)
    assert store.append([*many_created(500), *events]).accepted == 500 + len(texts)
    stored = list(store.read_events())
    assert [(e.event_id, e.user_id, e.memory_id, e.payload) for e in stored[500:]] == [
        (e.event_id, e.user_id, e.memory_id, e.payload) for e in events
    ]
    assert store.append(events).duplicates == len(texts)
    assert store.memory_statuses([e.key for e in events]) == {e.key: "live" for e in events}


@pytest.fixture
def sqlite_and_postgres(tmp_path, postgres_url):
    stores = [EventStore(database_url=f"sqlite:///{tmp_path / 'hms.db'}"), EventStore(database_url=postgres_url)]
    records = list(generate_events(users=4, sessions_per_user=30, seed=11))
    for store in stores:
        assert store.append([parse_event(r) for r in records]).rejected == []
    yield stores
    for store in stores:
        store.close()


def _pages(store: EventStore, **kwargs) -> list[list[dict]]:
    return [[(e.sequence, e.to_dict()) for e in page] for page in store.read_event_pages(**kwargs)]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "window",
    [{}, {"after_sequence": 101}, {"until_sequence": 900}, {"user_id": "user-sam"}, {"until_time": "2026-10-04T22:00:00Z"}],
    ids=["all", "after", "until-sequence", "one-user", "until-time"],
)
def test_paged_reads_of_a_log_longer_than_a_page_equal_sqlites(sqlite_and_postgres, window):
    sqlite, postgres = sqlite_and_postgres
    expected = _pages(sqlite, page_size=97, **window)
    pages = _pages(postgres, page_size=97, **window)
    assert len(pages) > 2
    assert [len(p) for p in pages[:-1]] == [97] * (len(pages) - 1) and 0 < len(pages[-1]) <= 97
    assert pages == expected
    assert postgres.replay(**{k: v for k, v in window.items() if k != "after_sequence"}) == sqlite.replay(
        **{k: v for k, v in window.items() if k != "after_sequence"}
    )


@pytest.mark.postgres
def test_a_postgres_read_streams_pages_from_one_server_side_cursor(sqlite_and_postgres):
    """Between pages the reader's session sits in its transaction on a FETCH of one page, and an event
    appended meanwhile is not in that read (one snapshot); the next read sees it."""
    _, store = sqlite_and_postgres
    total = store.max_sequence()
    reading = store.read_event_pages(page_size=50)
    first = next(reading)
    with store.engine.connect() as conn:
        sessions = conn.execute(sa.text(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query LIKE 'FETCH%'"
        )).all()
    [(state, query)] = sessions
    assert state == "idle in transaction" and int(query.split()[2]) <= 50
    store.append(events_of(created("late", "m1", "appended mid-read")))
    rest = [e for page in reading for e in page]
    assert len(first) + len(rest) == total
    assert store.max_sequence() == total + 1
    assert [e.user_id for e in store.read_events(after_sequence=total)] == ["late"]
