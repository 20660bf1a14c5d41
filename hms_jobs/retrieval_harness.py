"""The retrieval-quality harness behind `hms eval retrieval`.

It builds a fresh HMS home from a dataset (`hms_jobs.homes`: its memories ingested as events, every
asset the context resource reads materialized through Dagster in-process), then asks each question
through the same `ContextAssembler` an application uses, and through BM25-only, dense-only and
BM25+dense (reciprocal rank fusion) baselines over the same indexed text, packed by rank to the same
budgets with the same tokenizer and date lines. With folds, the reranker is cross-validated by user
(conversation)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hms_jobs.homes import build_dataset_home
from hms_resources.common.text import lexical_tokens
from hms_resources.context.assembler import ContextAssembler
from hms_resources.context.reranker import Reranker, fit_reranker
from hms_resources.context.retrieval import pack_ranked, rank_dense, rank_hybrid, rank_lexical
from hms_resources.datasets.retrieval_eval import Dataset, evidence_recall, latency_summary, load_dataset, with_filler, write_dataset

DEFAULT_BUDGETS = (256, 512, 1024, 2048)
METHODS = ("hms", "bm25", "dense", "hybrid")


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call()
    return value, (time.perf_counter() - started) * 1e3


def training_examples(assembler: ContextAssembler, dataset: Dataset, *, progress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per user, the reranker's features of every question's candidates and whether each is evidence."""
    from tqdm import tqdm

    features: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    for question in tqdm(dataset.questions, desc="features", disable=not progress, unit="q"):
        index, ranking = assembler.rank(question.user_id, question.question, now=question.asked_at)
        if ranking is None or not len(ranking.rows):
            continue
        evidence = set(question.evidence)
        features.setdefault(question.user_id, []).append(ranking.features)
        labels.setdefault(question.user_id, []).append(np.array([index.memory_ids[r] in evidence for r in ranking.rows.tolist()], dtype=np.float64))
    return {user: (np.vstack(features[user]), np.concatenate(labels[user])) for user in features}


def fit_on(examples: dict[str, tuple[np.ndarray, np.ndarray]], users: Sequence[str], *, fitted_on: str) -> Reranker:
    chosen = [examples[u] for u in users if u in examples]
    if not chosen:
        raise ValueError("no question of these users has candidates to fit a reranker on")
    return fit_reranker(np.vstack([x for x, _ in chosen]), np.concatenate([y for _, y in chosen]), fitted_on=fitted_on)


def cross_validated_rerankers(assembler: ContextAssembler, dataset: Dataset, folds: int, *, progress: bool = False, log: Callable[[str], None] = print) -> dict[str, Reranker]:
    """For each user, a reranker fitted on the other folds' users only (users dealt round-robin in
    sorted order into `folds` folds), so every figure is measured on conversations it never saw."""
    users = sorted({m["user_id"] for m in dataset.memories})
    if not 2 <= folds <= len(users):
        raise ValueError(f"--folds must be between 2 and the number of users ({len(users)}), got {folds}")
    examples = training_examples(assembler, dataset, progress=progress)
    chosen: dict[str, Reranker] = {}
    for fold in range(folds):
        held_out = users[fold::folds]
        reranker = fit_on(examples, [u for u in users if u not in held_out], fitted_on=f"fold {fold + 1} of {folds}")
        chosen.update({u: reranker for u in held_out})
        log(f"fold {fold + 1}/{folds}: fitted on {len(users) - len(held_out)} users, evaluating {', '.join(held_out)}")
    return chosen


