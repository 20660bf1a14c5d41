"""Query encoding latency: `Embedder.encode_query` on the int8 ONNX model against the full-precision
torch model in the same run, in alternating passes over all questions, so the machine's noise hits
both alike and torch's spinning worker threads never overlap the ONNX calls. Also the vectors'
cosines, the retrieval of each question's own answer among all answers (encoded by torch, as
documents are) with either query vector, and the first query, which loads the torch model and exports.

Prints one JSON object. Goals: int8 p50 at most 4 ms on a 2-core machine, recall@1 within 1 point
of torch's."""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time

import numpy as np

from benchmarks.common import percentile, print_json
from hms_resources.semantic.embedder import Embedder

SUBJECTS = [
    "my sister's wedding", "the dentist appointment", "our trip to Lisbon", "the quarterly sales report",
    "my grandmother's lasagna recipe", "the new laptop for work", "Tom's birthday party", "the kitchen renovation",
    "my marathon training plan", "the rent increase", "the Spanish evening class", "our neighbour's noisy dog",
    "the car insurance renewal", "Mia's school play", "the cloud migration project", "my knee injury",
    "the book club meeting", "the tax return", "our anniversary dinner", "the garden shed",
    "the job interview at the bank", "my vegetarian diet", "the broken washing machine", "the team offsite in Porto",
    "my piano lessons",
]
PAIRS = [
    ("When exactly is {s} happening, and did I say I needed to bring anything along?",
     "{S} is on Saturday the 12th at ten in the morning; I need to bring the folder and a pen."),
    ("What did I tell you last week about {s} and why was I so worried about it?",
     "Last week I was anxious about {s} because everything seemed to be running two weeks late."),
    ("How much did {s} end up costing us in total, and was it worth the money?",
     "In the end {s} cost about 840 euros altogether, which felt expensive but worth it."),
    ("Who else is involved in {s}, and whom should I call if something goes wrong?",
     "Anna and her brother help with {s}; if anything breaks I should phone Anna first."),
    ("Where did I put my notes about {s} last time?",
     "I jotted my notes on {s} in the green notebook after Sunday's phone call."),
    ("Can you remind me what I finally decided about {s} after talking it over with my partner?",
     "After discussing it with my partner I decided to postpone {s} until next spring."),
    ("What was the main problem with {s} again?",
     "The recurring issue with {s} was that nobody agreed on who was responsible."),
    ("Did I ever finish everything I had planned for {s}, or is something still open?",
     "Most of {s} is done, but one last step is still open: booking the follow-up."),
    ("Which dates did I mention would not work for {s} because of my travel plans?",
     "Because of my travel, the weekends of May 3rd and May 17th do not work for {s}."),
    ("How did I feel after {s}, looking back on it?",
     "After {s} I felt relieved and happy, and I said I would gladly do it again."),
    ("What should I prepare before {s} so that I am not stressed on the day?",
     "Before {s} I should pack the night before and print the confirmation email."),
    ("Why did I say that {s} reminded me of my childhood in the countryside?",
     "{S} brought back memories of growing up on my grandparents' farm in the countryside."),
]


def questions_and_answers() -> tuple[list[str], list[str]]:
    """One question and its own answer for every (template, subject): 300 of each, 10 to 25 words."""
    questions, answers = [], []
    for (question, answer), subject in itertools.product(PAIRS, SUBJECTS):
        questions.append(question.format(s=subject))
        answers.append(answer.format(s=subject, S=subject[0].upper() + subject[1:]))
    return questions, answers


def ms(values: list[float], q: float) -> float:
    """The `q`th percentile of `values` in seconds, as milliseconds."""
    return percentile(values, q, digits=3, scale=1e3)


def recall(documents: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Share of questions whose own answer (same row) is among the k closest documents, in points."""
    scores = queries @ documents.T
    own = scores[np.arange(len(scores)), np.arange(len(scores))]
    rank = (scores > own[:, None]).sum(axis=1)
    return round(100 * float((rank < k).mean()), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over all questions")
    args = parser.parse_args()
    questions, answers = questions_and_answers()
    torch_embedder = Embedder(device="cpu", query_backend="torch")
    torch_embedder.load()
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        Embedder(device="cpu", cache_dir=cache).encode_query("warm up")
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        reloaded = Embedder(device="cpu", cache_dir=cache)
        reloaded.encode_query("warm up")
        load_seconds = time.perf_counter() - start

        for question in questions[:20]:
            torch_embedder.encode_query(question)
            reloaded.encode_query(question)
        timings: dict[str, list[float]] = {"torch": [], "onnx-int8": []}
        for _ in range(args.rounds):
            for name, embedder in (("torch", torch_embedder), ("onnx-int8", reloaded)):
                for question in questions:
                    start = time.perf_counter()
                    embedder.encode_query(question)
                    timings[name].append(time.perf_counter() - start)

        torch_vectors = np.stack([torch_embedder.encode_query(q) for q in questions])
        onnx_vectors = np.stack([reloaded.encode_query(q) for q in questions])
        cosines = (torch_vectors * onnx_vectors).sum(axis=1)
        documents = torch_embedder.encode(answers)

    import torch

    words = [len(q.split()) for q in questions]
    p50 = {name: ms(values, 50) for name, values in timings.items()}
    print_json({
        "benchmark": "query_encoder",
        "model": torch_embedder.identity,
        "questions": len(questions),
        "words": {"min": min(words), "median": statistics.median(words), "max": max(words)},
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "latency_ms": {name: {"p50": p50[name], "p99": ms(values, 99)} for name, values in timings.items()},
        "p50_speedup": round(p50["torch"] / p50["onnx-int8"], 2),
        "cosine_to_torch": {
            "mean": round(float(cosines.mean()), 5), "min": round(float(cosines.min()), 5),
            "p01": round(float(np.percentile(cosines, 1)), 5),
        },
        "recall": {
            name: {"at_1": recall(documents, vectors, 1), "at_5": recall(documents, vectors, 5)}
            for name, vectors in (("torch", torch_vectors), ("onnx-int8", onnx_vectors))
        },
        "first_query_with_export_seconds": round(export_seconds, 2),
        "cached_load_seconds": round(load_seconds, 2),
        "goal": {"p50_ms_at_most": 4.0, "recall_points_lost_at_most": 1.0},
    })


if __name__ == "__main__":
    main()
