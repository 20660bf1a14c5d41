"""No tenant stalls the others, and no client holds the server (issue 28): keys are checked before the
body is read, each tenant has its own request rate and its own few retrieval calls in flight (429 and
`Retry-After` above them, at once), a call past its deadline is answered 503, and connections that
stall mid-headers or mid-body are closed. Real uvicorn on a loopback port (`server_config`, as
`hms serve` runs it), real sockets, SQLite."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hms_resources.context.assembler import ContextAssembler
from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.api.limits import Limits, RetrievalGate, TenantRates
from hms_resources.serving.errors import ApiError
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore
from tests.serving.conftest import Running, new_key

GENEROUS = Limits(tenant_rate=200.0, tenant_burst=400, tenant_concurrency=2, deadline_seconds=60.0, read_timeout_seconds=30.0)
WRONG_KEY = "hms_0123456789abcdef_wrong"


@pytest.fixture
def service(hms_home: Path, tmp_path: Path) -> Iterator[MemoryService]:
    store = EventStore(database_url=f"sqlite:///{tmp_path / 'store.db'}", hms_home=str(hms_home))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    yield MemoryService(store, assembler)
    assembler.close()
    store.close()


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it keeps it open."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; it sent {received[:200]!r}")
        if not chunk:
            return received
        received += chunk


def head(method: str, path: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: hms", *headers, "", ""]).encode()


def status_and_body(response: bytes) -> tuple[int, dict[str, str], bytes]:
    top, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    return body["error"]


# Keys before bodies ------------------------------------------------------------------------------


def test_a_bad_key_is_refused_before_its_huge_body_is_read(service: MemoryService):
    # The server would wait 30 s for the rest of the body; the client waits 15 s for an answer.
    with Running(service, limits=GENEROUS, warm=False) as serving:
        for authorization in ([f"Authorization: Bearer {WRONG_KEY}"], []):
            with serving.socket() as sock:
                sock.sendall(head("POST", "/v1/memories", *authorization, "Content-Type: application/json", "Content-Length: 10000000") + b'{"user_id": "al')
                status, headers, body = status_and_body(until_closed(sock))
            assert status == 401 and headers["connection"] == "close" and headers["www-authenticate"] == "Bearer"
            assert b'"code":"unauthorized"' in body
        with serving.client(new_key(service.store, "acme")) as api:
            assert api.get("/v1/memories", params={"user_id": "alice"}).status_code == 200
        metrics = serving.app.state.metrics.render().decode()
    assert 'hms_rejected_requests_total{reason="unauthorized"} 2.0' in metrics


# The request rate --------------------------------------------------------------------------------


def test_a_tenant_over_its_rate_gets_429_with_retry_after_and_another_tenant_is_unaffected(service: MemoryService):
    limits = replace(GENEROUS, tenant_rate=0.01, tenant_burst=3)
    a, b = new_key(service.store, "a"), new_key(service.store, "b")
    with Running(service, limits=limits, warm=False) as serving, serving.client(a) as tenant_a, serving.client(b) as tenant_b:
        assert [tenant_a.get("/v1/memories", params={"user_id": "alice"}).status_code for _ in range(3)] == [200] * 3
        refused = tenant_a.get("/v1/memories", params={"user_id": "alice"})
        assert refused.status_code == 429 and error_of(refused)["code"] == "rate_limited" and error_of(refused)["field"] is None
        assert int(refused.headers["retry-after"]) >= 1
        posted = tenant_a.post("/v1/memories", json={"user_id": "alice", "content": "refused before it is read"})
        assert posted.status_code == 429 and service.store.stats()["events"] == 0
        assert tenant_b.get("/v1/memories", params={"user_id": "bob"}).status_code == 200
        assert tenant_a.get("/healthz").status_code == 200  # unkeyed paths are not counted


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=60), st.floats(0.5, 50), st.integers(1, 10))
def test_a_token_bucket_never_admits_more_than_its_burst_and_rate(gaps: list[float], rate: float, burst: int):
    now = [0.0]
    rates = TenantRates(rate, burst, clock=lambda: now[0])
    admitted = []
    for gap in gaps:
        now[0] += gap
        wait = rates.take("a")
        if wait == 0:
            admitted.append(now[0])
        else:
            assert wait > 0
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - start) + 1e-6
    assert rates.take("b") == 0  # another tenant has its own bucket


def test_a_refused_request_may_come_back_after_its_retry_after():
    now = [0.0]
    rates = TenantRates(2.0, 1, clock=lambda: now[0])
    assert rates.take("a") == 0
    wait = rates.take("a")
    assert wait == pytest.approx(0.5)
    now[0] += wait
    assert rates.take("a") == 0


# Retrieval calls in flight -----------------------------------------------------------------------


def test_one_tenant_cannot_hold_every_retrieval_thread_and_over_its_short_line_is_refused_at_once():
    gate = RetrievalGate(per_tenant=5, threads=3, deadline_seconds=30, waiting=1)
    assert gate.per_tenant == 2
    held = threading.Event()

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(3):  # two run (blocked in their threads), one waits its turn on the loop
                tasks.start_soon(gate.run, "a", held.wait)
            while gate.in_flight("a") < 2 or gate.queued("a") < 1:
                await anyio.sleep(0.01)
            with pytest.raises(ApiError) as refused:
                await gate.run("a", lambda: "never runs")
            assert (refused.value.status, refused.value.code) == (429, "rate_limited")
            # Tenant a holds two of the three threads and waits for more; tenant b's call runs to its answer.
            assert await gate.run("b", lambda: "answered") == "answered"
            assert (gate.in_flight("a"), gate.queued("a")) == (2, 1)
            held.set()
        assert (gate.in_flight("a"), gate.queued("a")) == (0, 0)

    anyio.run(scenario)


def test_a_call_past_its_deadline_is_answered_503_and_keeps_its_place_until_it_ends():
    gate = RetrievalGate(per_tenant=1, threads=2, deadline_seconds=0.2, waiting=0)
    held = threading.Event()

    async def scenario() -> None:
        with pytest.raises(ApiError) as late:
            await gate.run("a", held.wait)
        assert (late.value.status, late.value.code) == (503, "deadline_exceeded")
        with pytest.raises(ApiError) as refused:
            await gate.run("a", lambda: "the abandoned call still runs")
        assert refused.value.status == 429
        held.set()
        while gate.in_flight("a"):
            await anyio.sleep(0.01)
        assert await gate.run("a", lambda: "answered") == "answered"

    anyio.run(scenario)


def test_a_call_that_waited_past_its_deadline_leaves_the_line():
    gate = RetrievalGate(per_tenant=1, threads=2, deadline_seconds=0.2, waiting=1)
    held = threading.Event()

    async def holding() -> None:
        with pytest.raises(ApiError):  # past its deadline too, its thread still blocked
            await gate.run("a", held.wait)

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(holding)
            while not gate.in_flight("a"):
                await anyio.sleep(0.01)
            with pytest.raises(ApiError) as late:  # waits its turn behind the held call, then gives up
                await gate.run("a", lambda: "never runs")
            assert late.value.code == "deadline_exceeded" and gate.queued("a") == 0
            held.set()
        while gate.in_flight("a"):
            await anyio.sleep(0.01)

    anyio.run(scenario)


def test_a_tenant_at_its_concurrency_gets_429_over_http_while_another_tenant_is_served(service: MemoryService):
    limits = replace(GENEROUS, tenant_concurrency=1)
    a, b = new_key(service.store, "a", "read"), new_key(service.store, "b", "read")
    search = {"user_id": "alice", "query": "where does alice live", "limit": 3}
    held = threading.Event()
    with Running(service, limits=limits, warm=False) as serving, serving.client(a) as tenant_a, serving.client(b) as tenant_b:
        gate = serving.app.state.retrieval
        loop = serving.server.servers[0].get_loop()
        # Tenant a's calls, in the server's own gate: one runs (its thread blocked), two wait their turn.
        holding = [asyncio.run_coroutine_threadsafe(gate.run("a", held.wait), loop) for _ in range(3)]
        while (gate.in_flight("a"), gate.queued("a")) != (1, 2):
            time.sleep(0.01)
        refused = tenant_a.post("/v1/search", json=search)
        assert refused.status_code == 429 and error_of(refused)["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "1"
        assert tenant_b.post("/v1/search", json=search).status_code == 200
        held.set()
        assert [h.result(timeout=30) for h in holding] == [True] * 3
        assert tenant_a.post("/v1/search", json=search).status_code == 200


# Slow clients ------------------------------------------------------------------------------------


def test_connections_that_stall_mid_headers_or_mid_body_are_closed(service: MemoryService):
    key = new_key(service.store, "acme")
    with Running(service, limits=replace(GENEROUS, read_timeout_seconds=1.0), warm=False) as serving:
        stalled = [serving.socket() for _ in range(50)]
        for sock in stalled[:25]:
            sock.sendall(b"GET /v1/memories?user_id=alice HTTP/1.1\r\nHost: hms\r\n")  # half the headers; the rest send nothing
        with serving.client(key) as api:  # the stalled connections hold no thread and no slot
            assert api.get("/v1/memories", params={"user_id": "alice"}).status_code == 200
        with serving.socket() as mid_body:
            mid_body.sendall(head("POST", "/v1/memories", f"Authorization: Bearer {key}", "Content-Type: application/json", "Content-Length: 100") + b'{"user_id"')
            status, headers, body = status_and_body(until_closed(mid_body))
        assert status == 408 and headers["connection"] == "close"
        assert b'"code":"timeout"' in body and b'"field":"body"' in body
        for sock in stalled:
            assert until_closed(sock) == b""
            sock.close()
        with serving.socket() as trickle:  # headers sent a byte at a time (~3 s) do not move the 1 s deadline
            try:
                for byte in head("GET", "/healthz", "X-Slow: " + "s" * 40):
                    trickle.sendall(bytes([byte]))
                    time.sleep(0.05)
            except OSError:
                pass  # refused mid-way: closed
            else:
                assert until_closed(trickle) == b"", "the trickled request was answered"
    assert service.store.stats()["events"] == 0
