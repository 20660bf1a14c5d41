"""Trained LoRA adapters: every training dataset trained once per config and logged to MLflow with
its lineage, the scorer that evaluates the base model or any registered adapter on a set's held-out
data, and the comparison of every registered adapter against the base on the same data.

Files, all under `<HMS home>/lora/`: `training_data.json` (the datasets built), `adapters.json` (the
newest adapter of each set), `adapters/<run id>/` (each adapter's PEFT files), `comparison.json`
(the latest comparison, and the MLflow runs already logged), `evaluations.json` (every score computed,
keyed by what it depends on), `rehearsal/` (the base model's replies)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hms_resources.common.files import read_json, write_json
from hms_resources.lora.data import FactExamples, load_examples
from hms_resources.lora.paths import CHAMPIONS_FILE, lora_dir
from hms_resources.lora.paths import load_champions as load_champions
from hms_resources.lora.training import DEFAULT_BASE, TrainingConfig, base_name

TRAINING_DATA_MANIFEST = "training_data.json"
ADAPTERS_MANIFEST = "adapters.json"
ADAPTERS_DIR = "adapters"
COMPARISON_FILE = "comparison.json"
EVALUATIONS_FILE = "evaluations.json"
REHEARSAL_TOKENS = 64
"""Length of the base model's rehearsal replies: long enough to carry its style, short enough to train on."""
METRICS = ("paraphrase_recall", "teacher_paraphrase_recall", "forced_choice", "leakage", "routed_leakage", "general_perplexity",
           "general_perplexity_change", "general_perplexity_change_off", "perplexity")
"""The keys every evaluation is logged under, training and comparison runs alike."""

Log = Callable[[str], None]


def training_datasets(home: Path) -> dict[str, dict]:
    return read_json(lora_dir(home) / TRAINING_DATA_MANIFEST, {"datasets": {}})["datasets"]


def trained_adapters(home: Path) -> dict[str, dict]:
    return read_json(lora_dir(home) / ADAPTERS_MANIFEST, {})


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


