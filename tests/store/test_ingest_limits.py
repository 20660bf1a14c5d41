"""What the ingest accepts, every store and every asset can hold: the limits, line by line.

Each bad line is rejected alone with its reason (the rest of the file is stored); lines at the limits
go through the PostgreSQL and SQLite stores and every asset."""

import json
import os
import string

import dagster as dg
import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hms_assets import domain_assets
from hms_assets.tiers.partitions import all_shards_of_days
from hms_resources.common.limits import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_ID_LENGTH,
    MAX_MEMORY_TYPE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_NESTING_DEPTH,
)
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import ENVELOPE_FIELDS, MemoryEvent
from hms_resources.store.ingest import ingest_records, ingest_stream
from hms_resources.store.projection import refresh_memories
from hms_resources.store.salvage import append_salvaging
from hms_resources.store.schema import memories as memories_table
from hms_resources.tiers.archive import read_cold_archive
from tests.helpers import created, event


def ingest_lines(store, lines: list[bytes]):
    import io

    return ingest_stream(store, io.BytesIO(b"\n".join(lines) + b"\n"), source="events.jsonl")


def line(record) -> bytes:
    return orjson.dumps(record)


def nested(depth: int):
    value = "deep"
    for _ in range(depth):
        value = {"level": value}
    return value


def reasons(report) -> dict[int, str]:
    return {r.line: r.reason for r in report.rejections}


def test_a_timestamp_at_the_calendars_edge_rejects_its_line_alone(store):
    lines = [line(created("u1", f"m{i}", f"valid memory {i}")) for i in range(5)]
    lines.insert(2, line({**created("u1", "edge1"), "occurred_at": "0001-01-01T00:00:00+01:00"}))
    lines.insert(4, line({**created("u1", "edge2"), "occurred_at": "9999-12-31T23:30:00-01:00"}))
    lines.append(line({**created("u1", "early"), "occurred_at": "1899-12-31T23:59:59Z"}))
    lines.append(line({**created("u1", "first"), "occurred_at": "1900-01-01T00:00:00Z"}))
    lines.append(line({**created("u1", "last"), "occurred_at": "2199-12-31T23:59:59.999999Z"}))
    report = ingest_lines(store, lines)
    assert (report.accepted, report.rejected) == (7, 3)
    for number in (3, 5, 8):
        assert "is outside the supported range 1900-01-01T00:00:00.000000Z to 2199-12-31T23:59:59.999999Z" in reasons(report)[number]
    assert store.event_time_range() == (EARLIEST_TIME, LATEST_TIME)


@pytest.mark.parametrize(
    "field, depth",
    [("metadata", 300), ("context", 300), ("importance", 300), ("metadata", 5000)],
)
def test_deep_json_rejects_its_line_alone(store, field, depth):
    bad = created("u1", "deep", "deep one")
    bad["payload"][field] = "DEEP"
    deep = '{"custom": ' + '{"level": ' * depth + '"deep"' + "}" * (depth + 1)
    raw = json.dumps(bad).replace('"DEEP"', deep if field == "context" else deep[len('{"custom": '):-1]).encode()
    report = ingest_lines(store, [line(created("u1", "m1", "before")), raw, line(created("u1", "m2", "after"))])
    assert (report.accepted, report.rejected) == (2, 1)
    assert field in reasons(report)[2] or "invalid JSON" in reasons(report)[2]


