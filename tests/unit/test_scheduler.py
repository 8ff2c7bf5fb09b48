"""The dispatch policy (weighted fair share, quotas, cluster room) as a pure
function, and claiming under the dispatch lock: racing dispatchers on SQLite and
PostgreSQL never start more jobs than a tenant's quota allows."""

from __future__ import annotations

import threading

import pytest

from doctune.config import Settings
from doctune.services import tenants
from doctune.services import Platform
from doctune.services.scheduler import Demand, QueuedJob, TenantState, claim_jobs, plan_dispatch
from doctune.spec import TenantSpec
from doctune.store.db import Job, Tenant

pytestmark = pytest.mark.both_databases  # the store itself: on PostgreSQL too

ONE = Demand(cpus=1)


def q(job_id, tenant, cpus=1.0, priority=0, age=0.0):
    return QueuedJob(job_id, tenant, Demand(cpus), priority, age)


def test_fair_share_alternates_between_equal_tenants():
    queued = [q(f"a{i}", "a", age=i) for i in range(4)] + [q(f"b{i}", "b", age=10 + i) for i in range(4)]
    plan = plan_dispatch({"a": TenantState(), "b": TenantState()}, queued, Demand(cpus=4))
    assert sorted(plan.start) == ["a0", "a1", "b0", "b1"]


def test_weight_gives_a_bigger_share():
    queued = [q(f"a{i}", "a", age=i) for i in range(6)] + [q(f"b{i}", "b", age=i) for i in range(6)]
    plan = plan_dispatch({"a": TenantState(weight=2), "b": TenantState(weight=1)}, queued, Demand(cpus=6))
    assert sum(j.startswith("a") for j in plan.start) == 4 and sum(j.startswith("b") for j in plan.start) == 2


def test_running_work_counts_against_the_share():
    tenants_ = {"a": TenantState(running_jobs=3, running_cpus=3), "b": TenantState()}
    plan = plan_dispatch(tenants_, [q("a9", "a"), q("b9", "b", age=99)], Demand(cpus=1))
    assert plan.start == ["b9"] and "cluster room" in plan.waiting["a9"]


def test_quotas_are_never_exceeded():
    tenants_ = {"a": TenantState(max_jobs=2), "b": TenantState(max_cpus=3)}
    queued = [q(f"a{i}", "a", age=i) for i in range(5)] + [q(f"b{i}", "b", cpus=2, age=i) for i in range(5)]
    plan = plan_dispatch(tenants_, queued, Demand(cpus=100))
    assert sorted(plan.start) == ["a0", "a1", "b0"]
    assert "concurrent-job quota (2)" in plan.waiting["a2"]
    assert "CPU quota 3" in plan.waiting["b1"]


def test_priority_then_age_within_a_tenant_and_head_of_line():
    queued = [q("old", "a", age=1), q("urgent", "a", priority=5, age=2), q("big", "b", cpus=8, age=0), q("small", "b", age=3)]
    plan = plan_dispatch({}, queued, Demand(cpus=3))
    assert plan.start[0] == "urgent" and "old" in plan.start
    assert "small" not in plan.start  # does not overtake its own tenant's big job
    assert plan.waiting["small"] == "behind an earlier job of the same tenant"


def test_the_fair_next_job_holds_the_room_it_waits_for_and_small_jobs_do_not_starve_it():
    # a's big job is next by fair share (a runs nothing); b's small jobs would take each CPU that comes free
    tenants_ = {"a": TenantState(), "b": TenantState(running_jobs=1, running_cpus=1)}
    queued = [q("big", "a", cpus=2, age=0), q("small", "b", cpus=0.5, age=1)]
    plan = plan_dispatch(tenants_, queued, Demand(cpus=1), reachable=Demand(cpus=2))
    assert plan.start == []
    assert "held for it" in plan.waiting["big"] and "behind job big" in plan.waiting["small"]
    # without knowing the room reachable (or with a job that would not fit even then) the small job goes past
    assert plan_dispatch(tenants_, queued, Demand(cpus=1)).start == ["small"]
    assert plan_dispatch(tenants_, [q("huge", "a", cpus=8), q("small", "b", cpus=0.5, age=1)], Demand(cpus=1),
                         reachable=Demand(cpus=2)).start == ["small"]
    # once the room is free, the big job starts first
    assert plan_dispatch(tenants_, queued, Demand(cpus=2), reachable=Demand(cpus=2)).start == ["big"]


