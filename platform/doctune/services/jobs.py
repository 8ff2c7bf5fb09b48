"""Jobs: submit a JobSpec to the Ray cluster, follow it, cancel it.

The API and CLI call :func:`submit_job`; it records the job and hands it to
the Ray Jobs API (``python -m ray_jobs.finetune --job-id ...``), so no training
ever runs in the caller's process. The job's driver (``doctune.train.run``)
writes progress, metrics and the final status back through :func:`update_job`.
"""

from __future__ import annotations

import sys
from typing import Any

from doctune.errors import DoctuneError
from doctune.services._context import Platform, Principal
from doctune.services.datasets import get_dataset
from doctune.services.tenants import check_tenant_access, get_owned, get_tenant, list_owned
from doctune.spec import JobSpec
from doctune.store.db import Job, new_id, now

TERMINAL = ("succeeded", "failed", "cancelled")


def create_job_record(p: Platform, caller: Principal, spec: JobSpec) -> Job:
    """Check the spec against stored state (tenant, dataset, model) and record the job as queued."""
    check_tenant_access(caller, spec.tenant, write=True)
    if get_tenant(p, spec.tenant) is None:
        raise DoctuneError(f"tenant {spec.tenant!r} does not exist; create it first", "not_found", field="tenant")
    ds = get_dataset(p, caller, spec.dataset.id)
    if ds.tenant_id != spec.tenant:
        raise DoctuneError(f"dataset {spec.dataset.id!r} not found", "not_found", field="dataset.id")
    if ds.task != spec.task:
        raise DoctuneError(
            f"dataset {ds.id} was uploaded for task {ds.task!r}, but the job's task is {spec.task!r}; "
            f"set task: {ds.task} or upload a {spec.task} dataset",
            "invalid_spec",
            field="task",
        )
    from doctune.train.models import resolve_base_model

    resolve_base_model(spec.base_model, check_only=True)
    job = Job(id=new_id("job"), tenant_id=spec.tenant, task=spec.task, spec=spec.model_dump(mode="json"))
    with p.db.session() as s:
        s.add(job)
    return job


def submit_job(p: Platform, caller: Principal, spec: JobSpec) -> Job:
    job = create_job_record(p, caller, spec)
    entrypoint = f"{sys.executable} -m ray_jobs.finetune --job-id {job.id}"
    env = {"DOCTUNE_HOME": p.settings.home} if p.settings.home else {}
    try:
        client = p.ray_jobs_client()
        sid = client.submit_job(entrypoint=entrypoint, submission_id=job.id, runtime_env={"env_vars": env})
    except DoctuneError:
        update_job(p, job.id, status="failed", error={"code": "unavailable", "message": "no Ray cluster"})
        raise
    except Exception as exc:  # the cluster refused or is down: the job is recorded as failed, not lost
        update_job(p, job.id, status="failed", error={"code": "unavailable", "message": str(exc)[:500]})
        raise DoctuneError(f"the Ray cluster did not accept the job: {exc}", "unavailable") from None
    return update_job(p, job.id, ray_submission_id=sid)


def update_job(p: Platform, job_id: str, **fields: Any) -> Job:
    with p.db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise DoctuneError(f"job {job_id!r} not found", "not_found")
        if job.status in TERMINAL and fields.get("status") not in (None, job.status):
            return job  # a cancelled job stays cancelled even if its driver reports late
        if fields.get("status") == "running" and job.started_at is None:
            job.started_at = now()
        if fields.get("status") in TERMINAL:
            job.finished_at = now()
        for k, v in fields.items():
            setattr(job, k, v)
    return job


def get_job(p: Platform, caller: Principal, job_id: str, *, sync: bool = True) -> Job:
    job = get_owned(p, caller, Job, job_id, "job", "job_id")
    if sync and job.status not in TERMINAL and job.ray_submission_id:
        job = _sync_with_ray(p, job)
    return job


def _sync_with_ray(p: Platform, job: Job) -> Job:
    """A driver that died without reporting (OOM, killed node) still ends the job."""
    try:
        info = p.ray_jobs_client().get_job_info(job.ray_submission_id)
    except Exception:
        return job
    status = str(getattr(info.status, "value", info.status))
    if status == "FAILED":
        with p.db.session() as s:  # re-read: the driver may have just written the real outcome
            fresh = s.get(Job, job.id)
        if fresh.status in TERMINAL:
            return fresh
        return update_job(p, job.id, status="failed", error={"code": "internal", "message": (info.message or "driver failed")[:2000]})
    if status == "STOPPED":
        return update_job(p, job.id, status="cancelled")
    return job


def list_jobs(p: Platform, caller: Principal) -> list[Job]:
    return list_owned(p, caller, Job)


def cancel_job(p: Platform, caller: Principal, job_id: str) -> Job:
    job = get_job(p, caller, job_id, sync=False)
    check_tenant_access(caller, job.tenant_id, write=True)
    if job.status in TERMINAL:
        raise DoctuneError(f"job {job_id} already {job.status}", "conflict")
    if job.ray_submission_id:
        try:
            p.ray_jobs_client().stop_job(job.ray_submission_id)
        except Exception as exc:
            raise DoctuneError(f"could not stop the job on Ray: {exc}", "unavailable") from None
    return update_job(p, job.id, status="cancelled")
