"""Least privilege over real HTTP (uvicorn in a thread, on a loopback port): what a caller without a
key, a tenant's key, a tenant's admin and the operator each see of the service (readiness, metrics,
history), key management by admin keys within their tenant, and the MCP mount's errors, methods,
redirects and metric labels."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS

from hms_resources.context.assembler import ContextAssembler
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.errors import ApiError
from hms_resources.serving.http import DEFAULT_MAX_BODY_BYTES
from hms_resources.serving.mcp_server import json_rpc_error
from hms_resources.serving.service import MemoryService
from hms_resources.store.api_keys import find_key
from hms_resources.store.event_store import EventStore
from tests.serving.conftest import Running, new_key

OPERATOR = "local"
"""The operator's tenant by default (`HMS_OPERATOR_TENANT`): the first start's admin key is of it."""


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryService]:
    monkeypatch.delenv("HMS_OPERATOR_TENANT", raising=False)
    store = EventStore(database_url=f"sqlite:///{tmp_path / 'hms.db'}", hms_home=str(tmp_path / "home"))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    yield MemoryService(store, assembler)
    assembler.close()
    store.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    return body["error"]


def test_readiness_metrics_and_history_show_no_tenant_the_write_volume_of_the_others(service: MemoryService):
    store = service.store
    writer, tenant_admin, operator = new_key(store, "acme", "write"), new_key(store, "acme", "admin"), new_key(store, OPERATOR, "admin")
    with Running(service, mcp=True, max_body_bytes=DEFAULT_MAX_BODY_BYTES) as running, running.client(writer) as acme, running.client(None) as anyone:
        for n in range(3):
            assert acme.post("/v1/memories", json={"user_id": "alice", "memory_id": f"m{n}", "content": f"Alice note {n}."}).status_code == 201
        assert acme.patch("/v1/memories/m2", params={"user_id": "alice"}, json={"content": "Alice note two."}).status_code == 200

        # Readiness: a probe without a key learns only whether to send traffic.
        for key in (None, writer, tenant_admin):
            with running.client(key) as client:
                ready = client.get("/readyz")
                assert ready.status_code == 200 and ready.json() == {"ready": True}, ready.text
        with running.client(operator) as ops:
            detailed = ops.get("/readyz").json()
            assert detailed["ready"] is True and detailed["last_sequence"] == 4 and "index_age_seconds" in detailed
        assert anyone.get("/healthz").json() == {"status": "ok"}
        wrong = anyone.get("/readyz", headers={"Authorization": "Bearer hms_0123456789abcdef_wrong"})
        assert wrong.status_code == 401 and error_of(wrong)["code"] == "unauthorized"

        # Metrics count every tenant's requests: the operator's admin key only.
        assert anyone.get("/metrics").status_code == 401
        for key in (writer, tenant_admin):
            with running.client(key) as client:
                refused = client.get("/metrics")
                assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden", refused.text
        with running.client(operator) as ops:
            scraped = ops.get("/metrics")
            assert scraped.status_code == 200 and "hms_events_appended_total 4.0" in scraped.text

        # History: the memory's events in order, with no store-wide sequence number.
        history = acme.get("/v1/memories/m2/history", params={"user_id": "alice"}).json()["events"]
        assert [e["type"] for e in history] == ["memory.created", "memory.updated"]
        assert all("sequence" not in e for e in history), history
        assert [e["n"] for e in history] == [1, 2]


def test_admin_keys_create_list_and_revoke_the_keys_of_their_own_tenant_only(service: MemoryService):
    store = service.store
    admin, writer, other_admin = new_key(store, "acme", "admin"), new_key(store, "acme", "write"), new_key(store, "globex", "admin")
    globex_key_id = other_admin.split("_")[1]
    with Running(service, mcp=True, max_body_bytes=DEFAULT_MAX_BODY_BYTES) as running, running.client(admin) as acme, running.client(writer) as acme_writer, running.client(other_admin) as globex:
        # A write key can do everything but manage keys.
        for denied in (acme_writer.get("/v1/keys"), acme_writer.post("/v1/keys", json={"scope": "read"}), acme_writer.delete(f"/v1/keys/{globex_key_id}")):
            assert denied.status_code == 403 and error_of(denied)["code"] == "forbidden", denied.text

        created = acme.post("/v1/keys", json={"scope": "read", "label": "the reporting job", "capture": False, "default_user": "bob"})
        assert created.status_code == 201, created.text
        new = created.json()
        assert (new["tenant"], new["scope"], new["label"], new["capture"], new["default_user"]) == ("acme", "read", "the reporting job", False, "bob")
        secret = new["key"]
        stored = find_key(store, new["key_id"])
        assert stored is not None and stored.tenant == "acme" and secret.split("_", 2)[2] not in repr(stored)
        with running.client(secret) as reader:
            assert reader.get("/v1/memories", params={"user_id": "alice"}).status_code == 200
            assert reader.post("/v1/memories", json={"user_id": "alice", "content": "read keys do not write"}).status_code == 403

            # The list: this tenant's keys, never a secret, salt or digest.
            listed = acme.get("/v1/keys")
            assert listed.status_code == 200
            rows = listed.json()["keys"]
            assert {r["key_id"] for r in rows} == {admin.split("_")[1], writer.split("_")[1], new["key_id"]}
            assert all(set(r) == {"key_id", "tenant", "scope", "label", "capture", "default_user", "created_at", "revoked_at"} for r in rows), rows
            assert secret.split("_", 2)[2] not in listed.text and stored.digest not in listed.text and stored.salt not in listed.text
            assert [r["key_id"] for r in globex.get("/v1/keys").json()["keys"]] == [globex_key_id]

            # Another tenant's key is not found (its id tells nothing), and no key is made for another tenant.
            for foreign in (globex_key_id, "0123456789abcdef"):
                gone = acme.delete(f"/v1/keys/{foreign}")
                assert gone.status_code == 404 and error_of(gone)["field"] == "key_id", gone.text
            assert find_key(store, globex_key_id).revoked_at is None
            planted = acme.post("/v1/keys", json={"scope": "admin", "tenant": "globex"})
            assert planted.status_code == 403 and error_of(planted)["field"] == "tenant", planted.text
            assert [r["key_id"] for r in globex.get("/v1/keys").json()["keys"]] == [globex_key_id]
            refusals = (
                ({"scope": "root"}, "scope"),
                ({}, "scope"),
                ({"scope": "read", "default_user": "a/b"}, "default_user"),
                ({"scope": "read", "default_user": "\ud800"}, "default_user"),
                ({"scope": "read", "capture": "yes"}, "capture"),
            )
            for body, field in refusals:
                invalid = acme.post("/v1/keys", content=json.dumps(body), headers={"Content-Type": "application/json"})
                assert invalid.status_code == 422 and error_of(invalid)["field"] == field, (body, invalid.text)

            # Revoked: refused at once by this process, and listed as revoked.
            revoked = acme.delete(f"/v1/keys/{new['key_id']}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
            refused = reader.get("/v1/memories", params={"user_id": "alice"})
            assert refused.status_code == 401 and error_of(refused)["message"] == "the API key was revoked"
            assert acme.delete(f"/v1/keys/{new['key_id']}").status_code == 200
            assert next(r for r in acme.get("/v1/keys").json()["keys"] if r["key_id"] == new["key_id"])["revoked_at"]


@asynccontextmanager
async def mcp_session(url: str, key: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def test_mcp_errors_carry_json_rpc_codes_and_the_mount_answers_what_it_serves(service: MemoryService):
    writer, operator = new_key(service.store, "acme", "write"), new_key(service.store, OPERATOR, "admin")
    with Running(service, mcp=True, max_body_bytes=DEFAULT_MAX_BODY_BYTES) as running, running.client(writer, timeout=10) as acme:
        assert acme.post("/v1/memories", json={"user_id": "alice", "memory_id": "trip", "content": "Alice is going to Lisbon."}).status_code == 201

        async def reads() -> None:
            async with mcp_session(f"{running.url}/mcp/", writer) as session:
                found = await session.read_resource("memory://alice/trip")
                assert "Lisbon" in found.contents[0].text
                for uri, code in (("memory://othertenant%2Falice/trip", "forbidden"), ("memory://alice/nope", "not_found")):
                    with pytest.raises(MCPError) as refused:
                        await session.read_resource(uri)
                    assert refused.value.code == INVALID_PARAMS and refused.value.message.startswith(f"{code}:"), refused.value.error
                    assert refused.value.data["code"] == code

        anyio.run(reads)

        # Stateless: no event stream to hold open, no session to end.
        for method in ("GET", "DELETE"):
            answer = acme.request(method, "/mcp/", headers={"Accept": "text/event-stream"})
            assert answer.status_code == 405 and answer.headers["allow"] == "POST", (method, answer.status_code)
            assert error_of(answer)["code"] == "method_not_allowed"

        # `/mcp` without its slash is served, not redirected to whatever the Host header says.
        ping = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        direct = acme.post("/mcp", json=ping, headers={"Accept": "application/json, text/event-stream", "Host": "evil.example"}, follow_redirects=False)
        assert direct.status_code == 200 and "location" not in direct.headers, (direct.status_code, direct.headers)
        assert direct.json()["result"]["serverInfo"]["name"] == "hms"

        with running.client(operator) as ops:
            metrics = ops.get("/metrics").text
        assert 'route="/mcp"' in metrics and 'route="/"' not in metrics, [line for line in metrics.splitlines() if "route=" in line]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [(404, "not_found", INVALID_PARAMS), (403, "forbidden", INVALID_PARAMS), (422, "invalid", INVALID_PARAMS), (503, "store_unavailable", INTERNAL_ERROR)],
)
def test_a_service_error_becomes_the_json_rpc_error_of_its_kind(status: int, code: str, expected: int):
    error = json_rpc_error(ApiError(status, code, "what went wrong", "user_id"))
    assert (error.code, error.message, error.data) == (expected, f"{code}: what went wrong", {"status": status, "code": code, "field": "user_id"})
