"""`make bench`, API load part (issue 17 §4): the REST API under 50 concurrent users.

The embedded stack (:class:`doctune.local.LocalStack`: Ray head, weed S3 server, the API, the
console) on 127.0.0.1 with PostgreSQL as its metadata store (a fresh database, ``doctune_load`` by
default, dropped afterwards). Ten tenants, each with a small BBC classification dataset, a history of
``SEED_JOBS`` jobs (finished ones with metrics, progress and events; some queued), five member keys
(one per user) and a concurrent-job quota of 0: every job submitted during the run stays queued and
nothing trains. ``locust`` (``tests/bench/locustfile.py``, headless, in its own process: gevent
patches the process it runs in) then runs ``USERS`` users for ``DURATION_S`` seconds; each lists its
tenant's jobs, reads job pages (the job and its events) and submits jobs, with 0.5-1.5 s of think
time between actions. Reported per route: requests, p50 and p99 (exact, from every request's time
as locust measured it, the ramp-up included), failures. Goals: no failure; p99 ≤ 200 ms on reads.
Before the load, each route alone (:func:`alone`): its median time and the API process's CPU per
request, figures that say what a request costs even when other work shares the machine.

All 50 users come from one address (127.0.0.1), so the API's per-address rate limit (2400/minute by
default, meant for one client) is raised for the run; the per-key limit stays at its default.

Run: ``python -m tests.bench.api_load`` (prints the result as JSON and writes
docs/bench_api_load.json). BENCH_API_USERS (50), BENCH_API_DURATION_S (60), BENCH_API_SEED_JOBS
(per tenant, 1000) and BENCH_API_DATABASE_URL (postgresql+psycopg://postgres@127.0.0.1:5432/doctune_load:
the database named there is dropped and created anew) change the run. Timings are measured, never asserted.
"""

from __future__ import annotations

