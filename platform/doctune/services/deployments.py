"""Deployments: put a registered model behind an autoscaled Ray Serve endpoint.

:func:`deploy_model` records the deployment and has the runner start its Serve
application (on a Ray cluster the deploy driver, ``python -m ray_jobs.deploy``, runs
``serve.run`` there: the API process never holds a Ray driver). The route is ``/<tenant>/<name>``. A
deployment with ``quantize: int8`` is refused here when its task's accuracy
change cannot be measured; the deploy job measures it and stores it with
:func:`set_info`.

Every deploy appends a revision (model, settings, reason). :func:`promote` is
champion/challenger: a model, or a sweep's winner, replaces the one served at an
endpoint only if its test metric is better on the same dataset (or if forced);
:func:`rollback` redeploys an earlier revision as a new one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from doctune.errors import DoctuneError
from doctune.serve.names import app_name
from doctune.services import Platform, Principal
from doctune.services.registry import get_model
from doctune.services.tasks import known_task
from doctune.services.tenants import DEFAULT_PAGE_SIZE, RowPage, check_tenant_access, get_owned, list_owned
from doctune.spec import DeploymentSpec, PromotionSpec
from doctune.states import DeploymentState, SweepState
from doctune.store.db import (DatasetVersion, Deployment, DeploymentRevision, Job, Model, Tenant, new_id,
                              take_quota_lock)
from doctune.tasks import check_can_serve, get_task, metric_mode


ANY_REVISION = -1


def deploy_model(p: Platform, caller: Principal, spec: DeploymentSpec, *, reason: str = "deploy",
                 decision: dict[str, Any] | None = None, expected_revision: int | None = ANY_REVISION) -> Deployment:
    """Record the deployment and its new revision, then have Ray serve it."""
    row = record_deployment(p, caller, spec, reason=reason, decision=decision, expected_revision=expected_revision)
    _submit_deploy(p, row.id)
    return row


def record_deployment(p: Platform, caller: Principal, spec: DeploymentSpec, *, reason: str = "deploy",
                      decision: dict[str, Any] | None = None,
                      expected_revision: int | None = ANY_REVISION) -> Deployment:
    """The checks, the deployment row (status ``deploying``) and its next revision; nothing
    runs on Ray until :func:`_submit_deploy`. ``expected_revision``: what a decision was made
    against (None: no deployment of that name); anything else recorded meanwhile is a 409."""
    check_tenant_access(caller, spec.tenant, write=True)
    model = get_model(p, caller, spec.model_id)
    if model.tenant_id != spec.tenant:
        raise DoctuneError(f"model {spec.model_id!r} not found", "not_found", field="model_id")
    check_can_serve(get_task(model.task), multiplex=spec.multiplex, quantize=spec.quantize, merged=model.merged)
    if spec.retrain is not None and spec.retrain.metric is not None:
        from doctune.tasks import check_metric

        check_metric(get_task(model.task), spec.retrain.metric, "retrain.metric")
    route = f"/{spec.tenant}/{spec.name}"
    try:
        with p.db.session() as s:
            existing = s.execute(
                select(Deployment).where(Deployment.tenant_id == spec.tenant, Deployment.name == spec.name)
            ).scalar_one_or_none()
            now_at = existing.revision if existing is not None else None
            if expected_revision != ANY_REVISION and now_at != expected_revision:
                raise DoctuneError(
                    f"endpoint {spec.name!r} changed while this was decided (it is now at revision {now_at}); "
                    "nothing changed: run it again to decide against what is served now",
                    "conflict", field="endpoint", tenant_error=True)
            limit = s.get(Tenant, spec.tenant).max_deployments
            if existing is None and limit is not None:
                take_quota_lock(s)  # count and insert under the lock: two racing deploys cannot both pass
                count = s.execute(select(func.count()).select_from(Deployment).where(
                    Deployment.tenant_id == spec.tenant, Deployment.status.not_in(DeploymentState.gone()))).scalar_one()
                if count >= limit:
                    raise DoctuneError(
                        f"tenant {spec.tenant} has {count} deployment(s), its quota is {limit}; "
                        "update an existing one (same name) or ask an admin to raise max_deployments",
                        "quota_exceeded", field="max_deployments")
            if existing is not None:
                row = existing
                if row.model_id != spec.model_id or spec.quantize != "int8":
                    row.info = None  # the int8 measurement belongs to the model it was made on
                row.model_id, row.spec, row.status, row.message = (spec.model_id, spec.model_dump(mode="json"),
                                                                   DeploymentState.DEPLOYING, None)
                row.ray_submission_id = None  # the earlier change's driver; this one's is recorded on submit
            else:
                row = Deployment(
                    id=new_id("dep"), tenant_id=spec.tenant, name=spec.name, model_id=spec.model_id,
                    spec=spec.model_dump(mode="json"), route=route, status=DeploymentState.DEPLOYING,
                )
                s.add(row)
            row.revision = (row.revision or 0) + 1
            s.flush()  # the deployment row first: its revision refers to it
            s.add(DeploymentRevision(deployment_id=row.id, revision=row.revision, model_id=row.model_id, spec=row.spec,
                                     reason=reason, decision=decision))
    except IntegrityError:  # another deploy of this endpoint took the same name or revision at the same moment
        raise DoctuneError(f"another deploy of endpoint {spec.name!r} was recorded at the same moment; this one "
                           "changed nothing: look at the deployment's revisions, then retry if still needed",
                           "conflict", field="name", tenant_error=True) from None
    return row


def _submit_deploy(p: Platform, deployment_id: str) -> None:
    try:
        sid = p.runner.deploy_app(deployment_id)
    except DoctuneError:
        raise
    except Exception as exc:
        set_status(p, deployment_id, DeploymentState.FAILED, f"the cluster did not accept the deployment: {exc}")
        raise DoctuneError(f"the cluster did not accept the deployment: {exc}", "unavailable") from None
    _record_driver(p, deployment_id, sid)


def _record_driver(p: Platform, deployment_id: str, submission_id: str | None) -> None:
    with p.db.session() as s:
        s.get(Deployment, deployment_id).ray_submission_id = submission_id


def reconcile_deployments(p: Platform) -> list[str]:
    """At API start and every few seconds (:class:`doctune.services.reconcile.Reconciler`): redeploy
    every deployment recorded as running whose Serve application is gone (the cluster was restarted),
    so endpoints come back, and settle those stuck in ``deploying`` or ``deleting``
    (:func:`settle_stuck_deployment`). Returns the ids of the deployments redeployed."""
    with p.db.session() as s:  # first: a deployment recorded running had its application before this
        rows = list(s.execute(select(Deployment).where(Deployment.status.in_(
            (DeploymentState.RUNNING, DeploymentState.DEPLOYING, DeploymentState.DELETING)))).scalars())
    apps = p.runner.applications()
    restored = []
    for row in rows:
        if row.status == DeploymentState.RUNNING and app_name(row) not in apps:
            set_status(p, row.id, DeploymentState.DEPLOYING, "restoring: its Serve application was gone (cluster restart)",
                       driver=None)
            _submit_deploy(p, row.id)
            restored.append(row.id)
        elif row.status != DeploymentState.RUNNING and settle_stuck_deployment(p, row, apps) == "redeployed":
            restored.append(row.id)
    return restored


_first_seen_without_driver: dict[tuple[str, str, int], float] = {}
_resubmitted: dict[tuple[str, str, int], int] = {}
MAX_RESUBMITS = 3


def settle_stuck_deployment(p: Platform, row: Deployment, apps: dict[str, Any]) -> str:
    """A deployment in ``deploying`` or ``deleting`` whose driver ended without recording the outcome,
    or was lost with the Ray head (or was never recorded, for longer than the grace period): settled
    from what Serve runs. Deploying: the application runs → ``running``; it failed → ``failed``;
    it is gone → deployed again (at most MAX_RESUBMITS times, then ``failed``). Deleting: the
    application is gone → ``deleted``; it still runs → deleted again. Returns what it did."""
    import time

    from doctune.states import AttemptState

    key = (row.id, row.status, row.revision)
    if row.ray_submission_id:
        try:
            if p.runner.status(row.ray_submission_id).state in (AttemptState.PENDING, AttemptState.RUNNING):
                return "waiting"  # its driver is still at work
        except Exception:
            return "waiting"  # the cluster does not answer: next round
    elif time.monotonic() - _first_seen_without_driver.setdefault(key, time.monotonic()) < p.settings.reconcile_grace_s:
        return "waiting"  # the request may be recording its driver right now
    with p.db.session() as s:  # the driver may have just recorded the outcome
        if s.get(Deployment, row.id).status != row.status:
            return "settled"
    app = apps.get(app_name(row))
    state = (app or {}).get("status")
    if row.status == DeploymentState.DELETING:
        if app is None:
            set_status(p, row.id, DeploymentState.DELETED, "undeployed (settled by the reconciler: the Serve "
                                                           "application is gone; its undeploy driver never reported)")
            return "settled"
        return _resubmit(p, row, key, "delete")
    if state == "RUNNING":
        set_status(p, row.id, DeploymentState.RUNNING, f"serving model {row.model_id} at {row.route} (settled by the "
                                                       "reconciler: its deploy driver never reported)")
        return "settled"
    if state in ("DEPLOY_FAILED", "UNHEALTHY"):
        set_status(p, row.id, DeploymentState.FAILED, f"Serve reports {state}: {(app or {}).get('message') or ''}"[:2000])
        return "settled"
    if app is not None:
        return "waiting"  # Serve is still starting it
    return _resubmit(p, row, key, "deploy")


def _resubmit(p: Platform, row: Deployment, key: tuple[str, str, int], what: str) -> str:
    _resubmitted[key] = _resubmitted.get(key, 0) + 1
    if _resubmitted[key] > MAX_RESUBMITS:
        set_status(p, row.id, DeploymentState.FAILED, f"its {what} driver ended {MAX_RESUBMITS} times without "
                   "recording an outcome; see the deploy driver's log, then deploy again")
        return "failed"
    try:
        sid = p.runner.deploy_app(row.id) if what == "deploy" else p.runner.delete_app(row.id)
    except Exception:
        return "waiting"
    _record_driver(p, row.id, sid)
    _first_seen_without_driver.pop(key, None)
    return "redeployed" if what == "deploy" else "deleting"


KEEP = object()


def set_status(p: Platform, deployment_id: str, status: str, message: str | None = None, *,
               driver: str | None | object = KEEP) -> None:
    """``driver``: the submission id of the driver doing the change now (None: none yet)."""
    with p.db.session() as s:
        row = s.get(Deployment, deployment_id)
        row.status, row.message = status, message
        if driver is not KEEP:
            row.ray_submission_id = driver


def set_info(p: Platform, deployment_id: str, info: dict | None) -> None:
    """What the deploy job measured (e.g. ``{"quantization": {...}}``), shown by the API."""
    with p.db.session() as s:
        s.get(Deployment, deployment_id).info = info


def delete_deployment(p: Platform, caller: Principal, deployment_id: str) -> Deployment:
    """Undeploy: the Serve application goes (a Ray job runs ``serve.delete``); the record and
    the model stay. The deployment reads ``deleting``, then ``deleted``; deploying the same
    name again brings it back."""
    dep = get_deployment(p, caller, deployment_id)
    check_tenant_access(caller, dep.tenant_id, write=True)
    if dep.status in (DeploymentState.DELETED, DeploymentState.DELETING):
        return dep
    set_status(p, dep.id, DeploymentState.DELETING, "undeploy requested", driver=None)
    try:
        sid = p.runner.delete_app(dep.id)
    except Exception as exc:
        set_status(p, dep.id, dep.status, dep.message, driver=dep.ray_submission_id)
        raise DoctuneError(f"the cluster did not accept the undeploy: {exc}", "unavailable") from None
    _record_driver(p, dep.id, sid)
    return get_deployment(p, caller, deployment_id)


def get_deployment(p: Platform, caller: Principal, deployment_id: str) -> Deployment:
    return get_owned(p, caller, Deployment, deployment_id, "deployment", "deployment_id")


def list_deployments(p: Platform, caller: Principal, *, state: DeploymentState | None = None, task: str | None = None,
                     limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> RowPage[Deployment]:
    """A page of the caller's deployments, newest first; ``task``: those serving a model of that task."""
    where = [Deployment.model_id.in_(select(Model.id).where(Model.task == task))] if known_task(task) else []
    return list_owned(p, caller, Deployment, limit=limit, cursor=cursor, where=where, status=state)


