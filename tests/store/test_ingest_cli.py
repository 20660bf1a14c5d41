"""`hms ingest` and `hms stats`: every valid line stored, every invalid one reported and kept aside."""

import json
import os
import signal
import subprocess
import sys
import time

import orjson

from hms_resources.datasets.synthetic import generate_bulk_events
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import parse_event
from hms_resources.store.ingest import ingest_records
from hms_resources.store.memory_state import replay_events
from tests.helpers import created, event

HMS = [sys.executable, "-m", "hms_jobs.cli"]


def hms(*args: str, stdin: bytes | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([*HMS, *args], input=stdin, capture_output=True, env=env, timeout=300)


def line(record) -> bytes:
    return json.dumps(record).encode()


def test_invalid_lines_are_reported_with_file_and_line_and_the_rest_is_stored(hms_home, tmp_path):
    big = "x" * 70_000
    lines = [
        line(created("u1", "m1", "prefers tea")),                         # 1
        b"{not json",                                                      # 2
        b'{"event_id": "e-bad-utf8", "type": "memory.created", "x": "\xff"}',  # 3
        b"",                                                               # 4 blank: skipped
        line({**created("u1", "m2"), "user_id": None} | {"user_id": None}),  # 5
        line(created("u1", "m3", big)),                                    # 6
        line(event("exploded", "u1", "m1")),                               # 7
        line(event("accessed", "u1", "m404", 1)),                          # 8
        line({**created("u1", "m4"), "payload": {"content": "ok", "importance": "high"}}),  # 9
        line(event("accessed", "u1", "m1", 2, was_relevant=True)),         # 10
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    result = hms("ingest", str(path), "--json", "--rejects", str(rejects))
    assert result.returncode == 2, result.stderr
    assert json.loads(result.stdout) == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 7}
    stderr = result.stderr.decode()
    for number, reason in [
        (2, "invalid JSON"),
        (3, "invalid UTF-8"),
        (5, "user_id is required"),
        (6, "payload.content is 70000 bytes, over the limit of 65536 bytes"),
        (7, "unknown event type 'memory.exploded'"),
        (8, "memory 'm404' does not exist for user 'local/u1'"),  # the tenant's user, as stored
        (9, "payload.importance must be a number from 0 to 1"),
    ]:
        assert f"{path}:{number}: {reason}" in stderr
    written = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [r["line"] for r in written] == [2, 3, 5, 6, 7, 8, 9]
    assert written[0]["raw"] == "{not json"
    stats = json.loads(hms("stats", "--json").stdout)
    assert stats["events"] == 2
    assert stats["memories"] == {"total": 1, "live": 1, "archived": 0, "forgotten": 0}


def test_a_clean_ingest_exits_0_and_a_rerun_counts_duplicates(hms_home, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(line(created("u1", f"m{n}")) for n in range(5)) + b"\n")
    first = hms("ingest", str(path), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"accepted": 5, "duplicates": 0, "conflicts": 0, "rejected": 0}
    again = hms("ingest", str(path), "--json")
    assert json.loads(again.stdout) == {"accepted": 0, "duplicates": 5, "conflicts": 0, "rejected": 0}
    assert not (hms_home / "rejects").exists()


def test_ingest_reads_standard_input_and_shows_progress(hms_home):
    data = b"\n".join(line(created("u1", f"m{n}")) for n in range(3)) + b"\n"
    result = hms("ingest", "-", "--json", "--progress", stdin=data)
    assert result.returncode == 0
    assert json.loads(result.stdout)["accepted"] == 3
    assert "ingest" in result.stderr.decode()


def test_ingest_fails_with_exit_1_and_never_prints_the_password(hms_home, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(line(created("u1", "m1")) + b"\n")
    result = hms("ingest", str(path), env_extra={"HMS_DATABASE_URL": "postgresql://hms:hunter2@127.0.0.1:1/x"})
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "hms: error: cannot open the event store at postgresql://hms:***@127.0.0.1:1/x" in stderr
    assert "hunter2" not in stderr
    assert hms("ingest", str(tmp_path / "missing.jsonl")).returncode == 1


def test_python_api_ingests_records_like_the_cli(tmp_path):
    store = EventStore(hms_home=str(tmp_path))
    report = ingest_records(store, [created("u1", "m1"), event("accessed", "u1", "m2", 1)], source="api")
    assert report.counts() == {"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 1}
    assert str(report.rejections[0]) == "api:2: memory 'm2' does not exist for user 'u1'"


def test_ingest_killed_with_sigkill_leaves_the_store_consistent_and_a_rerun_completes_it(store_url, tmp_path):
    total = 30_000
    path = tmp_path / "bulk.jsonl"
    with path.open("wb") as out:
        for record in generate_bulk_events(total, users=20, seed=11):
            out.write(orjson.dumps(record) + b"\n")
    env = {"HMS_DATABASE_URL": store_url, "HMS_HOME": str(tmp_path / "home")}
    store = EventStore(database_url=store_url)
    store.stats()
    proc = subprocess.Popen([*HMS, "ingest", str(path), "--batch-size", "500", "--tenant", ""], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while store.stats()["events"] < 2_000 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = store.stats()
    assert 0 < before["events"] < total, "the ingest should have been killed part-way"
    assert before["events"] % 500 == 0, "only whole batches are stored"
    assert before["memories"]["total"] == sum(1 for e in store.read_events() if e.type == "memory.created")

    rerun = hms("ingest", str(path), "--json", "--tenant", "", env_extra=env)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout) == {"accepted": total - before["events"], "duplicates": before["events"], "conflicts": 0, "rejected": 0}
    stored = list(store.read_events())
    assert [e.event_id for e in stored] == [json.loads(x)["event_id"] for x in path.read_bytes().splitlines()]
    expected = replay_events(parse_event(json.loads(x)) for x in path.read_bytes().splitlines())
    replayed = store.replay()
    assert replayed.keys() == expected.keys()
    assert all(replayed[k].content == expected[k].content for k in expected)
    store.close()
