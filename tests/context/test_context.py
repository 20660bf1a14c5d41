"""The context resource on real assets: budgets, isolation, freshness, access recording, bad input."""

from __future__ import annotations

import json

import pytest

from hms_jobs.homes import materialize_for_context
from hms_resources.common.sharding import user_shard
from hms_resources.context.assembler import MAX_QUERY_CHARS, ContextAssembler
from hms_resources.context.cache import SnapshotCache
from hms_resources.context.residency import UserNotServed
from hms_resources.memory.writes import MemoryWriter, NewMemory
from hms_resources.context.snapshot import SOURCES, load_user, user_sources
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ACCESSED, accesses_of
from hms_resources.store.ingest import ingest_records
from hms_resources.store.projection import refresh_memories
from tests.helpers import created, event

FACTS = {
    "ana": [
        ("m1", "My sister Ana flies in from Porto on Friday evening."),
        ("m2", "I booked a table at the Thai place on Rua Augusta for Saturday."),
        ("m3", "Work is busy: the Lisbon data migration is due at the end of the month."),
        ("m4", "I have been learning to play the cello for two years now."),
        ("m5", "My cello teacher says I should practise scales every morning."),
        ("m6", "The cello recital is on the 14th at the community hall."),
        ("m7", "I am allergic to peanuts, so please never suggest satay."),
        ("m8", "Our dog Biscuit needs his vaccination next week."),
    ],
    "ben": [
        ("m1", "I am training for the Berlin marathon in September."),
        ("m2", "My knee hurts after long runs, the physio said to rest it."),
        ("m3", "I work as a nurse on night shifts at the Charite."),
        ("m4", "My partner Jonas loves cooking Georgian food."),
    ],
}


def conversation_events() -> list[dict]:
    records = []
    for user, facts in FACTS.items():
        for minute, (memory_id, text) in enumerate(facts):
            records.append(created(user, memory_id, text, minutes=minute * 60, session_id=f"{user}-s{minute // 3}",
                                   memory_type="conversation_turn", created_by="user"))
    return records


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def materialized_store(store: EventStore, embedder: Embedder) -> EventStore:
    ingest_records(store, conversation_events())
    materialize_for_context(store, embedder, log=lambda _m: None)
    return store


@pytest.fixture
def assembler(store: EventStore, embedder: Embedder):
    materialized_store(store, embedder)
    resource = ContextAssembler(event_store=store, embedder=embedder)
    yield resource
    resource.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, embedder):
    """One materialized home for the tests that only read."""
    store = EventStore(hms_home=str(tmp_path_factory.mktemp("context-home")))
    materialized_store(store, embedder)
    resource = ContextAssembler(event_store=store, embedder=embedder)
    yield resource
    resource.close()
    store.close()


@pytest.mark.parametrize("budget", [1, 12, 40, 100, 1024])
def test_items_never_exceed_the_budget_in_the_base_llm_tokenizer(shared, budget):
    context = shared.assemble("ana", "When does my sister arrive and where are we eating?", budget)
    assert context.token_count <= budget
    assert shared.tokens.count_one(context.to_prompt()) <= budget
    days = set()
    for item in sorted(context.items, key=lambda i: (i.created_at, i.memory_id)):
        line = shared.tokens.count_one(item.text) + 1
        assert item.tokens in (line, line + shared.header_tokens)
        days.add(item.created_at[:10])
    assert context.token_count == sum(shared.tokens.count_one(i.text) + 1 for i in context.items) + len(days) * shared.header_tokens
    assert shared.tokens.name == "SmolLM2-135M-Instruct"


def test_the_prompt_shows_each_day_once_above_its_memories(shared):
    context = shared.assemble("ana", "cello teacher, recital and my sister's visit", 2048)
    lines = context.to_prompt().splitlines()
    headers = [line for line in lines if line.startswith("[") and line.endswith("]")]
    assert headers == sorted(set(headers)) and headers
    assert all(not line.startswith("[20") for line in lines if line not in headers)


