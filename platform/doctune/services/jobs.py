"""Jobs: submit a JobSpec to the Ray cluster, follow it, cancel it.

The API and CLI call :func:`submit_job`; it records the job and hands it to
the Ray Jobs API (``python -m ray_jobs.finetune --job-id ...``), so no training
ever runs in the caller's process. The job's driver (``doctune.drivers.job``)
writes progress, metrics and the final status back through :func:`update_job`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.datasets import get_dataset
from doctune.services.tasks import known_task
from doctune.services.tenants import DEFAULT_PAGE_SIZE, RowPage, check_tenant_access, get_owned, get_tenant, list_owned
from doctune.spec import JobSpec
from doctune.states import AttemptState, JobState
from doctune.store.db import Dataset, DispatchLock, Job, JobEvent, Tenant, new_id, now

log = logging.getLogger("doctune.jobs")
TERMINAL = JobState.terminal()
ACTIVE = JobState.active()


def check_spec(p: Platform, caller: Principal, spec: JobSpec) -> Dataset:
    """Check a spec against the task plugins and stored state (tenant, dataset, base model); returns its dataset."""
    from doctune.tasks import check_job_task, check_metric

    plugin = check_job_task(spec)  # first, as when the spec itself refused an unknown task
    check_tenant_access(caller, spec.tenant, write=True)
    if get_tenant(p, spec.tenant) is None:
        raise DoctuneError(f"tenant {spec.tenant!r} does not exist; create it first", "not_found", field="tenant")
    ds = get_dataset(p, caller, spec.dataset.id)
    if ds.tenant_id != spec.tenant:
        raise DoctuneError(f"dataset {spec.dataset.id!r} not found", "not_found", field="dataset.id")
    for field, version in (("version", spec.dataset.version), ("compare_version", spec.dataset.compare_version)):
        if version is not None and version > (ds.version or 1):
            raise DoctuneError(f"dataset {ds.id} has versions 1..{ds.version or 1}; dataset.{field} {version} does "
                               f"not exist (see `doctune datasets versions {ds.id}`)", "not_found",
                               field=f"dataset.{field}")
    if ds.task != spec.task:
        raise DoctuneError(
            f"dataset {ds.id} was uploaded for task {ds.task!r}, but the job's task is {spec.task!r}; "
            f"set task: {ds.task} or upload a {spec.task} dataset",
            "invalid_spec",
            field="task",
        )
    from doctune.base_models import check_base_model_allowed, resolve_base_model

    check_base_model_allowed(spec.base_model, tenant=spec.tenant, admin=caller.is_admin, bucket=p.settings.bucket)
    store = p.objects if spec.base_model.startswith("s3://") else None  # catalog models and folders need none
    base = resolve_base_model(spec.base_model, check_only=True, store=store)
    fits = getattr(plugin, "check_base_model", None)  # e.g. text-writing tasks refuse an encoder
    if fits is not None and not base.startswith("s3://"):
        fits(base)
    if spec.early_stopping is not None:
        check_metric(plugin, spec.early_stopping.metric, "early_stopping.metric")
    if spec.tuning.method == "prefix" and plugin.peft_task_type is None:
        raise DoctuneError(f"tuning.method 'prefix' is not available for task {spec.task}: prefix tuning needs one peft "
                           "task type for the task's model, and this task builds more than one kind of model (or a "
                           "custom one); use lora, adalora or ia3", "invalid_spec", field="tuning.method")
    return ds


UNKNOWN_TOKENS_REFUSE = 0.2  # share of a sample's tokens the base model's tokenizer cannot represent


# (dataset id, its version, base model, task, max_seq_length) -> the unknown-token fraction of its first
# 200 training records: a dataset's version never changes, and reading and tokenizing them was 72 ms of a
# submission's 128 ms of API CPU (profiled while the API-load bench submitted jobs)
UNKNOWN_TOKENS_SEEN: dict[tuple[Any, ...], float] = {}
UNKNOWN_TOKENS_SEEN_MAX = 4096
UNKNOWN_TOKENS_LOCK = threading.Lock()


def unknown_token_fraction(p: Platform, spec: JobSpec, ds: Dataset) -> float:
    """The share of the dataset's training tokens that the base model's tokenizer does not know."""
    from doctune.services.datasets import read_split
    from doctune.tasks import get_task, task_texts
    from doctune.base_models import resolve_base_model
    from doctune.train.plan import count_tokens, load_tokenizer

    key = (ds.id, ds.version, spec.base_model, spec.task, spec.max_seq_length)
    cached = UNKNOWN_TOKENS_SEEN.get(key)
    if cached is not None:
        return cached
    tokenizer = load_tokenizer(resolve_base_model(spec.base_model))
    sample = task_texts(get_task(spec.task), read_split(p, ds, "train")[:200])
    fraction = count_tokens(sample, tokenizer, spec.max_seq_length)["unknown_token_fraction"]
    with UNKNOWN_TOKENS_LOCK:
        if len(UNKNOWN_TOKENS_SEEN) >= UNKNOWN_TOKENS_SEEN_MAX:
            UNKNOWN_TOKENS_SEEN.pop(next(iter(UNKNOWN_TOKENS_SEEN)), None)  # the oldest
        UNKNOWN_TOKENS_SEEN[key] = fraction
    return fraction


def check_language(p: Platform, spec: JobSpec, ds: Dataset) -> None:
    """Refuse to train on text the base model cannot read (e.g. Chinese for the English
    MiniLM, whose vocabulary maps most Chinese characters to [UNK])."""
    if spec.base_model.startswith("s3://"):
        return  # a tenant's own model: its tokenizer is checked when the job loads it
    unknown = unknown_token_fraction(p, spec, ds)
    if unknown > UNKNOWN_TOKENS_REFUSE:
        raise DoctuneError(
            f"{unknown:.0%} of the dataset's tokens are unknown to {spec.base_model}'s tokenizer: it cannot read this "
            "language. Choose a base model whose tokenizer covers it (gemma-3-270m covers Chinese)",
            "invalid_spec",
            field="base_model",
        )


def create_job_record(p: Platform, caller: Principal, spec: JobSpec, priority: int = 0, *,
                      queue_quota: bool = False) -> Job:
    """Check the spec against stored state and record the job as queued. ``queue_quota``: refuse it
    (429) when its tenant already has ``max_queued_jobs`` queued, counted under the dispatch lock so
    that racing submissions cannot both pass (and once before, so that a tenant at its quota costs no
    dataset read)."""
    if queue_quota:
        check_tenant_access(caller, spec.tenant, write=True)
        with p.db.session() as s:
            check_queued_jobs_quota(s, spec.tenant, lock=False)
    ds = check_spec(p, caller, spec)
    check_language(p, spec, ds)
    job = Job(id=new_id("job"), tenant_id=spec.tenant, task=spec.task, spec=pin_dataset_version(spec, ds),
              priority=priority)
    with p.db.session() as s:
        if queue_quota:
            check_queued_jobs_quota(s, spec.tenant)
        s.add(job)
        s.flush()
        s.add(JobEvent(job_id=job.id, kind="status", status=JobState.QUEUED, reason=f"submitted by {caller.key_id}"))
    return job


def pin_dataset_version(spec: JobSpec, ds: Dataset) -> dict[str, Any]:
    """The spec as stored: its dataset version set (the newest when none is named), so the job records the
    version it trains on, and a later append does not change what it reads."""
    data = spec.model_dump(mode="json")
    if data["dataset"].get("version") is None:
        data["dataset"]["version"] = ds.version or 1
    return data


def check_queued_jobs_quota(s: Session, tenant_id: str, *, lock: bool = True) -> None:
    """429 when ``tenant_id`` has ``max_queued_jobs`` jobs queued already; ``lock``: take the dispatch
    lock in ``s`` first (then the count holds until ``s`` commits)."""
    if lock:
        s.execute(update(DispatchLock).where(DispatchLock.id == 1).values(at=now()))
    limit = s.execute(select(Tenant.max_queued_jobs).where(Tenant.id == tenant_id)).scalar()
    if limit is None:
        return
    queued = s.execute(select(func.count()).select_from(Job)
                       .where(Job.tenant_id == tenant_id, Job.status == JobState.QUEUED)).scalar()
    if queued >= limit:
        raise DoctuneError(f"tenant {tenant_id} has {queued} jobs queued, its quota (max_queued_jobs) is {limit}; wait "
                           "for some to start, cancel some, or ask an admin to raise max_queued_jobs",
                           "quota_exceeded", field="max_queued_jobs")


def job_report(job: Job) -> dict[str, Any] | None:
    """A finished job's test metrics beside its baseline's, on the same test split."""
    m = job.metrics or {}
    if "test" not in m or "baseline" not in m:
        return None
    base, tuned = m["baseline"].get("test", {}), m["test"]
    names = [k for k, v in tuned.items() if isinstance(v, (int, float)) and k != "n"]
    # model-free baselines (e.g. lead-N for summaries) on the same test split, where the task has them
    references = {name: r["test"] for name, r in (m["baseline"].get("references") or {}).items()}
    return {
        "split": "test",
        "examples": tuned.get("n"),
        "baseline": m["baseline"].get("kind", "untrained_head"),
        "primary_metric": m.get("primary_metric"),
        "metrics": {k: {"baseline": base.get(k), "fine_tuned": tuned[k], **{n: r[k] for n, r in references.items() if k in r}}
                    for k in names},
        "references": sorted(references),
        "best_baseline": best_baseline(m["baseline"].get("kind", "untrained_head"), base, references, tuned,
                                       m.get("primary_metric")),
    }


def best_baseline(kind: str, base: dict[str, Any], references: dict[str, dict[str, Any]], tuned: dict[str, Any],
                  metric: str | None) -> dict[str, Any] | None:
    """The best of the step-0 baseline (named ``kind``) and the model-free references on the test
    ``metric``: ``{"name", "metric", "value", "fine_tuned", "margin"}``, ``margin = fine_tuned - value``.

    Lower wins for a "min" metric (:func:`doctune.tasks.metric_mode`: loss, perplexity), where a negative
    margin means the fine-tuned model is better; every task's primary metric is higher-is-better today.
    None when the metric is unknown or no baseline has a value for it.
    """
    from doctune.tasks import metric_mode

    if metric is None:
        return None
    candidates = {name: r[metric] for name, r in {kind: base, **references}.items()
                  if isinstance(r.get(metric), (int, float))}
    if not candidates:
        return None
    pick = min if metric_mode(metric) == "min" else max
    name = pick(candidates, key=candidates.__getitem__)
    fine_tuned = tuned.get(metric) if isinstance(tuned.get(metric), (int, float)) else None
    return {"name": name, "metric": metric, "value": candidates[name], "fine_tuned": fine_tuned,
            "margin": None if fine_tuned is None else fine_tuned - candidates[name]}


def submit_job(p: Platform, caller: Principal, spec: JobSpec) -> Job:
    """Queue a job; the dispatcher starts it on Ray when its tenant's quota and the
    cluster allow (see doctune.services.scheduler)."""
    job = create_job_record(p, caller, spec, queue_quota=True)
    if p.dispatcher is not None:
        p.dispatcher.wake()
    return job


def update_job(p: Platform, job_id: str, *, reason: str | None = None,
               allowed_from: tuple[JobState, ...] | None = None, **fields: Any) -> Job:
    """Change a job's record; a status change is also recorded as an event with its reason.

    A status change is a compare-and-set in the database (:func:`set_job_status`): it applies only
    if the job is still in the state it was read in, and never to a job that has ended, so a late
    driver cannot turn a cancelled job into a succeeded one, nor a cancel a succeeded one.
    ``allowed_from``: the states the change may start from (default: any that has not ended);
    from any other state nothing changes, and the job is returned as it is."""
    for _ in range(50):  # another writer changed the state between our read and our write: read again
        with p.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise DoctuneError(f"job {job_id!r} not found", "not_found")
            new_status = fields.get("status")
            if new_status is None or new_status == job.status:
                for k, v in fields.items():
                    if k != "status":
                        setattr(job, k, v)
                return job
            if job.status in TERMINAL or (allowed_from is not None and job.status not in allowed_from):
                return job  # a cancelled job stays cancelled even if its driver reports late
            changed = set_job_status(s, job, new_status, reason=reason, allowed_from=allowed_from,
                                     **{k: v for k, v in fields.items() if k != "status"})
            if changed is not None:
                return changed
    raise DoctuneError(f"job {job_id} kept changing state; try again", "conflict")


def set_job_status(s: Session, job: Job, new_status: JobState, *, reason: str | None = None,
                   allowed_from: tuple[JobState, ...] | None = None, **fields: Any) -> Job | None:
    """Compare-and-set ``job`` (as read in session ``s``) from the state it was read in to
    ``new_status``, with ``fields``, plus the status event: ``UPDATE jobs ... WHERE id = :id AND
    status = :read``. None (nothing written) when another writer changed its state meanwhile, or
    when its state is not in ``allowed_from`` (default: any state that has not ended)."""
    read = job.status
    if read in (allowed_from or tuple(st for st in JobState if st not in TERMINAL)) and read != new_status:
        values: dict[str, Any] = {**fields, "status": new_status}
        if new_status == JobState.RUNNING and job.started_at is None:
            values["started_at"] = now()
        if new_status in TERMINAL:
            values["finished_at"] = now()
        done = s.execute(update(Job).where(Job.id == job.id, Job.status == read).values(**values)
                         .execution_options(synchronize_session=False)).rowcount
        if done == 1:
            if reason is None and fields.get("error"):
                reason = fields["error"].get("message", "")[:1000]
            s.add(JobEvent(job_id=job.id, kind="status", status=new_status, reason=reason, data={"from": read}))
            for k, v in values.items():
                set_committed_value(job, k, v)
            return job
    s.refresh(job)  # the caller sees the state that won
    return None


def add_event(p: Platform, job_id: str, kind: str, data: dict[str, Any], reason: str | None = None) -> None:
    with p.db.session() as s:
        s.add(JobEvent(job_id=job_id, kind=kind, reason=reason, data=data))


def list_events(p: Platform, caller: Principal, job_id: str, *, after: int = 0, limit: int = 100) -> list[JobEvent]:
    """A page of a job's events, oldest first, with ids greater than ``after``."""
    get_owned(p, caller, Job, job_id, "job", "job_id")
    if not 1 <= limit <= 1000:
        raise DoctuneError(f"limit must be 1..1000; got {limit}", "invalid_request", field="limit")
    with p.db.session() as s:
        q = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id).limit(limit)
        return list(s.execute(q).scalars())


