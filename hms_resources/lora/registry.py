"""The LoRA registry in MLflow's model registry: one registered model per candidate set, a version per
trained adapter with its lineage, and two aliases. `challenger` is the newest version; it becomes
`champion` only if it passes the promotion gate (it answers paraphrased questions with its facts, ranks
the right fact first, leaves unrelated prompts alone and keeps the base model's language) and beats the
champion's paraphrase recall by the configured margin. A champion promoted before the gate is
re-evaluated once and demoted if it fails. Rolling back moves `champion` to an earlier version that
passed the gate (unless forced) and records which version it replaced."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHAMPION, CHALLENGER = "champion", "challenger"
DECISION_TAG = "hms.decision"
GATE_TAG = "hms.gate"
DEMOTED_TAG = "hms.demoted_because"
FORCED_TAG = "hms.forced_rollback"
FIGURE_TAG_PREFIX = "hms.figure."
LINEAGE_TAGS = ("hms.set_id", "hms.user_id", "hms.concept_id", "hms.dataset_version", "hms.fingerprint", "hms.memory_ids_sha256",
                "hms.recipe", "hms.route_threshold")
GATE_VERSION = "3"
GATE_KEYS = ("paraphrase_recall", "teacher_paraphrase_recall", "base_paraphrase_recall", "routed_leakage", "general_perplexity_change_off",
             "general_perplexity_change")
FIGURE_KEYS = GATE_KEYS + ("adapter_recall", "forced_choice", "base_forced_choice", "teacher_forced_choice", "chance", "leakage",
                           "route_recall", "route_threshold", "tokens_saved", "general_perplexity", "base_general_perplexity", "perplexity")
_TOLERANCE = 1e-9


def model_name(set_id: str) -> str:
    return "hms-lora-" + re.sub(r"[^A-Za-z0-9._-]", "-", set_id)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class PromotionGate:
    """What an adapter must show before it answers for a user, whatever the champion does. Recall is the
    served one: through the router, on held-out paraphrases, WITHOUT the facts in the model's context."""

    teacher_share: float = 0.8
    """Recall at least this share of the teacher's (the base model WITH the facts in its context): the
    adapter can stand in for the facts, so the context can drop them."""
    recall_margin: float = 0.2
    """Recall above the base model's (without the facts) by this much: it learned them, not the wording."""
    max_routed_leakage: float = 0.02
    """Share of unrelated control prompts that route to it and change: a user's facts must not leak."""
    max_perplexity_change_off: float = 0.02
    """Relative rise of general perplexity as served (text that does not route is the base's): 0 by construction."""
    max_perplexity_change: float = 0.05
    """Relative rise of general perplexity with the adapter on: it must keep the base model's language."""


def _n(value: float) -> str:
    return f"{round(float(value), 3):g}"


def _short_of(value: float, bound: float) -> bool:
    """`value` < `bound` beyond float noise; NaN never reaches a bound."""
    return not value >= bound - _TOLERANCE


def gate_failures(figures: dict, gate: PromotionGate) -> list[str]:
    """Why `figures` (an adapter's evaluation) fail `gate`, one reason per bound; none when it passes."""
    f = {k: float(figures[k]) for k in GATE_KEYS if figures.get(k) is not None}
    missing = [k for k in GATE_KEYS if k not in f]
    failures = [f"not evaluated under the gate: no {', '.join(missing)}"] if missing else []
    if {"paraphrase_recall", "teacher_paraphrase_recall"} <= f.keys():
        needed = gate.teacher_share * f["teacher_paraphrase_recall"]
        if _short_of(f["paraphrase_recall"], needed):
            failures.append(f"recall without the facts {_n(f['paraphrase_recall'])} below {_n(needed)} ({_n(gate.teacher_share)} x "
                            f"the teacher's {_n(f['teacher_paraphrase_recall'])} with them)")
    if {"paraphrase_recall", "base_paraphrase_recall"} <= f.keys():
        base, needed = f["base_paraphrase_recall"], f["base_paraphrase_recall"] + gate.recall_margin
        if _short_of(f["paraphrase_recall"], needed):
            failures.append(f"recall without the facts {_n(f['paraphrase_recall'])} below {_n(needed)} (base {_n(base)} + {_n(gate.recall_margin)})")
    if "routed_leakage" in f and _short_of(gate.max_routed_leakage, f["routed_leakage"]):
        failures.append(f"routed leakage {_n(f['routed_leakage'])} above {_n(gate.max_routed_leakage)}")
    for key, bound, named in (("general_perplexity_change_off", gate.max_perplexity_change_off, "routed off"),
                              ("general_perplexity_change", gate.max_perplexity_change, "routed on")):
        change = f.get(key)
        if change is not None and _short_of(bound, change):
            failures.append(f"general perplexity {change:+.1%} {named}, above {bound:+.1%}")
    return failures


