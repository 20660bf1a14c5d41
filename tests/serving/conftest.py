"""Fixtures of the service tests: `hms serve` as a real process on a loopback port, the app under
uvicorn in a thread of the test (`Running`), and keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import uvicorn

from hms_resources.serving.http import create_app, server_config
from hms_resources.serving.keys import create_key
from hms_resources.serving.service import MemoryService
from hms_resources.store.event_store import EventStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """`hms serve` in a child process: start, kill (SIGKILL), start again on the same port."""

    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "Server":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hms_jobs.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hms serve exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hms serve did not become ready: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def server_env(home: Path, database_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "HMS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("HMS_DATABASE_URL", None)
    if database_url:
        env["HMS_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def serve_process(hms_home: Path, tmp_path: Path) -> Iterator[Server]:
    """An `hms serve` over the test's HMS home (not started: call `.start()`)."""
    server = Server(server_env(hms_home), free_port(), tmp_path / "serve.log")
    yield server
    server.stop()


def new_key(store: EventStore, tenant: str, scope: str = "write") -> str:
    return create_key(store, tenant, scope).secret


BODY_LIMIT = 64 * 1024


class Running:
    """`create_app` under uvicorn in a thread of the test process, on a free loopback port, with the
    read timeouts of `hms serve` (`server_config`). `warm=False` skips loading the context indexes
    (seconds) for tests that never read them; `mcp` mounts the MCP server; `options` go to `create_app`."""

    def __init__(self, service: MemoryService, chat: Any = None, *, warm: bool = True, mcp: bool = False, **options: Any):
        mcp_app = None
        if mcp:
            from hms_resources.serving.mcp_server import streamable_http_app

            mcp_app = streamable_http_app(service)
        self.service = service
        self.app = create_app(service, **{"max_body_bytes": BODY_LIMIT, **options}, chat=chat, warm=warm, mcp_app=mcp_app)
        self.port = free_port()
        self.server = uvicorn.Server(server_config(self.app, "127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, key: str | None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def socket(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=15)


@pytest.fixture
def ranking_service(store_url: str, tmp_path: Path) -> Iterator[MemoryService]:
    """A service over the test's store (`store_url`) that ranks (the online indexer on), as `hms serve` runs it."""
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.semantic.embedder import Embedder

    store = EventStore(database_url=store_url, hms_home=str(tmp_path / "home"))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env())
    yield MemoryService(store, assembler)
    assembler.close()
    store.close()


@pytest.fixture
def written_service(store_url: str, tmp_path: Path) -> Iterator[MemoryService]:
    """A service over the test's store (`store_url`) without the online indexer: for tests of writes
    and listings, which never rank."""
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.semantic.embedder import Embedder

    store = EventStore(database_url=store_url, hms_home=str(tmp_path / "home"))
    assembler = ContextAssembler(event_store=store, embedder=Embedder.from_env(), online_index=False)
    yield MemoryService(store, assembler)
    assembler.close()
    store.close()
