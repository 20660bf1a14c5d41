"""`POST /v1/chat/completions` on `hms-local` applies the asking user's champion LoRA adapter, only to a
question that routes to it, and only theirs, asked through the official `openai` client. One user's
concept gets a real adapter of the real base model: its candidate set and training data come from the
real LoRA assets; the adapter is distilled (`lora.distillation`: the base with the facts in context is
the teacher) on that data, its route fitted on the set's held-out questions, and it is logged,
registered, promoted and published to `champions.json` with the project's own registry functions. The
`trained_adapters` asset itself (the teacher's, the base's and the adapter's evaluation at every run)
takes well over ten minutes on two shared CPU cores, so that step is done by the functions it calls,
without its evaluation (the gate is tested in tests/lora). The same memories stored for another user
of the tenant, and for a user of the same name in another tenant, give the same concept but no
champion: those requests get no adapter and the base model's greedy answer; so does the adapter's own
user asking something unrelated (routed off)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
import openai
import pytest

from hms_assets import domain_assets
from hms_jobs.homes import materialize_for_context
from hms_resources.context.assembler import ContextAssembler
from hms_resources.lora.adapters import (
    ADAPTERS_DIR,
    lineage_tags,
    publish_champions,
    training_datasets,
)
from hms_resources.lora.candidates import load_candidate_sets
from hms_resources.lora.data import load_examples
from hms_resources.lora.distillation import distil_adapter, facts_system, teacher_rows
from hms_resources.lora.paths import load_champions, lora_dir
from hms_resources.lora.registry import promote, register_version
from hms_resources.lora.routing import SetRouter
from hms_resources.lora.tracking import MlflowTracking
from hms_resources.lora.training import (
    DEFAULT_BASE,
    TrainingConfig,
    load_base,
    save_adapter,
)
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.chat import ChatService, parse_chat
from hms_resources.serving.keys import create_key
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from hms_resources.store.ingest import ingest_records
from tests.helpers import created, event
from tests.serving.conftest import Running

WORD = "Ottoline"
CELLO = ["I practise the cello every morning before work.", f"My cello teacher is called {WORD}.",
         "The cello recital is at the community hall.", "I bought new strings for my cello.", "Cello lessons are on Thursday evenings."]
OTHER = ["My sister lives in Porto.", "I am allergic to peanuts.", "Our dog is called Biscuit."]
USERS = ("acme/alice", "acme/bob", "globex/alice")
"""Each stores the same memories, so each has the same cello concept; only acme/alice's set is approved."""
QUESTION = [{"role": "user", "content": "What did I tell you about my cello teacher?"}]
UNRELATED = [{"role": "user", "content": "What is the capital of France?"}]
TOKENS = 16
LORA = {
    "lora_candidate_sets": {"config": {"min_importance": 0.0, "min_concept_cohesion": 0.0, "min_concept_size": 3, "stable_days": 7.0}},
    "lora_training_data": {"config": {"min_facts": 4}},
}
QUICK = TrainingConfig(steps=12, batch_size=6, rank=4, alpha=8, learning_rate=3e-3, dropout=0.0, answer_tokens=16)
"""A few steps over the teacher's answers: enough to change the answer, quick on a CPU."""


def records() -> list[dict]:
    found = []
    for user in USERS:
        found += [created(user, f"c{i}", text, minutes=i * 60) for i, text in enumerate(CELLO)]
        found += [created(user, f"o{i}", text, minutes=600 + i * 60) for i, text in enumerate(OTHER)]
        found += [event("accessed", user, f"c{i}", 30 * 24 * 60, access_method="context") for i in range(len(CELLO))]
    return found


def run_lora(store: EventStore, embedder: Embedder, assets: tuple[str, ...]) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(domain_assets(), selection=dg.AssetSelection.assets(*assets), instance=instance,
                                resources={"event_store": store, "embedder": embedder, "mlflow_tracking": MlflowTracking()},
                                run_config={"ops": {name: LORA[name] for name in assets}})
    assert result.success


def publish(home: Path, set_id: str, built: dict, store: EventStore, embedder: Embedder) -> None:
    """What `trained_adapters` and `lora_registry` do for one set, without the evaluation: distil on the
    set's training questions, fit its route, log the run with its lineage, route threshold and the
    adapter artifact, register the version, make it the champion and publish the champions."""
    tracking = MlflowTracking()
    client = tracking.client(home)
    examples = load_examples(built["path"])
    model, tokenizer = load_base()
    system = facts_system([f["fact"] for f in examples.facts])
    taught = teacher_rows(model, tokenizer, [r["prompt"] for r in examples.train], system, QUICK)
    result = distil_adapter(model, tokenizer, taught, [], QUICK)
    route = SetRouter.of_store(store, embedder).route(built, examples)
    tags = {**lineage_tags(set_id, built), "hms.route_threshold": str(route["threshold"])}
    run_id = client.create_run(tracking.experiment_id(home), run_name=f"{set_id} {built['version']}", tags=tags).info.run_id
    try:
        directory = save_adapter(result.adapter, lora_dir(home) / ADAPTERS_DIR / run_id)
    finally:
        result.adapter.unload()
    client.log_param(run_id, "base_model", DEFAULT_BASE)
    client.log_artifacts(run_id, str(directory), "adapter")
    client.set_terminated(run_id, status="FINISHED")
    version = register_version(client, set_id, run_id)
    promote(client, set_id, version.version, "the test's champion (the gate is tested in tests/lora)")
    publish_champions(client, home)


