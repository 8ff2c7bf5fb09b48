"""``/v1/sweeps/{sweep_id}/driver``: what the driver of a sweep on a tenant's dedicated Ray cluster records
about the sweep it runs, since it holds no database URL (``doctune.drivers.sweep_ledger.ApiSweepLedger``).

No API key: the credential is the sweep token the platform gave that driver (``X-Sweep-Token``), good
for that sweep only, while it has not ended (:func:`doctune.services.sweep_ledger.sweep_for_token`).
Each trial it starts comes with a job token for the trial's attempt (``/v1/jobs/{job_id}/attempt``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header

from doctune.api.deps import CurrentPlatform
from doctune.api.schemas import (SweepDriverOut, SweepFailed, SweepOutcome, SweepRecorded, TrialRequest,
                                 TrialStarted)
from doctune.services import sweep_ledger as ledger_svc
from doctune.store.db import Sweep

router = APIRouter(prefix="/v1/sweeps/{sweep_id}/driver", tags=["sweep drivers"])


def token_sweep(sweep_id: str, p: CurrentPlatform,
                token: Annotated[str | None, Header(alias="X-Sweep-Token", max_length=400,
                                                    description="The sweep token the platform gave the sweep's "
                                                                "driver.")] = None) -> Sweep:
    return ledger_svc.sweep_for_token(p, token, sweep_id)


TokenSweep = Annotated[Sweep, Depends(token_sweep)]


@router.get("", response_model=SweepDriverOut)
def get_sweep(sweep: TokenSweep, p: CurrentPlatform) -> SweepDriverOut:
    """The sweep the token is for: its spec, its state, and its tenant's concurrent-job quota."""
    return SweepDriverOut.model_validate(ledger_svc.sweep_view(p, sweep))


@router.post("/running", response_model=SweepRecorded)
def mark_running(sweep: TokenSweep, p: CurrentPlatform) -> SweepRecorded:
    ledger_svc.mark_running(p, sweep.id)
    return SweepRecorded(recorded=True)


@router.post("/trials", status_code=201, response_model=TrialStarted)
def start_trial(body: TrialRequest, sweep: TokenSweep, p: CurrentPlatform) -> TrialStarted:
    """Record a trial as a job of the tenant, with a job token for its attempt: 429 while the tenant's quota
    does not allow it (ask again later), 409 once the sweep has started all its trials."""
    job, token = ledger_svc.start_trial_checked(p, sweep, body.overrides)
    return TrialStarted(job_id=job.id, job_token=token)


@router.post("/settle", response_model=SweepRecorded)
def settle_unfinished(sweep: TokenSweep, p: CurrentPlatform) -> SweepRecorded:
    """End the trials the search stopped (ASHA) or lost, each saying why."""
    ledger_svc.settle_unfinished(p, sweep.id)
    return SweepRecorded(recorded=True)


@router.post("/failed", response_model=SweepRecorded)
def record_failed(body: SweepFailed, sweep: TokenSweep, p: CurrentPlatform) -> SweepRecorded:
    ledger_svc.record_failed(p, sweep.id, body.error.model_dump())
    return SweepRecorded(recorded=True)


@router.post("/finished", response_model=SweepOutcome)
def record_outcome(sweep: TokenSweep, p: CurrentPlatform) -> SweepOutcome:
    """Rank the trials and end the sweep: succeeded with its winner, or failed when no trial has a model."""
    return SweepOutcome.model_validate(ledger_svc.record_outcome(p, sweep.id))
