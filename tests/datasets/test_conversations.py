"""The conversational retrieval dataset generator and its two shipped datasets: deterministic and byte for
byte what the generator writes; well formed; with evidence that is the asking user's own, in time order,
and shaped like its question (one turn for a single fact, several for a multi, two sessions for "which
first", one day for "on the day I...", the named part of a month for a window); and paraphrases that
share no stemmed word with their evidence under an analysis the generator itself does not use."""

import collections
import json
import re
from datetime import datetime

import bm25s
import pytest
from bm25s.stopwords import STOPWORDS_EN_PLUS

from hms_resources.common.text import stemmer
from hms_resources.datasets.conversations import (
    DEFAULT_ARGS,
    DEFAULT_PATH,
    HARD_ARGS,
    HARD_PATH,
    QUESTION_CATEGORIES,
    generate_conversations,
    write_jsonl,
)
from hms_resources.datasets.retrieval_eval import load_dataset

MEMORY_KEYS = {"kind", "id", "user_id", "session_id", "created_at", "text", "speaker"}
QUESTION_KEYS = {"kind", "id", "user_id", "question", "evidence", "asked_at", "category"}
DATASETS = ["default", "hard", "small"]


def stemmed_words(text):
    """NLTK's English stop words (as bm25s ships them) and Snowball stems: how a stemming lexical
    retriever sees a text, and not the generator's own paraphrase check."""
    return set(bm25s.tokenize([text], stopwords=list(STOPWORDS_EN_PLUS), stemmer=stemmer(), return_ids=False, show_progress=False)[0])


def read(path):
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def moment(text):
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert value.tzinfo is not None, text
    return value


@pytest.fixture(scope="module")
def records():
    return {
        "default": read(DEFAULT_PATH),
        "hard": read(HARD_PATH),
        "small": generate_conversations(users=3, sessions_per_user=12, seed=5),
    }


def split(records):
    memories = [r for r in records if r["kind"] == "memory"]
    questions = [r for r in records if r["kind"] == "question"]
    return memories, questions


def with_evidence(records):
    """Each question with its evidence turns, looked up by (user, id)."""
    memories, questions = split(records)
    turns = {(m["user_id"], m["id"]): m for m in memories}
    return [(q, [turns[(q["user_id"], e)] for e in q["evidence"]]) for q in questions]


def test_the_same_seed_gives_the_same_records_and_another_seed_others():
    first = generate_conversations(users=2, sessions_per_user=8, seed=5)
    assert first == generate_conversations(users=2, sessions_per_user=8, seed=5)
    assert first != generate_conversations(users=2, sessions_per_user=8, seed=6)
    assert generate_conversations(users=2, sessions_per_user=8, seed=5, hard=True) != first