def test_the_evidence_ranks_first_for_lexical_and_paraphrased_questions(shared):
    lexical = shared.assemble("ana", "When is the cello recital?", 60)
    assert "m6" in lexical.source_ids
    paraphrase = shared.assemble("ana", "Which foods could give me a dangerous reaction?", 60)
    assert "m7" in paraphrase.source_ids
    top = shared.assemble("ana", "What vaccination does Biscuit need?", 60)
    assert (top.items[0].kind, top.items[0].source_ids) == ("memory", ["m8"])
    assert top.items[0].score == max(i.score for i in top.items)
    full = shared.assemble("ana", "What vaccination does Biscuit need?", 1024)
    assert not [i for i in full.items if i.kind == "recent"], "no budget is reserved for recent memories unasked"
    assert full.items[0].source_ids == ["m8"]
    latest = shared.assemble("ana", "What did I mention most recently?", 1024)
    assert [i.source_ids for i in latest.items if i.kind == "recent"] == [["m8"], ["m7"], ["m6"]]


def test_a_user_only_ever_gets_their_own_memories(shared):
    ana_texts = {text for _, text in FACTS["ana"]}
    for query in ("marathon knee physio nurse", "Jonas Georgian cooking", "", "cello"):
        context = shared.assemble("ben", query, 2048)
        assert context.items
        for item in context.items:
            assert not any(text in item.text for text in ana_texts)
        assert set(context.source_ids) <= {m for m, _ in FACTS["ben"]}


def test_summary_items_list_only_the_members_their_text_carries(shared):
    context = shared.assemble("ana", "cello lessons, teacher and recital", 2048)
    texts = dict(FACTS["ana"])
    summaries = [i for i in context.items if i.kind == "concept_summary"]
    for item in summaries:
        assert len(item.source_ids) >= 2
        for memory_id in item.source_ids:
            assert " ".join(texts[memory_id].split()) in item.text
    memory_ids = [s for i in context.items for s in i.source_ids]
    assert len(memory_ids) == len(set(memory_ids))


def test_an_unknown_user_gets_an_empty_context(shared):
    context = shared.assemble("nobody", "anything at all", 512)
    assert context.items == [] and context.token_count == 0 and context.to_prompt() == ""
    assert context.adapter is None


def test_an_empty_query_returns_recent_and_important_memories(shared):
    context = shared.assemble("ana", "   ", 1024)
    kinds = {i.kind for i in context.items}
    assert "recent" in kinds and "memory" in kinds
    recent = [i for i in context.items if i.kind == "recent"]
    assert recent[0].source_ids == ["m8"]


@pytest.mark.parametrize("budget", [0, -3, 1.5, True, "100"])
def test_a_budget_below_one_or_not_an_integer_is_refused(shared, budget):
    with pytest.raises(ValueError, match="token_budget"):
        shared.assemble("ana", "cello", budget)


def test_a_very_long_query_is_answered_from_its_first_characters_only(shared):
    head = "Tell me about my cello practice. " * 100
    query = head + "peanut satay allergy, dog vaccination. " * 20_000
    asked = "2026-03-02T00:00:00Z"
    context = shared.assemble("ana", query, 256, now=asked)
    assert "m5" in context.source_ids or "m4" in context.source_ids
    cut = shared.assemble("ana", query[:MAX_QUERY_CHARS], 256, now=asked)
    assert len(head) > MAX_QUERY_CHARS
    assert [(i.source_ids, i.score) for i in context.items] == [(i.source_ids, i.score) for i in cut.items]


def test_memories_ingested_after_the_last_materialization_are_found(assembler):
    store = assembler.event_store
    assembler.assemble("ana", "warm up", 64)
    assembler.note_written(ingest_records(store, [created("ana", "m9", "The plumber comes on Tuesday to fix the boiler.", minutes=9 * 60,
                                   memory_type="conversation_turn", created_by="user")]).last_sequence)
    context = assembler.assemble("ana", "When is the plumber coming for the boiler?", 256)
    fresh = [i for i in context.items if i.source_ids == ["m9"]]
    assert fresh and fresh[0].text.endswith("The plumber comes on Tuesday to fix the boiler.")
    assert "ben" not in {s for i in context.items for s in i.source_ids}