class AdapterScorer:
    """Evaluates the base model, the teacher (the base with a set's facts in its context), or a
    registered adapter loaded onto the base, on a set's held-out data, the control prompts and the
    general text (`lora.evaluation`), and through the set's route (`router`; without one everything
    routes, the strictest reading). Scores are deterministic, so each is computed once per model,
    dataset version and generation length and kept in `evaluations.json`; an adapter missing from the
    HMS home (trained elsewhere) is downloaded from its MLflow run."""

    CACHE_FORMAT = "3"

    def __init__(self, client: Any, home: Path, max_new_tokens: int = TrainingConfig.max_new_tokens, router: Any | None = None):
        self.client = client
        self.home = Path(home)
        self.max_new_tokens = max_new_tokens
        self.router = router
        self._path = lora_dir(self.home) / EVALUATIONS_FILE

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

    def _cached(self, key: str, compute: Callable[[], Any]) -> Any:
        key = f"{key}|{self.max_new_tokens}|{self.CACHE_FORMAT}"
        cached = read_json(self._path, {})
        if key not in cached:
            cached[key] = compute()
            write_json(self._path, {**read_json(self._path, {}), key: cached[key]})
        return cached[key]

    def measure(self, model_key: str, model: Any, tokenizer: Any, base: tuple[Any, Any], base_model: str, examples: FactExamples,
                dataset_version: str) -> dict:
        """The raw figures of `model` (named by `model_key`: a run id, or base:<name>), cached."""
        from hms_resources.lora.evaluation import evaluate_model
        from hms_resources.lora.rehearsal import CONTROL_PROMPTS, base_replies

        def compute() -> dict:
            controls = base_replies(self.home, base, base_model, CONTROL_PROMPTS, self.max_new_tokens)
            return evaluate_model(model, tokenizer, examples, controls, self.max_new_tokens)

        return self._cached(f"{model_key}|{dataset_version}", compute)

    def base_raw(self, examples: FactExamples, dataset_version: str, base_model: str = "") -> dict:
        from hms_resources.lora.training import load_base

        base = load_base(base_model)
        return self.measure(f"base:{base_model or DEFAULT_BASE}", *base, base, base_model, examples, dataset_version)

    def teacher(self, examples: FactExamples, dataset_version: str, base_model: str = "") -> dict:
        """The ceiling: the base with the set's facts in its context, on the held-out questions."""
        from hms_resources.lora.evaluation import teacher_figures
        from hms_resources.lora.training import load_base

        return self._cached(f"teacher:{base_model or DEFAULT_BASE}|{dataset_version}",
                            lambda: teacher_figures(*load_base(base_model), examples, self.max_new_tokens))

    def route(self, built: dict, examples: FactExamples) -> dict | None:
        """The set's route at this dataset version (the same for every adapter of it), or None without a router."""
        if self.router is None:
            return None
        return self._cached(f"route:{built['user_id']}/{built['concept_id']}|{built['version']}", lambda: self.router.route(built, examples))

    def base_figures(self, built: dict, examples: FactExamples, base_model: str = "") -> dict[str, float]:
        """The base model's row of the comparison, beside the teacher's recall."""
        from hms_resources.lora.evaluation import MEASURED

        raw = self.base_raw(examples, built["version"], base_model)
        teacher = self.teacher(examples, built["version"], base_model)
        return {**{k: v for k, v in raw.items() if k in MEASURED}, "general_perplexity_change": 0.0, "general_perplexity_change_off": 0.0,
                "routed_leakage": 0.0, "chance": round(1 / max(len(examples.facts), 1), 4),
                "teacher_paraphrase_recall": teacher["paraphrase_recall"], "teacher_forced_choice": teacher["forced_choice"]}

    def figures(self, run_id: str | None, built: dict, examples: FactExamples, base_model: str = "") -> dict[str, float]:
        """Everything the promotion gate and the comparison read; `run_id` None scores the base itself."""
        from hms_resources.lora.training import load_adapter, load_base

        if run_id is None:
            return self.base_figures(built, examples, base_model)
        base_model = self.base_of(run_id)
        version = built["version"]

        def measured() -> dict:
            base = load_base(base_model)
            loaded = load_adapter(base[0], self.adapter_dir(run_id))
            try:
                return self.measure(run_id, loaded, base[1], base, base_model, examples, version)
            finally:
                loaded.unload()

        raw = self._cached(f"{run_id}|{version}", measured)
        return self.judged(raw, built, examples, base_model)

    def judged(self, raw: dict, built: dict, examples: FactExamples, base_model: str) -> dict[str, float]:
        """An adapter's raw figures beside the base's and the teacher's, through the set's route."""
        from hms_resources.lora.evaluation import with_base

        version = built["version"]
        figures = with_base(raw, self.base_raw(examples, version, base_model), len(examples.facts),
                            self.teacher(examples, version, base_model), self.route(built, examples))
        return {**figures, "tokens_saved": self.tokens_saved(examples, base_model)}

    @staticmethod
    def tokens_saved(examples: FactExamples, base_model: str = "") -> int:
        """Tokens of the set's facts in the context (a line each): what a call that routes to the adapter
        can leave out."""
        from hms_resources.context.prompt import render_memory
        from hms_resources.lora.training import load_base

        tokenizer = load_base(base_model)[1]
        return len(tokenizer("\n".join(render_memory(None, f["fact"]) for f in examples.facts) + "\n", add_special_tokens=False)["input_ids"])


def _trained(set_id: str, examples: FactExamples, base: tuple[Any, Any], training: TrainingConfig, home: Path,
             on_step: Callable[[int, float], None], on_check: Callable[[dict], None], log: Log) -> Any:
    """The adapter of `training.recipe`: distilled from the teacher's answers (`lora.distillation`) or,
    for `imitation`, trained on answers that restate the facts, with rehearsal."""
    import time

    from hms_resources.lora.rehearsal import mix_rehearsal, rehearsal_splits
    from hms_resources.lora.training import train_adapter

    model, tokenizer = base
    rehearsal, watched = rehearsal_splits(home, base, training.base_model, REHEARSAL_TOKENS)
    if training.recipe == "imitation":
        rows = mix_rehearsal(examples.train, rehearsal, training.rehearsal_ratio)
        return train_adapter(model, tokenizer, rows, training, on_step=on_step, validation=examples.validation, rehearsal=watched,
                             on_check=on_check)
    from hms_resources.lora.distillation import base_rows, distil_adapter, facts_system, teacher_rows

    started = time.perf_counter()
    system = facts_system([f["fact"] for f in examples.facts])
    taught = teacher_rows(model, tokenizer, [r["prompt"] for r in examples.train], system, training)
    held_out = teacher_rows(model, tokenizer, [r["prompt"] for r in examples.validation], system, training)
    unrelated, kept = base_rows(model, tokenizer, rehearsal, training), base_rows(model, tokenizer, watched, training)
    teacher_seconds = time.perf_counter() - started
    log(f"{set_id}: the teacher answered {len(taught)} questions with the facts in context, and the base {len(unrelated)} unrelated "
        f"rows, in {teacher_seconds:.0f} s")
    result = distil_adapter(model, tokenizer, taught, unrelated, training, validation=held_out, watched=kept, on_step=on_step,
                            on_check=on_check)
    result.teacher_seconds = teacher_seconds
    return result