def decide_promotion(challenger: dict, champion: dict | None, gate: PromotionGate, margin: float) -> Decision:
    """`challenger` and `champion`: figures on the set's current data. The gate comes first, so no
    champion, however weak, lets a failing adapter through."""
    failures = gate_failures(challenger, gate)
    if failures:
        return Decision(False, "fails the gate: " + "; ".join(failures))
    if champion is None:
        return Decision(True, "first adapter of this set that passes the gate")
    ours, theirs = challenger["paraphrase_recall"], champion["paraphrase_recall"]
    if not _short_of(ours, theirs + margin):
        return Decision(True, f"paraphrase recall {_n(ours)} beats the champion's {_n(theirs)} by at least {_n(margin)}")
    return Decision(False, f"paraphrase recall {_n(ours)} is below the champion's {_n(theirs)} + margin {_n(margin)}")


def adapter_figures(entry: dict) -> dict:
    """The figures among a manifest entry's fields."""
    return {k: entry[k] for k in FIGURE_KEYS if k in entry}


def gated(version: Any) -> bool:
    """The version was judged under today's gate (a champion without this was promoted on fact recall)."""
    return version.tags.get(GATE_TAG, "").startswith(f"{GATE_VERSION}:")


def figures_from_tags(version: Any) -> dict[str, float]:
    return {k.removeprefix(FIGURE_TAG_PREFIX): float(v) for k, v in version.tags.items() if k.startswith(FIGURE_TAG_PREFIX)}


def record_gate(client: Any, set_id: str, version: str | int, figures: dict, gate: PromotionGate) -> list[str]:
    """Tag the version with its figures and verdict, so the CLI and a rollback read them without
    evaluating again; returns the failures."""
    name, version = model_name(set_id), str(version)
    failures = gate_failures(figures, gate)
    for key, value in figures.items():
        client.set_model_version_tag(name, version, FIGURE_TAG_PREFIX + key, str(value))
    verdict = "failed: " + "; ".join(failures) if failures else "passed"
    client.set_model_version_tag(name, version, GATE_TAG, f"{GATE_VERSION}: {verdict}")
    return failures


def register_version(client: Any, set_id: str, run_id: str, artifact_path: str = "adapter") -> Any:
    """The version for `run_id`, created once (a re-run returns the same version), with the run's lineage tags."""
    from mlflow.exceptions import MlflowException

    name = model_name(set_id)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"hms.set_id": set_id}, description=f"LoRA adapters of candidate set {set_id}")
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.run_id == run_id:
            return version
    run = client.get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k in LINEAGE_TAGS}
    return client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id, tags=tags)


def alias_version(client: Any, set_id: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name(set_id), alias)
    except MlflowException:
        return None


def promote(client: Any, set_id: str, version: str | int, reason: str) -> None:
    name, version = model_name(set_id), str(version)
    previous = alias_version(client, set_id, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "hms.promoted_because", reason)
    if previous is not None and str(previous.version) != version:
        client.set_model_version_tag(name, version, "hms.replaced_champion", str(previous.version))


def _gate_refusal(version: Any, gate: PromotionGate) -> str | None:
    """Why `version` may not be champion again, or None when it passed today's gate."""
    tag = version.tags.get(GATE_TAG)
    if tag is None:
        return "was never evaluated under the promotion gate"
    if not gated(version):
        return f"was evaluated under gate {tag.split(':', 1)[0]}, not gate {GATE_VERSION}"
    if tag != f"{GATE_VERSION}: passed":
        return "fails the gate: " + tag.removeprefix(f"{GATE_VERSION}: failed: ")
    figures = figures_from_tags(version)
    failures = gate_failures(figures, gate) if figures else []
    return "fails the gate: " + "; ".join(failures) if failures else None


