"""LoRA crystallization, judged as the promotion gate judges it, on a concept of real facts from a
shipped conversation dataset (default `conversations.jsonl`: ingested, embedded and clustered by the
real assets; the concept with the most distinct statements its user made, at least 8).

The `trained_adapters` asset (materialized through Dagster with its default recipe: varied questions,
rehearsal, early stopping) is evaluated as the registry does: paraphrase recall base -> adapter on
held-out questions, forced-choice accuracy against chance, leakage on the shipped control prompts,
general perplexity change, and the gate's verdict. Training throughput is compared with a bare PEFT
loop on the same base, examples, batches and LoRA config in the same process; peak memory of each.
`--sweep` trains a grid of rank and learning rate on the same data and prints each one's figures.
Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import dagster as dg

from benchmarks.common import print_json, rss_mb
from hms_assets.lora import assets as lora
from hms_resources.common.files import write_json
from hms_resources.datasets import DATA_DIR
from hms_resources.lora.adapters import ADAPTERS_MANIFEST, REHEARSAL_TOKENS, TRAINING_DATA_MANIFEST, lora_dir, trained_adapters
from hms_resources.lora.candidates import CandidateSet
from hms_resources.lora.data import build_examples, save_dataset
from hms_resources.lora.registry import PromotionGate, gate_failures
from hms_resources.lora.rehearsal import mix_rehearsal, rehearsal_splits
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.lora.training import TrainingConfig, device, encode_row, load_base
from hms_resources.store.event_store import EventStore
from hms_resources.store.memory_state import Memory

DATA = DATA_DIR / "conversations.jsonl"


def concept_facts(path: Path, min_facts: int = 8, max_facts: int = 10) -> tuple[str, str, list[str]]:
    """(user, concept, facts): the concept whose user stated the most distinct facts (the user's own
    turns that are not questions, six words or more), as the real assets cluster the dataset."""
    from hms_jobs.homes import build_dataset_home
    from hms_resources.semantic.concepts import load_concepts

    with tempfile.TemporaryDirectory() as tmp:
        dataset, store, _, _ = build_dataset_home(path, tmp, log=lambda _m: None)
        concepts = load_concepts(store)
        store.close()
    said = {(m["user_id"], m["id"]): " ".join(m["text"].split()) for m in dataset.memories
            if m.get("speaker") == "user" and not m["text"].rstrip().endswith("?") and len(m["text"].split()) >= 6}
    ranked = sorted(((list(dict.fromkeys(said[(c.user_id, m)] for m in c.member_ids if (c.user_id, m) in said)), c) for c in concepts),
                    key=lambda pair: (-len(pair[0]), pair[1].user_id, pair[1].concept_id))
    facts, concept = ranked[0]
    if len(facts) < min_facts:
        raise SystemExit(f"{path}: no concept has {min_facts} distinct statements (best: {len(facts)})")
    return concept.user_id, concept.concept_id, facts[:max_facts]


class PeakRss:
    """The highest resident set size seen while the block runs, sampled every 20 ms."""

    def __init__(self) -> None:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def prepare_home(home: Path, user: str, concept: str, facts: list[str]):
    """One approved set's training dataset and manifest, as `lora_training_data` writes them."""
    memories = {(user, f"m{i}"): Memory(user_id=user, memory_id=f"m{i}", content=text) for i, text in enumerate(facts)}
    candidate_set = CandidateSet(set_id=f"{user}/{concept}", user_id=user, concept_id=concept, label=[],
                                 memory_ids=[m for _, m in sorted(memories)], fingerprint="bench", status="approved", criteria={})
    examples = build_examples(candidate_set, memories)
    version, path = save_dataset(lora_dir(home) / "datasets", candidate_set.set_id, examples)
    built = {"version": version, "path": str(path), "fingerprint": "bench", "user_id": user, "concept_id": concept,
             "memory_ids": [f["memory_id"] for f in examples.facts], "train_examples": len(examples.train), "probes": len(examples.eval)}
    write_json(lora_dir(home) / TRAINING_DATA_MANIFEST, {"datasets": {candidate_set.set_id: built}, "failed": {}})
    return examples


def bare_peft_loop(model, tokenizer, rows: list[dict], config: TrainingConfig) -> tuple[int, float]:
    """The loop a person would write by hand: the same LoRA, optimizer, order and batches, no HMS code
    in the timed part. Returns (tokens, seconds)."""
    import torch
    from peft import LoraConfig, get_peft_model

    encoded = [encode_row(tokenizer, r) for r in rows]
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed)).tolist()
    batches = []
    pad = tokenizer.pad_token_id
    for step in range(config.steps):
        chosen = [encoded[order[(step * config.batch_size + i) % len(order)]] for i in range(min(config.batch_size, len(order)))]
        width = max(len(ids) for ids, _ in chosen)
        batches.append({
            "input_ids": torch.tensor([i + [pad] * (width - len(i)) for i, _ in chosen], device=device()),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chosen], device=device()),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chosen], device=device()),
        })
    torch.manual_seed(config.seed)
    peft_model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.target_modules),
                                                  lora_dropout=config.dropout, task_type="CAUSAL_LM"))
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate)
    tokens = 0
    started = time.perf_counter()
    for batch in batches:
        loss = peft_model(**batch).loss
        loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    seconds = time.perf_counter() - started
    peft_model.unload()
    return tokens, seconds