def test_a_memory_written_since_the_materialization_ranks_as_it_will_after_it(assembler, embedder):
    """The online indexer embeds a fresh memory and merges it into the index with no Dagster run: a
    paraphrase finds it first, with the reranker's score, and the next materialization changes neither
    the order nor the scores."""
    store = assembler.event_store
    assembler.assemble("ana", "warm up", 64)
    report = ingest_records(store, [created("ana", "m9", "My sister Lena moved to Lisbon for a job at a bakery.", minutes=9 * 60,
                                            memory_type="conversation_turn", created_by="user")])
    assembler.note_written(report.last_sequence)
    assert assembler.settle(120.0), "the online indexer merged the write"
    query = "What job did my sibling take?"
    fresh = assembler.search("ana", query, 5)
    assert fresh[0].memory_id == "m9" and fresh[0].kind == "memory", "found by meaning, ranked by the reranker"
    assert assembler.user_index("ana").has_vector[assembler.user_index("ana").row_of["m9"]]
    context = assembler.assemble("ana", query, 256)
    assert context.items[0].source_ids == ["m9"] and context.items[0].kind == "memory"
    materialize_for_context(store, embedder, log=lambda _m: None)
    assert assembler.refresh() is True
    after = assembler.search("ana", query, 5)
    assert [i.memory_id for i in after] == [i.memory_id for i in fresh]
    assert [i.score for i in after] == pytest.approx([i.score for i in fresh], abs=1e-4)
    assert [i.source_ids for i in assembler.assemble("ana", query, 256).items] == [i.source_ids for i in context.items]


def test_captured_assistant_replies_never_outrank_the_fact_a_user_stated(assembler):
    """Three captured exchanges of assistant filler, stored after a stated fact: merged online and ranked
    by the reranker, the fact ranks above every reply (and below nothing but the user's own questions,
    their words too), for a user no run has indexed yet: their whole index is the online one."""
    from hms_resources.memory.exchange import Exchange

    assembler.assemble("cleo", "warm up", 64)
    writer = MemoryWriter(assembler.event_store, on_written=lambda result: assembler.note_written(result.last_sequence))
    try:
        writer.add_memories([NewMemory("e-fact", "cleo", "m-fact", {"content": "Maya is allergic to peanuts."})])
        for n, question in enumerate(("Can you remind me about the allergy thing?", "What did I say about allergies?", "Allergy?")):
            writer.capture_exchange(Exchange("cleo", f"call-{n}", question, "I'm not sure what you're looking for; could you tell me more?"))
    finally:
        writer.close()
    assert assembler.settle(120.0)
    for query in ("What is Maya allergic to?", "Is Maya allergic to anything?"):
        found = assembler.search("cleo", query, 10)
        replies = [i for i in found if i.memory_id.endswith("-assistant")]
        ranked = [i.memory_id for i in found if not i.memory_id.endswith("-user")]
        assert ranked[0] == "m-fact", [(i.memory_id, i.score) for i in found]
        fact = next(i for i in found if i.memory_id == "m-fact")
        assert all(fact.score > r.score for r in replies), [(i.memory_id, i.score) for i in found]


def test_a_memory_forgotten_after_the_last_materialization_is_never_returned(assembler):
    store = assembler.event_store
    assert "m7" in assembler.assemble("ana", "peanut allergy satay", 256).source_ids
    assembler.note_written(ingest_records(store, [event("forgotten", "ana", "m7", minutes=600)]).last_sequence)
    for query in ("peanut allergy satay", ""):
        assert "m7" not in assembler.assemble("ana", query, 2048).source_ids
    assembler.note_written(ingest_records(store, [event("updated", "ana", "m2", minutes=601, content="We moved the dinner to the Nepali place.")]).last_sequence)
    moved = assembler.assemble("ana", "Where is dinner on Saturday? Nepali place", 2048)
    texts = [i.text for i in moved.items if "m2" in i.source_ids]
    assert texts and not any("Thai place" in i.text for i in moved.items)
    assert texts[0].endswith("user: We moved the dinner to the Nepali place."), "an edited turn keeps its speaker"


def test_a_memory_archived_after_the_last_materialization_is_not_returned_even_once_edited(assembler):
    store = assembler.event_store
    assert "m8" in assembler.assemble("ana", "Biscuit vaccination", 256).source_ids
    assembler.note_written(ingest_records(store, [event("archived", "ana", "m8", minutes=600, reason="done")]).last_sequence)
    assert "m8" not in assembler.assemble("ana", "Biscuit vaccination", 2048).source_ids
    assembler.note_written(ingest_records(store, [event("updated", "ana", "m8", minutes=601, content="Biscuit had his vaccination.")]).last_sequence)
    for query in ("Biscuit vaccination", ""):
        assert "m8" not in assembler.assemble("ana", query, 2048).source_ids


