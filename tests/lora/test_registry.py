"""The LoRA registry on a real MLflow store (SQLite under a temporary HMS home)."""

import math

import pytest

from hms_resources.lora.registry import (
    CHALLENGER,
    CHAMPION,
    GATE_TAG,
    GATE_VERSION,
    Decision,
    PromotionGate,
    alias_version,
    champion_adapters,
    decide_promotion,
    gate_failures,
    model_name,
    promote,
    record_gate,
    register_version,
    registered_models,
    rollback,
    update_registry,
)
from hms_resources.lora.tracking import MlflowTracking

SET = "ana/concept-1"
GATE = PromotionGate()
PASSING = {
    "paraphrase_recall": 0.7, "teacher_paraphrase_recall": 0.7, "base_paraphrase_recall": 0.1, "routed_leakage": 0.0,
    "general_perplexity_change_off": 0.0, "general_perplexity_change": 0.02, "adapter_recall": 0.75, "route_recall": 0.9,
    "route_threshold": 0.31, "forced_choice": 0.8, "chance": 0.25, "leakage": 0.1, "general_perplexity": 10.2,
    "base_general_perplexity": 10.0, "perplexity": 3.1,
}
"""Served recall 0.7: at least 0.8 x the teacher's 0.7 and the base's 0.1 + 0.2; nothing routed leaks."""
LEAKY = {**PASSING, "routed_leakage": 0.25}
LEAKS = "routed leakage 0.25 above 0.02"


@pytest.fixture
def client(tmp_path):
    tracking = MlflowTracking()
    experiment = tracking.experiment_id(tmp_path)
    client = tracking.client(tmp_path)
    client.experiment = experiment
    return client


def a_run(client, recall: float, **lineage: str) -> str:
    run = client.create_run(client.experiment, tags={"hms.set_id": SET, "hms.dataset_version": "v1", "other": "x", **lineage})
    client.log_metric(run.info.run_id, "fact_recall", recall)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


class Evaluations:
    """`evaluate(set_id, run_id)` returning given figures per run, remembering which runs it evaluated."""

    def __init__(self, figures: dict[str, dict] | None = None) -> None:
        self.figures = figures or {}
        self.calls: list[str] = []

    def __call__(self, set_id: str, run_id: str) -> dict:
        self.calls.append(run_id)
        return self.figures[run_id]


def entry(run_id: str, figures: dict) -> dict:
    return {"run_id": run_id, **figures}


def tags(client, version) -> dict:
    return client.get_model_version(model_name(SET), str(version)).tags


@pytest.mark.parametrize("change, reasons", [
    ({"teacher_paraphrase_recall": 1.0}, ["recall without the facts 0.7 below 0.8 (0.8 x the teacher's 1 with them)"]),
    ({"base_paraphrase_recall": 0.6}, ["recall without the facts 0.7 below 0.8 (base 0.6 + 0.2)"]),
    ({"paraphrase_recall": 0.25}, ["recall without the facts 0.25 below 0.56 (0.8 x the teacher's 0.7 with them)",
                                   "recall without the facts 0.25 below 0.3 (base 0.1 + 0.2)"]),
    ({"routed_leakage": 0.05}, ["routed leakage 0.05 above 0.02"]),
    ({"general_perplexity_change_off": 0.03}, ["general perplexity +3.0% routed off, above +2.0%"]),
    ({"general_perplexity_change": 0.12}, ["general perplexity +12.0% routed on, above +5.0%"]),
    ({"routed_leakage": math.nan}, ["routed leakage nan above 0.02"]),
    ({"general_perplexity_change_off": math.nan}, ["general perplexity +nan% routed off, above +2.0%"]),
    ({"paraphrase_recall": math.nan}, ["recall without the facts nan below 0.56 (0.8 x the teacher's 0.7 with them)",
                                       "recall without the facts nan below 0.3 (base 0.1 + 0.2)"]),
    ({"routed_leakage": None}, ["not evaluated under the gate: no routed_leakage"]),
    ({"teacher_paraphrase_recall": None}, ["not evaluated under the gate: no teacher_paraphrase_recall"]),
])
def test_the_gate_names_the_metric_its_value_and_the_bound(change, reasons):
    assert gate_failures({**PASSING, **change}, GATE) == reasons