# ------------------------------------------------------------------ revisions, promotion, rollback
MAX_REVISIONS_PAGE = 1000


def revisions(p: Platform, caller: Principal, deployment_id: str, *, after: int = 0,
              limit: int = MAX_REVISIONS_PAGE) -> list[DeploymentRevision]:
    """A page of a deployment's revisions, oldest first: those numbered above ``after``, at most ``limit``."""
    if not 1 <= limit <= MAX_REVISIONS_PAGE:
        raise DoctuneError(f"limit must be 1..{MAX_REVISIONS_PAGE}; got {limit}", "invalid_request", field="limit")
    dep = get_deployment(p, caller, deployment_id)
    with p.db.session() as s:
        return list(s.execute(select(DeploymentRevision).where(DeploymentRevision.deployment_id == dep.id,
                                                               DeploymentRevision.revision > after)
                              .order_by(DeploymentRevision.revision).limit(limit)).scalars())


def decide(champion: dict[str, Any] | None, challenger: dict[str, Any], metric: str, force: bool = False,
           comparable: bool = True) -> str:
    """The promotion decision from two ``{"model_id", "test"}`` (``test``: the model's test
    ``metric``, None when it has none; ``champion`` None when nothing is served; ``comparable``
    False when the two were tested on different datasets):

    "deployed" (no champion), "unchanged" (the challenger is the champion), "promoted"
    (strictly better: higher, lower for loss and perplexity), "forced" (not better, or not
    comparable, but ``force``), "kept" (not better: nothing changes)."""
    if champion is None:
        return "deployed"
    if champion["model_id"] == challenger["model_id"]:
        return "unchanged"
    new, old = challenger.get("test"), champion.get("test")
    if comparable and new is not None and old is not None and (new < old if metric_mode(metric) == "min" else new > old):
        return "promoted"
    return "forced" if force else "kept"


