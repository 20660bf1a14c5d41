"""Ingestion of JSONL event files: every valid line is stored, every invalid one is reported as
`file:line: reason` and written to a rejects file, and a re-run of the same input completes it exactly."""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from hms_resources.common.bulk import gc_paused
from hms_resources.common.clock import utc_now
from hms_resources.common.limits import MAX_ID_LENGTH
from hms_resources.store.event_store import AppendResult, EventStore
from hms_resources.store.events import EventError, MemoryEvent, parse_event
from hms_resources.store.salvage import append_salvaging

DEFAULT_BATCH_SIZE = 5_000


@dataclass(frozen=True)
class Rejection:
    source: str
    line: int
    reason: str
    raw: str
    conflict: bool = False
    """The line's event_id is stored already with other content (not a plain rejection)."""

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    rejects_path: Path | None = None
    last_sequence: int | None = None
    rejections: list[Rejection] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "conflicts": self.conflicts, "rejected": self.rejected}

    @property
    def complete(self) -> bool:
        """Every line is stored (or was already, with the same content)."""
        return not self.rejected and not self.conflicts


class RejectsFile:
    """Rejected and conflicting lines as JSONL (`source`, `line`, `reason`, `raw`, `conflict`); created
    only when there is one."""

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
                {"source": rejection.source, "line": rejection.line, "reason": rejection.reason, "raw": rejection.raw,
                 "conflict": rejection.conflict}
            )
            + b"\n"
        )
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


_STAMP_PUNCTUATION = str.maketrans("", "", "-:.")
"""The clock's stamp without its punctuation (`20260102T030405123456Z`): a file name."""


def default_rejects_path(home: Path, source: str) -> Path:
    stamp = utc_now().translate(_STAMP_PUNCTUATION)
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
    if _LONG_NUMBER in raw.translate(_DIGITS_AS_ZERO):
        record = _exact_integers(text)
    return parse_event(record, max_content_bytes=max_content_bytes)


# orjson reads an integer beyond 64 bits as a float; a line with a run of 19 digits is read again
# exactly, so that validation sees the integer and rejects it instead of storing it changed.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_NUMBER = b"0" * 19


def _exact_integers(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise EventError(f"invalid JSON: {constant} is not a JSON number")

    try:
        return json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise EventError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise EventError(f"invalid JSON: {exc}") from None


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Numbered lines (from 1), without their line ending or a UTF-8 byte-order mark at the start of
    the file; blank lines are skipped."""
    for number, raw in enumerate(stream, start=1):
        stripped = raw.rstrip(b"\r\n")
        if number == 1 and stripped.startswith(codecs.BOM_UTF8):
            stripped = stripped[len(codecs.BOM_UTF8) :]
        if stripped.strip():
            yield number, stripped


def _read_event(raw: bytes, max_content_bytes: int) -> MemoryEvent:
    """`decode_line`, with any unforeseen failure turned into a reason for this line alone."""
    try:
        return decode_line(raw, max_content_bytes=max_content_bytes)
    except EventError:
        raise
    except Exception as exc:  # noqa: BLE001 - no line may fail the whole ingest
        raise EventError(f"cannot be read: {type(exc).__name__}: {exc}") from None


def with_id_prefix(event: MemoryEvent, prefix: str) -> MemoryEvent:
    """The event under a namespace: `prefix` before its user id and event id (a tenant's `acme/`), as
    the API stores them. An id already under it is kept, so a file of stored ids loads once; a user id
    under another namespace (`globex/alice`) is refused, as the API refuses it."""
    ids = {}
    for name in ("event_id", "user_id"):
        value = getattr(event, name)
        if name == "user_id" and value == prefix:
            raise EventError(f"user_id must name a user after {prefix!r}")
        if value.startswith(prefix):
            ids[name] = value
            continue
        if name == "user_id" and "/" in value:
            raise EventError(f"user_id {value!r} names another tenant's user; this file is stored under {prefix!r}")
        if len(prefix) + len(value) > MAX_ID_LENGTH:
            raise EventError(f"{name} is at most {MAX_ID_LENGTH - len(prefix)} characters under the prefix {prefix!r}")
        ids[name] = prefix + value
    return MemoryEvent(ids["event_id"], event.type, ids["user_id"], event.memory_id, event.occurred_at, event.payload)


def ingest_stream(
    store: EventStore,
    stream: IO[bytes],
    *,
    source: str,
    id_prefix: str = "",
    rejects_path: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_reject: Callable[[Rejection], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Append the events of a JSONL stream in atomic batches of `batch_size` valid lines; with
    `id_prefix`, every user id and event id is stored under it (`hms ingest --tenant`)."""
    report = IngestReport(rejects_path=None)
    rejects = RejectsFile(rejects_path)

    def reject(line: int, reason: str, raw: bytes, conflict: bool = False) -> None:
        rejection = Rejection(source, line, reason, raw.decode("utf-8", errors="backslashreplace"), conflict)
        if conflict:
            report.conflicts += 1
        else:
            report.rejected += 1
        report.rejections.append(rejection)
        report.rejects_path = rejects_path
        rejects.write(rejection)
        if on_reject is not None:
            on_reject(rejection)

    def report_batch(result: AppendResult, pending: list[tuple[int, bytes, MemoryEvent]], invalid: list[tuple[int, str, bytes]]) -> None:
        """Count a stored batch and report its rejected and conflicting lines in line order."""
        unstored = [(line, reason, raw, False) for line, reason, raw in invalid]
        for indexes, conflict in ((result.rejected, False), (result.conflicts, True)):
            for index, reason in indexes:
                line, raw, _ = pending[index]
                unstored.append((line, reason, raw, conflict))
        for line, reason, raw, conflict in sorted(unstored, key=lambda item: item[0]):
            reject(line, reason, raw, conflict)
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
        in_flight = (writer.submit(append_salvaging, store, [ev for _, _, ev in pending]), pending, invalid)

    pending: list[tuple[int, bytes, MemoryEvent]] = []
    invalid: list[tuple[int, str, bytes]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hms-ingest") as writer, gc_paused():
        try:
            for line, raw in read_lines(stream):
                if on_progress is not None:
                    on_progress(len(raw) + 1)
                try:
                    event = _read_event(raw, store.max_content_bytes)
                    pending.append((line, raw, with_id_prefix(event, id_prefix) if id_prefix else event))
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
