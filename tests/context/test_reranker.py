"""The learned reranker: its file, its fit, what its features see, and the harness that fits it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hms_jobs.homes import materialize_for_context
from hms_resources.context.assembler import ContextAssembler
from hms_resources.context.reranker import FEATURES, Reranker, fit_reranker
from hms_resources.semantic.embedder import Embedder
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created


def test_the_shipped_reranker_loads_and_a_file_round_trips(tmp_path):
    shipped = Reranker.load()
    assert shipped.weights.shape == (len(FEATURES),) and np.isfinite(shipped.weights).all()
    assert shipped.fitted_on
    path = shipped.save(tmp_path / "reranker.json")
    again = Reranker.load(path)
    features = np.random.default_rng(0).normal(size=(5, len(FEATURES)))
    np.testing.assert_allclose(again.probabilities(features), shipped.probabilities(features), atol=1e-5)


def test_a_reranker_of_other_features_is_refused_by_name(tmp_path):
    path = tmp_path / "old.json"
    data = json.loads(Reranker.load().to_json())
    data["features"] = data["features"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{path}.*missing \['lexical'\]"):
        Reranker.load(path)


def test_fitting_folds_the_standardization_into_the_weights():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, len(FEATURES))) * rng.uniform(0.1, 10, len(FEATURES)) + rng.normal(size=len(FEATURES))
    labels = (features[:, 0] + 0.1 * rng.normal(size=400) > np.median(features[:, 0])).astype(float)
    reranker = fit_reranker(features, labels)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(features, labels)
    np.testing.assert_allclose(reranker.probabilities(features), pipeline.predict_proba(features)[:, 1], atol=1e-4)
    assert reranker.weights[0] > 0
    with pytest.raises(ValueError, match="evidence and candidates that are not"):
        fit_reranker(features, np.zeros(400))


def conversation_home(store: EventStore, user_id: str, turns: list[tuple[str, str, str, str]]):
    """`turns` (id, speaker, text, session) a minute apart, materialized; a context resource over them."""
    ingest_records(store, [
        created(user_id, memory_id, text, minutes=i, session_id=session, memory_type="conversation_turn", created_by=speaker)
        for i, (memory_id, speaker, text, session) in enumerate(turns)
    ])
    embedder = Embedder()
    materialize_for_context(store, embedder, log=lambda _m: None)
    assembler = ContextAssembler(event_store=store, embedder=embedder)
    yield assembler
    assembler.close()
    store.close()


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory):
    """Two people tell much the same thing; the question names one of them."""
    store = EventStore(hms_home=str(tmp_path_factory.mktemp("speakers")))
    turns = [
        ("t1", "Maya", "We finally adopted a puppy last weekend, a little beagle."),
        ("t2", "Omar", "That's lovely! We adopted a puppy too, a beagle named Pip."),
        ("t3", "Maya", "How is Pip settling in?"),
        ("t4", "Omar", "Pip chews everything, but we love him."),
    ] + [(f"f{i}", "Maya" if i % 2 else "Omar", f"Weather chat {i}: rain again, the bus was late.") for i in range(10)]
    yield from conversation_home(store, "pair", [(m, speaker, text, "s1") for m, speaker, text in turns])


def test_the_speaker_a_question_names_ranks_first(two_speakers):
    index, ranking = two_speakers.rank("pair", "What kind of puppy did Maya adopt?")
    assert [index.memory_ids[r] for r in ranking.rows[:1]] == ["t1"]
    index, ranking = two_speakers.rank("pair", "What kind of puppy did Omar adopt?")
    assert [index.memory_ids[r] for r in ranking.rows[:1]] == ["t2"]
    named = ranking.features[:, FEATURES.index("speaker_named")]
    speakers = [index.speakers[index.speaker_code[r]] for r in ranking.rows.tolist()]
    assert all((n == 1.0) == (s == "Omar") for n, s in zip(named, speakers))


def test_the_harness_cross_validates_and_fits_a_reranker(tmp_path):
    from click.testing import CliRunner

    from hms_jobs.cli import main
    from hms_resources.datasets.conversations import generate_conversations, write_jsonl

    data = tmp_path / "three.jsonl"
    write_jsonl(generate_conversations(users=3, sessions_per_user=3, seed=7), data)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", "retrieval", str(data), "--budgets", "256", "--folds", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["reranker"] == "cross-validated, 3 folds by user"
    assert "fold 3/3" in result.output
    assert {"embed", "lexical", "rerank", "pack", "total"} <= set(report["hms_stage_latency_ms"])
    assert report["methods"]["hms"]["recall"]["256"] > 0.3

    fitted = tmp_path / "fitted.json"
    result = CliRunner().invoke(main, ["eval", "fit-reranker", str(data), "--out", str(fitted)])
    assert result.exit_code == 0, result.output
    assert Reranker.load(fitted).fitted_on.startswith("three.jsonl")

    result = CliRunner().invoke(main, ["eval", "retrieval", str(data), "--folds", "4"])
    assert result.exit_code == 2 and "--folds must be between 2 and the number of users (3)" in result.output


@pytest.fixture(scope="module")
def captured_chat(tmp_path_factory):
    """A stated fact, and three captured chat exchanges in which the model could not help."""
    store = EventStore(hms_home=str(tmp_path_factory.mktemp("captured")))
    turns = [
        ("fact", "Maya", "Maya is allergic to peanuts.", "s1"),
        ("other", "Maya", "Maya started a pottery class on Thursdays.", "s1"),
    ]
    for k, ask in enumerate(("What am I allergic to?", "Can you remind me what my allergy is?", "Am I allergic to anything?")):
        turns += [
            (f"ask{k}", "user", ask, f"chat{k}"),
            (f"reply{k}", "assistant", f"I'm not sure what you're allergic to; could you tell me more about your allergy? ({k})", f"chat{k}"),
        ]
    yield from conversation_home(store, "maya", turns)


def test_captured_assistant_replies_are_marked_and_do_not_outrank_a_stated_fact(captured_chat):
    index, ranking = captured_chat.rank("maya", "What is Maya allergic to?")
    ids = [index.memory_ids[r] for r in ranking.rows.tolist()]
    marked = ranking.features[:, FEATURES.index("assistant_reply")]
    assert all((m == 1.0) == i.startswith("reply") for m, i in zip(marked, ids))
    assert ids.index("fact") < min(ids.index(f"reply{k}") for k in range(3))


def test_session_features_see_the_query_words_across_a_sessions_turns():
    from hms_resources.context.index import MemoryRows, build_user_index

    contents = ["We drove to the coast on Saturday.", "The lighthouse there was beautiful.", "I bought new running shoes."]
    rows = MemoryRows(["a", "b", "c"], contents, ["s1", "s1", "s2"], [f"2024-01-0{d}T10:00:00+00:00" for d in (1, 1, 2)],
                      [None] * 3, [None] * 3, ["hot"] * 3, [None] * 3)
    index = build_user_index("u", rows, count_tokens=lambda texts: np.array([len(t.split()) for t in texts]),
                             vector_of=lambda ids: (np.zeros((len(ids), 4), dtype=np.float16), np.zeros(len(ids), dtype=bool)))
    assert index.sessions == 2 and index.session_of.tolist() == [0, 0, 1]
    _, coverage, in_session = index.term_matches(["coast", "lighthous"])
    assert coverage.tolist() == [0.5, 0.5, 0.0]
    assert in_session.tolist() == [1.0, 0.0]


def test_filler_exchanges_are_added_per_user_and_are_never_evidence(tmp_path):
    from hms_resources.datasets.conversations import generate_conversations, write_jsonl
    from hms_resources.datasets.retrieval_eval import load_dataset, with_filler, write_dataset

    data = tmp_path / "two.jsonl"
    write_jsonl(generate_conversations(users=2, sessions_per_user=2, seed=3), data)
    dataset = load_dataset(data)
    filled = load_dataset(write_dataset(with_filler(dataset, 3), tmp_path / "filled.jsonl"))
    added = [m for m in filled.memories if m["id"].startswith("filler-")]
    assert len(added) == 2 * 3 * 2 and {m["speaker"] for m in added} == {"user", "assistant"}
    assert all(m["id"] not in q.evidence for q in filled.questions for m in added)
    assert filled.questions == dataset.questions
    assert with_filler(dataset, 3).memories == with_filler(dataset, 3).memories
    with pytest.raises(ValueError, match="filler exchanges must be 0 or more"):
        with_filler(dataset, -1)