def plan_promotion(p: Platform, caller: Principal, spec: PromotionSpec) -> dict[str, Any]:
    """Everything :func:`promote` decides, read from the store; nothing changes and nothing is
    submitted. ``deploy`` is the DeploymentSpec to deploy when the decision replaces the model."""
    from doctune.tasks import check_metric, get_task

    check_tenant_access(caller, spec.tenant, write=True)
    field = "model_id" if spec.model_id else "sweep_id"
    model, job = _challenger(p, caller, spec)
    plugin = get_task(model.task)
    metric = spec.metric or plugin.primary_metric
    check_metric(plugin, metric, "metric")
    challenger = {"model_id": model.id, "test": _test_value(model, job, metric), "job_id": job.id if job else None,
                  "sweep_id": job.sweep_id if job else None}
    with p.db.session() as s:
        dep = s.execute(select(Deployment).where(Deployment.tenant_id == spec.tenant,
                                                 Deployment.name == spec.endpoint)).scalar_one_or_none()
        live = dep is not None and dep.status not in DeploymentState.gone()
        champ_model = s.get(Model, dep.model_id) if live else None
        champ_job = s.get(Job, champ_model.job_id) if champ_model else None
    if dep is not None and dep.status == DeploymentState.DELETING:
        raise DoctuneError(f"endpoint {spec.endpoint!r} is being deleted; wait until it reads 'deleted', then promote "
                           "again (the endpoint is then deployed afresh)", "conflict", field="endpoint", tenant_error=True)
    champion, refusal = None, None
    if live:
        champion = {"model_id": dep.model_id, "test": _test_value(champ_model, champ_job, metric)}
        if champion["model_id"] != model.id:
            refusal = _incomparable(p, job, champ_job, challenger, champion, metric, field)
            if refusal is not None and not spec.force:
                raise refusal
    decision = decide(champion, challenger, metric, spec.force, comparable=refusal is None)
    result: dict[str, Any] = {"decision": decision, "metric": metric, "champion": champion, "challenger": challenger,
                              "endpoint": spec.endpoint, "test_split": challenger.pop("test_split", None)}
    result["summary"] = promotion_summary(result)
    if decision in ("deployed", "promoted", "forced"):
        if live:
            base = _known_fields(dep.spec)
        else:  # a deleted or failed endpoint comes back with its old settings, unless the promotion gives others
            base = {**_known_fields(dep.spec if dep else None), **(spec.deployment or {})}
        result["deploy"] = DeploymentSpec.model_validate(
            {**base, "tenant": spec.tenant, "name": spec.endpoint, "model_id": model.id})
    result["deployment"] = dep
    result["expected_revision"] = dep.revision if dep is not None else None  # what the decision was made against
    return result


