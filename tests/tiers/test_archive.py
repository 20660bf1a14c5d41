"""The cold archive's versions: a rewrite is staged beside the version readers use and published by
replacing one pointer file, so the archive folder never disappears and a read never mixes versions."""

import shutil
import threading

from hms_resources.common.limits import file_name
from hms_resources.store.memory_state import Memory
from hms_resources.tiers.archive import (
    CURRENT_FILE,
    VERSION_PREFIX,
    cold_archive_version,
    publish_cold_archive,
    read_cold_archive,
    stage_cold_archive,
)


def cold(user: str, ids: range, month: str = "2026-03") -> list[Memory]:
    return [Memory(user, f"m{i}", content=f"memory {i}", created_at=f"{month}-0{1 + i % 9}T09:00:00.000000Z", importance=0.5) for i in ids]


def scores(memories: list[Memory]) -> dict:
    return {m.key: 0.1 for m in memories}


def ids(records: list[dict]) -> set[str]:
    return {r["memory_id"] for r in records}


def versions(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(VERSION_PREFIX))


def test_a_staged_rewrite_is_invisible_until_published_and_the_old_version_goes_after(tmp_path):
    directory = tmp_path / "archive"
    first = cold("u1", range(0, 6)) + cold("u1", range(6, 8), month="2026-04")
    publish_cold_archive(directory, stage_cold_archive(directory, first, scores(first)))
    old = cold_archive_version(directory)
    assert ids(read_cold_archive(directory, "u1")) == {f"m{i}" for i in range(8)}

    second = cold("u1", range(4, 10))
    staged = stage_cold_archive(directory, second, scores(second))
    assert directory.is_dir() and cold_archive_version(directory) == old
    assert ids(read_cold_archive(directory, "u1")) == {f"m{i}" for i in range(8)}, "readers stay on the published version"

    publish_cold_archive(directory, staged)
    assert ids(read_cold_archive(directory, "u1")) == {f"m{i}" for i in range(4, 10)}
    assert versions(directory) == [staged.name] and not old.exists()
    assert (directory / CURRENT_FILE).read_text().strip() == staged.name
    assert read_cold_archive(directory, "nobody") == []


def test_readers_never_see_a_missing_or_mixed_archive_while_it_is_rewritten(tmp_path):
    directory = tmp_path / "archive"
    a, b = cold("u1", range(0, 30)), cold("u1", range(20, 60))
    expected = ({m.memory_id for m in a}, {m.memory_id for m in b})
    publish_cold_archive(directory, stage_cold_archive(directory, a, scores(a)))
    seen: list[set[str]] = []
    problems: list[str] = []
    writing = True

    def read_while_writing() -> None:
        while writing:
            if not directory.is_dir():
                problems.append("the archive folder was missing")
            try:
                found = ids(read_cold_archive(directory, "u1"))
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            if found not in expected:
                problems.append(f"a read mixed versions: {len(found)} memories")
            seen.append(found)

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    try:
        for round_ in range(20):
            memories = b if round_ % 2 == 0 else a
            publish_cold_archive(directory, stage_cold_archive(directory, memories, scores(memories)))
    finally:
        writing = False
        reader.join()
    assert problems == []
    assert len(seen) > 0
    assert len(versions(directory)) == 1


def test_an_archive_from_before_versions_stays_readable_and_is_replaced_whole(tmp_path):
    directory = tmp_path / "archive"
    legacy = cold("u1", range(3))
    staged = stage_cold_archive(directory, legacy, scores(legacy))
    (staged / f"user={file_name('u1')}").rename(directory / f"user={file_name('u1')}")
    staged.rmdir()
    crashed = tmp_path / ".archive.staging" / f"user={file_name('u1')}"
    crashed.mkdir(parents=True)
    shutil.copy(next((directory / f"user={file_name('u1')}").glob("*.parquet")), crashed)
    assert cold_archive_version(directory) == directory
    assert ids(read_cold_archive(directory, "u1")) == {"m0", "m1", "m2"}

    unpublished = stage_cold_archive(directory, cold("u1", range(50, 52)), {})
    current = cold("u1", range(5, 7))
    publish_cold_archive(directory, stage_cold_archive(directory, current, scores(current)))
    assert ids(read_cold_archive(directory, "u1")) == {"m5", "m6"}
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [CURRENT_FILE, cold_archive_version(directory).name]
    assert not unpublished.exists() and not crashed.exists(), "no earlier copy of a cold memory's text is left behind"
