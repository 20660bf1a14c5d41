"""The most work one context call does, whatever a user holds or a caller sends: every stage of
assembly is bounded by a constant here, so a tenant's huge unindexed user or very long queries cost
each call a fixed amount, never one that grows with what they wrote (issue 28).

Token counts are what packing spends most on: a memory that cannot fit the budget is never
tokenized (`word_floor`: a text has at least as many tokens as words), and the unmerged memories a
call tokenizes are capped in number and characters (`fitting_tokens`)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import numpy as np

MAX_QUERY_CHARS = 2048
"""Longer queries are cut before embedding and lexical analysis; the encoder truncates further."""

MAX_QUERY_TERMS = 64
"""Distinct lexical terms of a query ranked by (first ones first): each term scans the user's BM25
postings, so a long query's terms past these add work and no normal question has as many."""

MAX_FRESH = 256
"""Memories changed too recently to be merged into the index that one call ranks apart: the newest.
The online indexer merges the rest within seconds; until then they are found by their index rows
(or not at all, for a memory just written)."""

FRESH_TERM_CHARS = 1024
"""Characters of an unmerged memory whose words are matched with the query's: with `MAX_FRESH`, at
most 256 KiB of text analysed per call."""

FRESH_TOKENIZED_CHARS = 256 * 1024
"""Characters of unmerged memories one call tokenizes at most, best first: past them a memory
counts as not fitting (only texts of many characters per word get there)."""


_UNSPOKEN = dict.fromkeys([*range(0x09), *range(0x0E, 0x20), 0x7F])
"""Control characters other than whitespace: some have no token of their own (the base LLM's drops
\x04, \x06, \x13, \x14, \x16 and \x1d), so they make no word."""


def word_floor(text: str) -> int:
    """A lower bound of `text`'s tokens in the base LLM's tokenizer (byte-level BPE, whose
    pre-tokenizer never joins characters across whitespace): its runs between ASCII whitespace,
    control characters left out, counted in C. A text with more words than the budget has tokens
    cannot fit, so it is never tokenized."""
    return len(text.translate(_UNSPOKEN).encode("utf-8", "surrogatepass").split())


def newest(created: Sequence[float], count: int) -> list[int]:
    """Positions of the `count` largest `created`, ties to the earlier position, in position order."""
    if len(created) <= count:
        return list(range(len(created)))
    return sorted(heapq.nlargest(count, range(len(created)), key=lambda i: (created[i], -i)))


def fitting_tokens(
    texts: Sequence[str],
    order: Sequence[int],
    budget: int,
    count: Callable[[list[str]], np.ndarray],
    *,
    most_chars: int = FRESH_TOKENIZED_CHARS,
) -> tuple[np.ndarray, int]:
    """Tokens of each text with its line break, exact for those that may fit `budget` and `budget + 1`
    (never packed) for the others: more words than the budget, or past `most_chars` characters of
    texts tokenized in `order` (the most wanted first). Returns the counts and the characters tokenized."""
    tokens = np.full(len(texts), budget + 1, dtype=np.int64)
    chosen: list[int] = []
    spent = 0
    for i in order:
        if word_floor(texts[i]) + 1 > budget or spent + len(texts[i]) > most_chars:
            continue
        chosen.append(i)
        spent += len(texts[i])
    if chosen:
        tokens[chosen] = count([texts[i] for i in chosen]) + 1
    return tokens, spent