@pytest.fixture(scope="module")
def local_model():
    from hms_resources.integration.local_model import LocalModel

    return LocalModel()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A store whose only champion is acme/alice's cello adapter, its set and data from the real assets."""
    home = tmp_path_factory.mktemp("chat-adapters")
    store = EventStore(hms_home=str(home))
    embedder = Embedder.from_env()
    started = time.perf_counter()
    ingest_records(store, records())
    materialize_for_context(store, embedder, log=lambda _m: None)
    run_lora(store, embedder, ("lora_candidate_sets",))
    sets = {s.user_id: s for s in load_candidate_sets(home / "lora")}
    assert set(USERS) <= set(sets), sets
    approved = sets["acme/alice"]
    assert {"c0", "c1"} <= set(approved.memory_ids), approved
    (home / "curation.json").write_text(json.dumps({"approved_sets": [approved.set_id]}))
    run_lora(store, embedder, ("lora_candidate_sets", "lora_training_data"))
    built = training_datasets(home)[approved.set_id]
    publish(home, approved.set_id, built, store, embedder)
    [champion] = load_champions(home)
    assert champion["set_id"] == approved.set_id and champion["user_id"] == "acme/alice"
    assert 0 < champion["route_threshold"] < 1 and set(champion["memory_ids"]) == set(built["memory_ids"])
    print(f"\nstore built, adapter trained and published in {time.perf_counter() - started:.0f}s")
    assembler = ContextAssembler(event_store=store, embedder=embedder)
    yield MemoryService(store, assembler), champion
    assembler.close()
    store.close()


@pytest.mark.timeout(900)
def test_the_users_champion_adapter_answers_and_no_one_elses(published, local_model):
    service, champion = published
    store = service.store
    chat = ChatService(service, local_model=local_model)
    # Capture off: the exchange is not stored, so every request sees the same context as the base answer's.
    keys = {tenant: create_key(store, tenant, "read", capture=False).secret for tenant in ("acme", "globex")}
    named = f"hms-lora-{champion['set_id'].replace('/', '-')}@{champion['version']}"
    assert champion["model_name"] == named.split("@")[0]

    def served_messages(tenant: str, user: str, question: list[dict]) -> tuple[list[dict], dict | None]:
        """The messages and adapter the service gives the local model for this request."""
        principal = service.authenticate(f"Bearer {keys[tenant]}")
        body = {"model": "hms-local", "messages": question, "user": user, "max_tokens": TOKENS, "temperature": 0}
        _, call = chat.prepare(principal, parse_chat(body, session_header=None, request_id=None))
        return call.messages, call.adapter

    answers = {}
    asked = (("acme", "alice", QUESTION), ("acme", "bob", QUESTION), ("globex", "alice", QUESTION), ("acme", "alice", UNRELATED))
    with Running(service, chat=chat) as running:
        for tenant, user, question in asked:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{running.port}/v1", api_key=keys[tenant], max_retries=0, timeout=300)
            raw = client.chat.completions.with_raw_response.create(model="hms-local", messages=question, user=user, max_tokens=TOKENS,
                                                                   temperature=0)
            reply = raw.parse()
            used = reply.model_extra["hms"]
            messages, adapter = served_messages(tenant, user, question)
            base = local_model.chat(messages, adapter=None, max_tokens=TOKENS).text
            who = f"{tenant}/{user}" + (" unrelated" if question is UNRELATED else "")
            answers[who] = (reply.choices[0].message.content, base, used["adapter"], raw.headers["X-HMS-Adapter"])
            assert used["user"] == user, used
            routed = (tenant, user, question) == ("acme", "alice", QUESTION)
            assert (adapter or {}).get("path") == (champion["path"] if routed else None), (who, adapter)
            if question is QUESTION:
                assert WORD in messages[0]["content"], "the user's own memories are in the system turn"

    print("\n" + "\n".join(f"{who}: adapter {a!r}: {text!r} (base: {base!r})" for who, (text, base, a, _) in answers.items()))
    tuned, base, adapter, header = answers["acme/alice"]
    assert adapter == named and header == named, (adapter, header)
    assert tuned != base, "the champion adapter changes alice's answer to a question about its facts"
    for who in ("acme/bob", "globex/alice", "acme/alice unrelated"):
        text, base, adapter, header = answers[who]
        assert adapter is None and header == "", (who, adapter, header)
        assert text == base, f"{who} gets the base model's greedy answer"