import json
import math
import os
import platform as _platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
USERS = int(os.environ.get("BENCH_API_USERS", "50"))
SPAWN_RATE = 10.0  # users started per second
DURATION_S = int(os.environ.get("BENCH_API_DURATION_S", "60"))
TENANTS = 10
SEED_JOBS = int(os.environ.get("BENCH_API_SEED_JOBS", "1000"))  # per tenant
DATABASE_URL = os.environ.get("BENCH_API_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/doctune_load")
THINK_S = (0.5, 1.5)
PAGE_SIZE = 20
READ_P99_GOAL_MS = 200.0
RATE_LIMIT_PER_ADDRESS = "100000/minute"
SUBMIT = "POST /v1/jobs"
# a small real job, as a tenant would submit it (it never starts: the tenants' quota is 0 concurrent jobs)
SPEC = {
    "task": "classification", "name": "load-bench", "base_model": "all-minilm-l6-v2",
    "tuning": {"method": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "key", "value", "dense"]}},
    "deepspeed": {"zero_stage": 2}, "micro_batch_size": 8, "gradient_accumulation_steps": 4, "epochs": 3,
    "learning_rate": 1e-3, "max_seq_length": 128, "num_workers": 2, "resources_per_worker": {"cpu": 1}, "seed": 42,
}


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """The PostgreSQL database ``url`` names, dropped if it exists and created empty; dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database or ""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"BENCH_API_DATABASE_URL must name a database of lowercase letters, digits and _; got {name!r}")
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    drop()
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url
    finally:
        drop()
        admin.dispose()


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored after (the stack's processes inherit them)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def seed_history(database_url: str, tenant: str, dataset_id: str, n: int) -> None:
    """``n`` past jobs of ``tenant`` over the last 30 days, each with its events: 6 in 10 succeeded
    (progress with a dev history, test metrics beside the baseline's), 1 failed, 1 cancelled, 2 queued."""
    from sqlalchemy import insert

    from doctune.spec import JobSpec
    from doctune.states import JobState
    from doctune.store.db import Database, Job, JobEvent, new_id, now

    spec = JobSpec.model_validate({**SPEC, "tenant": tenant, "dataset": {"id": dataset_id}}).model_dump(mode="json")
    progress = {"phase": "done", "step": 450, "total_steps": 450, "loss": 0.21, "steps_per_s": 1.7, "eta_s": 0,
                "dev": [{"step": 14 * i, "macro_f1": 0.5 + i / 80, "loss": 1.0 - i / 40} for i in range(1, 33)]}
    scores = {"accuracy": 0.96, "macro_f1": 0.958, "n": 223}
    metrics = {"primary_metric": "macro_f1", "test": scores,
               "baseline": {"kind": "untrained_head", "test": {"accuracy": 0.21, "macro_f1": 0.07, "n": 223}}}
    error = {"code": "worker_failed", "message": "worker 1 ran out of memory at step 120", "tenant_error": False}
    t0, jobs, events = now(), [], []
    for i in range(n):
        status = (JobState.SUCCEEDED,) * 6 + (JobState.FAILED, JobState.CANCELLED, JobState.QUEUED, JobState.QUEUED)
        status = status[i % 10]
        created = t0 - timedelta(days=30) + timedelta(seconds=30 * 24 * 3600 * i / n)
        done = status != JobState.QUEUED
        job_id = new_id("job")
        jobs.append({"id": job_id, "tenant_id": tenant, "task": "classification", "spec": spec, "status": status,
                     "priority": 0, "attempt": 1, "created_at": created,
                     "progress": progress if status == JobState.SUCCEEDED else {},
                     "metrics": metrics if status == JobState.SUCCEEDED else {},
                     "error": error if status == JobState.FAILED else None,
                     "started_at": created + timedelta(minutes=1) if done else None,
                     "finished_at": created + timedelta(minutes=5) if done else None})
        events.append({"job_id": job_id, "at": created, "kind": "status", "status": JobState.QUEUED,
                       "reason": "submitted by seed", "data": {}})
        if done:
            events += [{"job_id": job_id, "at": created + timedelta(minutes=1), "kind": "status",
                        "status": JobState.RUNNING, "reason": "driver started", "data": {}},
                       *({"job_id": job_id, "at": created + timedelta(minutes=2, seconds=k), "kind": "eval",
                          "status": None, "reason": None, "data": d} for k, d in enumerate(progress["dev"][:8])),
                       {"job_id": job_id, "at": created + timedelta(minutes=5), "kind": "status", "status": status,
                        "reason": "seeded", "data": {}}]
    db = Database(database_url)
    with db.session() as s:
        s.execute(insert(Job), jobs)
        s.execute(insert(JobEvent), events)
    db.dispose()


def set_up_tenants(admin, api_url: str, database_url: str) -> list[dict[str, Any]]:
    """The tenants, their datasets, histories and keys: one user (key) per entry."""
    from doctune.client import DoctuneClient
    from doctune.corpora import load_bbc_news
    from doctune.data import to_jsonl

    data = to_jsonl(load_bbc_news(limit_per_class=20))
    per_tenant = []
    for i in range(TENANTS):
        tenant = f"load-{i:02d}"
        key = admin.create_tenant(tenant)["api_key"]
        # 0 concurrent jobs: whatever is submitted stays queued; room for every submission in the queue
        admin.set_quota(tenant, max_concurrent_jobs=0, max_queued_jobs=100_000)
        client = DoctuneClient(api_url, key)
        t0 = time.monotonic()
        ds = client.upload_dataset("bbc-small", "classification", {"data": data}, seed=42)
        t1 = time.monotonic()
        seed_history(database_url, tenant, ds["id"], SEED_JOBS)
        t2 = time.monotonic()
        job = client.submit_job({**SPEC, "dataset": {"id": ds["id"]}})  # warms the API's submit path up
        print(f"{tenant}: dataset {t1 - t0:.1f} s, history {t2 - t1:.1f} s, a job {time.monotonic() - t2:.1f} s", flush=True)
        if job["status"] != "queued":
            raise RuntimeError(f"a warm-up job of {tenant} is {job['status']}, not queued")
        keys = [key] + [admin.create_key(tenant=tenant)["api_key"] for _ in range(math.ceil(USERS / TENANTS) - 1)]
        per_tenant.append([{"tenant": tenant, "key": k, "dataset": ds["id"], "jobs": [job["id"]]} for k in keys])
    # locust's user n takes entry n: the tenants interleaved, so that every tenant has users from the start
    return [user for row in zip(*per_tenant) for user in row]


def percentile(sorted_ms: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of an ascending list."""
    return sorted_ms[max(0, math.ceil(q / 100 * len(sorted_ms)) - 1)] if sorted_ms else float("nan")


def route_stats(samples: list[tuple[str, float, str | None]]) -> dict[str, dict[str, Any]]:
    by_route: dict[str, list[tuple[float, str | None]]] = {}
    for route, ms, error in samples:
        by_route.setdefault(route, []).append((ms, error))
    out = {}
    for route, rows in sorted(by_route.items()):
        times = sorted(ms for ms, _ in rows)
        errors = [e for _, e in rows if e]
        out[route] = {"requests": len(rows), "failures": len(errors), "p50_ms": percentile(times, 50),
                      "p99_ms": percentile(times, 99), "mean_ms": sum(times) / len(times), "max_ms": times[-1],
                      "errors": sorted(set(errors))[:5]}
    return out


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by the running process ``pid``."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def reaped_children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def alone(api_url: str, user: dict[str, Any], api_pid: int, n: int = 30) -> dict[str, dict[str, float]]:
    """Each route with nobody else calling: ``n`` requests one after another (10 submissions), the
    median time and the API process's CPU per request (its idle use, the dispatcher's ticks, taken off)."""
    import httpx

    spec = {**SPEC, "dataset": {"id": user["dataset"]}}
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {user['key']}"}, timeout=60) as http:
        page = http.get("/v1/jobs", params={"limit": PAGE_SIZE}).raise_for_status().json()
        ids = [job["id"] for job in page["items"]]
        calls = {
            "GET /v1/jobs": lambda i: http.get("/v1/jobs", params={"limit": PAGE_SIZE}),
            "GET /v1/jobs?cursor=...": lambda i: http.get("/v1/jobs", params={"limit": PAGE_SIZE,
                                                                              "cursor": page["next_cursor"]}),
            "GET /v1/jobs/{id}": lambda i: http.get(f"/v1/jobs/{ids[i % len(ids)]}"),
            "GET /v1/jobs/{id}/events": lambda i: http.get(f"/v1/jobs/{ids[i % len(ids)]}/events", params={"limit": 100}),
            SUBMIT: lambda i: http.post("/v1/jobs", json=spec),
        }
        start, t = cpu_seconds(api_pid), time.monotonic()
        time.sleep(5)
        idle = (cpu_seconds(api_pid) - start) / (time.monotonic() - t)  # CPU-seconds per second
        out = {}
        for route, call in calls.items():
            times, count = [], 10 if route == SUBMIT else n
            start, t = cpu_seconds(api_pid), time.monotonic()
            for i in range(count):
                t0 = time.perf_counter()
                call(i).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            cpu = cpu_seconds(api_pid) - start - idle * (time.monotonic() - t)
            out[route] = {"p50_ms": percentile(sorted(times), 50), "api_cpu_ms": max(cpu, 0.0) / count * 1000}
    return out


def run_locust(api_url: str, users: list[dict[str, Any]], work: Path, api_pid: int) -> dict[str, Any]:
    """Run locust headless against ``api_url``; the samples, and the cores the API and locust used."""
    from importlib.metadata import version  # not `import locust`: its gevent would patch this process

    config = {"users": users, "spec": SPEC, "think_s": THINK_S, "page_size": PAGE_SIZE,
              "samples": str(work / "samples.json")}
    (work / "config.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", api_url,
           "-u", str(USERS), "-r", str(SPAWN_RATE), "-t", f"{DURATION_S}s", "--stop-timeout", "10",
           "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    env = {**os.environ, "DOCTUNE_LOAD_CONFIG": str(work / "config.json")}
    api_cpu, locust_cpu, t = cpu_seconds(api_pid), reaped_children_cpu_seconds(), time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - t
    api_cpu, locust_cpu = cpu_seconds(api_pid) - api_cpu, reaped_children_cpu_seconds() - locust_cpu
    if proc.returncode != 0 or not (work / "samples.json").exists():
        raise RuntimeError(f"locust failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    samples = [tuple(x) for x in json.loads((work / "samples.json").read_text())]
    return {"samples": samples, "wall_s": wall, "api_cores": api_cpu / wall, "locust_version": version("locust"),
            "locust_cores": locust_cpu / wall, "locust_summary": proc.stdout[-4000:]}


def queue_outcome(database_url: str, since) -> dict[str, int]:
    """The states of the jobs submitted since ``since``: all should still be queued."""
    from sqlalchemy import func, select

    from doctune.store.db import Database, Job

    db = Database(database_url)
    with db.session() as s:
        rows = s.execute(select(Job.status, func.count()).where(Job.created_at >= since).group_by(Job.status)).all()
    db.dispose()
    return {str(status): n for status, n in rows}


def stack_up(stack, tries: int = 3):
    """``stack.up()``, tried again after a failed start: on a busy machine `ray start` gives up when its
    raylet has not registered within 30 s (a constant of Ray's)."""
    from doctune.errors import DoctuneError

    for attempt in range(1, tries + 1):
        try:
            return stack.up(echo=print)
        except DoctuneError as exc:
            if attempt == tries:
                raise
            print(f"api-load: the stack did not come up ({str(exc).splitlines()[0]}); trying again", flush=True)
            stack.down(echo=print)


def measure() -> dict[str, Any]:
    """Bring the stack up on a fresh PostgreSQL database, set the tenants up, run locust, take it all down."""
    from sqlalchemy import create_engine, text

    from doctune.client import DoctuneClient
    from doctune.local import LocalStack, find_free_port_base
    from doctune.store.db import now

    home = Path(tempfile.mkdtemp(prefix="doctune-bench-api-"))
    # Ray's dashboard gets 60 s to start by default: not always enough on a busy shared machine
    slow_start = os.environ.get("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "300")
    with fresh_database(DATABASE_URL) as url, environment(DOCTUNE_HOME=str(home), DOCTUNE_DATABASE_URL=url,
                                                          DOCTUNE_RATE_LIMIT_PER_ADDRESS=RATE_LIMIT_PER_ADDRESS,
                                                          RAY_DASHBOARD_STARTUP_TIMEOUT_S=slow_start):
        engine = create_engine(url)
        with engine.connect() as c:
            server = c.execute(text("SHOW server_version")).scalar()
        engine.dispose()
        stack = LocalStack(home=home, base=find_free_port_base(start=42000), num_cpus=2)
        try:
            s = stack_up(stack)  # inside the try: a stack that fails half-way up is taken down too
            admin = DoctuneClient(s.api_url, s.admin_key)
            t = time.monotonic()
            users = set_up_tenants(admin, s.api_url, url)
            print(f"api-load: {TENANTS} tenants, {SEED_JOBS} past jobs each, {len(users)} keys "
                  f"({time.monotonic() - t:.0f} s); locust: {USERS} users for {DURATION_S} s", flush=True)
            since, api_pid = now(), int((stack.run_dir / "api.pid").read_text())
            single = alone(s.api_url, users[0], api_pid)
            load_before = os.getloadavg()[0]
            with tempfile.TemporaryDirectory(prefix="doctune-locust-") as work:
                run = run_locust(s.api_url, users, Path(work), api_pid)
            print(run["locust_summary"], flush=True)
            outcome, load_after = queue_outcome(url, since), os.getloadavg()[0]
        finally:
            stack.down(echo=print)
    routes = route_stats(run["samples"])
    reads = {r: v for r, v in routes.items() if r.startswith("GET ")}
    worst_read = max((v["p99_ms"] for v in reads.values()), default=float("nan"))
    failures = sum(v["failures"] for v in routes.values())
    times = sorted(ms for _, ms, _ in run["samples"])
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {_platform.machine()}",
        "load_average_1min": [round(load_before, 1), round(load_after, 1)],  # other work on the machine, before and after
        "database": f"PostgreSQL {server}",
        "locust": run["locust_version"],
        "users": USERS, "spawn_rate": SPAWN_RATE, "duration_s": DURATION_S, "think_s": list(THINK_S),
        "tenants": TENANTS, "seeded_jobs_per_tenant": SEED_JOBS, "page_size": PAGE_SIZE,
        "rate_limit_per_address": RATE_LIMIT_PER_ADDRESS,
        "routes": routes,
        "alone": single,
        "total": {"requests": len(times), "failures": failures, "p50_ms": percentile(times, 50),
                  "p99_ms": percentile(times, 99), "requests_per_s": len(times) / run["wall_s"]},
        "api_cores": run["api_cores"], "locust_cores": run["locust_cores"],
        "submitted_jobs_by_state": outcome,
        "goals": {"errors": failures, "errors_met": failures == 0, "read_p99_ms": worst_read,
                  "read_p99_goal_ms": READ_P99_GOAL_MS, "read_p99_met": worst_read <= READ_P99_GOAL_MS},
    }


def render(result: dict[str, Any]) -> str:
    """The section of docs/benchmarks.md."""
    r, g = result, result["goals"]
    queued = r["submitted_jobs_by_state"].get("queued", 0)
    others = {k: v for k, v in r["submitted_jobs_by_state"].items() if k != "queued"}
    lines = [
        "## API under load",
        "",
        f"`tests/bench/api_load.py` on {r['date']} ({r['machine']}): the embedded stack (Ray head, weed, the",
        f"API, the console) on 127.0.0.1 with {r['database']} as the metadata store, and locust {r['locust']}",
        f"(headless, on the same machine): {r['users']} users, {r['spawn_rate']:.0f} started per second, for "
        f"{r['duration_s']} s. {r['tenants']} tenants,",
        f"each with {r['seeded_jobs_per_tenant']:,} past jobs (with progress, metrics and events), a key per user and a",
        "concurrent-job quota of 0, so that every submitted job stays queued. Each user, with "
        f"{r['think_s'][0]}-{r['think_s'][1]} s of think",
        f"time between actions, lists its tenant's jobs (pages of {r['page_size']}, sometimes the next page), reads a job",
        "it saw listed and the job's events, and submits a job (1 action in 10). Times as locust measured them,",
        "ramp-up included; p50 and p99 exact over every request. All users share one address, so the per-address",
        f"rate limit was raised to {r['rate_limit_per_address']} for the run (the per-key limit kept its default).",
        "",
        "| route | requests | p50 ms | p99 ms | failures |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[f"| `{route}` | {v['requests']:,} | {v['p50_ms']:.0f} | {v['p99_ms']:.0f} | {v['failures']} |"
          for route, v in r["routes"].items()],
        f"| **all** | **{r['total']['requests']:,}** | **{r['total']['p50_ms']:.0f}** | **{r['total']['p99_ms']:.0f}** "
        f"| **{r['total']['failures']}** |",
        "",
        f"{r['total']['requests_per_s']:.1f} requests/s; the API process used {r['api_cores']:.2f} cores and locust "
        f"{r['locust_cores']:.2f} (the machine's 1-minute load average: {r['load_average_1min'][0]} before the run, "
        f"{r['load_average_1min'][1]} after). Jobs submitted during the run: {queued} queued"
        + (", " + ", ".join(f"{n} {state}" for state, n in others.items()) if others else ", none started") + ".",
        "",
        "Each route alone (one request at a time, before the load; 30 requests, 10 submissions): the median",
        "time, and the API process's CPU per request (its idle use and the dispatcher's ticks taken off).",
        "",
        "| route | p50 ms, alone | API CPU ms per request |",
        "| --- | ---: | ---: |",
        *[f"| `{route}` | {v['p50_ms']:.0f} | {v['api_cpu_ms']:.1f} |" for route, v in r["alone"].items()],
        "",
        f"Goals: 0 errors — **{'met' if g['errors_met'] else 'not met'}** ({g['errors']}); p99 ≤ "
        f"{g['read_p99_goal_ms']:.0f} ms on reads — **{'met' if g['read_p99_met'] else 'not met'}** "
        f"(worst read route {g['read_p99_ms']:.0f} ms).",
        "",
    ]
    lines += [f"{note}\n" for note in r.get("notes", [])]  # added by hand after a run: what changed, where time goes
    cores = int(r["machine"].split()[0])
    if not g["read_p99_met"] and max(r["load_average_1min"]) > cores:
        lines += [f"The machine was shared while this ran (load average {max(r['load_average_1min'])} on {cores} "
                  f"cores): the API process got {r['api_cores']:.2f} cores, so requests waited for a core, and the "
                  "times above say more about the machine than about the API. Rerun on an idle machine.", ""]
    errors = [(route, e) for route, v in r["routes"].items() for e in v.get("errors", [])]
    if errors:
        lines += ["Errors seen (first of each kind):", "", *[f"- `{route}`: {e}" for route, e in errors], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    result = measure()
    print(json.dumps(result, indent=2))
    (REPO / "docs" / "bench_api_load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