def test_the_resource_only_reads_and_what_it_returned_counts_as_accessed_through_the_door(assembler):
    store = assembler.event_store
    before = store.max_sequence()
    context = assembler.assemble("ana", "What is my dog called?", 128)
    assert store.max_sequence() == before, "assembling a context appends nothing"
    writer = MemoryWriter(store)
    writer.record_accesses("ana", context.source_ids, context.query)
    writer.close()
    stored = [e for e in store.read_events() if e.type == MEMORY_ACCESSED]
    assert len(stored) == 1, "one event for the whole context"
    accessed = [(a.user_id, a.memory_id) for a in accesses_of(stored[0])]
    assert sorted(m for _, m in accessed) == sorted(set(context.source_ids))
    assert {u for u, _ in accessed} == {"ana"}
    refresh_memories(store)
    counts = {m.memory_id: m.access_count for m in store.read_memories(user_id="ana")}
    assert all(counts[m] == 1 for m in context.source_ids)


def test_the_snapshot_cache_opens_once_loads_a_user_once_and_refuses_another_shards_users(shared):
    shards = next(n for n in range(2, 50) if user_shard("ana", n) != user_shard("ben", n))
    cache = SnapshotCache(shared.event_store, shared.embedder, lambda: shared.tokens, budget_bytes=2**30,
                          shard=user_shard("ana", shards), shards=shards)
    installed = []
    cache.when_installed(installed.append)
    assert cache.loaded_snapshot is None
    index = cache.user_index("ana")
    assert installed == [cache.snapshot] and cache.residents.loads == 1 and index.user_id == "ana"
    assert cache.user_index("ana") is index and cache.residents.loads == 1
    with pytest.raises(UserNotServed, match=f"user 'ben' belongs to shard {user_shard('ben', shards)} of {shards}"):
        cache.user_index("ben")
    assert cache.refresh() is False and installed == [cache.snapshot]


def test_a_user_is_loaded_with_the_fingerprints_a_new_snapshot_judges_it_by(shared):
    snapshot = shared.snapshot
    for user_id in FACTS:
        loaded = load_user(snapshot, shared.event_store, user_id, shared.tokens.count)
        assert set(loaded.sources) == set(SOURCES)
        assert loaded.sources == user_sources(snapshot, shared.event_store, user_id), "an unchanged user judged changed"


def test_a_new_materialization_is_picked_up_in_the_background_with_no_call(assembler, embedder):
    import time

    store = assembler.event_store
    before = assembler.snapshot
    assert assembler.refresh() is False
    assembler.cache.refresh_seconds = 0.2
    assembler.watch()
    ingest_records(store, [created("ben", "m5", "I adopted a grey cat called Pixel.", minutes=700,
                                   memory_type="conversation_turn", created_by="user")])
    materialize_for_context(store, embedder, log=lambda _m: None)
    deadline = time.monotonic() + 60
    while assembler.loaded_snapshot is before:
        assert time.monotonic() < deadline, "the watcher did not move to the new snapshot"
        time.sleep(0.1)
    settled = None
    while assembler.loaded_snapshot is not settled:  # it may first load a snapshot taken between two of the run's assets
        assert time.monotonic() < deadline, "the watcher did not settle on the newest snapshot"
        settled = assembler.loaded_snapshot
        time.sleep(1.0)
    assert assembler.refresh() is False, "already on the newest snapshot"
    context = assembler.assemble("ben", "Do I have any pets?", 256)
    pixel = [i for i in context.items if i.source_ids == ["m5"]]
    assert pixel and pixel[0].kind in ("memory", "recent") and "m5" in assembler.snapshot.users["ben"].row_of


