"""Ingestion of JSONL event files: every valid line is stored, every invalid one is reported as
`file:line: reason` and written to a rejects file, and a re-run of the same input completes it exactly."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import orjson

from hms_resources.bulk import gc_paused
from hms_resources.event_store import AppendResult, EventStore
from hms_resources.events import EventError, MemoryEvent, parse_event

DEFAULT_BATCH_SIZE = 5_000


@dataclass(frozen=True)
class Rejection:
    source: str
    line: int
    reason: str
    raw: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects_path: Path | None = None
    last_sequence: int | None = None
    rejections: list[Rejection] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


class RejectsFile:
    """Rejected lines as JSONL (`source`, `line`, `reason`, `raw`); created only when something is rejected."""

    def __init__(self, path: Path | None):
        self.path = path
        self._handle: IO[bytes] | None = None

    def write(self, rejection: Rejection) -> None:
        if self.path is None:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab")
        self._handle.write(
            orjson.dumps(
                {"source": rejection.source, "line": rejection.line, "reason": rejection.reason, "raw": rejection.raw}
            )
            + b"\n"
        )
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def default_rejects_path(home: Path, source: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    name = "stdin" if source == "-" else Path(source).name
    return home / "rejects" / f"{name}.{stamp}.rejects.jsonl"


def decode_line(raw: bytes, *, max_content_bytes: int) -> MemoryEvent:
    """One JSONL line to an event, or `EventError` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"invalid JSON: {exc}") from None
    return parse_event(record, max_content_bytes=max_content_bytes)


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Numbered lines (from 1), without their line ending; blank lines are skipped."""
    for number, raw in enumerate(stream, start=1):
        stripped = raw.rstrip(b"\r\n")
        if stripped.strip():
            yield number, stripped


def ingest_stream(
    store: EventStore,
    stream: IO[bytes],
    *,
    source: str,
    rejects_path: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_reject: Callable[[Rejection], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Append the events of a JSONL stream in atomic batches of `batch_size` valid lines."""
    report = IngestReport(rejects_path=None)
    rejects = RejectsFile(rejects_path)

    def reject(line: int, reason: str, raw: bytes) -> None:
        rejection = Rejection(source, line, reason, raw.decode("utf-8", errors="backslashreplace"))
        report.rejected += 1
        report.rejections.append(rejection)
        report.rejects_path = rejects_path
        rejects.write(rejection)
        if on_reject is not None:
            on_reject(rejection)

    def report_batch(result: AppendResult, pending: list[tuple[int, bytes, MemoryEvent]], invalid: list[tuple[int, str, bytes]]) -> None:
        """Count a stored batch and report its rejected lines in line order."""
        for index, reason in result.rejected:
            line, raw, _ = pending[index]
            invalid.append((line, reason, raw))
        for line, reason, raw in sorted(invalid, key=lambda item: item[0]):
            reject(line, reason, raw)
        report.accepted += result.accepted
        report.duplicates += result.duplicates
        if result.last_sequence is not None:
            report.last_sequence = result.last_sequence

    # While one batch is being written, the next is parsed: the database releases the GIL.
    in_flight: tuple[Future[AppendResult], list, list] | None = None

    def flush(pending: list[tuple[int, bytes, MemoryEvent]], invalid: list[tuple[int, str, bytes]]) -> None:
        nonlocal in_flight
        if in_flight is not None:
            report_batch(in_flight[0].result(), in_flight[1], in_flight[2])
        in_flight = (writer.submit(store.append, [ev for _, _, ev in pending]), pending, invalid)

    pending: list[tuple[int, bytes, MemoryEvent]] = []
    invalid: list[tuple[int, str, bytes]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hms-ingest") as writer, gc_paused():
        try:
            for line, raw in read_lines(stream):
                if on_progress is not None:
                    on_progress(len(raw) + 1)
                try:
                    pending.append((line, raw, decode_line(raw, max_content_bytes=store.max_content_bytes)))
                except EventError as exc:
                    invalid.append((line, str(exc), raw))
                    continue
                if len(pending) >= batch_size:
                    flush(pending, invalid)
                    pending, invalid = [], []
            if pending or invalid:
                flush(pending, invalid)
            if in_flight is not None:
                report_batch(in_flight[0].result(), in_flight[1], in_flight[2])
        finally:
            rejects.close()
    return report


def ingest_records(store: EventStore, records: Iterable[dict[str, Any]], *, source: str = "<records>", **kwargs: Any) -> IngestReport:
    """The Python API for the same ingest: event dicts instead of a file."""
    import io

    buffer = io.BytesIO(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return ingest_stream(store, buffer, source=source, **kwargs)


def ingest_path(store: EventStore, path: str | Path, **kwargs: Any) -> IngestReport:
    source = str(path)
    if source == "-":
        return ingest_stream(store, sys.stdin.buffer, source="-", **kwargs)
    with open(path, "rb") as stream:
        return ingest_stream(store, stream, source=source, **kwargs)
