"""The MCP server (`hms mcp` over stdio, and `/mcp` of `hms serve` over streamable HTTP): the memory
service's calls as MCP tools; each memory as a `memory://{user_id}/{memory_id}` resource, each user's
memories as `memory://{user_id}`, and `resources/list` as the tenant's memories, a page at a time.

Every call runs as a `Principal`. Over stdio it is the tenant of the key the process was started with (checked again on every call);
over HTTP every request carries its own `Authorization: Bearer <key>`, checked by `BearerAuth` before
the request reaches the SDK, which then hands the request (with the principal in its ASGI `state`) to
the tool through `ctx.request_context.request`. A service error reaches the assistant as a tool error
reading `<code>: <message>`; neither ever holds the key."""

import base64
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer, ResourceSecurity
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import UriTemplate
from mcp.types import CallToolResult, ListResourcesResult, PaginatedRequestParams, Resource, TextContent, ToolAnnotations
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from pydantic import Field, Strict
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hms_resources.serving.errors import ApiError, bad_request, item_error
from hms_resources.serving.service import MemoryService
from hms_resources.serving.tenants import Principal

PRINCIPAL = "hms_principal"
"""The key of the caller's `Principal` in an HTTP request's ASGI `state`."""

INSTRUCTIONS = """Long-term memory of the user across conversations.
Call `recall` with the user's message before answering, to bring what you know about the user into context.
Call `remember` when the user states a fact, preference, goal or decision worth keeping (one memory per call).
Call `feedback` when a recalled memory turned out relevant or not, and `forget` when the user asks you to
forget something or a memory is wrong. `search_memories`, `list_memories` and `get_memory` look memories up."""

PrincipalOf = Callable[[Context], Principal]

UserId = Annotated[str, Field(description="The user whose memories these are (this tenant's own name for the user)")]
MemoryId = Annotated[str, Field(description="The memory's id, as `remember`, `recall` or a search returned it")]
READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTROYS = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)


def error_result(error: ApiError) -> CallToolResult:
    """A service error as the assistant reads it: its stable code first, then what to fix."""
    return CallToolResult(content=[TextContent(type="text", text=f"{error.code}: {error.message}")], is_error=True)


def json_rpc_error(error: ApiError) -> MCPError:
    """A service error as a JSON-RPC error: the caller's request at fault is `invalid params` (a user
    of another tenant, a memory not found, a bad value) or `invalid request` (no valid key); only the
    service's own failure is `internal`. `data` keeps the HTTP status, the code and the field."""
    if error.status >= 500:
        kind = INTERNAL_ERROR
    elif error.status == 401:
        kind = INVALID_REQUEST
    else:
        kind = INVALID_PARAMS
    return MCPError(kind, f"{error.code}: {error.message}", {"status": error.status, "code": error.code, "field": error.field})


def _result(found: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=_json(found))], structured_content=found)


def _calling(call: Callable[[], CallToolResult]) -> CallToolResult:
    try:
        return call()
    except ApiError as error:
        return error_result(error)


def build_server(service: MemoryService, principal_of: PrincipalOf) -> MCPServer:
    """The MCP server over `service`; `principal_of(ctx)` names the caller of each tool call and read.
    Tools are plain functions: the SDK runs them in a worker thread, where the store and the context
    resource may block. The SDK configures the root logger at `log_level`: WARNING leaves `hms serve`
    as quiet as it was."""
    server: MCPServer = MCPServer(name="hms", title="HMS memory", instructions=INSTRUCTIONS, log_level="WARNING")
    for tool, annotations in TOOLS:
        server.add_tool(tool(service, principal_of), annotations=annotations)
    add_memory_resources(server, service, principal_of)
    return server


# The tools: each factory returns one tool over the service; its name, docstring and parameters are
# what the assistant sees. ------------------------------------------------------------------------


