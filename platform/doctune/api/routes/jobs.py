"""``/v1/jobs``: submit, plan, list, follow (events, logs, TensorBoard files), pause, resume and cancel
fine-tuning jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging, SpecBody, TaskFilter
from doctune.api.schemas import (CheckpointsDeleted, DirectSubmission, JobEvent, JobEventsPage, JobLogs, JobOut, Page,
                                 PlanOut, SubmissionTokenOut, TensorBoardFileOut)
from doctune.services import jobs as jobs_svc
from doctune.services import plans as plans_svc
from doctune.services import submission_tokens as tokens_svc
from doctune.spec import JobSpec, parse_job_spec
from doctune.states import JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobBody = Annotated[JobSpec, Depends(SpecBody(JobSpec, parse=parse_job_spec))]


@router.post("", status_code=201, response_model=JobOut)
def submit_job(spec: JobBody, who: CurrentCaller, p: CurrentPlatform) -> JobOut:
    """Queue a job; the dispatcher starts it when its tenant's quota and the cluster allow."""
    return JobOut.of(jobs_svc.submit_job(p, who, spec))


@router.post("/plan", response_model=PlanOut)
def plan_job(spec: JobBody, who: CurrentCaller, p: CurrentPlatform) -> PlanOut:
    """Pre-flight plan for a JobSpec (nothing runs): memory per worker, tokens, steps,
    expected time from measured throughput, and warnings when it will not fit."""
    return PlanOut.model_validate(plans_svc.plan_job(p, who, spec))


@router.post("/tokens", status_code=201, response_model=SubmissionTokenOut)
def mint_submission_token(spec: JobBody, who: CurrentCaller, p: CurrentPlatform) -> SubmissionTokenOut:
    """A one-time token that lets `ray job submit` queue exactly this spec for the caller's tenant
    within 10 minutes: `python -m ray_jobs.finetune --spec FILE --token TOKEN`."""
    view, token = tokens_svc.mint_submission_token(p, who, spec)
    return SubmissionTokenOut(id=view["id"], token=token, tenant=view["tenant"], spec_sha256=view["spec_sha256"],
                              expires_at=view["expires_at"], ray_address=p.settings.ray_dashboard_url or None)


SubmissionToken = Annotated[str, Header(alias="X-Submission-Token", max_length=200,
                                        description="The redeemed token that queued this job.")]


@router.post("/direct", status_code=201, response_model=JobOut)
def submit_with_token(body: DirectSubmission, p: CurrentPlatform) -> JobOut:
    """The `ray job submit` door: redeem a submission token (once) for the spec it was minted for, and
    queue the job under the token's tenant. No API key: the token is the credential."""
    return JobOut.of(tokens_svc.submit_with_token(p, body.token, body.spec))


@router.get("/direct/{job_id}", response_model=JobOut)
def get_job_with_token(job_id: str, token: SubmissionToken, p: CurrentPlatform) -> JobOut:
    """The job a redeemed token queued, for its `ray job submit` driver to follow."""
    return JobOut.of(tokens_svc.job_with_token(p, token, job_id))


@router.post("/direct/{job_id}/cancel", response_model=JobOut)
def cancel_job_with_token(job_id: str, token: SubmissionToken, p: CurrentPlatform) -> JobOut:
    """Cancel the job a redeemed token queued (its driver was stopped with `ray job stop`)."""
    return JobOut.of(tokens_svc.cancel_with_token(p, token, job_id))


@router.get("", response_model=Page[JobOut])
def list_jobs(who: CurrentCaller, p: CurrentPlatform, page: Paging,
              state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
              task: TaskFilter = None) -> Page[JobOut]:
    """The caller's jobs (sweep trials too), newest first."""
    rows = jobs_svc.list_jobs(p, who, state=state, task=task, limit=page.limit, cursor=page.cursor)
    return Page[JobOut].of(rows, JobOut.of)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, who: CurrentCaller, p: CurrentPlatform) -> JobOut:
    return JobOut.of(jobs_svc.get_job(p, who, job_id))


@router.get("/{job_id}/events", response_model=JobEventsPage)
def job_events(job_id: str, who: CurrentCaller, p: CurrentPlatform, after: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobEventsPage:
    """Status changes with reasons, progress, evaluations, checkpoints; oldest first, paged by id."""
    events = jobs_svc.list_events(p, who, job_id, after=after, limit=limit)
    return JobEventsPage(events=[JobEvent.of(e) for e in events], next_after=events[-1].id if events else after)


@router.get("/{job_id}/logs", response_model=JobLogs)
def job_logs(job_id: str, who: CurrentCaller, p: CurrentPlatform,
             offset: Annotated[int, Query(ge=0)] = 0) -> JobLogs:
    """The job driver's log from ``offset``."""
    text = jobs_svc.job_logs(p, who, job_id)
    return JobLogs(text=text[offset:], offset=len(text))


@router.get("/{job_id}/tensorboard", response_model=list[TensorBoardFileOut])
def job_tensorboard(job_id: str, who: CurrentCaller, p: CurrentPlatform) -> list[TensorBoardFileOut]:
    """The job's TensorBoard event files (train loss, learning rate, dev metrics, throughput, memory), with
    15-minute presigned download URLs; `doctune jobs tensorboard JOB` downloads and serves them."""
    return [TensorBoardFileOut.model_validate(f) for f in jobs_svc.tensorboard_files(p, who, job_id)]


@router.post("/{job_id}/pause", response_model=JobOut)
def pause_job(job_id: str, who: CurrentCaller, p: CurrentPlatform) -> JobOut:
    """A queued job is held; a running one checkpoints at its next step and stops."""
    return JobOut.of(jobs_svc.pause_job(p, who, job_id))


@router.post("/{job_id}/resume", response_model=JobOut)
def resume_job(job_id: str, who: CurrentCaller, p: CurrentPlatform) -> JobOut:
    """Re-queue a paused job; it continues from its pause checkpoint."""
    return JobOut.of(jobs_svc.resume_job(p, who, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, who: CurrentCaller, p: CurrentPlatform) -> JobOut:
    return JobOut.of(jobs_svc.cancel_job(p, who, job_id))


@router.delete("/{job_id}/checkpoints", response_model=CheckpointsDeleted)
def delete_checkpoints(job_id: str, who: CurrentCaller, p: CurrentPlatform) -> CheckpointsDeleted:
    """Delete every checkpoint of a job that has ended (409 while it is queued, running or paused: it
    may still resume from them); its metrics and model stay. Frees storage quota."""
    return CheckpointsDeleted.model_validate(jobs_svc.delete_checkpoints(p, who, job_id))
