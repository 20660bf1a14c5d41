"""Builders of memory events for tests."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

_ids = itertools.count(1)
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def wait_for(condition, timeout: float, what: str):
    """The first truthy value of `condition()`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def event(kind: str, user: str, memory: str, minutes: float = 0, event_id: str | None = None, **payload: Any) -> dict[str, Any]:
    return {
        "event_id": event_id or f"ev-{next(_ids)}",
        "type": f"memory.{kind}",
        "user_id": user,
        "memory_id": memory,
        "occurred_at": at(minutes),
        "payload": payload,
    }


def created(user: str, memory: str, content: str = "likes green tea", minutes: float = 0, **payload: Any) -> dict[str, Any]:
    return event("created", user, memory, minutes, content=content, **payload)


PERSONAL_FACTS = [
    "Nadia practises the cello every morning before work.",
    "Nadia is allergic to hazelnuts and always checks cake labels.",
    "Her brother Tomasz moved to Gdansk to work on offshore wind turbines.",
    "Nadia keeps her tax receipts in a green folder in the hallway drawer.",
    "She cycles to the observatory on Tuesdays to volunteer at the telescope.",
    "She is reading a biography of the astronomer Henrietta Leavitt.",
]
"""Six facts about one invented person, each with words of its own: what LoRA tests teach and judge."""


def marker_counts(root: Path, text: str) -> dict[str, int]:
    """Occurrences of `text` (any case) in every file under `root`, by file: bytes, not parsed.

    Files that vanish while the walk runs (a model export's scratch folder, a journal) are
    skipped: they are gone, so they hold nothing.
    """
    needle = text.lower().encode()
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            try:
                count = path.read_bytes().lower().count(needle)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if count:
                found[str(path.relative_to(root))] = count
    return found


@contextmanager
def app_in_thread(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn on a free local port in a daemon thread: yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