def reconcile_with_ray(p: Platform, grace_s: float | None = None) -> int:
    """Bring every unfinished job that is not a sweep's trial (a trial follows its sweep:
    :func:`doctune.services.sweeps.reconcile_sweeps`) in line with the cluster; run at API start
    and every few seconds by :class:`doctune.services.reconcile.Reconciler`, so a restart of the
    API server or of the Ray head loses no job and strands none. Returns how many changed."""
    changed = 0
    with p.db.session() as s:
        pending = list(s.execute(select(Job).where(Job.status.in_(ACTIVE), Job.sweep_id.is_(None))).scalars())
    for job in pending:
        try:
            if reconcile_job(p, job, grace_s=grace_s).status != job.status:
                changed += 1
        except Exception as exc:  # e.g. the object store is down while looking for a checkpoint: next round
            log.warning("could not reconcile job %s: %s", job.id, exc)
    return changed


def get_job(p: Platform, caller: Principal, job_id: str, *, sync: bool = True) -> Job:
    job = get_owned(p, caller, Job, job_id, "job", "job_id")
    if sync and job.status in ACTIVE and job.ray_submission_id and not job.sweep_id:
        job = _sync_with_cluster(p, job)
    return job


_last_sync: dict[str, float] = {}
SYNC_EVERY_S = 10.0