def test_the_gate_passes_figures_at_its_bounds_and_lists_every_missing_key():
    at_bounds = {**PASSING, "paraphrase_recall": 0.6, "teacher_paraphrase_recall": 0.75, "base_paraphrase_recall": 0.4,
                 "routed_leakage": 0.02, "general_perplexity_change_off": 0.02, "general_perplexity_change": 0.05}
    assert gate_failures(at_bounds, GATE) == []
    missing = "teacher_paraphrase_recall, base_paraphrase_recall, routed_leakage, general_perplexity_change_off, general_perplexity_change"
    assert gate_failures({"paraphrase_recall": 0.1}, GATE) == [f"not evaluated under the gate: no {missing}"]
    assert gate_failures(LEAKY, PromotionGate(max_routed_leakage=0.3)) == []
    assert gate_failures({**PASSING, "paraphrase_recall": 0.5}, PromotionGate(teacher_share=0.5)) == []


def test_the_gate_reads_served_figures_not_the_adapter_forced_on_or_the_old_gate_keys():
    """Unrouted leakage, forced choice and the adapter's own recall are reported, not gated: a control
    prompt that does not route is answered by the base model."""
    assert gate_failures({**PASSING, "leakage": 0.9, "forced_choice": 0.0, "adapter_recall": 0.0}, GATE) == []
    assert gate_failures({**PASSING, "adapter_recall": 1.0, "paraphrase_recall": 0.1}, GATE)
    gate_two = {k: PASSING[k] for k in ("paraphrase_recall", "base_paraphrase_recall", "forced_choice", "chance", "leakage",
                                        "general_perplexity_change")}
    assert gate_failures(gate_two, GATE) == [
        "not evaluated under the gate: no teacher_paraphrase_recall, routed_leakage, general_perplexity_change_off"]


def test_promotion_needs_the_gate_and_then_the_margin_over_the_champion():
    assert decide_promotion(PASSING, None, GATE, 0.05) == Decision(True, "first adapter of this set that passes the gate")
    assert decide_promotion(LEAKY, None, GATE, 0.05) == Decision(False, "fails the gate: " + LEAKS)
    assert not decide_promotion(LEAKY, {"paraphrase_recall": 0.0}, GATE, 0.05).promote
    assert decide_promotion({**PASSING, "paraphrase_recall": 0.8}, {"paraphrase_recall": 0.7}, GATE, 0.05) == Decision(
        True, "paraphrase recall 0.8 beats the champion's 0.7 by at least 0.05")
    assert decide_promotion({**PASSING, "paraphrase_recall": 0.72}, {"paraphrase_recall": 0.7}, GATE, 0.05) == Decision(
        False, "paraphrase recall 0.72 is below the champion's 0.7 + margin 0.05")


def test_versions_carry_lineage_are_registered_once_and_roll_back(client):
    first = register_version(client, SET, a_run(client, 0.6))
    assert register_version(client, SET, first.run_id).version == first.version
    assert first.tags == {"hms.set_id": SET, "hms.dataset_version": "v1"}
    promote(client, SET, first.version, "first adapter of this set")
    second = register_version(client, SET, a_run(client, 0.9))
    client.set_registered_model_alias(model_name(SET), CHALLENGER, second.version)
    promote(client, SET, second.version, "better")
    for version in (first, second):
        assert record_gate(client, SET, version.version, PASSING, GATE) == []
    assert str(alias_version(client, SET, CHAMPION).version) == str(second.version)
    assert rollback(client, SET) == str(first.version)
    assert str(alias_version(client, SET, CHAMPION).version) == str(first.version)
    assert str(alias_version(client, SET, CHALLENGER).version) == str(second.version)
    with pytest.raises(ValueError, match="replaced no earlier version"):
        rollback(client, SET)
    assert rollback(client, SET, second.version) == str(second.version)
    with pytest.raises(ValueError, match="no champion to roll back"):
        rollback(client, "ben/concept-2")
    with pytest.raises(ValueError, match="no version 9"):
        rollback(client, SET, 9)


