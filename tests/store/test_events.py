"""The event schema: what is accepted, and that every rejection names the field and the problem."""

import pytest

from hms_resources.store.events import EventError, normalize_timestamp, parse_event
from tests.helpers import created, event


def test_created_event_is_parsed_and_its_time_normalised_to_utc():
    record = created("u1", "m1", content="prefers dark mode", importance=0.7, tags=["ui"])
    record["occurred_at"] = "2026-03-01T10:00:00+01:00"
    ev = parse_event(record)
    assert ev.occurred_at == "2026-03-01T09:00:00.000000Z"
    assert ev.payload["importance"] == 0.7
    assert ev.key == ("u1", "m1")


def test_created_event_without_memory_id_takes_its_event_id():
    record = created("u1", "m1")
    del record["memory_id"]
    assert parse_event(record).memory_id == record["event_id"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("event_id"), "event_id is required"),
        (lambda r: r.update(event_id=7), "event_id must be a non-empty string"),
        (lambda r: r.pop("user_id"), "user_id is required"),
        (lambda r: r.update(user_id=""), "user_id must be a non-empty string"),
        (lambda r: r.update(type="memory.exploded"), "unknown event type 'memory.exploded'"),
        (lambda r: r.pop("type"), "type is required"),
        (lambda r: r.pop("occurred_at"), "occurred_at is required"),
        (lambda r: r.update(occurred_at="2026-03-01T09:00:00"), "occurred_at must include a time zone"),
        (lambda r: r.update(occurred_at="yesterday"), "occurred_at is not an ISO 8601 timestamp"),
        (lambda r: r.update(payload=[1]), "payload must be an object"),
        (lambda r: r["payload"].pop("content"), "payload.content is required for memory.created"),
        (lambda r: r["payload"].update(content=""), "payload.content must be a string with at least one non-blank"),
        (lambda r: r["payload"].update(content=" \n\t"), "payload.content must be a string with at least one non-blank"),
        (lambda r: r["payload"].update(importance=1.5), "payload.importance must be a number from 0 to 1"),
        (lambda r: r["payload"].update(importance=True), "payload.importance must be a number from 0 to 1"),
        (lambda r: r["payload"].update(tags="a,b"), "payload.tags must be a list of non-empty strings"),
        (lambda r: r["payload"].update(context={"mood": {}}), "payload.context must be an object whose keys"),
        (lambda r: r["payload"].update(colour="red"), "payload.colour is not a field of memory.created"),
        (lambda r: r.update(extra=1), "unknown envelope field 'extra'"),
        (lambda r: r.update(memory_id="a\x1fb"), "memory_id must not contain control characters"),
        (lambda r: r.update(user_id="u" * 256), "user_id is longer than 255 characters"),
    ],
)
def test_invalid_created_event_is_rejected_with_the_field_named(change, message):
    record = created("u1", "m1")
    change(record)
    with pytest.raises(EventError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_event(record)


def test_content_over_the_size_limit_is_rejected_with_sizes():
    record = created("u1", "m1", content="é" * 600)
    with pytest.raises(EventError, match="payload.content is 1200 bytes, over the limit of 1000 bytes"):
        parse_event(record, max_content_bytes=1000)
    assert parse_event(record, max_content_bytes=1200).payload["content"] == "é" * 600


@pytest.mark.parametrize(
    "record, message",
    [
        (event("updated", "u1", "m1"), "payload of memory.updated must change at least one field"),
        (event("related", "u1", "m1", target="m2"), "payload.relationship_type is required"),
        (event("related", "u1", "m1", target="m2", relationship_type="x", strength=2), "payload.strength"),
        (event("accessed", "u1", "m1", was_relevant="yes"), "payload.was_relevant must be true or false"),
        (event("tagged", "u1", "m1", tags=[]), "payload.tags or payload.remove must name at least one tag"),
        ({**event("accessed", "u1", "m1"), "memory_id": None}, "memory_id is required for memory.accessed"),
        (event("accessed", "u1", "m1", memory_ids="m1"), "payload.memory_ids must be a list of non-empty strings"),
        (event("accessed", "u1", "m1", memory_ids=[]), "payload.memory_ids must name at least one memory"),
        (event("accessed", "u1", "m1", memory_ids=["m2", "m1"]), "must be the event's memory_id \"m1\", got \"m2\""),
        (event("accessed", "u1", "m1", memory_ids=["m1", "m2", "m1"]), "payload.memory_ids names \"m1\" twice"),
        (event("accessed", "u1", "m1", memory_ids=["m1", ""]), "1] must be a non-empty string"),
        (event("accessed", "u1", "m1", memory_ids=["m1", "m2"], was_relevant=True), "payload.was_relevant is about one memory"),
    ],
)
def test_invalid_payloads_of_other_types_are_rejected(record, message):
    with pytest.raises(EventError, match=message.replace(".", r"\.")):
        parse_event(record)


def test_timestamps_sort_as_text_in_time_order():
    a = normalize_timestamp("2026-03-01T23:30:00-05:00")
    b = normalize_timestamp("2026-03-02T04:31:00+00:00")
    assert a < b
