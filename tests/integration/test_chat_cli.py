"""`hms chat`: the local model with a user's memory in a terminal, its turns captured, the user named
as the API names them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created

PROGRESS_BAR = re.compile(r"\d+%\||it/s\]")


def hms_chat(hms_home: Path, *args: str, text: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hms_jobs.cli", "chat", *args], input=text, env={**os.environ, "HMS_HOME": str(hms_home)},
                          capture_output=True, text=True, timeout=300, check=False)


def test_hms_chat_streams_a_reply_with_the_users_memory_and_captures_the_turn(hms_home: Path):
    store = EventStore()
    ingest_records(store, [created("local/maya", "m1", "Maya is allergic to peanuts.")])
    done = hms_chat(hms_home, "--user", "maya", "--session", "s1", "--max-tokens", "8", text="What is Maya allergic to?\n")
    assert done.returncode == 0, done.stderr[-2000:]
    before, prompt, after = done.stderr.partition("you> ")
    assert prompt and "[1 memories, no adapter]" in after
    assert "(once" in before, "the one-time conversion is announced before the first prompt"
    assert not PROGRESS_BAR.search(after), f"a progress bar after the question: {after[-500:]!r}"
    reply = done.stdout.strip()
    assert reply
    events = list(store.read_events(user_id="local/maya"))
    turns = {(e.payload["created_by"], e.payload["content"]) for e in events if e.payload.get("session_id") == "s1"}
    assert ("user", "What is Maya allergic to?") in turns and ("assistant", reply) in turns
    assert [e.memory_id for e in events if e.type == "memory.accessed"] == ["m1"]

    again = hms_chat(hms_home, "--user", "maya", "--max-tokens", "2", "--no-capture", text="Hi\n")
    assert again.returncode == 0 and "(once" not in again.stderr and not PROGRESS_BAR.search(again.stderr), again.stderr[-2000:]


def test_hms_chat_refuses_an_unknown_user_naming_the_nearest(hms_home: Path):
    ingest_records(EventStore(), [created("local/maya", "m1", "Maya is allergic to peanuts."), created("other/mary", "m1")])
    done = hms_chat(hms_home, "--user", "mya", text="Hi\n")
    assert done.returncode == 2 and "no user 'mya'" in done.stderr and "nearest: maya" in done.stderr, done.stderr
    assert "mary" not in done.stderr, "another tenant's users are never named"
    assert not (hms_home / "models").exists(), "refused before the model loads"
