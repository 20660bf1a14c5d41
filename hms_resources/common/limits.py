"""What HMS can hold: one set of limits, shared by event validation, the store's schema and the
files assets write, so that anything the ingest accepts every store and every asset can keep."""

from __future__ import annotations

import hashlib
import re

MAX_ID_LENGTH = 255
"""event_id, user_id, memory_id and the ids inside payloads: `String(255)` columns."""

MAX_NAME_LENGTH = 255
"""session_id, category, source_type, source_id, created_by, relationship_type, each tag."""

MAX_MEMORY_TYPE_LENGTH = 64
"""memory_type: a `String(64)` column."""

MAX_LIST_ITEMS = 1_000
"""tags, remove and related_memory_ids."""

MAX_NESTING_DEPTH = 32
"""Levels of arrays and objects inside a payload field (the JSON encoder stops at 254)."""

MAX_OBJECT_BYTES = 64 * 1024
"""metadata, context and access_context, as JSON."""

MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1
"""Integers anywhere in a payload: what 64-bit stores and JSON readers keep exactly."""

EARLIEST_TIME = "1900-01-01T00:00:00.000000Z"
LATEST_TIME = "2199-12-31T23:59:59.999999Z"
"""The range of `occurred_at` (after conversion to UTC), inclusive."""

# Ids and names may hold any printable text; NUL cannot be stored in PostgreSQL text, and the other
# control characters would break the graph's node keys.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")

FILE_NAME_READABLE = 80


def file_name(identifier: str) -> str:
    """A file or folder name for any id the store accepts: its safe characters (at most 80) and a
    digest of the whole id, so two ids never share a name and no name is too long for a file system."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", identifier)[:FILE_NAME_READABLE]
    return f"{readable}-{hashlib.sha256(identifier.encode('utf-8')).hexdigest()[:12]}"
