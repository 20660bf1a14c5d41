"""What users' indexes are loaded from, and the loading itself.

A `ContextSnapshot` is the materialized assets as of one signature: the embedding index opened for
reading a user at a time, the champions, the memories table's sequence. `load_user` builds one
user's `UserIndex` from that user's rows alone (memories, tier partition, concepts, vectors), in
milliseconds, with fingerprints of what it read so a later snapshot can tell whether the user
changed. Every live memory is loaded, whatever its tier: a tier is what a memory costs to keep, never
whether a question can find it, so a cold row ranks with the same features and session neighbours as
a hot one. Memories stored since the snapshot join the index when the online indexer merges them
(`load_user(..., fresh=...)`), ranked exactly as the next materialization will rank them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hms_resources.context.index import (
    MemoryRows,
    UserAdapters,
    UserIndex,
    build_user_index,
    champion_index,
    index_bytes,
)
from hms_resources.lora.paths import CHAMPIONS_FILE, load_champions, lora_dir
from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, INDEX_FILE, EmbeddingRows
from hms_resources.store.derived import derived_state, latest_tiers, live_memory_columns
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ARCHIVED, MEMORY_CREATED, MEMORY_FORGOTTEN, MEMORY_UPDATED
from hms_resources.store.memory_state import CONVERSATION_TURN, Memory
from hms_resources.store.projection import MEMORIES_CURSOR


@dataclass
class ContextSnapshot:
    """What users' indexes are loaded from, as of one signature of the assets: the embedding index
    opened for reading a user at a time, the champions, and the memories table's sequence. Holds no
    user's index: `users` looks them up in the resource's budgeted cache, loading on first use."""

    signature: tuple
    cursor: int
    """The memories projection's sequence: events after it are read live from the event store."""
    model: str | None
    dimension: int
    home: Path
    seconds: float
    embeddings: EmbeddingRows | None = None
    champions: list[dict] = field(default_factory=list)
    users: Mapping[str, UserIndex] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    """Wall-clock time the snapshot was opened, for the service's readiness and index age."""
    number: int = 0
    """Counts the snapshots a resource has opened: a user's index is cached only under the snapshot it was loaded from."""


def release_freed_memory(collect: bool = True) -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise): after loads and evictions, whose
    rows are several times an index's size, and now and then between queries, whose temporaries
    fragment the heap."""
    import ctypes
    import gc

    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def snapshot_signature(store: EventStore) -> tuple:
    """Changes whenever an asset the resource reads is materialized again; its first part is the
    store's `DerivedState`, whose `sequence` is where the memories table stands."""
    index_file = store.home / EMBEDDINGS_DIR / INDEX_FILE
    stat = index_file.stat() if index_file.exists() else None
    champions = lora_dir(store.home) / CHAMPIONS_FILE
    return (
        derived_state(store, MEMORIES_CURSOR),
        (stat.st_mtime_ns, stat.st_size) if stat else None,
        champions.stat().st_mtime_ns if champions.exists() else None,
    )


def open_snapshot(store: EventStore, *, model: str | None) -> ContextSnapshot:
    """The signature first, so that a later materialization is always noticed; then the embedding
    index (one pass over its user column) and the champions."""
    started = time.perf_counter()
    signature = snapshot_signature(store)
    embeddings = EmbeddingRows.open(store.home / EMBEDDINGS_DIR)
    usable = embeddings is not None and (model is None or embeddings.model == model)
    if not usable and embeddings is not None:
        embeddings.close()
        embeddings = None
    return ContextSnapshot(
        signature=signature,
        cursor=signature[0].sequence,
        model=embeddings.model if usable else None,
        dimension=embeddings.dimension if usable else 0,
        home=store.home,
        seconds=time.perf_counter() - started,
        embeddings=embeddings,
        champions=load_champions(store.home) if usable else [],
    )


def snapshot_users(store: EventStore) -> Iterator[str]:
    """Every user with a live memory in the memories table, in order: one pass over the table, for
    tools that go through all users (never the query path)."""
    last = None
    for (user_id,) in live_memory_columns(store, "user_id"):
        if user_id != last:
            yield user_id
            last = user_id