def test_the_registry_decides_each_version_once_so_a_rollback_stands(client):
    first, second = a_run(client, 0.6), a_run(client, 0.62)
    evaluate = Evaluations()
    [row] = update_registry(client, {SET: entry(first, {**PASSING, "paraphrase_recall": 0.6})}, evaluate, GATE, margin=0.05)
    assert row["promoted"] and row["reason"] == "first adapter of this set that passes the gate" and evaluate.calls == []
    adapters = {SET: entry(second, {**PASSING, "paraphrase_recall": 0.62})}
    [row] = update_registry(client, adapters, evaluate, GATE, margin=0.05)
    assert not row["promoted"] and not row["demoted"] and row["champion"] == "1" and row["challenger"] == "2"
    assert "below the champion's 0.6 + margin 0.05" in row["reason"]
    assert evaluate.calls == [], "the champion's figures recorded under the gate are read, not evaluated again"
    [row] = update_registry(client, adapters, evaluate, GATE, margin=0.0)
    assert row["reason"].startswith("decided earlier: kept as challenger")
    rollback(client, SET, 2)
    [row] = update_registry(client, adapters, evaluate, GATE, margin=0.05)
    assert row["reason"] == "already champion"
    rollback(client, SET, 1)
    update_registry(client, adapters, evaluate, GATE, margin=0.0)
    assert str(alias_version(client, SET, CHAMPION).version) == "1", "a rollback is not undone by a re-run"
    assert evaluate.calls == []
    [model] = registered_models(client)
    assert [(v["version"], v["aliases"]) for v in model["versions"]] == [("1", ["champion"]), ("2", ["challenger"])]
    assert model["versions"][1]["paraphrase_recall"] == 0.62 and model["versions"][1]["gate"] == f"{GATE_VERSION}: passed"


def test_a_failing_first_adapter_is_registered_with_its_reason_and_never_champion(client):
    run = a_run(client, 0.9)
    evaluate = Evaluations()
    [row] = update_registry(client, {SET: entry(run, LEAKY)}, evaluate, GATE, margin=0.05)
    assert row == {"set_id": SET, "champion": None, "challenger": "1", "promoted": False, "demoted": False,
                   "reason": "fails the gate: " + LEAKS}
    assert tags(client, 1)["hms.gate"] == f"{GATE_VERSION}: failed: {LEAKS}"
    assert tags(client, 1)["hms.figure.routed_leakage"] == "0.25" and tags(client, 1)["hms.figure.perplexity"] == "3.1"
    assert alias_version(client, SET, CHAMPION) is None and champion_adapters(client) == [] and evaluate.calls == []
    [row] = update_registry(client, {SET: entry(run, LEAKY)}, evaluate, GATE, margin=0.05)
    assert row["reason"].startswith("decided earlier: kept as challenger: fails the gate")
    assert alias_version(client, SET, CHAMPION) is None


def test_a_failing_challenger_leaves_the_champion_in_place_without_evaluating_it(client):
    first, second = a_run(client, 0.5), a_run(client, 0.9)
    evaluate = Evaluations()
    [row] = update_registry(client, {SET: entry(first, PASSING)}, evaluate, GATE, margin=0.05)
    assert row["promoted"] and [c["version"] for c in champion_adapters(client)] == ["1"]
    [row] = update_registry(client, {SET: entry(second, {**LEAKY, "paraphrase_recall": 0.99})}, evaluate, GATE, margin=0.05)
    assert not row["promoted"] and row["champion"] == "1" and row["reason"] == "fails the gate: " + LEAKS
    assert [c["version"] for c in champion_adapters(client)] == ["1"] and evaluate.calls == []


