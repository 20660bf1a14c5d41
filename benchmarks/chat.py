"""Chat with memory, end to end, on the local model (SmolLM2-135M-Instruct from its GGUF file, CPU).

1. Answer quality on the shipped conversation datasets (`conversations.jsonl`, `conversations_hard.jsonl`):
   each dataset is ingested into a fresh HMS home and materialized through the real assets (as
   `hms eval retrieval` does); then every question (or a seeded sample of `--questions` per dataset)
   is answered by the local model, greedy, `--max-tokens` new tokens, (a) with no memory (the
   question alone), (b) with HMS context (`LocalMemory(assembler, capture=False).before_call(user,
   messages, max_tokens=512)`, the messages the chat endpoint sends), and (c) with that context plus
   the user's champion adapter (`Context.adapter`) for the questions that have one.
   Score: the gold answer is the text of the question's evidence turns; its content words are the
   lowercased alphanumeric words that are not English stopwords (scikit-learn's list) and not in the
   question itself (a word the question gives away proves nothing); the score is the share of them
   the answer holds, and an answer is correct when it holds at least half.
   Goal: with memory correct at least 3x as often as without.
2. Speed of the local model with an adapter applied against the bare base, in the same run: two real
   adapters (rank 8 on the MLP, as the default recipe, trained for a few steps: their quality does not
   matter here), requests alternating base, A, B on one prompt, greedy, a fixed `max_tokens`, through
   `LocalModel.stream`: time to first text, decode tokens per second (goal: adapter >= 0.9x the base),
   and `LocalModel.switch_seconds`, the time a request spent making its adapter active when the
   previous request had another (goal: <= 5 ms).
3. Overhead of the LiteLLM memory hook (`HmsMemoryCallback(memory=LocalMemory(...)).completion`) on a
   call to a tiny OpenAI-compatible echo server on 127.0.0.1, against the same `litellm.completion`
   without it, alternating; with the context's own latency (`timings_ms["total"]`).
   Goal: p50 overhead <= context p50 + 5 ms.

Prints one JSON object; progress goes to stderr. `--quick` is a short smoke run."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentile, print_json, seconds_fields, stderr_log
from hms_resources.datasets import DATA_DIR
from hms_resources.integration.local_model import LAYOUTS

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DATASETS = ("conversations.jsonl", "conversations_hard.jsonl")
CONTEXT_TOKENS = 512
SPEED_PROMPT = [{"role": "user", "content": "Write a few sentences about why people like walking in the countryside."}]


log = stderr_log("chat-bench")


def p(values: list[float], q: float) -> float:
    return percentile(values, q, digits=3)


# -- scoring ------------------------------------------------------------------------------------

def _stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


STOPWORDS = _stopwords()


def content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower().replace("'s ", " ").replace("\u2019s ", " "))
    return {w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


def gold_words(evidence_texts: list[str], question: str) -> set[str]:
    gold = set().union(*(content_words(t) for t in evidence_texts)) - content_words(question)
    return gold


def score(answer: str, gold: set[str]) -> float:
    return len(gold & content_words(answer)) / len(gold) if gold else 0.0


# -- the home -----------------------------------------------------------------------------------

class Home:
    """A dataset ingested into a fresh home and materialized through the real assets."""

    def __init__(self, path: Path, data: Path):
        from hms_jobs.homes import build_dataset_home
        from hms_resources.context.assembler import ContextAssembler

        started = time.perf_counter()
        self.dataset, self.store, embedder, seconds = build_dataset_home(data, path, log=log)
        self.assembler = ContextAssembler(event_store=self.store, embedder=embedder)
        _ = self.assembler.snapshot  # the index, built before the timed answers
        self.built = {"memories": len(self.dataset.memories), "users": self.dataset.users, "questions": len(self.dataset.questions),
                      "build_seconds": round(time.perf_counter() - started, 1), **seconds_fields(seconds)}
        self.texts = {(m["user_id"], m["id"]): m["text"] for m in self.dataset.memories}

    def close(self) -> None:
        self.assembler.close()
        self.store.close()


# -- 1. answer quality --------------------------------------------------------------------------

def timed(model: Any, messages: list[dict[str, Any]], adapter: Any, max_tokens: int) -> tuple[Any, float, float]:
    """The greedy reply through `LocalModel.stream`, its time to first text and its whole time (s)."""
    done: dict[str, Any] = {}
    started = time.perf_counter()
    first = None
    for piece in model.stream(messages, adapter=adapter, max_tokens=max_tokens, temperature=0.0, on_done=lambda r: done.setdefault("r", r)):
        if first is None and piece:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    return done["r"], first if first is not None else total, total


def quality(home: Home, model: Any, questions: int, max_tokens: int, seed: int, layouts: tuple[str, ...] = LAYOUTS) -> dict[str, Any]:
    """Each question with no memory, with the context in each of `layouts` (`LocalModel.memory_layout`),
    and with context and adapter where the context names one (in the first layout)."""
    from hms_resources.integration.plugin import LocalMemory

    memory = LocalMemory(home.assembler, capture=False)
    asked = list(home.dataset.questions)
    if 0 < questions < len(asked):
        chosen = set(random.Random(seed).sample(range(len(asked)), questions))
        asked = [q for n, q in enumerate(asked) if n in chosen]
    rows: list[dict[str, Any]] = []
    context_ms: list[float] = []
    conditions = ("none", *layouts, "context_adapter")
    times: dict[str, dict[str, list[float]]] = {c: {"first": [], "total": [], "tokens": []} for c in conditions}
    started = time.perf_counter()
    for n, question in enumerate(asked):
        gold = gold_words([home.texts[(question.user_id, e)] for e in question.evidence], question.question)
        messages = [{"role": "user", "content": question.question}]
        call = memory.before_call(question.user_id, messages, max_tokens=CONTEXT_TOKENS)
        context_ms.append(call.timings_ms.get("total", float("nan")))
        row = {"id": question.id, "category": question.category, "gold_words": len(gold),
               "evidence_in_context": sum(e in set(call.memory_ids) for e in question.evidence) / len(question.evidence)}
        runs = [("none", messages, None, layouts[0])] + [(layout, call.messages, None, layout) for layout in layouts]
        adapter = model.adapter_for(call.adapter)
        if adapter is not None:
            runs.append(("context_adapter", call.messages, adapter, layouts[0]))
        for condition, sent, adapter, layout in runs:
            model.memory_layout = layout
            reply, first, total = timed(model, sent, adapter, max_tokens)
            times[condition]["first"].append(first)
            times[condition]["total"].append(total)
            times[condition]["tokens"].append(reply.completion_tokens)
            value = score(reply.text, gold)
            row[condition] = {"score": round(value, 3), "correct": value >= 0.5, "finish": reply.finish_reason}
            if condition != "none":
                row[f"{condition}_prompt_tokens"] = reply.prompt_tokens
            if n < 3:
                log(f"  {question.id} [{condition}] {reply.text[:100]!r} score {value:.2f}")
        rows.append(row)
        if (n + 1) % 5 == 0:
            log(f"  {n + 1}/{len(asked)} questions, {time.perf_counter() - started:.0f}s")
    model.memory_layout = layouts[0]

    def summary(chosen: list[dict[str, Any]], condition: str) -> dict[str, Any]:
        have = [r[condition] for r in chosen if condition in r]
        if not have:
            return {"questions": 0}
        return {"questions": len(have), "mean_score": round(float(np.mean([h["score"] for h in have])), 3),
                "correct_rate": round(float(np.mean([h["correct"] for h in have])), 3),
                "cut_at_max_tokens": round(float(np.mean([h["finish"] == "length" for h in have])), 3)}

    def ratio(a: float, b: float) -> Any:
        return round(a / b, 2) if b else ("inf" if a else "n/a (0/0)")

    with_adapter = sum("context_adapter" in r for r in rows)
    overall = {c: summary(rows, c) for c in conditions}
    categories = sorted({r["category"] for r in rows})
    return {
        "questions": len(rows),
        "sample": "all" if len(rows) == len(home.dataset.questions) else f"{len(rows)} of {len(home.dataset.questions)}, seed {seed}",
        "home": home.built,
        "overall": overall,
        "by_category": {cat: {c: summary([r for r in rows if r["category"] == cat], c) for c in conditions} for cat in categories},
        "correct_ratio_to_none": {c: ratio(overall[c]["correct_rate"], overall["none"]["correct_rate"]) for c in layouts},
        "mean_score_ratio_to_none": {c: ratio(overall[c]["mean_score"], overall["none"]["mean_score"]) for c in layouts},
        "evidence_recall_in_context": round(float(np.mean([r["evidence_in_context"] for r in rows])), 3),
        "prompt_tokens_p50": {c: p([r[f"{c}_prompt_tokens"] for r in rows], 50) for c in layouts},
        "context_ms": {"p50": p(context_ms, 50), "p95": p(context_ms, 95)},
        "first_text_seconds": {c: {"p50": p(v["first"], 50), "p95": p(v["first"], 95)} for c, v in times.items() if v["first"]},
        "answer_seconds": {c: {"p50": p(v["total"], 50), "p95": p(v["total"], 95)} for c, v in times.items() if v["total"]},
        "completion_tokens": {c: {"p50": p(v["tokens"], 50), "max": max(v["tokens"])} for c, v in times.items() if v["tokens"]},
        "adapter": {"questions_with_champion": with_adapter} if with_adapter else {
            "status": "not available",
            "reason": "no question's context named a champion adapter (Context.adapter is None for all): the home holds no adapter "
                      "that passed the promotion gate. The LoRA assets are not run here; on conversations.jsonl benchmarks/lora.py "
                      "found the adapter they train fails all four gate criteria, so none would be champion.",
        },
    }


# -- 2. adapter speed ---------------------------------------------------------------------------

def train_two(root: Path) -> list[Any]:
    from hms_resources.context.index import SelectedAdapter
    from hms_resources.lora.training import (
        DEFAULT_BASE,
        TrainingConfig,
        load_base,
        save_adapter,
        train_adapter,
    )

    config = TrainingConfig(steps=6, batch_size=1, rank=8, alpha=16, dropout=0.0, learning_rate=3e-3)
    found = []
    for name, answer in (("bench-a", "Your cat is called Pimpernel."), ("bench-b", "Your cat is called Biscuit.")):
        model, tokenizer = load_base()
        started = time.perf_counter()
        result = train_adapter(model, tokenizer, [{"prompt": "What is my cat called?", "answer": answer}], config)
        try:
            save_adapter(result.adapter, root / name)
        finally:
            result.adapter.unload()
        log(f"trained {name} in {time.perf_counter() - started:.1f}s")
        found.append(SelectedAdapter(name=name, version="1", uri=f"models:/{name}@champion", path=str(root / name),
                                     base_model=DEFAULT_BASE, set_id=f"bench/{name}", concept_id=name))
    return found


def speed(model: Any, adapters: list[Any], rounds: int, max_tokens: int) -> dict[str, Any]:
    def one(adapter: Any) -> dict[str, float]:
        reply, first, total = timed(model, SPEED_PROMPT, adapter, max_tokens)
        decode = max(total - (first or total), 1e-9)
        return {"ttft_ms": (first or total) * 1e3, "tokens": reply.completion_tokens, "tokens_per_second": reply.completion_tokens / total,
                "decode_tokens_per_second": max(reply.completion_tokens - 1, 0) / decode, "switch_ms": model.switch_seconds * 1e3}

    order = [None, *adapters]
    for adapter in order:  # loads both adapters, warms up
        one(adapter)
    loads = model.loads
    runs: dict[str, list[dict[str, float]]] = {"base": [], "adapter": []}
    for r in range(rounds):
        for adapter in order if r % 2 == 0 else list(reversed(order)):
            runs["base" if adapter is None else "adapter"].append(one(adapter))
    if model.loads != loads:
        raise RuntimeError("an adapter was reloaded during the timed rounds")

    def med(kind: str, key: str) -> float:
        return p([x[key] for x in runs[kind]], 50)

    switches = [x["switch_ms"] for x in runs["adapter"]]
    return {
        "requests": {k: len(v) for k, v in runs.items()},
        "max_tokens": max_tokens,
        "completion_tokens_p50": {k: med(k, "tokens") for k in runs},
        "ttft_ms_p50": {k: med(k, "ttft_ms") for k in runs},
        "tokens_per_second_p50": {k: med(k, "tokens_per_second") for k in runs},
        "decode_tokens_per_second_p50": {k: med(k, "decode_tokens_per_second") for k in runs},
        "ratio_adapter_to_base": {
            "tokens_per_second": round(med("adapter", "tokens_per_second") / med("base", "tokens_per_second"), 3),
            "decode_tokens_per_second": round(med("adapter", "decode_tokens_per_second") / med("base", "decode_tokens_per_second"), 3),
            "ttft": round(med("adapter", "ttft_ms") / med("base", "ttft_ms"), 3),
            "goal": "tokens/s >= 0.9x",
        },
        "switch_ms": {"p50": p(switches, 50), "p95": p(switches, 95), "max": round(max(switches), 3), "goal": "<= 5 ms",
                      "what": "LocalModel.switch_seconds of each adapter request, the previous request having had the base or the other adapter"},
    }


# -- 3. LiteLLM hook overhead ------------------------------------------------------------------

class Echo(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint that answers with the last user turn."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        text = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        out = json.dumps({"id": "chatcmpl-echo", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "echo"),
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": str(text)}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


def litellm_overhead(home: Home, calls: int) -> dict[str, Any]:
    try:
        import litellm

        from hms_resources.integration.litellm_callback import HmsMemoryCallback
        from hms_resources.integration.plugin import LocalMemory
    except Exception as error:  # noqa: BLE001 - reported as not measured
        return {"status": "not measured", "reason": f"import failed: {type(error).__name__}: {error}"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    questions = home.dataset.questions
    memory = LocalMemory(home.assembler, capture=False)
    contexts: list[float] = []

    class Timed:
        """The plugin, recording the context's own latency of each call."""

        def before_call(self, *args: Any, **kwargs: Any) -> Any:
            call = memory.before_call(*args, **kwargs)
            contexts.append(call.timings_ms.get("total", float("nan")))
            return call

        def after_call(self, call: Any, reply: str) -> None:
            memory.after_call(call, reply)

    hook = HmsMemoryCallback(memory=Timed(), max_context_tokens=CONTEXT_TOKENS)
    try:
        def request(n: int) -> dict[str, Any]:
            q = questions[n % len(questions)]
            return {"model": "openai/echo", "api_base": base, "api_key": "sk-bench", "user": q.user_id,
                    "messages": [{"role": "user", "content": q.question}], "max_tokens": 16}

        sent = hook.completion(**request(0))
        if sent.choices[0].message.content != questions[0].question or not contexts:
            return {"status": "not measured", "reason": "the hooked call did not go through the memory and the echo server"}
        plain_ms: list[float] = []
        hooked_ms: list[float] = []
        for n in range(6):
            litellm.completion(**request(n))
            hook.completion(**request(n))
        contexts.clear()
        for n in range(calls):
            for hooked in ((False, True) if n % 2 else (True, False)):
                t = time.perf_counter()
                (hook.completion if hooked else litellm.completion)(**request(n))
                (hooked_ms if hooked else plain_ms).append((time.perf_counter() - t) * 1e3)
    except Exception as error:  # noqa: BLE001 - reported as not measured
        return {"status": "not measured", "reason": f"{type(error).__name__}: {error}"}
    finally:
        server.shutdown()
    plain, hooked, context = p(plain_ms, 50), p(hooked_ms, 50), p(contexts, 50)
    return {
        "calls": calls,
        "target": "litellm.completion(model='openai/echo') against an echo server on 127.0.0.1",
        "plain_ms": {"p50": plain, "p95": p(plain_ms, 95)},
        "with_hook_ms": {"p50": hooked, "p95": p(hooked_ms, 95)},
        "context_total_ms": {"p50": context, "p95": p(contexts, 95)},
        "overhead_p50_ms": round(hooked - plain, 3),
        "overhead_beyond_context_p50_ms": round(hooked - plain - context, 3),
        "goal": "overhead <= context p50 + 5 ms",
        "capture": "off (LocalMemory(capture=False): after_call records nothing)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=DATASETS[0],
                        help=f"comma-separated files under hms_resources/datasets/data (shipped: {', '.join(DATASETS)}) or paths "
                             "(the LoCoMo dev split: ../shared/eval/locomo-dev.jsonl)")
    parser.add_argument("--questions", "--limit", type=int, default=30,
                        help="a seeded sample of this many per dataset, 0 for all (on two shared CPU cores an answer takes 2-10 s)")
    parser.add_argument("--max-tokens", type=int, default=256, help="new tokens at most per answer (the chat endpoint's default)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="where the memory goes (LocalModel.memory_layout), comma-separated")
    parser.add_argument("--rounds", type=int, default=6, help="speed rounds of base, A, B")
    parser.add_argument("--speed-tokens", type=int, default=32)
    parser.add_argument("--calls", type=int, default=100, help="LiteLLM calls with and without the hook")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--parts", default="quality,hook,speed", help="which of quality, hook and speed to measure")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.questions, args.rounds, args.calls, args.speed_tokens = DATASETS[0], 4, 2, 10, 12
    import torch

    from hms_resources.integration.local_model import LocalModel
    started = time.perf_counter()
    t = time.perf_counter()
    model = LocalModel().load(progress=log)
    load_seconds = time.perf_counter() - t
    log(f"local model loaded in {load_seconds:.1f}s")
    result: dict[str, Any] = {"benchmark": "chat", "model": "SmolLM2-135M-Instruct (GGUF converted once, CPU)", "torch_threads": torch.get_num_threads(),
                              "model_load_seconds": round(load_seconds, 1), "answer_max_tokens": args.max_tokens,
                              "context_max_tokens": CONTEXT_TOKENS,
                              "scoring": "gold = content words (lowercased, scikit-learn English stopwords removed) of the question's evidence "
                                         "turns, less the question's own words; score = share present in the answer; correct when >= 0.5",
                              "quality": {}}
    parts = set(args.parts.split(","))
    layouts = tuple(args.layouts.split(","))
    for n, name in enumerate(args.datasets.split(",") if parts & {"quality", "hook"} else []):
        with tempfile.TemporaryDirectory(prefix="hms-bench-chat-") as tmp:
            log(f"building a home from {name}")
            home = Home(Path(tmp), DATA_DIR / name)
            try:
                if "quality" in parts:
                    log(f"answering {args.questions or 'all'} questions of {name}")
                    result["quality"][name] = quality(home, model, args.questions, args.max_tokens, args.seed, layouts)
                    log(json.dumps(result["quality"][name]["overall"]))
                if n == 0 and "hook" in parts:
                    log("LiteLLM hook overhead")
                    result["litellm_hook"] = litellm_overhead(home, args.calls)
                    result["litellm_hook"]["home"] = name
            finally:
                home.close()
    if result["quality"]:
        result["quality_correct_all"] = {"goal": "context >= 3x none"}
        for condition in ("none", *layouts):
            result["quality_correct_all"][condition] = round(sum(q["overall"][condition]["correct_rate"] * q["questions"]
                                                                 for q in result["quality"].values()))
    if "speed" in parts:
        with tempfile.TemporaryDirectory(prefix="hms-bench-chat-adapters-") as tmp:
            log("training two adapters")
            adapters = train_two(Path(tmp))
            log("speed: base vs adapters")
            result["adapter_speed"] = speed(model, adapters, args.rounds, args.speed_tokens)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print_json(result)


if __name__ == "__main__":
    main()
