"""``/v1/whoami``: the tenant, role and key id behind the caller's key."""

from __future__ import annotations

from fastapi import APIRouter

from doctune.api.deps import CurrentCaller
from doctune.api.schemas import WhoAmI

router = APIRouter(prefix="/v1/whoami", tags=["keys"])


@router.get("", response_model=WhoAmI)
def whoami(who: CurrentCaller) -> WhoAmI:
    return WhoAmI(tenant=who.tenant_id, role=who.role, key_id=who.key_id)
