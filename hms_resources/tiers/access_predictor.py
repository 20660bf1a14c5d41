"""Predictive tiering: a gradient-boosting model of whether a memory is accessed in the next 7 days,
judged against the heuristic score on later, held-out weeks.

Training rows come from weekly cutoffs: the importance features of every memory as of a cutoff, and
whether it was accessed in the week after. The last weeks are held out; on them both rankings are
scored by precision at hot capacity (per user, the share of the top-K memories that were accessed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from hms_resources.common.files import atomic_path
from hms_resources.semantic.concepts import Concept
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import MEMORY_ACCESSED, accesses_of
from hms_resources.tiers.importance import ImportanceConfig, ImportanceFeatures, score_importance
from hms_resources.tiers.replay import TierInputs, day_window, tier_inputs_by_day

HORIZON_DAYS = 7


def feature_matrix(features: ImportanceFeatures) -> np.ndarray:
    """The model's inputs: the raw importance features, a missing value as -1."""
    matrix = np.column_stack(
        [
            features.importance,
            features.confidence,
            features.age_days,
            features.decayed_accesses,
            features.relevant,
            features.irrelevant,
            features.relevance_mean,
            features.concept_size,
            features.concept_cohesion,
            features.pinned.astype(float),
        ]
    )
    return np.nan_to_num(matrix, nan=-1.0)


@dataclass
class WeekSample:
    inputs: TierInputs
    accessed_next_week: np.ndarray


@dataclass
class PredictorEvaluation:
    weeks_trained: int
    weeks_held_out: int
    rows: int
    positive_rate: float
    precision_model: float
    precision_heuristic: float
    k_per_user: str
    held_out_positives: int = 0

    MIN_MARGIN = 0.01
    MIN_HELD_OUT_POSITIVES = 30

    @property
    def model_wins(self) -> bool:
        """Only a clear win on enough held-out accesses switches the model on."""
        return (
            self.held_out_positives >= self.MIN_HELD_OUT_POSITIVES
            and self.precision_model >= self.precision_heuristic + self.MIN_MARGIN
        )


def weekly_samples(store: EventStore, concepts: list[Concept], config: ImportanceConfig, first: date, last: date) -> list[WeekSample]:
    accesses: dict[tuple[str, str], list[str]] = {}
    for stored in store.read_events():
        if stored.type == MEMORY_ACCESSED:
            for ev in accesses_of(stored):
                accesses.setdefault(ev.key, []).append(ev.occurred_at)
    cutoffs = []
    cutoff = first
    while cutoff + timedelta(days=HORIZON_DAYS) <= last:
        cutoffs.append(cutoff)
        cutoff += timedelta(days=HORIZON_DAYS)
    samples = []
    for inputs in tier_inputs_by_day(store, cutoffs, concepts, config):
        start = inputs.as_of
        end = day_window(inputs.day + timedelta(days=HORIZON_DAYS))[1]
        label = np.array([any(start < t <= end for t in accesses.get(m, ())) for m in inputs.keys], dtype=bool)
        if len(label):
            samples.append(WeekSample(inputs, label))
    return samples


def precision_at_k(user_ids: list[str], ranking: np.ndarray, label: np.ndarray, k_for: Callable[[int], int]) -> float:
    """Mean over users of the share of their top-k memories (by `ranking`) that were accessed."""
    users = np.array(user_ids)
    shares = []
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        k = k_for(len(rows))
        top = rows[np.argsort(-ranking[rows], kind="stable")[:k]]
        shares.append(label[top].mean())
    return float(np.mean(shares)) if shares else 0.0


def train_and_evaluate(
    samples: list[WeekSample], config: ImportanceConfig, hot_capacity: int, hot_fraction: float = 0.1, held_out_weeks: int = 2
):
    """Fit on all but the last `held_out_weeks` weeks, compare with the heuristic on those, then refit
    on every week. Returns (model or None, evaluation)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    k_for = lambda n: max(1, min(hot_capacity, int(np.ceil(n * hot_fraction))))  # noqa: E731
    k_text = f"min({hot_capacity}, ceil({hot_fraction} x memories)), at least 1"
    if len(samples) <= held_out_weeks:
        return None, PredictorEvaluation(0, 0, 0, 0.0, 0.0, 0.0, k_text)
    train, test = samples[:-held_out_weeks], samples[-held_out_weeks:]
    x_train = np.vstack([feature_matrix(s.inputs.features) for s in train])
    y_train = np.concatenate([s.accessed_next_week for s in train])
    if y_train.min() == y_train.max():
        return None, PredictorEvaluation(len(train), len(test), len(y_train), float(y_train.mean()), 0.0, 0.0, k_text)
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=0).fit(x_train, y_train)
    model_precision, heuristic_precision = [], []
    for sample in test:
        users = sample.inputs.user_ids
        probability = model.predict_proba(feature_matrix(sample.inputs.features))[:, 1]
        heuristic = score_importance(sample.inputs.features, config)
        model_precision.append(precision_at_k(users, probability, sample.accessed_next_week, k_for))
        heuristic_precision.append(precision_at_k(users, heuristic, sample.accessed_next_week, k_for))
    x_all = np.vstack([x_train] + [feature_matrix(s.inputs.features) for s in test])
    y_all = np.concatenate([y_train] + [s.accessed_next_week for s in test])
    final = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=0).fit(x_all, y_all)
    evaluation = PredictorEvaluation(
        weeks_trained=len(train),
        weeks_held_out=len(test),
        rows=len(y_all),
        positive_rate=round(float(y_all.mean()), 4),
        precision_model=round(float(np.mean(model_precision)), 4),
        precision_heuristic=round(float(np.mean(heuristic_precision)), 4),
        k_per_user=k_text,
        held_out_positives=int(sum(s.accessed_next_week.sum() for s in test)),
    )
    return final, evaluation


MODEL_FILE = "access_predictor.joblib"


def save_predictor(directory, model, evaluation: PredictorEvaluation) -> None:
    """The model and its evaluation, written atomically; `enabled` says whether it beat the heuristic."""
    import joblib

    with atomic_path(directory / MODEL_FILE) as partial:
        joblib.dump({"model": model, "evaluation": evaluation, "enabled": bool(model is not None and evaluation.model_wins)}, partial)


def load_predictor(directory, mode: str = "auto"):
    """A function from importance features to access probabilities, or None: with `auto`, only a
    model that beat the heuristic is used; `on` uses any trained model; `off` none."""
    import joblib

    path = directory / MODEL_FILE
    if mode == "off" or not path.exists():
        return None
    saved = joblib.load(path)
    if saved["model"] is None or (mode == "auto" and not saved["enabled"]):
        return None
    model = saved["model"]

    def predict(features: ImportanceFeatures) -> np.ndarray:
        """Probabilities as percentile ranks, so they blend with the score on the same scale."""
        probability = model.predict_proba(feature_matrix(features))[:, 1]
        order = np.argsort(probability, kind="stable")
        ranks = np.empty(len(probability))
        ranks[order] = np.arange(1, len(probability) + 1)
        return ranks / max(len(probability), 1)

    return predict