def test_an_old_champion_that_fails_the_gate_is_demoted_once(client):
    old, newer = a_run(client, 0.9), a_run(client, 0.95)
    promote(client, SET, register_version(client, SET, old).version, "first adapter of this set")
    evaluate = Evaluations({old: LEAKY})
    adapters = {SET: entry(newer, {**PASSING, "general_perplexity_change": 0.2})}
    [row] = update_registry(client, adapters, evaluate, GATE, margin=0.05)
    assert row["demoted"] and not row["promoted"] and row["champion"] is None and row["challenger"] == "2"
    assert row["reason"] == f"demoted: fails the gate: {LEAKS} | fails the gate: general perplexity +20.0% routed on, above +5.0%"
    assert alias_version(client, SET, CHAMPION) is None and champion_adapters(client) == []
    assert tags(client, 1)["hms.demoted_because"] == "fails the gate: " + LEAKS
    [row] = update_registry(client, adapters, evaluate, GATE, margin=0.05)
    assert not row["demoted"] and evaluate.calls == [old]


def test_a_demotion_lets_a_passing_challenger_become_the_first_champion(client):
    old, newer = a_run(client, 0.9), a_run(client, 0.5)
    promote(client, SET, register_version(client, SET, old).version, "first adapter of this set")
    evaluate = Evaluations({old: {**PASSING, "teacher_paraphrase_recall": 1.0}})
    [row] = update_registry(client, {SET: entry(newer, PASSING)}, evaluate, GATE, margin=0.05)
    assert row["demoted"] and row["promoted"] and row["reason"] == (
        "demoted: fails the gate: recall without the facts 0.7 below 0.8 (0.8 x the teacher's 1 with them)"
        " | first adapter of this set that passes the gate")
    assert [c["version"] for c in champion_adapters(client)] == ["2"]


def test_an_old_champion_that_is_the_newest_adapter_is_demoted_on_the_already_champion_path(client):
    old = a_run(client, 0.9)
    promote(client, SET, register_version(client, SET, old).version, "first adapter of this set")
    evaluate = Evaluations({old: LEAKY})
    adapters = {SET: {"run_id": old, "fact_recall": 0.9, "base_fact_recall": 0.1}}
    [row] = update_registry(client, adapters, evaluate, GATE, margin=0.05)
    assert row["demoted"] and row["challenger"] is None and row["reason"] == f"demoted: fails the gate: {LEAKS}"
    assert tags(client, 1)["hms.gate"] == f"{GATE_VERSION}: failed: {LEAKS}"
    [row] = update_registry(client, adapters, evaluate, GATE, margin=0.05)
    assert row["reason"] == f"demoted earlier: fails the gate: {LEAKS}" and evaluate.calls == [old]
    assert champion_adapters(client) == []


def test_an_old_champion_that_passes_the_gate_is_kept_and_evaluated_once(client):
    old, newer, best = a_run(client, 0.9), a_run(client, 0.95), a_run(client, 0.99)
    promote(client, SET, register_version(client, SET, old).version, "first adapter of this set")
    evaluate = Evaluations({old: PASSING})
    adapters = {SET: entry(newer, {**PASSING, "paraphrase_recall": 0.72})}
    for _ in range(2):
        [row] = update_registry(client, adapters, evaluate, GATE, margin=0.05)
        assert not row["demoted"] and not row["promoted"] and row["champion"] == "1"
    assert evaluate.calls == [old] and tags(client, 1)["hms.gate"] == f"{GATE_VERSION}: passed"
    assert "hms.demoted_because" not in tags(client, 1)
    [row] = update_registry(client, {SET: entry(best, {**PASSING, "paraphrase_recall": 0.9})}, evaluate, GATE, margin=0.05)
    assert row["promoted"] and row["reason"] == "paraphrase recall 0.9 beats the champion's 0.7 by at least 0.05"
    assert evaluate.calls == [old], "the champion's recorded figures decide, not a second evaluation"


def test_a_champion_brought_back_by_a_forced_rollback_is_not_demoted(client):
    old, newer = a_run(client, 0.9), a_run(client, 0.5)
    register_version(client, SET, old)
    update_registry(client, {SET: entry(newer, PASSING)}, Evaluations(), GATE, margin=0.05)
    rollback(client, SET, 1, force=True)
    evaluate = Evaluations({old: LEAKY})
    [row] = update_registry(client, {SET: entry(newer, PASSING)}, evaluate, GATE, margin=0.05)
    assert not row["demoted"] and row["champion"] == "1" and evaluate.calls == []


