"""Which levers of the context ranking move evidence recall, and how much: the reranker cross-validated
by user (conversation) on a dataset in `hms eval retrieval`'s format, refitted without one group of
features at a time (their columns zeroed, so the model cannot use them), and with packing by
probability alone instead of probability per token.

    python -m benchmarks.retrieval_ablation DATA.jsonl [--folds 5] [--budgets 512,1024,2048]

Prints one JSON object: recall per budget (and per category at the middle budget) for each variant.
The levers that change what is indexed (the speaker and previous turn in the embedded text, the
date line once per day) need a re-materialized home and are measured by `hms eval retrieval` on
commits with and without them."""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace

import numpy as np

from benchmarks.common import print_json
from hms_jobs.homes import build_dataset_home
from hms_jobs.retrieval_harness import training_examples
from hms_resources.context.assembler import ContextAssembler
from hms_resources.context.reranker import FEATURES, QUESTION_WORDS, fit_reranker
from hms_resources.datasets.retrieval_eval import evidence_recall

GROUPS = {
    "lexical (both BM25 indexes)": ("lexical", "lexical_log", "lexical_rank", "context_lexical", "coverage", "fused_rank"),
    "context BM25 (turn with the one before)": ("context_lexical",),
    "dense": ("dense", "dense_gap", "dense_rank", "fused_rank"),
    "session neighbours": ("prev_dense", "next_dense", "prev_lexical", "next_lexical", "prev_question", "next_question"),
    "speaker named in the question": ("speaker_named", "other_speaker_named"),
    "time (mentions, when-questions, window)": ("mentions_time", "time_question", "time_question_mentions_time", "in_window", "has_window"),
    "question word": tuple(f"starts_{w}" for w in QUESTION_WORDS),
    "turn shape (length, is a question)": ("tokens_log", "is_question"),
    "session (its terms across turns, its best match)": ("session_coverage", "session_dense_gap", "session_lexical"),
    "closeness to the first hits": ("seed_dense",),
    "assistant reply": ("assistant_reply",),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--budgets", default="512,1024,2048")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    middle = budgets[len(budgets) // 2]
    with tempfile.TemporaryDirectory(prefix="hms-ablation-") as home:
        dataset, store, embedder, _ = build_dataset_home(args.data, home, log=lambda m: print(m, file=sys.stderr))
        assembler = ContextAssembler(event_store=store, embedder=embedder)
        examples = training_examples(assembler, dataset)
        users = sorted(examples)
        folds = [users[k :: args.folds] for k in range(args.folds)]

        def fitted(dropped: tuple[str, ...], cost_exponent: float = 1.0) -> dict[str, object]:
            columns = [FEATURES.index(name) for name in dropped]
            per_user = {}
            for held_out in folds:
                train = [examples[u] for u in users if u not in held_out]
                features = np.vstack([x for x, _ in train])
                features[:, columns] = 0.0
                reranker = fit_reranker(features, np.concatenate([y for _, y in train]), cost_exponent=cost_exponent)
                per_user.update({u: reranker for u in held_out})
            return per_user

        def measure(per_user: dict[str, object]) -> dict[str, object]:
            recall = {b: [] for b in budgets}
            by_category: dict[str, list[float]] = {}
            for question in dataset.questions:
                if question.user_id not in per_user:
                    continue
                assembler.use_reranker(per_user[question.user_id])
                for budget in budgets:
                    context = assembler.assemble(question.user_id, question.question, budget, now=question.asked_at)
                    value = evidence_recall(question.evidence, context.source_ids)
                    recall[budget].append(value)
                    if budget == middle:
                        by_category.setdefault(question.category, []).append(value)
            return {
                "recall": {str(b): round(float(np.mean(v)), 4) for b, v in recall.items()},
                f"recall_by_category@{middle}": {c: round(float(np.mean(v)), 4) for c, v in sorted(by_category.items())},
            }

        variants: dict[str, dict[str, object]] = {"all features": measure(fitted(()))}
        for name, dropped in GROUPS.items():
            variants[f"without {name}"] = measure(fitted(dropped))
            print(f"{name}: {variants[f'without {name}']['recall']}", file=sys.stderr)
        variants["packing by probability alone (not per token)"] = measure(
            {u: replace(r, cost_exponent=0.0) for u, r in fitted(()).items()}
        )
        assembler.close()
        store.close()
    print_json({"data": args.data, "folds": args.folds, "questions": len(dataset.questions), "variants": variants})


if __name__ == "__main__":
    main()