def test_gpu_jobs_need_gpus():
    plan = plan_dispatch({}, [QueuedJob("g", "a", Demand(1, 1))], Demand(cpus=8, gpus=0))
    assert plan.start == [] and "GPU" in plan.waiting["g"]


def test_nothing_queued_nothing_started():
    assert plan_dispatch({"a": TenantState()}, [], Demand(4)).start == []


@pytest.fixture
def platform(database_url, tmp_path):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    for name in ("team-a", "team-b"):
        tenants.create_tenant(p, admin, TenantSpec(name=name))
    with p.db.session() as s:
        s.get(Tenant, "team-a").max_concurrent_jobs = 2
        s.get(Tenant, "team-b").max_concurrent_jobs = 3
    yield p
    p.db.dispose()


def test_racing_dispatchers_respect_quotas(platform):
    spec = {"num_workers": 1, "resources_per_worker": {"cpu": 1}}

    def submit(tenant, n):
        for i in range(n):
            with platform.db.session() as s:
                s.add(Job(id=f"job-{tenant}-{i}", tenant_id=tenant, task="classification", spec=spec))

    submitters = [threading.Thread(target=submit, args=(t, 10)) for t in ("team-a", "team-b")]
    claimed: list[str] = []
    errors: list[BaseException] = []

    submitted = threading.Event()

    def dispatch():
        try:
            while True:  # race the submitters, then take one last look once all are queued
                last = submitted.is_set()
                claimed.extend(j.id for j in claim_jobs(platform, Demand(cpus=100)))
                if last:
                    break
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    dispatchers = [threading.Thread(target=dispatch) for _ in range(4)]
    for t in submitters + dispatchers:
        t.start()
    for t in submitters:
        t.join()
    submitted.set()
    for t in dispatchers:
        t.join()
    assert errors == []
    with platform.db.session() as s:
        active = [j for j in s.query(Job).all() if j.status == "starting"]
    per_tenant = {t: sum(j.tenant_id == t for j in active) for t in ("team-a", "team-b")}
    assert per_tenant == {"team-a": 2, "team-b": 3}
    assert len(claimed) == len(set(claimed)) == 5  # nobody claimed a job twice


def test_a_running_job_whose_workers_are_not_placed_yet_still_takes_its_cpus(platform):
    """Between a job's start and its workers' placement the cluster reports their CPUs free: the
    dispatcher must not hand them to another job meanwhile (it did, and piled up waiting drivers)."""
    spec = {"num_workers": 2, "resources_per_worker": {"cpu": 0.5}}
    with platform.db.session() as s:
        s.add(Tenant(id="team-c", max_concurrent_jobs=10))
    with platform.db.session() as s:
        s.add(Job(id="job-driver-up", tenant_id="team-c", task="classification", spec=spec, status="running",
                  progress={"phase": "scheduling", "worker_pids": {}}))
        s.add(Job(id="job-next", tenant_id="team-c", task="classification", spec=spec))
    assert claim_jobs(platform, Demand(cpus=1)) == []  # the 1 free CPU is the running job's
    with platform.db.session() as s:
        s.get(Job, "job-driver-up").progress = {"phase": "training", "worker_pids": {"0": 11, "1": 12}}
    assert [j.id for j in claim_jobs(platform, Demand(cpus=1))] == ["job-next"]  # now it holds them itself