def remember_tool(service: MemoryService, principal_of: PrincipalOf) -> Callable[..., CallToolResult]:
    def remember(
        ctx: Context,
        user_id: UserId,
        content: Annotated[str, Field(description="The memory, as one self-contained statement")],
        memory_type: Annotated[str | None, Field(description="e.g. fact, preference, goal, episode")] = None,
        category: str | None = None,
        tags: list[str] | None = None,
        importance: Annotated[float | None, Strict(), Field(description="0 to 1; how much this matters to the user")] = None,
        memory_id: Annotated[str | None, Field(description="Your own id for the memory; default: the event id")] = None,
        event_id: Annotated[str | None, Field(description="Idempotency key: a retry with the same id stores nothing twice")] = None,
    ) -> CallToolResult:
        """Store one memory about the user, to be recalled in later conversations. Returns its memory_id;
        status `duplicate` means the same event_id was stored before."""
        item: dict[str, Any] = {"user_id": user_id, "content": content}
        optional = {"memory_type": memory_type, "category": category, "tags": tags, "importance": importance, "memory_id": memory_id, "event_id": event_id}
        item.update({name: value for name, value in optional.items() if value is not None})
        return _calling(lambda: _result(_added(service.add_memories(principal_of(ctx), [item]))))

    return remember


def _added(results: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = results
    if found["status"] == "rejected":
        raise item_error(found["error"])
    return found


def recall_tool(service: MemoryService, principal_of: PrincipalOf) -> Callable[..., CallToolResult]:
    def recall(
        ctx: Context,
        user_id: UserId,
        query: Annotated[str, Field(description="What the conversation is about: usually the user's latest message")],
        max_tokens: Annotated[int, Strict(), Field(description="Token budget of the returned context", ge=1)] = 1024,
        deep: Annotated[bool, Strict(), Field(description="Search three times the candidates (slower), for a question whose answer is spread thin")] = False,
    ) -> CallToolResult:
        """The user's memories relevant to `query`, as prompt text to put in your context (first content
        block) and as items with their memory_ids (second block and structured content)."""
        return _calling(lambda: _recalled(service.context(principal_of(ctx), user_id, query, max_tokens, deep=deep)))

    return recall


def _recalled(found: dict[str, Any]) -> CallToolResult:
    summary = {name: found[name] for name in ("user_id", "query", "token_count", "items")}
    return CallToolResult(
        content=[TextContent(type="text", text=found["prompt"]), TextContent(type="text", text=_json(summary))],
        structured_content={**summary, "prompt": found["prompt"]},
    )


def search_tool(service: MemoryService, principal_of: PrincipalOf) -> Callable[..., CallToolResult]:
    def search_memories(
        ctx: Context,
        user_id: UserId,
        query: str,
        limit: Annotated[int, Strict(), Field(ge=1, le=100)] = 10,
    ) -> CallToolResult:
        """Memories of the user that match `query`, best first, with their scores; use it to find a
        memory_id to update, forget or give feedback on."""
        return _calling(lambda: _result({"results": service.search(principal_of(ctx), user_id, query, limit)}))

    return search_memories


def get_tool(service: MemoryService, principal_of: PrincipalOf) -> Callable[..., CallToolResult]:
    def get_memory(ctx: Context, user_id: UserId, memory_id: MemoryId) -> CallToolResult:
        """One memory in full: content, type, tags, importance, status and tier."""
        return _calling(lambda: _result(service.get_memory(principal_of(ctx), user_id, memory_id)))

    return get_memory


def list_tool(service: MemoryService, principal_of: PrincipalOf) -> Callable[..., CallToolResult]:
    def list_memories(
        ctx: Context,
        user_id: UserId,
        memory_type: str | None = None,
        category: str | None = None,
        tag: str | None = None,
        status: Literal["live", "archived", "forgotten", "any"] = "live",
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Strict(), Field(ge=1, le=500)] = 50,
    ) -> CallToolResult:
        """A page of the user's memories in id order, optionally filtered; pass `next_cursor` back as
        `cursor` for the next page (null on the last)."""
        filters = {"memory_type": memory_type, "category": category, "tag": tag, "status": status, "cursor": cursor, "limit": limit}
        return _calling(lambda: _result(service.list_memories(principal_of(ctx), user_id, **filters)))

    return list_memories


