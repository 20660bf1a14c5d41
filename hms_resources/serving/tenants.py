"""Tenants and their users. Every tenant's users are stored under `<tenant>/<user>`, so two tenants may
both have a user `alice`; the API speaks the tenant's own names, and the tenant comes from the key.

A user id given as `<tenant>/<user>` names a tenant explicitly: one's own is accepted (the only way
to name a user whose own name holds a `/`), any other is refused with 403. Such a user comes back
in the same prefixed form (`own_user`), so every id the API answers is one it accepts again."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hms_resources.common.limits import CONTROL_CHARACTER, MAX_ID_LENGTH
from hms_resources.common.text import is_unicode_text
from hms_resources.serving.errors import ApiError, bad_request

TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SCOPES = ("read", "write", "admin")
"""Each scope includes the ones before it."""


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError(f"a tenant name is 1 to 32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit; got {tenant!r}")
    return tenant


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    return scope


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's tenant and scope (the key id for the audit trail, never the secret)."""

    tenant: str
    scope: str
    key_id: str
    capture: bool = True
    """Whether chat completions with this key are recorded as memories."""
    default_user: str | None = None

    def require(self, scope: str) -> None:
        if SCOPES.index(self.scope) < SCOPES.index(scope):
            raise ApiError(403, "forbidden", f"this key has the {self.scope!r} scope; this call needs {scope!r}")

    @property
    def prefix(self) -> str:
        return f"{self.tenant}/"

    def stored_user(self, user_id: object, field: str = "user_id") -> str:
        """The stored id of one of this tenant's users."""
        if not isinstance(user_id, str) or not user_id:
            raise bad_request(f"{field} must be a non-empty string", field)
        if CONTROL_CHARACTER.search(user_id) or not is_unicode_text(user_id):
            raise bad_request(f"{field} must be text without control characters or lone surrogates", field)
        if "/" in user_id:
            tenant, _, local = user_id.partition("/")
            if tenant != self.tenant:
                raise ApiError(403, "forbidden", f"{field} names another tenant's user", field)
            user_id = local
            if not user_id:
                raise bad_request(f"{field} must name a user after the tenant", field)
        stored = self.prefix + user_id
        if len(stored) > MAX_ID_LENGTH:
            raise bad_request(f"{field} is at most {MAX_ID_LENGTH - len(self.prefix)} characters for this tenant", field)
        return stored

    def stored_id(self, event_id: str) -> str:
        """Event ids are unique across the store: each tenant's are kept apart the same way."""
        return self.prefix + event_id

    def own_name(self, stored: str) -> str:
        return stored[len(self.prefix) :] if stored.startswith(self.prefix) else stored

    def own_user(self, stored: str) -> str:
        """The tenant's name for a stored user, one `stored_user` takes back: without the prefix, unless
        the name holds a `/` itself (`team/bob` would name the tenant `team`)."""
        local = self.own_name(stored)
        return stored if "/" in local and local != stored else local