def test_nesting_up_to_the_limit_is_stored_and_read_back_exactly(store):
    deepest = created("u1", "m1", "deep metadata", metadata=nested(MAX_NESTING_DEPTH))
    report = ingest_records(store, [deepest, created("u1", "m2", "too deep", metadata=nested(MAX_NESTING_DEPTH + 1))])
    assert report.accepted == 1
    assert f"payload.metadata nests deeper than {MAX_NESTING_DEPTH} levels" in report.rejections[0].reason
    [stored] = list(store.read_events())
    assert stored.payload["metadata"] == nested(MAX_NESTING_DEPTH)


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"content": "a\x00b"}, "payload.content must not contain NUL"),
        ({"content": "ok", "memory_type": "t" * (MAX_MEMORY_TYPE_LENGTH + 1)}, "payload.memory_type is longer than 64 characters"),
        ({"content": "ok", "category": "c" * (MAX_NAME_LENGTH + 1)}, "payload.category is longer than 255 characters"),
        ({"content": "ok", "tags": ["t" * 300]}, "payload.tags [0] is longer than 255 characters"),
        ({"content": "ok", "metadata": {"k": "v\x00"}}, "payload.metadata has a string that contains NUL"),
        ({"content": "ok", "metadata": {"k\x00": 1}}, "payload.metadata has a key that contains NUL"),
        ({"content": "ok", "metadata": {"big": 2**64}}, "payload.metadata has an integer outside the 64-bit range"),
        ({"content": "ok", "metadata": {"blob": "x" * 70_000}}, "payload.metadata is 70011 bytes of JSON, over the limit of 65536"),
        ({"content": "ok", "session_id": "s\nt"}, "payload.session_id must not contain control characters"),
    ],
)
def test_what_a_store_cannot_hold_is_rejected_with_its_reason(store, payload, reason):
    record = {**created("u1", "bad"), "payload": payload}
    report = ingest_lines(store, [line(created("u1", "m1", "kept")), json.dumps(record).encode()])
    assert report.accepted == 1
    assert reason in reasons(report)[2]
    refresh_memories(store)
    assert [m.memory_id for m in store.read_memories()] == ["m1"]


def test_an_integer_beyond_64_bits_is_rejected_not_stored_changed(store):
    raw = b'{"event_id": "e1", "type": "memory.created", "user_id": "u1", "occurred_at": "2026-03-01T09:00:00Z", ' \
          b'"payload": {"content": "numbers", "metadata": {"big": 123456789012345678901234567890, "max": 9223372036854775807}}}'
    report = ingest_lines(store, [raw, raw.replace(b"123456789012345678901234567890", b"1").replace(b'"e1"', b'"e2"')])
    assert report.accepted == 1
    assert "payload.metadata has an integer outside the 64-bit range (at .big)" in reasons(report)[1]
    [stored] = list(store.read_events())
    assert stored.payload["metadata"] == {"big": 1, "max": 9223372036854775807}


def test_a_byte_order_mark_on_the_first_line_is_accepted(store):
    report = ingest_lines(store, [b"\xef\xbb\xbf" + line(created("u1", "m1", "with a BOM")), line(created("u1", "m2"))])
    assert (report.accepted, report.rejected) == (2, 0)


def test_a_duplicate_event_id_with_other_content_is_a_conflict_never_stored_twice(store):
    first = created("u1", "m1", "likes green tea", event_id="e1")
    assert ingest_records(store, [first]).accepted == 1
    again = ingest_lines(
        store,
        [
            line(first),
            line({**first, "payload": {"content": "likes black coffee"}}),
            line({**first, "user_id": "u2"}),
            line(created("u1", "m2", "new")),
        ],
    )
    assert again.counts() == {"accepted": 1, "duplicates": 1, "conflicts": 2, "rejected": 0}
    conflicts = {r.line: r.reason for r in again.rejections if r.conflict}
    assert conflicts == {
        2: "event_id 'e1' is stored already with a different payload; the stored event is kept",
        3: "event_id 'e1' is stored already with a different user_id; the stored event is kept",
    }
    assert [e.payload["content"] for e in store.read_events() if e.event_id == "e1"] == ["likes green tea"]


def test_the_same_event_again_after_its_memory_was_forgotten_is_a_duplicate(store):
    first = created("u1", "m1", "a secret", event_id="e1")
    ingest_records(store, [first, event("forgotten", "u1", "m1", 1, event_id="e2")])
    assert ingest_records(store, [first]).counts() == {"accepted": 0, "duplicates": 1, "conflicts": 0, "rejected": 0}