def forget_tool(service: MemoryService, principal_of: PrincipalOf) -> Callable[..., CallToolResult]:
    def forget(ctx: Context, user_id: UserId, memory_id: MemoryId, reason: str | None = None) -> CallToolResult:
        """Erase a memory for good (its content is removed from the store), e.g. when the user asks you
        to forget it or it is wrong. This cannot be undone."""
        return _calling(lambda: _result(service.forget_memory(principal_of(ctx), user_id, memory_id, reason)))

    return forget


def feedback_tool(service: MemoryService, principal_of: PrincipalOf) -> Callable[..., CallToolResult]:
    def feedback(
        ctx: Context,
        user_id: UserId,
        memory_id: MemoryId,
        was_relevant: Annotated[bool, Strict(), Field(description="Whether the recalled memory helped with the conversation")],
        relevance_score: Annotated[float | None, Strict(), Field(description="0 to 1, if you can grade it", ge=0, le=1)] = None,
    ) -> CallToolResult:
        """Say whether a recalled memory was relevant, so later recalls rank it higher or lower."""
        return _calling(lambda: _result(service.feedback(principal_of(ctx), user_id, memory_id, was_relevant, relevance_score)))

    return feedback


TOOLS: tuple[tuple[Callable[[MemoryService, PrincipalOf], Callable[..., CallToolResult]], ToolAnnotations], ...] = (
    (remember_tool, WRITES),
    (recall_tool, READS),
    (search_tool, READS),
    (get_tool, READS),
    (list_tool, READS),
    (forget_tool, DESTROYS),
    (feedback_tool, WRITES),
)
"""The tools in the order `tools/list` shows them, each with its hints."""


RESOURCE_PAGE = 100
"""Resources per `resources/list` page, and memories per page of a `memory://{user_id}` listing."""
MEMORY_URI = UriTemplate.parse("memory://{user_id}/{memory_id}")
USER_URI = UriTemplate.parse("memory://{user_id}{?cursor}")
_RESOURCE_CURSOR = "r1."
PREVIEW_CHARACTERS = 80


def add_memory_resources(server: MCPServer, service: MemoryService, principal_of: PrincipalOf) -> None:
    """Each memory as the resource `memory://{user_id}/{memory_id}` (what `get_memory` returns), each
    user's memories as `memory://{user_id}` (a page; `?cursor=` the next), and `resources/list` as the
    tenant's memories, paged."""
    exempt = ResourceSecurity(exempt_params={"user_id", "memory_id", "cursor"})

    @server.resource(
        str(MEMORY_URI),
        name="memory",
        description="One memory of a user, as JSON (the same as the get_memory tool).",
        mime_type="application/json",
        security=exempt,
    )
    def memory(user_id: str, memory_id: str, ctx: Context) -> str:
        """User and memory ids are store keys, never paths, so the SDK's path checks do not apply."""
        try:
            return _json(service.get_memory(principal_of(ctx), user_id, memory_id))
        except ApiError as error:
            raise json_rpc_error(error) from None

    @server.resource(
        str(USER_URI),
        name="memories",
        description=f"A user's memories (not forgotten) in memory_id order, {RESOURCE_PAGE} a page, as JSON; `next_page` is the URI of the next page.",
        mime_type="application/json",
        security=exempt,
    )
    def memories(user_id: str, ctx: Context, cursor: str | None = None) -> str:
        try:
            principal = principal_of(ctx)
            page, next_cursor = kept_memories(service, principal, user_id, cursor or None, RESOURCE_PAGE)
        except ApiError as error:
            raise json_rpc_error(error) from None
        listed = [{"uri": memory_uri(user_id, m["memory_id"]), **m} for m in page]
        next_page = USER_URI.expand({"user_id": user_id, "cursor": next_cursor}) if next_cursor else None
        return _json({"user_id": user_id, "memories": listed, "next_cursor": next_cursor, "next_page": next_page})

    async def list_resources(ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams) -> ListResourcesResult:
        context = Context(request_context=ctx, mcp_server=server)
        try:
            listed, next_cursor = await anyio.to_thread.run_sync(lambda: resource_page(service, principal_of(context), params.cursor))
        except ApiError as error:
            raise json_rpc_error(error) from None
        return ListResourcesResult(resources=[memory_resource(user, found) for user, found in listed], next_cursor=next_cursor)

    # The SDK's high-level `resources/list` lists only fixed resources, in one page; the low-level
    # server's handler receives the cursor.
    server._lowlevel_server.add_request_handler("resources/list", PaginatedRequestParams, list_resources)


