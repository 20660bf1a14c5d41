"""The learned reranker: a logistic model over features of each candidate memory, fitted on
conversations with known evidence (`hms eval fit-reranker`) and shipped as a small JSON file.

Candidates come from the BM25 and dense rankings, the query's time window and the session neighbours
of the best of them; each gets the features below, computed the same way online and when fitting.
The model's probability that a memory is evidence orders the packing, per token of the memory.
`weak_match` (no candidate holds most of the question's words: a paraphrase) lets the model lean on
the dense similarity and away from BM25 when the wording does not match."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import orjson

from hms_resources.common.files import write_bytes

QUESTION_WORDS = ("when", "what", "who", "where", "why", "how", "which", "would", "did", "does", "is")
FEATURES = (
    "lexical",
    "lexical_log",
    "lexical_rank",
    "context_lexical",
    "coverage",
    "dense",
    "dense_gap",
    "dense_rank",
    "fused_rank",
    "prev_dense",
    "next_dense",
    "prev_lexical",
    "next_lexical",
    "prev_question",
    "next_question",
    "speaker_named",
    "other_speaker_named",
    "tokens_log",
    "is_question",
    "mentions_time",
    "time_question",
    "time_question_mentions_time",
    "in_window",
    "has_window",
    "weak_match",
    "dense_gap_weak",
    "dense_rank_weak",
    "lexical_weak",
    "session_coverage",
    "session_dense_gap",
    "session_lexical",
    "seed_dense",
    "assistant_reply",
) + tuple(f"starts_{word}" for word in QUESTION_WORDS)
DEFAULT_FILE = "reranker.json"
ASSISTANT = "assistant"
"""The speaker of a captured reply of the model: the conversation's record, not a fact the user stated."""
_TIME_QUESTION = re.compile(r"\b(when|what (?:time|date|day|month|year)|how long|since|until)\b", re.I)


def is_time_question(query: str) -> bool:
    return bool(_TIME_QUESTION.search(query))


def question_word(query: str) -> str:
    words = query.lower().split()
    return words[0].strip("?,.!:;\"'") if words else ""


@dataclass
class QuerySignals:
    """What the features need to know about the query, computed once per query."""

    lexical: np.ndarray
    """BM25 score of every row (0 for ineligible rows)."""
    coverage: np.ndarray
    """Share of the query's distinct terms each row contains."""
    context_lexical: np.ndarray
    """BM25 score of every row read with the turn before it."""
    dense: np.ndarray
    """Cosine of every row with the query (0 without a vector)."""
    lexical_rank: dict[int, int]
    dense_rank: dict[int, int]
    pool: int
    named_speakers: set[int]
    time_question: bool
    window: np.ndarray | None
    has_window: bool
    starts: str = ""
    session_coverage: np.ndarray | None = None
    """Share of the query's distinct terms found in some turn of each session (by session number)."""
    seeds: np.ndarray | None = None
    """The best few rows of the first-stage rankings: a candidate close to them in meaning is likely
    another piece of the same answer (a multi-hop question's other evidence)."""


