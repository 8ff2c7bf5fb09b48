"""``/v1/jobs/{job_id}/attempt``: what the driver of a job on a tenant's dedicated Ray cluster records
about the attempt it runs, since it holds no database URL (``doctune.drivers.ledger.ApiLedger``).

No API key: the credential is the job token the platform gave that driver (``X-Job-Token``), good
for that job's current attempt only (:func:`doctune.services.attempts.job_for_token`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header

from doctune.api.deps import CurrentPlatform
from doctune.api.schemas import (AttemptControl, AttemptFailed, AttemptOut, AttemptPaused, AttemptProgress,
                                 AttemptRecorded, AttemptRequeued, AttemptRunning, AttemptSucceeded, ErrorDetail,
                                 ExportCheck, ExportCheckOut)
from doctune.services import attempts as attempts_svc
from doctune.services.registry import export_refusal
from doctune.store.db import Job

router = APIRouter(prefix="/v1/jobs/{job_id}/attempt", tags=["job attempts"])


def token_job(job_id: str, p: CurrentPlatform,
              token: Annotated[str | None, Header(alias="X-Job-Token", max_length=400,
                                                  description="The job token the platform gave the job's driver.")]
              = None) -> Job:
    return attempts_svc.job_for_token(p, token, job_id)


TokenJob = Annotated[Job, Depends(token_job)]


@router.get("", response_model=AttemptOut)
def get_attempt(job: TokenJob, p: CurrentPlatform) -> AttemptOut:
    """The attempt the token is for: the job's spec, attempt, checkpoint to start from, and dataset."""
    return AttemptOut.model_validate(attempts_svc.attempt_view(*attempts_svc.load_attempt(p, job.id)))


@router.post("/running", response_model=AttemptRecorded)
def mark_running(body: AttemptRunning, job: TokenJob, p: CurrentPlatform) -> AttemptRecorded:
    attempts_svc.mark_running(p, job.id, body.reason)
    return AttemptRecorded(recorded=True)


@router.post("/progress", response_model=AttemptRecorded)
def record_progress(body: AttemptProgress, job: TokenJob, p: CurrentPlatform) -> AttemptRecorded:
    """A progress snapshot: copied into the job, and what changed since ``prev`` into its events."""
    attempts_svc.record_progress(p, job.id, body.prev, body.state)
    return AttemptRecorded(recorded=True)


@router.get("/control", response_model=AttemptControl)
def stop_wanted(job: TokenJob, p: CurrentPlatform) -> AttemptControl:
    """Whether the attempt should stop now (cancelled, its sweep cancelled, or a pause requested)."""
    return AttemptControl(stop=attempts_svc.stop_wanted(p, job.id))


@router.post("/failed", response_model=AttemptRecorded)
def record_failed(body: AttemptFailed, job: TokenJob, p: CurrentPlatform) -> AttemptRecorded:
    attempts_svc.record_failed(p, job.id, error=body.error, reason=body.reason, metrics=body.metrics,
                               progress=body.progress)
    return AttemptRecorded(recorded=True)


@router.post("/requeued", response_model=AttemptRecorded)
def record_requeued(body: AttemptRequeued, job: TokenJob, p: CurrentPlatform) -> AttemptRecorded:
    """The attempt failed with retries left (409 when it has none): the job's next attempt is queued."""
    attempts_svc.check_requeue(job)
    attempts_svc.check_checkpoint(p, job, body.resume_from)
    attempts_svc.record_requeued(p, job.id, attempt=job.attempt, resume_from=body.resume_from, usage=body.usage,
                                 error=body.error, reason=body.reason)
    return AttemptRecorded(recorded=True)


@router.post("/paused", response_model=AttemptRecorded)
def record_paused(body: AttemptPaused, job: TokenJob, p: CurrentPlatform) -> AttemptRecorded:
    attempts_svc.check_checkpoint(p, job, body.resume_from)
    attempts_svc.record_paused(p, job.id, resume_from=body.resume_from, usage=body.usage, progress=body.progress,
                               reason=body.reason)
    return AttemptRecorded(recorded=True)


@router.post("/export-check", response_model=ExportCheckOut)
def check_export(body: ExportCheck, job: TokenJob, p: CurrentPlatform) -> ExportCheckOut:
    """Whether the exported model fits the tenant's storage quota; if not, its files are removed."""
    attempts_svc.check_model_id(body.model_id)
    refusal = export_refusal(p, job.tenant_id, body.model_id)
    return ExportCheckOut(refusal=ErrorDetail.model_validate(refusal.to_dict()["error"]) if refusal else None)


@router.post("/succeeded", response_model=AttemptRecorded)
def record_succeeded(body: AttemptSucceeded, job: TokenJob, p: CurrentPlatform) -> AttemptRecorded:
    """Mark the job succeeded and register its model (``recorded`` false: it was cancelled meanwhile)."""
    recorded = attempts_svc.record_succeeded_checked(p, job, model_id=body.model_id, metrics=body.metrics,
                                                     final=body.final, progress=body.progress)
    return AttemptRecorded(recorded=recorded)