def promote(p: Platform, caller: Principal, spec: PromotionSpec) -> dict[str, Any]:
    """Champion/challenger at ``spec.endpoint``: deploy the challenger if nothing is served there,
    replace the served model only if the challenger's test metric is better (or ``force``), and
    otherwise change nothing. Returns {"decision", "metric", "champion", "challenger", "summary",
    "endpoint", "deployment"}; a decision that deploys is stored on the deployment's new revision."""
    plan = plan_promotion(p, caller, spec)
    target, expected = plan.pop("deploy", None), plan.pop("expected_revision")
    if target is not None:
        record = {k: plan[k] for k in ("decision", "metric", "champion", "challenger")} | {"force": spec.force}
        if plan.get("test_split"):
            record["test_split"] = plan["test_split"]
        plan["deployment"] = deploy_model(p, caller, target, reason=plan["summary"], decision=record,
                                          expected_revision=expected)
    return plan


def plan_rollback(p: Platform, caller: Principal, deployment_id: str, revision: Any = None) -> tuple[DeploymentSpec, str]:
    """The DeploymentSpec and reason that :func:`rollback` deploys: revision ``revision`` of the
    deployment, or (None) the one before the current one."""
    dep = get_deployment(p, caller, deployment_id)
    check_tenant_access(caller, dep.tenant_id, write=True)
    if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int) or revision < 1):
        raise DoctuneError(f"revision must be a revision number (1, 2, ...); got {revision!r}. "
                           f"List them with `doctune revisions {dep.id}`", "invalid_request", field="revision")
    if revision == dep.revision:
        raise DoctuneError(f"revision {revision} is the current revision of deployment {dep.id}; name an earlier one "
                           f"(see `doctune revisions {dep.id}`)", "invalid_request", field="revision")
    with p.db.session() as s:
        q = select(DeploymentRevision).where(DeploymentRevision.deployment_id == dep.id)
        if revision is None:
            q = q.where(DeploymentRevision.revision < dep.revision).order_by(DeploymentRevision.revision.desc()).limit(1)
        else:
            q = q.where(DeploymentRevision.revision == revision)
        target = s.execute(q).scalars().first()
    if target is None and revision is None:
        raise DoctuneError(f"deployment {dep.id} has no revision before its current one ({dep.revision}); there is "
                           "nothing to roll back to", "conflict", field="revision", tenant_error=True)
    if target is None:
        raise DoctuneError(f"deployment {dep.id} has no revision {revision}; its revisions are 1..{dep.revision} "
                           f"(see `doctune revisions {dep.id}`)", "not_found", field="revision")
    # the retrain policy is the endpoint's, not the revision's: a rollback keeps the current one
    spec = DeploymentSpec.model_validate({**_known_fields(target.spec), "retrain": (dep.spec or {}).get("retrain"),
                                          "tenant": dep.tenant_id, "name": dep.name, "model_id": target.model_id})
    return spec, f"rollback to revision {target.revision}"


