"""The context resource's in-memory indexes, built per user from the materialized assets.

A `UserIndex` holds what `assemble` needs for one user and nothing more: rendered texts, unit vectors
from the `embeddings` asset (float16), two BM25 indexes, dynamic importance from the latest tier
partition, session order, speakers and concept summaries. `load_user` builds one from that user's
rows only, in milliseconds, so a process loads a user on first use rather than everyone at start; a
`ContextSnapshot` is what the loads read from, as of one signature of the assets. Token counts and
the cheap per-memory features are computed for a memory the first time a query ranks it.
Cold memories stay on disk until a deep search asks for them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from hms_resources.context.lexical import analysed, bm25_index
from hms_resources.context.lexical import index_bytes as lexical_bytes
from hms_resources.context.temporal import mentions_time
from hms_resources.lora.paths import CHAMPIONS_FILE, load_champions, lora_dir
from hms_resources.semantic.embeddings import EmbeddingRows
from hms_resources.store.derived import derived_state, latest_tiers, live_memory_columns
from hms_resources.store.event_store import EventStore
from hms_resources.store.memory_state import CONVERSATION_TURN
from hms_resources.store.projection import MEMORIES_CURSOR
from hms_resources.tiers.archive import COLD_ARCHIVE_DIR, read_cold_archive

TIER_CODES = {"hot": 0, "warm": 1, "cold": 2}
TIER_NAMES = ("hot", "warm", "cold")
DEFAULT_PRIOR = 0.5
EMBEDDINGS_DIR = "embeddings"


def epoch_seconds(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def render_memory(speaker: str | None, content: str) -> str:
    """How a memory is indexed and appears in a prompt: who said it and the text. Its date is shown once
    per day above the memories of that day (`day_header`), not on every line."""
    who = f"{speaker}: " if speaker else ""
    return f"{who}{' '.join(content.split())}"


def day_header(created_at: str | None) -> str:
    """The line above a day's memories in a prompt, "[8 May 2023]": temporal questions need the date,
    and the base LLM's tokenizer spends a token per digit, so the month is a word."""
    day = (created_at or "")[:10]
    if not day:
        return ""
    moment = datetime.fromisoformat(day)
    return f"[{moment.day} {MONTH_ABBREVIATIONS[moment.month - 1]} {moment.year}]"


def render_summary(label: Sequence[str], summary: str) -> str:
    return f"[summary: {', '.join(label[:3])}] {' '.join(summary.split())}"


def dedup_key(content: str) -> int:
    return hash(" ".join(content.casefold().split()))


class RowsOnDemand:
    """A per-memory column computed for a row the first time a query reads it: token counts and text
    patterns cost most of a user's load, and a query reads them for its candidates only. Indexed
    like the array it stands for (an int, a list or array of rows, a mask); filling a row twice from
    two threads writes the same value."""

    def __init__(self, length: int, dtype: Any, compute: Callable[[list[int]], Any]):
        self.values = np.zeros(length, dtype=dtype)
        self.known = np.zeros(length, dtype=bool)
        self._compute = compute

    def __len__(self) -> int:
        return len(self.values)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.known.nbytes

    def __getitem__(self, key: Any) -> Any:
        rows = np.atleast_1d(np.asarray(key))
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        missing = rows[~self.known[rows]] if len(rows) else rows
        if len(missing):
            missing = np.unique(missing)
            self.values[missing] = self._compute(missing.tolist())
            self.known[missing] = True
        return self.values[key]


@dataclass
class ConceptSummary:
    concept_id: str
    text: str
    tokens: int
    carried_rows: np.ndarray
    """Rows of the members whose content the summary text carries: the summary stands for them."""


