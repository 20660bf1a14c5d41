"""The CLI's names for users: the API's. `--tenant` (default `local`, the tenant of the key `hms serve`
prints) picks whose users they are, so `hms chat --user maya` is the `maya` of `POST /v1/memories`.
`--tenant ''` names stored ids as they are, for a store filled through the Python API without tenants."""

from __future__ import annotations

import difflib

import click

from hms_resources.memory.writes import AS_STORED, Names
from hms_resources.serving.errors import ApiError
from hms_resources.serving.tenants import Principal, check_tenant
from hms_resources.store.event_store import EventStore

LOCAL_TENANT = "local"

tenant_option = click.option(
    "--tenant", default=LOCAL_TENANT, show_default=True,
    help="Whose users the names are: the tenant of the API key (`hms serve` prints one for `local`); '' for stored ids as they are.",
)


def tenant_names(tenant: str) -> Names:
    """How the tenant's names are stored (`maya` -> `local/maya`); `''`: as they are."""
    if tenant == "":
        return AS_STORED
    try:
        check_tenant(tenant)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; or '' for stored ids as they are", param_hint="--tenant") from None
    return Principal(tenant=tenant, scope="read", key_id="cli")


def stored_user(tenant: str, name: str, param: str = "--user") -> str:
    """The stored id of the tenant's user `name` (`maya` or `local/maya`), as the API stores it."""
    names = tenant_names(tenant)
    if not name:
        raise click.BadParameter("a user name must not be empty", param_hint=param)
    try:
        return names.stored_user(name) if names is AS_STORED else names.stored_user(name, param)
    except ApiError as exc:
        raise click.BadParameter(exc.message, param_hint=param) from None


def api_name(tenant: str, stored: str) -> str:
    """The tenant's own name for a stored user (`local/maya` -> `maya`), the one the API answers with."""
    names = tenant_names(tenant)
    return stored if names is AS_STORED or not stored.startswith(f"{tenant}/") else names.own_user(stored)


def known_user(store: EventStore, tenant: str, name: str, param: str = "--user") -> str:
    """`stored_user`, refused plainly when the tenant has no such user, naming the nearest known ones."""
    stored = stored_user(tenant, name, param)
    first = store.users_under(stored, limit=1, include_forgotten=True)  # the ids starting with `stored`: itself sorts first
    if first and first[0][0] == stored:
        return stored
    prefix = f"{tenant}/" if tenant else ""
    names = [user[len(prefix):] for user, _ in store.users_under(prefix, limit=10_000, include_forgotten=True)]
    near = difflib.get_close_matches(name.removeprefix(prefix), names, n=3, cutoff=0.5) or names[:3]
    whose = f"tenant {tenant!r}" if tenant else "the store"
    hint = f"; nearest: {', '.join(near)}" if near else f"; {whose} has no users yet"
    raise click.BadParameter(f"{whose} has no user {name!r}{hint}", param_hint=param)
