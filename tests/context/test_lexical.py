"""The fast BM25 build scores every term of every memory exactly as bm25s's own build does."""

from __future__ import annotations

import bm25s
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hms_resources.common.text import lexical_tokens
from hms_resources.context.lexical import analysed, bm25_index

WORDS = ["cello", "cellos", "recital", "the", "of", "Porto", "running", "runs", "ran", "a", "satay", "peanut", "2023", "x"]


def assert_same_scores(texts: list[str], previous: list[int] | None = None) -> None:
    tokens = lexical_tokens(texts)
    terms, vocab = analysed(texts)
    if previous is not None:
        tokens = [tokens[p] + tokens[i] if p >= 0 else tokens[i] for i, p in enumerate(previous)]
        terms = [terms[p] + terms[i] if p >= 0 else terms[i] for i, p in enumerate(previous)]
    expected = bm25s.BM25()
    expected.index(tokens, show_progress=False)
    built = bm25_index(terms, vocab)
    assert set(built.vocab_dict) == set(expected.vocab_dict)
    for term in expected.vocab_dict:
        if term:
            mine = built.get_scores_from_ids([built.vocab_dict[term]])
            theirs = expected.get_scores_from_ids([expected.vocab_dict[term]])
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), term
    query = lexical_tokens([" ".join(WORDS)])[0]
    mine, theirs = built.get_scores_from_ids(built.get_tokens_ids(query)), expected.get_scores_from_ids(expected.get_tokens_ids(query))
    assert np.array_equal(mine, theirs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join), min_size=1, max_size=40).filter(
    lambda texts: any(lexical_tokens(texts))
))
def test_the_fast_build_scores_as_bm25s_does(texts):
    assert_same_scores(texts)
    assert_same_scores(texts, previous=[-1] + list(range(len(texts) - 1)))


def test_a_memory_without_terms_scores_zero_and_an_empty_vocabulary_builds():
    assert_same_scores(["the of a", "Porto cello cello", "", "running to the recital"])
    empty = bm25_index([[], []], {})
    assert empty.get_tokens_ids(["cello"]) == [] and empty.scores["num_docs"] == 2