def test_rollback_refuses_a_failing_or_unevaluated_version_unless_forced(client):
    failing, passing, unevaluated = a_run(client, 0.9), a_run(client, 0.5), a_run(client, 0.8)
    update_registry(client, {SET: entry(failing, LEAKY)}, Evaluations(), GATE, margin=0.05)
    update_registry(client, {SET: entry(passing, PASSING)}, Evaluations(), GATE, margin=0.05)
    register_version(client, SET, unevaluated)
    with pytest.raises(ValueError, match=f"{SET}: version 1 fails the gate: {LEAKS}; roll back with force"):
        rollback(client, SET, 1)
    with pytest.raises(ValueError, match="version 3 was never evaluated under the promotion gate"):
        rollback(client, SET, 3)
    with pytest.raises(ValueError, match=r"version 2 fails the gate: recall without the facts 0.7 below 0.8 \(base 0.1 \+ 0.7\)"):
        rollback(client, SET, 2, gate=PromotionGate(recall_margin=0.7))
    assert str(alias_version(client, SET, CHAMPION).version) == "2"
    assert rollback(client, SET, 1, force=True) == "1"
    assert str(alias_version(client, SET, CHAMPION).version) == "1" and tags(client, 1)["hms.forced_rollback"] == "true"
    assert rollback(client, SET, 2) == "2" and "hms.forced_rollback" not in tags(client, 2)


def test_rollback_names_a_version_when_a_demotion_left_no_champion(client):
    old, newer = a_run(client, 0.9), a_run(client, 0.5)
    promote(client, SET, register_version(client, SET, old).version, "first adapter of this set")
    [row] = update_registry(client, {SET: entry(newer, LEAKY)}, Evaluations({old: LEAKY}), GATE, margin=0.05)
    assert row["demoted"] and alias_version(client, SET, CHAMPION) is None
    with pytest.raises(ValueError, match="no champion to roll back"):
        rollback(client, SET)
    with pytest.raises(ValueError, match="version 2 fails the gate"):
        rollback(client, SET, 2)
    assert rollback(client, SET, 1, force=True) == "1" and "hms.rolled_back_from" not in tags(client, 1)
    assert [c["version"] for c in champion_adapters(client)] == ["1"]


def test_a_champion_that_passed_gate_two_is_judged_again_under_gate_three(client):
    """Gate 2 judged the adapter forced on and by forced choice; gate 3 reads served recall against
    the teacher, so an earlier pass counts for nothing, in an update and in a rollback."""
    old, newer = a_run(client, 0.9), a_run(client, 0.5)
    version = register_version(client, SET, old).version
    client.set_model_version_tag(model_name(SET), str(version), GATE_TAG, "2: passed")
    promote(client, SET, version, "first adapter of this set")
    evaluate = Evaluations({old: {**PASSING, "teacher_paraphrase_recall": 1.0}})
    [row] = update_registry(client, {SET: entry(newer, LEAKY)}, evaluate, GATE, margin=0.05)
    assert row["demoted"] and evaluate.calls == [old]
    assert tags(client, 1)[GATE_TAG] == f"{GATE_VERSION}: failed: recall without the facts 0.7 below 0.8 (0.8 x the teacher's 1 with them)"
    client.set_model_version_tag(model_name(SET), "1", GATE_TAG, "2: passed")
    with pytest.raises(ValueError, match=f"version 1 was evaluated under gate 2, not gate {GATE_VERSION}"):
        rollback(client, SET, 1)


def test_a_champion_carries_its_fitted_route_threshold_to_serving(client):
    routed, older = a_run(client, 0.9, **{"hms.route_threshold": "0.3125"}), a_run(client, 0.9)
    update_registry(client, {SET: entry(routed, PASSING)}, Evaluations(), GATE, margin=0.05)
    assert tags(client, 1)["hms.route_threshold"] == "0.3125"
    [champion] = champion_adapters(client)
    assert champion["route_threshold"] == 0.3125
    other = "ben/concept-2"
    version = register_version(client, other, older).version
    promote(client, other, version, "trained before thresholds were fitted")
    assert [c["route_threshold"] for c in champion_adapters(client)] == [0.3125, None], "None: the assembler's minimum applies"
