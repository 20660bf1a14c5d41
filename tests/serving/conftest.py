"""Fixtures of the service tests: `hms serve` as a real process on a loopback port, and keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hms_resources.serving.keys import create_key
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
