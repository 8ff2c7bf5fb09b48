"""The ledger of one job attempt: everything a job's driver records about the attempt it runs.

A job's driver (:mod:`doctune.drivers.job`) loads its attempt, marks it running, copies its
progress (and the events that progress implies), asks whether it should stop (a cancel, a pause,
its sweep's cancel), and ends it as failed, re-queued, paused or succeeded (the model registered,
within the tenant's storage quota). On the shared cluster the driver calls these functions itself
(``doctune.drivers.ledger.DatabaseLedger``). On a tenant's dedicated cluster it holds no database
URL: it calls the API (``/v1/jobs/{job_id}/attempt/...``, ``doctune.api.routes.attempts``), which
checks its job token (:func:`job_for_token`) and then calls the same functions, with the checks a
caller that is not the platform needs (:func:`check_requeue`, :func:`check_checkpoint`,
:func:`check_model_id`).
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from sqlalchemy import select

from doctune.errors import DoctuneError
from doctune.services import Platform
from doctune.services.dataset_versions import DatasetView, dataset_view
from doctune.services.jobs import ACTIVE, add_event, set_job_status, update_job
from doctune.services.registry import register_model
from doctune.states import JobState, SweepState
from doctune.store.db import Dataset, Job, JobEvent, Sweep
from doctune.store.job_tokens import job_token_mac, read_job_token
from doctune.store.keys import server_secret

__all__ = ["attempt_view", "check_checkpoint", "check_model_id", "check_requeue", "job_for_token", "load_attempt",
           "mark_running", "record_failed", "record_paused", "record_progress", "record_progress_events",
           "record_requeued", "record_succeeded", "record_succeeded_checked", "stop_wanted", "without_final"]


# ------------------------------------------------------------------ the operations
def load_attempt(p: Platform, job_id: str) -> tuple[Job, DatasetView | None]:
    """The job's record and its dataset as of the version it trains on (its info, and the files of each
    version up to it); 404 for a job that does not exist."""
    with p.db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise DoctuneError(f"job {job_id!r} not found", "not_found")
        dataset = s.get(Dataset, job.spec["dataset"]["id"])
    if dataset is None:
        return job, None
    ref = job.spec["dataset"]
    return job, dataset_view(p, dataset, ref.get("version") or 1, ref.get("compare_version"))


def mark_running(p: Platform, job_id: str, reason: str) -> None:
    update_job(p, job_id, status=JobState.RUNNING, progress={"phase": "scheduling"}, reason=reason)


def without_final(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "final"}


def record_progress_events(p: Platform, job_id: str, prev: dict[str, Any], state: dict[str, Any]) -> None:
    """Turn what changed between two progress snapshots into job events."""
    # a step the pump sees for the first time, also once training has ended (a short job may train all its
    # steps between two copies: its loss curve then still gets its last point)
    if state.get("step") != prev.get("step") and isinstance(state.get("loss"), (int, float)):
        fields = ("step", "total_steps", "epoch", "loss", "lr", "tokens_seen", "steps_per_s", "eta_s")
        add_event(p, job_id, "progress", {k: state.get(k) for k in fields})
    for entry in (state.get("history") or [])[len(prev.get("history") or []):]:
        add_event(p, job_id, "eval", entry)
    if state.get("last_checkpoint_step") not in (None, prev.get("last_checkpoint_step")):
        add_event(p, job_id, "checkpoint", {"step": state["last_checkpoint_step"]})
    if state.get("early_stopped_at") is not None and prev.get("early_stopped_at") is None:
        add_event(p, job_id, "early_stopped", {"step": state["early_stopped_at"]},
                  reason=state.get("early_stop_reason") or "early stopping")
    if state.get("resumed_from_step") and state.get("resumed_from_step") != prev.get("resumed_from_step"):
        add_event(p, job_id, "resumed", {"step": state["resumed_from_step"]},
                  reason="Ray Train restarted the workers; resumed from the last checkpoint")


def record_progress(p: Platform, job_id: str, prev: dict[str, Any], state: dict[str, Any]) -> None:
    """Copy a progress snapshot into the job record, and what changed since ``prev`` into events."""
    update_job(p, job_id, progress=without_final(state))
    record_progress_events(p, job_id, prev, state)


def stop_wanted(p: Platform, job_id: str) -> str | None:
    """"cancel" when the job (or the sweep it is a trial of) was cancelled, "pause" when a pause
    was requested, else None."""
    with p.db.session() as s:
        job = s.get(Job, job_id)
        sweep = s.get(Sweep, job.sweep_id) if job.sweep_id else None
    if sweep is not None and sweep.status == SweepState.CANCELLED and job.status not in JobState.terminal():
        job = update_job(p, job_id, status=JobState.CANCELLED, reason="its sweep was cancelled")
    if job.status == JobState.CANCELLED:
        return "cancel"
    return "pause" if job.control == "pause" else None


def record_failed(p: Platform, job_id: str, *, error: dict[str, Any], reason: str,
                  metrics: dict[str, Any] | None = None, progress: dict[str, Any] | None = None) -> None:
    extra = {k: v for k, v in (("metrics", metrics), ("progress", progress)) if v is not None}
    update_job(p, job_id, status=JobState.FAILED, error=error, **extra, reason=reason)


def record_requeued(p: Platform, job_id: str, *, attempt: int, resume_from: str | None, usage: dict[str, Any],
                    error: dict[str, Any], reason: str) -> None:
    """Attempt ``attempt`` failed: queue the job again as the next attempt, from ``resume_from``."""
    update_job(p, job_id, status=JobState.QUEUED, attempt=attempt + 1, resume_from=resume_from, ray_submission_id=None,
               metrics={"usage": usage}, error=error, reason=reason)


def record_paused(p: Platform, job_id: str, *, resume_from: str | None, usage: dict[str, Any],
                  progress: dict[str, Any], reason: str) -> None:
    update_job(p, job_id, status=JobState.PAUSED, control=None, resume_from=resume_from, ray_submission_id=None,
               metrics={"usage": usage}, progress=progress, reason=reason)


def record_succeeded(p: Platform, job_id: str, *, model_id: str, spec: Any, metrics: dict[str, Any],
                     final: dict[str, Any], progress: dict[str, Any], merged: bool, labels: list[str] | None) -> bool:
    """Mark the job succeeded and register its model in one transaction, by compare-and-set from
    'running'. False: the job was cancelled (or ended otherwise) meanwhile, and nothing was registered."""
    with p.db.session() as s:
        job = s.get(Job, job_id)
        won = set_job_status(s, job, JobState.SUCCEEDED, allowed_from=(JobState.RUNNING,), metrics=metrics,
                             model_id=model_id, progress=progress, reason=f"trained and registered model {model_id}")
        if won is not None:
            register_model(p, model_id=model_id, job_id=job_id, spec=spec, merged=merged, labels=labels,
                           metrics=final, session=s)
    return won is not None


# ------------------------------------------------------------------ a driver that is not the platform
def _ended(job: Job, attempt: int) -> DoctuneError:
    return DoctuneError(f"attempt {attempt} of job {job.id} has ended (the job is {job.status}, on attempt "
                        f"{job.attempt}); a job token acts only while its own attempt runs", "forbidden",
                        field="token")


def job_for_token(p: Platform, token: str | None, job_id: str) -> Job:
    """The job ``token`` lets its holder record, which must be ``job_id``: 401 for a missing or forged
    token, 403 for a token of another job (of this tenant or another), and 403 once the token's attempt
    has ended (the job ended, was paused or re-queued, or another submission now runs it)."""
    parsed = read_job_token(token or "")
    if parsed is None:
        raise DoctuneError("this call needs the job token its driver was given (X-Job-Token: dta_...); only the "
                           "platform makes them, for one attempt of one job", "unauthenticated", field="token")
    if parsed.job_id != job_id:
        raise DoctuneError(f"this job token is for job {parsed.job_id}, not job {job_id}: a job token acts on its "
                           "own job only", "forbidden", field="token")
    with p.db.session() as s:
        job = s.get(Job, job_id)
        current = s.execute(select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.kind == "submit")
                            .order_by(JobEvent.id.desc()).limit(1)).scalar_one_or_none()
    expected = job_token_mac(server_secret(p.db, p.settings.key_secret), job.tenant_id if job else "", job_id,
                             parsed.attempt, parsed.submission_id)
    if job is None or not hmac.compare_digest(expected, parsed.mac):
        raise DoctuneError("this job token is not valid (altered, or made with another key secret)",
                           "unauthenticated", field="token")
    if (job.status not in ACTIVE or job.attempt != parsed.attempt
            or (current or {}).get("submission_id") != parsed.submission_id):
        raise _ended(job, parsed.attempt)
    return job


def attempt_view(job: Job, dataset: DatasetView | None) -> dict[str, Any]:
    """What a driver needs of its attempt."""
    return {"job_id": job.id, "tenant": job.tenant_id, "status": job.status, "attempt": job.attempt,
            "resume_from": job.resume_from, "spec": job.spec, "metrics": job.metrics or {},
            "dataset_uri": dataset.uri if dataset else None, "dataset_info": (dataset.info or {}) if dataset else {}}


def check_requeue(job: Job) -> None:
    """A driver may re-queue its job only while the job's spec allows another attempt."""
    retries = int((job.spec or {}).get("retries", 1))
    if job.attempt > retries:
        raise DoctuneError(f"attempt {job.attempt} of job {job.id} was its last (retries: {retries}); record it "
                           "failed instead", "conflict", field="attempt")


