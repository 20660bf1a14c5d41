"""Every write goes through the one door: outside `hms_resources/memory/` (the door) and
`hms_resources/store/` (the log itself: its append, salvage, ingest of JSONL files and migrations), no
runtime module appends to an event store or builds an event envelope by hand; the context resource
only reads.

The dataset generators (`hms_resources/datasets/`) are left out on purpose: they write JSONL files,
the same input a user hands `hms ingest`, and their records reach the store only through the ingest
path, which validates every line as it validates any file."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hms_resources", "hms_assets", "hms_jobs")
THE_DOOR = ("hms_resources/memory/", "hms_resources/store/")
WRITE_FILES = ("hms_resources/datasets/",)


def runtime_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def is_envelope(node: ast.Dict) -> bool:
    """An event id with two more envelope fields, or with a type and the rest spread in (`{**base, ...}`).
    A dict with a `sequence` or an `n` (its place in a memory's history) is a stored event shown to a
    reader: an envelope to append cannot hold one."""
    keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
    if "event_id" not in keys or keys & {"sequence", "n"}:
        return False
    spread = None in node.keys
    return len(keys & {"type", "occurred_at", "user_id", "payload"}) >= 2 or (spread and "type" in keys)


def writes_in(source: str) -> list[str]:
    """Appends to an event store, salvaging appends, `MemoryEvent(...)` and envelope dicts, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "append" and ast.unparse(func.value).lower().endswith("store"):
                found.append(f"{node.lineno}: {ast.unparse(func)}(...)")
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("MemoryEvent", "append_salvaging"):
                found.append(f"{node.lineno}: {name}(...)")
            if name == "submit" and any(isinstance(a, ast.Name) and a.id == "append_salvaging" for a in node.args):
                found.append(f"{node.lineno}: submit(append_salvaging, ...)")
        elif isinstance(node, ast.Dict) and is_envelope(node):
            keys = sorted(repr(k.value) for k in node.keys if isinstance(k, ast.Constant))
            found.append(f"{node.lineno}: an event envelope {{{', '.join(keys)}}}")
    return found


def test_no_module_outside_the_door_appends_or_builds_events():
    outside = [p for p in runtime_files() if not p.startswith(THE_DOOR + WRITE_FILES)]
    offenders = [f"{path}:{hit}" for path in outside for hit in writes_in((ROOT / path).read_text())]
    assert offenders == []


def test_the_check_sees_each_kind_of_write():
    source = (
        "store.append([e])\nself.event_store.append(batch)\nappend_salvaging(store, batch)\nMemoryEvent('e', 't', 'u', 'm', 'x')\n"
        "record = {'event_id': 'e', 'type': 'memory.created', 'user_id': 'u'}\n{**base, 'event_id': 'e', 'type': 't'}\n"
        "rows.append(1)\n{'event_id': 'e', 'type': 't', 'memory_id': 'm'}\n{'sequence': 1, 'event_id': 'e', 'type': 't', 'payload': {}}\n"
    )
    assert [hit.split(":")[0] for hit in writes_in(source)] == ["1", "2", "3", "4", "5", "6"]
