"""The job queue: which queued jobs start, and starting them on Ray.

:func:`plan_dispatch` is the policy, a pure function: weighted fair share (a
tenant's running CPUs+GPUs divided by its weight, lowest first), then priority,
then age; a job starts only if the cluster has room and its tenant's quotas
(concurrent jobs, CPUs, GPUs) allow. Each tenant's queue is served in order
(priority, then age), so a large job at the head is not overtaken by that
tenant's later small ones.

:func:`claim_jobs` applies the policy inside one transaction that first takes
the dispatch lock row, so concurrent dispatchers (API replicas, threads) can
never start more than a quota allows, on SQLite or PostgreSQL.
:func:`dispatch_once` claims, then hands the claimed jobs to the cluster through the
platform's runner; the API server runs it every second (:class:`Dispatcher`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from doctune.errors import DoctuneError
from doctune.services import Platform
from doctune.services.jobs import set_job_status
from doctune.states import JobState, SweepState
from doctune.store.db import DispatchLock, Job, JobEvent, Sweep, Tenant, now

log = logging.getLogger("doctune.scheduler")
ACTIVE = JobState.active()
GPU_WEIGHT = 8.0  # a GPU counts as this many CPUs when comparing shares


@dataclass(frozen=True)
class Demand:
    cpus: float
    gpus: float = 0.0


@dataclass
class TenantState:
    weight: float = 1.0
    max_jobs: int | None = None
    max_cpus: float | None = None
    max_gpus: float | None = None
    running_jobs: int = 0
    running_cpus: float = 0.0
    running_gpus: float = 0.0

    def share(self) -> float:
        return (self.running_cpus + GPU_WEIGHT * self.running_gpus) / max(self.weight, 1e-9)

    def allows(self, d: Demand) -> str | None:
        """None if the quota allows ``d`` on top of what runs; else why not."""
        if self.max_jobs is not None and self.running_jobs + 1 > self.max_jobs:
            return f"at its concurrent-job quota ({self.max_jobs})"
        if self.max_cpus is not None and self.running_cpus + d.cpus > self.max_cpus + 1e-9:
            return f"CPU quota {self.max_cpus} would be exceeded"
        if self.max_gpus is not None and self.running_gpus + d.gpus > self.max_gpus + 1e-9:
            return f"GPU quota {self.max_gpus} would be exceeded"
        return None


@dataclass(frozen=True)
class QueuedJob:
    id: str
    tenant: str
    demand: Demand
    priority: int = 0
    created_at: datetime | float = 0.0


@dataclass
class Plan:
    start: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # job id -> why it waits


def plan_dispatch(tenants: dict[str, TenantState], queued: list[QueuedJob], free: Demand,
                  reachable: Demand | None = None) -> Plan:
    """Decide which queued jobs start now. Pure: mutates only its own copies.

    Tenants take turns by weighted fair share. With ``reachable`` given (the room there will be once
    the running jobs end: what is free plus what they hold), the job next by fair share that waits
    only for room holds that room: no job after it starts (without this, a stream of small jobs took
    every CPU that came free and a big job starved behind them). A job that would not fit even then
    (the cluster is too small, or endpoints hold the rest) holds nothing; the others go past it."""
    state = {k: TenantState(**vars(v)) for k, v in tenants.items()}
    queues: dict[str, list[QueuedJob]] = {}
    for job in sorted(queued, key=lambda j: (-j.priority, j.created_at, j.id)):
        queues.setdefault(job.tenant, []).append(job)
    room = free
    plan = Plan()
    while (job := _next_fair_job(queues, state, room, reachable, plan)) is not None:
        plan.waiting.pop(job.id, None)
        ts = state[job.tenant]
        ts.running_jobs += 1
        ts.running_cpus += job.demand.cpus
        ts.running_gpus += job.demand.gpus
        room = Demand(room.cpus - job.demand.cpus, room.gpus - job.demand.gpus)
        plan.start.append(job.id)
    for q in queues.values():
        for job in q[1:]:
            plan.waiting.setdefault(job.id, "behind an earlier job of the same tenant")
    return plan


def _next_fair_job(queues: dict[str, list[QueuedJob]], state: dict[str, TenantState], room: Demand,
                   reachable: Demand | None, plan: Plan) -> QueuedJob | None:
    """Pop the job to start next, or None: nothing fits, or the fair-next job holds the room it waits for."""
    candidates = []
    for tenant, q in queues.items():
        if not q:
            continue
        head, ts = q[0], state.setdefault(tenant, TenantState())
        why = ts.allows(head.demand)
        if why is not None:
            plan.waiting[head.id] = f"tenant {tenant} {why}"
            continue
        fits = _fits(head.demand, room)
        if not fits:
            plan.waiting[head.id] = f"waiting for cluster room ({head.demand.cpus:g} CPU, {head.demand.gpus:g} GPU needed)"
            if reachable is None or not _fits(head.demand, reachable):
                continue  # it holds nothing: others go past it
        candidates.append((ts.share(), -head.priority, head.created_at, head.id, tenant, fits))
    if not candidates:
        return None
    *_, tenant, fits = min(candidates)
    if not fits:
        held = queues[tenant][0].id
        plan.waiting[held] += "; next by fair share, so the room it needs is held for it"
        for *_, job_id, _, others_fit in candidates:
            if others_fit:
                plan.waiting[job_id] = f"behind job {held}, next by fair share, for which the cluster room is held"
        return None
    return queues[tenant].pop(0)


def _fits(d: Demand, room: Demand) -> bool:
    return d.cpus <= room.cpus + 1e-9 and d.gpus <= room.gpus + 1e-9


def job_demand(spec: dict[str, Any]) -> Demand:
    r = spec.get("resources_per_worker") or {}
    n = spec.get("num_workers", 1)
    return Demand(cpus=n * float(r.get("cpu", 1.0)), gpus=n * float(r.get("gpu", 0.0)))


def tenant_states(tenants: list[Tenant], active: list[Job]) -> dict[str, TenantState]:
    out = {t.id: TenantState(weight=t.weight, max_jobs=t.max_concurrent_jobs, max_cpus=t.max_cpus, max_gpus=t.max_gpus)
           for t in tenants}
    for job in active:
        ts = out.setdefault(job.tenant_id, TenantState())
        d = job_demand(job.spec)
        ts.running_jobs += 1
        ts.running_cpus += d.cpus
        ts.running_gpus += d.gpus
    return out


def holds_workers(job: Job) -> bool:
    """Whether an active job's training workers hold their cluster resources (they report their
    pids once they run). Until then the cluster reports those resources free although the job
    will take them: from its claim, through its driver's start, to its workers' placement."""
    return bool((job.progress or {}).get("worker_pids"))


def claim_jobs(p: Platform, cluster_free: Demand) -> list[Job]:
    """Mark the jobs the policy starts as 'starting', under the dispatch lock.

    ``cluster_free`` is what the cluster reports free; active jobs whose workers do not hold
    their resources yet (:func:`holds_workers`) will take them, so their demand is taken off it here."""
    with p.db.session() as s:
        s.execute(update(DispatchLock).where(DispatchLock.id == 1).values(at=now()))  # the lock
        tenants = list(s.execute(select(Tenant)).scalars())
        active = list(s.execute(select(Job).where(Job.status.in_(ACTIVE))).scalars())
        queued = list(s.execute(select(Job).where(Job.status == JobState.QUEUED)).scalars())
        if not queued:
            return []
        placed, unplaced = [], []
        for j in active:
            (placed if holds_workers(j) else unplaced).append(job_demand(j.spec))
        free = Demand(cluster_free.cpus - sum(d.cpus for d in unplaced), cluster_free.gpus - sum(d.gpus for d in unplaced))
        # once every active job ends, their resources are free again (an endpoint's are not)
        reachable = Demand(cluster_free.cpus + sum(d.cpus for d in placed), cluster_free.gpus + sum(d.gpus for d in placed))
        plan = plan_dispatch(
            tenant_states(tenants, active),
            [QueuedJob(j.id, j.tenant_id, job_demand(j.spec), j.priority, j.created_at) for j in queued],
            free, reachable,
        )
        by_id = {j.id: j for j in queued}
        claimed = []
        for job_id in plan.start:
            job = by_id[job_id]
            # compare-and-set: a job cancelled or paused since it was read is not started
            if set_job_status(s, job, JobState.STARTING, reason="dispatched: quota and cluster room allow it",
                              allowed_from=(JobState.QUEUED,),
                              progress={**(job.progress or {}), "worker_pids": {}}) is not None:  # earlier workers are gone
                claimed.append(job)
        for job_id, why in plan.waiting.items():
            prog = dict(by_id[job_id].progress or {})
            if prog.get("queue_reason") != why:
                by_id[job_id].progress = {**prog, "phase": "queued", "queue_reason": why}
    return claimed


def cluster_free(p: Platform) -> Demand:
    """Free logical CPUs/GPUs as the cluster reports them."""
    res = p.runner.resources()
    return Demand(res.cpus_free, res.gpus_free)


def submit_claimed(p: Platform, job: Job) -> None:
    """Hand a claimed job's driver to the cluster; a refusal fails the job with the reason.

    The driver's submission id is recorded (a ``submit`` event) before the cluster is asked: if this
    process stops in between, the reconciler (:func:`doctune.services.jobs.reconcile_job`) finds the
    driver by it, or queues the job again when the cluster never got it."""
    import uuid

    from doctune.services.jobs import add_event, update_job

    first_run = job.attempt == 1 and not job.resume_from
    planned = job.id if first_run else f"{job.id}-a{job.attempt}-{uuid.uuid4().hex[:6]}"
    cluster = p.cluster_for(job.tenant_id)  # the tenant's own cluster, or None: the shared one
    add_event(p, job.id, "submit", {"submission_id": planned, "attempt": job.attempt, "ray_cluster_id": cluster})
    update_job(p, job.id, ray_cluster_id=cluster)  # before the cluster is asked, as the submission id is
    try:
        sid = p.runner_on(cluster).submit("ray_jobs.finetune", ["--job-id", job.id], submission_id=planned)
    except Exception as exc:
        update_job(p, job.id, status=JobState.FAILED,
                   error={"code": "unavailable", "message": f"the cluster refused the job: {exc}"[:2000]})
        return
    update_job(p, job.id, ray_submission_id=sid)


def dispatch_once(p: Platform) -> list[str]:
    with p.db.session() as s:  # nothing queued: leave Ray's dashboard (and the CPU) alone
        if s.execute(select(Job.id).where(Job.status == JobState.QUEUED).limit(1)).first() is None:
            return []
    try:
        free = cluster_free(p)
    except Exception as exc:
        log.warning("cannot read the cluster's free resources, not dispatching: %s", exc)
        return []
    claimed = claim_jobs(p, free)
    for job in claimed:
        submit_claimed(p, job)
    return [j.id for j in claimed]


class Dispatcher:
    """Runs :func:`dispatch_once` every ``interval_s`` in a daemon thread."""

    def __init__(self, p: Platform, interval_s: float = 1.0) -> None:
        self.p, self.interval_s = p, interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="doctune-dispatcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                dispatch_once(self.p)
            except DoctuneError as exc:
                log.warning("dispatch: %s", exc)
            except Exception:
                log.exception("dispatch failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()


def _tenant_state(s, tenant: Tenant) -> TenantState:
    active = list(s.execute(select(Job).where(Job.status.in_(ACTIVE), Job.tenant_id == tenant.id)).scalars())
    return tenant_states([tenant], active)[tenant.id]


def insert_started(p: Platform, job: Job, reason: str) -> None:
    """Record a job that its caller runs itself (a sweep's trial) as 'starting', under the lock
    and only if its tenant's quota allows: the dispatcher never sees it queued, so never runs it twice."""
    with p.db.session() as s:
        s.execute(update(DispatchLock).where(DispatchLock.id == 1).values(at=now()))
        tenant = s.get(Tenant, job.tenant_id)
        sweep = s.get(Sweep, job.sweep_id) if job.sweep_id else None
        if sweep is not None and sweep.status in SweepState.terminal():
            raise DoctuneError(f"sweep {sweep.id} is {sweep.status}; it starts no more trials", "conflict")
        why = _tenant_state(s, tenant).allows(job_demand(job.spec))
        if why is not None:
            raise DoctuneError(f"tenant {tenant.id} {why}", "quota_exceeded", field="tenant")
        job.status = JobState.STARTING
        s.add(job)
        s.flush()
        s.add(JobEvent(job_id=job.id, kind="status", status=JobState.STARTING, reason=reason,
                       data={"from": JobState.QUEUED}))