def rollback(client: Any, set_id: str, version: str | int | None = None, gate: PromotionGate = PromotionGate(),
             force: bool = False) -> str:
    """Make `version` (default: the version the current champion replaced) the champion again. A version
    that failed or never met the gate is refused unless `force`: a rollback must not bring back an adapter
    that leaks facts or damages the base model by accident."""
    from mlflow.exceptions import MlflowException

    name = model_name(set_id)
    current = alias_version(client, set_id, CHAMPION)
    if current is None and version is None:
        raise ValueError(f"{set_id}: no champion to roll back; name a version")
    target = str(version or current.tags.get("hms.replaced_champion") or "")
    if not target:
        raise ValueError(f"{set_id}: champion version {current.version} replaced no earlier version; name one")
    try:
        chosen = client.get_model_version(name, target)
    except MlflowException as error:
        raise ValueError(f"{set_id}: no version {target} of {name}") from error
    refusal = _gate_refusal(chosen, gate)
    if refusal and not force:
        raise ValueError(f"{set_id}: version {target} {refusal}; roll back with force (--force) to override")
    client.set_registered_model_alias(name, CHAMPION, target)
    if current is not None:
        client.set_model_version_tag(name, target, "hms.rolled_back_from", str(current.version))
    if refusal:
        client.set_model_version_tag(name, target, FORCED_TAG, "true")
    return target


def registered_versions(client: Any, set_id: str) -> list[Any]:
    """A set's versions, oldest first, with their aliases (a search leaves those out); none when the
    set has no registered model."""
    name = model_name(set_id)
    found = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    return [client.get_model_version(name, v.version) for v in found]


def _gate_champion(client: Any, set_id: str, adapter: dict, evaluate: Callable[[str, str], dict],
                   gate: PromotionGate) -> tuple[Any | None, tuple[str, str] | None]:
    """The champion after judging it once under today's gate, and (version, reason) when it failed and
    was demoted. A champion brought back by a forced rollback stays: someone chose it over the gate."""
    champion = alias_version(client, set_id, CHAMPION)
    if champion is None or gated(champion) or champion.tags.get(FORCED_TAG) == "true":
        return champion, None
    own = adapter_figures(adapter)
    same_run = champion.run_id == adapter["run_id"] and set(GATE_KEYS) <= own.keys()
    failures = record_gate(client, set_id, champion.version, own if same_run else evaluate(set_id, champion.run_id), gate)
    if not failures:
        return client.get_model_version(model_name(set_id), str(champion.version)), None
    reason = "fails the gate: " + "; ".join(failures)
    client.delete_registered_model_alias(model_name(set_id), CHAMPION)
    client.set_model_version_tag(model_name(set_id), str(champion.version), DEMOTED_TAG, reason)
    return None, (str(champion.version), reason)


def demote_ungated(client: Any, set_id: str, reason: str) -> bool:
    """Demote the set's champion if it was never judged under today's gate and cannot be now (its set
    has no training data any more). Returns whether one was demoted."""
    champion = alias_version(client, set_id, CHAMPION)
    if champion is None or gated(champion) or champion.tags.get(FORCED_TAG) == "true":
        return False
    client.delete_registered_model_alias(model_name(set_id), CHAMPION)
    client.set_model_version_tag(model_name(set_id), str(champion.version), DEMOTED_TAG, reason)
    return True


def _champion_figures(client: Any, set_id: str, champion: Any, evaluate: Callable[[str, str], dict], gate: PromotionGate) -> dict:
    """The champion's figures as recorded under today's gate, evaluated (and recorded) only when missing."""
    figures = figures_from_tags(champion) if gated(champion) else {}
    if "paraphrase_recall" in figures:
        return figures
    figures = evaluate(set_id, champion.run_id)
    record_gate(client, set_id, champion.version, figures, gate)
    return figures


