"""LoRA training throughput: the `trained_adapters` asset (materialized through Dagster, logging every
step to MLflow) against a bare PEFT loop on the same base model, examples, batches and LoRA config in
the same process, alternating (each pair swaps which goes first); peak memory of each; and fact recall of the adapter against the base
on the held-out probes.

Peak memory is the resident set size sampled every 20 ms during each phase, after a warm-up loop, so
neither phase pays the allocator's first growth. Prints one JSON object. Goal: asset tokens/s at
least 0.9x the bare loop's."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from hms_assets.lora import assets as lora  # noqa: E402
from hms_resources.common.files import write_json  # noqa: E402
from hms_resources.lora.adapters import ADAPTERS_MANIFEST, TRAINING_DATA_MANIFEST, lora_dir, trained_adapters  # noqa: E402
from hms_resources.lora.candidates import CandidateSet  # noqa: E402
from hms_resources.lora.data import build_examples, save_dataset  # noqa: E402
from hms_resources.lora.tracking import MlflowTracking  # noqa: E402
from hms_resources.lora.training import TrainingConfig, device, encode_example, load_base  # noqa: E402
from hms_resources.store.event_store import EventStore  # noqa: E402
from hms_resources.store.memory_state import Memory  # noqa: E402

FACTS = [
    "Nadia practises the cello every morning before work.",
    "Her cello teacher Marta wants more scales before the spring recital.",
    "The recital is at the Lindenhof community hall on the fourth of June.",
    "Nadia is allergic to hazelnuts and always checks cake labels.",
    "She cycles to the observatory on Tuesdays to volunteer at the telescope.",
    "Her brother Tomasz moved to Gdansk to work on offshore wind turbines.",
    "Nadia keeps her tax receipts in a green folder in the hallway drawer.",
    "She is reading a biography of the astronomer Henrietta Leavitt.",
]


class PeakRss:
    """The highest resident set size seen while the block runs, sampled every 20 ms."""

    def __init__(self) -> None:
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = _rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prepare_home(home: Path) -> dict:
    """One approved set's training dataset and manifest, as `lora_training_data` writes them."""
    memories = {("nadia", f"m{i}"): Memory(user_id="nadia", memory_id=f"m{i}", content=text) for i, text in enumerate(FACTS)}
    candidate_set = CandidateSet(set_id="nadia/concept-bench", user_id="nadia", concept_id="concept-bench", label=["cello"],
                                 memory_ids=[m for _, m in sorted(memories)], fingerprint="bench", status="approved", criteria={})
    train, probes = build_examples(candidate_set, memories)
    version, path = save_dataset(lora_dir(home) / "datasets", candidate_set.set_id, train, probes)
    built = {"version": version, "path": str(path), "fingerprint": "bench", "user_id": "nadia", "concept_id": "concept-bench",
             "memory_ids": [p["memory_id"] for p in probes], "train_examples": len(train), "probes": len(probes)}
    write_json(lora_dir(home) / TRAINING_DATA_MANIFEST, {"datasets": {candidate_set.set_id: built}, "failed": {}})
    return {"train": train, "probes": probes}


def bare_peft_loop(model, tokenizer, rows: list[dict], config: TrainingConfig) -> tuple[int, float]:
    """The loop a person would write by hand: the same LoRA, optimizer, order and batches, no HMS code
    in the timed part. Returns (tokens, seconds)."""
    import torch
    from peft import LoraConfig, get_peft_model

    encoded = [encode_example(tokenizer, r["prompt"], r["answer"]) for r in rows]
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed)).tolist()
    batches = []
    position = 0
    for _ in range(config.steps):
        chosen = [encoded[order[(position + i) % len(order)]] for i in range(min(config.batch_size, len(order)))]
        position += len(chosen)
        width = max(len(ids) for ids, _ in chosen)
        pad = tokenizer.pad_token_id
        batches.append({
            "input_ids": torch.tensor([i + [pad] * (width - len(i)) for i, _ in chosen], device=device()),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chosen], device=device()),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chosen], device=device()),
        })
    torch.manual_seed(config.seed)
    peft_model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.target_modules),
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
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


def asset_run(home: Path, store: EventStore, steps: int, batch_size: int) -> dict:
    (lora_dir(home) / ADAPTERS_MANIFEST).unlink(missing_ok=True)
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            [lora.trained_adapters], instance=instance,
            resources={"event_store": store, "mlflow_tracking": MlflowTracking()},
            run_config={"ops": {"trained_adapters": {"config": {"steps": steps, "batch_size": batch_size}}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        wall = time.perf_counter() - started
    assert result.success
    [entry] = trained_adapters(home).values()
    shutil.rmtree(entry["path"], ignore_errors=True)
    return {**entry, "asset_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4, help="Pairs of runs; each pair swaps which goes first.")
    args = parser.parse_args()
    import torch

    config = TrainingConfig(steps=args.steps, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        data = prepare_home(home)
        store = EventStore(hms_home=str(home))
        started = time.perf_counter()
        model, tokenizer = load_base()
        load_seconds = time.perf_counter() - started
        bare_peft_loop(model, tokenizer, data["train"], replace(config, steps=3))
        bare_runs, asset_runs, bare_peaks, asset_peaks = [], [], [], []
        for repeat in range(args.repeats):
            for phase in ("bare", "asset") if repeat % 2 == 0 else ("asset", "bare"):
                with PeakRss() as peak:
                    if phase == "bare":
                        tokens, seconds = bare_peft_loop(model, tokenizer, data["train"], config)
                        bare_runs.append(tokens / seconds)
                    else:
                        entry = asset_run(home, store, args.steps, args.batch_size)
                        asset_runs.append(entry["tokens_per_second"])
                (bare_peaks if phase == "bare" else asset_peaks).append(peak)
        store.close()
    bare, asset = statistics.median(bare_runs), statistics.median(asset_runs)
    print(json.dumps({
        "benchmark": "lora_training",
        "base_model": "SmolLM2-135M-Instruct",
        "device": device(),
        "torch_threads": torch.get_num_threads(),
        "train_examples": len(data["train"]),
        "probes": len(data["probes"]),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "base_load_seconds": round(load_seconds, 1),
        "bare_tokens_per_second": round(bare, 1),
        "asset_tokens_per_second": round(asset, 1),
        "ratio_asset_to_bare": round(asset / bare, 3),
        "goal_ratio": 0.9,
        "bare_runs": [round(r, 1) for r in bare_runs],
        "asset_runs": [round(r, 1) for r in asset_runs],
        "asset_wall_seconds": round(entry["asset_seconds"], 1),
        "process_peak_rss_mb": round(_peak_total()),
        "bare_peak_rss_mb": round(max(p.peak for p in bare_peaks)),
        "asset_peak_rss_mb": round(max(p.peak for p in asset_peaks)),
        "bare_peak_above_start_mb": round(max(p.peak - p.start for p in bare_peaks)),
        "asset_peak_above_start_mb": round(max(p.peak - p.start for p in asset_peaks)),
        "fact_recall": {"base": entry["base_fact_recall"], "adapter": entry["fact_recall"]},
        "perplexity": {"base": entry["base_perplexity"], "adapter": entry["perplexity"]},
    }, indent=1))


def _peak_total() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
