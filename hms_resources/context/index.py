"""The context resource's in-memory index of one user: what `assemble` needs and nothing more.

A `UserIndex` holds texts rendered as a prompt shows them (`prompt.py`), unit vectors from the
`embeddings` asset (float16), two BM25 indexes, dynamic importance from the latest tier partition, session order, speakers and concept
summaries; it is built in milliseconds (`snapshot.load_user` reads the rows), so a process builds a
user's on first use. Token counts and the cheap per-memory features are computed for a memory the
first time a query ranks it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from hms_resources.context.lexical import analysed, bm25_index
from hms_resources.context.lexical import index_bytes as lexical_bytes
from hms_resources.context.prompt import render_memory, render_summary
from hms_resources.context.temporal import mentions_time

TIER_CODES = {"hot": 0, "warm": 1, "cold": 2}
TIER_NAMES = ("hot", "warm", "cold")
DEFAULT_PRIOR = 0.5


def epoch_seconds(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def dedup_key(content: str) -> int:
    return hash(" ".join(content.casefold().split()))


class RowsOnDemand:
    """A per-memory column computed for a row the first time a query reads it: token counts and text
    patterns cost most of a user's load, and a query reads them for its candidates only. Indexed
    like the array it stands for (an int, a list or array of rows, a mask); filling a row twice from
    two threads writes the same value."""

    __slots__ = ("values", "known", "_compute")

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
        if isinstance(key, (int, np.integer)):
            if not self.known[key]:
                self.values[key] = self._compute([int(key)])[0]
                self.known[key] = True
            return self.values[key]
        self.fill(key)
        return self.values[key]

    def fill(self, key: Any) -> None:
        """Compute the missing rows of `key` in one batch: one tokenizer call for a query's candidates."""
        rows = np.atleast_1d(np.asarray(key))
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        missing = rows[~self.known[rows]] if len(rows) else rows
        if len(missing):
            missing = np.unique(missing)
            self.values[missing] = self._compute(missing.tolist())
            self.known[missing] = True


@dataclass
class ConceptSummary:
    concept_id: str
    text: str
    tokens: int
    carried_rows: np.ndarray
    """Rows of the members whose content the summary text carries: the summary stands for them."""


