"""Faults, with real parts: `hms serve` killed with SIGKILL in the middle of batched writes (on SQLite
and on PostgreSQL), and PostgreSQL made unreachable behind a TCP proxy the test owns.

No acknowledged write may be lost, a retry with the same event ids stores nothing twice, an
unreachable store is a 503 `store_unavailable` that names no password, and the service recovers by
itself once the store answers again. No response and no line of the server's log holds a key."""

from __future__ import annotations

import json
import random
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from hms_resources.store.event_store import EventStore
from tests.serving.conftest import Server, free_port, new_key, server_env

TENANT = "acme"
BATCHES = 40
PER_BATCH = 100


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers the test starts, stopped at its end whatever happens."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def assert_no_secret(texts: list[str], secret_texts: list[str], where: str) -> None:
    for text in texts:
        for secret in secret_texts:
            assert secret not in text, f"a secret is in {where}: {text[:300]}"


def key_texts(key: str) -> list[str]:
    """The key, the `Authorization` header value, and the key's secret part alone."""
    return [key, f"Bearer {key}", key.split("_", 2)[2]]


# SIGKILL in the middle of batched writes --------------------------------------------------------------


def the_batches() -> list[list[dict[str, Any]]]:
    return [
        [
            {
                "user_id": f"user{(b * PER_BATCH + i) % 10}",
                "memory_id": f"m-{b:02d}-{i:03d}",
                "event_id": f"ev-{b:02d}-{i:03d}",
                "content": f"batch {b} item {i} of the kill test",
                "tags": ["kill"],
            }
            for i in range(PER_BATCH)
        ]
        for b in range(BATCHES)
    ]


class Poster(threading.Thread):
    """Posts the given batches in order, once each, as fast as it can, until the first failure; keeps
    the answers it got a 2xx for, and the batch it is sending with the time it started."""

    def __init__(self, url: str, key: str, batches: list[list[dict[str, Any]]], order: list[int]):
        super().__init__(daemon=True)
        self.url = url
        self.key = key
        self.batches = batches
        self.order = order
        self.acked: dict[int, dict[str, Any]] = {}
        self.bodies: list[str] = []
        self.latencies: list[float] = []
        self.sending: tuple[int, float] | None = None
        self.failure: str | None = None
        self.failed_batch: int | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as client:
            for b in self.order:
                started = time.monotonic()
                self.sending = (b, started)
                try:
                    response = client.post("/v1/memories", json={"memories": self.batches[b]})
                except httpx.TransportError as exc:
                    self.failure, self.failed_batch = f"batch {b}: {type(exc).__name__}", b
                    return
                finally:
                    self.sending = None
                self.bodies.append(response.text)
                if not 200 <= response.status_code < 300:
                    self.failure = f"batch {b}: answered {response.status_code} {response.text[:300]}"
                    return
                self.latencies.append(time.monotonic() - started)
                self.acked[b] = response.json()


KILLS = 6
"""Kills per run, each at a random point of a batch's request (after at least two batches of the
round were acknowledged)."""


