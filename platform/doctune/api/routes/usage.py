"""``/v1/usage``: per tenant, jobs, trained tokens, worker CPU/GPU-seconds and stored bytes."""

from __future__ import annotations

from fastapi import APIRouter

from doctune.api.deps import CurrentCaller, CurrentPlatform
from doctune.api.schemas import UsageRow
from doctune.services import usage as usage_svc

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", response_model=list[UsageRow])
def tenant_usage(who: CurrentCaller, p: CurrentPlatform) -> list[UsageRow]:
    """The caller's tenant (an admin: every tenant)."""
    return [UsageRow.model_validate(row) for row in usage_svc.tenant_usage(p, who)]