def check_checkpoint(p: Platform, job: Job, path: str | None) -> None:
    """A checkpoint a driver names must be its own job's, under its tenant's prefix."""
    own = f"{p.settings.bucket}/tenants/{job.tenant_id}/jobs/{job.id}/"
    if path is not None and (not path.startswith(own) or ".." in path.split("/")):
        raise DoctuneError(f"checkpoint {path!r} is not one of job {job.id}'s (they live under {own})", "forbidden",
                           field="resume_from")


_MODEL_ID = re.compile(r"^model-[0-9a-f]{12}$")


def check_model_id(model_id: str) -> None:
    if not _MODEL_ID.match(model_id):
        raise DoctuneError(f"model id {model_id!r} is not one doctune makes (model-<12 hex digits>)",
                           "invalid_request", field="model_id")


def record_succeeded_checked(p: Platform, job: Job, *, model_id: str, metrics: dict[str, Any], final: dict[str, Any],
                             progress: dict[str, Any]) -> bool:
    """:func:`record_succeeded` for a driver that is not the platform: how the model is served (merged
    or an adapter, its labels) comes from the job's own spec and dataset, not from the caller."""
    from doctune.spec import JobSpec
    from doctune.train.tuning import merges_on_export

    check_model_id(model_id)
    missing = [k for k in ("test", "dev", "baseline") if not isinstance(final.get(k), dict)]
    if missing:
        raise DoctuneError(f"the final evaluation lacks {', '.join(missing)} (each a mapping of metric to value)",
                           "invalid_request", field="final")
    job, dataset = load_attempt(p, job.id)
    spec = JobSpec.model_validate(job.spec)
    labels = (dataset.info or {}).get("labels") if dataset else None
    return record_succeeded(p, job.id, model_id=model_id, spec=spec, metrics=metrics, final=final, progress=progress,
                            merged=merges_on_export(spec), labels=labels)