@pytest.mark.parametrize(("args", "path"), [(DEFAULT_ARGS, DEFAULT_PATH), (HARD_ARGS, HARD_PATH)], ids=["default", "hard"])
def test_the_shipped_files_are_byte_for_byte_what_the_generator_writes(args, path, tmp_path):
    write_jsonl(generate_conversations(**args), tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", DATASETS)
def test_records_are_well_formed_memories_first(name, records):
    kinds = [r["kind"] for r in records[name]]
    assert kinds == sorted(kinds)  # every "memory" line before every "question" line
    memories, questions = split(records[name])
    assert memories and questions
    for m in memories:
        assert set(m) == MEMORY_KEYS
        assert all(isinstance(m[k], str) and m[k] for k in MEMORY_KEYS)
        assert m["speaker"] in ("user", "assistant")
        moment(m["created_at"])
    last = collections.defaultdict(lambda: datetime.min.replace(tzinfo=moment(memories[0]["created_at"]).tzinfo))
    for m in memories:
        last[m["user_id"]] = max(last[m["user_id"]], moment(m["created_at"]))
    for q in questions:
        assert set(q) == QUESTION_KEYS
        assert q["category"] in QUESTION_CATEGORIES
        assert isinstance(q["question"], str) and q["question"].endswith("?")
        assert isinstance(q["evidence"], list) and q["evidence"] and all(isinstance(e, str) for e in q["evidence"])
        assert moment(q["asked_at"]) > last[q["user_id"]]
    assert len({q["id"] for q in questions}) == len(questions)


@pytest.mark.parametrize("name", DATASETS)
def test_memory_ids_are_unique_per_user_and_evidence_is_that_users_own(name, records):
    memories, questions = split(records[name])
    ids = collections.defaultdict(set)
    for m in memories:
        assert m["id"] not in ids[m["user_id"]], (m["user_id"], m["id"])
        ids[m["user_id"]].add(m["id"])
    assert len(ids) >= 3
    shared = set.intersection(*ids.values())
    assert shared  # the same ids under different users: retrieval must keep users apart
    for q in questions:
        assert len(set(q["evidence"])) == len(q["evidence"])
        assert set(q["evidence"]) <= ids[q["user_id"]], q


@pytest.mark.parametrize("name", DATASETS)
def test_evidence_is_in_time_order_and_includes_something_the_user_said(name, records):
    for q, turns in with_evidence(records[name]):
        times = [moment(t["created_at"]) for t in turns]
        assert times == sorted(times), q
        assert any(t["speaker"] == "user" for t in turns), q


@pytest.mark.parametrize("name", DATASETS)
def test_single_questions_rest_on_one_turn_and_multi_questions_on_several(name, records):
    sizes = collections.defaultdict(set)
    for q, turns in with_evidence(records[name]):
        sizes[q["category"]].add(len(turns))
    assert sizes["single"] == {1}
    assert min(sizes["multi"]) >= 2


@pytest.mark.parametrize("name", DATASETS)
def test_temporal_questions_point_at_the_sessions_and_days_they_name(name, records):
    """`Which did I mention first, A or B?` needs two sessions, `... on the day I ...?` one, and
    `... in early March?` only turns of sessions held from the 1st to the 10th of March."""
    seen = collections.Counter()
    parts = {"early": range(1, 11), "mid-": range(11, 21), "late": range(21, 32)}
    memories, _ = split(records[name])
    began = {}
    for m in memories:
        began.setdefault((m["user_id"], m["session_id"]), moment(m["created_at"]))
    for q, turns in with_evidence(records[name]):
        sessions = {t["session_id"] for t in turns}
        if re.search(r"first, .+ or .+\?$", q["question"]):
            assert len(sessions) == 2, q
            seen["order"] += 1
        if " on the day I " in q["question"]:
            assert len(sessions) == 1 and len(turns) >= 2, q
            seen["same day"] += 1
        window = re.search(r" in (early|mid-|late) ?([A-Z][a-z]+)\?$", q["question"])
        if window:
            part, month = window.groups()
            for t in turns:
                day = began[(t["user_id"], t["session_id"])]
                assert day.strftime("%B") == month and day.day in parts[part], (q["question"], t["session_id"], day)
            seen["window"] += 1
    if name == "hard":
        assert seen["order"] and seen["same day"] and seen["window"], seen


@pytest.mark.parametrize("name", ["default", "hard"])
def test_conversations_look_like_conversations(name, records):
    memories, _ = split(records[name])
    sessions = collections.defaultdict(list)
    for m in memories:
        assert 8 <= len(m["text"].split()) <= 45, m["text"]
        sessions[(m["user_id"], m["session_id"])].append(m)
    for turns in sessions.values():
        assert [t["speaker"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert 10 <= len(turns) <= 24
        times = [moment(t["created_at"]) for t in turns]
        assert times == sorted(times)
    per_user = collections.defaultdict(list)
    for (user, _), turns in sessions.items():
        per_user[user].append(moment(turns[0]["created_at"]))
    for starts in per_user.values():
        assert (max(starts) - min(starts)).days >= 21  # spread over several weeks
    texts = collections.Counter(m["text"] for m in memories)
    assert len(texts) >= 0.6 * len(memories)


def test_the_default_and_hard_datasets_have_the_intended_size_and_mix(records):
    memories, questions = split(records["default"])
    assert len({m["user_id"] for m in memories}) == 6
    assert 1500 <= len(memories) <= 2500
    assert 48 <= len(questions) <= 72
    assert set(q["category"] for q in questions) == set(QUESTION_CATEGORIES)
    memories, questions = split(records["hard"])
    per_user = collections.Counter(q["user_id"] for q in questions)
    assert len(per_user) == 6 and all(12 <= n <= 18 for n in per_user.values())
    assert len({m["session_id"] for m in memories}) == 6 * 40


def test_the_hard_categories_are_present_and_dominate_the_hard_set(records):
    for dataset in (records["hard"], generate_conversations(users=2, sessions_per_user=30, seed=3, hard=True)):
        _, questions = split(dataset)
        categories = collections.Counter(q["category"] for q in questions)
        assert all(categories[c] > 0 for c in ("multi", "temporal", "paraphrase"))
        assert 1 - categories["single"] / len(questions) >= 0.7
        assert any(len(q["evidence"]) >= 2 for q in questions if q["category"] == "multi")


@pytest.mark.parametrize("name", DATASETS)
def test_paraphrase_questions_share_no_stemmed_word_with_their_evidence(name, records):
    paraphrases = [(q, turns) for q, turns in with_evidence(records[name]) if q["category"] == "paraphrase"]
    assert paraphrases
    for q, turns in paraphrases:
        asked = stemmed_words(q["question"])
        assert asked
        for t in turns:
            assert not asked & stemmed_words(t["text"]), (q["question"], t["text"])


def test_the_shipped_datasets_load_with_the_evaluation_loader(records):
    for path, name in ((DEFAULT_PATH, "default"), (HARD_PATH, "hard")):
        dataset = load_dataset(path)
        memories, questions = split(records[name])
        assert len(dataset.memories) == len(memories) and len(dataset.questions) == len(questions)
        assert dataset.users == 6


def test_small_and_large_runs_work():
    assert split(generate_conversations(users=1, sessions_per_user=1, seed=1))[0]
    memories, _ = split(generate_conversations(users=1, sessions_per_user=300, seed=2))
    assert len({m["id"] for m in memories}) == len(memories) and memories[-1]["id"].startswith("s300-")