@dataclass
class UserIndex:
    """Per-row strings are tuples: once the collector has seen that they hold only strings it stops
    tracking them, so the full collections of a process holding thousands of users stay short."""

    user_id: str
    memory_ids: tuple[str, ...]
    texts: tuple[str, ...]
    created_at: tuple[str, ...]
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
    speakers: Sequence[str] = ()
    is_question: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    mentions_time: Any = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    """Whether a row's text says when (`RowsOnDemand`, int8 0 or 1)."""
    session_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32), repr=False)
    """The row's session as a number from 0 (-1: no session), for the session-level features."""
    sessions: int = 0
    session_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32), repr=False)
    """The rows in a session, grouped by session number in order, for per-session maxima by `reduceat`."""
    session_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def session_best(self, values: np.ndarray) -> np.ndarray:
        """The largest of `values` (one per row) in each session, by session number."""
        if not self.sessions:
            return np.zeros(0, dtype=values.dtype)
        return np.maximum.reduceat(values[self.session_order], self.session_starts)

    def __len__(self) -> int:
        return len(self.memory_ids)

    def content(self, row: int) -> str:
        """The memory's text without its speaker, whitespace collapsed as rendered."""
        return RowTexts(self.texts, self.speaker_code, self.speakers).contents([row])[0]

    def lexical_scores(self, query_tokens: list[str]) -> np.ndarray:
        if self.bm25 is None or not query_tokens:
            return np.zeros(len(self), dtype=np.float32)
        ids = self.bm25.get_tokens_ids(query_tokens)
        if not ids:
            return np.zeros(len(self), dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids)

    def term_scores(self, query_tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of every row, and the share of the query's distinct known terms each row contains."""
        scores, matched, _ = self.term_matches(query_tokens)
        return scores, matched

    def term_matches(self, query_tokens: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`term_scores`, and the share of the query's distinct terms that some row of each session
        contains (per session number, `session_of`): a session can hold a question's words across turns."""
        scores = np.zeros(len(self), dtype=np.float32)
        matched = np.zeros(len(self), dtype=np.float32)
        in_session = np.zeros(self.sessions, dtype=np.float32)
        terms = list(dict.fromkeys(query_tokens))
        if self.bm25 is None or not terms:
            return scores, matched, in_session
        ids = [i for i in self.bm25.get_tokens_ids(terms) if i is not None]
        grouped = len(self.session_of) == len(self) and self.sessions > 0
        for term_id in dict.fromkeys(ids):
            part = self.bm25.get_scores_from_ids([term_id])
            scores += part
            found = part > 0
            matched += found
            if grouped:
                sessions = self.session_of[found]
                in_session[np.unique(sessions[sessions >= 0])] += 1.0
        return scores, matched / len(terms), in_session / len(terms)

    def context_lexical_scores(self, query_tokens: list[str]) -> np.ndarray:
        if self.context_bm25 is None or not query_tokens:
            return np.zeros(len(self), dtype=np.float32)
        ids = self.context_bm25.get_tokens_ids(query_tokens)
        return self.context_bm25.get_scores_from_ids(ids) if ids else np.zeros(len(self), dtype=np.float32)


class RowTexts:
    """What the `RowsOnDemand` columns of an index compute from: its texts, not the index itself (an
    index that referred to itself would outlive its eviction until a full garbage collection), in
    one object, so that a process holding thousands of users gives the collector little to scan."""

    __slots__ = ("texts", "speaker_code", "cut", "count_tokens")

    def __init__(self, texts: Sequence[str], speaker_code: np.ndarray, speakers: Sequence[str], count_tokens: Any = None):
        self.texts = texts
        self.speaker_code = speaker_code
        self.cut = tuple(len(s) + 2 for s in speakers)
        self.count_tokens = count_tokens

    def contents(self, rows: list[int]) -> list[str]:
        """The rows' texts without their speakers."""
        texts, cut = self.texts, self.cut
        return [texts[r][cut[c]:] if c >= 0 else texts[r] for r, c in zip(rows, self.speaker_code[rows].tolist())]

    def tokens(self, rows: list[int]) -> np.ndarray:
        return self.count_tokens([self.texts[r] for r in rows]) + 1

    def dedup(self, rows: list[int]) -> list[int]:
        return [dedup_key(c) for c in self.contents(rows)]

    def mentions_time(self, rows: list[int]) -> list[bool]:
        return [mentions_time(c) for c in self.contents(rows)]


def _strings_bytes(values: Sequence[str]) -> int:
    return sys.getsizeof(values) + sum(map(sys.getsizeof, values))


def index_bytes(index: UserIndex | None) -> int:
    """What a user's index holds in memory, counted rather than guessed: every array's `nbytes`, the
    BM25 matrices, and the strings, lists and dicts by `sys.getsizeof` (the memory ids are counted
    once: `row_of` shares them). What the LRU of loaded users weighs against its budget."""
    if index is None:
        return 0
    arrays = (index.created, index.prior, index.tier, index.vectors, index.has_vector, index.prev_row, index.next_row,
              index.concept_of, index.speaker_code, index.is_question, index.tokens, index.dedup, index.mentions_time,
              index.session_of, index.session_order, index.session_starts)
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
    previous: UserIndex | None = None,
) -> UserIndex:
    """`previous`: the index this one replaces (a merge), whose computed columns are kept for the
    memories of the same text."""
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
    session_of = np.full(n, -1, dtype=np.int32)
    sessions = -1
    for position, i in enumerate(order):
        if not position or rows.session_ids[order[position - 1]] != rows.session_ids[i]:
            sessions += 1
        session_of[i] = sessions
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
        memory_ids=tuple(rows.memory_ids),
        texts=tuple(texts),
        created_at=tuple(rows.created_at),
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
        speakers=tuple(speakers),
        is_question=np.array([t.endswith("?") for t in texts], dtype=bool),
        session_of=session_of,
        sessions=sessions + 1,
        session_order=np.array(order, dtype=np.int32),
        session_starts=np.flatnonzero(np.diff(session_of[order], prepend=-1)) if order else np.zeros(0, dtype=np.int64),
    )
    row_texts = RowTexts(index.texts, index.speaker_code, index.speakers, count_tokens)
    index.tokens = RowsOnDemand(n, np.int32, row_texts.tokens)
    index.dedup = RowsOnDemand(n, np.int64, row_texts.dedup)
    index.mentions_time = RowsOnDemand(n, np.int8, row_texts.mentions_time)
    if previous is not None:
        keep_computed(previous, index)
    return index


