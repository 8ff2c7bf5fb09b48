"""What the cluster says, read-only, for the admin page and the deployments page: its resources, the
job queue in the order the fair-share dispatcher would start it, and an endpoint's request metrics.

All three go through the runner (the cluster's own reports) or the metadata store; none changes
anything. Called by ``doctune.api.routes.cluster`` and ``doctune.api.routes.deployments``.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.deployments import get_deployment
from doctune.services.scheduler import ACTIVE, Demand, QueuedJob, TenantState, job_demand, plan_dispatch
from doctune.states import JobState
from doctune.store.db import Job, Tenant

__all__ = ["cluster_resources", "endpoint_metrics", "queue_order"]

PREFIX = "ray_doctune_endpoint_"  # Ray prefixes the replicas' metric names (doctune.serve.app) with ray_


def _require_admin(caller: Principal) -> None:
    if not caller.is_admin:
        raise DoctuneError("only a platform admin can see the cluster and the whole queue; use the admin key "
                           "`doctune up` printed", "forbidden")


def _ask_cluster(what: str, fn: Any) -> Any:
    """``fn()``, with a cluster that does not answer as a 503 naming what was asked."""
    try:
        return fn()
    except DoctuneError:
        raise
    except Exception as exc:  # the runner's HTTP client, Ray's own errors: the cluster is down or unreachable
        raise DoctuneError(f"the Ray cluster did not answer for its {what} ({type(exc).__name__}: {exc}); check "
                           "`doctune status`", "unavailable") from None


def cluster_resources(p: Platform, caller: Principal) -> dict[str, Any]:
    """Logical CPUs and GPUs in all, in use and free, and task memory, as the cluster reports them."""
    _require_admin(caller)
    r = _ask_cluster("resources", p.runner.resources)
    return {"cpus": r.cpus, "cpus_used": r.cpus_used, "cpus_free": r.cpus_free, "gpus": r.gpus,
            "gpus_used": r.gpus_used, "gpus_free": r.gpus_free, "memory_bytes": r.memory_bytes}


def queue_order(p: Platform, caller: Principal) -> list[dict[str, Any]]:
    """Every queued job, in the order the dispatcher would start them were the cluster and the quotas
    to allow each in turn (weighted fair share, then priority, then age: ``plan_dispatch``), with
    each tenant's weight and current share and the reason the job waits now."""
    _require_admin(caller)
    with p.db.session() as s:
        tenants = {t.id: t for t in s.execute(select(Tenant)).scalars()}
        active = list(s.execute(select(Job).where(Job.status.in_(ACTIVE))).scalars())
        queued = list(s.execute(select(Job).where(Job.status == JobState.QUEUED)).scalars())
    states = {tid: TenantState(weight=t.weight) for tid, t in tenants.items()}  # quotas left out: the order only
    for job in active:
        d, ts = job_demand(job.spec), states.setdefault(job.tenant_id, TenantState())
        ts.running_jobs, ts.running_cpus, ts.running_gpus = ts.running_jobs + 1, ts.running_cpus + d.cpus, ts.running_gpus + d.gpus
    plan = plan_dispatch(states, [QueuedJob(j.id, j.tenant_id, job_demand(j.spec), j.priority, j.created_at) for j in queued],
                         Demand(math.inf, math.inf))
    by_id = {j.id: j for j in queued}
    out = []
    for position, job_id in enumerate(plan.start, 1):
        job, ts = by_id[job_id], states[by_id[job_id].tenant_id]
        d = job_demand(job.spec)
        out.append({"position": position, "job_id": job.id, "tenant": job.tenant_id, "task": job.task,
                    "priority": job.priority, "cpus": d.cpus, "gpus": d.gpus, "weight": ts.weight,
                    "tenant_share": round(ts.share(), 4), "created_at": job.created_at,
                    "reason": (job.progress or {}).get("queue_reason")})
    return out


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the first cumulative bucket holding fraction ``q`` of the observations."""
    count = buckets[-1][1] if buckets else 0
    for le, cumulative in buckets:
        if count and cumulative >= q * count:
            return le if math.isfinite(le) else None
    return None


def _samples(texts: list[str], tenant: str, endpoint: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for text in texts:
        for family in text_string_to_metric_families(text):
            out += [s for s in family.samples if s.name.startswith(PREFIX) and s.labels.get("tenant") == tenant
                    and s.labels.get("endpoint") == endpoint]
    return out


def summarize_endpoint_samples(samples: list[Any]) -> dict[str, Any]:
    """Requests by status code, latency (count, mean, p50, p95 from the histogram's buckets), the
    mean inputs per model call, and the live replicas, from the replicas' Prometheus samples."""
    requests: dict[str, float] = {}
    sums: dict[str, float] = {}
    buckets: dict[float, float] = {}
    replicas = 0.0
    for s in samples:
        name = s.name.removeprefix(PREFIX)
        if name == "requests_total":
            code = s.labels.get("status_code", "?")
            requests[code] = requests.get(code, 0) + s.value
        elif name == "latency_seconds_bucket":
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0) + s.value
        elif name in ("latency_seconds_sum", "latency_seconds_count", "batch_size_sum", "batch_size_count"):
            sums[name] = sums.get(name, 0) + s.value
        elif name == "replicas":
            replicas += s.value
    ordered = sorted(buckets.items())
    count = sums.get("latency_seconds_count", 0)
    calls = sums.get("batch_size_count", 0)
    return {"requests": {k: int(v) for k, v in sorted(requests.items())}, "requests_total": int(sum(requests.values())),
            "latency_count": int(count), "latency_mean_s": sums["latency_seconds_sum"] / count if count else None,
            "latency_p50_s": _quantile(ordered, 0.5), "latency_p95_s": _quantile(ordered, 0.95),
            "mean_batch_size": sums["batch_size_sum"] / calls if calls else None, "replicas": int(replicas)}


def endpoint_metrics(p: Platform, caller: Principal, deployment_id: str) -> dict[str, Any]:
    """The deployment's request metrics since its replicas started, as its replicas report them to the
    cluster's Prometheus targets (what a Prometheus server would scrape; no history is kept here)."""
    dep = get_deployment(p, caller, deployment_id)
    texts = _ask_cluster("metrics", p.runner.metrics_text)
    return {"deployment_id": dep.id, "endpoint": dep.name, **summarize_endpoint_samples(_samples(texts, dep.tenant_id, dep.name))}
