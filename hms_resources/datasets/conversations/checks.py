"""The paraphrase check: a paraphrase question must share no content word with its evidence.

This is the dataset's own normaliser, not `hms_resources.common.text` (bm25s stop words, Snowball stems):
the shipped datasets were drawn with this one, and the common analysis accepts other paraphrases, so
switching would change which questions the same seed gives."""

from __future__ import annotations

import re

from hms_resources.datasets.conversations.data import PARAPHRASE_STOPWORDS


def content_words(text: str) -> set[str]:
    """Lowercase, strip punctuation, drop stopwords, strip a naive plural `s`."""
    words = set()
    for word in re.sub(r"[^\w\s]", "", text.lower()).split():
        if word in PARAPHRASE_STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s"):
            word = word[:-1]
        if word not in PARAPHRASE_STOPWORDS:
            words.add(word)
    return words


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly", "er"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _strict_words(text: str) -> set[str]:
    lowered = text.lower()
    words = content_words(text) | content_words(re.sub(r"[^\w\s]", " ", lowered))
    return {_stem(w) for w in words if len(w) > 1}


def shares_content_word(question: str, evidence: list[str]) -> bool:
    """Stricter than `content_words`: also catches words with a common stem or a 5-letter prefix."""
    asked = _strict_words(question)
    said: set[str] = set()
    for text in evidence:
        said |= _strict_words(text)
    for a in asked:
        for b in said:
            if a == b or (len(a) >= 5 and len(b) >= 5 and a[:5] == b[:5]):
                return True
    return False