def kill_mid_batches(servers: list[Server], home: Path, log: Path, database_url: str | None) -> None:
    """Kill the server at several points inside a batch's request, restart it on the same port and go
    on with every batch not acknowledged yet, then retry what is left once more."""
    store = EventStore(database_url=database_url or "", hms_home=str(home))
    key = new_key(store, TENANT, "write")
    store.close()
    server = Server(server_env(home, database_url), free_port(), log)
    servers.append(server)
    batches = the_batches()
    acked: dict[int, dict[str, Any]] = {}
    sent_before: set[int] = set()
    outcomes: dict[str, int] = {"created": 0, "duplicate": 0}
    bodies: list[str] = []

    def check_batch(b: int, results: dict[str, Any]) -> None:
        statuses = {r["status"] for r in results["results"]}
        assert len(results["results"]) == PER_BATCH and results["rejected"] == 0, results
        for item, result in zip(batches[b], results["results"]):
            assert result["event_id"] == item["event_id"] and result["memory_id"] == item["memory_id"], result
        if b in sent_before:
            # the batch was in flight at a kill: stored whole (then a duplicate now) or not at all
            assert statuses in ({"created"}, {"duplicate"}), f"batch {b} was stored in part: {statuses}"
        else:
            assert statuses == {"created"}, f"batch {b}, never sent before, answered {statuses}"
        outcomes[statuses.pop()] += 1

    rng = random.Random(1234)
    for _ in range(KILLS):
        pending = [b for b in range(BATCHES) if b not in acked]
        server.start()
        poster = Poster(server.url, key, batches, pending)
        poster.start()
        share = rng.uniform(0.0, 1.2)
        deadline = time.monotonic() + 300
        while poster.is_alive() and time.monotonic() < deadline:
            sending = poster.sending
            if len(poster.acked) >= 2 and sending is not None:
                mean = sum(poster.latencies) / len(poster.latencies)
                # a later request of the round, if this one is answered before its kill point
                if time.monotonic() - sending[1] >= share * mean or len(poster.acked) >= 4:
                    break
            time.sleep(0.0005)
        server.kill()
        poster.join(120)
        assert not poster.is_alive()
        assert poster.failure is not None, "every batch was acknowledged before the kill: nothing was cut off"
        assert poster.failed_batch is not None, f"a batch failed before the kill: {poster.failure}"
        assert len(poster.acked) >= 2, f"too few acknowledgements before the kill: {poster.failure}"
        for b, results in poster.acked.items():
            check_batch(b, results)
        acked.update(poster.acked)
        bodies += poster.bodies
        sent_before.update(poster.acked)
        sent_before.add(poster.failed_batch)

    server.start()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        for b in [b for b in range(BATCHES) if b not in acked]:
            response = client.post("/v1/memories", json={"memories": batches[b]})
            bodies.append(response.text)
            assert response.status_code == 200, response.text[:500]
            check_batch(b, response.json())
            acked[b] = response.json()
        # an acknowledged batch sent again stores nothing
        again = client.post("/v1/memories", json={"memories": batches[0]})
        bodies.append(again.text)
        assert again.status_code == 200 and again.json()["duplicates"] == PER_BATCH, again.text[:500]
        listed = client.get("/v1/memories", params={"user_id": "user3", "limit": 500})
        bodies.append(listed.text)
    server.stop()
    print(f"{KILLS} kills; batches answered: {outcomes} (a duplicate batch was committed but not acknowledged before a kill)")
    assert listed.status_code == 200 and len(listed.json()["memories"]) == BATCHES * PER_BATCH // 10

    # the store itself, read directly
    store = EventStore(database_url=database_url or "", hms_home=str(home))
    try:
        events = list(store.read_events())
        sent = {f"{TENANT}/{item['event_id']}": item for batch in batches for item in batch}
        ids = [e.event_id for e in events]
        assert len(ids) == len(set(ids)), "an event id is stored twice"
        assert set(ids) == set(sent), f"missing {sorted(set(sent) - set(ids))[:5]}, unexpected {sorted(set(ids) - set(sent))[:5]}"
        assert len(events) == BATCHES * PER_BATCH
        for event in events:
            item = sent[event.event_id]
            assert event.user_id == f"{TENANT}/{item['user_id']}" and event.memory_id == item["memory_id"], event
            assert event.payload == {"content": item["content"], "tags": ["kill"]}, event
        sequences = [e.sequence for e in events]
        assert sequences == list(range(1, len(events) + 1)), "the log's sequence numbers have a gap or a repeat"
        state = store.replay()
        assert len(state) == BATCHES * PER_BATCH and all(m.status == "live" for m in state.values())
        if not store.is_postgres:
            with sqlite3.connect(make_url(store.url).database) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        store.close()
    assert_no_secret(bodies, key_texts(key), "a response")
    assert_no_secret([log.read_text(errors="replace")], key_texts(key), "the server log")


@pytest.mark.timeout(600)
def test_sigkill_mid_batches_loses_no_acknowledged_write_sqlite(hms_home: Path, tmp_path: Path, servers: list[Server]) -> None:
    kill_mid_batches(servers, hms_home, tmp_path / "serve.log", None)


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_sigkill_mid_batches_loses_no_acknowledged_write_postgres(
    hms_home: Path, tmp_path: Path, postgres_url: str, servers: list[Server]
) -> None:
    kill_mid_batches(servers, hms_home, tmp_path / "serve.log", postgres_url)


# The store unreachable ------------------------------------------------------------------------------


class TcpProxy:
    """A TCP forwarder on a loopback port: `stop` closes the listener and drops every forwarded
    connection; `start` listens on the same port again."""

    def __init__(self, upstream: tuple[str, int], port: int, *, forward: bool = True):
        self.upstream = upstream
        self.forward = forward
        """False: accept connections and never answer, as a store host that hangs."""
        self.port = port
        self.listener: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.running = False
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.accepted = 0

    def start(self) -> "TcpProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.listener = listener
        self.running = True
        self.thread = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self.thread.start()
        return self

    def _accept(self) -> None:
        while self.running:
            try:
                downstream, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.forward:
                with self.lock:
                    self.connections.append(downstream)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                downstream.close()
                continue
            downstream.settimeout(None)
            upstream.settimeout(None)
            with self.lock:
                if not self.running:
                    downstream.close()
                    upstream.close()
                    return
                self.connections += [downstream, upstream]
                self.accepted += 1
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        with self.lock:
            self.running = False
            dropped, self.connections = self.connections, []
        if self.thread is not None:
            self.thread.join(5)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for sock in dropped:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def expect_unavailable(response: httpx.Response, password: str) -> None:
    assert response.status_code == 503, (
        f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:300]}"
    )
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "store_unavailable", body
    message = body["error"]["message"]
    assert "unreachable" in message, message
    assert not password or password not in response.text, f"the database password is in a response: {response.text}"


