"""``/v1/keys``: a tenant's API keys: list, read, issue, rotate, revoke. Secrets are shown once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging, SpecBody
from doctune.api.schemas import KeyCreate, KeyCreated, KeyOut, Page
from doctune.services import tenants as tenants_svc

router = APIRouter(prefix="/v1/keys", tags=["keys"])

KeyBody = Annotated[KeyCreate, Depends(SpecBody(KeyCreate, code="invalid_request"))]


@router.get("", response_model=Page[KeyOut])
def list_keys(who: CurrentCaller, p: CurrentPlatform, page: Paging) -> Page[KeyOut]:
    """Keys by id (their public prefix), role and dates; never secrets."""
    return Page[KeyOut].of(tenants_svc.list_keys(p, who, limit=page.limit, cursor=page.cursor), KeyOut.model_validate)


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(body: KeyBody, who: CurrentCaller, p: CurrentPlatform) -> KeyCreated:
    view, key = tenants_svc.create_key(p, who, body.tenant, body.role)
    return KeyCreated(**view, api_key=key)


@router.get("/{key_id}", response_model=KeyOut)
def get_key(key_id: str, who: CurrentCaller, p: CurrentPlatform) -> KeyOut:
    return KeyOut.model_validate(tenants_svc.get_key(p, who, key_id))


@router.post("/{key_id}/rotate", status_code=201, response_model=KeyCreated)
def rotate_key(key_id: str, who: CurrentCaller, p: CurrentPlatform) -> KeyCreated:
    """Revoke the key and issue one with the same tenant and role (shown once)."""
    view, key = tenants_svc.rotate_key(p, who, key_id)
    return KeyCreated(**view, api_key=key)


@router.delete("/{key_id}", response_model=KeyOut)
def revoke_key(key_id: str, who: CurrentCaller, p: CurrentPlatform) -> KeyOut:
    """Revoke now: this API process refuses it at once; other API processes and Serve replicas within 2 s."""
    return KeyOut.model_validate(tenants_svc.revoke_key(p, who, key_id))