def train_logged_adapter(
    set_id: str,
    built: dict,
    base: tuple[Any, Any],
    training: TrainingConfig,
    client: Any,
    experiment_id: str,
    home: Path,
    log: Log = lambda _m: None,
    router: Any | None = None,
) -> dict | None:
    """Train one dataset's adapter by `training.recipe`, stopping on its held-out paraphrases; evaluate
    the teacher, the base and the adapter (through the set's route, `router`); log the MLflow run:
    params, `loss` per step, the held-out losses per check, the figures, the adapter artifact and
    lineage tags. Returns the adapter's manifest entry, or None for a dataset without examples
    (nothing is trained or registered). A diverging loss (`TrainingFailed`) or any other failure marks
    the run FAILED and raises."""
    import time

    from hms_resources.lora.training import save_adapter

    model, tokenizer = base
    examples = load_examples(built["path"])
    if not examples.train:
        log(f"{set_id}: dataset {built['version']} has no training examples; skipped, no adapter is trained or registered")
        return None
    scorer = AdapterScorer(client, home, training.max_new_tokens, router=router)
    route = scorer.route(built, examples)
    teacher = scorer.teacher(examples, built["version"], training.base_model)
    base_raw = scorer.base_raw(examples, built["version"], training.base_model)
    log(f"{set_id}: the ceiling: recall {teacher['paraphrase_recall']} with the facts in context, {base_raw['paraphrase_recall']} "
        f"without; route threshold {route['threshold'] if route else '-'}")
    tags = {**lineage_tags(set_id, built), "hms.recipe": training.recipe,
            **({"hms.route_threshold": str(route["threshold"])} if route else {})}
    run = client.create_run(experiment_id, run_name=f"{set_id} {built['version']}", tags=tags)
    run_id = run.info.run_id
    params = {"base_model": base_name(training), **{k: v for k, v in asdict(training).items() if k != "base_model"},
              "dataset_version": built["version"], "train_examples": len(examples.train)}
    for name, value in params.items():
        client.log_param(run_id, name, ",".join(value) if isinstance(value, tuple) else value)
    every = max(1, training.steps // 10)

    def on_step(step: int, loss: float) -> None:
        client.log_metric(run_id, "loss", loss, step=step)
        if (step + 1) % every == 0:
            log(f"{set_id}: step {step + 1}/{training.steps} (at most), loss {loss:.4f}")

    def on_check(check: dict) -> None:
        for name, value in check.items():
            if name != "step":
                client.log_metric(run_id, name, value, step=check["step"])
        log(f"{set_id}: step {check['step']}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in check.items() if k != "step"))

    started = time.perf_counter()
    try:
        result = _trained(set_id, examples, base, training, home, on_step, on_check, log)
    except Exception:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, status="FAILED")
        raise
    training_seconds = time.perf_counter() - started
    try:
        raw = scorer.measure(run_id, result.adapter, tokenizer, base, training.base_model, examples, built["version"])
        directory = save_adapter(result.adapter, lora_dir(home) / ADAPTERS_DIR / run_id)
    finally:
        result.adapter.unload()
    figures = scorer.judged(raw, built, examples, training.base_model)
    metrics = {**figures, "tokens_per_second": round(result.tokens_per_second, 2), "best_step": result.best_step,
               "steps_run": len(result.losses), "training_seconds": round(training_seconds, 1)}
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    client.set_tag(run_id, "hms.stopped_because", result.stopped_because)
    client.log_artifacts(run_id, str(directory), "adapter")
    client.set_terminated(run_id, status="FINISHED")
    log(f"{set_id}: {verdict_line(figures)}; {training.recipe} stopped at step {len(result.losses)} ({result.stopped_because}), kept "
        f"step {result.best_step}, {training_seconds:.0f} s (run {run_id})")
    return {"key": f"{built['version']}:{config_key(training)}", "run_id": run_id, "path": str(directory), "recipe": training.recipe,
            "member_digests": built.get("member_digests", {}), "stopped_because": result.stopped_because, **metrics}


def verdict_line(figures: dict) -> str:
    """The figures a person judges an adapter by, in one line: recall with the facts (the ceiling),
    with the adapter and without either, routed leakage, perplexity off and on, tokens saved."""
    def change(key: str) -> str:
        return f"{figures[key]:+.1%}" if key in figures else "-"

    return (f"recall on held-out paraphrases: teacher with the facts {figures.get('teacher_paraphrase_recall', '-')}, adapter without "
            f"them {figures['paraphrase_recall']} (routed {figures.get('route_recall', '-')}), base without them "
            f"{figures['base_paraphrase_recall']}; forced choice {figures['forced_choice']} (chance {figures['chance']}); routed leakage "
            f"{figures.get('routed_leakage', '-')}; general perplexity {change('general_perplexity_change_off')} routed off, "
            f"{change('general_perplexity_change')} on; {figures.get('tokens_saved', '-')} tokens saved per routed call")


def compare_adapters(
    client: Any, experiment_id: str, datasets: dict[str, dict], scorer: AdapterScorer, home: Path, log: Log = lambda _m: None
) -> list[dict]:
    """Per set with registered versions: the base and every version evaluated on the set's newest data.
    Each evaluation is an MLflow run with the same metric keys (`METRICS`), logged once per model,
    dataset version and generation length (remembered in `comparison.json`)."""
    from hms_resources.lora.registry import GATE_TAG, registered_versions

    path = lora_dir(home) / COMPARISON_FILE
    logged: dict[str, str] = read_json(path, {"logged": {}}).get("logged", {})
    rows: list[dict] = []
    for set_id, built in sorted(datasets.items()):
        versions = registered_versions(client, set_id)
        if not versions:
            continue
        examples = load_examples(built["path"])
        base_model = scorer.base_of(versions[-1].run_id)
        entries = [("base", None, [], "-")] + [(f"v{v.version}", v, sorted(v.aliases), v.tags.get(GATE_TAG, "-")) for v in versions]
        for label, version, aliases, gate in entries:
            run_id = version.run_id if version is not None else None
            key = f"{set_id}|{run_id or 'base:' + (base_model or DEFAULT_BASE)}|{built['version']}|{scorer.max_new_tokens}"
            if key not in logged:
                log(f"{set_id}: evaluating {label} on dataset {built['version']}")
            measured = scorer.figures(run_id, built, examples, base_model)
            if key not in logged:
                logged[key] = _log_comparison_run(client, experiment_id, set_id, built, label, run_id, base_model, measured)
            rows.append({"set_id": set_id, "user_id": built["user_id"], "model": label, "run_id": run_id, "aliases": aliases,
                         "gate": gate, "dataset_version": built["version"], "probes": len(examples.eval), "chance": measured["chance"],
                         **{m: measured.get(m, 0.0) for m in METRICS}, "mlflow_run_id": logged[key]})
    write_json(path, {"rows": rows, "logged": logged})
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
        client.log_metric(run.info.run_id, name, measured.get(name, 0.0))
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def comparison_rows(home: Path) -> list[dict]:
    """The latest comparison; rows written before the gate's metrics existed are left out."""
    return [r for r in read_json(lora_dir(home) / COMPARISON_FILE, {"rows": []})["rows"] if "teacher_paraphrase_recall" in r]


def format_comparison(rows: Sequence[dict]) -> str:
    """A markdown table: the UI's and the terminal's view of the comparison. Recall is on held-out
    paraphrases without the facts in context (served through the router), beside the teacher's with them."""
    if not rows:
        return "no registered adapter to compare"
    lines = ["| set | model | aliases | recall (teacher with facts) | forced choice (chance) | routed leakage | general perplexity on / off | gate | probes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gate = r.get("gate", "-").split(": ", 1)[-1]
        lines.append(f"| {r['set_id']} | {r['model']} | {', '.join(r['aliases']) or '-'} | {r['paraphrase_recall']:.2f} "
                     f"({r['teacher_paraphrase_recall']:.2f}) | {r['forced_choice']:.2f} ({r['chance']:.2f}) | {r['routed_leakage']:.2f} | "
                     f"{r['general_perplexity']:.2f} ({r['general_perplexity_change']:+.1%} / {r['general_perplexity_change_off']:+.1%}) | "
                     f"{gate} | {r['probes']} |")
    return "\n".join(lines)


def publish_champions(client: Any, home: Path) -> list[dict]:
    """Write the champion of every set that is still approved with training data, with its local
    adapter directory, base, route threshold and the set's memories (whose vectors route queries to
    it), to `champions.json`: what the context resource chooses an adapter from, without reaching
    MLflow on a query."""
    from hms_resources.lora.registry import champion_adapters

    scorer = AdapterScorer(client, home)
    current = training_datasets(home)
    champions = [{**c, "path": str(scorer.adapter_dir(c["run_id"])), "base_model": scorer.base_of(c["run_id"]) or DEFAULT_BASE,
                  "memory_ids": current[c["set_id"]]["memory_ids"]}
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
