"""Knowledge crystallization end to end on a real store, the real base model (CPU) and a real MLflow
store: curation, training, the registry, the adapter comparison, `Context.adapter` and rollback."""

import json

import dagster as dg
import pytest
from click.testing import CliRunner

from hms_assets import domain_assets
from hms_resources.lora.candidates import PENDING, load_candidate_sets
from hms_resources.lora.registry import CHALLENGER, CHAMPION, alias_version, registered_versions
from hms_resources.lora.tracking import MlflowTracking
from tests.helpers import created, event

CRITERIA = {"min_importance": 0.0, "min_concept_cohesion": 0.0, "min_concept_size": 3, "stable_days": 7.0}
CELLO = ["I practise the cello every morning before work.", "My cello teacher wants more scales from me.",
         "The cello recital is at the community hall.", "I bought new strings for my cello.",
         "Cello lessons are on Thursday evenings."]
LORA_ASSETS = ("lora_candidate_sets", "lora_training_data", "trained_adapters", "lora_registry", "adapter_comparison")
OTHER = ["My sister lives in Porto.", "I am allergic to peanuts.", "Our dog is called Biscuit."]


class Home:
    """One HMS home shared by this module's tests: the store, its embedder and the runs made on it."""

    def __init__(self, path):
        from hms_jobs.homes import materialize_for_context
        from hms_resources.semantic.embedder import Embedder
        from hms_resources.store.event_store import EventStore
        from hms_resources.store.ingest import ingest_records

        self.path = path
        records = [created("ana", f"c{i}", text, minutes=i * 60) for i, text in enumerate(CELLO)]
        records += [created("ana", f"o{i}", text, minutes=600 + i * 60) for i, text in enumerate(OTHER)]
        records += [created("ben", f"b{i}", text, minutes=i * 60) for i, text in enumerate(CELLO)]
        records += [event("accessed", user, f"{prefix}{i}", 30 * 24 * 60, access_method="context")
                    for user, prefix in (("ana", "c"), ("ben", "b")) for i in range(5)]
        self.store = EventStore(hms_home=str(path))
        ingest_records(self.store, records)
        self.embedder = Embedder()
        materialize_for_context(self.store, self.embedder, log=lambda _m: None)
        self.curate(rejected_memories=[["ana", "c4"]])

    def curate(self, **curation) -> None:
        (self.path / "curation.json").write_text(json.dumps(curation))

    def run(self, assets: tuple[str, ...] = LORA_ASSETS, raise_on_error=True, **training) -> dg.ExecuteInProcessResult:
        config = {
            "lora_candidate_sets": {"config": CRITERIA}, "lora_training_data": {"config": {"min_facts": 3}},
            "trained_adapters": {"config": {"steps": 12, "batch_size": 6, "max_new_tokens": 24, "eval_every": 6, **training}},
            "lora_registry": {"config": {"max_new_tokens": 24}}, "adapter_comparison": {"config": {"max_new_tokens": 24}},
        }
        with dg.DagsterInstance.ephemeral() as instance:
            return dg.materialize(
                domain_assets(),
                selection=dg.AssetSelection.assets(*assets), instance=instance, raise_on_error=raise_on_error,
                resources={"event_store": self.store, "embedder": self.embedder, "mlflow_tracking": MlflowTracking()},
                run_config={"ops": {name: config[name] for name in assets}},
            )

    def client(self):
        return MlflowTracking().client(self.path)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


@pytest.fixture(scope="module")
def home(tmp_path_factory, seed_base_replies):
    path = tmp_path_factory.mktemp("crystallization")
    seed_base_replies(path, 24)  # the max_new_tokens of `Home.run`
    found = Home(path)
    yield found
    found.store.close()


@pytest.fixture(scope="module")
def ana_set(home):
    home.run()
    sets = {s.user_id: s for s in load_candidate_sets(home.path / "lora")}
    return sets["ana"]


def test_pending_sets_are_selected_with_curation_and_train_nothing(home, ana_set):
    assert ana_set.status == PENDING
    assert set(ana_set.memory_ids) <= {"c0", "c1", "c2", "c3"} and len(ana_set.memory_ids) >= 3
    assert ana_set.left_out.get("rejected by curation") == 1
    assert ana_set.member_digests.keys() == set(ana_set.memory_ids)
    assert not (home.path / "lora" / "datasets").exists()
    assert not (home.path / "lora" / "adapters.json").exists()