def evaluate(
    assembler: ContextAssembler,
    dataset: Dataset,
    budgets: Sequence[int],
    *,
    rerankers: dict[str, Reranker] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Recall and latency per method and budget over every question of `dataset`; `rerankers`: the
    reranker each user's questions are ranked with (cross-validation), else the assembler's own."""
    from tqdm import tqdm

    snapshot = assembler.snapshot
    embedder = assembler.embedder
    header = assembler.header_tokens
    recall = {m: {b: [] for b in budgets} for m in METHODS}
    latency: dict[str, list[float]] = {m: [] for m in METHODS}
    stages: dict[str, list[float]] = {}
    by_category: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    for question in dataset.questions[:3]:
        assembler.assemble(question.user_id, question.question, budgets[0], now=question.asked_at)
    for question in tqdm(dataset.questions, desc="questions", disable=not progress, unit="q"):
        index = snapshot.users.get(question.user_id)
        if rerankers is not None and question.user_id in rerankers:
            assembler.use_reranker(rerankers[question.user_id])
        for budget in budgets:
            context, ms = _timed(lambda: assembler.assemble(question.user_id, question.question, budget, now=question.asked_at))
            for stage, value in context.timings_ms.items():
                stages.setdefault(stage, []).append(value)
            results = {"hms": (context.source_ids, ms)}
            if index is not None:
                def similarities() -> np.ndarray:
                    return embedder.similarities(index.vectors, embedder.encode_query(question.question))

                baselines = {
                    "bm25": lambda: rank_lexical(index, lexical_tokens([question.question])[0]),
                    "dense": lambda: rank_dense(index, similarities()),
                    "hybrid": lambda: rank_hybrid(index, similarities(), lexical_tokens([question.question])[0]),
                }
                for method, rank in baselines.items():
                    items, ms = _timed(lambda: pack_ranked(index, rank(), budget, header))
                    results[method] = ([s for item in items for s in item.source_ids], ms)
            else:
                results.update({m: ([], 0.0) for m in METHODS if m != "hms"})
            for method, (source_ids, ms) in results.items():
                value = evidence_recall(question.evidence, source_ids)
                recall[method][budget].append(value)
                latency[method].append(ms)
                by_category[method].setdefault(f"{question.category}@{budget}", []).append(value)
    return {
        "questions": len(dataset.questions),
        "methods": {
            m: {
                "recall": {str(b): round(float(np.mean(v)), 4) if v else 0.0 for b, v in recall[m].items()},
                "latency_ms": latency_summary(latency[m]),
                "recall_by_category": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_category[m].items())},
            }
            for m in METHODS
        },
        "hms_stage_latency_ms": {stage: latency_summary(values) for stage, values in stages.items()},
    }


def _with_filler(path: str | Path, filler: int, home: str) -> Path:
    """`path`, or a copy with `filler` captured exchanges of assistant filler per user written into `home`."""
    if not filler:
        return Path(path)
    return write_dataset(with_filler(load_dataset(path), filler), Path(home) / "with-filler.jsonl")


def evaluate_retrieval(
    path: str | Path,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    *,
    tokenizer: str = "",
    folds: int = 0,
    filler: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole harness on a fresh temporary HMS home; returns the report `--json` writes. With
    `folds`, the reranker is fitted per fold on the other users' questions (cross-validation); with
    `filler`, each user also has that many captured exchanges of assistant filler (never evidence)."""
    if not budgets or any(b < 1 for b in budgets):
        raise ValueError(f"budgets must be positive integers, got {list(budgets)}")
    with tempfile.TemporaryDirectory(prefix="hms-eval-") as home:
        dataset, store, embedder, seconds = build_dataset_home(_with_filler(path, filler, home), Path(home) / "home", log=log)
        assembler = ContextAssembler(event_store=store, embedder=embedder, tokenizer=tokenizer)
        started = time.perf_counter()
        assembler.snapshot
        seconds["index_load"] = time.perf_counter() - started
        try:
            rerankers = cross_validated_rerankers(assembler, dataset, folds, progress=progress, log=log) if folds else None
            result = evaluate(assembler, dataset, budgets, rerankers=rerankers, progress=progress)
        finally:
            assembler.close()
            store.close()
    result["dataset"] = {"path": str(path), "memories": len(dataset.memories), "users": dataset.users, "filler_exchanges_per_user": filler}
    result["reranker"] = f"cross-validated, {folds} folds by user" if folds else (assembler.reranker or "shipped")
    result["tokenizer"] = assembler.tokens.name
    result["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return result


def fit_reranker_file(
    path: str | Path, out: str | Path, *, tokenizer: str = "", filler: int = 0, progress: bool = False, log: Callable[[str], None] = print
) -> Reranker:
    """Fit the reranker on every question of a dataset (with `filler` exchanges of assistant filler
    per user, as `evaluate_retrieval`) and write it to `out`."""
    with tempfile.TemporaryDirectory(prefix="hms-fit-") as home:
        dataset, store, embedder, _ = build_dataset_home(_with_filler(path, filler, home), Path(home) / "home", log=log)
        assembler = ContextAssembler(event_store=store, embedder=embedder, tokenizer=tokenizer)
        try:
            examples = training_examples(assembler, dataset, progress=progress)
            with_filler_note = f", {filler} filler exchanges per user" if filler else ""
            reranker = fit_on(examples, sorted(examples), fitted_on=f"{Path(path).name}: {len(dataset.questions)} questions of {len(examples)} users{with_filler_note}")
        finally:
            assembler.close()
            store.close()
    reranker.save(out)
    log(f"wrote {out}")
    return reranker


def format_report(result: dict[str, Any]) -> str:
    budgets = list(next(iter(result["methods"].values()))["recall"])
    lines = [
        f"{result['questions']} questions; evidence recall by token budget ({result.get('tokenizer', '')} tokens), "
        "and assemble latency",
        f"{'method':<8}" + "".join(f"{b:>8}" for b in budgets) + f"{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}",
    ]
    for method, figures in result["methods"].items():
        lines.append(
            f"{method:<8}"
            + "".join(f"{figures['recall'][b]:>8.3f}" for b in budgets)
            + "".join(f"{figures['latency_ms'][p]:>10.2f}" for p in ("p50", "p95", "p99"))
        )
    return "\n".join(lines)
