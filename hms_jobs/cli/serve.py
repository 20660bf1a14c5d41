"""`hms serve` (the HTTP API, with the MCP server at /mcp), `hms mcp` (the MCP server over stdio) and
`hms keys` (API keys per tenant)."""

from __future__ import annotations

import click

from hms_jobs.cli import main
from hms_resources.common.environment import setting
from hms_resources.serving.tenants import SCOPES

LOCAL_TENANT = "local"
KEY_ENV = "HMS_API_KEY"
SWITCH_INTERVAL_SECONDS = 0.001
"""How long a thread holds the interpreter lock while another waits for it (Python's default is 5 ms):
a small call that waits on the store or numpy many times would otherwise wait up to 5 ms each time
behind another tenant's long CPU-bound call."""
SERVE_FRESH_SECONDS = 0.05
"""Under load, requests share one read of new events per 50 ms; the service's own writes are read at once."""


def build_service():
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.serving.service import MemoryService

    assembler = ContextAssembler.from_env(fresh_seconds=SERVE_FRESH_SECONDS)
    return MemoryService(assembler.event_store, assembler)


def first_key(store) -> str | None:
    """On a store with no key at all, an admin key for the `local` tenant: the first start's key."""
    from hms_resources.serving.keys import create_key
    from hms_resources.store.api_keys import list_keys

    if list_keys(store):
        return None
    return create_key(store, LOCAL_TENANT, "admin", label="created by the first hms serve").secret


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; loopback unless you put a proxy with TLS in front.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--mcp/--no-mcp", default=True, show_default=True, help="Mount the MCP server (streamable HTTP) at /mcp.")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(host: str, port: int, mcp: bool, access_log: bool) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /docs) over the store the environment names.
    On a store without any key, creates one for the tenant `local` and prints it once."""
    import sys

    import uvicorn

    from hms_resources.serving.http import create_app, server_config

    service = build_service()
    key = first_key(service.store)
    if key is not None:
        click.echo(f"hms: created an admin key for tenant {LOCAL_TENANT!r}; it is shown only now:", err=True)
        click.echo(key)
    mcp_app = None
    if mcp:
        from hms_resources.serving.mcp_server import streamable_http_app

        mcp_app = streamable_http_app(service)
    from hms_resources.serving.chat import ChatService

    app = create_app(
        service, max_body_bytes=setting("HMS_MAX_BODY_BYTES"), mcp_app=mcp_app, chat=ChatService.from_env(service)
    )
    click.echo(f"hms: serving {service.store.display_url} on http://{host}:{port} (OpenAPI at /docs)", err=True)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    uvicorn.Server(server_config(app, host, port, access_log=access_log)).run()


@main.command("mcp")
@click.option("--key", envvar=KEY_ENV, help=f"The API key [default: ${KEY_ENV}]. Prefer the environment: a command line is visible to other users.")
def mcp_stdio(key: str | None) -> None:
    """Serve the MCP server over stdio, for desktop assistants, as the tenant of `--key`."""
    from hms_resources.serving.errors import ApiError
    from hms_resources.serving.mcp_server import run_stdio

    service = build_service()
    try:
        run_stdio(service, key)
    except ApiError as error:
        raise click.ClickException(error.message) from None


@main.group()
def keys() -> None:
    """API keys of the HTTP and MCP service: each belongs to one tenant and has one scope."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name: 1 to 32 of a-z, 0-9, '_', '-'.")
@click.option("--scope", type=click.Choice(SCOPES), required=True, help="read < write < admin.")
@click.option("--label", default=None, help="A note to tell keys apart in `hms keys list`.")
@click.option("--user", "default_user", default=None, help="The user a chat completion without a `user` field speaks for.")
@click.option("--capture/--no-capture", default=True, show_default=True, help="Record this key's chat completions as memories.")
def keys_create(tenant: str, scope: str, label: str | None, default_user: str | None, capture: bool) -> None:
    """Create a key. The key is printed once, alone on the last line: it cannot be shown again."""
    from hms_resources.serving.keys import create_key
    from hms_resources.store.event_store import EventStore

    try:
        new = create_key(EventStore.from_env(), tenant, scope, label, capture=capture, default_user=default_user)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"key id {new.key_id} for tenant {new.tenant!r}, scope {new.scope}; store it now, it is shown only once:")
    click.echo(new.secret)


@keys.command("list")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True)
def keys_list(tenant: str | None, as_json: bool) -> None:
    """Keys with their tenant, scope, label and dates; never a secret or digest."""
    import orjson

    from hms_resources.store.api_keys import list_keys
    from hms_resources.store.event_store import EventStore

    rows = [
        {
            "key_id": k.key_id,
            "tenant": k.tenant,
            "scope": k.scope,
            "label": k.label,
            "capture": k.capture,
            "default_user": k.default_user,
            "created_at": k.created_at,
            "revoked_at": k.revoked_at,
        }
        for k in list_keys(EventStore.from_env(), tenant)
    ]
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    table = [KEY_COLUMNS] + [
        (row["key_id"], row["tenant"], row["scope"], f"revoked {row['revoked_at']}" if row["revoked_at"] else "active", row["label"] or "")
        for row in rows
    ]
    for line in aligned(table):
        click.echo(line)


KEY_COLUMNS = ("KEY ID", "TENANT", "SCOPE", "STATE", "LABEL")


def aligned(table: list[tuple[str, ...]]) -> list[str]:
    """Rows as lines, each column as wide as its widest cell and two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(*table, strict=True)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after `hms_`); a running service refuses it within seconds."""
    from hms_resources.store.api_keys import revoke_key
    from hms_resources.store.event_store import EventStore

    if not revoke_key(EventStore.from_env(), key_id):
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked {key_id}")
