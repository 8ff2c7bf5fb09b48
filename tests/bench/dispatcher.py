"""What one dispatcher tick costs as tenants and queued jobs grow: the real scheduler code
(:func:`doctune.services.scheduler.claim_jobs`, :func:`plan_dispatch`, :func:`dispatch_once`) over a
real SQLite database and, with ``--database-url postgresql+psycopg://...``, PostgreSQL (each size in
a throwaway schema), with a runner that only reports a cluster's free CPUs and accepts submissions
(no Ray: this measures the dispatcher, not the cluster).

Each job's spec is the example docs/examples/bbc-classification.yaml (about 1 KB of JSON) and each
running job's progress has a step, a loss and 8 evaluations. The tenants have mixed quotas
(concurrent jobs 2, 4, 8 or none; some a CPU or a GPU quota) and weights 1-3; each runs 2 jobs (one
in five of them still placing its workers); the queued jobs are spread over the tenants
round-robin, one in ten with a higher priority and one in ten needing a GPU (the cluster has none).
For each (tenants, queued jobs) it measures:

- ``tick full``: a tick while the cluster has no room (the steady state of a backlog): the lock,
  the reads, the fair-share plan, and no write (each head's ``queue_reason`` is unchanged); the
  median of 11, and (``full_best`` in ``--json``) the best of 11 more;
- ``first tick``: the same tick by a dispatcher that has not seen these jobs yet: every queue
  head's ``queue_reason`` is written and every active job's and head's spec parsed (then remembered);
- ``claim 8``: the decision when the cluster has room for 8 jobs (quotas lifted): :func:`claim_jobs`
  marks 8 jobs starting (median of 3); ``tick +8``: the whole :func:`dispatch_once` then, claim and
  8 submissions (each records an event and the submission id: 3 more transactions per job), once;
- what a full tick spends its time on (median of 7 each): taking and releasing the lock, the
  tenants' quotas and running work (:func:`running_work`), the queue heads (:func:`queue_heads`),
  the plan alone (:func:`plan_dispatch`).

Run: ``python tests/bench/dispatcher.py [--sizes 10x100,1000x100000] [--database-url sqlite]
[--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--json out.json]
[--plot docs/dispatcher_scaling.png]`` (not part of ``make test``; timings are measured, never
asserted; ``--from-json`` re-draws a saved run). Figures: docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import yaml
from sqlalchemy import create_engine, insert, text, update

from doctune.config import Settings
from doctune.runners.base import ClusterResources
from doctune.services import Platform
from doctune.services.scheduler import (HEAD_DEPTH, Demand, claim_jobs, dispatch_once, plan_dispatch, queue_heads,
                                        running_work)
from doctune.spec import JobSpec
from doctune.states import JobState
from doctune.store.db import DispatchLock, Job, Tenant, now

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "bbc-classification.yaml"
SPEC = JobSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())).model_dump(mode="json")  # 2 workers x 1 CPU, ~1 KB
GPU_SPEC = {**SPEC, "resources_per_worker": {"cpu": 1.0, "gpu": 0.5}}
RUNNING = {"phase": "training", "step": 120, "total_steps": 450, "loss": 0.4213, "steps_per_s": 1.7, "eta_s": 194,
           "dev": [{"step": 14 * i, "macro_f1": 0.5 + i / 40, "loss": 1.0 - i / 20} for i in range(1, 9)]}
DEFAULT_SIZES = "10x100,100x1000,100x10000,100x100000,1000x1000,1000x3000,1000x10000,1000x30000,1000x100000"


class RoomRunner:
    """A cluster that reports ``free_cpus`` free and accepts every submission."""

    def __init__(self, free_cpus: float) -> None:
        self.free_cpus = free_cpus

    def resources(self) -> ClusterResources:
        return ClusterResources(cpus=1e6, gpus=0, memory_bytes=1e12, cpus_used=1e6 - self.free_cpus)

    def submit(self, module: str, args: list[str], *, submission_id: str | None = None) -> str:
        return submission_id or "sub"


def populate(p: Platform, tenants: int, queued: int) -> None:
    """The tenants, their running jobs and the queue described in the module docstring."""
    t0 = now()
    job = {"task": "classification", "attempt": 1, "metrics": {}, "created_at": t0}
    with p.db.session() as s:
        s.execute(insert(Tenant), [{"id": f"t{i:05d}", "weight": 1.0 + i % 3, "max_cpus": (None, 16.0, 6.0)[i % 3],
                                    "max_concurrent_jobs": (4, 2, None, 8)[i % 4], "max_gpus": (None, 1.0)[i % 2]}
                                   for i in range(tenants)])
        s.execute(insert(Job), [{**job, "id": f"r{i:06d}", "tenant_id": f"t{i % tenants:05d}", "spec": SPEC,
                                 "priority": 0, "status": JobState.RUNNING if i % 5 else JobState.STARTING,
                                 "progress": {**RUNNING, "worker_pids": {"0": 1, "1": 2} if i % 5 else {}}}
                                for i in range(2 * tenants)])
        for start in range(0, queued, 20_000):  # in batches: one statement's parameters stay small
            s.execute(insert(Job), [{**job, "id": f"q{i:06d}", "tenant_id": f"t{i % tenants:05d}",
                                     "status": JobState.QUEUED, "spec": GPU_SPEC if i % 10 == 3 else SPEC,
                                     "priority": 5 if i % 10 == 7 else 0,
                                     "created_at": t0 + timedelta(microseconds=i), "progress": {}}
                                    for i in range(start, min(queued, start + 20_000))])


def timed(fn, repeat: int = 3, best: bool = False) -> float:
    """The median (or the best) of ``repeat`` runs of ``fn``, in milliseconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return (min(times) if best else statistics.median(times)) * 1000


