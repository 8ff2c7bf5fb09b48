"""The job queue: which queued jobs start, and starting them on Ray.

:func:`plan_dispatch` is the policy, a pure function: weighted fair share (a
tenant's running CPUs+GPUs divided by its weight, lowest first), then priority,
then age; a job starts only if the cluster has room and its tenant's quotas
(concurrent jobs, CPUs, GPUs) allow. Each tenant's queue is served in order
(priority, then age), so a large job at the head is not overtaken by that
tenant's later small ones.

:func:`claim_jobs` applies the policy inside one transaction that first takes
the dispatch lock row, so concurrent dispatchers (API replicas, threads) can
never start more than a quota allows, on SQLite or PostgreSQL. It reads only what
the decision needs, as columns, not ORM rows: the tenants' quotas, the active jobs, and
the first :data:`HEAD_DEPTH` queued jobs of each tenant (its queue heads, over the index
``ix_jobs_queue``; deeper only for a tenant that starts them all), so a tick costs
O(tenants + active jobs), whatever the queue's length. Each job's demand is parsed from
its spec once per process (:func:`demands`), and ``queue_reason`` is written only for
heads whose reason changed.
:func:`dispatch_once` claims, then hands the claimed jobs to the cluster through the
platform's runner; the API server runs it every second (:class:`Dispatcher`).
"""

from __future__ import annotations

import heapq
import logging
import threading
import weakref
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Integer, Select, bindparam, case, select, true, update
from sqlalchemy.orm import Session

from doctune.errors import DoctuneError
from doctune.services import Platform
from doctune.services.jobs import set_job_status
from doctune.states import JobState, SweepState
from doctune.store.db import DispatchLock, Job, JobEvent, Sweep, Tenant, now

log = logging.getLogger("doctune.scheduler")
ACTIVE = JobState.active()
GPU_WEIGHT = 8.0  # a GPU counts as this many CPUs when comparing shares
HEAD_DEPTH = 2  # queued jobs read per tenant each tick; deeper only when a tenant starts them all
BEHIND = "behind an earlier job of the same tenant"


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
    cut: str | None = None  # the truncated tenant whose unknown next job stopped the plan: read more of its queue


def plan_dispatch(tenants: dict[str, TenantState], queued: list[QueuedJob], free: Demand,
                  reachable: Demand | None = None, truncated: Collection[str] = ()) -> Plan:
    """Decide which queued jobs start now. Pure: mutates only its own copies.

    Tenants take turns by weighted fair share. With ``reachable`` given (the room there will be once
    the running jobs end: what is free plus what they hold), the job next by fair share that waits
    only for room holds that room: no job after it starts (without this, a stream of small jobs took
    every CPU that came free and a big job starved behind them). A job that would not fit even then
    (the cluster is too small, or endpoints hold the rest) holds nothing; the others go past it.

    ``truncated`` names the tenants of which ``queued`` holds only the first jobs (their queue heads).
    Once such a tenant has started all of them, its next job is unknown, so the plan stops there with
    ``cut`` naming it: what it started so far is what the plan over the whole queue starts first.

    The tenants' heads wait in a heap by (share, -priority, age): each start costs O(log tenants)."""
    state = {k: TenantState(**vars(v)) for k, v in tenants.items()}
    queues: dict[str, deque[QueuedJob]] = {}
    for job in sorted(queued, key=lambda j: (-j.priority, j.created_at, j.id)):
        queues.setdefault(job.tenant, deque()).append(job)
    heads = [c for tenant in queues if (c := _candidate(tenant, queues, state)) is not None]
    heapq.heapify(heads)
    plan, room, held = Plan(), free, None
    while heads:
        tenant = heapq.heappop(heads)[-1]
        job = queues[tenant][0]
        if not _fits(job.demand, room):
            if reachable is not None and _fits(job.demand, reachable):
                held = job  # the fair-next job waits only for room: it holds it, nothing after it starts
                break
            continue  # it would not fit even then (and room only shrinks): it holds nothing
        queues[tenant].popleft()
        ts = state[tenant]
        ts.running_jobs += 1
        ts.running_cpus += job.demand.cpus
        ts.running_gpus += job.demand.gpus
        room = Demand(room.cpus - job.demand.cpus, room.gpus - job.demand.gpus)
        plan.start.append(job.id)
        if not queues[tenant] and tenant in truncated:
            plan.cut = tenant
            break
        if (c := _candidate(tenant, queues, state)) is not None:
            heapq.heappush(heads, c)
    _explain(plan, queues, state, room, held)
    return plan


