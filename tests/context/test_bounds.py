"""Bounded work per context call (issue 28): a user with hundreds of large memories not yet indexed,
or a very long query, costs one call a fixed amount of work, counted in `Context.work`, never work
that grows with what the user wrote; normal users' contexts are unchanged. Real store, real tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hms_resources.common.tokens import TokenCounter
from hms_resources.context.assembler import ContextAssembler
from hms_resources.context.assembly import first_terms, read_query
from hms_resources.context.index import MemoryRows, build_user_index
from hms_resources.context.bounds import FRESH_TOKENIZED_CHARS, MAX_FRESH, MAX_QUERY_TERMS, fitting_tokens, word_floor
from hms_resources.context.retrieval import Candidate, Packing, pack_context
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created

LARGE = 600
"""Unindexed memories of ~16.7 KB for one user: the issue's 6,000 at a tenth of the scale."""


def filler(rng: random.Random, size: int = 16_700) -> str:
    words = [f"w{rng.randrange(3000)}" for _ in range(size // 6)] + ["cello", "recital"]
    return " ".join(words)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    """The base LLM's tokenizer, converted once for the module: the directory of its `tokenizer.json`."""
    cache = tmp_path_factory.mktemp("tokenizers")
    TokenCounter(cache_dir=cache)
    return next(cache.glob("*/tokenizer.json")).parent


@pytest.fixture(scope="module")
def tokens(tokenizer: Path) -> TokenCounter:
    return TokenCounter(str(tokenizer))


@pytest.fixture(scope="module")
def large_user(tmp_path_factory, tokenizer):
    """A home where `big` wrote `LARGE` memories of ~16.7 KB that no run has indexed, then one short
    one; no online indexer, so every call ranks them apart (the issue's state until a merge)."""
    home = tmp_path_factory.mktemp("large-home")
    store = EventStore(hms_home=str(home))
    rng = random.Random(28)
    records = [created("big", f"m{i:04d}", filler(rng), minutes=i) for i in range(LARGE)]
    records.append(created("big", "short", "The cello recital is on Friday at the community hall.", minutes=LARGE + 1))
    ingest_records(store, records)
    resource = ContextAssembler(event_store=store, embedder=Embedder(), tokenizer=str(tokenizer), online_index=False)
    yield resource
    resource.close()
    store.close()


def test_a_call_ranks_at_most_max_fresh_unmerged_memories_and_tokenizes_none_that_cannot_fit(large_user):
    context = large_user.assemble("big", "When is the cello recital?", 1024)
    assert context.work["fresh_unmerged"] == LARGE + 1
    assert context.work["fresh_ranked"] == MAX_FRESH
    assert context.work["fresh_chars_tokenized"] < 200, "only the short memory is tokenized: the others hold more words than the budget"
    assert context.items and context.items[0].source_ids == ["short"], "the memory just written is still found"
    assert context.token_count <= 1024


def test_a_large_budget_tokenizes_at_most_a_fixed_number_of_characters(large_user):
    context = large_user.assemble("big", "cello recital " * 50, 32_768, deep=True)
    assert context.work["fresh_ranked"] == MAX_FRESH
    assert 0 < context.work["fresh_chars_tokenized"] <= FRESH_TOKENIZED_CHARS
    assert context.token_count <= 32_768
    assert "short" in context.source_ids


def test_search_counts_the_tokens_of_the_unmerged_memories_it_returns(large_user):
    found = large_user.search("big", "When is the cello recital?", 3)
    assert [i.memory_id for i in found][:1] == ["short"]
    assert all(i.tokens > 0 for i in found)
    assert found[0].tokens == large_user.tokens.count([found[0].text])[0] + 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200))
def test_a_text_has_at_least_as_many_tokens_as_words(tokens, text):
    assert tokens.count([text])[0] >= word_floor(text)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 400), st.floats(0.01, 1.0), st.integers(0, 3)), min_size=1, max_size=12),
    st.integers(1, 300),
)
def test_packing_with_counts_only_of_what_may_fit_equals_packing_with_every_count(tokens, memories, budget):
    """`fitting_tokens` leaves uncounted what cannot fit: the packed context is the same as with exact counts."""
    rng = random.Random(len(memories) * budget)
    texts = [" ".join(rng.choice(["cello", "a", "recital", "x" * rng.randrange(1, 30), "9"]) for _ in range(words))
             for words, _, _ in memories]
    exact = tokens.count(texts) + 1
    bounded, _ = fitting_tokens(texts, list(range(len(texts))), budget, tokens.count)
    assert all(b == e for b, e in zip(bounded, exact) if e <= budget)

    def packed(counts: np.ndarray) -> list[tuple[str, int]]:
        candidates = [
            Candidate("memory", f"m{i}", text, int(count), score, "hot", [f"m{i}"], f"2026-03-0{day + 1}T00:00:00Z", hash(text))
            for i, (text, count, (_, score, day)) in enumerate(zip(texts, counts, memories))
        ]
        return [(c.memory_id, c.tokens) for c in pack_context(candidates, candidates[:2], budget, 0.2, Packing(3, 1.0))]

    assert packed(bounded) == packed(exact)


def test_a_query_ranks_by_at_most_max_query_terms_distinct_terms():
    many = " ".join(f"topic{i}" for i in range(1_000))
    assert len(set(read_query(many, None).tokens)) == MAX_QUERY_TERMS
    normal = read_query("What did my sister say about the cello recital and the cello teacher?", None)
    assert normal.tokens == first_terms(normal.tokens) and normal.tokens.count("cello") == 2
    assert first_terms(["a", "b", "a", "c", "b"], 2) == ["a", "b", "a"]


def test_a_merged_index_keeps_the_token_counts_of_unchanged_memories(tokens):
    """The online indexer rebuilds a user's index on each merge: the memories already counted are
    not tokenized again (a large user's candidates would cost seconds after every write)."""
    tokenized: list[str] = []

    def count(texts: list[str]) -> np.ndarray:
        tokenized.extend(texts)
        return tokens.count(texts)

    def rows(contents: dict[str, str]) -> MemoryRows:
        ids = sorted(contents)
        n = len(ids)
        return MemoryRows(ids, [contents[m] for m in ids], [None] * n, ["2026-03-01T00:00:00Z"] * n, [None] * n, [None] * n, ["hot"] * n, [None] * n)

    def vectors(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(ids), 1), dtype=np.float16), np.zeros(len(ids), dtype=bool)

    rng = random.Random(3)
    contents = {f"m{i}": filler(rng, 2_000) for i in range(5)}
    first = build_user_index("u", rows(contents), count_tokens=count, vector_of=vectors)
    first.tokens.fill([0, 1, 2])
    first.dedup.fill([0, 1, 2])
    counted = list(first.tokens.values[:3])
    tokenized.clear()
    merged = build_user_index("u", rows({**contents, "m1": "changed text", "m9": "a new memory"}), count_tokens=count,
                              vector_of=vectors, previous=first)
    assert list(merged.tokens.known) == [True, False, True, False, False, False]
    assert [merged.tokens[r] for r in (0, 2)] == [counted[0], counted[2]] and merged.dedup.known[0]
    assert tokenized == []
    merged.tokens.fill(np.arange(len(merged)))
    assert sorted(tokenized) == sorted([contents["m3"], contents["m4"], "changed text", "a new memory"])
