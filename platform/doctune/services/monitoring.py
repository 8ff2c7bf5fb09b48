"""The platform's state as Prometheus gauges, computed when Prometheus scrapes the API's ``/metrics``
(``doctune.api.routes.metrics``): how many jobs each tenant has in each state, how long each unfinished
job has been in its state and since its last event, and each tenant's queue (length, oldest wait).

Two SQL queries per scrape (a ``GROUP BY`` count, and the unfinished jobs with their latest events);
nothing is cached between scrapes, so every API replica reports the same numbers and Prometheus
deduplicates nothing. Per-job series exist only for unfinished jobs (queued, paused, starting,
running), whose number the tenants' quotas bound (``max_queued_jobs`` + ``max_concurrent_jobs`` +
paused ones); a job's series disappear when it ends. Labels are tenant ids, job ids and states:
no credentials, no spec contents (docs/security.md, "Metrics").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from doctune.services import Platform
from doctune.states import JobState
from doctune.store.db import Job, JobEvent

log = logging.getLogger(__name__)

__all__ = ["PlatformCollector", "UnfinishedJob", "job_snapshot"]


@dataclass(frozen=True)
class UnfinishedJob:
    job_id: str
    tenant: str
    state: str
    state_age_s: float  # since its last status change (its submission when none is recorded)
    last_event_age_s: float  # since its last event of any kind: progress, eval, checkpoint, status


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)  # SQLite returns naive datetimes (UTC)


def job_snapshot(p: Platform) -> tuple[dict[tuple[str, str], int], list[UnfinishedJob]]:
    """``({(tenant, state): jobs}, [unfinished jobs])`` in two queries."""
    status_at = func.max(case((JobEvent.kind == "status", JobEvent.at)))
    unfinished = (select(Job.id, Job.tenant_id, Job.status, Job.created_at, status_at, func.max(JobEvent.at))
                  .outerjoin(JobEvent, JobEvent.job_id == Job.id)
                  .where(Job.status.notin_([s.value for s in JobState.terminal()]))
                  .group_by(Job.id, Job.tenant_id, Job.status, Job.created_at))
    with p.db.session() as s:
        counts = {(t, st): n for t, st, n in s.execute(
            select(Job.tenant_id, Job.status, func.count()).group_by(Job.tenant_id, Job.status))}
        rows = list(s.execute(unfinished))
    now = datetime.now(timezone.utc)
    jobs = []
    for job_id, tenant, state, created, changed, last in rows:
        changed, last = _utc(changed or created), _utc(last or created)
        jobs.append(UnfinishedJob(job_id, tenant, state, max(0.0, (now - changed).total_seconds()),
                                  max(0.0, (now - last).total_seconds())))
    return counts, jobs


def _families(counts: dict[tuple[str, str], int], jobs: list[UnfinishedJob]) -> Iterator[GaugeMetricFamily]:
    by_state = GaugeMetricFamily("doctune_jobs", "Jobs of each tenant in each state (finished ones included).",
                                 labels=["tenant", "state"])
    for (tenant, state), n in sorted(counts.items()):
        by_state.add_metric([tenant, state], n)
    yield by_state
    age = GaugeMetricFamily("doctune_job_state_age_seconds", "Seconds each unfinished job has been in its state.",
                            labels=["job_id", "tenant", "state"])
    idle = GaugeMetricFamily("doctune_job_last_event_age_seconds", "Seconds since each unfinished job's last event "
                             "(a running job reports progress, evals and checkpoints as it trains).",
                             labels=["job_id", "tenant", "state"])
    for j in jobs:
        age.add_metric([j.job_id, j.tenant, j.state], j.state_age_s)
        idle.add_metric([j.job_id, j.tenant, j.state], j.last_event_age_s)
    yield age
    yield idle
    queued: dict[str, list[float]] = {t: [] for t, _ in counts}  # every tenant with jobs gets a 0 queue
    for j in jobs:
        if j.state == JobState.QUEUED:
            queued[j.tenant].append(j.state_age_s)
    length = GaugeMetricFamily("doctune_queued_jobs", "Jobs each tenant has waiting in the queue.", labels=["tenant"])
    wait = GaugeMetricFamily("doctune_queue_wait_seconds", "Seconds the oldest queued job of each tenant has waited "
                             "(0: none queued).", labels=["tenant"])
    for tenant, ages in sorted(queued.items()):
        length.add_metric([tenant], len(ages))
        wait.add_metric([tenant], max(ages, default=0.0))
    yield length
    yield wait


class PlatformCollector(Collector):
    """A prometheus_client collector reading :func:`job_snapshot` at every scrape. A database that
    cannot be read gives ``doctune_metrics_scrape_error 1`` and no job series, rather than a failed
    scrape: Prometheus keeps the API target up and the error is itself alertable."""

    def __init__(self, p: Platform) -> None:
        self.p = p

    def collect(self) -> Iterator[GaugeMetricFamily]:
        error = GaugeMetricFamily("doctune_metrics_scrape_error", "1 when the last scrape could not read the database.")
        try:
            counts, jobs = job_snapshot(self.p)
        except Exception:  # noqa: BLE001  (any database failure: say so in the metric, keep the scrape)
            log.warning("metrics: could not read the jobs from the database", exc_info=True)
            error.add_metric([], 1)
            yield error
            return
        yield from _families(counts, jobs)
        error.add_metric([], 0)
        yield error

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # no collect() at registration time (the database may not be migrated yet)