@contextmanager
def database(url: str, home: str) -> Iterator[str]:
    """A fresh database: a SQLite file under ``home``, or a throwaway schema in PostgreSQL."""
    if url == "sqlite":
        yield f"sqlite:///{Path(home) / 'doctune.db'}"
        return
    schema = f"doctune_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measure(tenants: int, queued: int, url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home, database(url, home) as db_url:
        runner = RoomRunner(0.0)
        p = Platform(Settings(home=home, database_url=db_url), runner=runner)
        p.db.migrate()
        populate(p, tenants, queued)
        if p.db.engine.dialect.name == "postgresql":  # as autovacuum would after a bulk load
            with p.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE"))
        r = {"tenants": tenants, "queued": queued, "database": p.db.engine.dialect.name}
        r["first"] = timed(lambda: claim_jobs(p, _free(runner)), repeat=1)
        r["full"] = timed(lambda: claim_jobs(p, _free(runner)), repeat=11)
        r["full_best"] = timed(lambda: claim_jobs(p, _free(runner)), repeat=11, best=True)
        r.update(parts(p, _free(runner)))
        with p.db.session() as s:  # room for jobs: lift the quotas so that the room is what limits
            s.execute(update(Tenant).values(max_concurrent_jobs=None, max_cpus=None))
        claim_jobs(p, _free(runner))  # the heads' reasons say so
        # room for 8 jobs of 2 CPUs, once the active jobs whose workers are not placed yet take theirs
        runner.free_cpus = 2 * len(range(0, 2 * tenants, 5))
        r["claim8"] = timed(lambda: start_8(p, runner, claim_jobs))
        r["plus8"] = timed(lambda: start_8(p, runner, dispatch_once), repeat=1)
        p.db.dispose()
        return r


def start_8(p: Platform, runner: RoomRunner, fn) -> None:
    """``fn`` (claim_jobs or dispatch_once) with room for 8 more jobs than the cluster had."""
    runner.free_cpus += 16.0  # the jobs started before hold none of it yet: their workers are not placed
    started = fn(p, _free(runner)) if fn is claim_jobs else fn(p)
    assert len(started) == 8, started


