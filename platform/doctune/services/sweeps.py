"""Sweeps: a JobSpec searched over with Ray Tune; every trial is a job of the tenant.

``submit_sweep`` checks the spec against stored state the way a job is checked
(tenant, dataset, base model, language, the ranking metric), records the sweep and
submits its driver (``python -m ray_jobs.sweep``) to the Ray Jobs API of the tenant's cluster
(its dedicated one, else the shared one). The driver (:mod:`doctune.drivers.sweep`) runs the
trials and records them through :mod:`doctune.services.sweep_ledger`; this module ranks them.

Leaderboards rank trials (or, per tenant and task, every finished job) by their dev
metric; the winner is the best by that metric, ties broken by lower cost (worker
CPU-seconds, a GPU-second counted as 8).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.jobs import update_job
from doctune.services.scheduler import GPU_WEIGHT
from doctune.services.tasks import known_task
from doctune.services.tenants import DEFAULT_PAGE_SIZE, RowPage, check_tenant_access, get_owned, list_owned
from doctune.spec import JobSpec, SweepSpec, set_path
from doctune.states import AttemptState, JobState, SweepState
from doctune.store.db import Job, Sweep, Tenant, new_id, now, take_quota_lock

log = logging.getLogger("doctune.sweeps")
TERMINAL = SweepState.terminal()


def trial_spec(sweep: SweepSpec, overrides: dict[str, Any]) -> JobSpec:
    """The JobSpec of one trial: the sweep's job with ``overrides`` (dotted paths) set."""
    data = {**sweep.job, "tenant": sweep.tenant}
    for path, value in overrides.items():
        data = set_path(data, path, value)
    return JobSpec.model_validate(data)


def sweep_metric(sweep: SweepSpec) -> str:
    from doctune.tasks import get_task

    return sweep.metric or get_task(sweep.job["task"]).primary_metric


def _check_base_models(p: Platform, caller: Principal, sweep: SweepSpec) -> None:
    """Every base model a trial may train on is one the sweep's tenant may use, not only the first."""
    from doctune.base_models import check_base_model_allowed

    dim = sweep.search_space.get("base_model")
    for name in (getattr(dim, "values", None) or []) if dim is not None else []:
        if isinstance(name, str):
            check_base_model_allowed(name, tenant=sweep.tenant, admin=caller.is_admin, bucket=p.settings.bucket)


def submit_sweep(p: Platform, caller: Principal, sweep: SweepSpec) -> Sweep:
    from doctune.services.jobs import check_language, check_spec
    from doctune.tasks import check_metric, get_task

    from doctune.services.tenants import get_tenant

    check_tenant_access(caller, sweep.tenant, write=True)
    tenant = get_tenant(p, sweep.tenant)
    if tenant is None:
        raise DoctuneError(f"tenant {sweep.tenant!r} does not exist; create it first", "not_found", field="tenant")
    check_trial_quota(sweep, tenant.max_trials)  # up front: before the dataset is read
    with p.db.session() as s:
        check_sweep_concurrency(s, tenant)  # again under the lock below, where it decides
    _check_base_models(p, caller, sweep)
    first = {path: (d.values[0] if d.type == "choice" else d.low) for path, d in sweep.search_space.items()}
    job = trial_spec(sweep, first)
    ds = check_spec(p, caller, job)
    check_language(p, job, ds)  # dataset, base model, task, language: as for a job
    check_metric(get_task(job.task), sweep_metric(sweep), "metric")
    stored = sweep.model_dump(mode="json")
    if isinstance(stored["job"].get("dataset"), dict) and stored["job"]["dataset"].get("version") is None:
        stored["job"]["dataset"]["version"] = ds.version or 1  # every trial trains on the same version
    row = Sweep(id=new_id("sweep"), tenant_id=sweep.tenant, task=job.task, spec=stored,
                ray_cluster_id=p.cluster_for(sweep.tenant))  # its driver (and so its trials) runs there
    with p.db.session() as s:
        take_quota_lock(s)  # count and insert under the lock: racing submits cannot both pass the quota
        tenant = s.get(Tenant, sweep.tenant)
        check_trial_quota(sweep, tenant.max_trials)
        check_sweep_concurrency(s, tenant)
        s.add(row)
    runner = p.runner_on(row.ray_cluster_id)
    try:
        sid = runner.submit("ray_jobs.sweep", ["--sweep-id", row.id], submission_id=row.id)
    except Exception as exc:
        if _cluster_has_driver(runner, row.id):  # the reconciler, seeing it stored, submitted it first
            return _record_submission(p, row, row.id)
        update_sweep(p, row.id, status=SweepState.FAILED,
                     error={"code": "unavailable", "message": f"the cluster refused the sweep: {exc}"[:2000]})
        raise DoctuneError(f"the cluster refused the sweep: {exc}", "unavailable") from None
    return _record_submission(p, row, sid)


