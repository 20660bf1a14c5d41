"""Forgetting, for rejected input: a rejects file keeps each bad line for the operator to fix, except
a line naming a forgotten memory, which keeps only its line number and reason."""

from __future__ import annotations

from pathlib import Path

import orjson

from hms_resources.store.memory_state import MemoryKey

ERASED_LINE = "(erased: it named a forgotten memory)"


def scrub_rejects(home: Path, forgotten: set[MemoryKey]) -> int:
    """Rejected lines keep the raw input for the operator to fix; a line naming a forgotten memory
    keeps only its line number and reason."""
    from hms_resources.common.files import write_bytes

    scrubbed = 0
    for path in rejects_files(home):
        lines = path.read_bytes().splitlines()
        kept = []
        for raw in lines:
            record = rejected_record(raw)
            if record is not None and names_forgotten(record.get("raw", ""), forgotten):
                record["raw"] = ERASED_LINE
                scrubbed += 1
                raw = orjson.dumps(record)
            kept.append(raw)
        if kept != lines:
            write_bytes(path, b"\n".join(kept) + b"\n")
    return scrubbed


def rejects_files(home: Path) -> list[Path]:
    folder = home / "rejects"
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def rejected_record(line: bytes) -> dict | None:
    """One line of a rejects file; None for a line that is not one (a file edited by hand)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("raw"), str) else None


def names_forgotten(raw: str, forgotten: set[MemoryKey]) -> bool:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(record, dict) or not isinstance(record.get("user_id"), str):
        return False
    user = record["user_id"]
    payload = record.get("payload") if isinstance(record.get("payload"), dict) else {}
    named = [record.get("memory_id"), record.get("event_id"), payload.get("target")]
    return any(isinstance(m, str) and (user, m) in forgotten for m in named)




def rejected_lines_naming(home: Path, key: MemoryKey) -> int:
    return sum(
        1 for path in rejects_files(home) for line in path.read_bytes().splitlines()
        if (record := rejected_record(line)) is not None and names_forgotten(record["raw"], {key})
    )
