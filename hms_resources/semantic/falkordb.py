"""What only a FalkorDB server needs: statements cut to fit its Bolt listener, parameters escaped,
its own index listing and shortest-path procedure.

FalkorDB (4.16) over Bolt is a stand-in for Neo4j in tests and small setups. Its listener reads a
message into one 4 KB buffer and pastes the parameters into the query's text in another, without
escaping them; a longer statement crashes the server, and an unescaped quote turns a value into Cypher."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hms_resources.semantic.cypher import checked_label

FALKORDB_STATEMENT_LIMIT = 3584
"""Bytes a statement may take on FalkorDB. Batches are cut to fit, and a statement that cannot fit
is refused before it is sent."""

DRIVER_OPTIONS: dict[str, Any] = {"connection_acquisition_timeout": 5.0}
"""FalkorDB 4.16 never answers the handshake of the first connection it accepts after a client's
GOODBYE: give up on such a connection in 5 s rather than 60."""

INDEXES_QUERY = "CALL db.indexes() YIELD label, properties RETURN label, properties"


class StatementTooLong(Exception):
    """A statement, or one value of a batch, that FalkorDB's Bolt listener cannot take."""


def index_statement(label: str, prop: str) -> str:
    """FalkorDB has neither IF NOT EXISTS nor unique constraints: an index per property, created
    only where `INDEXES_QUERY` lacks it."""
    return f"CREATE INDEX FOR (n:{checked_label(label)}) ON (n.{prop})"


def indexed(rows: list[list[Any]]) -> set[tuple[str, str]]:
    """(label, property) pairs from the rows of `INDEXES_QUERY`."""
    return {(label, prop) for label, props in rows for prop in props or ()}


def shortest_path_query(ends: str) -> str:
    """FalkorDB's shortestPath() follows one direction only and may not appear in MATCH: its
    procedure takes the edge types and the number of hops as parameters instead."""
    return (
        f"{ends}CALL algo.SPpaths({{sourceNode: a, targetNode: b, relTypes: $edge_types, "
        "relDirection: 'both', maxLen: $max_hops, pathCount: 1}) YIELD path "
        "WHERE all(n IN nodes(path) WHERE n.user_id = $user_id) "
        "RETURN [n IN nodes(path) | n.key] AS keys"
    )


def batches(query: str, name: str, values: Sequence[Any], max_rows: int) -> Iterator[list[Any]]:
    """`values` cut into lists to pass as the parameter `name` of `query`, at most `max_rows` each
    and each statement within `FALKORDB_STATEMENT_LIMIT`."""
    base = statement_size(query, {name: []})
    batch: list[Any] = []
    text, packed = base
    for value in values:
        value_text, value_packed = _value_size(value)
        cost = (value_text + 2, value_packed + 2)
        alone = max(base[0] + cost[0], base[1] + cost[1])
        if alone > FALKORDB_STATEMENT_LIMIT:
            raise StatementTooLong(
                f"{_describe_value(value)} needs {alone:,} bytes in one statement, "
                f"over the {FALKORDB_STATEMENT_LIMIT:,} bytes that FalkorDB's Bolt listener takes"
            )
        if batch and (len(batch) >= max_rows or max(text + cost[0], packed + cost[1]) > FALKORDB_STATEMENT_LIMIT):
            yield batch
            batch, (text, packed) = [], base
        batch.append(value)
        text, packed = text + cost[0], packed + cost[1]
    if batch:
        yield batch


def encode_parameters(query: str, params: Mapping[str, Any], *, sized: bool) -> dict[str, Any]:
    """Parameters as FalkorDB must receive them: quotes and backslashes escaped so that a value stays
    a value (unescaped, `x' MATCH (n) DETACH DELETE n //` runs as Cypher there). A statement too long
    is refused unless `sized` says `batches` already cut it to fit."""
    if not sized:
        size = max(statement_size(query, params))
        if size > FALKORDB_STATEMENT_LIMIT:
            raise StatementTooLong(
                f"the statement needs {size:,} bytes, over the {FALKORDB_STATEMENT_LIMIT:,} bytes that FalkorDB's Bolt listener takes"
            )
    return {name: _escape(value) for name, value in params.items()}


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            # FalkorDB would cut the string there: a key could then name another node.
            raise ValueError(f"a parameter for FalkorDB holds a NUL character: {value!r}")
        return value.replace("\\", "\\\\").replace("'", "\\'")
    if isinstance(value, list | tuple):
        return [_escape(item) for item in value]
    if isinstance(value, dict):
        return {name: _escape(item) for name, item in value.items()}
    return value


def statement_size(query: str, params: Mapping[str, Any]) -> tuple[int, int]:
    """Bytes of the statement as FalkorDB's Bolt listener reads it (the message) and rewrites it
    (`CYPHER name=value ... query`), with room for the message's framing."""
    query_text, query_packed = _value_size(query)
    params_text, params_packed = _value_size(dict(params))
    return 7 + query_text + params_text + 16, query_packed + params_packed + 16


def _value_size(value: Any) -> tuple[int, int]:
    """The bytes `value`, once escaped, takes in FalkorDB's text form of a parameter (as its Bolt
    listener prints it) and in its Bolt (PackStream) encoding."""
    if value is None or isinstance(value, bool):
        return 5, 1
    if isinstance(value, int):
        for low, high, packed in ((-16, 128, 1), (-(2**7), 2**7, 2), (-(2**15), 2**15, 3), (-(2**31), 2**31, 5)):
            if low <= value < high:
                return len(str(value)), packed
        return len(str(value)), 9
    if isinstance(value, float):
        return len(f"{value:f}"), 9
    if isinstance(value, str):
        size = len(value.encode()) + value.count("\\") + value.count("'")
        return size + 2, size + _packstream_header(size)
    if isinstance(value, list | tuple):
        text, packed = 2, _packstream_header(len(value))
        for item in value:
            item_text, item_packed = _value_size(item)
            text, packed = text + item_text + 2, packed + item_packed
        return text, packed
    if isinstance(value, dict):
        text, packed = 2, _packstream_header(len(value))
        for name, item in value.items():
            name_text, name_packed = _value_size(name)
            item_text, item_packed = _value_size(item)
            text, packed = text + name_text + item_text + 2, packed + name_packed + item_packed
        return text, packed
    raise ValueError(f"cannot send a {type(value).__name__} to FalkorDB")


def _packstream_header(size: int) -> int:
    return 1 if size < 16 else 2 if size < 256 else 3 if size < 65536 else 5


def _describe_value(value: Any) -> str:
    if isinstance(value, dict) and "key" in value:
        return f"node {value['key']!r}"
    if isinstance(value, dict) and "source" in value:
        return f"edge {value['source']!r} -> {value['target']!r}"
    return f"value {str(value)[:60]!r}"
