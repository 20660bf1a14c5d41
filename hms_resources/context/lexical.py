"""One user's BM25 indexes, built in a couple of milliseconds so that a user's first call can load
them on demand: the scores bm25s computes (its Lucene variant, k1 1.5, b 0.75, float32) from the same
analysis as `lexical_tokens`, computed with numpy over every (memory, term) pair at once instead of
bm25s's loop over memories, which cost most of a user's load. Scoring stays bm25s's own."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

K1 = 1.5
B = 0.75


def analysed(texts: Sequence[str]) -> tuple[list[list[int]], dict[str, int]]:
    """Term ids per text and the vocabulary (stem -> id), with `lexical_tokens`' settings."""
    import bm25s

    from hms_resources.common.text import stemmer

    if not texts:
        return [], {}
    tokenized = bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer(), return_ids=True, show_progress=False)
    return tokenized.ids, tokenized.vocab


def bm25_index(documents: Sequence[Sequence[int]], vocab: dict[str, int]):
    """A `bm25s.BM25` over `documents` (term ids of `vocab`), scoring as `BM25().index(tokens)` would.
    Indexes of the same vocabulary may share the `vocab` dict: it is not copied."""
    import bm25s

    n = len(documents)
    terms = len(vocab) - ("" in vocab)
    lengths = np.fromiter(map(len, documents), dtype=np.int64, count=n)
    flat = np.fromiter(itertools.chain.from_iterable(documents), dtype=np.int64, count=int(lengths.sum()))
    pairs, counts = np.unique(np.repeat(np.arange(n, dtype=np.int64), lengths) * max(terms, 1) + flat, return_counts=True)
    pair_doc, pair_term = pairs // max(terms, 1), pairs % max(terms, 1)
    frequency = np.bincount(pair_term, minlength=terms)
    idf_of = {int(df): math.log(1 + (n - df + 0.5) / (df + 0.5)) for df in np.unique(frequency).tolist() if df}
    idf = np.array([idf_of.get(int(df), 0.0) for df in frequency.tolist()], dtype=np.float32)
    tf = counts.astype(np.float32)
    average = lengths.mean() if n else np.float64(0.0)
    scores = (idf[pair_term] * (tf / (K1 * ((1 - B) + B * lengths[pair_doc] / average) + tf))).astype(np.float32)
    order = np.argsort(pair_term * max(n, 1) + pair_doc)
    indptr = np.zeros(terms + 1, dtype=np.int64)
    np.cumsum(frequency, out=indptr[1:])
    index = bm25s.BM25(k1=K1, b=B)
    index.scores = {"data": scores[order], "indices": pair_doc[order].astype(np.int32), "indptr": indptr, "num_docs": n}
    index.nonoccurrence_array = None
    if "" not in vocab:
        vocab[""] = terms
    index.vocab_dict = vocab
    index.unique_token_ids_set = None
    return index


def index_bytes(index) -> int:
    """What a `bm25_index` holds beyond its (possibly shared) vocabulary."""
    if index is None:
        return 0
    return sum(index.scores[k].nbytes for k in ("data", "indices", "indptr")) + 400