def _candidate(tenant: str, queues: dict[str, deque[QueuedJob]], state: dict[str, TenantState]) -> tuple | None:
    """``tenant``'s head as a heap entry ordered by fair share, then priority, then age; None when its
    queue is empty or its quota does not allow its head (neither changes until the tenant starts a job)."""
    if not queues[tenant]:
        return None
    head, ts = queues[tenant][0], state.setdefault(tenant, TenantState())
    if ts.allows(head.demand) is not None:
        return None
    return ts.share(), -head.priority, head.created_at, head.id, tenant


def _explain(plan: Plan, queues: dict[str, deque[QueuedJob]], state: dict[str, TenantState], room: Demand,
             held: QueuedJob | None) -> None:
    """Why each job that does not start waits, as things stand once the plan is made."""
    for tenant, q in queues.items():
        if not q:
            continue
        head = q[0]
        if (why := state[tenant].allows(head.demand)) is not None:
            plan.waiting[head.id] = f"tenant {tenant} {why}"
        elif not _fits(head.demand, room):
            plan.waiting[head.id] = f"waiting for cluster room ({head.demand.cpus:g} CPU, {head.demand.gpus:g} GPU needed)"
        elif held is not None:
            plan.waiting[head.id] = f"behind job {held.id}, next by fair share, for which the cluster room is held"
        for job in islice(q, 1, None):
            plan.waiting[job.id] = BEHIND
    if held is not None:
        plan.waiting[held.id] += "; next by fair share, so the room it needs is held for it"


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


@dataclass(frozen=True)
class TenantPool:
    """The tenants whose work one Ray cluster runs: a dedicated cluster's own tenants, or (``shared``)
    every tenant except those with a dedicated cluster. Each pool is planned against its own
    cluster's free resources, so one cluster's load never holds back another's queue."""

    tenants: frozenset[str] = frozenset()
    shared: bool = True

    def __contains__(self, tenant: object) -> bool:
        return (tenant not in self.tenants) if self.shared else (tenant in self.tenants)


EVERY_TENANT = TenantPool()


def claim_jobs(p: Platform, cluster_free: Demand, pool: TenantPool = EVERY_TENANT) -> list[Job]:
    """Mark the jobs of ``pool``'s tenants that the policy starts as 'starting', under the dispatch lock.

    ``cluster_free`` is what the pool's cluster reports free; active jobs whose workers do not hold
    their resources yet (:func:`holds_workers`) will take them, so their demand is taken off it here."""
    with p.db.session() as s:
        s.execute(update(DispatchLock).where(DispatchLock.id == 1).values(at=now()))  # the lock
        states, placed, unplaced = running_work(s, pool)
        free = Demand(cluster_free.cpus - unplaced.cpus, cluster_free.gpus - unplaced.gpus)
        # once every active job ends, their resources are free again (an endpoint's are not)
        reachable = Demand(cluster_free.cpus + placed.cpus, cluster_free.gpus + placed.gpus)
        plan, reasons = _plan_over_heads(s, states, free, reachable, pool)
        claimed = _claim(s, plan.start)
        if not _write_reasons(s, reasons, plan.waiting) and not plan.start:
            s.rollback()  # nothing decided (a backlog's usual tick): release the lock without a durable write
    return claimed


# Core columns, not ORM entities: a tick reads thousands of rows, and ORM rows cost several times more
_JOBS, _TENANTS = Job.__table__.c, Tenant.__table__.c
# whether an active job's workers hold their resources (holds_workers), decided by the database
_PLACED = case((_JOBS.progress["worker_pids"].as_string().like('{"%'), 1), else_=0)  # a non-empty object
_ACTIVE_JOBS = select(_JOBS.id, _JOBS.tenant_id, _PLACED).where(_JOBS.status.in_(ACTIVE))
_TENANT_QUOTAS = select(_TENANTS.id, _TENANTS.weight, _TENANTS.max_concurrent_jobs, _TENANTS.max_cpus,
                        _TENANTS.max_gpus)
# job id -> demand, per database: a job's spec never changes, so the dispatcher parses each one once (a spec is
# ~1 KB of JSON: parsing thousands of them each tick, in Python or in SQL, was most of a tick's time)
_DEMANDS: weakref.WeakKeyDictionary[Any, dict[str, Demand]] = weakref.WeakKeyDictionary()
DEMANDS_KEPT = 50_000  # past this many the cache starts over: ended jobs are never asked for again