def _cluster_has_driver(runner: Any, submission_id: str) -> bool:
    try:
        return runner.status(submission_id).state != AttemptState.UNKNOWN
    except Exception:
        return False


def _record_submission(p: Platform, row: Sweep, sid: str) -> Sweep:
    """The sweep as submitted. Once it is stored and its driver submitted, a busy database must not fail the
    request: the client's retry of that failure (its Idempotency-Key is dropped with a failed answer) would
    create a second sweep. Left unrecorded, the submission is adopted by the reconciler
    (:func:`reconcile_sweep`: the cluster already has a driver of that id)."""
    try:
        return update_sweep(p, row.id, ray_submission_id=sid)
    except OperationalError as exc:
        logging.getLogger("doctune.sweeps").warning("sweep %s submitted; its submission id is left to the "
                                                    "reconciler: %s", row.id, exc)
        return row


def check_trial_quota(sweep: SweepSpec, max_trials: int | None) -> None:
    """Refuse, before anything runs, a sweep with more trials than its tenant's ``max_trials``."""
    n = sweep.trial_count()
    if max_trials is None or n <= max_trials:
        return
    if sweep.algorithm == "grid":
        raise DoctuneError(
            f"this grid has {n} combinations, over tenant {sweep.tenant}'s max_trials quota of {max_trials}; "
            "give fewer values per field, use algorithm: random with num_samples, or ask an admin to raise max_trials",
            "invalid_spec", field="search_space", tenant_error=True)
    raise DoctuneError(f"num_samples is {n}, over tenant {sweep.tenant}'s max_trials quota of {max_trials}; "
                       f"use at most {max_trials}, or ask an admin to raise max_trials",
                       "invalid_spec", field="num_samples", tenant_error=True)


def check_sweep_concurrency(s: Session, tenant: Tenant) -> None:
    """Unfinished sweeps count against the tenant's concurrent-job quota: each needs a job slot for its
    trials (which count as jobs while they run), so a tenant runs at most max_concurrent_jobs sweeps."""
    limit = tenant.max_concurrent_jobs
    if limit is None:
        return
    unfinished = s.execute(select(func.count()).select_from(Sweep).where(
        Sweep.tenant_id == tenant.id, Sweep.status.not_in(TERMINAL))).scalar_one()
    if unfinished >= limit:
        raise DoctuneError(
            f"tenant {tenant.id} has {unfinished} unfinished sweep(s) and its concurrent-job quota is {limit}; wait "
            "for one to finish, cancel one (doctune sweeps cancel ID), or ask an admin to raise max_concurrent_jobs",
            "quota_exceeded", field="max_concurrent_jobs", tenant_error=True)


def cancel_sweep(p: Platform, caller: Principal, sweep_id: str) -> Sweep:
    """Cancel a sweep and every trial of it that has not ended. The states change first (each a
    compare-and-set: a trial that succeeded meanwhile keeps its model); running trials see their
    cancel at their next progress report and stop, and the sweep's driver is stopped on the cluster."""
    row = get_sweep(p, caller, sweep_id)
    check_tenant_access(caller, row.tenant_id, write=True)
    if row.status in TERMINAL:
        raise DoctuneError(f"sweep {sweep_id} already {row.status}", "conflict")
    row = update_sweep(p, sweep_id, status=SweepState.CANCELLED)
    if row.status != SweepState.CANCELLED:
        raise DoctuneError(f"sweep {sweep_id} {row.status} before the cancel arrived; nothing was cancelled", "conflict")
    for job in trials(p, sweep_id):
        if job.status not in JobState.terminal():
            update_job(p, job.id, status=JobState.CANCELLED, reason=f"its sweep was cancelled by {caller.key_id}")
    runner = p.runner_on(row.ray_cluster_id)
    # its driver's id is the sweep's: one submitted but not yet recorded (left to the reconciler) is stopped too
    if row.ray_submission_id or _cluster_has_driver(runner, row.id):
        try:
            runner.stop(row.ray_submission_id or row.id)
        except Exception as exc:  # its trials stop themselves; the driver starts no new one
            log.warning("sweep %s is cancelled, but stopping its driver failed: %s", sweep_id, exc)
    return row


