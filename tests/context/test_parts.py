"""The parts the context resource composes, each alone: the prompt, the context's JSON, the fresh
overlay over a real event store."""

from __future__ import annotations

from types import SimpleNamespace

from hms_resources.context.contexts import Context, ContextItem
from hms_resources.context.fresh import NOTHING_FRESH, FreshOverlay
from hms_resources.context.index import SelectedAdapter
from hms_resources.context.prompt import day_header, day_header_tokens, render_memory, render_prompt, render_summary
from hms_resources.store.ingest import ingest_records
from tests.helpers import created, event


def item(memory_id: str, text: str, created_at: str, kind: str = "memory", tokens: int = 3) -> ContextItem:
    return ContextItem(memory_id, text, tokens, 0.5, "hot", kind, [memory_id], created_at)


def test_a_prompt_puts_summaries_first_then_each_day_once_above_its_memories_in_time_order():
    items = [
        item("m2", "user: the recital is on the 14th", "2023-05-08T10:00:00Z"),
        item("c1", render_summary(["cello", "music", "practice", "extra"], "Ana  plays the cello."), "2023-05-09T00:00:00Z", "concept_summary"),
        item("m3", "assistant: good luck", "2023-05-09T08:00:00Z", "recent"),
        item("m1", render_memory("user", "I practise\n scales"), "2023-05-08T09:00:00Z"),
    ]
    assert render_prompt(items) == "\n".join([
        "[summary: cello, music, practice] Ana plays the cello.",
        "[8 May 2023]",
        "user: I practise scales",
        "user: the recital is on the 14th",
        "[9 May 2023]",
        "assistant: good luck",
    ])
    assert Context("ana", "q", 100, items).to_prompt() == render_prompt(items)
    assert day_header("") == "" and day_header(None) == "" and day_header("2024-12-31T23:59:59Z") == "[31 Dec 2024]"
    assert day_header_tokens(lambda texts: [len(t.split()) for t in texts]) == 4, "three words of a date and a line break"


def test_a_context_becomes_json_in_one_shape():
    adapter = SelectedAdapter("hms-ana", "3", "models:/hms-ana@champion", "/adapters/3", "base", "set-1", "c1", 0.81)
    context = Context("acme/ana", "cello?", 64, [item("m1", "user: cello", "2023-05-08T09:00:00Z")],
                      {"fresh": 0.12345, "total": 1.0}, adapter)
    assert context.to_json("ana") == {
        "user_id": "ana",
        "query": "cello?",
        "token_budget": 64,
        "items": [{"memory_id": "m1", "text": "user: cello", "tokens": 3, "score": 0.5, "tier": "hot", "kind": "memory",
                   "source_ids": ["m1"], "created_at": "2023-05-08T09:00:00Z"}],
        "prompt": "[8 May 2023]\nuser: cello",
        "token_count": 3,
        "timings_ms": {"fresh": 0.123, "total": 1.0},
        "adapter": {"name": "hms-ana", "version": "3", "uri": "models:/hms-ana@champion", "path": "/adapters/3",
                    "base_model": "base", "set_id": "set-1", "concept_id": "c1", "similarity": 0.81},
    }
    assert context.to_json()["user_id"] == "acme/ana"


def test_the_fresh_overlay_follows_the_log_of_its_users_from_the_snapshot_and_never_changes_a_held_overlay(store):
    ingest_records(store, [created("ana", "old", "before the snapshot")])
    overlay = FreshOverlay(store, serves=lambda user_id: user_id == "ana")
    snapshot = SimpleNamespace(cursor=store.max_sequence())
    overlay.restart(snapshot)
    assert overlay.read("ana") == (snapshot, NOTHING_FRESH)
    ingest_records(store, [
        created("ana", "m1", "I adopted a grey cat.", minutes=5, memory_type="conversation_turn", created_by="user"),
        created("ben", "m1", "Ben's own memory.", minutes=5),
    ])
    held_snapshot, held = overlay.read("ana")
    assert held_snapshot is snapshot and set(held.changed) == {"m1"} and held.through > snapshot.cursor
    assert (held.live["m1"].content, held.live["m1"].created_by) == ("I adopted a grey cat.", "user")
    assert overlay.read("ben")[1] is NOTHING_FRESH and {u for u, _ in overlay.followed} == {"ana"}, "ben is another shard's"
    ingest_records(store, [event("forgotten", "ana", "m1", minutes=6), created("ana", "m2", "A second memory.", minutes=7)])
    _, now = overlay.read("ana")
    assert set(now.changed) == {"m1", "m2"} and set(now.live) == {"m2"}
    assert set(held.changed) == {"m1"} and set(held.live) == {"m1"}, "a reader's overlay never changes under it"
    assert held.live["m1"].status == "live", "a held memory is a copy the next fold does not change"
    assert now.stale_since(held.through) == ["m2"] or set(now.stale_since(held.through)) == {"m1", "m2"}


def test_the_fresh_overlay_reads_the_log_at_most_every_fresh_seconds_unless_a_write_was_noted(store):
    overlay = FreshOverlay(store, fresh_seconds=3600.0)
    overlay.restart(SimpleNamespace(cursor=store.max_sequence()))
    overlay.read("ana")
    report = ingest_records(store, [created("ana", "m1", "Noted later.")])
    assert overlay.read("ana")[1] is NOTHING_FRESH, "read within fresh_seconds of the last fold"
    overlay.note_written(report.last_sequence)
    assert set(overlay.read("ana")[1].live) == {"m1"}
