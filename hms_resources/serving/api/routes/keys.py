"""`/v1/keys`: an admin key creates, lists and revokes the keys of its own tenant (the operator's
`hms keys` manages every tenant's). A new key's secret is in the create answer only; a key of
another tenant is answered 404, as an unknown one is."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service
from hms_resources.serving.api.models import ERRORS
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.errors import ApiError, not_found
from hms_resources.serving.keys import (
    KEY_ID_LENGTH,
    create_tenant_key,
    revoke_tenant_key,
    tenant_keys,
)

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=StrictJsonRoute)


class KeyIn(BaseModel):
    """A key to create for the caller's tenant."""

    model_config = ConfigDict(strict=True, extra="forbid")
    scope: Literal["read", "write", "admin"]
    label: str | None = Field(None, max_length=200, description="A note to tell keys apart")
    capture: bool = Field(True, description="Record this key's chat completions as memories")
    default_user: str | None = Field(None, description="The user a chat completion without a `user` field speaks for")
    tenant: str | None = Field(None, description="The caller's own tenant, if given: a key is never made for another")


@router.post("", status_code=201, responses=ERRORS)
def create_key(service: Service, caller: Caller, body: KeyIn) -> Response:
    caller.require("admin")
    if body.tenant is not None and body.tenant != caller.tenant:
        raise ApiError(403, "forbidden", "an admin key creates keys of its own tenant only", "tenant")
    created = service.guard(lambda: create_tenant_key(service.store, caller, body.scope, body.label, capture=body.capture, default_user=body.default_user))
    return JsonResponse(created, status_code=201)


@router.get("", responses=ERRORS)
def list_keys(service: Service, caller: Caller) -> Response:
    return JsonResponse({"keys": service.guard(lambda: tenant_keys(service.store, caller))})


@router.delete("/{key_id}", responses=ERRORS)
def revoke_key(service: Service, caller: Caller, key_id: str) -> Response:
    caller.require("admin")
    if len(key_id) != KEY_ID_LENGTH or not all(c in "0123456789abcdef" for c in key_id):
        raise not_found(f"no key {key_id[:40]!r} of this tenant", "key_id")
    return JsonResponse(service.guard(lambda: revoke_tenant_key(service.keys, caller, key_id)))
