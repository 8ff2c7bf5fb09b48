"""``/v1/leaderboard``: a tenant's finished jobs (single jobs and sweep trials) ranked on dev, per task."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from doctune.api.deps import CurrentCaller, CurrentPlatform, TaskFilter
from doctune.api.schemas import TenantLeaderboard
from doctune.services import sweeps as sweeps_svc

router = APIRouter(prefix="/v1/leaderboard", tags=["sweeps"])


@router.get("", response_model=TenantLeaderboard)
def tenant_leaderboard(
    who: CurrentCaller,
    p: CurrentPlatform,
    task: TaskFilter = None,
    tenant: Annotated[str | None, Query(description="Default: the caller's tenant (an admin names one).")] = None,
    metric: Annotated[str | None, Query(description="A dev metric of the task; default: its primary metric.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> TenantLeaderboard:
    """One board per task (``task``: only that one), best first."""
    board = sweeps_svc.tenant_leaderboard(p, who, tenant or who.tenant_id or "", task, metric, limit)
    return TenantLeaderboard.model_validate(board)