def rollback(p: Platform, caller: Principal, deployment_id: str, revision: Any = None) -> Deployment:
    """Redeploy an earlier revision (default: the one before the current one) as a new revision,
    so a rollback can itself be rolled back."""
    spec, reason = plan_rollback(p, caller, deployment_id, revision)
    return deploy_model(p, caller, spec, reason=reason)


def promotion_summary(result: dict[str, Any]) -> str:
    """One line: the decision and both test metrics."""
    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"

    new, old, metric, at = result["challenger"], result["champion"], result["metric"], result["endpoint"]
    decision = result["decision"]
    if decision == "deployed":
        return f"deployed: {new['model_id']} (test {metric} {fmt(new['test'])}) is the first model at endpoint {at}"
    if decision == "unchanged":
        return f"unchanged: {new['model_id']} is already served at endpoint {at}"
    if decision == "promoted":
        return (f"promoted: {new['model_id']} (test {metric} {fmt(new['test'])}) beats {old['model_id']} "
                f"({fmt(old['test'])}) at endpoint {at}")
    if decision == "forced":
        return (f"forced: {new['model_id']} (test {metric} {fmt(new['test'])}) replaces {old['model_id']} "
                f"({fmt(old['test'])}) at endpoint {at}: not better, or not comparable, but forced")
    return (f"kept: {old['model_id']} (test {metric} {fmt(old['test'])}) stays at endpoint {at}; {new['model_id']} "
            f"({fmt(new['test'])}) is not better (force promotes it anyway)")