def update_sweep(p: Platform, sweep_id: str, **fields: Any) -> Sweep:
    """Change a sweep's record. A status change is a compare-and-set against the state it was read
    in, and a sweep that has ended keeps its state: a driver finishing late cannot undo a cancel."""
    for _ in range(50):
        with p.db.session() as s:
            row = s.get(Sweep, sweep_id)
            new_status = fields.get("status")
            if new_status is None or new_status == row.status:
                for k, v in fields.items():
                    setattr(row, k, v)
                return row
            if row.status in TERMINAL:
                return row
            values = {**fields, **({"finished_at": now()} if new_status in TERMINAL else {})}
            done = s.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == row.status).values(**values)
                             .execution_options(synchronize_session=False)).rowcount
            if done == 1:
                for k, v in values.items():
                    set_committed_value(row, k, v)
                return row
    raise DoctuneError(f"sweep {sweep_id} kept changing state; try again", "conflict")


def get_sweep(p: Platform, caller: Principal, sweep_id: str) -> Sweep:
    return get_owned(p, caller, Sweep, sweep_id, "sweep", "sweep_id")


def list_sweeps(p: Platform, caller: Principal, *, state: SweepState | None = None, task: str | None = None,
                limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> RowPage[Sweep]:
    return list_owned(p, caller, Sweep, limit=limit, cursor=cursor, status=state, task=known_task(task))


def trials(p: Platform, sweep_id: str) -> list[Job]:
    with p.db.session() as s:
        return list(s.execute(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.created_at)).scalars())


def job_cost(job: Job) -> float:
    """Worker CPU-seconds, a GPU-second counting as GPU_WEIGHT of them (what ties are broken on)."""
    usage = (job.metrics or {}).get("usage") or {}
    return float(usage.get("worker_cpu_seconds", 0.0)) + GPU_WEIGHT * float(usage.get("worker_gpu_seconds", 0.0))


def dev_value(job: Job, metric: str, mode: str) -> float | None:
    """The job's dev metric: its final dev evaluation, else (a trial stopped early) its best one."""
    m = job.metrics or {}
    if isinstance((m.get("dev") or {}).get(metric), (int, float)):
        return float(m["dev"][metric])
    seen = [h[metric] for h in (job.progress or {}).get("history") or [] if isinstance(h.get(metric), (int, float))]
    if not seen:
        return None
    return max(seen) if mode == "max" else min(seen)