def _sync_with_cluster(p: Platform, job: Job) -> Job:
    """On GET: asks the cluster at most every SYNC_EVERY_S per job (pollers must not load its head)."""
    import time

    if time.monotonic() - _last_sync.get(job.id, -1e9) < SYNC_EVERY_S:
        return job
    _last_sync[job.id] = time.monotonic()
    try:
        return reconcile_job(p, job)
    except Exception as exc:
        log.warning("could not reconcile job %s: %s", job.id, exc)
        return job


def reconcile_job(p: Platform, job: Job, *, grace_s: float | None = None) -> Job:
    """One unfinished job against its driver on the cluster. A driver that is pending or running is
    left alone; one stopped on the cluster cancels the job; one that died without reporting, or that
    the cluster no longer knows (its head restarted), makes the job retry from its last checkpoint
    (:func:`retry_or_fail`). A job claimed but never handed to the cluster is queued again."""
    if not job.ray_submission_id:
        return _reconcile_unsubmitted(p, job, p.settings.reconcile_grace_s if grace_s is None else grace_s)
    sid = job.ray_submission_id
    try:
        run = p.runner_on(job.ray_cluster_id).status(sid)
    except Exception:
        return job  # the cluster does not answer (its head may be restarting): decide nothing now
    with p.db.session() as s:  # re-read: the driver may have just written the real outcome
        fresh = s.get(Job, job.id)
    if fresh.status not in ACTIVE or fresh.ray_submission_id != sid or run.state in (AttemptState.PENDING,
                                                                                    AttemptState.RUNNING):
        return fresh
    if run.state == AttemptState.STOPPED:
        return settle_job(p, fresh, "the job's driver was stopped on the cluster", status=JobState.CANCELLED)
    if run.state == AttemptState.UNKNOWN:
        why = f"the Ray cluster no longer knows the job's driver {sid} (its head was restarted, or the run was removed)"
    elif run.state == AttemptState.FAILED:
        why = f"the job's driver {sid} died without reporting: {(run.message or 'no message')[:1000]}"
    else:
        why = f"the job's driver {sid} ended without reporting a result"
    return retry_or_fail(p, fresh, why)