def demands(s: Session, job_ids: list[str]) -> dict[str, Demand]:
    """Each job's demand (:func:`job_demand`); specs are read only for jobs this process has not seen."""
    cache = _DEMANDS.setdefault(s.get_bind(), {})
    out = {i: d for i in job_ids if (d := cache.get(i)) is not None}
    missing = [i for i in job_ids if i not in out]
    if len(cache) + len(missing) > DEMANDS_KEPT:
        cache.clear()
    for some in _chunks(missing):
        for job_id, spec in s.connection().execute(select(_JOBS.id, _JOBS.spec).where(_JOBS.id.in_(some))):
            out[job_id] = cache[job_id] = job_demand(spec)
    return out


def _chunks(ids: list[str], n: int = 5000) -> Iterator[list[str]]:
    """``ids`` in lists of at most ``n``: a statement's parameters stay well under SQLite's limit."""
    return (ids[at:at + n] for at in range(0, len(ids), n))


def running_work(s: Session, pool: TenantPool = EVERY_TENANT) -> tuple[dict[str, TenantState], Demand, Demand]:
    """Each tenant's quotas and running work, and the demand of ``pool``'s active jobs whose workers
    hold their resources (placed) and of those whose workers do not yet (unplaced)."""
    c = s.connection()
    states = {tid: TenantState(weight=w, max_jobs=mj, max_cpus=mc, max_gpus=mg)
              for tid, w, mj, mc, mg in c.execute(_TENANT_QUOTAS)}
    active = c.execute(_ACTIVE_JOBS).all()
    demand = demands(s, [job_id for job_id, _, _ in active])
    held = {0: [0.0, 0.0], 1: [0.0, 0.0]}
    for job_id, tenant, placed in active:
        if (d := demand.get(job_id)) is None or tenant not in pool:
            continue  # deleted since it was read (PostgreSQL reads each statement's own snapshot), or elsewhere
        ts = states.setdefault(tenant, TenantState())
        ts.running_jobs += 1
        ts.running_cpus += d.cpus
        ts.running_gpus += d.gpus
        held[placed][0] += d.cpus
        held[placed][1] += d.gpus
    return states, Demand(*held[1]), Demand(*held[0])


_HEAD_COLS = (_JOBS.id, _JOBS.tenant_id, _JOBS.priority, _JOBS.created_at, _JOBS.progress["queue_reason"].as_string())
_QUEUED = _JOBS.status == JobState.QUEUED
_DEPTH = bindparam("depth", type_=Integer)


def _heads_query(dialect: str) -> Select:
    """Per tenant the first ``:depth`` queued jobs in the queue's order, each a range read of ix_jobs_queue."""
    if dialect == "postgresql":  # a LATERAL join: per tenant, an index range with a LIMIT
        heads = select(*_HEAD_COLS).where(_QUEUED, _JOBS.tenant_id == _TENANTS.id) \
            .order_by(_JOBS.priority.desc(), _JOBS.created_at, _JOBS.id).limit(_DEPTH).lateral()
        return select(heads).select_from(Tenant.__table__).join(heads, true())
    # SQLite has no LATERAL; it runs this correlated IN once per tenant, then looks each id up
    j = Job.__table__.alias("head")
    first = select(j.c.id).where(j.c.status == JobState.QUEUED, j.c.tenant_id == _TENANTS.id) \
        .order_by(j.c.priority.desc(), j.c.created_at, j.c.id).limit(_DEPTH).correlate(Tenant.__table__)
    return select(*_HEAD_COLS).select_from(Tenant.__table__).join(Job.__table__, _JOBS.id.in_(first))


_HEADS = {"postgresql": _heads_query("postgresql"), "sqlite": _heads_query("sqlite")}
_TENANT_QUEUE = select(*_HEAD_COLS).where(_QUEUED, _JOBS.tenant_id == bindparam("tenant")) \
    .order_by(_JOBS.priority.desc(), _JOBS.created_at, _JOBS.id).limit(_DEPTH)


def queue_heads(s: Session, depth: int, tenant: str | None = None) -> tuple[list[QueuedJob], dict[str, str | None]]:
    """The first ``depth`` queued jobs of each tenant (or of ``tenant``) in the queue's order, and each
    one's current ``queue_reason``: per tenant one range read of ix_jobs_queue, whatever the queue's length."""
    c = s.connection()
    if tenant is None:
        rows = c.execute(_HEADS.get(c.dialect.name, _HEADS["sqlite"]), {"depth": depth}).all()
    else:
        rows = c.execute(_TENANT_QUEUE, {"depth": depth, "tenant": tenant}).all()
    demand = demands(s, [row[0] for row in rows])
    heads = [QueuedJob(job_id, owner, demand[job_id], priority, created_at)
             for job_id, owner, priority, created_at, _ in rows if job_id in demand]  # not deleted meanwhile
    return heads, {row[0]: row[-1] for row in rows}