@pytest.mark.postgres
def test_an_event_the_store_refuses_is_rejected_alone_and_the_batch_is_kept(postgres_url, tmp_path):
    """A fault only a store raises (an id longer than its column, built without validation): the batch
    is bisected, that event is rejected with the store's reason and every other one is stored."""
    store = EventStore(database_url=postgres_url, hms_home=str(tmp_path))
    batch = [
        MemoryEvent(f"e{i}", "memory.created", "u" * (300 if i == 3 else 2), f"m{i}", "2026-03-01T09:00:00.000000Z", {"content": f"memory {i}"})
        for i in range(6)
    ]
    result = append_salvaging(store, batch)
    assert result.accepted == 5
    [(index, reason)] = result.rejected
    assert index == 3 and reason.startswith("the store cannot hold this event: value too long for type character varying(255)")
    assert sorted(e.event_id for e in store.read_events()) == ["e0", "e1", "e2", "e4", "e5"]
    store.close()


def test_the_schema_holds_every_length_the_validation_accepts(store):
    """One set of limits: each validated field fits its column, read back from the live database."""
    with store.engine.connect() as conn:
        columns = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("memories")}
        event_columns = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("events")}
    if store.is_postgres:
        for name, limit in [("user_id", MAX_ID_LENGTH), ("memory_id", MAX_ID_LENGTH), ("parent_memory_id", MAX_ID_LENGTH),
                            ("memory_type", MAX_MEMORY_TYPE_LENGTH), ("category", MAX_NAME_LENGTH), ("session_id", MAX_NAME_LENGTH),
                            ("source_type", MAX_NAME_LENGTH), ("source_id", MAX_NAME_LENGTH), ("created_by", MAX_NAME_LENGTH)]:
            assert columns[name].length == limit, name
        assert event_columns["event_id"].length == MAX_ID_LENGTH
    longest = {
        "content": "é" * 1000,
        "memory_type": "t" * MAX_MEMORY_TYPE_LENGTH,
        "category": "ç" * MAX_NAME_LENGTH,
        "session_id": "s" * MAX_NAME_LENGTH,
        "source_type": "x" * MAX_NAME_LENGTH,
        "source_id": "y" * MAX_NAME_LENGTH,
        "created_by": "z" * MAX_NAME_LENGTH,
        "parent_memory_id": "p" * MAX_ID_LENGTH,
        "tags": ["t" * MAX_NAME_LENGTH],
        "metadata": {"max": 2**63 - 1, "min": -(2**63), "nested": nested(MAX_NESTING_DEPTH - 1)},
    }
    user = "ü" * MAX_ID_LENGTH
    record = {**created(user, "m" * MAX_ID_LENGTH), "event_id": "e" * MAX_ID_LENGTH, "payload": longest}
    assert ingest_records(store, [record]).accepted == 1
    refresh_memories(store)
    [memory] = store.read_memories()
    assert (memory.user_id, memory.memory_type, memory.metadata["max"]) == (user, longest["memory_type"], 2**63 - 1)
    with store.reading() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(memories_table)).scalar() == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["content", "session_id", "memory_type", "category", "tags", "importance", "confidence", "source_type",
          "source_id", "created_by", "parent_memory_id", "related_memory_ids", "context", "metadata", "target",
          "relationship_type", "strength", "query", "access_context", "was_relevant", "relevance_score", "reason", "remove"]


