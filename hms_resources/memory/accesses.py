"""Recording what a context returned, as one `memory.accessed` event per call listing the memories
(`payload.memory_ids`), off the query path: the tier assets count an access of every returned memory,
but the log grows by one event a call, never at a query's expense."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
import uuid

from hms_resources.common.clock import utc_now
from hms_resources.common.home import redact_url
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MemoryEvent, read_records

log = logging.getLogger("hms.context")

ACCESS_METHOD = "context"


def _lower_thread_priority() -> None:
    """Let the scheduler prefer the threads answering queries (Linux schedules threads one by one)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def query_digest(query: str) -> str:
    """What an access record keeps of the query: a short digest of its normalized text, which tells
    repeated queries apart without keeping the words (the query may quote a memory forgotten later,
    and the record belongs to the memories it returned)."""
    normalized = " ".join(query.casefold().split())
    return "sha256:" + hashlib.sha256(normalized.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def access_events(user_id: str, memory_ids: list[str], digest: str, at: str) -> list[MemoryEvent]:
    """One `memory.accessed` event for what one context returned (`read_records`); `payload.query`
    holds the query's digest (`query_digest`), never its text."""
    payload = {"access_method": ACCESS_METHOD, "query": digest}
    records = read_records(f"access-{uuid.uuid4().hex}", user_id, memory_ids, at, payload)
    return [MemoryEvent(**record) for record in records]


class AccessLog:
    """Stores the reads as `memory.accessed` events from a background thread at a lower CPU priority, in short
    transactions with a pause between, so it never holds the interpreter long while queries are
    answered; a failure is logged and the batch dropped, never raised into the caller."""

    def __init__(self, store: EventStore, interval: float = 0.5, max_batch: int = 500, slice_events: int = 200):
        self._store = store
        self._queue: queue.Queue = queue.Queue()
        self._interval = interval
        self._max_batch = max_batch
        self._slice = slice_events
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hms-access-log", daemon=True)
        self._thread.start()

    def record(self, user_id: str, memory_ids: list[str], query: str) -> None:
        """One queue entry per call, stamped now, the query already reduced to its digest; the writer
        thread turns it into events."""
        self._queue.put((user_id, list(dict.fromkeys(memory_ids)), query_digest(query), utc_now()))

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        _lower_thread_priority()
        while not self._stopped.is_set() or not self._queue.empty():
            try:
                calls = [self._queue.get(timeout=self._interval)]
            except queue.Empty:
                continue
            time.sleep(self._interval)
            while len(calls) < self._max_batch:
                try:
                    calls.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [event for call in calls for event in access_events(*call)]
            accesses = sum(len(event.payload.get("memory_ids", ())) or 1 for event in events)
            try:
                for start in range(0, len(events), self._slice):
                    self._store.append(events[start : start + self._slice])
                    time.sleep(0.002)
            except Exception as exc:  # noqa: BLE001 - recording accesses must never fail a context call
                log.warning("could not record %d memory accesses: %s", accesses, redact_url(str(exc)))
            finally:
                for _ in calls:
                    self._queue.task_done()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)