def get_path(data: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


SETTINGS = ("base_model", "tuning.method", "learning_rate", "micro_batch_size", "max_steps", "epochs")


def rank(jobs: list[Job], metric: str, mode: str, paths: tuple[str, ...] = SETTINGS) -> list[dict[str, Any]]:
    """Leaderboard rows, best first: jobs with a dev metric by it (ties: lower cost), then the rest.
    ``settings`` shows each job's values at ``paths`` (a sweep: its search-space fields)."""
    rows = []
    for job in jobs:
        value = dev_value(job, metric, mode)
        test = ((job.metrics or {}).get("test") or {}).get(metric)
        rows.append({
            "job_id": job.id, "sweep_id": job.sweep_id, "status": job.status, "model_id": job.model_id,
            "settings": {path: get_path(job.spec, path) for path in paths},
            "dev": value, "test": test if isinstance(test, (int, float)) else None,
            "cost_cpu_seconds": round(job_cost(job), 1), "steps": (job.metrics or {}).get("step") or (job.progress or {}).get("step"),
            "stopped_early": (job.error or {}).get("code") == "stopped_early",
        })
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda r: (r["dev"] is None, sign * (r["dev"] or 0.0), r["cost_cpu_seconds"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def winner(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best finished trial (a model exists), by the metric, ties broken by lower cost."""
    done = [r for r in rows if r["status"] == JobState.SUCCEEDED and r["dev"] is not None and r["model_id"]]
    return done[0] if done else None


def sweep_leaderboard(p: Platform, caller: Principal, sweep_id: str) -> dict[str, Any]:
    row = get_sweep(p, caller, sweep_id)
    spec = SweepSpec.model_validate(row.spec)
    metric = sweep_metric(spec)
    ranked = rank(trials(p, sweep_id), metric, spec.mode, tuple(spec.search_space))
    return {"sweep_id": sweep_id, "metric": f"dev {metric}", "mode": spec.mode, "status": row.status,
            "best_job_id": row.best_job_id, "trials": ranked}


def tenant_leaderboard(p: Platform, caller: Principal, tenant: str, task: str | None = None, metric: str | None = None,
                       limit: int = 20) -> dict[str, Any]:
    """A tenant's finished jobs (single jobs and sweep trials) ranked on dev: one board per task
    (``task``: only that one), on ``metric`` or each task's primary metric."""
    from doctune.tasks import check_metric, get_task, metric_mode

    check_tenant_access(caller, tenant)
    with p.db.session() as s:
        done = list(s.execute(select(Job).where(Job.tenant_id == tenant, Job.status == JobState.SUCCEEDED)).scalars())
    tasks = [task] if task else sorted({j.task for j in done})
    boards = []
    for name in tasks:
        plugin = get_task(name)
        m = metric or plugin.primary_metric
        check_metric(plugin, m, "metric", "invalid_request")
        mode = metric_mode(m)
        ranked = rank([j for j in done if j.task == name], m, mode)[:limit]
        boards.append({"task": name, "metric": f"dev {m}", "mode": mode, "jobs": ranked})
    return {"tenant": tenant, "boards": boards}


# ------------------------------------------------------------------ reconcile with the cluster
def reconcile_sweeps(p: Platform, grace_s: float | None = None) -> int:
    """Every unfinished sweep against its driver on the cluster, then every unfinished trial against
    its sweep (a trial has no driver of its own: it runs inside its sweep's). Run at API start and
    every few seconds by :class:`doctune.services.reconcile.Reconciler`. Returns how many changed."""
    import logging

    grace = p.settings.reconcile_grace_s if grace_s is None else grace_s
    with p.db.session() as s:
        open_sweeps = list(s.execute(select(Sweep).where(Sweep.status.not_in(TERMINAL))).scalars())
    changed = 0
    for row in open_sweeps:
        try:
            changed += reconcile_sweep(p, row, grace).status != row.status
        except Exception as exc:
            logging.getLogger("doctune.sweeps").warning("could not reconcile sweep %s: %s", row.id, exc)
    return changed + settle_orphan_trials(p)


def reconcile_sweep(p: Platform, row: Sweep, grace_s: float) -> Sweep:
    """A sweep recorded but never handed to the cluster is submitted (or, if the cluster has its
    driver, adopted); one whose driver was stopped is cancelled; one whose driver died or was
    forgotten by the cluster (a Ray head restart) is failed with that reason."""
    from doctune.services.jobs import seconds_since

    sid = row.ray_submission_id
    if not sid:
        if seconds_since(row.created_at) < grace_s:
            return row
        runner = p.runner_on(row.ray_cluster_id)
        try:
            known = runner.status(row.id).state != AttemptState.UNKNOWN
            sid = row.id if known else runner.submit("ray_jobs.sweep", ["--sweep-id", row.id], submission_id=row.id)
        except Exception:
            return row  # the cluster does not answer: next round
        return update_sweep(p, row.id, ray_submission_id=sid)
    try:
        run = p.runner_on(row.ray_cluster_id).status(sid)
    except Exception:
        return row
    with p.db.session() as s:
        fresh = s.get(Sweep, row.id)  # the driver may have just written its outcome
    if fresh.status in TERMINAL or run.state in (AttemptState.PENDING, AttemptState.RUNNING):
        return fresh
    if run.state == AttemptState.STOPPED:
        return update_sweep(p, row.id, status=SweepState.CANCELLED,
                            error={"code": "cancelled", "message": f"the sweep's driver {sid} was stopped on the cluster"})
    if run.state == AttemptState.UNKNOWN:
        why = f"the Ray cluster no longer knows the sweep's driver {sid} (its head was restarted)"
    else:
        why = f"the sweep's driver {sid} ended without recording an outcome: {(run.message or 'no message')[:1000]}"
    return update_sweep(p, row.id, status=SweepState.FAILED, error={"code": "driver_lost", "message": why})


def settle_orphan_trials(p: Platform) -> int:
    """Trials still unfinished although their sweep has ended (its driver died with them running):
    cancelled with a cancelled sweep, else failed, each with the reason. Returns how many."""
    from doctune.services.jobs import update_job

    with p.db.session() as s:
        rows = list(s.execute(select(Job, Sweep.status).join(Sweep, Job.sweep_id == Sweep.id).where(
            Job.status.not_in(JobState.terminal()), Sweep.status.in_(TERMINAL))).all())
    for job, sweep_status in rows:
        why = f"its sweep {job.sweep_id} ended ({sweep_status}) while this trial was {job.status}"
        if sweep_status == SweepState.CANCELLED:
            update_job(p, job.id, status=JobState.CANCELLED, reason=why)
        else:
            update_job(p, job.id, status=JobState.FAILED, error={"code": "driver_lost", "message": why}, reason=why)
    return len(rows)
