"""``/v1/usage``: per tenant, jobs, trained tokens, worker CPU/GPU-seconds and stored bytes."""

from __future__ import annotations

from fastapi import APIRouter

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging
from doctune.api.schemas import Page, UsageRow
from doctune.services import usage as usage_svc

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", response_model=Page[UsageRow])
def tenant_usage(who: CurrentCaller, p: CurrentPlatform, page: Paging) -> Page[UsageRow]:
    """The caller's tenant (an admin: every tenant, a page at a time, newest first)."""
    rows = usage_svc.tenant_usage(p, who, limit=page.limit, cursor=page.cursor)
    return Page[UsageRow].of(rows, UsageRow.model_validate)
