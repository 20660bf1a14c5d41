"""The API keys table: what the service stores of a key (its tenant, scope and a salted digest of its
secret, never the secret), read and written through these functions only."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from hms_resources.common.clock import utc_now
from hms_resources.store.event_store import EventStore
from hms_resources.store.schema import api_keys


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    tenant: str
    scope: str
    salt: str
    digest: str
    label: str | None
    created_at: str
    revoked_at: str | None
    capture: bool = True
    """Whether chat completions made with this key are recorded as memories."""
    default_user: str | None = None
    """The user a chat completion without a `user` field speaks for."""


def insert_key(
    store: EventStore,
    key_id: str,
    tenant: str,
    scope: str,
    salt: str,
    digest: str,
    label: str | None,
    *,
    capture: bool = True,
    default_user: str | None = None,
) -> StoredKey:
    key = StoredKey(key_id, tenant, scope, salt, digest, label, utc_now(), None, capture, default_user)
    with store.engine.begin() as conn:
        conn.execute(api_keys.insert().values(**key.__dict__))
    return key


def find_key(store: EventStore, key_id: str) -> StoredKey | None:
    with store.reading() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
    return StoredKey(**row) if row is not None else None


def list_keys(store: EventStore, tenant: str | None = None) -> list[StoredKey]:
    query = select(api_keys).order_by(api_keys.c.tenant, api_keys.c.created_at, api_keys.c.key_id)
    if tenant is not None:
        query = query.where(api_keys.c.tenant == tenant)
    with store.reading() as conn:
        return [StoredKey(**row) for row in conn.execute(query).mappings()]


def revoke_key(store: EventStore, key_id: str, *, tenant: str | None = None) -> bool:
    """Mark a key revoked (only one of `tenant`, when given); False when no unrevoked key has that id."""
    query = update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
    if tenant is not None:
        query = query.where(api_keys.c.tenant == tenant)
    with store.engine.begin() as conn:
        changed = conn.execute(query.values(revoked_at=utc_now())).rowcount
    return bool(changed)
