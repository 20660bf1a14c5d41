"""Words: the one place text is cut into words. Ranking uses bm25s's English stop words and PyStemmer's
Snowball stems, so "hiking", "hikes" and "hiked" meet; curation keeps words as written, for prompts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

STOPWORDS = frozenset(
    """a an the and or but if of to in on at for with from by about into over after before up out as so than then
    too very just also not no i me my mine we us our you your he him his she her they them their it its this that
    these those there here what which who when where why how is am are was were be been being do does did have has
    had will would can could should may might must every each some any all more most other such own same only""".split()
)
"""Words too common to say what a memory is about (curation cues, fact-recall checks)."""


def lexical_tokens(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, stop-word-free, Snowball-stemmed words: the same analysis for memories and queries."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer(), return_ids=False, show_progress=False)


@cache
def stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def surface_words(text: str) -> list[str]:
    """The words of a text as written, lower-cased, without stop words or short words, in order: what a
    cue in a prompt or a recalled fact is checked against, where a stem would not read as a word."""
    return [w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if w not in STOPWORDS and len(w) > 2]


def is_unicode_text(value: str) -> bool:
    """Whether UTF-8 can carry `value`: JSON's `\ud800` escapes decode to lone surrogates, which no
    store, log or response can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