def candidate_features(index, rows: np.ndarray, signals: QuerySignals) -> np.ndarray:
    """One row of `FEATURES` per candidate row of `index` (a `UserIndex`)."""
    n = len(rows)
    lexical, dense = signals.lexical, signals.dense
    top_lexical = float(lexical.max()) if len(lexical) else 0.0
    top_dense = float(dense.max()) if len(dense) else 0.0
    lexical_norm = lexical / max(top_lexical, 1e-6)
    prev_rows, next_rows = index.prev_row[rows], index.next_row[rows]

    def around(values: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
        return np.where(neighbours >= 0, values[np.maximum(neighbours, 0)], 0.0)

    lexical_rank = np.array([signals.lexical_rank.get(r, signals.pool) for r in rows.tolist()], dtype=np.float64)
    dense_rank = np.array([signals.dense_rank.get(r, signals.pool) for r in rows.tolist()], dtype=np.float64)
    speaker = index.speaker_code[rows]
    named = np.isin(speaker, list(signals.named_speakers)) if signals.named_speakers else np.zeros(n, dtype=bool)
    mentions_time = index.mentions_time[rows].astype(np.float64)
    time_question = float(signals.time_question)
    columns = {
        "lexical": lexical_norm[rows],
        "lexical_log": np.log1p(lexical[rows]),
        "lexical_rank": np.log1p(lexical_rank),
        "context_lexical": signals.context_lexical[rows] / max(float(signals.context_lexical.max()), 1e-6),
        "coverage": signals.coverage[rows],
        "dense": dense[rows],
        "dense_gap": dense[rows] - top_dense,
        "dense_rank": np.log1p(dense_rank),
        "fused_rank": np.log(1.0 / (60.0 + lexical_rank) + 1.0 / (60.0 + dense_rank)),
        "prev_dense": around(dense, prev_rows),
        "next_dense": around(dense, next_rows),
        "prev_lexical": around(lexical_norm, prev_rows),
        "next_lexical": around(lexical_norm, next_rows),
        "prev_question": around(index.is_question.astype(np.float64), prev_rows),
        "next_question": around(index.is_question.astype(np.float64), next_rows),
        "speaker_named": named.astype(np.float64),
        "other_speaker_named": ((speaker >= 0) & ~named).astype(np.float64) * float(bool(signals.named_speakers)),
        "tokens_log": np.log(np.maximum(index.tokens[rows], 1)),
        "is_question": index.is_question[rows].astype(np.float64),
        "mentions_time": mentions_time,
        "time_question": np.full(n, time_question),
        "time_question_mentions_time": mentions_time * time_question,
        "in_window": signals.window[rows].astype(np.float64) if signals.window is not None else np.zeros(n),
        "has_window": np.full(n, float(signals.has_window)),
    }
    columns.update(_session_columns(index, rows, signals, lexical_norm, top_dense))
    columns["seed_dense"] = _seed_similarity(index, rows, signals.seeds)
    assistant = list(index.speakers).index(ASSISTANT) if ASSISTANT in index.speakers else -2
    columns["assistant_reply"] = (speaker == assistant).astype(np.float64)
    weak = 1.0 - float(columns["coverage"].max()) if n else 0.0
    columns["weak_match"] = np.full(n, weak)
    columns["dense_gap_weak"] = columns["dense_gap"] * weak
    columns["dense_rank_weak"] = columns["dense_rank"] * weak
    columns["lexical_weak"] = columns["lexical"] * weak
    for word in QUESTION_WORDS:
        columns[f"starts_{word}"] = np.full(n, float(signals.starts == word))
    return np.column_stack([columns[name] for name in FEATURES]) if n else np.zeros((0, len(FEATURES)))


def _session_columns(index, rows: np.ndarray, signals: QuerySignals, lexical_norm: np.ndarray, top_dense: float) -> dict[str, np.ndarray]:
    """What the candidate's whole session says about the query: the share of its terms found across
    the session's turns, and the session's best dense and lexical match. A memory outside a session
    is a session of its own, so it is neither lifted nor held back for having none."""
    n = len(rows)
    own = {"session_coverage": signals.coverage[rows].astype(np.float64), "session_dense_gap": signals.dense[rows] - top_dense,
           "session_lexical": lexical_norm[rows].astype(np.float64)}
    session = index.session_of[rows] if len(index.session_of) == len(index) else np.full(n, -1)
    inside = session >= 0
    if not index.sessions or not inside.any():
        return own
    where = np.maximum(session, 0)
    coverage = signals.session_coverage[where] if signals.session_coverage is not None else own["session_coverage"]
    return {
        "session_coverage": np.where(inside, coverage, own["session_coverage"]),
        "session_dense_gap": np.where(inside, index.session_best(signals.dense)[where] - top_dense, own["session_dense_gap"]),
        "session_lexical": np.where(inside, index.session_best(lexical_norm)[where], own["session_lexical"]),
    }


def _seed_similarity(index, rows: np.ndarray, seeds: np.ndarray | None) -> np.ndarray:
    """Mean cosine of each candidate with the seeds (0 without vectors)."""
    if seeds is None or not len(seeds) or not len(rows):
        return np.zeros(len(rows))
    seeds = seeds[index.has_vector[seeds]]
    if not len(seeds):
        return np.zeros(len(rows))
    similarity = index.vectors[rows].astype(np.float32) @ index.vectors[seeds].astype(np.float32).T
    return np.where(index.has_vector[rows], similarity.mean(axis=1), 0.0).astype(np.float64)


@dataclass(frozen=True)
class Reranker:
    """A logistic model over `FEATURES`, standardization folded into the weights."""

    weights: np.ndarray
    bias: float
    cost_exponent: float = 1.0
    """Packing order: probability / tokens ** cost_exponent, so short evidence is not crowded out."""
    fitted_on: str = ""

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "features": list(FEATURES),
                "weights": [round(float(w), 6) for w in self.weights],
                "bias": round(self.bias, 6),
                "cost_exponent": self.cost_exponent,
                "fitted_on": self.fitted_on,
            },
            option=orjson.OPT_INDENT_2,
        )

    def save(self, path: str | Path) -> Path:
        return write_bytes(Path(path), self.to_json() + b"\n")

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "Reranker":
        data = orjson.loads(raw)
        names = data.get("features")
        if names != list(FEATURES):
            missing = sorted(set(FEATURES) - set(names or []))
            raise ValueError(f"{where}: the reranker's features do not match this version of HMS (missing {missing})")
        return cls(np.asarray(data["weights"], dtype=np.float64), float(data["bias"]), float(data.get("cost_exponent", 1.0)), str(data.get("fitted_on", "")))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Reranker":
        """The reranker at `path`, or the one shipped with HMS."""
        if path:
            return cls.from_json(Path(path).read_bytes(), str(path))
        return cls.from_json(resources.files("hms_resources.context").joinpath(DEFAULT_FILE).read_bytes(), DEFAULT_FILE)


def fit_reranker(features: np.ndarray, labels: np.ndarray, *, cost_exponent: float = 1.0, fitted_on: str = "", c: float = 1.0) -> Reranker:
    """Logistic regression (scikit-learn) on standardized features, folded back to raw-feature weights."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(labels)) < 2:
        raise ValueError("fitting a reranker needs candidates that are evidence and candidates that are not")
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit((features - mean) / scale, labels)
    weights = model.coef_[0] / scale
    bias = float(model.intercept_[0] - np.sum(model.coef_[0] * mean / scale))
    return Reranker(weights, bias, cost_exponent, fitted_on)
