"""Cypher statements run on one Bolt server: each a managed transaction the driver retries
(`execute_write`, `execute_read`), its parameters encoded for the dialect (FalkorDB's escaped and
size-checked, its batches cut to fit), and a failure raised as a `GraphSyncError` naming the step and
the server, never the password."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import neo4j
from neo4j.exceptions import DriverError, Neo4jError, ServiceUnavailable, SessionExpired

from hms_resources.common.home import redact_url
from hms_resources.semantic import falkordb

NEO4J = "neo4j"
FALKORDB = "falkordb"
DIALECTS = (NEO4J, FALKORDB)


class GraphSyncError(RuntimeError):
    """The graph server could not do what was asked (unreachable, refused, failed mid-sync)."""


def checked_dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, got {dialect!r}")
    return dialect


class GraphStatements:
    """How one graph store runs its statements; `driver` is called when a statement first needs it."""

    def __init__(
        self, driver: Callable[[], neo4j.Driver], *, database: str, server: str, password: str, retry_time_s: float, dialect: str
    ) -> None:
        self._driver = driver
        self.database = database
        self.server = server
        self._password = password
        self.retry_time_s = retry_time_s
        self.dialect = dialect

    def write(self, what: str, query: str, params: Mapping[str, Any] | None = None, *, sized: bool = False) -> None:
        encoded = self._encode(what, query, params or {}, sized=sized)
        self._run(what, lambda session: session.execute_write(_consume, query, encoded))

    def read(self, what: str, query: str, params: Mapping[str, Any] | None = None, *, sized: bool = False) -> list[list[Any]]:
        encoded = self._encode(what, query, params or {}, sized=sized)
        return self._run(what, lambda session: session.execute_read(_values, query, encoded))

    def batches(self, what: str, query: str, name: str, values: Sequence[Any], max_rows: int | None) -> Iterator[list[Any]]:
        """`values` cut into lists to pass as the parameter `name` of `query`: at most `max_rows`
        each, and on FalkorDB small enough for its Bolt listener."""
        limit = max(1, max_rows) if max_rows else max(1, len(values))
        if self.dialect == FALKORDB:
            try:
                yield from falkordb.batches(query, name, values, limit)
            except falkordb.StatementTooLong as exc:
                raise GraphSyncError(f"{what}: {exc}") from None
            return
        for start in range(0, len(values), limit):
            yield list(values[start : start + limit])

    def _run(self, what: str, work: Callable[[neo4j.Session], Any]) -> Any:
        """`work` in a fresh session; the driver has already retried it when an error reaches here."""
        try:
            with self._driver().session(database=self.database) as session:
                return work(session)
        except (Neo4jError, DriverError) as exc:
            where = f"the graph server {self.server} (database {self.database!r})"
            if isinstance(exc, (ServiceUnavailable, SessionExpired)):
                problem = f"{what} failed: {where} is unavailable after retrying for {self.retry_time_s:g} s"
            elif exc.is_retryable():
                problem = f"{what} failed on {where} after retrying for {self.retry_time_s:g} s"
            else:
                problem = f"{what} failed on {where}"
            raise GraphSyncError(f"{problem}: {self._describe(exc)}") from exc

    def _describe(self, exc: BaseException) -> str:
        text = redact_url(f"{type(exc).__name__}: {exc}")
        return text.replace(self._password, "***") if self._password else text

    def _encode(self, what: str, query: str, params: Mapping[str, Any], *, sized: bool = False) -> dict[str, Any]:
        """Parameters as the server must receive them: FalkorDB's escaped and size-checked."""
        if self.dialect != FALKORDB:
            return dict(params)
        try:
            return falkordb.encode_parameters(query, params, sized=sized)
        except falkordb.StatementTooLong as exc:
            raise GraphSyncError(f"{what}: {exc}") from None


def _consume(tx: neo4j.ManagedTransaction, query: str, params: dict[str, Any]) -> None:
    tx.run(query, params).consume()


def _values(tx: neo4j.ManagedTransaction, query: str, params: dict[str, Any]) -> list[list[Any]]:
    return tx.run(query, params).values()