def test_a_cold_memory_is_found_by_default_and_ranks_as_it_did_when_hot(store, embedder):
    """A tier is a cost, never a wall: the cold evidence turn is found without `deep`, at the rank and
    score it had before the tier job moved it."""
    import dagster as dg

    from hms_assets import domain_assets
    from hms_assets.tiers.partitions import all_shards_of_days
    from hms_resources.tiers.assignment import current_tiers

    materialized_store(store, embedder)
    texts = dict(FACTS["ana"])
    assembler = ContextAssembler(event_store=store, embedder=embedder)
    try:
        before = {m: assembler.search("ana", texts[m], 5) for m in texts}
    finally:
        assembler.close()
    assets = domain_assets(["memory_store", "semantic", "tiers"])
    small = {"hot_capacity": 2, "warm_capacity": 2, "use_predictor": "off"}
    with dg.DagsterInstance.ephemeral() as instance:
        day = store.event_time_range()[1][:10]
        result = dg.materialize(
            assets, selection=dg.AssetSelection.assets("memory_tiers", "tier_migrations"), tags=all_shards_of_days(day), instance=instance,
            resources={"event_store": store, "embedder": embedder},
            run_config={"ops": {"memory_tier_migration": {"config": small}}},
        )
        assert result.success
    cold = sorted(m for (u, m), t in current_tiers(store, "ana").items() if t == "cold")
    assert 0 < len(cold) < len(FACTS["ana"])
    assembler = ContextAssembler(event_store=store, embedder=embedder)
    try:
        for memory_id in cold:
            context = assembler.assemble("ana", texts[memory_id], 4096)
            found = [i for i in context.items if memory_id in i.source_ids]
            assert found and found[0].tier == "cold", "a cold memory is in the default context"
            after = assembler.search("ana", texts[memory_id], 5)
            assert [(i.memory_id, i.score) for i in after] == [(i.memory_id, i.score) for i in before[memory_id]]
            assert after[0].memory_id == memory_id and after[0].tier == "cold"
            deep = assembler.assemble("ana", texts[memory_id], 4096, deep=True)
            assert memory_id in deep.source_ids
    finally:
        assembler.close()


def test_a_question_about_a_time_gets_the_memories_from_then(tmp_path, embedder):
    """The same kind of fact told on three days: the window, the order and the anchor each pick one."""
    store = EventStore(hms_home=str(tmp_path))
    day = 24 * 60
    told = [
        ("d1", "Tonight I'm cooking a mushroom risotto for the two of us.", 2 * day),
        ("v1", "My brother Tom is visiting from Leeds next week.", 30 * day),
        ("d2", "Tonight I'm cooking a Thai green curry with tofu.", 30 * day + 40),
        ("d3", "Tonight I'm cooking lasagne with lots of basil.", 45 * day),
    ]
    fillers = [(f"f{i}", f"Filler chat number {i} about the weather and the bus.", 46 * day + i * day) for i in range(12)]
    ingest_records(store, [
        created("cara", memory_id, text, minutes=minutes, session_id=f"s{int(minutes // day)}",
                memory_type="conversation_turn", created_by="user")
        for memory_id, text, minutes in told + fillers
    ])
    materialize_for_context(store, embedder, log=lambda _m: None)
    assembler = ContextAssembler(event_store=store, embedder=embedder)
    asked = "2026-05-01T12:00:00Z"

    def best(question: str, budget: int = 40) -> str:
        """The one memory that fits a budget too small for a summary of all three dishes (or two of them)."""
        return ",".join(sorted(assembler.assemble("cara", question, budget, now=asked).source_ids))

    try:
        assert best("What was I cooking in early March?") == "d1"
        assert best("What was I cooking in mid-April?") == "d3"
        assert best("What was the first dish I told you I was cooking?") == "d1"
        assert best("What dish did I most recently say I was cooking?") == "d3"
        assert best("What was I cooking on the day I mentioned my brother's visit?", 48) == "d2,v1"
    finally:
        assembler.close()
        store.close()


def test_the_harness_reports_every_method_and_names_a_bad_line(tmp_path):
    from click.testing import CliRunner

    from hms_jobs.cli import main
    from hms_resources.datasets.conversations import generate_conversations, write_jsonl

    data = tmp_path / "small.jsonl"
    write_jsonl(generate_conversations(users=2, sessions_per_user=4, seed=5), data)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", "retrieval", str(data), "--budgets", "128,512", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    questions = sum(1 for line in data.read_text().splitlines() if '"question"' in line)
    assert report["questions"] == questions > 0
    assert set(report["methods"]) >= {"hms", "bm25", "dense"}
    for figures in report["methods"].values():
        assert set(figures["recall"]) == {"128", "512"}
        assert all(0.0 <= r <= 1.0 for r in figures["recall"].values())
        assert figures["recall"]["128"] <= figures["recall"]["512"]
        assert set(figures["latency_ms"]) >= {"p50", "p95", "p99"}
    assert report["methods"]["hms"]["recall"]["512"] > 0.5
    for method in ("hms", "bm25", "dense"):
        assert method in result.output

    bad = tmp_path / "bad.jsonl"
    lines = data.read_text().splitlines()
    lines.insert(3, '{"kind": "memory", "id": "x", "user_id": "u"}')
    bad.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["eval", "retrieval", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:4" in result.output
