"""What one dispatcher tick costs as tenants and queued jobs grow: the real scheduler code
(:func:`doctune.services.scheduler.claim_jobs`, :func:`plan_dispatch`, :func:`dispatch_once`) over a
real SQLite database (or PostgreSQL: ``--database-url``), with a runner that only reports a
cluster's free CPUs and accepts submissions (no Ray: this measures the dispatcher, not the cluster).

For each (tenants, queued jobs) it measures, median of 3:
- ``tick full``: a tick while the cluster has no room (the steady state of a backlog): the lock,
  three reads, the fair-share plan, and no write (each queued job's ``queue_reason`` is unchanged);
- ``first tick``: the same tick when every queued job's ``queue_reason`` must be written;
- ``plan``: :func:`plan_dispatch` alone (pure Python, no database);
- ``tick +8``: :func:`dispatch_once` when the cluster has room for 8 jobs (claim, then 8 submissions).

Run: ``python tests/bench/dispatcher.py [--sizes 10x100,100x1000,...]`` (not part of ``make test``;
timings are measured, never asserted). Figures: docs/scaling.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from doctune.config import Settings
from doctune.runners.base import ClusterResources
from doctune.services import Platform
from doctune.services.scheduler import QueuedJob, claim_jobs, dispatch_once, job_demand, plan_dispatch, tenant_states
from doctune.states import JobState
from doctune.store.db import Job, Tenant, now

SPEC = {"task": "classification", "num_workers": 2, "resources_per_worker": {"cpu": 1.0}, "max_steps": 100}
DEFAULT_SIZES = "10x100,10x1000,100x100,100x1000,100x10000,1000x1000,1000x10000"


class RoomRunner:
    """A cluster that reports ``free_cpus`` free and accepts every submission."""

    def __init__(self, free_cpus: float) -> None:
        self.free_cpus = free_cpus

    def resources(self) -> ClusterResources:
        return ClusterResources(cpus=1e6, gpus=0, memory_bytes=1e12, cpus_used=1e6 - self.free_cpus)

    def submit(self, module: str, args: list[str], *, submission_id: str | None = None) -> str:
        return submission_id or "sub"


def populate(p: Platform, tenants: int, queued: int) -> None:
    """``tenants`` tenants (quota: 2 concurrent jobs), each running 2 jobs (so every one is at its
    quota or has a share), and ``queued`` queued jobs spread over them round-robin."""
    t0 = now()
    with p.db.session() as s:
        s.add_all(Tenant(id=f"t{i:05d}", weight=1.0 + i % 3, max_concurrent_jobs=4) for i in range(tenants))
        s.flush()
        s.add_all(Job(id=f"r{i:06d}", tenant_id=f"t{i % tenants:05d}", task="classification", spec=SPEC,
                      status=JobState.RUNNING, progress={"worker_pids": {"0": 1}}) for i in range(2 * tenants))
        s.add_all(Job(id=f"q{i:06d}", tenant_id=f"t{i % tenants:05d}", task="classification", spec=SPEC,
                      status=JobState.QUEUED, created_at=t0 + timedelta(microseconds=i), progress={})
                  for i in range(queued))


def timed(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def measure(tenants: int, queued: int, database_url: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        url = database_url or f"sqlite:///{Path(home) / 'doctune.db'}"
        runner = RoomRunner(0.0)
        p = Platform(Settings(home=home, database_url=url), runner=runner)
        p.db.migrate()
        populate(p, tenants, queued)
        t = time.perf_counter()
        claim_jobs(p, _free(runner))
        first = (time.perf_counter() - t) * 1000
        full = timed(lambda: claim_jobs(p, _free(runner)))
        with p.db.session() as s:
            rows = list(s.query(Tenant)), list(s.query(Job).filter(Job.status.in_(JobState.active()))), \
                [QueuedJob(j.id, j.tenant_id, job_demand(j.spec), j.priority, j.created_at)
                 for j in s.query(Job).filter(Job.status == JobState.QUEUED)]
            states = tenant_states(rows[0], rows[1])
        plan = timed(lambda: plan_dispatch(states, rows[2], _free(runner)))
        with p.db.session() as s:  # room for jobs: lift the quotas so that the room is what limits
            s.execute(update(Tenant).values(max_concurrent_jobs=None))
        runner.free_cpus = 16.0  # 8 jobs of 2 CPUs
        t = time.perf_counter()
        started = dispatch_once(p)
        plus8 = (time.perf_counter() - t) * 1000
        assert len(started) == 8, started
        p.db.engine.dispose()
        return {"first": first, "full": full, "plan": plan, "plus8": plus8}


def _free(runner: RoomRunner):
    from doctune.services.scheduler import Demand

    return Demand(runner.free_cpus, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="tenants x queued jobs, comma-separated")
    ap.add_argument("--database-url", default=None, help="PostgreSQL URL (an empty database); default: a SQLite file")
    args = ap.parse_args()
    print("| tenants | queued jobs | running jobs | tick, cluster full (ms) | first tick, writes reasons (ms) "
          "| plan only (ms) | tick starting 8 (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        tenants, queued = (int(x) for x in size.split("x"))
        r = measure(tenants, queued, args.database_url)
        print(f"| {tenants} | {queued} | {2 * tenants} | {r['full']:.1f} | {r['first']:.1f} | {r['plan']:.1f} "
              f"| {r['plus8']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