def parts(p: Platform, free: Demand) -> dict[str, float]:
    """What a full tick spends its time on, each part measured alone (median of 7)."""
    def lock():  # taken, then released as a tick that decides nothing does: by a rollback
        with p.db.session() as s:
            s.execute(update(DispatchLock).where(DispatchLock.id == 1).values(at=now()))
            s.rollback()

    with p.db.session() as s:
        out = {"lock": timed(lock, 7), "running": timed(lambda: running_work(s), 7),
               "heads": timed(lambda: queue_heads(s, HEAD_DEPTH), 7)}
        states, placed, unplaced = running_work(s)
        heads, _ = queue_heads(s, HEAD_DEPTH)
    truncated = {t for t, n in Counter(h.tenant for h in heads).items() if n >= HEAD_DEPTH}
    reachable = Demand(free.cpus + placed.cpus, free.gpus + placed.gpus)
    free = Demand(free.cpus - unplaced.cpus, free.gpus - unplaced.gpus)
    out["plan"] = timed(lambda: plan_dispatch(states, heads, free, reachable, truncated), 7)
    return out


def _free(runner: RoomRunner) -> Demand:
    return Demand(runner.free_cpus, 0.0)


def plot(rows: list[dict], path: str) -> None:
    """Tick time (cluster full) against queued jobs, log-log: one line per database (the median, shaded
    down to the best tick), at the largest tenant count measured (the other sizes are in the table),
    and the 50 ms goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    tenants = max(r["tenants"] for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for db in sorted({r["database"] for r in rows}):
        queued, median, best = zip(*sorted((r["queued"], r["full"], r["full_best"]) for r in rows
                                           if (r["database"], r["tenants"]) == (db, tenants)))
        name = "PostgreSQL" if db == "postgresql" else "SQLite"
        line, = ax.plot(queued, median, marker="o", label=f"{name} (median)")
        ax.fill_between(queued, best, median, color=line.get_color(), alpha=0.15, linewidth=0)  # down to the best
    ax.axhline(50, color="grey", linewidth=1, linestyle="--", label="goal: 50 ms")
    ax.set(xscale="log", yscale="log", xlabel="queued jobs", ylabel="one dispatcher tick, cluster full (ms)",
           title=f"Dispatch decision time, {tenants:,} tenants, mixed quotas")
    ax.set_ylim(1, 200)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="tenants x queued jobs, comma-separated")
    ap.add_argument("--database-url", action="append", default=None,
                    help="'sqlite' (a fresh file, the default) or a PostgreSQL URL; repeat for several")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--from-json", help="measure nothing: read the figures from this file (for --plot)")
    ap.add_argument("--plot", help="draw tick time against queued jobs, log-log, into this PNG")
    args = ap.parse_args()
    rows = json.loads(Path(args.from_json).read_text()) if args.from_json else []
    print("| database | tenants | queued jobs | tick, cluster full (median / best) | first tick, writes reasons "
          "| claim starting 8 | tick starting 8 | lock | running work | queue heads | plan |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for url in [] if args.from_json else args.database_url or ["sqlite"]:
        for size in args.sizes.split(","):
            tenants, queued = (int(x) for x in size.split("x"))
            rows.append(measure(tenants, queued, url))
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))
            print(row_line(rows[-1]), flush=True)
    if args.from_json:
        print("\n".join(row_line(r) for r in rows))
    if args.plot:
        plot(rows, args.plot)


def row_line(r: dict) -> str:
    return (f"| {r['database']} | {r['tenants']:,} | {r['queued']:,} | {r['full']:.1f} / {r['full_best']:.1f} "
            f"| {r['first']:.1f} | {r['claim8']:.1f} | {r['plus8']:.1f} | {r['lock']:.1f} | {r['running']:.1f} "
            f"| {r['heads']:.1f} | {r['plan']:.1f} |")


if __name__ == "__main__":
    main()
