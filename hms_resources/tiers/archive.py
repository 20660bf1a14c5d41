"""The cold archive: the cold tier of the latest partition as Parquet, an export of what went cold (the
context resource searches cold memories from the memories table like any other).

Layout of the archive folder (`<HMS home>/archive`):

    CURRENT                                    the name of the version readers use
    version-<UTC time>-<token>/user=<file_name(user id)>/<YYYY-MM>.parquet

A rewrite writes a whole new version beside the current one, replaces CURRENT atomically, then
removes every other version (a forgotten memory's text must not outlive the rewrite). The folder
itself never moves, so a reader always finds an archive; a reader whose version is removed while it
reads starts again on the new one."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from hms_resources.common.files import PARTIAL_SUFFIX, atomic_path, exclusive_lock, write_text
from hms_resources.common.limits import file_name
from hms_resources.store.event_store import EventStore
from hms_resources.store.memory_state import Memory, MemoryKey
from hms_resources.tiers.assignment import latest_tier_date

COLD_ARCHIVE_DIR = "archive"
"""The archive's folder under the HMS home."""
CURRENT_FILE = "CURRENT"
VERSION_PREFIX = "version-"
LOCK_FILE = ".writer.lock"
READ_ATTEMPTS = 5


def write_cold_archive(store: EventStore, directory: Path) -> dict[str, int]:
    """The cold tier of the latest partition as a new version of the archive, one file per user and
    month of creation, each with the same column types; one writer at a time."""
    scores = _latest_cold_scores(store)
    memories = [m for m in store.read_memories() if m.key in scores]
    with exclusive_lock(directory / LOCK_FILE):
        version = stage_cold_archive(directory, memories, scores)
        publish_cold_archive(directory, version)
    return {
        "files": sum(1 for _ in version.glob("user=*/*.parquet")),
        "memories": len(memories),
        "users": len({m.user_id for m in memories}),
    }


def stage_cold_archive(directory: Path, memories: Iterable[Memory], scores: Mapping[MemoryKey, float]) -> Path:
    """Write `memories` as a new version beside the current one; readers see it once it is published."""
    import polars as pl

    version = directory / f"{VERSION_PREFIX}{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"
    version.mkdir(parents=True)
    groups: dict[tuple[str, str], list[Memory]] = {}
    for m in memories:
        groups.setdefault((m.user_id, (m.created_at or "0000-00")[:7]), []).append(m)
    for (user_id, month), members in sorted(groups.items()):
        folder = version / f"user={file_name(user_id)}"
        folder.mkdir(exist_ok=True)
        frame = pl.DataFrame(
            {
                "memory_id": [m.memory_id for m in members],
                "content": [m.content or "" for m in members],
                "memory_type": [m.memory_type for m in members],
                "category": [m.category for m in members],
                "tags": [list(m.tags) for m in members],
                "created_at": [m.created_at for m in members],
                "importance": [m.importance for m in members],
                "score": [scores.get(m.key) for m in members],
            },
            schema={"memory_id": pl.String, "content": pl.String, "memory_type": pl.String, "category": pl.String,
                    "tags": pl.List(pl.String), "created_at": pl.String, "importance": pl.Float64, "score": pl.Float64},
        ).sort("memory_id")
        with atomic_path(folder / f"{month}.parquet") as partial:
            frame.write_parquet(partial)
    return version


def publish_cold_archive(directory: Path, version: Path) -> None:
    """Point readers at `version`, then remove every other version, the user folders of the layout
    before versions, and what a crashed writer of that layout left beside the folder."""
    write_text(directory / CURRENT_FILE, version.name + "\n")
    for entry in directory.iterdir():
        if entry == version:
            continue
        if entry.is_dir() and entry.name.startswith((VERSION_PREFIX, "user=")):
            shutil.rmtree(entry)
        elif entry.name.endswith(PARTIAL_SUFFIX):
            entry.unlink(missing_ok=True)
    for leftover in (directory.parent / f".{directory.name}.staging", directory.parent / f".{directory.name}.old"):
        if leftover.is_dir():
            shutil.rmtree(leftover)


def cold_archive_version(directory: Path) -> Path:
    """The folder holding the archive's user folders now: the version CURRENT names, or the archive
    folder itself when it predates versions (or was never written)."""
    try:
        name = (directory / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return directory
    return directory / name


def read_cold_archive(directory: Path, user_id: str) -> list[dict]:
    """A user's archived cold memories, all from one version even while a rewrite replaces it."""
    for _ in range(READ_ATTEMPTS):
        version = cold_archive_version(directory)
        try:
            records = _read_user(version / f"user={file_name(user_id)}")
        except FileNotFoundError:
            if cold_archive_version(directory) == version:
                raise
            continue
        if cold_archive_version(directory) == version:
            return records
    raise RuntimeError(f"{directory}: the cold archive was rewritten during each of {READ_ATTEMPTS} reads of user {user_id!r}")


def _read_user(folder: Path) -> list[dict]:
    import polars as pl

    paths = sorted(folder.glob("*.parquet"))
    if not paths:
        return []
    return pl.concat([pl.read_parquet(path) for path in paths], how="diagonal_relaxed").to_dicts()


def _latest_cold_scores(store: EventStore) -> dict[MemoryKey, float]:
    """Score of every memory in the cold tier of the latest partition."""
    from sqlalchemy import select

    from hms_resources.store.schema import memory_tiers

    query = select(memory_tiers.c.user_id, memory_tiers.c.memory_id, memory_tiers.c.score).where(
        memory_tiers.c.partition_date == latest_tier_date(store), memory_tiers.c.tier == "cold"
    )
    with store.reading() as conn:
        return {(u, m): s for u, m, s in conn.execute(query)}


def drop_from_cold_archive(directory: Path, keys: set[MemoryKey]) -> int:
    """Rewrite the archive without forgotten memories, before the forget is acknowledged (the cold
    archive job would only at its next run): a new version with the users' files rewritten and the
    others' copied, published as a rewrite is, so no old version keeps their text. Returns the rows
    removed; writes nothing when none of them is archived."""
    import polars as pl

    users = {u for u, _ in keys}
    if not any((u, r["memory_id"]) in keys for u in users for r in read_cold_archive(directory, u)):
        return 0
    removed = 0
    with exclusive_lock(directory / LOCK_FILE):
        current = cold_archive_version(directory)
        version = directory / f"{VERSION_PREFIX}{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(current, version, ignore=shutil.ignore_patterns(CURRENT_FILE, LOCK_FILE, f"{VERSION_PREFIX}*", f"*{PARTIAL_SUFFIX}"))
        for user_id in sorted(users):
            gone = sorted(m for u, m in keys if u == user_id)
            for path in sorted((version / f"user={file_name(user_id)}").glob("*.parquet")):
                frame = pl.read_parquet(path)
                kept = frame.filter(~pl.col("memory_id").is_in(gone))
                removed += frame.height - kept.height
                if kept.height == 0:
                    path.unlink()
                elif kept.height < frame.height:
                    with atomic_path(path) as partial:
                        kept.write_parquet(partial)
        publish_cold_archive(directory, version)
    return removed