def wait_for(call, ok, seconds: float) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = call()
            if ok(response) or time.monotonic() > deadline:
                return response
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_store_unreachable_is_503_and_the_service_recovers(
    hms_home: Path, tmp_path: Path, postgres_url: str, servers: list[Server]
) -> None:
    real = make_url(postgres_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432), free_port()).start()
    password = f"pw{secrets.token_hex(12)}"
    through_proxy = real.set(host="127.0.0.1", port=proxy.port, password=password).render_as_string(hide_password=False)
    store = EventStore(database_url=postgres_url, hms_home=str(hms_home))
    key = new_key(store, TENANT, "admin")  # the operator's: it reads the detailed /readyz and /metrics
    store.close()
    log = tmp_path / "serve.log"
    server = Server({**server_env(hms_home, through_proxy), "HMS_OPERATOR_TENANT": TENANT}, free_port(), log)
    servers.append(server)
    bodies: list[str] = []
    try:
        server.start()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:

            def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
                started = time.monotonic()
                response = client.request(method, path, **kwargs)
                assert time.monotonic() - started < 30, f"{method} {path} took {time.monotonic() - started:.1f}s"
                bodies.append(response.text)
                return response

            before = {"user_id": "alice", "event_id": "e-before", "content": "written before the outage"}
            during = {"user_id": "alice", "event_id": "e-during", "content": "written once the store is back"}
            assert send("POST", "/v1/memories", json=before).status_code == 201
            ready = send("GET", "/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
            assert proxy.accepted >= 1, "the service did not go through the proxy"

            proxy.stop()
            expect_unavailable(send("GET", "/readyz"), password)
            expect_unavailable(send("POST", "/v1/memories", json=during), password)
            expect_unavailable(send("POST", "/v1/memories", json={"memories": [during]}), password)
            expect_unavailable(send("GET", "/v1/memories", params={"user_id": "alice"}), password)
            expect_unavailable(send("GET", "/v1/memories/e-before", params={"user_id": "alice"}), password)
            expect_unavailable(send("POST", "/v1/context", json={"user_id": "alice", "query": "outage"}), password)
            expect_unavailable(send("GET", "/readyz"), password)
            assert send("GET", "/healthz").status_code == 200
            metrics = send("GET", "/metrics")
            assert metrics.status_code == 200 and "store_unavailable" in metrics.text

            proxy.start()
            ready = wait_for(lambda: send("GET", "/readyz"), lambda r: r.status_code == 200, 30)
            assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
            written = wait_for(lambda: send("POST", "/v1/memories", json=during), lambda r: r.status_code == 201, 15)
            assert written.status_code == 201 and written.json()["status"] == "created", written.text
            listed = send("GET", "/v1/memories", params={"user_id": "alice"})
            assert listed.status_code == 200
            assert sorted(m["content"] for m in listed.json()["memories"]) == sorted([before["content"], during["content"]])
            context = send("POST", "/v1/context", json={"user_id": "alice", "query": "store back"})
            assert context.status_code == 200 and during["content"] in context.json()["prompt"], context.text[:500]
        server.stop()
    finally:
        proxy.stop()
    store = EventStore(database_url=postgres_url, hms_home=str(hms_home))
    try:
        assert sorted(e.event_id for e in store.read_events() if e.type == "memory.created") == [f"{TENANT}/e-before", f"{TENANT}/e-during"]
    finally:
        store.close()
    log_text = log.read_text(errors="replace")
    assert_no_secret(bodies, [*key_texts(key), password], "a response")
    assert_no_secret([log_text], [*key_texts(key), password], "the server log")
    assert json.dumps(through_proxy) not in log_text


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_store_that_never_answers_is_503_within_seconds(
    hms_home: Path, tmp_path: Path, postgres_url: str, servers: list[Server]
) -> None:
    real = make_url(postgres_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432), free_port()).start()
    through_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = EventStore(database_url=postgres_url, hms_home=str(hms_home))
    key = new_key(store, TENANT, "admin")  # the operator's: it reads the detailed /readyz
    store.close()
    server = Server({**server_env(hms_home, through_proxy), "HMS_OPERATOR_TENANT": TENANT}, free_port(), tmp_path / "serve.log")
    servers.append(server)
    hung = TcpProxy(proxy.upstream, proxy.port, forward=False)
    try:
        server.start()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=20) as client:
            assert client.post("/v1/memories", json={"user_id": "alice", "content": "before"}).status_code == 201
            proxy.stop()
            hung.start()
            expect_unavailable(client.get("/readyz"), "")
            expect_unavailable(client.post("/v1/memories", json={"user_id": "alice", "content": "during"}), "")
    finally:
        proxy.stop()
        hung.stop()
        server.kill()