def memory_uri(user_id: str, memory_id: str) -> str:
    """The resource URI of a memory, its ids percent-encoded (a `/` in a name included)."""
    return MEMORY_URI.expand({"user_id": user_id, "memory_id": memory_id})


def memory_resource(user_id: str, found: dict[str, Any]) -> Resource:
    """A listed memory: its URI, its id as name, and the start of its content as description."""
    content = " ".join(str(found.get("content") or "").split())
    preview = content if len(content) <= PREVIEW_CHARACTERS else content[: PREVIEW_CHARACTERS - 1] + "…"
    if found.get("status") == "archived":
        preview = f"(archived) {preview}"
    return Resource(uri=memory_uri(user_id, found["memory_id"]), name=found["memory_id"], title=f"{user_id}: {found['memory_id']}", description=preview, mime_type="application/json")


def kept_memories(service: MemoryService, principal: Principal, user_id: str, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the user's memories that are not forgotten (live and archived), and the cursor after
    it: `list_memories` over every status, less the forgotten, so a page may come back short."""
    page = service.list_memories(principal, user_id, status="any", cursor=cursor, limit=limit)
    return [m for m in page["memories"] if m["status"] != "forgotten"], page["next_cursor"]


def resource_page(service: MemoryService, principal: Principal, cursor: str | None, size: int = RESOURCE_PAGE) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """A page of the tenant's memories not forgotten, user after user in stored-id order and each
    user's in memory_id order, with the cursor of the next page (None after the last). It reads the
    users it reaches (`EventStore.users_under`) and their pages, never the whole tenant: at most two
    reads a memory listed, so a long run of forgotten memories ends a page short (with its cursor)."""
    principal.require("read")
    user, after = _resource_position(cursor)
    listed: list[tuple[str, dict[str, Any]]] = []
    coming: list[str] = []

    def users_after(name: str | None, limit: int) -> list[str]:
        stored = principal.stored_user(name) if name is not None else None
        found = service.guard(lambda: service.store.users_under(principal.prefix, after=stored, limit=limit))
        return [principal.own_user(stored_id) for stored_id, _ in found]

    for _ in range(2 * size + 2):
        if len(listed) >= size:
            break
        if after is None:
            coming = coming or users_after(user, size - len(listed))
            if not coming:
                return listed, None
            user, after = coming.pop(0), ""
        page, after = kept_memories(service, principal, str(user), after or None, size - len(listed))
        listed.extend((user, found) for found in page)
    if after is None and not coming and not users_after(user, 1):
        return listed, None
    return listed, _resource_cursor(user, after)


def _resource_cursor(user: str | None, after: str | None) -> str:
    """Where the next page starts: in `user`'s memories after the listing cursor `after`, or (None)
    at the user after `user`."""
    return _RESOURCE_CURSOR + base64.urlsafe_b64encode(json.dumps([user, after]).encode()).decode().rstrip("=")


def _resource_position(cursor: str | None) -> tuple[str | None, str | None]:
    """The (user, listing cursor) a `resources/list` cursor continues from; the first page's is
    (None, None). Anything `_resource_cursor` could not have written is a 422 naming `cursor`."""
    if not cursor:
        return None, None
    refused = bad_request("cursor is not one this server returned: pass nextCursor back unchanged", "cursor")
    if not cursor.startswith(_RESOURCE_CURSOR):
        raise refused
    body = cursor[len(_RESOURCE_CURSOR) :]
    try:
        position = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise refused from None
    if not (isinstance(position, list) and len(position) == 2 and all(part is None or isinstance(part, str) for part in position)):
        raise refused
    user, after = position
    if user is None and after is not None or _resource_cursor(user, after) != cursor:
        raise refused
    return user, after


def run_stdio(service: MemoryService, key: str) -> None:
    """Serve over stdin/stdout as the tenant of `key` until the client closes the pipe (`hms mcp`).
    Every call checks the key again (through the key ring's short cache), so a revocation holds here too."""
    service.authenticate(key)
    server = build_server(service, lambda ctx: service.authenticate(key))
    try:
        anyio.run(server.run_stdio_async)
    finally:
        service.close()


def request_principal(ctx: Context) -> Principal:
    """The principal `BearerAuth` put on the HTTP request this call came in."""
    request = ctx.request_context.request
    state = getattr(request, "scope", {}).get("state") or {}
    principal = state.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise ApiError(401, "unauthorized", "this call did not come with an API key")
    return principal


STATELESS = ApiError(405, "method_not_allowed", "the MCP transport is stateless: POST each message; there is no event stream to GET and no session to DELETE")


def _refusal(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(error.body()).encode(), status_code=error.status, media_type="application/json", headers=headers)


class BearerAuth:
    """ASGI middleware: only POST is served (405 otherwise: the transport is stateless, so it holds no
    event stream open); a request without a valid key gets the HTTP API's 401 body; a valid one goes
    on with its `Principal` in the request's `state`."""

    def __init__(self, app: ASGIApp, service: MemoryService):
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await _refusal(STATELESS, {"Allow": "POST"})(scope, receive, send)
        header = next((value.decode("latin-1") for name, value in scope.get("headers") or () if name == b"authorization"), None)
        try:
            principal = await anyio.to_thread.run_sync(self.service.authenticate, header)
        except ApiError as error:
            return await _refusal(error, {"WWW-Authenticate": "Bearer"} if error.status == 401 else None)(scope, receive, send)
        scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, receive, send)


class _MountRoot:
    """`/mcp` answered as `/mcp/` is, rather than redirected (a redirect's `Location` would be built
    from the request's Host header)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = scope.get("root_path", "")
        inner = {**scope, "path": scope["path"] + "/", "raw_path": scope.get("raw_path", b"") + b"/", "root_path": root + "/mcp", "app_root_path": scope.get("app_root_path", root)}
        await self.app(inner, receive, send)


def mount(app: Starlette, mcp_app: ASGIApp) -> None:
    """The MCP app at `/mcp/`, and at `/mcp` without its slash too."""
    app.mount("/mcp", mcp_app)
    app.router.routes.append(Route("/mcp", _MountRoot(mcp_app), include_in_schema=False))


def streamable_http_app(service: MemoryService, *, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The MCP server over streamable HTTP, to mount at `/mcp` (it serves the mount's root, `/mcp/`).

    Stateless: each POST is answered on its own (JSON, no `Mcp-Session-Id`), so any number of clients
    and keys share one service and nothing is kept per client. Its lifespan (the SDK's session manager)
    is `app.router.lifespan_context`, which `create_app` enters.

    The SDK's Host/Origin check against DNS rebinding guards servers a browser page could call without
    credentials; every call here needs a bearer key that no page has (and no CORS is allowed), so the
    check is off by default, as the HTTP API has none either: a proxy may forward any Host. Pass
    `allowed_hosts` (`host:port`, `host:*`) to turn it on."""
    if allowed_hosts is None:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    else:
        hosts = list(allowed_hosts)
        security = TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=[f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")])
    server = build_server(service, request_principal)
    app = server.streamable_http_app(streamable_http_path="/", stateless_http=True, json_response=True, transport_security=security)
    app.add_middleware(BearerAuth, service=service)
    return app