def asset_run(home: Path, store: EventStore, config: TrainingConfig) -> dict:
    (lora_dir(home) / ADAPTERS_MANIFEST).unlink(missing_ok=True)
    fields = {k: v for k, v in asdict(config).items() if k in lora.AdapterTrainingConfig.model_fields}
    fields["target_modules"] = list(config.target_modules)
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            [lora.trained_adapters], instance=instance,
            resources={"event_store": store, "mlflow_tracking": MlflowTracking()},
            run_config={"ops": {"trained_adapters": {"config": fields}}, "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        wall = time.perf_counter() - started
    assert result.success
    [entry] = trained_adapters(home).values()
    shutil.rmtree(entry["path"], ignore_errors=True)
    return {**entry, "asset_seconds": wall}


GATE_FIGURES = ("paraphrase_recall", "base_paraphrase_recall", "forced_choice", "chance", "leakage", "general_perplexity",
                "base_general_perplexity", "general_perplexity_change", "best_step", "steps_run")


def sweep(home: Path, store: EventStore, config: TrainingConfig, ranks: list[int], rates: list[float]) -> list[dict]:
    """The same data trained under every rank and learning rate (alpha = 2 x rank), each judged by the gate."""
    found = []
    for rank in ranks:
        for rate in rates:
            entry = asset_run(home, store, replace(config, rank=rank, alpha=2 * rank, learning_rate=rate))
            failures = gate_failures(entry, PromotionGate())
            found.append({"rank": rank, "learning_rate": rate, **{k: entry[k] for k in GATE_FIGURES}, "passes_gate": not failures,
                          "gate_failures": failures})
            print(json.dumps(found[-1]), file=sys.stderr, flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=TrainingConfig.steps, help="The most steps (early stopping usually ends sooner).")
    parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
    parser.add_argument("--sweep", action="store_true", help="Train a grid of rank and learning rate instead.")
    args = parser.parse_args()
    import torch

    config = TrainingConfig(steps=args.steps, batch_size=args.batch_size)
    user, concept, facts = concept_facts(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        examples = prepare_home(home, user, concept, facts)
        store = EventStore(hms_home=str(home))
        started = time.perf_counter()
        model, tokenizer = load_base()
        load_seconds = time.perf_counter() - started
        described = {"base_model": "SmolLM2-135M-Instruct", "device": device(), "torch_threads": torch.get_num_threads(),
                     "data": args.data.name, "set": f"{user}/{concept}", "facts": len(examples.facts), "train_examples": len(examples.train),
                     "validation_examples": len(examples.validation), "held_out_questions": len(examples.eval)}
        if args.sweep:
            print_json({"benchmark": "lora_sweep", **described, "runs": sweep(home, store, config, [4, 8, 16], [5e-4, 1e-3, 2e-3])})
            return
        with PeakRss() as asset_peak:
            entry = asset_run(home, store, config)
        rehearsal, _ = rehearsal_splits(home, (model, tokenizer), "", REHEARSAL_TOKENS)
        rows = mix_rehearsal(examples.train, rehearsal, config.rehearsal_ratio)
        bare_peft_loop(model, tokenizer, rows, replace(config, steps=3))
        with PeakRss() as bare_peak:
            tokens, seconds = bare_peft_loop(model, tokenizer, rows, replace(config, steps=entry["steps_run"]))
        store.close()
    failures = gate_failures(entry, PromotionGate())
    print_json({
        "benchmark": "lora_crystallization", **described, "facts_text": facts,
        "base_load_seconds": round(load_seconds, 1),
        "paraphrase_recall": {"base": entry["base_paraphrase_recall"], "adapter": entry["paraphrase_recall"], "goal": ">= 0.6, base <= 0.1"},
        "forced_choice": {"adapter": entry["forced_choice"], "base": entry["base_forced_choice"], "chance": entry["chance"], "goal": ">= 0.8"},
        "leakage": {"adapter": entry["leakage"], "goal": "<= 0.05"},
        "general_perplexity": {"base": entry["base_general_perplexity"], "adapter": entry["general_perplexity"],
                               "change": entry["general_perplexity_change"], "goal": "<= +0.05"},
        "gate": {"passes": not failures, "failures": failures},
        "training": {"steps_run": entry["steps_run"], "kept_step": entry["best_step"], "stopped_because": entry["stopped_because"],
                     "asset_tokens_per_second": entry["tokens_per_second"], "bare_peft_tokens_per_second": round(tokens / seconds, 1),
                     "ratio_asset_to_bare": round(entry["tokens_per_second"] / (tokens / seconds), 3),
                     "asset_wall_seconds": round(entry["asset_seconds"], 1), "asset_peak_rss_mb": round(asset_peak.peak),
                     "bare_peak_rss_mb": round(bare_peak.peak)},
    })


if __name__ == "__main__":
    main()
