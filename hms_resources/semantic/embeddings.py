"""The embedding index: one unit vector per live memory, kept incrementally by content hash.

Stored as one uncompressed `.npz` (float32 matrix plus id and hash columns) that the context
resource can read, or memory-map, without loading the model."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class EmbeddingRows:
    """The saved index read one user at a time, never whole: a serving process holds the vectors of the
    users it serves, not the matrix of everyone's. Opening it reads the user column once, a chunk at a
    time, to find where each user's rows lie (the asset writes them sorted by user, so one span each);
    a user's ids and vectors are then read with `pread` from the open file, so they are copies the
    caller owns and no page of the file stays mapped into the process."""

    CHUNK_ROWS = 1 << 20

    def __init__(self, path: Path):
        import zipfile

        self.path = path
        self._file = path.open("rb")
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            self.model = str(np.load(archive.open(members["model"].filename)))
        self._columns = {name: self._column(members[name]) for name in ("user_ids", "memory_ids", "hashes", "vectors")}
        shape = self._columns["vectors"][1]
        self.dimension = int(shape[1]) if len(shape) == 2 else 0
        self.rows = int(self._columns["user_ids"][1][0])
        self.spans = self._user_spans()

    @classmethod
    def open(cls, directory: Path) -> "EmbeddingRows | None":
        path = directory / INDEX_FILE
        return cls(path) if path.exists() else None

    def close(self) -> None:
        self._file.close()

    def _column(self, info) -> tuple[np.dtype, tuple, int]:
        """A stored (uncompressed) member's dtype, shape and the offset of its first byte in the file."""
        import struct
        import zipfile

        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{self.path}: {info.filename} is compressed; the index is saved uncompressed")
        header = os.pread(self._file.fileno(), 30, info.header_offset)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        self._file.seek(start)
        version = np.lib.format.read_magic(self._file)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(self._file)
        if fortran:
            raise ValueError(f"{self.path}: {info.filename} is stored in Fortran order")
        return dtype, shape, self._file.tell()

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        dtype, shape, offset = self._columns[name]
        row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        raw = os.pread(self._file.fileno(), (stop - start) * row, offset + start * row)
        return np.frombuffer(raw, dtype=dtype).reshape((stop - start, *shape[1:]))

    def _user_spans(self) -> dict[str, tuple[int, int] | np.ndarray]:
        """Each user's rows: a (start, stop) span, or their row numbers should a writer not have kept
        a user's rows together."""
        spans: dict[str, Any] = {}
        scattered: dict[str, list[int]] = {}
        last = None
        for start in range(0, self.rows, self.CHUNK_ROWS):
            chunk = self._read("user_ids", start, min(start + self.CHUNK_ROWS, self.rows))
            heads = np.flatnonzero(np.concatenate(([True], chunk[1:] != chunk[:-1])))
            ends = np.append(heads[1:], len(chunk))
            for user, head, end in zip(chunk[heads].tolist(), (heads + start).tolist(), (ends + start).tolist()):
                if user == last and user in spans:
                    spans[user] = (spans[user][0], end)
                elif user in spans or user in scattered:
                    scattered.setdefault(user, list(range(*spans.pop(user))) if user in spans else [])
                    scattered[user] += range(head, end)
                else:
                    spans[user] = (head, end)
                last = user
        spans.update({user: np.array(rows, dtype=np.int64) for user, rows in scattered.items()})
        return spans

    def _user_rows(self, name: str, user_id: str) -> np.ndarray:
        span = self.spans.get(user_id)
        if span is None:
            dtype, shape, _ = self._columns[name]
            return np.zeros((0, *shape[1:]), dtype=dtype)
        if isinstance(span, tuple):
            return self._read(name, *span)
        return np.concatenate([self._read(name, row, row + 1) for row in span.tolist()])

    def for_user(self, user_id: str) -> tuple[list[str], np.ndarray]:
        """The user's memory ids and their unit vectors (float32), in the index's order."""
        return self._user_rows("memory_ids", user_id).tolist(), self._user_rows("vectors", user_id)

    def fingerprint(self, user_id: str) -> bytes:
        """Changes when the user's rows change (their ids or their texts' hashes), or the model does."""
        digest = hashlib.blake2b(self.model.encode("utf-8"), digest_size=16)
        digest.update(self._user_rows("memory_ids", user_id).tobytes())
        digest.update(self._user_rows("hashes", user_id).tobytes())
        return digest.digest()


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


def drop_vectors(directory: Path, keys: set[MemoryKey]) -> int:
    """Remove forgotten memories' rows from the saved index, before the forget is acknowledged (the
    `embeddings` asset would only drop them at its next run). Reads just the users' rows to decide, and
    rewrites the index (atomically) only when one is there. Returns the rows removed."""
    rows = EmbeddingRows.open(directory)
    if rows is None:
        return 0
    try:
        held = {(u, m) for u in {u for u, _ in keys} for m in rows.for_user(u)[0]}
    finally:
        rows.close()
    if not held & keys:
        return 0
    index = EmbeddingIndex.load(directory)
    kept = np.array([key not in keys for key in zip(index.user_ids.tolist(), index.memory_ids.tolist())], dtype=bool)
    EmbeddingIndex(index.model, index.user_ids[kept], index.memory_ids[kept], index.hashes[kept], index.vectors[kept]).save(directory)
    return int((~kept).sum())
