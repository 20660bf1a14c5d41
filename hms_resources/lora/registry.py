"""The LoRA registry in MLflow's model registry: one registered model per candidate set, a version per
trained adapter with its lineage, and two aliases. `challenger` is the newest version; it becomes
`champion` only if it beats the champion's fact recall on the same probes by the configured margin
and passes the checks (it must not recall fewer facts than the base model). Rolling back moves
`champion` to an earlier version and records which version it replaced."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHAMPION, CHALLENGER = "champion", "challenger"
DECISION_TAG = "hms.decision"
LINEAGE_TAGS = ("hms.set_id", "hms.user_id", "hms.concept_id", "hms.dataset_version", "hms.fingerprint", "hms.memory_ids_sha256")


def model_name(set_id: str) -> str:
    return "hms-lora-" + re.sub(r"[^A-Za-z0-9._-]", "-", set_id)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(challenger: dict[str, float], champion: dict[str, float] | None, margin: float) -> Decision:
    """`challenger` and `champion`: fact_recall (and base_fact_recall for the challenger) on the same probes."""
    if challenger["fact_recall"] < challenger.get("base_fact_recall", 0.0):
        return Decision(False, f"recalls fewer facts than the base model ({challenger['fact_recall']} < {challenger['base_fact_recall']})")
    if champion is None:
        return Decision(True, "first adapter of this set")
    needed = champion["fact_recall"] + margin
    if challenger["fact_recall"] >= needed:
        return Decision(True, f"fact recall {challenger['fact_recall']} beats the champion's {champion['fact_recall']} by at least {margin}")
    return Decision(False, f"fact recall {challenger['fact_recall']} is below the champion's {champion['fact_recall']} + margin {margin}")


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


def rollback(client: Any, set_id: str, version: str | int | None = None) -> str:
    """Make `version` (default: the version the current champion replaced) the champion again."""
    current = alias_version(client, set_id, CHAMPION)
    if current is None:
        raise ValueError(f"{set_id}: no champion to roll back")
    target = str(version or current.tags.get("hms.replaced_champion") or "")
    if not target:
        raise ValueError(f"{set_id}: champion version {current.version} replaced no earlier version; name one")
    client.get_model_version(model_name(set_id), target)
    client.set_registered_model_alias(model_name(set_id), CHAMPION, target)
    client.set_model_version_tag(model_name(set_id), target, "hms.rolled_back_from", str(current.version))
    return target


def registered_versions(client: Any, set_id: str) -> list[Any]:
    """A set's versions, oldest first, with their aliases (a search leaves those out); none when the
    set has no registered model."""
    name = model_name(set_id)
    found = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    return [client.get_model_version(name, v.version) for v in found]


def update_registry(
    client: Any,
    adapters: dict[str, dict],
    probes_of: Callable[[str], list[dict]],
    score: Callable[[str, list[dict]], dict[str, float]],
    margin: float,
) -> list[dict]:
    """Register each set's newest adapter, make it the challenger, score the champion on the
    challenger's probes (`score(run_id, probes)`) and promote by `margin`. A version is decided once,
    so a rollback stands until a newer adapter wins. One row per set."""
    rows = []
    for set_id, adapter in sorted(adapters.items()):
        version = register_version(client, set_id, adapter["run_id"])
        champion = alias_version(client, set_id, CHAMPION)
        if champion is not None and champion.run_id == adapter["run_id"]:
            rows.append({"set_id": set_id, "champion": str(champion.version), "challenger": None, "promoted": False,
                         "reason": "already champion"})
            continue
        if DECISION_TAG in version.tags:
            rows.append({"set_id": set_id, "champion": str(champion.version) if champion else None, "challenger": str(version.version),
                         "promoted": False, "reason": f"decided earlier: {version.tags[DECISION_TAG]}"})
            continue
        client.set_registered_model_alias(model_name(set_id), CHALLENGER, str(version.version))
        challenger = {"fact_recall": adapter["fact_recall"], "base_fact_recall": adapter["base_fact_recall"]}
        held = score(champion.run_id, probes_of(set_id)) if champion is not None else None
        decision = decide_promotion(challenger, held, margin)
        if decision.promote:
            promote(client, set_id, version.version, decision.reason)
        client.set_model_version_tag(model_name(set_id), str(version.version), DECISION_TAG,
                                     ("promoted: " if decision.promote else "kept as challenger: ") + decision.reason)
        rows.append({"set_id": set_id, "champion": str(champion.version) if champion else None, "challenger": str(version.version),
                     "promoted": decision.promote, "reason": decision.reason})
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
            "uri": f"models:/{registered.name}@{CHAMPION}", "user_id": champion.tags.get("hms.user_id", set_id.split("/", 1)[0]),
            "concept_id": champion.tags.get("hms.concept_id", set_id.split("/", 1)[-1]),
            "dataset_version": champion.tags.get("hms.dataset_version"),
        })
    return sorted(found, key=lambda c: c["set_id"])


def registered_models(client: Any) -> list[dict]:
    """Every set's registered model with its versions, aliases and the fact recall each run logged."""
    found = []
    for registered in sorted(client.search_registered_models(filter_string="name LIKE 'hms-lora-%'"), key=lambda r: r.name):
        set_id = registered.tags.get("hms.set_id", registered.name)
        versions = []
        for v in registered_versions(client, set_id):
            metrics = client.get_run(v.run_id).data.metrics
            versions.append({"version": str(v.version), "aliases": sorted(v.aliases), "run_id": v.run_id,
                             "fact_recall": metrics.get("fact_recall"), "decision": v.tags.get(DECISION_TAG)})
        found.append({"set_id": set_id, "name": registered.name, "versions": versions})
    return found