def _challenger(p: Platform, caller: Principal, spec: PromotionSpec) -> tuple[Model, Job | None]:
    from doctune.services.sweeps import get_sweep

    if spec.model_id:
        model = get_model(p, caller, spec.model_id)
        field = "model_id"
    else:
        field = "sweep_id"
        sweep = get_sweep(p, caller, spec.sweep_id)
        if sweep.tenant_id != spec.tenant:
            raise DoctuneError(f"sweep {spec.sweep_id!r} not found", "not_found", field="sweep_id")
        if sweep.status != SweepState.SUCCEEDED or not sweep.best_job_id:
            raise DoctuneError(f"sweep {sweep.id} is {sweep.status}, with no winner to promote; promote it once it has "
                               f"succeeded (`doctune sweeps show {sweep.id}`), or promote one of its models by model_id",
                               "conflict", field="sweep_id", tenant_error=True)
        with p.db.session() as s:
            best = s.get(Job, sweep.best_job_id)
        if best is None or not best.model_id:
            raise DoctuneError(f"sweep {sweep.id}'s winner {sweep.best_job_id} has no registered model; promote another "
                               "trial's model by model_id", "conflict", field="sweep_id", tenant_error=True)
        model = get_model(p, caller, best.model_id)
    if model.tenant_id != spec.tenant:
        raise DoctuneError(f"model {model.id!r} not found", "not_found", field=field)
    with p.db.session() as s:
        return model, s.get(Job, model.job_id)


