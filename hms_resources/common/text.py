"""Content words: the one analysis of text into words that ranking, curation and the datasets share.

bm25s's English stop words and PyStemmer's Snowball stems, so "hiking", "hikes" and "hiked" meet."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any


def lexical_tokens(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, stop-word-free, Snowball-stemmed words: the same analysis for memories and queries."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer(), return_ids=False, show_progress=False)


def content_words(text: str) -> set[str]:
    """The stemmed content words of one text."""
    return set(lexical_tokens([text])[0])


@cache
def stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")
