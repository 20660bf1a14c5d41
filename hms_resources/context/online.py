"""The online indexer: memories stored since the snapshot, embedded by the process that serves them
and merged into their users' indexes, so a written memory is ranked like every other (same vector,
BM25 terms, session neighbours and reranker) within a fraction of a second, with no Dagster run.

The assets stay the batch path (concepts, tiers, graph, adapters); freshness no longer waits for
them. The merged index is the one the next materialization builds: `load_user` with the user's
`FreshMemories` and the vectors embedded here, by the document model the `embeddings` asset uses,
so a memory's rank is the same before and after that run."""

from __future__ import annotations

import atexit
import hashlib
import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from hms_resources.common.home import redact_url
from hms_resources.common.model_libraries import model_library
from hms_resources.context.cache import SnapshotCache
from hms_resources.context.fresh import FreshMemories, FreshOverlay
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.embeddings import embedding_text

log = logging.getLogger("hms.context")


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _import_model_library() -> None:
    """Import the embedding model's library in the caller's thread before the indexer's thread runs:
    transformers' lazy modules fail ("cannot import name ...") when two threads import them at once,
    as the chat's local model does on another thread."""
    if "sentence_transformers" not in sys.modules:
        model_library("sentence_transformers")


class OnlineVectors:
    """Vectors of the memories stored since the snapshot, by user, embedded in batches by the
    document model and kept while the memory's text is the same."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self._vectors: dict[str, dict[str, tuple[bytes, np.ndarray]]] = {}

    def usable(self, model: str | None) -> bool:
        """Vectors the snapshot's rows can be compared with: the same model, or no snapshot vectors yet."""
        return model is None or model == self.embedder.identity

    def for_user(self, user_id: str, fresh: FreshMemories) -> dict[str, np.ndarray]:
        """Vectors of the user's fresh live memories, embedding (in one batch) those new or changed."""
        known = self._vectors.get(user_id, {})
        texts = {m: embedding_text(memory) for m, memory in fresh.live.items()}
        missing = [m for m, text in texts.items() if m not in known or known[m][0] != _text_key(text)]
        kept = {m: known[m] for m in texts if m in known and m not in missing}
        if missing:
            encoded = self.embedder.encode([texts[m] for m in missing]).astype(np.float16)
            kept.update({m: (_text_key(texts[m]), vector) for m, vector in zip(missing, encoded)})
        self._vectors[user_id] = kept
        return {m: vector for m, (_, vector) in kept.items()}

    def restart(self, users: Iterable[str] | None = None) -> None:
        """Forget the vectors of `users` (all: None), once a snapshot holds them."""
        if users is None:
            self._vectors = {}
        for user_id in users or ():
            self._vectors.pop(user_id, None)


class OnlineIndexer:
    """Merges a user's fresh memories into their index on a thread of its own, started on first use:
    after each fold that changed the user (`FreshOverlay.when_changed`), after a write of this process
    (`wake`), and when a call finds the user's index behind (`want`). One merge at a time; writes that
    arrive during a merge are merged by the next one. After each round of merges the thread rests as
    long as the round took (`pace`), so merging a large user's index again and again under a stream of
    writes takes at most half a core from the calls, and the writes of the rest gather into one merge."""

    def __init__(self, cache: SnapshotCache, overlay: FreshOverlay, embedder: Embedder, *, pace: float = 1.0):
        self.cache = cache
        self.overlay = overlay
        self.vectors = OnlineVectors(embedder)
        self.merges = 0
        self.pace = pace
        self._wanted: set[str] = set()
        self._fold = False
        self._closed = False
        self._busy = False
        self._signal = threading.Condition()
        self._thread: threading.Thread | None = None
        overlay.when_changed(self.want)

    def want(self, users: Iterable[str]) -> None:
        """Merge these users' fresh memories soon."""
        _import_model_library()
        with self._signal:
            self._wanted.update(users)
            self._start()
            self._signal.notify_all()

    def wake(self) -> None:
        """This process stored events: fold them now, and merge the users they changed."""
        _import_model_library()
        with self._signal:
            self._fold = True
            self._start()
            self._signal.notify_all()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every wanted merge is done (tests, benchmarks); False on timeout."""
        with self._signal:
            return self._signal.wait_for(lambda: not (self._wanted or self._fold or self._busy), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the merge under way: a thread stopped inside the model at exit aborts the process."""
        with self._signal:
            self._closed = True
            self._signal.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            try:
                atexit.register(self.close)
            except RuntimeError:  # the interpreter is shutting down (a last write flushed at exit): nothing to merge for
                self._closed = True
                return
            self._thread = threading.Thread(target=self._run, name="hms-online-index", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._signal:
                self._signal.wait_for(lambda: self._closed or self._wanted or self._fold)
                if self._closed:
                    return
                fold, self._fold = self._fold, False
                self._busy = True
            started = time.monotonic()
            try:
                if fold:
                    self.overlay.fold_now()
                with self._signal:
                    users, self._wanted = sorted(self._wanted), set()
                for user_id in users:
                    self._merge(user_id)
            except Exception as exc:  # noqa: BLE001 - a failed merge leaves the fresh memories ranked apart
                log.warning("online indexing failed, fresh memories stay ranked apart: %s", redact_url(str(exc)))
            finally:
                rest = self.pace * (time.monotonic() - started)
                with self._signal:
                    self._busy = False
                    self._signal.notify_all()
                    if rest > 0.005 and not self._closed:
                        self._signal.wait_for(lambda: self._closed, timeout=rest)

    def _merge(self, user_id: str) -> None:
        if not self.cache.serves(user_id):
            return
        snapshot = self.cache.snapshot
        current_snapshot, fresh = self.overlay.read(user_id)
        if current_snapshot is not snapshot or not fresh.changed:
            return
        current = self.cache.residents.get(user_id)
        if current is not None and current.through >= fresh.through:
            return
        online: dict[str, Any] = self.vectors.for_user(user_id, fresh) if self.vectors.usable(snapshot.model) else {}
        if self.cache.merged(user_id, fresh, online, snapshot) is not None:
            self.merges += 1

