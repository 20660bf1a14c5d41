"""What a query says about time: windows, anchors and order, relative to when it is asked."""

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hms_resources.context.temporal import parse_time_scope

NOW = datetime(2026, 4, 19, 18, 0, tzinfo=timezone.utc)


def day(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("query", "start", "end"),
    [
        ("What did I say I was cooking in mid-April?", "2026-04-11", "2026-04-21"),
        ("What was I reading in early March?", "2026-03-01", "2026-03-11"),
        ("Any plans I mentioned in late February?", "2026-02-21", "2026-03-01"),
        ("What did I buy in December?", "2025-12-01", "2026-01-01"),
        ("What happened in May 2025?", "2025-05-01", "2025-06-01"),
        ("What did I do on March 8th?", "2026-03-08", "2026-03-09"),
        ("Where was I on the 2nd of April?", "2026-04-02", "2026-04-03"),
        ("What did I say on 2026-03-08?", "2026-03-08", "2026-03-09"),
        ("What did I eat yesterday?", "2026-04-18", "2026-04-19"),
        ("What did I do last week?", "2026-04-06", "2026-04-13"),
        ("Anything from last month?", "2026-03-01", "2026-04-01"),
        ("What did I do on Monday?", "2026-04-13", "2026-04-14"),
    ],
)
def test_a_stated_window_is_read_relative_to_when_the_question_is_asked(query, start, end):
    scope = parse_time_scope(query, NOW)
    assert (scope.start, scope.end) == (day(start), day(end))


def test_window_words_are_left_out_of_the_lexical_focus():
    scope = parse_time_scope("What did I say I was cooking in mid-April?", NOW)
    assert "april" not in scope.focus.lower() and "cooking" in scope.focus


def test_may_as_a_verb_is_no_date():
    assert not parse_time_scope("May I ask what my sister's name is?", NOW).has_window
    assert parse_time_scope("What did I plan in early May?", NOW).has_window


def test_an_anchor_event_and_an_order_are_recognised():
    anchored = parse_time_scope("What was I cooking on the day I mentioned my father's visit?", NOW)
    assert anchored.anchor == "mentioned my father's visit" and not anchored.has_window
    assert parse_time_scope("What was the first book I told you about?", NOW).order == "earliest"
    assert parse_time_scope("Which book did I most recently tell you about?", NOW).order == "latest"
    assert parse_time_scope("What did I do last week?", NOW).order == ""


def test_a_query_without_time_is_left_alone():
    scope = parse_time_scope("Where does my sister live?", NOW)
    assert (scope.start, scope.anchor, scope.order, scope.focus) == (None, "", "", "Where does my sister live?")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_to_a_well_formed_scope(query):
    scope = parse_time_scope(query, NOW)
    assert (scope.start is None) == (scope.end is None)
    if scope.start is not None:
        assert scope.start < scope.end
    assert scope.order in ("", "earliest", "latest")
