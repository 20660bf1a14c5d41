"""Trained LoRA adapters: every training dataset trained once per config and logged to MLflow with
its lineage, the scorer that evaluates the base model or any registered adapter on a set's probes,
and the comparison of every registered adapter against the base on the same probes.

Files, all under `<HMS home>/lora/`: `training_data.json` (the datasets built), `adapters.json` (the
newest adapter of each set), `adapters/<run id>/` (each adapter's PEFT files), `comparison.json`
(the latest comparison, and the scores already computed, keyed by what they depend on)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hms_resources.common.files import read_json, write_json
from hms_resources.lora.paths import CHAMPIONS_FILE, lora_dir
from hms_resources.lora.paths import load_champions as load_champions
from hms_resources.lora.training import DEFAULT_BASE, TrainingConfig, base_name

TRAINING_DATA_MANIFEST = "training_data.json"
ADAPTERS_MANIFEST = "adapters.json"
ADAPTERS_DIR = "adapters"
COMPARISON_FILE = "comparison.json"
METRICS = ("fact_recall", "perplexity")
"""The keys every evaluation is logged under, training and comparison runs alike."""

Log = Callable[[str], None]


def training_datasets(home: Path) -> dict[str, dict]:
    return read_json(lora_dir(home) / TRAINING_DATA_MANIFEST, {"datasets": {}})["datasets"]


def trained_adapters(home: Path) -> dict[str, dict]:
    return read_json(lora_dir(home) / ADAPTERS_MANIFEST, {})


def load_splits(path: str | Path) -> tuple[list[dict], list[dict]]:
    """The `train` examples and `eval` probes of a saved training dataset."""
    from datasets import load_from_disk

    data = load_from_disk(str(path))
    return data["train"].to_list(), data["eval"].to_list()


def config_key(config: TrainingConfig) -> str:
    """Names a training config: a dataset trained under the same key is not trained again."""
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:12]


def untrained(datasets: dict[str, dict], adapters: dict[str, dict], key: str) -> dict[str, dict]:
    return {s: d for s, d in sorted(datasets.items()) if adapters.get(s, {}).get("key") != f"{d['version']}:{key}"}


def lineage_tags(set_id: str, built: dict) -> dict[str, str]:
    return {
        "hms.set_id": set_id,
        "hms.user_id": built["user_id"],
        "hms.concept_id": built["concept_id"],
        "hms.dataset_version": built["version"],
        "hms.fingerprint": built["fingerprint"],
        "hms.memory_ids_sha256": hashlib.sha256("\n".join(sorted(built["memory_ids"])).encode()).hexdigest(),
    }


def train_logged_adapter(
    set_id: str,
    built: dict,
    base: tuple[Any, Any],
    training: TrainingConfig,
    client: Any,
    experiment_id: str,
    home: Path,
    log: Log = lambda _m: None,
) -> dict | None:
    """Train one dataset's adapter, evaluate base and adapter on its probes, and log the MLflow run:
    params, `loss` per step, the metrics, the adapter artifact and lineage tags. Returns the adapter's
    manifest entry, or None for a dataset without examples (nothing is trained or registered).
    A diverging loss (`TrainingFailed`) or any other failure marks the run FAILED and raises."""
    from hms_resources.lora.training import evaluate, save_adapter, train_adapter

    model, tokenizer = base
    rows, probes = load_splits(built["path"])
    if not rows:
        log(f"{set_id}: dataset {built['version']} has no training examples; skipped, no adapter is trained or registered")
        return None
    base_scores = evaluate(model, tokenizer, probes, training.max_new_tokens)
    run = client.create_run(experiment_id, run_name=f"{set_id} {built['version']}", tags=lineage_tags(set_id, built))
    run_id = run.info.run_id
    params = {"base_model": base_name(training), "rank": training.rank, "alpha": training.alpha,
              "target_modules": ",".join(training.target_modules), "learning_rate": training.learning_rate,
              "steps": training.steps, "batch_size": training.batch_size, "dataset_version": built["version"]}
    for name, value in params.items():
        client.log_param(run_id, name, value)
    every = max(1, training.steps // 10)

    def on_step(step: int, loss: float) -> None:
        client.log_metric(run_id, "loss", loss, step=step)
        if (step + 1) % every == 0 or step + 1 == training.steps:
            log(f"{set_id}: step {step + 1}/{training.steps}, loss {loss:.4f}")

    try:
        result = train_adapter(model, tokenizer, rows, training, on_step=on_step)
    except Exception:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, status="FAILED")
        raise
    try:
        scores = evaluate(result.adapter, tokenizer, probes, training.max_new_tokens)
        directory = save_adapter(result.adapter, lora_dir(home) / ADAPTERS_DIR / run_id)
    finally:
        result.adapter.unload()
    metrics = {**scores, **{f"base_{k}": v for k, v in base_scores.items()}, "tokens_per_second": round(result.tokens_per_second, 2)}
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    client.log_artifacts(run_id, str(directory), "adapter")
    client.set_terminated(run_id, status="FINISHED")
    log(f"{set_id}: fact recall {base_scores['fact_recall']} -> {scores['fact_recall']}, perplexity "
        f"{base_scores['perplexity']} -> {scores['perplexity']}, {result.tokens_per_second:.0f} tokens/s (run {run_id})")
    return {"key": f"{built['version']}:{config_key(training)}", "run_id": run_id, "path": str(directory),
            "member_digests": built.get("member_digests", {}), **metrics}


class AdapterScorer:
    """Scores the base model, or a registered adapter loaded onto it, on probes; an adapter missing
    from the HMS home (trained elsewhere) is downloaded from its MLflow run."""

    def __init__(self, client: Any, home: Path, max_new_tokens: int = TrainingConfig.max_new_tokens):
        self.client = client
        self.home = Path(home)
        self.max_new_tokens = max_new_tokens

    def base_of(self, run_id: str) -> str:
        """The base a run trained on: "" for the default (its params name it by `DEFAULT_BASE`)."""
        named = self.client.get_run(run_id).data.params.get("base_model", "")
        return "" if named in ("", DEFAULT_BASE) else named

    def adapter_dir(self, run_id: str) -> Path:
        local = lora_dir(self.home) / ADAPTERS_DIR / run_id
        if not (local / "adapter_config.json").exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            fetched = Path(self.client.download_artifacts(run_id, "adapter", str(local.parent / f".{run_id}.download")))
            fetched.rename(local)
        return local

    def score(self, run_id: str | None, probes: Sequence[dict], base_model: str = "") -> dict[str, float]:
        """`run_id` None scores `base_model` itself."""
        from hms_resources.lora.training import evaluate, load_adapter, load_base

        if run_id is None:
            model, tokenizer = load_base(base_model)
            return evaluate(model, tokenizer, probes, self.max_new_tokens)
        model, tokenizer = load_base(self.base_of(run_id))
        loaded = load_adapter(model, self.adapter_dir(run_id))
        try:
            return evaluate(loaded, tokenizer, probes, self.max_new_tokens)
        finally:
            loaded.unload()


def compare_adapters(
    client: Any, experiment_id: str, datasets: dict[str, dict], scorer: AdapterScorer, home: Path, log: Log = lambda _m: None
) -> list[dict]:
    """Per set with registered versions: the base and every version scored on the set's newest probes.
    Each evaluation is an MLflow run with the same metric keys (`METRICS`), logged once: a score whose
    model, probes and generation length are unchanged is taken from `comparison.json`."""
    from hms_resources.lora.registry import registered_versions

    path = lora_dir(home) / COMPARISON_FILE
    scores: dict[str, dict] = read_json(path, {"scores": {}})["scores"]
    rows: list[dict] = []
    for set_id, built in sorted(datasets.items()):
        versions = registered_versions(client, set_id)
        if not versions:
            continue
        probes = load_splits(built["path"])[1]
        base_model = scorer.base_of(versions[-1].run_id)
        entries = [("base", None, [])] + [(f"v{v.version}", v, sorted(v.aliases)) for v in versions]
        for label, version, aliases in entries:
            run_id = version.run_id if version is not None else None
            key = f"{set_id}|{run_id or 'base:' + (base_model or DEFAULT_BASE)}|{built['version']}|{scorer.max_new_tokens}"
            if key not in scores:
                log(f"{set_id}: scoring {label} on {len(probes)} probes of dataset {built['version']}")
                measured = scorer.score(run_id, probes, base_model)
                scores[key] = {**measured, "mlflow_run_id": _log_comparison_run(
                    client, experiment_id, set_id, built, label, run_id, base_model, measured)}
            rows.append({"set_id": set_id, "user_id": built["user_id"], "model": label, "run_id": run_id,
                         "aliases": aliases, "dataset_version": built["version"], "probes": len(probes),
                         **{m: scores[key][m] for m in METRICS}, "mlflow_run_id": scores[key]["mlflow_run_id"]})
    write_json(path, {"rows": rows, "scores": scores})
    return rows


def _log_comparison_run(
    client: Any, experiment_id: str, set_id: str, built: dict, label: str, run_id: str | None, base_model: str, measured: dict
) -> str:
    run = client.create_run(experiment_id, run_name=f"{set_id} {label} on {built['version']}", tags={
        "hms.set_id": set_id, "hms.user_id": built["user_id"], "hms.concept_id": built["concept_id"],
        "hms.evaluated": "base" if run_id is None else "adapter", "hms.model": label,
        "hms.eval_dataset_version": built["version"], **({"hms.adapter_run_id": run_id} if run_id else {}),
    })
    client.log_param(run.info.run_id, "model", label)
    client.log_param(run.info.run_id, "base_model", base_model or DEFAULT_BASE)
    client.log_param(run.info.run_id, "eval_dataset_version", built["version"])
    for name in METRICS:
        client.log_metric(run.info.run_id, name, measured[name])
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def comparison_rows(home: Path) -> list[dict]:
    return read_json(lora_dir(home) / COMPARISON_FILE, {"rows": []})["rows"]


def format_comparison(rows: Sequence[dict]) -> str:
    """A markdown table: the UI's and the terminal's view of the comparison."""
    if not rows:
        return "no registered adapter to compare"
    lines = ["| set | model | aliases | fact recall | perplexity | probes | eval dataset |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set_id']} | {r['model']} | {', '.join(r['aliases']) or '-'} | {r['fact_recall']:.3f} | "
                     f"{r['perplexity']:.3f} | {r['probes']} | {r['dataset_version']} |")
    return "\n".join(lines)


def publish_champions(client: Any, home: Path) -> list[dict]:
    """Write the champion of every set that is still approved with training data, with its local
    adapter directory and base, to `champions.json`: what the context resource chooses an adapter
    from, without reaching MLflow on a query."""
    from hms_resources.lora.registry import champion_adapters

    scorer = AdapterScorer(client, home)
    current = training_datasets(home)
    champions = [{**c, "path": str(scorer.adapter_dir(c["run_id"])), "base_model": scorer.base_of(c["run_id"]) or DEFAULT_BASE}
                 for c in champion_adapters(client) if c["set_id"] in current]
    write_json(lora_dir(home) / CHAMPIONS_FILE, champions)
    return champions


RETRAIN_CHANGED_SHARE = 0.2
"""An approved set whose members changed by this share since its adapter was trained is trained again."""


def sets_due_for_training(home: Path, changed_share_at_least: float = RETRAIN_CHANGED_SHARE) -> list[dict]:
    """Approved candidate sets (by the curation file as it is now) with no adapter yet, or whose members
    were added, removed or reworded by at least `changed_share_at_least` since their adapter."""
    from hms_resources.lora.candidates import APPROVED, changed_share, load_candidate_sets, load_curation

    curation = load_curation(home)
    adapters = trained_adapters(home)
    due = []
    for candidate_set in load_candidate_sets(lora_dir(home)):
        if curation.set_status(candidate_set.set_id) != APPROVED or not candidate_set.memory_ids:
            continue
        adapter = adapters.get(candidate_set.set_id)
        if adapter is None:
            reason = "approved and not trained yet"
        else:
            share = changed_share(adapter.get("member_digests", {}), candidate_set.member_digests)
            if share < changed_share_at_least:
                continue
            reason = f"{share:.0%} of its members changed since its adapter was trained"
        due.append({"set_id": candidate_set.set_id, "fingerprint": candidate_set.fingerprint, "reason": reason})
    return due
