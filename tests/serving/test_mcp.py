"""The MCP server through the SDK's own client: over stdio (`hms mcp` as a child process, keyed by
`HMS_API_KEY`) and over streamable HTTP (`hms serve`, `/mcp`, keyed by the Authorization header):
every tool, the `memory://` resources and their paged listing, scopes, tenants, and 401 before MCP for
a request without a key; and the header of `hms keys list`."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from click.testing import CliRunner
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, PaginatedRequestParams, Resource
from mcp_types import INVALID_PARAMS
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from hms_jobs.cli import main
from hms_resources.serving.errors import ApiError
from hms_resources.serving.mcp_server import RESOURCE_PAGE, _resource_cursor, resource_page
from hms_resources.serving.service import MemoryService
from hms_resources.serving.tenants import Principal
from hms_resources.store.event_store import EventStore
from tests.serving.conftest import Running, Server, new_key, server_env

TOOLS = {"remember", "recall", "search_memories", "get_memory", "list_memories", "forget", "feedback"}


def keys(home: Path, *wanted: tuple[str, str]) -> list[str]:
    store = EventStore(hms_home=str(home))
    try:
        return [new_key(store, tenant, scope) for tenant, scope in wanted]
    finally:
        store.close()


@asynccontextmanager
async def over_stdio(home: Path, key: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "hms_jobs.cli", "mcp"], env={**server_env(home), "HMS_API_KEY": key})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_http(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as http, streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    result: CallToolResult = await session.call_tool(tool, arguments)
    assert result.is_error
    return result.content[0].text


async def every_tool(session: ClientSession, key: str) -> None:
    """The same walk over both transports: each tool once, the resource, and the errors."""
    assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
    templates = (await session.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["memory://{user_id}/{memory_id}", "memory://{user_id}{?cursor}"]

    added = await call(session, "remember", user_id="alice", content="Alice is planning a trip to Lisbon in May.", memory_type="goal", category="travel", tags=["trip"], importance=0.8, memory_id="trip")
    assert added["status"] == "created" and added["memory_id"] == "trip" and added["user_id"] == "alice"
    await call(session, "remember", user_id="alice", content="Alice plays chess every Sunday.", event_id="chess-1")
    again = await call(session, "remember", user_id="alice", content="Alice plays chess every Sunday.", event_id="chess-1")
    assert again["status"] == "duplicate" and again["memory_id"] == "chess-1"
    assert (await refused(session, "remember", user_id="alice", content="x", importance=7)).startswith("invalid:")

    recalled = await session.call_tool("recall", {"user_id": "alice", "query": "Where is Alice travelling?", "max_tokens": 256})
    assert not recalled.is_error and "Lisbon" in recalled.content[0].text
    assert "trip" in [item["memory_id"] for item in recalled.structured_content["items"]]
    assert json.loads(recalled.content[1].text)["items"] == recalled.structured_content["items"]

    found = (await call(session, "search_memories", user_id="alice", query="chess on Sunday", limit=1))["results"]
    assert [r["memory_id"] for r in found] == ["chess-1"]
    got = await call(session, "get_memory", user_id="alice", memory_id="trip")
    assert got["content"].startswith("Alice is planning") and got["tags"] == ["trip"] and got["status"] == "live"
    page = await call(session, "list_memories", user_id="alice", limit=1)
    assert [m["memory_id"] for m in page["memories"]] == ["chess-1"] and page["next_cursor"]
    rest = await call(session, "list_memories", user_id="alice", cursor=page["next_cursor"])
    assert [m["memory_id"] for m in rest["memories"]] == ["trip"] and rest["next_cursor"] is None
    assert [m["memory_id"] for m in (await call(session, "list_memories", user_id="alice", category="travel"))["memories"]] == ["trip"]
    assert (await call(session, "feedback", user_id="alice", memory_id="trip", was_relevant=True, relevance_score=0.9))["recorded"] is True

    listed = await session.list_resources()
    assert [str(r.uri) for r in listed.resources] == ["memory://alice/chess-1", "memory://alice/trip"] and listed.next_cursor is None
    read = await session.read_resource("memory://alice/trip")
    assert json.loads(read.contents[0].text)["memory_id"] == "trip" and read.contents[0].mime_type == "application/json"
    with pytest.raises(MCPError, match="not_found"):
        await session.read_resource("memory://alice/nope")

    assert (await call(session, "forget", user_id="alice", memory_id="chess-1", reason="asked to"))["memory_id"] == "chess-1"
    assert (await call(session, "get_memory", user_id="alice", memory_id="chess-1"))["status"] == "forgotten"
    assert [str(r.uri) for r in (await session.list_resources()).resources] == ["memory://alice/trip"]
    assert (await refused(session, "get_memory", user_id="alice", memory_id="nope")).startswith("not_found:")
    assert (await refused(session, "forget", user_id="alice", memory_id="chess-1")).startswith("forgotten:")
    other = await refused(session, "list_memories", user_id="othertenant/alice")
    assert other.startswith("forbidden:") and key not in other
    assert (await refused(session, "remember", user_id="othertenant/alice", content="not ours")).startswith("forbidden:")
    with pytest.raises(MCPError, match="forbidden"):
        await session.read_resource("memory://othertenant%2Falice/trip")


async def read_only(session: ClientSession, key: str) -> None:
    text = await refused(session, "remember", user_id="alice", content="read keys do not write")
    assert text.startswith("forbidden:") and key not in text
    assert (await call(session, "get_memory", user_id="alice", memory_id="trip"))["memory_id"] == "trip"


def test_every_tool_over_stdio(hms_home: Path):
    writer, reader = keys(hms_home, ("acme", "write"), ("acme", "read"))

    async def walk() -> None:
        async with over_stdio(hms_home, writer) as session:
            await every_tool(session, writer)
        async with over_stdio(hms_home, reader) as session:
            await read_only(session, reader)

    anyio.run(walk)


def test_every_tool_over_streamable_http(hms_home: Path, serve_process: Server):
    writer, reader, globex = keys(hms_home, ("acme", "write"), ("acme", "read"), ("globex", "write"))
    serve_process.start()
    url = f"{serve_process.url}/mcp/"

    async def walk() -> None:
        async with over_http(url, writer) as session:
            await every_tool(session, writer)
        async with over_http(url, reader) as session:
            await read_only(session, reader)

        # Two tenants each with a user `alice`: neither sees the other's.
        async with over_http(url, globex) as session:
            await call(session, "remember", user_id="alice", content="Alice keeps bees on her roof in Oslo.", memory_id="bees")
            listed = (await call(session, "list_memories", user_id="alice", status="any"))["memories"]
            assert [m["memory_id"] for m in listed] == ["bees"]
            recalled = await call(session, "recall", user_id="alice", query="Where is Alice travelling? Lisbon trip")
            assert [i["memory_id"] for i in recalled["items"]] == ["bees"] and "Lisbon" not in recalled["prompt"]
            assert [r["memory_id"] for r in (await call(session, "search_memories", user_id="alice", query="Lisbon trip"))["results"]] in ([], ["bees"])
            assert (await refused(session, "get_memory", user_id="alice", memory_id="trip")).startswith("not_found:")
            assert (await refused(session, "get_memory", user_id="acme/alice", memory_id="trip")).startswith("forbidden:")
        async with over_http(url, writer) as session:
            listed = (await call(session, "list_memories", user_id="alice", status="any"))["memories"]
            assert [m["memory_id"] for m in listed] == ["chess-1", "trip"]

        # The mount's root without its slash answers too (served as it is, no redirect).
        async with over_http(f"{serve_process.url}/mcp", reader) as session:
            assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS

        # The SDK's high-level client speaks the handshake-free 2026 protocol: the key reaches the tool too.
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {globex}"}) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                assert client.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS
                found = await client.call_tool("get_memory", {"user_id": "alice", "memory_id": "bees"})
                assert not found.is_error and found.structured_content["content"].startswith("Alice keeps bees")

    anyio.run(walk)

    # No key, or a wrong one: the HTTP API's 401 body, before MCP.
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer hms_0123456789abcdef_wrong"}):
        response = httpx.post(url, json=ping, headers={"Accept": "application/json, text/event-stream", **headers}, timeout=30)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized" and set(response.json()["error"]) == {"code", "message", "field"}
    with pytest.raises(BaseExceptionGroup) as failed:
        anyio.run(_list_without_key, url)
    assert failed.group_contains(MCPError, depth=None)
    assert writer not in serve_process.log.read_text()


async def _list_without_key(url: str) -> None:
    async with over_http(url, None) as session:
        await session.list_tools()


def remembered(service: MemoryService, principal: Principal, user: str, count: int) -> None:
    items = [{"user_id": user, "content": f"{user} note {n}:  likes\n tea number {n}. " + "x" * n, "memory_id": f"m-{n:03d}"} for n in range(count)]
    assert {r["status"] for r in service.add_memories(principal, items)} == {"created"}


async def every_resource(session: ClientSession) -> list[list[Resource]]:
    """`resources/list` followed through `nextCursor` to its last page."""
    found = await session.list_resources()
    pages = [found.resources]
    while found.next_cursor is not None:
        found = await session.list_resources(params=PaginatedRequestParams(cursor=found.next_cursor))
        pages.append(found.resources)
    return pages


def test_resources_list_pages_through_the_tenants_memories_only(written_service: MemoryService):
    service = written_service
    acme, globex, neighbour = (Principal(tenant, "write", f"test-{tenant}") for tenant in ("acme", "globex", "acme-eu"))
    users = {"ann": 45, "bob": 1, "acme/kids/leo": 2, "maya": RESOURCE_PAGE + 1}
    for user, count in users.items():
        remembered(service, acme, user, count)
    remembered(service, globex, "maya", 3)
    remembered(service, neighbour, "ann", 2)
    service.forget_memory(acme, "ann", "m-007")
    key = new_key(service.store, "acme", "read")
    # Stored-id order: acme/ann, acme/bob, acme/kids/leo, acme/maya; each user's memories in id order.
    expected = [(user, f"m-{n:03d}") for user, count in users.items() for n in range(count) if (user, n) != ("ann", 7)]

    async def walk(url: str) -> None:
        async with over_http(url, key) as session:
            pages = await every_resource(session)
            assert [len(page) for page in pages] == [RESOURCE_PAGE, len(expected) - RESOURCE_PAGE]
            listed = [resource for page in pages for resource in page]
            assert [str(r.uri) for r in listed] == [f"memory://{user.replace('/', '%2F')}/{memory}" for user, memory in expected]
            first = listed[0]
            assert (first.name, first.title, first.mime_type) == ("m-000", "ann: m-000", "application/json")
            assert first.description == "ann note 0: likes tea number 0."
            assert len(listed[-1].description) == 80 and listed[-1].description.endswith("…")

            leo = next(r for r in listed if r.name == "m-001" and "leo" in str(r.uri))
            read = await session.read_resource(str(leo.uri))
            assert json.loads(read.contents[0].text)["content"].startswith("acme/kids/leo note 1")

            # A user's listing: a page of memories (the forgotten left out) and the URI of the next.
            ann = json.loads((await session.read_resource("memory://ann")).contents[0].text)
            assert [m["memory_id"] for m in ann["memories"]] == [f"m-{n:03d}" for n in range(45) if n != 7]
            assert ann["next_page"] is None and ann["memories"][0]["uri"] == "memory://ann/m-000"
            maya = json.loads((await session.read_resource("memory://maya")).contents[0].text)
            assert len(maya["memories"]) == RESOURCE_PAGE and maya["next_page"].startswith("memory://maya?cursor=")
            rest = json.loads((await session.read_resource(maya["next_page"])).contents[0].text)
            assert [m["memory_id"] for m in rest["memories"]] == [f"m-{RESOURCE_PAGE:03d}"] and rest["next_page"] is None

            for cursor in ("nonsense", "r1.bm9uc2Vuc2U", _resource_cursor("globex/maya", "")):
                with pytest.raises(MCPError) as refused:
                    await session.list_resources(params=PaginatedRequestParams(cursor=cursor))
                assert refused.value.code == INVALID_PARAMS
            with pytest.raises(MCPError, match="cursor"):
                await session.read_resource("memory://maya?cursor=m1.bogus")
            with pytest.raises(MCPError, match="forbidden"):
                await session.read_resource("memory://globex%2Fmaya")

    with Running(service, mcp=True, warm=False) as running:
        anyio.run(walk, f"{running.url}/mcp/")


def test_resource_pages_of_any_size_cover_the_tenant_once(written_service: MemoryService):
    service = written_service
    acme = Principal("acme", "write", "test-acme")
    for user, count in (("a", 3), ("b", 1), ("c", 2), ("d", 1)):
        remembered(service, acme, user, count)
    service.forget_memory(acme, "a", "m-001")
    service.forget_memory(acme, "b", "m-000")  # b has nothing left: it is not visited
    service.archive_memory(acme, "d", "m-000", "old")  # archived is still a memory
    expected = [("a", "m-000"), ("a", "m-002"), ("c", "m-000"), ("c", "m-001"), ("d", "m-000")]
    for size in range(1, 7):
        pages, cursor = [], None
        while True:
            page, cursor = resource_page(service, acme, cursor, size)
            pages.append([(user, found["memory_id"]) for user, found in page])
            if cursor is None:
                break
        assert [found for page in pages for found in page] == expected, size
        assert all(len(page) == size for page in pages[:-1]) and 1 <= len(pages[-1]) <= size, size

    assert resource_page(service, Principal("globex", "read", "test-globex"), None) == ([], None)
    with pytest.raises(ApiError) as refused:
        resource_page(service, acme, _resource_cursor(None, "m1.YQ"), 2)
    assert (refused.value.status, refused.value.field) == (422, "cursor")


def test_keys_list_starts_with_a_header_row(hms_home: Path):
    keys(hms_home, ("acme", "read"), ("globex-europe", "admin"))
    lines = CliRunner().invoke(main, ["keys", "list"], catch_exceptions=False).output.splitlines()
    assert lines[0].split() == ["KEY", "ID", "TENANT", "SCOPE", "STATE", "LABEL"]
    for column in ("TENANT", "SCOPE", "STATE"):
        start = lines[0].index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines[1:]), column
    assert sorted(line.split()[1] for line in lines[1:]) == ["acme", "globex-europe"]