def _test_value(model: Model | None, job: Job | None, metric: str) -> float | None:
    """The model's test ``metric`` (as registered; else its job's), None when it has none."""
    for metrics in ((model.metrics if model else None), (job.metrics if job else None)):
        value = ((metrics or {}).get("test") or {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _dataset_of(job: Job | None) -> str | None:
    dataset = ((job.spec if job else None) or {}).get("dataset")
    return dataset.get("id") if isinstance(dataset, dict) else None


def _version_of(job: Job | None) -> int:
    """The dataset version a job trained and was tested on (jobs from before versions: 1, the only one)."""
    dataset = ((job.spec if job else None) or {}).get("dataset")
    return int((dataset.get("version") if isinstance(dataset, dict) else None) or 1)


def _test_on_version(job: Job | None, version: int, metric: str) -> float | None:
    """The job's test ``metric`` on an earlier version's test split (``dataset.compare_version``), if measured."""
    value = (((job.metrics if job else None) or {}).get("test_by_version") or {}).get(str(version), {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _same_test_split(p: Platform, dataset_id: str, a: int, b: int) -> bool:
    """Whether two versions of a dataset have one test split: an append only adds records at the end of a
    split, so two versions whose test splits are as long hold the same test records."""
    with p.db.session() as s:
        rows = s.execute(select(DatasetVersion.info).where(DatasetVersion.dataset_id == dataset_id,
                                                           DatasetVersion.version.in_((a, b)))).scalars().all()
    sizes = {((info or {}).get("sizes") or {}).get("test") for info in rows}
    return len(rows) == 2 and len(sizes) == 1


def _incomparable(p: Platform, job: Job | None, champ_job: Job | None, challenger: dict[str, Any],
                  champion: dict[str, Any], metric: str, field: str) -> DoctuneError | None:
    """Why the two test metrics cannot be compared (measured on different test splits, or missing), or None.
    A dataset version's split never changes, and a later version's test split starts with an earlier one's:
    two models tested on different versions are compared on the earlier version's test split when one of
    them measured it (``dataset.compare_version``); ``test`` of both sides is then that measurement."""
    new_ds, old_ds = _dataset_of(job), _dataset_of(champ_job)
    if new_ds is None or new_ds != old_ds:
        return DoctuneError(
            f"model {challenger['model_id']} was tested on dataset {new_ds or 'unknown'} but the endpoint's model {champion['model_id']} "
            f"on dataset {old_ds or 'unknown'}: their test metrics are not comparable. Train the challenger on "
            f"{old_ds or 'the same dataset'}, or set force to promote it anyway",
            "conflict", field=field, tenant_error=True)
    v_new, v_old = _version_of(job), _version_of(champ_job)
    shared = v_old
    if v_new != v_old and not _same_test_split(p, new_ds, v_new, v_old):  # else: one split, compared as it is
        if (value := _test_on_version(job, v_old, metric)) is not None:
            challenger["test"] = value  # the challenger measured the champion's test split too
        elif (value := _test_on_version(champ_job, v_new, metric)) is not None:
            champion["test"], shared = value, v_new
        else:
            return DoctuneError(
                f"model {challenger['model_id']} was tested on version {v_new} of dataset {new_ds}, the endpoint's "
                f"model {champion['model_id']} on version {v_old}: their test splits differ. Train the challenger with "
                f"dataset.compare_version: {min(v_new, v_old)} (a retrain policy does), or set force to promote it anyway",
                "conflict", field=field, tenant_error=True)
    if v_new != v_old:
        challenger["test_split"] = {"dataset_id": new_ds, "version": shared}
    for who, side in (("challenger", challenger), ("endpoint's model", champion)):
        if side["test"] is None:
            return DoctuneError(
                f"the {who} {side['model_id']} has no test {metric}; compare on another metric, or set force to "
                "promote anyway", "conflict", field="metric", tenant_error=True)
    return None


def _known_fields(spec: dict[str, Any] | None) -> dict[str, Any]:
    """A stored DeploymentSpec's fields that DeploymentSpec still has (specs outlive schema changes)."""
    return {k: v for k, v in (spec or {}).items() if k in DeploymentSpec.model_fields}
