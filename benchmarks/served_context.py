"""Evidence recall through the served path, as an application meets it: `hms serve` on a fresh home,
every turn of a dataset (the format of `hms eval retrieval`) written through `POST /v1/memories`,
`hms run` as of today (the conversations are old, so many memories go cold), then every question
asked through `POST /v1/context`, with the default options and with `deep: true`.

`python -m benchmarks.served_context DATA [--folds 5 | --no-cv] [--filler N] [--quick]`

1. A fresh home (a temporary folder, or `--home`), a write key made with `hms keys create`, and one
   `hms serve`: the turns go in batches of 500, each with its `created_at`, `session_id` and speaker
   (`created_by`), as a `memory.created` of type `conversation_turn` (the dataset's own events).
2. `hms run`, the command a user runs (it also ingests the bundled sample, for users of no tenant).
3. A served home: the tiers `hms run` gave the tenant's memories (`GET /v1/memories?tier=`), and
   `--filler N` captured chat exchanges of generic assistant filler per user, sent to
   `POST /v1/events` in the plugin's capture records at the conversation's last turn, so the drop
   in recall they cause can be measured.
4. Cross-validation by conversation as `hms eval retrieval --folds` deals it: each fold's reranker
   is fitted on the other conversations' candidates as `hms run` left the home (read in this
   process, which only reads), saved as JSON, and one `hms serve` per fold runs with
   `HMS_CONTEXT_RERANKER` pointing at it to answer that fold's questions. `--no-cv`: the shipped
   reranker for every question, one server.
5. Each question is asked at each budget in both modes over one keep-alive connection, one request
   at a time, `now` = the question's time (as the harness asks; `--today` leaves `now` out). Recall
   is the harness's `evidence_recall` over the returned items' `source_ids`; latency is the HTTP
   round trip measured by the client, at 1,024 tokens, beside the server's own `timings_ms.total`.

Prints one JSON object; progress goes to stderr. `--quick` (one conversation, 30 questions, 1,024
tokens, no cross-validation) is a smoke test of a few minutes. The data is read where it lies and
never copied into the repository."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks.common import HOST, REPO_ROOT, free_port, percentiles, print_json, service_env, start_server, stderr_log, stop_server, wait_ready

TENANT = "local"
HEADLINE_BUDGET = 1024
BUDGETS = (256, 512, 1024, 2048)
MODES = {"default": {}, "deep": {"deep": True}}
BATCH = 500
TIERS = ("hot", "warm", "cold")

FILLER = (
    ("Can you help me with something?", "I'm not sure what you're looking for. Could you tell me a bit more about what you need?"),
    ("What do you think?", "I'm sorry, I don't have enough information to answer that. Could you give me more details?"),
    ("Any ideas?", "That's a great question! I'd be happy to help if you can share a little more context."),
    ("Hmm, tell me more.", "Of course! What would you like to know more about? I'm here to help with anything you need."),
    ("What should I do next?", "It depends on what you're hoping to achieve. Could you tell me more about your goals?"),
)
"""Generic exchanges an assistant has every day: a vague question, a reply that says nothing."""

log = stderr_log("served-context")


# Processes: the `hms` commands a user runs, on one home -----------------------------------------


def hms(home: Path, *args: str, log_path: Path) -> str:
    """`hms ARGS` on `home`; its stdout (stderr goes to `log_path`), failing with the log's tail."""
    with log_path.open("ab") as err:
        done = subprocess.run([sys.executable, "-m", "hms_jobs.cli", *args], check=False, cwd=REPO_ROOT, env=service_env(home), stdout=subprocess.PIPE, stderr=err)
    if done.returncode:
        raise RuntimeError(f"hms {' '.join(args)} exited with {done.returncode}:\n{log_path.read_text()[-3000:]}")
    return done.stdout.decode()