@dataclass
class LoadedUser:
    """A user's indexes as loaded from a snapshot, with fingerprints of what they were built from."""

    user_id: str
    index: UserIndex | None
    adapters: UserAdapters | None
    sources: dict[str, Any]
    nbytes: int
    through: int = 0
    """The log's sequence the index reflects: the snapshot's cursor, or the fold the online indexer
    merged; a memory changed after it is ranked apart until merged."""


SOURCES = ("tiers", "concepts", "vectors", "champions")
"""What a user's index is built from besides its rows of the memories table (whose changes the
resource reads from the log): each has a fingerprint per user, compared when its asset changes."""


def _user_champions(snapshot: ContextSnapshot, user_id: str) -> list[dict]:
    return [c for c in snapshot.champions if c.get("user_id") == user_id]


def _concepts_fingerprint(concepts: Sequence[Any]) -> int:
    return hash(tuple(
        (c.concept_id, c.summary, tuple(c.label), tuple(c.member_ids), tuple(c.summary_member_ids), c.centroid.tobytes())
        for c in concepts
    ))


def user_sources(
    snapshot: ContextSnapshot,
    store: EventStore,
    user_id: str,
    parts: Sequence[str] = SOURCES,
    *,
    tiers: Mapping[tuple[str, str], Any] | None = None,
    concepts: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The fingerprints of `parts` of what `user_id`'s index is built from: the one definition, which
    `load_user` records (passing the `tiers` and `concepts` it read) and `unchanged_users` compares
    (reading them again for the user alone)."""
    from hms_resources.semantic.concepts import load_concepts

    found: dict[str, Any] = {}
    if "tiers" in parts:
        found["tiers"] = hash(tuple(sorted((latest_tiers(store, user_id) if tiers is None else tiers).items())))
    if "concepts" in parts:
        found["concepts"] = _concepts_fingerprint(load_concepts(store, user_id) if concepts is None else concepts)
    if "vectors" in parts:
        found["vectors"] = snapshot.embeddings.fingerprint(user_id) if snapshot.embeddings is not None else None
    if "champions" in parts:
        found["champions"] = repr(_user_champions(snapshot, user_id))
    return found


def user_vectors(
    snapshot: ContextSnapshot, user_id: str, online: Mapping[str, np.ndarray] | None = None, changed: Mapping[str, int] | None = None
) -> Callable[[list[str]], tuple[np.ndarray, np.ndarray]]:
    """The user's rows of the embedding index for given memory ids, as float16: half the memory and
    half the bytes a query scans, for cosines within 1e-3. Only this user's rows are read. A memory
    changed since the snapshot (`changed`) takes its vector from `online` (the service embedded its
    current text), never the index's stale one."""
    online = online or {}
    changed = changed or {}
    dimension = snapshot.dimension or next((len(v) for v in online.values()), 0)

    def lookup(memory_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(memory_ids), max(dimension, 1)), dtype=np.float16)
        found = np.zeros(len(memory_ids), dtype=bool)
        if not memory_ids:
            return vectors, found
        if snapshot.embeddings is not None:
            ids, rows = snapshot.embeddings.for_user(user_id)
            position = {m: r for r, m in enumerate(ids)}
            source = np.array([-1 if m in changed else position.get(m, -1) for m in memory_ids], dtype=np.int64)
            found = source >= 0
            vectors[found] = rows[source[found]]
        for i, memory_id in enumerate(memory_ids):
            vector = online.get(memory_id)
            if vector is not None and len(vector) == vectors.shape[1]:
                vectors[i] = vector
                found[i] = True
        return vectors, found

    return lookup


