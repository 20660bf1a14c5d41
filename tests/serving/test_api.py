"""The HTTP API through real HTTP (uvicorn on a loopback port, started by the test) on SQLite and on
PostgreSQL: every route, the uniform error body, keys and scopes, the limits, health and metrics."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from hms_jobs.cli.serve import first_key
from hms_jobs.sensors import new_events_sensor
from hms_resources.serving.service import MemoryService
from hms_resources.store.api_keys import list_keys
from hms_resources.store.erasure import unerased_events
from hms_resources.store.event_store import EventStore
from tests.serving.conftest import BODY_LIMIT, Running, new_key, server_env


@pytest.fixture
def service(ranking_service: MemoryService) -> MemoryService:
    return ranking_service


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    return body["error"]


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_every_route_of_the_api_over_real_http(service: MemoryService):
    store = service.store
    writer, reader, other = new_key(store, "acme", "write"), new_key(store, "acme", "read"), new_key(store, "globex", "write")
    with Running(service) as running, running.client(writer) as api, running.client(reader) as read_only, running.client(other) as globex:
        assert api.get("/healthz").json() == {"status": "ok"}
        assert api.get("/readyz").json() == {"ready": True}
        operator = running.client(new_key(store, "local", "admin"))  # the service's figures: HMS_OPERATOR_TENANT's admin
        ready = operator.get("/readyz").json()
        assert ready["ready"] is True and ready["store"] == "reachable" and "index_age_seconds" in ready

        # Add one memory, idempotently through the Idempotency-Key header.
        first = api.post("/v1/memories", json={"user_id": "alice", "content": "Alice is allergic to peanuts.", "memory_type": "fact", "tags": ["health"]}, headers={"Idempotency-Key": "add-1"})
        assert first.status_code == 201 and first.json()["memory_id"] == "add-1" and first.json()["event_id"] == "add-1"
        again = api.post("/v1/memories", json={"user_id": "alice", "content": "Alice is allergic to peanuts.", "memory_type": "fact", "tags": ["health"]}, headers={"Idempotency-Key": "add-1"})
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        assert store.stats()["events"] == 1

        # A batch: the valid items are stored, the invalid ones answered with their field, nothing partial.
        batch = api.post(
            "/v1/memories",
            json={
                "memories": [
                    {"user_id": "alice", "memory_id": "chess", "content": "Alice plays chess every Sunday with her brother.", "category": "hobby", "occurred_at": "2026-03-01T10:00:00Z"},
                    {"user_id": "alice", "memory_id": "bad-1"},
                    {"user_id": "alice", "memory_id": "bad-2", "content": "x", "importance": 7},
                    {"user_id": "alice", "memory_id": "trip", "content": "Alice is planning a trip to Lisbon in May.", "category": "travel", "occurred_at": "2026-04-01T10:00:00Z"},
                ]
            },
        )
        assert batch.status_code == 200
        results = batch.json()["results"]
        assert [r["status"] for r in results] == ["created", "rejected", "rejected", "created"]
        assert results[1]["error"]["field"] == "content" and results[2]["error"]["field"] == "importance"
        assert batch.json()["created"] == 2 and batch.json()["rejected"] == 2
        assert store.memory_statuses([("acme/alice", "bad-1"), ("acme/alice", "bad-2")]) == {}

        # Read one, list with filters and a cursor.
        got = api.get("/v1/memories/chess", params={"user_id": "alice"}).json()
        assert got["content"].startswith("Alice plays chess") and got["status"] == "live" and got["user_id"] == "alice"
        pages, cursor = [], None
        while True:
            page = api.get("/v1/memories", params={"user_id": "alice", "limit": 1, **({"cursor": cursor} if cursor else {})}).json()
            pages.append([m["memory_id"] for m in page["memories"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == [["add-1"], ["chess"], ["trip"]]
        listed = lambda **params: [m["memory_id"] for m in api.get("/v1/memories", params={"user_id": "alice", **params}).json()["memories"]]  # noqa: E731
        assert listed(category="travel") == ["trip"]
        assert listed(tag="health") == ["add-1"]
        assert listed(memory_type="fact") == ["add-1"]
        assert listed(created_after="2026-03-15T00:00:00Z", created_before="2026-04-15T00:00:00Z") == ["trip"]

        # Update, archive, history, forget.
        assert api.patch("/v1/memories/trip", params={"user_id": "alice"}, json={"content": "Alice is planning a trip to Porto in June."}).status_code == 200
        assert api.get("/v1/memories/trip", params={"user_id": "alice"}).json()["content"] == "Alice is planning a trip to Porto in June."
        assert api.post("/v1/memories/add-1/archive", params={"user_id": "alice"}, json={"reason": "resolved"}).status_code == 200
        assert listed() == ["chess", "trip"] and listed(status="archived") == ["add-1"]
        history = api.get("/v1/memories/trip/history", params={"user_id": "alice"}).json()["events"]
        assert [e["type"] for e in history] == ["memory.created", "memory.updated"]
        assert api.delete("/v1/memories/chess", params={"user_id": "alice"}).status_code == 200
        gone = api.get("/v1/memories/chess", params={"user_id": "alice"}).json()
        assert gone["status"] == "forgotten" and gone["content"] is None
        assert all("content" not in e["payload"] for e in api.get("/v1/memories/chess/history", params={"user_id": "alice"}).json()["events"])
        assert error_of(api.patch("/v1/memories/chess", params={"user_id": "alice"}, json={"content": "back"}))["code"] == "forgotten"
        assert unerased_events(store, "acme/alice", "chess") == 0

        # Context and search find what was just written (the fresh-events path); the forgotten never.
        context = api.post("/v1/context", json={"user_id": "alice", "query": "Where is Alice travelling?", "max_tokens": 256})
        assert context.status_code == 200
        body = context.json()
        assert set(body) >= {"items", "prompt", "token_count", "timings_ms", "adapter"}
        assert "Porto" in body["prompt"] and "chess" not in body["prompt"] and body["token_count"] <= 256
        assert set(body["items"][0]) >= {"memory_id", "text", "tokens", "score", "tier", "kind", "source_ids"}
        found = api.post("/v1/search", json={"user_id": "alice", "query": "Porto trip"}).json()["results"]
        assert [r["memory_id"] for r in found] == ["trip"] and found[0]["score"] > 0
        assert api.post("/v1/feedback", json={"user_id": "alice", "memory_id": "trip", "was_relevant": True, "relevance_score": 0.9}).json()["recorded"] is True
        assert error_of(api.post("/v1/feedback", json={"user_id": "alice", "memory_id": "nope", "was_relevant": True}))["code"] == "not_found"

        # Raw events: validated as `hms ingest` validates a line, one result per item.
        events = api.post(
            "/v1/events",
            json={
                "events": [
                    {"event_id": "ev-1", "type": "memory.created", "user_id": "bob", "memory_id": "b1", "occurred_at": "2026-05-01T09:00:00+02:00", "payload": {"content": "Bob likes jazz."}},
                    {"event_id": "ev-2", "type": "memory.tagged", "user_id": "bob", "memory_id": "b1", "occurred_at": "2026-05-01T09:01:00Z", "payload": {}},
                    {"event_id": "ev-3", "type": "memory.tagged", "user_id": "bob", "memory_id": "b1", "occurred_at": "2026-05-01T09:02:00Z", "payload": {"tags": ["music"]}},
                ]
            },
        ).json()
        assert [r["status"] for r in events["results"]] == ["created", "rejected", "created"]
        assert "tags" in events["results"][1]["error"]["message"]
        assert api.get("/v1/memories/b1", params={"user_id": "bob"}).json()["tags"] == ["music"]

        # Tenants, keys and scopes.
        assert error_of(globex.get("/v1/memories/trip", params={"user_id": "alice"}))["code"] == "not_found"
        assert globex.get("/v1/memories", params={"user_id": "alice"}).json() == {"memories": [], "next_cursor": None}
        assert globex.post("/v1/context", json={"user_id": "alice", "query": "trip", "max_tokens": 100}).json()["items"] == []
        forbidden = globex.get("/v1/memories", params={"user_id": "acme/alice"})
        assert forbidden.status_code == 403 and error_of(forbidden)["field"] == "user_id"
        assert globex.post("/v1/memories", json={"user_id": "acme/alice", "content": "planted"}).status_code == 403
        conflict = api.post("/v1/memories", json={"user_id": "alice", "event_id": "add-1", "content": "another text"})
        assert conflict.status_code == 409 and error_of(conflict)["code"] == "conflict"
        denied = read_only.post("/v1/memories", json={"user_id": "alice", "content": "read keys do not write"})
        assert denied.status_code == 403 and error_of(denied)["code"] == "forbidden"
        assert read_only.get("/v1/memories/trip", params={"user_id": "alice"}).status_code == 200
        for client in (running.client(None), running.client("hms_0123456789abcdef_wrong")):
            with client:
                unauthorized = client.post("/v1/context", json={"user_id": "alice", "query": "x", "max_tokens": 10})
                assert unauthorized.status_code == 401 and error_of(unauthorized)["code"] == "unauthorized"

        # Bad requests: one body naming the field; 413 above the limit, declared or streamed.
        missing = api.post("/v1/context", json={"user_id": "alice", "max_tokens": 10})
        assert missing.status_code == 422 and error_of(missing)["field"] == "query"
        assert error_of(api.post("/v1/context", json={"user_id": "alice", "query": "x", "max_tokens": 0}))["field"] == "max_tokens"
        assert error_of(api.post("/v1/context", content=b"{not json", headers={"content-type": "application/json"}))["field"] == "body"
        huge = api.post("/v1/memories", json={"user_id": "alice", "content": "x" * (BODY_LIMIT + 1)})
        assert huge.status_code == 413 and error_of(huge)["code"] == "too_large"
        streamed = api.post("/v1/memories", content=iter([b'{"user_id": "alice", "content": "', b"y" * BODY_LIMIT, b'"}']), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert store.memory_statuses([("acme/alice", "x" * 10)]) == {}

        # Metrics: per route template, no user id, no key.
        metrics = operator.get("/metrics").text
        assert 'hms_http_requests_total{method="POST",route="/v1/context",status="200"}' in metrics
        assert "hms_http_request_duration_seconds_bucket" in metrics and 'hms_context_stage_seconds_count{stage="total"}' in metrics
        assert re.search(r"hms_events_appended_total \d+", metrics) and "hms_index_age_seconds" in metrics
        assert 'hms_rejected_requests_total{reason="unauthorized"}' in metrics and 'hms_rejected_requests_total{reason="too_large"}' in metrics
        assert "alice" not in metrics and writer not in metrics and "Bearer" not in metrics

        schema = api.get("/openapi.json").json()
        assert {"/v1/memories", "/v1/memories/{memory_id}", "/v1/events", "/v1/search", "/v1/context", "/v1/feedback"} <= set(schema["paths"])

    # The Dagster sensor picks up the events the API wrote, as it does for `hms ingest`.
    with dg.instance_for_test() as instance:
        tick = new_events_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources={"event_store": store}))
        assert [r.run_key for r in tick.run_requests] == [f"memories-through-{store.max_sequence()}"]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_revoked_key_is_refused_and_keys_are_stored_as_digests(service: MemoryService, hms_home: Path):
    env = server_env(hms_home, service.store.database_url)
    created = subprocess.run([sys.executable, "-m", "hms_jobs.cli", "keys", "create", "--tenant", "acme", "--scope", "read", "--label", "ci"], env=env, capture_output=True, text=True, check=True)
    key = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"hms_[0-9a-f]{16}_[A-Za-z0-9_-]{40,}", key)
    listed = subprocess.run([sys.executable, "-m", "hms_jobs.cli", "keys", "list", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    secret = key.split("_", 2)[2]
    assert "acme" in listed and secret not in listed
    (stored,) = list_keys(service.store, "acme")
    assert secret not in repr(stored) and stored.digest != secret
    bad = subprocess.run([sys.executable, "-m", "hms_jobs.cli", "keys", "create", "--tenant", "Not A Tenant", "--scope", "read"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "tenant" in bad.stderr
    with Running(service) as running, running.client(key) as api:
        assert api.get("/v1/memories", params={"user_id": "alice"}).status_code == 200
        subprocess.run([sys.executable, "-m", "hms_jobs.cli", "keys", "revoke", stored.key_id], env=env, check=True, capture_output=True)
        service.keys.forget_cached()
        revoked = api.get("/v1/memories", params={"user_id": "alice"})
        assert revoked.status_code == 401 and error_of(revoked)["message"] == "the API key was revoked"


def test_the_first_start_creates_one_local_key_and_prints_it_once(serve_process):
    store = EventStore()
    assert first_key(store) is not None and first_key(store) is None
    (local,) = list_keys(store)
    assert (local.tenant, local.scope) == ("local", "admin")


def test_hms_serve_answers_the_documented_contract(serve_process, hms_home: Path):
    """What scripts rely on: the key `hms serve` prints on a fresh home, POST /v1/memories, POST /v1/context."""
    serve_process.start()
    key = next(line for line in serve_process.log.read_text().splitlines() if line.startswith("hms_"))
    with httpx.Client(base_url=serve_process.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        added = api.post("/v1/memories", json={"user_id": "maya", "content": "Maya is allergic to peanuts.", "importance": 0.9})
        assert added.status_code == 201 and {"memory_id", "event_id"} <= set(added.json())
        context = api.post("/v1/context", json={"user_id": "maya", "query": "What is Maya allergic to?", "max_tokens": 128}).json()
        assert context["items"][0]["memory_id"] == added.json()["memory_id"] and "peanuts" in context["prompt"]
    serve_process.stop()
    serve_process.start()
    assert sum(line.startswith("hms_") for line in serve_process.log.read_text().splitlines()) == 1


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_hms_ingest_loads_a_file_for_one_tenant(service: MemoryService, hms_home: Path, tmp_path: Path):
    lines = [
        '{"event_id": "e1", "type": "memory.created", "user_id": "alice", "memory_id": "m1", "occurred_at": "2026-05-01T09:00:00Z", "payload": {"content": "Alice keeps bees."}}',
        '{"event_id": "' + "e" * 252 + '", "type": "memory.created", "user_id": "alice", "memory_id": "m2", "occurred_at": "2026-05-01T09:00:00Z", "payload": {"content": "too long an id under the tenant"}}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = server_env(hms_home, service.store.database_url)
    done = subprocess.run([sys.executable, "-m", "hms_jobs.cli", "ingest", "--tenant", "acme", "--json", str(path)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and '"accepted":1' in done.stdout and "at most 250 characters" in done.stderr
    acme = service.authenticate(new_key(service.store, "acme", "read"))
    globex = service.authenticate(new_key(service.store, "globex", "read"))
    assert [m["content"] for m in service.list_memories(acme, "alice")["memories"]] == ["Alice keeps bees."]
    assert service.list_memories(globex, "alice")["memories"] == []
    assert service.store.memory_statuses([("acme/alice", "m1")]) == {("acme/alice", "m1"): "live"}


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_context_call_appends_at_most_one_event_and_counts_an_access_of_each_memory_it_returned(service: MemoryService):
    store = service.store
    facts = ["Alice is allergic to peanuts.", "Alice plays chess every Sunday.", "Alice is planning a trip to Lisbon.",
             "Alice's sister Mira bakes sourdough.", "Alice drinks green tea in the morning."]
    with Running(service) as running, running.client(new_key(store, "acme", "write")) as api:
        for n, fact in enumerate(facts):
            assert api.post("/v1/memories", json={"user_id": "alice", "memory_id": f"m{n}", "content": fact}).status_code == 201
        before = store.stats()["events"]
        returned: list[list[str]] = []
        for query in ["What is Alice allergic to?", "What does Alice do on Sundays?", "Where is Alice travelling?", "Alice's family"] * 3:
            context = api.post("/v1/context", json={"user_id": "alice", "query": query, "max_tokens": 1024}).json()
            returned.append(list(dict.fromkeys(m for item in context["items"] for m in item["source_ids"])))
        service.writer.flush()
    appended = store.stats()["events"] - before
    assert 0 < appended <= len(returned), f"{appended} events for {len(returned)} context calls"
    counts = {memory_id: m.access_count for (_, memory_id), m in store.replay(user_id="acme/alice").items()}
    assert counts == {f"m{n}": sum(f"m{n}" in ids for ids in returned) for n in range(len(facts))}
    assert sum(counts.values()) > appended, "a call returning several memories counts each of them"


def test_a_written_memory_is_found_by_a_paraphrase_with_no_daemon_and_no_materialization(service: MemoryService):
    """`hms serve` alone: nothing was ever materialized, yet a memory stored over HTTP is embedded by the
    service, merged into its user's index and found first by a question that shares none of its words."""
    store = service.store
    facts = ["Alice plays chess every Sunday.", "Alice is planning a trip to Lisbon.", "Alice drinks green tea in the morning."]
    with Running(service) as running, running.client(new_key(store, "acme", "write")) as api:
        for n, fact in enumerate(facts):
            assert api.post("/v1/memories", json={"user_id": "alice", "memory_id": f"m{n}", "content": fact}).status_code == 201
        assert api.post("/v1/memories", json={"user_id": "alice", "memory_id": "m-pet", "content": "Alice adopted a kitten named Pixel."}).status_code == 201
        deadline = time.monotonic() + 120
        while True:
            results = api.post("/v1/search", json={"user_id": "alice", "query": "Does she own a cat?", "limit": 3}).json()["results"]
            if results and results[0]["memory_id"] == "m-pet":
                break
            assert time.monotonic() < deadline, f"not found by meaning within the deadline: {results}"
            time.sleep(0.1)
        index = service.assembler.user_index("acme/alice")
        assert index.has_vector[index.row_of["m-pet"]], "embedded by the service, not by an asset"
        assert service.assembler.loaded_snapshot.model is None, "no embeddings asset was ever materialized"