def test_an_approved_set_that_has_no_candidates_is_skipped_and_nothing_is_registered(home, ana_set):
    home.curate(rejected_memories=[["ana", "c4"]], approved_sets=["ana/concept-gone"])
    result = home.run()
    assert metadata(result, "lora_training_data")["skipped_empty_sets"] == ["ana/concept-gone"]
    assert metadata(result, "lora_training_data")["datasets"] == 0
    assert metadata(result, "trained_adapters")["note"] == "no approved training dataset"
    assert metadata(result, "lora_registry")["registered"] == 0
    assert home.client().search_registered_models() == []


@pytest.fixture(scope="module")
def trained(home, ana_set):
    home.curate(rejected_memories=[["ana", "c4"]], approved_sets=[ana_set.set_id])
    return home.run()


@pytest.mark.timeout(1500)
def test_an_approved_set_is_trained_logged_with_lineage_and_a_failing_adapter_is_never_champion(home, ana_set, trained):
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.lora.adapters import METRICS

    data = metadata(trained, "lora_training_data")
    assert data["datasets"] == 1 and data["failed_checks"] == 0
    assert all(check.passed for check in trained.get_asset_check_evaluations())
    [entry] = json.loads((home.path / "lora" / "training_data.json").read_text())["datasets"].values()
    assert sorted(entry["memory_ids"]) == sorted(ana_set.memory_ids) and "c4" not in entry["memory_ids"]
    assert entry["facts"] == len(ana_set.memory_ids) and entry["probes"] >= 4
    assert metadata(trained, "trained_adapters")["trained"] == 1
    [adapter] = json.loads((home.path / "lora" / "adapters.json").read_text()).values()
    run = home.client().get_run(adapter["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["hms.set_id"] == ana_set.set_id and run.data.tags["hms.dataset_version"] == entry["version"]
    assert run.data.tags["hms.user_id"] == "ana" and len(run.data.tags["hms.memory_ids_sha256"]) == 64
    assert run.data.params["base_model"] == "SmolLM2-135M-Instruct" and run.data.params["steps"] == "12"
    assert run.data.params["recipe"] == "distillation" and run.data.tags["hms.recipe"] == "distillation"
    assert 0 < float(run.data.tags["hms.route_threshold"]) < 1
    figures = {"base_paraphrase_recall", "base_forced_choice", "base_general_perplexity", "chance", "tokens_per_second", "tokens_saved",
               "route_recall", "adapter_recall", "teacher_forced_choice", "training_seconds"}
    assert set(METRICS) | figures <= set(run.data.metrics)
    assert run.data.metrics["tokens_saved"] > 10, "the facts' lines in the context"
    assert len(home.client().get_metric_history(adapter["run_id"], "loss")) == adapter["steps_run"]
    assert home.client().get_metric_history(adapter["run_id"], "validation_kl")
    assert home.client().get_metric_history(adapter["run_id"], "unrelated_kl")
    assert adapter["routed_leakage"] <= adapter["leakage"] and adapter["route_recall"] > 0, "held-out questions about the facts route"
    assert (home.path / "lora" / "adapters" / adapter["run_id"] / "adapter_config.json").exists()
    [version] = registered_versions(home.client(), ana_set.set_id)
    assert version.tags["hms.gate"].startswith("3: failed: recall without the facts"), version.tags["hms.gate"]
    assert version.tags["hms.route_threshold"] == run.data.tags["hms.route_threshold"]
    assert "fails the gate" in version.tags["hms.decision"] and version.aliases == ["challenger"]
    assert alias_version(home.client(), ana_set.set_id, CHAMPION) is None
    assert json.loads((home.path / "lora" / "champions.json").read_text()) == []
    assembler = ContextAssembler(event_store=home.store, embedder=home.embedder)
    assert assembler.assemble("ana", "When are my cello lessons?", 256).adapter is None
    assert "fails the gate" in metadata(trained, "lora_registry")["registry"]


def test_the_comparison_scores_base_and_adapter_on_the_same_data_under_the_same_metric_keys(home, ana_set, trained):
    from hms_resources.lora.adapters import METRICS

    shown = metadata(trained, "adapter_comparison")
    assert shown["compared"] == 2 and shown["sets"] == 1
    assert "| base | - |" in shown["comparison"] and "| v1 | challenger |" in shown["comparison"]
    assert shown["chart"].startswith("![recall, leakage and harm on each set's held-out data](data:image/png;base64,")
    client = home.client()
    runs = client.search_runs([shown["experiment_id"]])
    assert sorted(r.data.tags["hms.model"] for r in runs) == ["base", "v1"]
    assert {frozenset(r.data.metrics) for r in runs} == {frozenset(METRICS)}
    assert len({r.data.tags["hms.eval_dataset_version"] for r in runs}) == 1
    by_model = {r.data.tags["hms.model"]: r.data.metrics for r in runs}
    assert by_model["base"]["leakage"] == 0.0 and by_model["base"]["general_perplexity_change"] == 0.0
    [adapter] = json.loads((home.path / "lora" / "adapters.json").read_text()).values()
    assert {m: by_model["v1"][m] for m in METRICS} == {m: adapter[m] for m in METRICS}, "the comparison agrees with training"


def test_a_champion_promoted_before_the_gate_is_demoted_and_leaves_context(home, ana_set, trained):
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.lora.adapters import publish_champions
    from hms_resources.lora.registry import model_name, promote

    client = home.client()
    client.delete_model_version_tag(model_name(ana_set.set_id), "1", "hms.gate")
    promote(client, ana_set.set_id, 1, "fact recall 1.0 beats the base's 0.0")
    publish_champions(client, home.path)
    assert [c["version"] for c in json.loads((home.path / "lora" / "champions.json").read_text())] == ["1"]
    assembler = ContextAssembler(event_store=home.store, embedder=home.embedder)
    context = assembler.assemble("ana", "When are my cello lessons?", 256)
    assert context.adapter is not None and context.adapter.set_id == ana_set.set_id and context.adapter.version == "1"
    assert assembler.assemble("ben", "When are my cello lessons?", 256).adapter is None, "ben's set was never approved"
    judged = home.run(("lora_registry", "adapter_comparison"))
    assert metadata(judged, "lora_registry")["demoted"] == 1
    assert "demoted: fails the gate" in metadata(judged, "lora_registry")["registry"]
    assert alias_version(client, ana_set.set_id, CHAMPION) is None
    assert "fails the gate" in client.get_model_version(model_name(ana_set.set_id), "1").tags["hms.demoted_because"]
    assert json.loads((home.path / "lora" / "champions.json").read_text()) == []
    assembler = ContextAssembler(event_store=home.store, embedder=home.embedder)
    assert assembler.assemble("ana", "When are my cello lessons?", 256).adapter is None


def test_a_diverging_run_fails_without_retries_and_registers_nothing(home, ana_set, trained):
    before = [v.version for v in registered_versions(home.client(), ana_set.set_id)]
    failed = home.run(raise_on_error=False, learning_rate=50.0)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "trained_adapters" and "diverged" in failure.event_specific_data.error.message
    assert not [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [v.version for v in registered_versions(home.client(), ana_set.set_id)] == before
    statuses = [r.info.status for r in home.client().search_runs([MlflowTracking().experiment_id(home.path)])]
    assert sorted(statuses) == ["FAILED", "FINISHED"]


@pytest.mark.timeout(1200)
def test_rollback_refuses_a_version_that_fails_the_gate_unless_forced(home, ana_set, trained, monkeypatch):
    from hms_jobs.cli import main
    from hms_resources.context.assembler import ContextAssembler

    monkeypatch.setenv("HMS_HOME", str(home.path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    client = home.client()
    refused = runner.invoke(main, ["lora", "rollback", ana_set.set_id, "--version", "1"])
    assert refused.exit_code == 1 and "version 1 fails the gate" in refused.output and "--force" in refused.output
    assert alias_version(client, ana_set.set_id, CHAMPION) is None
    forced = runner.invoke(main, ["lora", "rollback", ana_set.set_id, "--version", "1", "--force"])
    assert forced.exit_code == 0, forced.output
    assert f"{ana_set.set_id}: champion is version 1 (was none)" in forced.output
    assembler = ContextAssembler(event_store=home.store, embedder=home.embedder)
    assert assembler.assemble("ana", "When are my cello lessons?", 256).adapter.version == "1"
    retrained = home.run(steps=4)
    assert metadata(retrained, "trained_adapters")["trained"] == 1
    assert str(alias_version(client, ana_set.set_id, CHALLENGER).version) == "2"
    assert str(alias_version(client, ana_set.set_id, CHAMPION).version) == "1", "a failing challenger leaves the champion"
    assert "| v2 | challenger" in metadata(retrained, "adapter_comparison")["comparison"]
    listed = json.loads(runner.invoke(main, ["lora", "list", "--json"]).output)
    assert [v["aliases"] for v in listed[0]["versions"]] == [["champion"], ["challenger"]]
    assert listed[0]["versions"][1]["gate"].startswith("3: failed")
    bad = runner.invoke(main, ["lora", "rollback", "ana/concept-none"])
    assert bad.exit_code == 1 and "no champion to roll back" in bad.output