def load_user(
    snapshot: ContextSnapshot,
    store: EventStore,
    user_id: str,
    count_tokens: Callable[[list[str]], np.ndarray],
    *,
    fresh: Any = None,
    online: Mapping[str, np.ndarray] | None = None,
    previous: UserIndex | None = None,
) -> LoadedUser:
    """One user's indexes from that user's rows only (memories, tiers, concepts, vectors, champions):
    nothing another user wrote is read, so nothing of theirs can reach this index. With `fresh` (the
    user's `FreshMemories`) and `online` (their vectors), the memories changed since the snapshot are
    merged in at their current state: the index the next materialization will build, less the
    concept summaries of a changed member (their text may be stale until `concepts` runs again).
    `previous` (the index being replaced) lends the token counts it already computed."""
    from hms_resources.semantic.concepts import load_concepts

    tiers = latest_tiers(store, user_id)
    concepts = load_concepts(store, user_id)
    changed = fresh.changed if fresh is not None else {}
    memories: list[Memory] = [m for m in store.read_memories(user_id=user_id) if m.memory_id not in changed]
    if fresh is not None and fresh.live:
        memories = sorted(memories + list(fresh.live.values()), key=lambda m: m.memory_id)
    rows = MemoryRows([], [], [], [], [], [], [], [])
    for memory in memories:
        tier, score = tiers.get((user_id, memory.memory_id), ("hot", None))
        if memory.user_id != user_id or memory.is_archived or not memory.content:
            continue
        rows.memory_ids.append(memory.memory_id)
        rows.contents.append(memory.content)
        rows.session_ids.append(memory.session_id)
        rows.created_at.append(memory.created_at or "")
        rows.speakers.append(memory.created_by if memory.memory_type == CONVERSATION_TURN else None)
        rows.importance.append(memory.importance)
        rows.tiers.append(tier)
        rows.tier_scores.append(score)
    index = None
    if rows.memory_ids:
        vectors = user_vectors(snapshot, user_id, online, changed)
        summarized = [c for c in concepts if not any(m in changed for m in c.member_ids)] if changed else concepts
        index = build_user_index(user_id, rows, count_tokens=count_tokens, vector_of=vectors, concepts=summarized, previous=previous)
    adapters = None
    if snapshot.model:
        adapters = champion_index(_user_champions(snapshot, user_id), {user_id: concepts}, snapshot.dimension,
                                  fact_vectors=lambda _user, ids: user_vectors(snapshot, user_id, online, changed)(ids)).get(user_id)
    sources = user_sources(snapshot, store, user_id, tiers=tiers, concepts=concepts)
    nbytes = index_bytes(index) + (adapters.anchors.nbytes + 400 * len(adapters.adapters) if adapters else 0) + 1_000
    through = max(snapshot.cursor, fresh.through if fresh is not None else 0)
    return LoadedUser(user_id, index, adapters, sources, nbytes, through)


INDEXED_EVENTS = (MEMORY_CREATED, MEMORY_UPDATED, MEMORY_ARCHIVED, MEMORY_FORGOTTEN)
"""Events that change a memory's row as a user's index reads it (accesses, tags and relations do not)."""


def users_written(store: EventStore, after: int, until: int) -> set[str]:
    """Users with an event that changes their indexed rows in (`after`, `until`]."""
    users: set[str] = set()
    for page in store.read_event_pages(after_sequence=after, until_sequence=until):
        users.update(e.user_id for e in page if e.type in INDEXED_EVENTS)
    return users


def unchanged_users(
    store: EventStore, old: ContextSnapshot, new: ContextSnapshot, loaded: Sequence[tuple[str, LoadedUser]]
) -> dict[str, tuple[LoadedUser, LoadedUser]]:
    """Of the users `loaded` from `old`, those whose data is the same in `new`: no event that changes
    their rows between the two snapshots' cursors, and the same fingerprints of their tiers and
    concepts (read for them alone, whatever the signature says: its aggregates miss some writes,
    such as a later user shard's tiers of the same day) and of their vectors and champions when
    those files changed. Each maps to (its entry, the entry to keep)."""
    if not loaded or new.cursor < old.cursor:
        return {}
    parts = ["tiers", "concepts"]
    if old.signature[1] != new.signature[1] or old.model != new.model:
        parts.append("vectors")
    if old.signature[2] != new.signature[2] or old.model != new.model:
        parts.append("champions")
    written = users_written(store, old.cursor, new.cursor) if new.cursor > old.cursor else set()
    kept: dict[str, tuple[LoadedUser, LoadedUser]] = {}
    for user_id, entry in loaded:
        if user_id in written or entry.through > old.cursor:
            continue
        if user_sources(new, store, user_id, parts) != {p: entry.sources[p] for p in parts}:
            continue
        kept[user_id] = (entry, entry)
    return kept
