"""API keys: created and revoked by the operator (`hms keys`) or by an admin key within its tenant
(`/v1/keys`), shown once, stored as a salted SHA-256 digest of a 256-bit random secret (a slow
password hash adds nothing for random secrets and would cost every request milliseconds). A key
reads `hms_<key id>_<secret>`; the id finds the stored row."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from hms_resources.common.environment import setting
from hms_resources.common.text import is_unicode_text
from hms_resources.serving.errors import ApiError, bad_request, not_found
from hms_resources.serving.tenants import Principal, check_scope, check_tenant
from hms_resources.store import api_keys
from hms_resources.store.event_store import EventStore

KEY_PREFIX = "hms_"
KEY_ID_LENGTH = 16
CACHE_SECONDS = 2.0
"""A verified key is trusted this long without reading the store again: a revocation takes effect
within it."""


@dataclass(frozen=True)
class NewKey:
    key_id: str
    tenant: str
    scope: str
    secret: str
    """The whole key, to hand to the client: it is never stored and cannot be shown again."""


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_key(
    store: EventStore, tenant: str, scope: str, label: str | None = None, *, capture: bool = True, default_user: str | None = None
) -> NewKey:
    check_tenant(tenant)
    check_scope(scope)
    if default_user is not None and (not default_user or "/" in default_user or len(default_user) > 200 or not is_unicode_text(default_user)):
        raise ValueError("a default user is 1 to 200 characters without '/'")
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    api_keys.insert_key(store, key_id, tenant, scope, salt, _digest(salt, secret), label, capture=capture, default_user=default_user)
    return NewKey(key_id, tenant, scope, f"{KEY_PREFIX}{key_id}_{secret}")


def split_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + KEY_ID_LENGTH + 2:
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if len(key_id) != KEY_ID_LENGTH or not sep or not secret:
        return None
    return key_id, secret


class KeyRing:
    """Verifies keys against the store, with a short in-process cache keyed by the key's digest."""

    def __init__(self, store: EventStore, cache_seconds: float = CACHE_SECONDS):
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def principal(self, authorization: str | None) -> Principal:
        """The caller named by an `Authorization: Bearer <key>` header (or a bare key); 401 otherwise.
        The message never repeats what was sent."""
        if not authorization:
            raise ApiError(401, "unauthorized", "an API key is required: send 'Authorization: Bearer <key>'")
        found = self.cached(authorization)
        if found is not None:
            return found
        key, cache_key = self._read(authorization)
        principal = self._verify(key)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = (time.monotonic(), principal)
        return principal

    @staticmethod
    def _read(authorization: str) -> tuple[str, str]:
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else authorization.strip()
        return key, hashlib.sha256(key.encode()).hexdigest()

    def cached(self, authorization: str | None) -> Principal | None:
        """The caller, when its key was verified within `cache_seconds` (no store read)."""
        if not authorization:
            return None
        with self._lock:
            cached = self._cache.get(self._read(authorization)[1])
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        return None

    def _verify(self, key: str) -> Principal:
        invalid = ApiError(401, "unauthorized", "the API key is not valid")
        parts = split_key(key)
        if parts is None:
            raise invalid
        key_id, secret = parts
        stored = api_keys.find_key(self.store, key_id)
        if stored is None or not hmac.compare_digest(stored.digest, _digest(stored.salt, secret)):
            raise invalid
        if stored.revoked_at is not None:
            raise ApiError(401, "unauthorized", "the API key was revoked")
        return Principal(stored.tenant, stored.scope, stored.key_id, stored.capture, stored.default_user)

    def last_known(self, authorization: str | None) -> Principal | None:
        """The caller as its key was last verified, however long ago: only for reading the service's
        own figures while the store (where a revocation would be written) is unreachable."""
        if not authorization:
            return None
        with self._lock:
            cached = self._cache.get(self._read(authorization)[1])
        return cached[1] if cached is not None else None

    def forget_cached(self) -> None:
        with self._lock:
            self._cache.clear()


# Key management by a tenant's admin (`/v1/keys`) -----------------------------------------------


def key_json(stored: api_keys.StoredKey) -> dict[str, Any]:
    """What a key's owner may see of it: never its secret, salt or digest."""
    return {
        "key_id": stored.key_id,
        "tenant": stored.tenant,
        "scope": stored.scope,
        "label": stored.label,
        "capture": stored.capture,
        "default_user": stored.default_user,
        "created_at": stored.created_at,
        "revoked_at": stored.revoked_at,
    }


def create_tenant_key(
    store: EventStore, principal: Principal, scope: str, label: str | None = None, *, capture: bool = True, default_user: str | None = None
) -> dict[str, Any]:
    """A new key of the admin's own tenant, with its secret (`key`), shown this once."""
    principal.require("admin")
    try:
        check_scope(scope)
    except ValueError as exc:
        raise bad_request(str(exc), "scope") from None
    try:
        new = create_key(store, principal.tenant, scope, label, capture=capture, default_user=default_user)
    except ValueError as exc:
        raise bad_request(str(exc), "default_user") from None
    stored = api_keys.find_key(store, new.key_id)
    assert stored is not None
    return {**key_json(stored), "key": new.secret}


def tenant_keys(store: EventStore, principal: Principal) -> list[dict[str, Any]]:
    principal.require("admin")
    return [key_json(k) for k in api_keys.list_keys(store, principal.tenant)]


def revoke_tenant_key(ring: KeyRing, principal: Principal, key_id: str) -> dict[str, Any]:
    """Revoke a key of the admin's own tenant, at once in this process; a key of another tenant is
    not found, as an unknown one is, so its id tells nothing. A second revoke answers the first's time."""
    principal.require("admin")
    api_keys.revoke_key(ring.store, key_id, tenant=principal.tenant)
    stored = api_keys.find_key(ring.store, key_id)
    if stored is None or stored.tenant != principal.tenant:
        raise not_found(f"no key {key_id!r} of this tenant", "key_id")
    ring.forget_cached()
    return key_json(stored)


def is_operator(principal: Principal) -> bool:
    """The service-wide figures (every tenant's requests and events) are the operator's: an admin
    key of `HMS_OPERATOR_TENANT`. A tenant's own admin manages its keys, not the service."""
    return principal.scope == "admin" and principal.tenant == setting("HMS_OPERATOR_TENANT")


def require_operator(principal: Principal) -> None:
    principal.require("admin")
    if not is_operator(principal):
        raise ApiError(403, "forbidden", "the service's figures need an admin key of the operator's tenant")
