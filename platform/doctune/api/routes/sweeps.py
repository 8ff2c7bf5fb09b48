"""``/v1/sweeps``: submit a sweep (a JobSpec searched over with Ray Tune), list, read, rank its trials."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging, SpecBody, TaskFilter
from doctune.api.schemas import Page, SweepLeaderboard, SweepOut
from doctune.services import sweeps as sweeps_svc
from doctune.spec import SweepSpec, parse_sweep_spec
from doctune.states import SweepState

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

SweepBody = Annotated[SweepSpec, Depends(SpecBody(SweepSpec, parse=parse_sweep_spec))]


@router.post("", status_code=201, response_model=SweepOut)
def submit_sweep(spec: SweepBody, who: CurrentCaller, p: CurrentPlatform) -> SweepOut:
    """A JobSpec (``job``) plus a search space over its fields, searched by Ray Tune."""
    return SweepOut.of(sweeps_svc.submit_sweep(p, who, spec))


@router.get("", response_model=Page[SweepOut])
def list_sweeps(who: CurrentCaller, p: CurrentPlatform, page: Paging,
                state: Annotated[SweepState | None, Query(description="Only sweeps in this state.")] = None,
                task: TaskFilter = None) -> Page[SweepOut]:
    rows = sweeps_svc.list_sweeps(p, who, state=state, task=task, limit=page.limit, cursor=page.cursor)
    return Page[SweepOut].of(rows, SweepOut.of)


@router.get("/{sweep_id}", response_model=SweepOut)
def get_sweep(sweep_id: str, who: CurrentCaller, p: CurrentPlatform) -> SweepOut:
    return SweepOut.of(sweeps_svc.get_sweep(p, who, sweep_id))


@router.get("/{sweep_id}/leaderboard", response_model=SweepLeaderboard)
def sweep_leaderboard(sweep_id: str, who: CurrentCaller, p: CurrentPlatform,
                      limit: Annotated[int, Query(ge=1, le=1000, description="The best N trials.")] = 200,
                      ) -> SweepLeaderboard:
    """The sweep's best ``limit`` trials ranked by its dev metric (ties: lower cost), with their settings."""
    board = sweeps_svc.sweep_leaderboard(p, who, sweep_id)
    return SweepLeaderboard.model_validate({**board, "trials": board["trials"][:limit]})


@router.post("/{sweep_id}/cancel", response_model=SweepOut)
def cancel_sweep(sweep_id: str, who: CurrentCaller, p: CurrentPlatform) -> SweepOut:
    """Cancel the sweep and its trials that have not ended (409 when the sweep has ended); running
    trials stop at their next progress report and register no model."""
    return SweepOut.of(sweeps_svc.cancel_sweep(p, who, sweep_id))
