"""Retrain policies: train an endpoint's model again when its dataset grows or drifts, or on a schedule,
and serve the retrained model only if it is better.

A deployment's policy is its DeploymentSpec's ``retrain`` (:class:`doctune.spec.RetrainPolicySpec`), set
when it is deployed or with :func:`set_policy`. The *served* model (the champion) was trained by a job on
some version of a dataset; that dataset's versions are what the policy watches:

* on every append (:func:`append_and_evaluate`, the ``POST /v1/datasets/{id}/versions`` route), the
  growth (records, percent) and the label drift (total variation distance of the task's stratify key)
  from the champion's version to the newest one are checked against ``min_new_records``,
  ``min_growth_percent`` and ``max_label_drift``;
* on its cron ``schedule``, by :func:`run_retrains`, which the API server's reconciler runs every
  ``reconcile_interval_s`` (``doctune.services.reconcile``), beside following the retrain jobs.

A trigger submits the champion's own job spec on the newest version, with ``dataset.compare_version``
set to the champion's version, so the new model's test metric is also measured on the champion's test
split. When that job succeeds, :func:`run_retrains` promotes its model through
:func:`doctune.services.deployments.promote` (champion/challenger, compared on that split): a model that
is not better is refused and the endpoint keeps serving the champion. One retrain runs per deployment at
a time. Every decision is a :class:`RetrainEvent` (triggered, skipped, promoted, refused, failed) with
the growth, the drift and both test metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services import deployments as deployments_svc
from doctune.services import jobs as jobs_svc
from doctune.services.dataset_versions import (append_records, compare_versions, label_distribution,
                                               read_version_split, version_rows)
from doctune.services.tenants import check_tenant_access
from doctune.spec import DeploymentSpec, PromotionSpec, RetrainPolicySpec, parse_job_spec
from doctune.states import DeploymentState, JobState
from doctune.store.dataset_files import SPLITS
from doctune.store.db import Dataset, DatasetVersion, Deployment, Job, Model, RetrainEvent, now, take_quota_lock
from doctune.tasks import check_metric, get_task

__all__ = ["append_and_evaluate", "evaluate_on_append", "evaluate_triggers", "list_events", "run_retrains",
           "schedule_due", "set_policy"]

log = logging.getLogger("doctune.retrain")
CLAIM_STALE_S = 600.0  # a claim that never recorded its job (the process stopped in between) is dropped after this
MAX_EVENTS_PAGE = 1000


# ------------------------------------------------------------------ the decision, as a pure function
def evaluate_triggers(policy: RetrainPolicySpec, served: dict[str, Any], newest: dict[str, Any],
                      kinds: tuple[str, ...]) -> tuple[str | None, dict[str, Any], str]:
    """Which of ``kinds`` ("growth", "drift", "schedule") fires for ``policy``, from the info of the served
    model's dataset version to that of the newest one: (the trigger or None, the change
    (:func:`doctune.services.dataset_versions.compare_versions`), a sentence saying why)."""
    change = compare_versions(served, newest)
    at = f"version {newest.get('version')} against the served model's version {served.get('version')}"
    if (newest.get("version") or 1) <= (served.get("version") or 1):
        return None, change, f"the served model was trained on the newest version ({served.get('version')})"
    grown = f"{change['records']} more records" + (f" (+{change['percent']:g}%)" if change["percent"] is not None else "")
    drift = f"label drift {change['tvd']:.4f}"
    if "growth" in kinds and policy.min_new_records is not None and change["records"] >= policy.min_new_records:
        return "growth", change, f"{grown} in {at}: at least min_new_records {policy.min_new_records}"
    if ("growth" in kinds and policy.min_growth_percent is not None and change["percent"] is not None
            and change["percent"] >= policy.min_growth_percent):
        return "growth", change, f"{grown} in {at}: at least min_growth_percent {policy.min_growth_percent:g}"
    if "drift" in kinds and policy.max_label_drift is not None and change["tvd"] > policy.max_label_drift:
        return "drift", change, f"{drift} in {at}: above max_label_drift {policy.max_label_drift:g}"
    if "schedule" in kinds and policy.schedule is not None:
        return "schedule", change, f"schedule {policy.schedule!r} is due and {at} is newer"
    limits = [f"min_new_records {policy.min_new_records}" if policy.min_new_records is not None else "",
              f"min_growth_percent {policy.min_growth_percent:g}" if policy.min_growth_percent is not None else "",
              f"max_label_drift {policy.max_label_drift:g}" if policy.max_label_drift is not None else ""]
    return None, change, f"{grown}, {drift} in {at}: within " + (", ".join(l for l in limits if l) or "the policy")


def schedule_due(schedule: str, last: datetime, at: datetime) -> bool:
    """Whether cron ``schedule`` (UTC) fires after ``last`` and no later than ``at``."""
    from croniter import croniter

    return croniter(schedule, last).get_next(datetime) <= at


# ------------------------------------------------------------------ what is served, and its policy
@dataclass
class Served:
    """A deployment with a policy, its champion model and the job, dataset and version that made it."""

    deployment: Deployment
    policy: RetrainPolicySpec
    model: Model
    job: Job
    dataset: Dataset
    version: int

    @property
    def metric(self) -> str:
        return self.policy.metric or get_task(self.model.task).primary_metric


def _policy(dep: Deployment) -> RetrainPolicySpec | None:
    raw = (dep.spec or {}).get("retrain")
    if not raw:
        return None
    try:
        return RetrainPolicySpec.model_validate(raw)
    except Exception:  # a policy stored by an older schema that no longer validates
        log.warning("deployment %s has a retrain policy that no longer validates; it is ignored", dep.id)
        return None


def _served(p: Platform, dep: Deployment) -> Served | str:
    """The deployment's champion and what trained it, or why its policy cannot act (a sentence)."""
    policy = _policy(dep)
    if policy is None:
        return "the deployment has no retrain policy"
    with p.db.session() as s:
        model = s.get(Model, dep.model_id)
        job = s.get(Job, model.job_id) if model else None
        ref = ((job.spec if job else None) or {}).get("dataset") or {}
        dataset = s.get(Dataset, ref.get("id")) if ref.get("id") else None
    if model is None or job is None or dataset is None:
        return (f"the served model {dep.model_id} has no job or dataset recorded (or its dataset was deleted): "
                "there is nothing to retrain it on")
    return Served(dep, policy, model, job, dataset, int(ref.get("version") or 1))