@st.composite
def fuzzed_line(draw) -> bytes:
    """A line with arbitrary JSON in any field, a plausible envelope, or bytes of garbage."""
    kind = draw(st.sampled_from(["envelope", "payload", "bytes", "json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ").replace(b"\r", b" ")
    if kind == "json":
        return as_json_line(draw(JSON))
    record = {
        "event_id": f"fz-{draw(st.integers(0, 10**9))}",
        "type": draw(st.sampled_from(["memory.created", "memory.updated", "memory.accessed", "memory.tagged",
                                      "memory.related", "memory.archived", "memory.forgotten"])),
        "user_id": "fuzz",
        "memory_id": draw(st.sampled_from(["a", "b", "c"])),
        "occurred_at": "2026-03-01T09:00:00Z",
        "payload": {"content": draw(st.text(alphabet=string.printable, min_size=1, max_size=30))},
    }
    if kind == "envelope":
        record[draw(st.sampled_from(ENVELOPE_FIELDS))] = draw(JSON)
    else:
        record["payload"] = {draw(st.sampled_from(FIELDS)): draw(JSON) for _ in range(draw(st.integers(1, 3)))}
    return as_json_line(record)


def as_json_line(value) -> bytes:
    """JSON text of any generated value: integers beyond 64 bits and lone surrogates included."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


@settings(max_examples=int(os.environ.get("HMS_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(fuzzed_line(), min_size=1, max_size=12))
def test_no_input_line_can_fail_the_whole_ingest(store, lines):
    """Arbitrary JSON in every field and byte-level garbage: each line is stored, a duplicate, a conflict
    or rejected with a reason; the valid lines around it are stored; the projection still runs."""
    before = store.max_sequence()
    guard = [line(created("fuzz-guard", f"g{before}-{i}", f"guard {i}")) for i in range(2)]
    report = ingest_lines(store, [guard[0], *lines, guard[1]])
    assert report.accepted + report.duplicates + report.conflicts + report.rejected == len([x for x in lines if x.strip()]) + 2
    assert all(r.reason for r in report.rejections)
    stored = {e.memory_id for e in store.read_events(after_sequence=before, user_id="fuzz-guard")}
    assert stored == {f"g{before}-0", f"g{before}-1"}
    refresh_memories(store)




@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_data_at_every_limit_goes_through_every_asset(store, embedder, hms_home):
    """The longest ids (one user's id is 255 characters), the longest names, the earliest and latest
    times and the deepest metadata: the main job's assets, the tier migration and the cold archive."""
    long_user = "U" * MAX_ID_LENGTH
    records = []
    for user in (long_user, "ü-user"):
        for i in range(12):
            records.append(created(
                user, f"{'m' * 240}{i:03d}", f"memory {i} about gardening and tomatoes and watering plants",
                minutes=i * 60 * 24, memory_type="t" * MAX_MEMORY_TYPE_LENGTH, category="c" * MAX_NAME_LENGTH,
                session_id="s" * MAX_NAME_LENGTH, tags=["t" * MAX_NAME_LENGTH], metadata={"deep": nested(MAX_NESTING_DEPTH - 1)},
            ))
        records.append({**created(user, "ancient", "a memory from long ago about gardening"), "occurred_at": "1900-01-01T00:00:00Z"})
        records.append({**created(user, "future", "a memory from the far future"), "occurred_at": "2199-12-31T23:59:59Z"})
    assert ingest_records(store, records).accepted == len(records)
    resources = {"event_store": store, "embedder": embedder, "mlflow_tracking": MlflowTracking()}
    with dg.instance_for_test() as instance:
        main = dg.materialize(
            domain_assets(),
            selection=dg.AssetSelection.all() - dg.AssetSelection.assets("memory_tiers", "tier_migrations", "cold_archive")
            - dg.AssetSelection.groups("lora") | dg.AssetSelection.assets("lora_candidate_sets"),
            resources=resources, instance=instance,
        )
        assert main.success
        migrated = dg.materialize(
            domain_assets(), selection=dg.AssetSelection.assets("memory_tiers", "tier_migrations"),
            tags=all_shards_of_days("2026-03-20"), resources=resources, instance=instance,
            run_config={"ops": {"memory_tier_migration": {"config": {"hot_threshold": 0.99, "warm_threshold": 0.98}}}},
        )
        assert migrated.success
        archived = dg.materialize(
            domain_assets(), selection=dg.AssetSelection.assets("cold_archive"), resources=resources, instance=instance
        )
        assert archived.success
    cold = read_cold_archive(store.home / "archive", long_user)
    assert cold and all(len(r["memory_id"]) == 243 for r in cold if r["memory_id"] != "ancient")