@dataclass
class UserIndex:
    user_id: str
    memory_ids: list[str]
    texts: list[str]
    created_at: list[str]
    tokens: Any
    """Tokens per row with its line break (`RowsOnDemand`, int32)."""
    created: np.ndarray
    prior: np.ndarray
    tier: np.ndarray
    dedup: Any
    """`dedup_key` per row (`RowsOnDemand`, int64)."""
    vectors: np.ndarray
    has_vector: np.ndarray
    prev_row: np.ndarray
    next_row: np.ndarray
    concept_of: np.ndarray
    concepts: list[ConceptSummary]
    bm25: Any
    row_of: dict[str, int] = field(repr=False)
    context_bm25: Any = None
    """BM25 over each memory with the turn before it in its session, as the dense index embeds it."""
    speaker_code: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16), repr=False)
    """Index into `speakers` per row, -1 for a memory that is not a conversation turn."""
    speakers: list[str] = field(default_factory=list)
    is_question: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    mentions_time: Any = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    """Whether a row's text says when (`RowsOnDemand`, int8 0 or 1)."""

    def __len__(self) -> int:
        return len(self.memory_ids)

    def content(self, row: int) -> str:
        """The memory's text without its speaker, whitespace collapsed as rendered."""
        code = int(self.speaker_code[row])
        return self.texts[row][len(self.speakers[code]) + 2 :] if code >= 0 else self.texts[row]

    def lexical_scores(self, query_tokens: list[str]) -> np.ndarray:
        if self.bm25 is None or not query_tokens:
            return np.zeros(len(self), dtype=np.float32)
        ids = self.bm25.get_tokens_ids(query_tokens)
        if not ids:
            return np.zeros(len(self), dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids)

    def term_scores(self, query_tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of every row, and the share of the query's distinct known terms each row contains."""
        scores = np.zeros(len(self), dtype=np.float32)
        matched = np.zeros(len(self), dtype=np.float32)
        terms = list(dict.fromkeys(query_tokens))
        if self.bm25 is None or not terms:
            return scores, matched
        ids = [i for i in self.bm25.get_tokens_ids(terms) if i is not None]
        for term_id in dict.fromkeys(ids):
            part = self.bm25.get_scores_from_ids([term_id])
            scores += part
            matched += part > 0
        return scores, matched / len(terms)

    def context_lexical_scores(self, query_tokens: list[str]) -> np.ndarray:
        if self.context_bm25 is None or not query_tokens:
            return np.zeros(len(self), dtype=np.float32)
        ids = self.context_bm25.get_tokens_ids(query_tokens)
        return self.context_bm25.get_scores_from_ids(ids) if ids else np.zeros(len(self), dtype=np.float32)


def _strings_bytes(values: Sequence[str]) -> int:
    return sys.getsizeof(values) + sum(map(sys.getsizeof, values))


def index_bytes(index: UserIndex | None) -> int:
    """What a user's index holds in memory, counted rather than guessed: every array's `nbytes`, the
    BM25 matrices, and the strings, lists and dicts by `sys.getsizeof` (the memory ids are counted
    once: `row_of` shares them). What the LRU of loaded users weighs against its budget."""
    if index is None:
        return 0
    arrays = (index.created, index.prior, index.tier, index.vectors, index.has_vector, index.prev_row, index.next_row,
              index.concept_of, index.speaker_code, index.is_question, index.tokens, index.dedup, index.mentions_time)
    total = sum(a.nbytes for a in arrays)
    total += _strings_bytes(index.texts) + _strings_bytes(index.memory_ids) + _strings_bytes(index.created_at)
    total += sys.getsizeof(index.row_of) + 32 * len(index.row_of)
    total += _strings_bytes(index.speakers)
    total += sum(sys.getsizeof(c.text) + c.carried_rows.nbytes + 120 for c in index.concepts)
    total += lexical_bytes(index.bm25) + lexical_bytes(index.context_bm25)
    if index.bm25 is not None:
        vocab = index.bm25.vocab_dict
        total += sys.getsizeof(vocab) + sum(map(sys.getsizeof, vocab)) + 32 * len(vocab)
    return total + 2_000


@dataclass
class MemoryRows:
    """One user's memories as columns, before indexing."""

    memory_ids: list[str]
    contents: list[str]
    session_ids: list[str | None]
    created_at: list[str]
    speakers: list[str | None]
    importance: list[float | None]
    tiers: list[str]
    tier_scores: list[float | None]


def build_user_index(
    user_id: str,
    rows: MemoryRows,
    *,
    count_tokens: Callable[[list[str]], np.ndarray],
    vector_of: Callable[[list[str]], tuple[np.ndarray, np.ndarray]],
    concepts: Sequence[Any] = (),
    row_of: dict[str, int] | None = None,
) -> UserIndex:
    n = len(rows.memory_ids)
    texts = [render_memory(s, t) for s, t in zip(rows.speakers, rows.contents)]
    speakers = sorted({s for s in rows.speakers if s})
    code_of = {s: i for i, s in enumerate(speakers)}
    row_of = row_of if row_of is not None else {m: i for i, m in enumerate(rows.memory_ids)}
    created = np.fromiter((epoch_seconds(c) for c in rows.created_at), dtype=np.float64, count=n)
    prior = np.fromiter(
        (
            s if s is not None else (i if i is not None else DEFAULT_PRIOR)
            for s, i in zip(rows.tier_scores, rows.importance)
        ),
        dtype=np.float32,
        count=n,
    )
    vectors, has_vector = vector_of(rows.memory_ids)
    prev_row = np.full(n, -1, dtype=np.int32)
    next_row = np.full(n, -1, dtype=np.int32)
    order = sorted(
        (i for i in range(n) if rows.session_ids[i]), key=lambda i: (rows.session_ids[i], rows.created_at[i], i)
    )
    for a, b in zip(order, order[1:]):
        if rows.session_ids[a] == rows.session_ids[b]:
            next_row[a], prev_row[b] = b, a
    concept_of = np.full(n, -1, dtype=np.int32)
    kept: list[tuple[Any, str, np.ndarray]] = []
    for concept in concepts:
        carried = np.array([row_of[m] for m in concept.summary_member_ids if m in row_of], dtype=np.int32)
        if len(carried) < 2 or not concept.summary.strip():
            continue
        for m in concept.member_ids:
            if m in row_of:
                concept_of[row_of[m]] = len(kept)
        kept.append((concept, render_summary(concept.label, concept.summary), carried))
    summary_tokens = count_tokens([text for _, text, _ in kept]) if kept else []
    summaries = [ConceptSummary(c.concept_id, text, int(t) + 1, carried) for (c, text, carried), t in zip(kept, summary_tokens)]
    bm25 = context_bm25 = None
    if n:
        terms, vocab = analysed(texts)
        bm25 = bm25_index(terms, vocab)
        context_bm25 = bm25_index([terms[p] + terms[i] if p >= 0 else terms[i] for i, p in enumerate(prev_row.tolist())], vocab)
    index = UserIndex(
        user_id=user_id,
        memory_ids=list(rows.memory_ids),
        texts=texts,
        created_at=list(rows.created_at),
        tokens=None,
        created=created,
        prior=prior,
        tier=np.array([TIER_CODES.get(t, 0) for t in rows.tiers], dtype=np.int8),
        dedup=None,
        vectors=vectors,
        has_vector=has_vector,
        prev_row=prev_row,
        next_row=next_row,
        concept_of=concept_of,
        concepts=summaries,
        bm25=bm25,
        row_of=row_of,
        context_bm25=context_bm25,
        speaker_code=np.array([code_of.get(s, -1) if s else -1 for s in rows.speakers], dtype=np.int16),
        speakers=speakers,
        is_question=np.array([t.endswith("?") for t in texts], dtype=bool),
    )
    index.tokens = RowsOnDemand(n, np.int32, lambda rows: count_tokens([texts[r] for r in rows]) + 1)
    index.dedup = RowsOnDemand(n, np.int64, lambda rows: [dedup_key(index.content(r)) for r in rows])
    index.mentions_time = RowsOnDemand(n, np.int8, lambda rows: [mentions_time(index.content(r)) for r in rows])
    return index


@dataclass(frozen=True)
class SelectedAdapter:
    """A champion LoRA adapter chosen for a query: its MLflow model, version and local PEFT files."""

    name: str
    version: str
    uri: str
    """`models:/<name>@champion`, for MLflow."""
    path: str
    """The adapter's PEFT directory: `PeftModel.from_pretrained(base, path)`."""
    base_model: str
    set_id: str
    concept_id: str
    similarity: float = 0.0
    """Cosine of the query's embedding and the adapter's concept centroid."""

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class UserAdapters:
    """A user's champion adapters and the centroids of their concepts (unit rows)."""

    adapters: list[SelectedAdapter]
    centroids: np.ndarray


def champion_index(champions: Sequence[dict], concepts_by_user: dict[str, list[Any]], dimension: int) -> dict[str, UserAdapters]:
    """Per user, the champions whose concept still exists with a centroid of the index's dimension."""
    centroids = {(c.user_id, c.concept_id): c.centroid for concepts in concepts_by_user.values() for c in concepts}
    found: dict[str, tuple[list[SelectedAdapter], list[np.ndarray]]] = {}
    for c in champions:
        centroid = centroids.get((c["user_id"], c["concept_id"]))
        if centroid is None or centroid.shape != (dimension,):
            continue
        adapters, rows = found.setdefault(c["user_id"], ([], []))
        adapters.append(SelectedAdapter(c["model_name"], c["version"], c["uri"], c["path"], c["base_model"], c["set_id"], c["concept_id"]))
        rows.append(centroid)
    return {user: UserAdapters(adapters, np.vstack(rows).astype(np.float32)) for user, (adapters, rows) in found.items()}


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
    index_file = store.home / EMBEDDINGS_DIR / "index.npz"
    stat = index_file.stat() if index_file.exists() else None
    archive = store.home / COLD_ARCHIVE_DIR
    champions = lora_dir(store.home) / CHAMPIONS_FILE
    return (
        derived_state(store, MEMORIES_CURSOR),
        (stat.st_mtime_ns, stat.st_size) if stat else None,
        archive.stat().st_mtime_ns if archive.exists() else None,
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
    cold: Any = None
    """The cold archive's index once a deep search loaded it (None: none; `NOT_LOADED` before)."""


NOT_LOADED = object()
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


def user_sources(snapshot: ContextSnapshot, store: EventStore, user_id: str, parts: Sequence[str] = SOURCES) -> dict[str, Any]:
    """The fingerprints of `parts` of what `user_id`'s index is built from, read as `load_user` reads them."""
    from hms_resources.semantic.concepts import load_concepts

    found: dict[str, Any] = {}
    if "tiers" in parts:
        found["tiers"] = hash(tuple(sorted(latest_tiers(store, user_id).items())))
    if "concepts" in parts:
        found["concepts"] = _concepts_fingerprint(load_concepts(store, user_id))
    if "vectors" in parts:
        found["vectors"] = snapshot.embeddings.fingerprint(user_id) if snapshot.embeddings is not None else None
    if "champions" in parts:
        found["champions"] = repr(_user_champions(snapshot, user_id))
    return found


def user_vectors(snapshot: ContextSnapshot, user_id: str) -> Callable[[list[str]], tuple[np.ndarray, np.ndarray]]:
    """The user's rows of the embedding index for given memory ids, as float16: half the memory and
    half the bytes a query scans, for cosines within 1e-3. Only this user's rows are read."""

    def lookup(memory_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(memory_ids), max(snapshot.dimension, 1)), dtype=np.float16)
        found = np.zeros(len(memory_ids), dtype=bool)
        if snapshot.embeddings is None or not memory_ids:
            return vectors, found
        ids, rows = snapshot.embeddings.for_user(user_id)
        position = {m: r for r, m in enumerate(ids)}
        source = np.array([position.get(m, -1) for m in memory_ids], dtype=np.int64)
        found = source >= 0
        vectors[found] = rows[source[found]]
        return vectors, found

    return lookup


def load_user(snapshot: ContextSnapshot, store: EventStore, user_id: str, count_tokens: Callable[[list[str]], np.ndarray]) -> LoadedUser:
    """One user's indexes from that user's rows only (memories, tiers, concepts, vectors, champions):
    nothing another user wrote is read, so nothing of theirs can reach this index."""
    from hms_resources.semantic.concepts import load_concepts

    tiers = latest_tiers(store, user_id)
    concepts = load_concepts(store, user_id)
    rows = MemoryRows([], [], [], [], [], [], [], [])
    for memory in store.read_memories(user_id=user_id):
        tier, score = tiers.get((user_id, memory.memory_id), ("hot", None))
        if memory.user_id != user_id or memory.is_archived or tier == "cold" or not memory.content:
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
        index = build_user_index(
            user_id, rows, count_tokens=count_tokens, vector_of=user_vectors(snapshot, user_id), concepts=concepts
        )
    adapters = None
    if snapshot.model:
        adapters = champion_index(_user_champions(snapshot, user_id), {user_id: concepts}, snapshot.dimension).get(user_id)
    sources = {
        "tiers": hash(tuple(sorted(tiers.items()))),
        "concepts": _concepts_fingerprint(concepts),
        "vectors": snapshot.embeddings.fingerprint(user_id) if snapshot.embeddings is not None else None,
        "champions": repr(_user_champions(snapshot, user_id)),
    }
    nbytes = index_bytes(index) + (adapters.centroids.nbytes + 400 * len(adapters.adapters) if adapters else 0) + 1_000
    return LoadedUser(user_id, index, adapters, sources, nbytes, NOT_LOADED)


def load_cold_index(snapshot: ContextSnapshot, user_id: str, count_tokens: Callable[[list[str]], np.ndarray]) -> UserIndex | None:
    """A user's cold archive (Parquet from the `cold_archive` asset) as an index, for deep searches."""

    records = read_cold_archive(snapshot.home / COLD_ARCHIVE_DIR, user_id)
    records = [r for r in records if r.get("content")]
    if not records:
        return None
    rows = MemoryRows(
        memory_ids=[r["memory_id"] for r in records],
        contents=[r["content"] for r in records],
        session_ids=[None] * len(records),
        created_at=[r.get("created_at") or "" for r in records],
        speakers=[None] * len(records),
        importance=[r.get("importance") for r in records],
        tiers=["cold"] * len(records),
        tier_scores=[r.get("score") for r in records],
    )
    return build_user_index(user_id, rows, count_tokens=count_tokens, vector_of=user_vectors(snapshot, user_id))
