"""The LoRA registry on a real MLflow store (SQLite under a temporary HMS home)."""

import pytest

from hms_resources.lora.registry import (
    CHALLENGER,
    CHAMPION,
    Decision,
    alias_version,
    decide_promotion,
    model_name,
    promote,
    register_version,
    rollback,
)
from hms_resources.lora.tracking import MlflowTracking

SET = "ana/concept-1"


@pytest.fixture
def client(tmp_path):
    tracking = MlflowTracking()
    experiment = tracking.experiment_id(tmp_path)
    client = tracking.client(tmp_path)
    client.experiment = experiment
    return client


def a_run(client, recall: float) -> str:
    run = client.create_run(client.experiment, tags={"hms.set_id": SET, "hms.dataset_version": "v1", "other": "x"})
    client.log_metric(run.info.run_id, "fact_recall", recall)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_promotion_needs_the_margin_and_to_beat_the_base():
    assert decide_promotion({"fact_recall": 0.5, "base_fact_recall": 0.1}, None, 0.05).promote
    assert not decide_promotion({"fact_recall": 0.1, "base_fact_recall": 0.2}, None, 0.05).promote
    assert decide_promotion({"fact_recall": 0.8, "base_fact_recall": 0.1}, {"fact_recall": 0.7}, 0.05) == Decision(
        True, "fact recall 0.8 beats the champion's 0.7 by at least 0.05")
    assert not decide_promotion({"fact_recall": 0.72, "base_fact_recall": 0.1}, {"fact_recall": 0.7}, 0.05).promote


def test_versions_carry_lineage_are_registered_once_and_roll_back(client):
    first = register_version(client, SET, a_run(client, 0.6))
    assert register_version(client, SET, first.run_id).version == first.version
    assert first.tags == {"hms.set_id": SET, "hms.dataset_version": "v1"}
    promote(client, SET, first.version, "first adapter of this set")
    second = register_version(client, SET, a_run(client, 0.9))
    client.set_registered_model_alias(model_name(SET), CHALLENGER, second.version)
    promote(client, SET, second.version, "better")
    assert str(alias_version(client, SET, CHAMPION).version) == str(second.version)
    assert rollback(client, SET) == str(first.version)
    assert str(alias_version(client, SET, CHAMPION).version) == str(first.version)
    assert str(alias_version(client, SET, CHALLENGER).version) == str(second.version)
    with pytest.raises(ValueError, match="replaced no earlier version"):
        rollback(client, SET)
    assert rollback(client, SET, second.version) == str(second.version)
    with pytest.raises(ValueError, match="no champion"):
        rollback(client, "ben/concept-2")


def test_the_registry_decides_each_version_once_so_a_rollback_stands(client):
    from hms_resources.lora.registry import registered_models, update_registry

    scored = []

    def score(run_id, probes):
        scored.append(run_id)
        return {"fact_recall": recalls[run_id]}

    first = a_run(client, 0.6)
    recalls = {first: 0.6}
    adapters = {SET: {"run_id": first, "fact_recall": 0.6, "base_fact_recall": 0.1}}
    [row] = update_registry(client, adapters, lambda _s: [], score, margin=0.05)
    assert row["promoted"] and row["reason"] == "first adapter of this set" and scored == []
    second = a_run(client, 0.62)
    recalls[second] = 0.62
    adapters = {SET: {"run_id": second, "fact_recall": 0.62, "base_fact_recall": 0.1}}
    [row] = update_registry(client, adapters, lambda _s: [], score, margin=0.05)
    assert not row["promoted"] and row["champion"] == "1" and row["challenger"] == "2" and scored == [first]
    assert "below the champion's 0.6 + margin 0.05" in row["reason"]
    [row] = update_registry(client, adapters, lambda _s: [], score, margin=0.0)
    assert row["reason"].startswith("decided earlier: kept as challenger") and scored == [first], "no second evaluation"
    rollback(client, SET, 2)
    [row] = update_registry(client, adapters, lambda _s: [], score, margin=0.05)
    assert row["reason"] == "already champion"
    rollback(client, SET, 1)
    update_registry(client, adapters, lambda _s: [], score, margin=0.0)
    assert str(alias_version(client, SET, CHAMPION).version) == "1", "a rollback is not undone by a re-run"
    [model] = registered_models(client)
    assert [(v["version"], v["aliases"]) for v in model["versions"]] == [("1", ["champion"]), ("2", ["challenger"])]
    assert model["versions"][1]["fact_recall"] == 0.62
