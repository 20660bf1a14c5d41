"""What one tenant may take of the service, so that no tenant stalls the others: a request rate (a token
bucket per tenant) and a few retrieval calls in flight (a slot per call, under one thread budget for
all tenants), each call answered by its deadline. A tenant over a limit is told at once (429 and
`Retry-After`): nothing of one tenant waits in a queue that another tenant's call needs."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread

from hms_resources.common.environment import setting
from hms_resources.serving.errors import ApiError

T = TypeVar("T")

RETRIEVAL_THREADS = 4
"""Retrieval is CPU work under one interpreter lock: a few threads at a time keep it fast."""


@dataclass(frozen=True)
class Limits:
    """The service's limits per tenant, and how long the server waits for a slow client."""

    tenant_rate: float
    """Requests a second one tenant's keys may make, on average."""
    tenant_burst: int
    """Requests one tenant may make at once, after a quiet while."""
    tenant_concurrency: int
    """Search and context calls one tenant may have running (below `retrieval_threads`)."""
    deadline_seconds: float
    """How long a search or context call may run before it is answered 503."""
    read_timeout_seconds: float
    """How long the server waits for a request's headers, and for each part of its body."""
    retrieval_threads: int = RETRIEVAL_THREADS

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            tenant_rate=setting("HMS_TENANT_RATE"),
            tenant_burst=setting("HMS_TENANT_BURST"),
            tenant_concurrency=setting("HMS_TENANT_CONCURRENCY"),
            deadline_seconds=setting("HMS_RETRIEVAL_DEADLINE_SECONDS"),
            read_timeout_seconds=setting("HMS_READ_TIMEOUT_SECONDS"),
        )


def rate_limited(message: str) -> ApiError:
    return ApiError(429, "rate_limited", message)


def retry_after(seconds: float) -> int:
    """`Retry-After` is whole seconds, and a client told 0 would come straight back."""
    return max(1, math.ceil(seconds))


# The request rate ------------------------------------------------------------------------------


def refilled(tokens: float, elapsed: float, rate: float, burst: int) -> float:
    """A bucket's tokens `elapsed` seconds later: `rate` a second, never above `burst`."""
    return min(float(burst), tokens + max(0.0, elapsed) * rate)


class TenantRates:
    """A token bucket per tenant. Used on the event loop only, so it needs no lock."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """tenant -> (tokens, when they were counted)"""

    def take(self, tenant: str) -> float:
        """0 when the tenant may make one more request now (and counts it), else the seconds until it may."""
        now = self.clock()
        tokens, counted = self._buckets.get(tenant, (float(self.burst), now))
        tokens = refilled(tokens, now - counted, self.rate, self.burst)
        if tokens >= 1:
            self._buckets[tenant] = (tokens - 1, now)
            return 0.0
        self._buckets[tenant] = (tokens, now)
        return (1 - tokens) / self.rate


# Retrieval calls in flight ---------------------------------------------------------------------


class _Abandoned(Exception):
    """Work skipped because its caller gave up before a thread took it."""


class _Slot:
    """One admitted call's place among its tenant's calls. Whoever claims it first frees it: the
    thread when its work ends, or the caller that gave up before a thread took the work (which is
    then skipped)."""

    def __init__(self, free: Callable[[], None], free_from_thread: Callable[[], None]):
        self._free = free
        self._free_from_thread = free_from_thread
        self._claimed = False
        self._lock = threading.Lock()

    def _claim(self) -> bool:
        with self._lock:
            claimed, self._claimed = self._claimed, True
            return not claimed

    def running(self, call: Callable[[], T]) -> Callable[[], T]:
        def work() -> T:
            if not self._claim():
                raise _Abandoned
            try:
                return call()
            finally:
                self._free_from_thread()

        return work

    def give_up(self) -> None:
        if self._claim():
            self._free()


class RetrievalGate:
    """Search and context calls: at most `per_tenant` running for one tenant and `waiting` more
    waiting their turn (on the event loop: a waiting call holds no thread), in at most `threads`
    threads for all tenants; a call beyond that is refused at once (429). `per_tenant` stays below
    `threads`, so one tenant never holds every thread. The deadline counts the wait too; a call past
    it is answered 503 while its thread finishes, still holding its tenant's place: a tenant cannot
    pile up abandoned work. The counts change on the event loop only."""

    def __init__(self, per_tenant: int, threads: int = RETRIEVAL_THREADS, deadline_seconds: float = 10.0, waiting: int | None = None):
        self.per_tenant = max(1, min(per_tenant, threads - 1))
        self.waiting = 2 * self.per_tenant if waiting is None else waiting
        self.deadline_seconds = deadline_seconds
        self.threads = anyio.CapacityLimiter(threads)
        self._running: dict[str, int] = {}
        self._turns: dict[str, deque[anyio.Event]] = {}

    @classmethod
    def of(cls, limits: Limits) -> RetrievalGate:
        return cls(limits.tenant_concurrency, limits.retrieval_threads, limits.deadline_seconds)

    def in_flight(self, tenant: str) -> int:
        """`tenant`'s calls holding a place: running, or abandoned but not yet finished."""
        return self._running.get(tenant, 0)

    def queued(self, tenant: str) -> int:
        return len(self._turns.get(tenant, ()))

    async def run(self, tenant: str, call: Callable[[], T], *, deadline: bool = True) -> T:
        """`call()` in a retrieval thread, as one of `tenant`'s calls, answered within the deadline
        (unless `deadline` is false)."""
        loop = asyncio.get_running_loop()
        with anyio.move_on_after(self.deadline_seconds if deadline else math.inf):
            await self._admitted(tenant)
            slot = _Slot(lambda: self._free(tenant), lambda: _on_loop(loop, self._free, tenant))
            try:
                return await anyio.to_thread.run_sync(slot.running(call), limiter=self.threads, abandon_on_cancel=True)
            finally:
                slot.give_up()
        raise ApiError(503, "deadline_exceeded", f"the call did not finish within {self.deadline_seconds:g} seconds; retry later or ask for less")

    async def _admitted(self, tenant: str) -> None:
        """A place among `tenant`'s running calls: now, after a wait in the tenant's short line, or 429."""
        running = self._running.get(tenant, 0)
        if running < self.per_tenant:
            self._running[tenant] = running + 1
            return
        turns = self._turns.setdefault(tenant, deque())
        if len(turns) >= self.waiting:
            raise rate_limited(f"this tenant has {running} search or context calls running and {len(turns)} waiting, the most it may; retry when one has answered")
        turn = anyio.Event()
        turns.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self._free(tenant)  # handed a place just as it gave up: the next one takes it
            else:
                turns.remove(turn)
            raise
        finally:
            if not turns:
                self._turns.pop(tenant, None)

    def _free(self, tenant: str) -> None:
        """A call of `tenant` ended: its place passes to the tenant's next waiting call, if any."""
        turns = self._turns.get(tenant)
        if turns:
            turns.popleft().set()
            return
        left = self._running.get(tenant, 1) - 1
        if left > 0:
            self._running[tenant] = left
        else:
            self._running.pop(tenant, None)


def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[[str], None], tenant: str) -> None:
    """From a retrieval thread: `call(tenant)` on the event loop, unless the server has stopped."""
    try:
        loop.call_soon_threadsafe(call, tenant)
    except RuntimeError:
        pass