def last_checkpoint(p: Platform, job: Job) -> str | None:
    """The newest complete checkpoint of the job's current attempt (bucket/key, what a run resumes
    from), else the one that attempt started from. Raises when the object store cannot be read."""
    from doctune.store.objects import tenant_key
    from doctune.train.checkpoints import newest_complete_checkpoint
    from doctune.train.trainer import attempt_dir

    # the layout of doctune.train.trainer.checkpoint_prefix, read without validating the stored spec again
    prefix = tenant_key(job.tenant_id, "jobs", job.id, "checkpoints", attempt_dir(job.attempt))
    key = newest_complete_checkpoint(p.objects, prefix, int((job.spec or {}).get("num_workers", 1)))
    return f"{p.settings.bucket}/{key}" if key else job.resume_from


def retry_or_fail(p: Platform, job: Job, why: str) -> Job:
    """A job whose run was lost: queued again as its next attempt, from its last checkpoint, while it
    has retries left; else failed, with ``why`` in its error."""
    retries = int((job.spec or {}).get("retries", 1))
    error = {"code": "driver_lost", "message": why[:2000], "attempt": job.attempt}
    if job.attempt > retries:
        return settle_job(p, job, f"{why}; attempt {job.attempt} of {retries + 1}, no retries left",
                          status=JobState.FAILED, error=error)
    ckpt = last_checkpoint(p, job)
    job = settle_job(p, job, f"{why}; retrying as attempt {job.attempt + 1} "
                     + (f"from checkpoint {ckpt}" if ckpt else "from the start (no checkpoint yet)"),
                     status=JobState.QUEUED, attempt=job.attempt + 1, resume_from=ckpt, ray_submission_id=None,
                     error=error)
    if p.dispatcher is not None:
        p.dispatcher.wake()
    return job