@contextmanager
def served(home: Path, key: str, log_path: Path, limit: float = 600.0, **settings: str) -> Iterator[httpx.Client]:
    """`hms serve` on `home` with `settings` until the block ends; a client holding the key."""
    port = free_port()
    started = time.perf_counter()
    server = start_server(home, port, False, log_path, **settings)
    client = httpx.Client(base_url=f"http://{HOST}:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=120.0)
    try:
        wait_ready(server, port, log_path, limit)
        log(f"hms serve ready on port {port} in {time.perf_counter() - started:.1f}s" + (f" ({', '.join(settings)})" if settings else ""))
        yield client
    finally:
        client.close()
        stop_server(server)


def posted(response: httpx.Response, where: str) -> dict:
    if response.status_code >= 300:
        raise RuntimeError(f"{where}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


# The served home ------------------------------------------------------------------------------


def write_turns(client: httpx.Client, memories: list[dict]) -> dict:
    """Every turn through `POST /v1/memories` in batches, as the dataset's own `memory.created` events."""
    from hms_resources.datasets.retrieval_eval import memory_events

    bodies = [
        {"user_id": e["user_id"], "memory_id": e["memory_id"], "event_id": e["event_id"], "occurred_at": e["occurred_at"], **e["payload"]}
        for e in memory_events(memories)
    ]
    counts = {"created": 0, "duplicates": 0, "rejected": 0}
    started = time.perf_counter()
    for at in range(0, len(bodies), BATCH):
        result = posted(client.post("/v1/memories", json={"memories": bodies[at : at + BATCH]}), "POST /v1/memories")
        for name in counts:
            counts[name] += result[name]
        if result["rejected"]:
            first = next(r for r in result["results"] if r["status"] == "rejected")
            raise RuntimeError(f"POST /v1/memories rejected {result['rejected']} turn(s), e.g. item {at + first['index']}: {first['error']}")
    seconds = time.perf_counter() - started
    return {"memories": len(bodies), **counts, "seconds": round(seconds, 1), "per_second": round(len(bodies) / seconds, 1)}


def tier_members(client: httpx.Client, users: list[str]) -> dict[str, set[tuple[str, str]]]:
    """The (user, memory id) of the live memories of `users` in each tier, through `GET /v1/memories?tier=`."""
    members: dict[str, set[tuple[str, str]]] = {tier: set() for tier in TIERS}
    for user in users:
        for tier in TIERS:
            cursor = None
            while True:
                params = {"user_id": user, "tier": tier, "limit": 500, **({"cursor": cursor} if cursor else {})}
                page = posted(client.get("/v1/memories", params=params), "GET /v1/memories")
                members[tier].update((user, m["memory_id"]) for m in page["memories"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
    return members


def cold_evidence(questions: list[Any], cold: set[tuple[str, str]]) -> dict:
    """How much of the questions' evidence `hms run` put in the cold tier."""
    evidence = {(q.user_id, e) for q in questions for e in q.evidence}
    return {
        "evidence_turns": len(evidence),
        "cold_evidence_turns": len(evidence & cold),
        "questions_with_cold_evidence": sum(any((q.user_id, e) in cold for e in q.evidence) for q in questions),
    }


def write_filler(client: httpx.Client, memories: list[dict], per_user: int) -> int:
    """`per_user` captured exchanges of assistant filler per user at the conversation's last turn,
    in the records the chat plugin sends to `POST /v1/events`."""
    from hms_resources.memory.exchange import Exchange, exchange_records

    last: dict[str, str] = {}
    for m in memories:
        last[m["user_id"]] = max(last.get(m["user_id"], ""), m["created_at"])
    records = []
    for user, at in sorted(last.items()):
        for n in range(per_user):
            query, reply = FILLER[n % len(FILLER)]
            records += exchange_records(Exchange(user_id=user, call_id=f"filler-{user}-{n}", query=query, reply=reply, session_id="chat"), at=at)
    if records:
        result = posted(client.post("/v1/events", json={"events": records}), "POST /v1/events")
        if result["rejected"]:
            raise RuntimeError(f"POST /v1/events rejected filler: {next(r for r in result['results'] if r['status'] == 'rejected')}")
    return len(records)


def fold_rerankers(home: Path, dataset: Any, folds: int, out: Path) -> list[tuple[Path | None, list[str]]]:
    """Per fold, the reranker fitted on the other conversations (the harness's cross-validation, on
    the home as `hms run` left it), saved under `out`, with the conversations it answers."""
    from hms_jobs.retrieval_harness import cross_validated_rerankers
    from hms_resources.context.assembler import ContextAssembler

    prefix = f"{TENANT}/"
    stored = dataclasses.replace(
        dataset,
        memories=[{**m, "user_id": prefix + m["user_id"]} for m in dataset.memories],
        questions=[dataclasses.replace(q, user_id=prefix + q.user_id) for q in dataset.questions],
    )
    assembler = ContextAssembler.from_home(home)
    try:
        chosen = cross_validated_rerankers(assembler, stored, folds, log=log)
    finally:
        assembler.close()
        assembler.event_store.close()
    grouped: dict[int, tuple[Any, list[str]]] = {}
    for user, reranker in chosen.items():
        grouped.setdefault(id(reranker), (reranker, []))[1].append(user.removeprefix(prefix))
    saved = []
    for n, (reranker, users) in enumerate(grouped.values(), start=1):
        path = reranker.save(out / f"reranker-fold-{n}.json")
        saved.append((Path(path), sorted(users)))
    return saved


# Asking ----------------------------------------------------------------------------------------


def ask(client: httpx.Client, questions: list[Any], budgets: tuple[int, ...], today: bool, tally: dict) -> None:
    """Every question at every budget in both modes, into `tally[mode]` rows of
    (category, budget, recall, HTTP ms, server ms)."""
    from hms_resources.datasets.retrieval_eval import evidence_recall

    for n, q in enumerate(questions, start=1):
        for budget in budgets:
            for mode, options in MODES.items():
                body = {"user_id": q.user_id, "query": q.question, "max_tokens": budget, **options}
                if not today and q.asked_at:
                    body["now"] = q.asked_at
                started = time.perf_counter()
                context = posted(client.post("/v1/context", json=body), f"POST /v1/context ({q.id})")
                ms = (time.perf_counter() - started) * 1e3
                found = [s for item in context["items"] for s in item["source_ids"]]
                tally[mode].append((q.category, budget, evidence_recall(q.evidence, found), ms, context["timings_ms"].get("total", float("nan"))))
        if n % 50 == 0:
            log(f"asked {n}/{len(questions)} questions")


def mode_report(rows: list[tuple], budgets: tuple[int, ...]) -> dict:
    """Recall per budget, overall and per category; latency at the headline budget."""
    recall: dict[str, float] = {}
    by_category: dict[str, dict[str, float]] = {}
    for budget in budgets:
        at = [r for r in rows if r[1] == budget]
        recall[str(budget)] = round(float(np.mean([r[2] for r in at])), 4)
        for category in sorted({r[0] for r in at}):
            by_category.setdefault(category, {})[str(budget)] = round(float(np.mean([r[2] for r in at if r[0] == category])), 4)
    timed = [r for r in rows if r[1] == HEADLINE_BUDGET]
    return {
        "questions": len(timed),
        "recall": recall,
        "recall_by_category": by_category,
        "http_latency_ms": percentiles([r[3] for r in timed], (50, 95, 99)),
        "server_total_ms": percentiles([r[4] for r in timed], (50, 95, 99)),
    }


# The run ---------------------------------------------------------------------------------------


def spread(questions: list[Any], count: int) -> list[Any]:
    """`count` of `questions` evenly spaced through the conversation, so every category is asked."""
    if count >= len(questions):
        return questions
    return [questions[int(k * len(questions) / count)] for k in range(count)]


def chosen_dataset(path: Path, quick: bool, conversations: int | None, questions: int | None) -> Any:
    from hms_resources.datasets.retrieval_eval import load_dataset

    dataset = load_dataset(path)
    users = sorted({m["user_id"] for m in dataset.memories})[: 1 if quick else conversations]
    kept = set(users)
    asked = [q for q in dataset.questions if q.user_id in kept]
    limit = 30 if quick and questions is None else questions
    if limit is not None:
        asked = [q for u in users for q in spread([q for q in asked if q.user_id == u], max(1, limit // len(users)))]
    return dataclasses.replace(dataset, memories=[m for m in dataset.memories if m["user_id"] in kept], questions=asked)


def measure(args: argparse.Namespace, home: Path, work: Path) -> dict:
    dataset = chosen_dataset(args.data, args.quick, args.conversations, args.questions)
    budgets = (HEADLINE_BUDGET,) if args.quick else tuple(sorted({*args.budgets, HEADLINE_BUDGET}, key=lambda b: (b != HEADLINE_BUDGET, b)))
    users = sorted({m["user_id"] for m in dataset.memories})
    folds = 0 if args.no_cv or args.quick else args.folds
    log(f"{len(dataset.memories)} turns of {len(users)} conversations, {len(dataset.questions)} questions; home {home}")
    seconds: dict[str, float] = {}
    server_log, cli_log = work / "serve.log", work / "cli.log"
    key = hms(home, "keys", "create", "--tenant", TENANT, "--scope", "write", "--label", "benchmarks/served_context.py", log_path=cli_log).strip().splitlines()[-1]

    with served(home, key, server_log) as client:
        writes = write_turns(client, dataset.memories)
    log(f"wrote {writes['created']} turns at {writes['per_second']}/s; running hms run (minutes)")
    started = time.perf_counter()
    run_facts = orjson.loads(hms(home, "run", "--json", log_path=cli_log).strip().splitlines()[-1])
    seconds["hms_run"] = round(time.perf_counter() - started, 1)
    if not run_facts.get("success"):
        raise RuntimeError(f"hms run failed:\n{cli_log.read_text()[-3000:]}")
    log(f"hms run took {seconds['hms_run']}s")

    with served(home, key, server_log) as client:
        members = tier_members(client, users)
        tiers = {tier: len(ids) for tier, ids in members.items()}
        filler_events = write_filler(client, dataset.memories, args.filler)
    log(f"tiers {tiers}; {filler_events} filler events")

    started = time.perf_counter()
    plan: list[tuple[Path | None, list[str]]] = fold_rerankers(home, dataset, folds, work) if folds else [(None, users)]
    seconds["fit_rerankers"] = round(time.perf_counter() - started, 1)

    tally: dict[str, list[tuple]] = {mode: [] for mode in MODES}
    started = time.perf_counter()
    for n, (reranker, fold_users) in enumerate(plan, start=1):
        settings = {"HMS_CONTEXT_RERANKER": str(reranker)} if reranker else {}
        asked = [q for q in dataset.questions if q.user_id in set(fold_users)]
        log(f"fold {n}/{len(plan)}: {len(asked)} questions of {', '.join(fold_users)}")
        with served(home, key, server_log, **settings) as client:
            ask(client, asked, budgets, args.today, tally)
    seconds["ask"] = round(time.perf_counter() - started, 1)

    memories = sum(tiers.values())
    return {
        "benchmark": "served_context",
        "dataset": {"path": str(args.data), "conversations": len(users), "memories": len(dataset.memories), "questions": len(dataset.questions)},
        "reranker": f"cross-validated, {folds} folds by conversation, fitted on the served home after hms run" if folds else "shipped",
        "asked_as_of": "today (no now)" if args.today else "the question's time (now = asked_at)",
        "filler_exchanges_per_user": args.filler,
        "writes": writes,
        "home": {
            "tiers": tiers,
            "memories": memories,
            "cold_share": round(tiers["cold"] / memories, 4) if memories else 0.0,
            "filler_events": filler_events,
            **cold_evidence(dataset.questions, members["cold"]),
        },
        "modes": {mode: mode_report(rows, budgets) for mode, rows in tally.items()},
        "notes": {
            "recall": "share of each question's evidence turn ids among the returned items' source_ids (the harness's evidence_recall), mean over questions",
            "http_latency_ms": f"client round trip of POST /v1/context at {HEADLINE_BUDGET} tokens, one request at a time over keep-alive",
            "server_total_ms": "the response's timings_ms.total at the same budget",
        },
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a dataset in the format of hms eval retrieval (JSON Lines)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validate the reranker by conversation (default 5)")
    parser.add_argument("--no-cv", action="store_true", help="the shipped reranker for every question")
    parser.add_argument("--filler", type=int, default=0, help="captured exchanges of assistant filler per user, before asking")
    parser.add_argument("--budgets", type=lambda s: tuple(int(b) for b in s.split(",")), default=BUDGETS, help="token budgets (1,024 is always asked)")
    parser.add_argument("--today", action="store_true", help="ask as of today (no `now`) instead of at each question's time")
    parser.add_argument("--conversations", type=int, default=None, help="only the first N conversations")
    parser.add_argument("--questions", type=int, default=None, help="at most N questions in all, shared between the conversations")
    parser.add_argument("--home", type=Path, default=None, help="build the home here and keep it (a new folder; default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="one conversation, 30 questions, 1,024 tokens, the shipped reranker: a smoke test")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"{args.data}: no such file")
    if not args.no_cv and not args.quick and args.folds < 2:
        parser.error("--folds must be at least 2 (or use --no-cv)")
    if args.home is not None and args.home.exists():
        parser.error(f"--home {args.home}: already exists; give a new folder")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hms-served-context-") as tmp:
        home = args.home.resolve() if args.home else Path(tmp) / "home"
        home.mkdir(parents=True)
        result = measure(args, home, Path(tmp))
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    print_json(result)


if __name__ == "__main__":
    main()