def _decide(client: Any, set_id: str, version: Any, adapter: dict, champion: Any | None,
            evaluate: Callable[[str, str], dict], gate: PromotionGate, margin: float) -> tuple[str | None, bool, str]:
    """(challenger, promoted, reason) for the newest version, decided once so a rollback stands."""
    if champion is not None and champion.run_id == adapter["run_id"]:
        return None, False, "already champion"
    if DEMOTED_TAG in version.tags:
        return None, False, f"demoted earlier: {version.tags[DEMOTED_TAG]}"
    if DECISION_TAG in version.tags:
        return str(version.version), False, f"decided earlier: {version.tags[DECISION_TAG]}"
    name, number = model_name(set_id), str(version.version)
    client.set_registered_model_alias(name, CHALLENGER, number)
    challenger = adapter_figures(adapter)
    failures = record_gate(client, set_id, number, challenger, gate)
    held = _champion_figures(client, set_id, champion, evaluate, gate) if champion is not None and not failures else None
    decision = decide_promotion(challenger, held, gate, margin)
    if decision.promote:
        promote(client, set_id, number, decision.reason)
    client.set_model_version_tag(name, number, DECISION_TAG, ("promoted: " if decision.promote else "kept as challenger: ") + decision.reason)
    return number, decision.promote, decision.reason


def update_registry(
    client: Any,
    adapters: dict[str, dict],
    evaluate: Callable[[str, str], dict],
    gate: PromotionGate,
    margin: float,
) -> list[dict]:
    """Register each set's newest adapter (`adapters[set_id]`: its manifest entry, run_id and figures),
    judge a champion promoted before today's gate (`evaluate(set_id, run_id)` -> figures on the set's
    current data, called only when needed), then gate the challenger and promote it by `margin` of
    paraphrase recall. One row per set."""
    rows = []
    for set_id, adapter in sorted(adapters.items()):
        version = register_version(client, set_id, adapter["run_id"])
        champion, demoted = _gate_champion(client, set_id, adapter, evaluate, gate)
        if demoted is not None and demoted[0] == str(version.version):
            challenger, promoted, reason = None, False, ""
        else:
            challenger, promoted, reason = _decide(client, set_id, version, adapter, champion, evaluate, gate, margin)
        demotion = f"demoted: {demoted[1]}" if demoted else ""
        rows.append({"set_id": set_id, "champion": str(champion.version) if champion else None, "challenger": challenger,
                     "promoted": promoted, "demoted": demoted is not None, "reason": " | ".join(r for r in (demotion, reason) if r)})
    return rows


def champion_adapters(client: Any) -> list[dict]:
    """Every set's champion with its lineage, as the context resource selects among them."""
    found = []
    for registered in client.search_registered_models(filter_string="name LIKE 'hms-lora-%'"):
        set_id = registered.tags.get("hms.set_id")
        champion = alias_version(client, set_id, CHAMPION) if set_id else None
        if champion is None:
            continue
        found.append({
            "set_id": set_id, "model_name": registered.name, "version": str(champion.version), "run_id": champion.run_id,
            "uri": f"models:/{registered.name}@{CHAMPION}", "user_id": champion.tags.get("hms.user_id", set_id.rsplit("/", 1)[0]),
            "concept_id": champion.tags.get("hms.concept_id", set_id.split("/", 1)[-1]),
            "dataset_version": champion.tags.get("hms.dataset_version"),
            "route_threshold": float(champion.tags.get("hms.route_threshold") or 0) or None,
        })
    return sorted(found, key=lambda c: c["set_id"])


def registered_models(client: Any) -> list[dict]:
    """Every set's registered model with its versions, aliases, paraphrase recall and gate verdict."""
    found = []
    for registered in sorted(client.search_registered_models(filter_string="name LIKE 'hms-lora-%'"), key=lambda r: r.name):
        set_id = registered.tags.get("hms.set_id", registered.name)
        versions = []
        for v in registered_versions(client, set_id):
            recall = client.get_run(v.run_id).data.metrics.get("paraphrase_recall", figures_from_tags(v).get("paraphrase_recall"))
            versions.append({"version": str(v.version), "aliases": sorted(v.aliases), "run_id": v.run_id, "paraphrase_recall": recall,
                             "gate": v.tags.get(GATE_TAG), "decision": v.tags.get(DECISION_TAG)})
        found.append({"set_id": set_id, "name": registered.name, "versions": versions})
    return found