def settle_job(p: Platform, job: Job, reason: str | None, **values: Any) -> Job:
    """Compare-and-set for the reconciler: apply ``values`` only if the job is still as ``job`` was
    read (status, attempt, driver), so a job that its driver, a cancel, the dispatcher or another
    reconciler (a GET, another API replica) changed meanwhile is left as it now is; a status change
    is recorded as an event with ``reason``. Returns the job as stored afterwards."""
    from sqlalchemy import update

    same_driver = (Job.ray_submission_id.is_(None) if job.ray_submission_id is None
                   else Job.ray_submission_id == job.ray_submission_id)
    if values.get("status") in TERMINAL:
        values["finished_at"] = now()
    with p.db.session() as s:
        done = s.execute(update(Job).where(Job.id == job.id, Job.status == job.status, Job.attempt == job.attempt,
                                           same_driver).values(**values).execution_options(synchronize_session=False))
        if done.rowcount == 1 and values.get("status", job.status) != job.status:
            s.add(JobEvent(job_id=job.id, kind="status", status=values["status"], reason=reason,
                           data={"from": job.status}))
    with p.db.session() as s:
        return s.get(Job, job.id)


def _reconcile_unsubmitted(p: Platform, job: Job, grace_s: float) -> Job:
    """A job that holds its quota but names no driver. Claimed by a dispatcher that stopped before it
    recorded the driver: the driver it planned (its ``submit`` event) is adopted if the cluster has it,
    else the job is queued again (the same attempt: nothing ran). A running job with no submit event
    was started by `ray job submit` itself; its driver cannot be asked, so it is left alone."""
    with p.db.session() as s:
        events = list(s.execute(select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.kind.in_(("status", "submit")))
                                .order_by(JobEvent.id.desc()).limit(20)).scalars())
    claim = next((e for e in events if e.kind == "status" and e.status == JobState.STARTING), None)
    if claim is None or seconds_since(claim.at) < grace_s:
        return job
    planned = next((e.data.get("submission_id") for e in events if e.kind == "submit" and e.id > claim.id), None)
    if planned:
        try:
            run = p.runner_on(job.ray_cluster_id).status(planned)
        except Exception:
            return job
        if run.state != AttemptState.UNKNOWN:
            return settle_job(p, job, None, ray_submission_id=planned)  # it was handed over; only its id was lost
        if job.status == JobState.RUNNING:  # it ran, and the cluster has forgotten it since
            return retry_or_fail(p, job, f"the Ray cluster no longer knows the job's driver {planned} (its head "
                                         "was restarted, or the run was removed)")
    elif job.status != JobState.STARTING:
        return job
    job = settle_job(p, job, f"claimed {seconds_since(claim.at):.0f}s ago but never handed to the cluster (the "
                     "dispatcher stopped in between); queued again", status=JobState.QUEUED)
    if p.dispatcher is not None:
        p.dispatcher.wake()
    return job


