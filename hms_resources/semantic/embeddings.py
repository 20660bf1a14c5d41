"""The embedding index: one unit vector per live memory, kept incrementally by content hash.

Stored as one uncompressed `.npz` (float32 matrix plus id and hash columns) that the context
resource can read, or memory-map, without loading the model."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hms_resources.common.files import atomic_path
from hms_resources.store.memory_state import CONVERSATION_TURN, Memory, MemoryKey

EMBEDDINGS_DIR = "embeddings"
"""The index's folder under the HMS home."""
INDEX_FILE = "index.npz"


def content_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class EmbeddingIndex:
    model: str
    user_ids: np.ndarray
    memory_ids: np.ndarray
    hashes: np.ndarray
    vectors: np.ndarray

    @classmethod
    def empty(cls, model: str, dimension: int) -> "EmbeddingIndex":
        blank = np.array([], dtype=str)
        return cls(model, blank, blank, blank, np.zeros((0, dimension), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.memory_ids)

    def keys(self) -> list[MemoryKey]:
        return list(zip(self.user_ids.tolist(), self.memory_ids.tolist()))

    def for_user(self, user_id: str) -> tuple[list[str], np.ndarray]:
        rows = np.flatnonzero(self.user_ids == user_id)
        return self.memory_ids[rows].tolist(), self.vectors[rows]

    def save(self, directory: Path) -> Path:
        """Write atomically: readers see the old index or the new one, never half of one."""
        path = directory / INDEX_FILE
        with atomic_path(path) as partial, partial.open("wb") as out:
            np.savez(
                out,
                model=np.array(self.model),
                user_ids=self.user_ids.astype(str),
                memory_ids=self.memory_ids.astype(str),
                hashes=self.hashes.astype(str),
                vectors=self.vectors.astype(np.float32, copy=False),
            )
        return path

    @classmethod
    def load(cls, directory: Path) -> "EmbeddingIndex | None":
        path = directory / INDEX_FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(
                str(data["model"]), data["user_ids"], data["memory_ids"], data["hashes"], data["vectors"]
            )


@dataclass(frozen=True)
class EmbeddingReport:
    model: str
    memories: int
    encoded: int
    reused: int
    removed: int
    empty_content: int
    truncated: int
    model_changed: bool
    seconds: float
    encode_seconds: float


def embedding_text(memory: Memory) -> str:
    """What a memory's vector encodes: its text, and for a conversation turn its speaker, whom questions
    about it usually name. (The turn before it is read by the context's second BM25 index instead:
    embedded with it, the turn's own meaning is diluted, and paraphrased questions suffer.)"""
    text = " ".join((memory.content or "").split())
    if memory.memory_type == CONVERSATION_TURN and memory.created_by:
        return f"{memory.created_by}: {text}"
    return text


def refresh_embeddings(
    memories: Sequence[Memory],
    previous: EmbeddingIndex | None,
    *,
    model: str,
    encode: Callable[[list[str]], np.ndarray],
    count_tokens: Callable[[list[str]], list[int]],
    max_tokens: int,
    dimension: int,
) -> tuple[EmbeddingIndex, EmbeddingReport]:
    """The index for the live memories: vectors of unchanged texts are reused, the rest encoded.
    Archived and forgotten memories leave the index; a different model re-encodes everything."""
    started = time.perf_counter()
    live = sorted((m for m in memories if not m.is_archived and not m.is_forgotten), key=lambda m: m.key)
    texts = [embedding_text(m) for m in live]
    hashes = [content_hash(t) for t in texts]
    model_changed = previous is not None and previous.model != model
    reusable: dict[tuple[MemoryKey, str], int] = {}
    if previous is not None and not model_changed:
        reusable = {
            ((u, m), h): row
            for row, (u, m, h) in enumerate(
                zip(previous.user_ids.tolist(), previous.memory_ids.tolist(), previous.hashes.tolist())
            )
        }
    vectors = np.zeros((len(live), dimension), dtype=np.float32)
    missing: list[int] = []
    for row, (memory, digest) in enumerate(zip(live, hashes)):
        source = reusable.get((memory.key, digest))
        if source is None:
            missing.append(row)
        else:
            vectors[row] = previous.vectors[source]
    new_texts = [texts[row] for row in missing]
    encode_started = time.perf_counter()
    if new_texts:
        vectors[missing] = encode(new_texts)
    encode_seconds = time.perf_counter() - encode_started
    truncated = sum(1 for n in count_tokens(new_texts) if n > max_tokens - 2) if new_texts else 0
    index = EmbeddingIndex(
        model=model,
        user_ids=np.array([m.user_id for m in live], dtype=str),
        memory_ids=np.array([m.memory_id for m in live], dtype=str),
        hashes=np.array(hashes, dtype=str),
        vectors=vectors,
    )
    kept = {m.key for m in live}
    removed = 0 if previous is None else sum(1 for key in previous.keys() if key not in kept)
    report = EmbeddingReport(
        model=model,
        memories=len(live),
        encoded=len(missing),
        reused=len(live) - len(missing),
        removed=removed,
        empty_content=sum(1 for m in live if not (m.content or "").strip()),
        truncated=truncated,
        model_changed=model_changed,
        seconds=time.perf_counter() - started,
        encode_seconds=encode_seconds,
    )
    return index, report