def keep_computed(previous: UserIndex, index: UserIndex) -> None:
    """Copy the columns computed on demand (tokens, dedup keys, time mentions) from `previous` for
    the memories whose text is the same: a merge of a few new memories never tokenizes the others
    again, however large they are."""
    pairs = [(row, old) for row, (memory_id, text) in enumerate(zip(index.memory_ids, index.texts))
             if (old := previous.row_of.get(memory_id)) is not None and previous.texts[old] == text]
    if not pairs:
        return
    rows, old_rows = (np.array(side, dtype=np.int64) for side in zip(*pairs))
    for name in ("tokens", "dedup", "mentions_time"):
        before, after = getattr(previous, name), getattr(index, name)
        known = before.known[old_rows]
        after.values[rows[known]] = before.values[old_rows[known]]
        after.known[rows[known]] = True


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
    """The query's highest cosine with the adapter's concept centroid or one of its facts."""
    threshold: float = 0.0
    """The similarity at which a query routes to it, fitted on held-out questions when it was trained
    (0 for an adapter trained before: the assembler's `adapter_min_similarity` applies)."""

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class UserAdapters:
    """A user's champion adapters and what routes a query to each: the rows of `anchors` (unit vectors:
    the concept's centroid and the vectors of the set's facts) whose `owners` entry is its position."""

    adapters: list[SelectedAdapter]
    anchors: np.ndarray
    owners: np.ndarray


def champion_index(
    champions: Sequence[dict], concepts_by_user: dict[str, list[Any]], dimension: int,
    fact_vectors: Callable[[str, list[str]], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, UserAdapters]:
    """Per user, the champions whose concept still exists with a centroid of the index's dimension,
    anchored on that centroid and on the vectors of the set's facts still in the index
    (`fact_vectors(user_id, memory_ids)` -> (vectors, found)). A champion trained before thresholds
    were fitted has threshold 0: the assembler's `adapter_min_similarity` applies to it."""
    centroids = {(c.user_id, c.concept_id): c.centroid for concepts in concepts_by_user.values() for c in concepts}
    found: dict[str, tuple[list[SelectedAdapter], list[np.ndarray], list[int]]] = {}
    for c in champions:
        centroid = centroids.get((c["user_id"], c["concept_id"]))
        if centroid is None or centroid.shape != (dimension,):
            continue
        adapters, rows, owners = found.setdefault(c["user_id"], ([], [], []))
        anchors = [np.asarray(centroid, dtype=np.float32)[None, :]]
        if fact_vectors is not None and c.get("memory_ids"):
            vectors, present = fact_vectors(c["user_id"], list(c["memory_ids"]))
            anchors.append(np.asarray(vectors, dtype=np.float32)[present])
        stacked = np.vstack(anchors)
        owners += [len(adapters)] * len(stacked)
        rows.append(stacked)
        adapters.append(SelectedAdapter(c["model_name"], c["version"], c["uri"], c["path"], c["base_model"], c["set_id"], c["concept_id"],
                                        threshold=float(c.get("route_threshold") or 0.0)))
    return {user: UserAdapters(adapters, np.vstack(rows).astype(np.float32), np.asarray(owners, dtype=np.int64))
            for user, (adapters, rows, owners) in found.items()}
