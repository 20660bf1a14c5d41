"""`hms chat`: the local model with a user's memory in a terminal, its turns captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created


def test_hms_chat_streams_a_reply_with_the_users_memory_and_captures_the_turn(hms_home: Path):
    store = EventStore()
    ingest_records(store, [created("maya", "m1", "Maya is allergic to peanuts.")])
    env = {**os.environ, "HMS_HOME": str(hms_home)}
    done = subprocess.run(
        [sys.executable, "-m", "hms_jobs.cli", "chat", "--user", "maya", "--session", "s1", "--max-tokens", "8"],
        input="What is Maya allergic to?\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[1 memories, no adapter]" in done.stderr
    reply = done.stdout.strip()
    assert reply
    turns = {(e.payload["created_by"], e.payload["content"]) for e in store.read_events(user_id="maya") if e.payload.get("session_id") == "s1"}
    assert ("user", "What is Maya allergic to?") in turns and ("assistant", reply) in turns
    assert [e.memory_id for e in store.read_events(user_id="maya") if e.type == "memory.accessed"] == ["m1"]