def seconds_since(at: Any) -> float:
    from datetime import timezone

    if at.tzinfo is None:  # SQLite returns naive datetimes (stored in UTC)
        at = at.replace(tzinfo=timezone.utc)
    return (now() - at).total_seconds()


def list_jobs(p: Platform, caller: Principal, *, state: JobState | None = None, task: str | None = None,
              limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> RowPage[Job]:
    """A page of the caller's jobs (a sweep's trials too), newest first, optionally in one state or of one task."""
    return list_owned(p, caller, Job, limit=limit, cursor=cursor, status=state, task=known_task(task))


def pause_job(p: Platform, caller: Principal, job_id: str) -> Job:
    """A queued job is held; a running one saves a checkpoint at its next step and stops."""
    job = get_job(p, caller, job_id, sync=False)
    check_tenant_access(caller, job.tenant_id, write=True)
    if job.status == JobState.QUEUED:
        job = update_job(p, job.id, status=JobState.PAUSED, reason=f"paused while queued by {caller.key_id}",
                         allowed_from=(JobState.QUEUED,))
        if job.status == JobState.PAUSED:
            return job  # else the dispatcher started it meanwhile: pause it running
    if job.status not in ACTIVE:
        raise DoctuneError(f"job {job_id} is {job.status}; only queued or running jobs can be paused", "conflict")
    return update_job(p, job.id, control="pause", reason=None)


def resume_job(p: Platform, caller: Principal, job_id: str) -> Job:
    """Re-queue a paused job; it continues from the checkpoint taken when it paused."""
    job = get_job(p, caller, job_id, sync=False)
    check_tenant_access(caller, job.tenant_id, write=True)
    if job.status != JobState.PAUSED:
        raise DoctuneError(f"job {job_id} is {job.status}; only paused jobs can be resumed", "conflict")
    job = update_job(p, job.id, status=JobState.QUEUED, control=None, ray_submission_id=None,
                     allowed_from=(JobState.PAUSED,),
                     reason=f"resumed by {caller.key_id}" + (f" from {job.resume_from}" if job.resume_from else ""))
    if job.status != JobState.QUEUED:
        raise DoctuneError(f"job {job_id} became {job.status} before the resume arrived; nothing was resumed", "conflict")
    if p.dispatcher is not None:
        p.dispatcher.wake()
    return job


def cancel_job(p: Platform, caller: Principal, job_id: str) -> Job:
    """Cancel a job that has not ended. The state changes first (compare-and-set: a job that
    succeeded meanwhile stays succeeded, and the cancel is a 409); then a running driver is
    stopped on the cluster. A driver that outlives the stop (or a sweep's trial, which has no
    driver of its own) sees the cancel at its next progress report, stops training and registers
    no model (:mod:`doctune.drivers.job`)."""
    job = get_job(p, caller, job_id, sync=False)
    check_tenant_access(caller, job.tenant_id, write=True)
    if job.status in TERMINAL:
        raise DoctuneError(f"job {job_id} already {job.status}", "conflict")
    was_active = job.status in ACTIVE
    job = update_job(p, job.id, status=JobState.CANCELLED, reason=f"cancelled by {caller.key_id}")
    if job.status != JobState.CANCELLED:
        raise DoctuneError(f"job {job_id} {job.status} before the cancel arrived; nothing was cancelled", "conflict")
    if job.ray_submission_id and was_active:
        try:
            p.runner_on(job.ray_cluster_id).stop(job.ray_submission_id)
        except Exception as exc:  # the driver stops itself at its next progress report
            log.warning("job %s is cancelled, but stopping its driver failed: %s", job_id, exc)
    return job


def delete_checkpoints(p: Platform, caller: Principal, job_id: str) -> dict[str, Any]:
    """Delete the checkpoints of a job that has ended (every attempt's); its record, metrics and
    model stay. A job that may still run or resume (queued, starting, running, paused) keeps them."""
    from doctune.store.objects import tenant_key

    job = get_job(p, caller, job_id, sync=False)
    check_tenant_access(caller, job.tenant_id, write=True)
    if job.status not in TERMINAL:
        raise DoctuneError(f"job {job_id} is {job.status} and may still resume from its checkpoints; cancel it or "
                           "wait until it ends, then delete them", "conflict", field="job_id", tenant_error=True)
    prefix = tenant_key(job.tenant_id, "jobs", job.id, "checkpoints") + "/"  # doctune.train.checkpoints' layout
    freed = p.objects.prefix_bytes(prefix)
    deleted = p.objects.delete_prefix(prefix)
    update_job(p, job.id, resume_from=None)
    return {"job_id": job.id, "deleted_objects": deleted, "freed_bytes": freed}


def job_logs(p: Platform, caller: Principal, job_id: str) -> str:
    """The job driver's log (what `ray job logs` shows), for the caller's own job."""
    job = get_job(p, caller, job_id, sync=False)
    if not job.ray_submission_id:
        return ""
    try:
        return p.runner_on(job.ray_cluster_id).logs(job.ray_submission_id)
    except DoctuneError:
        raise
    except Exception as exc:
        raise DoctuneError(f"could not read the job's log from the cluster: {exc}", "unavailable") from None


def tensorboard_files(p: Platform, caller: Principal, job_id: str, expires_s: int = 900) -> list[dict[str, Any]]:
    """The job's TensorBoard event files (one per attempt, written by its driver: doctune.drivers.tracking),
    each with a presigned download URL good for ``expires_s``; the caller's own job only (another tenant's
    is a 404, as for any of its ids). Empty until the job's first evaluation or checkpoint."""
    from doctune.train.trainer import tensorboard_prefix

    job = get_job(p, caller, job_id, sync=False)
    prefix = tensorboard_prefix(job.tenant_id, job.id) + "/"
    return [{"path": key[len(prefix):], "bytes": size, "url": p.objects.presign_download(key, expires_s),
             "expires_s": expires_s}
            for key, size in p.objects.list_objects(prefix) if not key.endswith("/")]