def _plan_over_heads(s: Session, states: dict[str, TenantState], free: Demand, reachable: Demand,
                     pool: TenantPool = EVERY_TENANT) -> tuple[Plan, dict[str, str | None]]:
    """The plan over the queue heads of each tenant in ``pool``. When a tenant starts all of its heads
    (``Plan.cut``), read 8 times deeper into its queue and plan again: the plan is the one over the whole queue."""
    heads, reasons = queue_heads(s, HEAD_DEPTH)
    queues: dict[str, list[QueuedJob]] = {}
    for job in heads:
        if job.tenant in pool:
            queues.setdefault(job.tenant, []).append(job)
    reasons = {job.id: reasons[job.id] for q in queues.values() for job in q}
    depth = dict.fromkeys(queues, HEAD_DEPTH)
    while True:
        truncated = {t for t, q in queues.items() if len(q) >= depth[t]}
        plan = plan_dispatch(states, [j for q in queues.values() for j in q], free, reachable, truncated)
        if plan.cut is None:
            return plan, reasons
        depth[plan.cut] *= 8
        queues[plan.cut], more = queue_heads(s, depth[plan.cut], plan.cut)
        reasons.update(more)


def _claim(s: Session, start: list[str]) -> list[Job]:
    jobs = {j.id: j for j in s.execute(select(Job).where(Job.id.in_(start))).scalars()} if start else {}
    claimed = []
    for job_id in start:
        job = jobs[job_id]
        # compare-and-set: a job cancelled or paused since it was read is not started
        if set_job_status(s, job, JobState.STARTING, reason="dispatched: quota and cluster room allow it",
                          allowed_from=(JobState.QUEUED,),
                          progress={**(job.progress or {}), "worker_pids": {}}) is not None:  # earlier workers are gone
            claimed.append(job)
    return claimed


def _write_reasons(s: Session, current: dict[str, str | None], waiting: dict[str, str]) -> bool:
    """Write ``queue_reason`` (and phase 'queued') into the progress of each waiting job whose reason
    changed; whether any had."""
    changed = {job_id: why for job_id, why in waiting.items() if current.get(job_id) != why}
    if not changed:
        return False
    # by id alone: with "AND status = 'queued'" SQLite would walk every queued job's index entry instead
    rows = [(job_id, prog) for some in _chunks(list(changed)) for job_id, status, prog in s.connection().execute(
        select(_JOBS.id, _JOBS.status, _JOBS.progress).where(_JOBS.id.in_(some))) if status == JobState.QUEUED]
    if rows:  # one statement, many rows; a job claimed or cancelled since it was read is left alone
        s.connection().execute(
            Job.__table__.update().where(_JOBS.id == bindparam("job_id"), _QUEUED)
            .values(progress=bindparam("new_progress")),
            [{"job_id": job_id, "new_progress": {**(prog or {}), "phase": "queued", "queue_reason": changed[job_id]}}
             for job_id, prog in rows])
    return bool(rows)


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


def cluster_pools(p: Platform) -> dict[str | None, TenantPool]:
    """The tenant pool of each Ray cluster: None the shared one, else a dedicated cluster's id."""
    from doctune.store.db import RayCluster

    with p.db.session() as s:
        rows = s.execute(select(RayCluster.id, RayCluster.tenant_id).where(RayCluster.retired_at.is_(None))).all()
    dedicated: dict[str, set[str]] = {}
    for cluster_id, tenant in rows:
        dedicated.setdefault(cluster_id, set()).add(tenant)
    pools: dict[str | None, TenantPool] = {None: TenantPool(frozenset(t for _, t in rows), shared=True)}
    pools.update({cid: TenantPool(frozenset(ts), shared=False) for cid, ts in dedicated.items()})
    return pools


def dispatch_once(p: Platform) -> list[str]:
    """One dispatch tick: for each Ray cluster, start what its tenants' quotas and its free resources allow."""
    with p.db.session() as s:  # nothing queued: leave Ray's dashboard (and the CPU) alone
        if s.execute(select(Job.id).where(Job.status == JobState.QUEUED).limit(1)).first() is None:
            return []
    started: list[str] = []
    for cluster_id, pool in cluster_pools(p).items():
        try:
            res = p.runner_on(cluster_id).resources()
        except Exception as exc:
            log.warning("cannot read the free resources of %s, not dispatching there: %s",
                        cluster_id or "the shared cluster", exc)
            continue
        claimed = claim_jobs(p, Demand(res.cpus_free, res.gpus_free), pool)
        for job in claimed:
            submit_claimed(p, job)
        started += [j.id for j in claimed]
    return started


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