def _principal(dep: Deployment) -> Principal:
    return Principal(key_id=f"retrain policy of {dep.id}", role="member", tenant_id=dep.tenant_id)


def _version_info(p: Platform, dataset: Dataset, version: int) -> dict[str, Any]:
    """A version's info with its label distribution (worked out from its records when not recorded)."""
    info = dict(version_rows(p, dataset, version)[-1].info)
    if not info.get("distribution"):
        splits = {s: read_version_split(p, dataset, s, version) for s in SPLITS}
        info["distribution"] = label_distribution(splits, dataset.task)
        info["records"] = sum(len(v) for v in splits.values())
    return info


def _champion_test(served: Served) -> float | None:
    value = ((served.model.metrics or {}).get("test") or {}).get(served.metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------ events
def record_event(p: Platform, dep: Deployment, decision: str, reason: str, *, trigger: str | None = None,
                 job_id: str | None = None, data: dict[str, Any] | None = None) -> RetrainEvent:
    row = RetrainEvent(deployment_id=dep.id, decision=decision, trigger=trigger, reason=reason[:4000], job_id=job_id,
                       data=data or {})
    with p.db.session() as s:
        s.add(row)
    log.info("retrain of %s: %s (%s)", dep.id, decision, reason)
    return row


def list_events(p: Platform, caller: Principal, deployment_id: str, *, after: int = 0,
                limit: int = 200) -> list[RetrainEvent]:
    """A page of a deployment's retrain decisions, oldest first, with ids above ``after``."""
    if not 1 <= limit <= MAX_EVENTS_PAGE:
        raise DoctuneError(f"limit must be 1..{MAX_EVENTS_PAGE}; got {limit}", "invalid_request", field="limit")
    dep = deployments_svc.get_deployment(p, caller, deployment_id)
    with p.db.session() as s:
        return list(s.execute(select(RetrainEvent).where(RetrainEvent.deployment_id == dep.id, RetrainEvent.id > after)
                              .order_by(RetrainEvent.id).limit(limit)).scalars())


# ------------------------------------------------------------------ setting a policy
def set_policy(p: Platform, caller: Principal, deployment_id: str, policy: RetrainPolicySpec | None) -> Deployment:
    """Set (or, with None, remove) a deployment's retrain policy. The served model and its settings do not
    change and no revision is added: the policy is the endpoint's; its schedule counts from now."""
    dep = deployments_svc.get_deployment(p, caller, deployment_id)
    check_tenant_access(caller, dep.tenant_id, write=True)
    if policy is not None and policy.metric is not None:
        with p.db.session() as s:
            model = s.get(Model, dep.model_id)
        check_metric(get_task(model.task), policy.metric, "metric")
    with p.db.session() as s:
        row = s.get(Deployment, dep.id)
        spec = dict(row.spec or {})
        spec["retrain"] = policy.model_dump(mode="json") if policy is not None else None
        row.spec = DeploymentSpec.from_stored(spec).model_dump(mode="json")
        row.retrain_state = {**(row.retrain_state or {}), "schedule_from": now().isoformat()}
    return deployments_svc.get_deployment(p, caller, deployment_id)


# ------------------------------------------------------------------ triggering
def append_and_evaluate(p: Platform, caller: Principal, name_or_id: str, files: dict[str, bytes],
                        formats: dict[str, str] | None = None) -> tuple[Dataset, DatasetVersion, list[RetrainEvent]]:
    """Append ``files`` as the dataset's next version (:func:`doctune.services.dataset_versions.append_records`),
    then evaluate the growth and drift triggers of every endpoint serving a model trained on the dataset."""
    dataset, version = append_records(p, caller, name_or_id, files, formats)
    return dataset, version, evaluate_on_append(p, dataset)


def evaluate_on_append(p: Platform, dataset: Dataset) -> list[RetrainEvent]:
    """The growth and drift decisions of every policy whose served model was trained on ``dataset``."""
    events = []
    for dep in _with_policies(p, dataset.tenant_id):
        served = _served(p, dep)
        if not isinstance(served, Served) or served.dataset.id != dataset.id:
            continue
        try:
            events.append(_consider(p, served, ("growth", "drift")))
        except Exception as exc:  # the version is stored whatever happens here: the append stands
            log.warning("retrain policy of deployment %s on append: %s", dep.id, exc)
            events.append(record_event(p, dep, "skipped", f"the policy could not be evaluated ({exc}); the next "
                                       "append or schedule evaluates it again", data={"dataset_id": dataset.id}))
    return events


def _with_policies(p: Platform, tenant: str | None = None) -> list[Deployment]:
    """Deployments that serve something and have a retrain policy (of one tenant, or of all)."""
    q = select(Deployment).where(Deployment.status.not_in(DeploymentState.gone() + (DeploymentState.DELETING,)))
    if tenant is not None:
        q = q.where(Deployment.tenant_id == tenant)
    with p.db.session() as s:
        rows = list(s.execute(q.order_by(Deployment.id)).scalars())
    return [d for d in rows if (d.spec or {}).get("retrain")]


def _consider(p: Platform, served: Served, kinds: tuple[str, ...]) -> RetrainEvent:
    """Decide for one deployment: skip (with why), or claim its one retrain slot and submit the job."""
    dep = served.deployment
    newest = _version_info(p, served.dataset, served.dataset.version or 1)
    trigger, change, why = evaluate_triggers(served.policy, _version_info(p, served.dataset, served.version), newest, kinds)
    data = {"dataset_id": served.dataset.id, "version": newest.get("version"), "served_version": served.version,
            "growth": {"records": change["records"], "percent": change["percent"]}, "drift": change["tvd"],
            "new_labels": change["new_labels"], "metric": served.metric,
            "champion": {"model_id": served.model.id, "test": _champion_test(served)}, "challenger": None}
    if trigger is None:
        return record_event(p, dep, "skipped", why, trigger=kinds[0] if len(kinds) == 1 else None, data=data)
    busy = _claim(p, dep.id)
    if busy is not None:
        return record_event(p, dep, "skipped", f"{why}; but {busy}", trigger=trigger, data=data)
    try:
        job = _submit(p, served, int(newest["version"]))
    except DoctuneError as exc:
        _release(p, dep.id)
        return record_event(p, dep, "skipped", f"{why}; but the retrain job was refused: {exc.message}",
                            trigger=trigger, data={**data, "error": exc.to_dict()["error"]})
    except Exception:
        _release(p, dep.id)  # the slot is free for the next trigger
        raise
    _set_pending(p, dep.id, {"job_id": job.id, "version": newest["version"], "served_version": served.version,
                             "champion_model_id": served.model.id, "metric": served.metric, "trigger": trigger,
                             "data": data})
    return record_event(p, dep, "triggered", f"{why}: retrain job {job.id} submitted", trigger=trigger,
                        job_id=job.id, data=data)


def _submit(p: Platform, served: Served, version: int) -> Job:
    """The champion's own job spec on ``version``, also tested on the champion's test split."""
    spec = {k: v for k, v in (served.job.spec or {}).items() if k != "name"}
    spec["dataset"] = {"id": served.dataset.id, "version": version, "compare_version": served.version}
    spec["name"] = f"retrain of {served.deployment.name} on {served.dataset.id} v{version}"[:100]
    return jobs_svc.submit_job(p, _principal(served.deployment), parse_job_spec(spec))


def _claim(p: Platform, deployment_id: str) -> str | None:
    """Take the deployment's one retrain slot (under the lock); None when taken, else what holds it."""
    with p.db.session() as s:
        take_quota_lock(s)
        row = s.get(Deployment, deployment_id)
        state = dict(row.retrain_state or {})
        pending = state.get("pending")
        if pending:
            claimed = datetime.fromisoformat(pending.get("claimed_at"))
            if pending.get("job_id"):
                return f"retrain job {pending['job_id']} is still under way"
            if (now() - claimed).total_seconds() < CLAIM_STALE_S:
                return "another retrain is being submitted"
        state["pending"] = {"claimed_at": now().isoformat()}
        row.retrain_state = state
    return None


def _set_pending(p: Platform, deployment_id: str, pending: dict[str, Any] | None) -> None:
    with p.db.session() as s:
        row = s.get(Deployment, deployment_id)
        state = dict(row.retrain_state or {})
        if pending is None:
            state.pop("pending", None)
        else:
            state["pending"] = {**(state.get("pending") or {"claimed_at": now().isoformat()}), **pending}
        row.retrain_state = state


def _release(p: Platform, deployment_id: str) -> None:
    _set_pending(p, deployment_id, None)


# ------------------------------------------------------------------ the periodic work
def run_retrains(p: Platform, at: datetime | None = None) -> int:
    """Follow every retrain job under way (promote its model once it succeeds) and fire every schedule
    that is due; run by the API server's reconciler. Returns how many decisions were recorded."""
    at = at or now()
    decisions = 0
    for dep in _with_policies(p):
        try:
            decisions += _follow(p, dep) + _on_schedule(p, dep, at)
        except Exception as exc:  # one deployment's trouble (the cluster, the store) does not stop the others
            log.warning("retrain policy of deployment %s: %s", dep.id, exc)
    return decisions


def _follow(p: Platform, dep: Deployment) -> int:
    """The deployment's retrain job: once it has ended, settle it (claimed first, so that two API replicas
    never promote twice), then promote its model or record why not."""
    pending = (dep.retrain_state or {}).get("pending") or {}
    if not pending.get("job_id"):
        if pending and (now() - datetime.fromisoformat(pending["claimed_at"])).total_seconds() >= CLAIM_STALE_S:
            _release(p, dep.id)  # its submission never finished
        return 0
    with p.db.session() as s:
        job = s.get(Job, pending["job_id"])
    if job is not None and job.status not in JobState.terminal():
        return 0
    if not _settle(p, dep.id, pending["job_id"]):
        return 0
    data = {**(pending.get("data") or {}), "metric": pending.get("metric")}
    if job is None or job.status != JobState.SUCCEEDED or not job.model_id:
        why = (job.error or {}).get("message") if job is not None else "it was deleted"
        record_event(p, dep, "failed", f"retrain job {pending['job_id']} ended {job.status if job else 'gone'}"
                     + (f": {why}" if why else "") + "; the served model stays", job_id=pending["job_id"], data=data)
        return 1
    _promote(p, dep, job, pending, data)
    return 1


def _settle(p: Platform, deployment_id: str, job_id: str) -> bool:
    """Take the ended retrain job off the deployment (compare-and-set under the lock); False: another did."""
    with p.db.session() as s:
        take_quota_lock(s)
        row = s.get(Deployment, deployment_id)
        state = dict(row.retrain_state or {})
        if (state.get("pending") or {}).get("job_id") != job_id:
            return False
        state["settling"] = state.pop("pending")
        row.retrain_state = state
    return True


def _promote(p: Platform, dep: Deployment, job: Job, pending: dict[str, Any], data: dict[str, Any]) -> None:
    """Champion/challenger through the existing promotion; a cluster that does not answer is tried again."""
    spec = PromotionSpec(tenant=dep.tenant_id, endpoint=dep.name, model_id=job.model_id, metric=pending.get("metric"))
    try:
        result = deployments_svc.promote(p, _principal(dep), spec)
    except DoctuneError as exc:
        if exc.code == "unavailable":
            _restore(p, dep.id)
            return
        _clear_settling(p, dep.id)
        record_event(p, dep, "refused", f"model {job.model_id} of retrain job {job.id} was not promoted: {exc.message}",
                     job_id=job.id, data={**data, "challenger": {"model_id": job.model_id, "test": None}})
        return
    _clear_settling(p, dep.id)
    data = {**data, "champion": result["champion"], "challenger": result["challenger"], "metric": result["metric"]}
    decision = "promoted" if result["decision"] in ("deployed", "promoted", "forced") else "refused"
    record_event(p, dep, decision, result["summary"], job_id=job.id, data=data)


def _restore(p: Platform, deployment_id: str) -> None:
    with p.db.session() as s:
        row = s.get(Deployment, deployment_id)
        state = dict(row.retrain_state or {})
        if "settling" in state:
            state["pending"] = state.pop("settling")
        row.retrain_state = state


def _clear_settling(p: Platform, deployment_id: str) -> None:
    with p.db.session() as s:
        row = s.get(Deployment, deployment_id)
        row.retrain_state = {k: v for k, v in (row.retrain_state or {}).items() if k != "settling"}


def _on_schedule(p: Platform, dep: Deployment, at: datetime) -> int:
    """Fire the deployment's schedule once if it came due since it was last looked at (missed fires, e.g.
    while the API was down, count once)."""
    policy = _policy(dep)
    if policy is None or policy.schedule is None:
        return 0
    state = dep.retrain_state or {}
    if not state.get("schedule_from"):  # a policy deployed with the endpoint: its schedule counts from now
        with p.db.session() as s:
            row = s.get(Deployment, dep.id)
            row.retrain_state = {**(row.retrain_state or {}), "schedule_from": at.isoformat()}
        return 0
    if not schedule_due(policy.schedule, datetime.fromisoformat(state["schedule_from"]), at):
        return 0
    with p.db.session() as s:  # compare-and-set: one API replica fires it
        take_quota_lock(s)
        row = s.get(Deployment, dep.id)
        if (row.retrain_state or {}).get("schedule_from") != state.get("schedule_from"):
            return 0
        row.retrain_state = {**(row.retrain_state or {}), "schedule_from": at.isoformat()}
    served = _served(p, dep)
    if isinstance(served, str):
        record_event(p, dep, "skipped", f"schedule {policy.schedule!r} is due, but {served}", trigger="schedule")
        return 1
    _consider(p, served, ("schedule",))
    return 1

