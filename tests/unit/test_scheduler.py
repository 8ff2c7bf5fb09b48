"""The dispatch policy (weighted fair share, quotas, cluster room) as a pure
function, and claiming under the dispatch lock: racing dispatchers on SQLite and
PostgreSQL never start more jobs than a tenant's quota allows, and the claim, which reads
only each tenant's queue heads, starts exactly what the policy over the whole queue starts
and tells each head why it waits. The policy's heap gives the decisions and reasons that
looking at every tenant's head for each start gave."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from doctune.config import Settings
from doctune.services import tenants
from doctune.services import Platform
from doctune.services.scheduler import (BEHIND, HEAD_DEPTH, Demand, Plan, QueuedJob, TenantState, claim_jobs,
                                        holds_workers, job_demand, plan_dispatch, running_work, tenant_states)
from doctune.spec import TenantSpec
from doctune.states import JobState
from doctune.store.db import Job, Tenant, now

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


def test_a_plan_over_queue_heads_stops_where_a_truncated_tenants_next_job_is_unknown():
    queued = [q(f"a{i}", "a", age=i) for i in range(5)] + [q("b0", "b", age=9)]
    tenants_ = {"a": TenantState(), "b": TenantState(running_jobs=4, running_cpus=4)}
    whole = plan_dispatch(tenants_, queued, Demand(cpus=4))
    heads = plan_dispatch(tenants_, queued[:2] + queued[-1:], Demand(cpus=4), truncated={"a"})
    assert whole.start == ["a0", "a1", "a2", "a3"] and whole.cut is None
    assert heads.cut == "a" and heads.start == whole.start[:2]  # a prefix of the whole plan, never another job


def reference_plan(tenants, queued, free, reachable=None):
    """plan_dispatch as it was before its heap: each start looked at every tenant's head again."""
    state = {k: TenantState(**vars(v)) for k, v in tenants.items()}
    queues = {}
    for job in sorted(queued, key=lambda j: (-j.priority, j.created_at, j.id)):
        queues.setdefault(job.tenant, []).append(job)
    room, plan = free, Plan()
    while (job := _reference_next(queues, state, room, reachable, plan)) is not None:
        plan.waiting.pop(job.id, None)
        ts = state[job.tenant]
        ts.running_jobs, ts.running_cpus, ts.running_gpus = (ts.running_jobs + 1, ts.running_cpus + job.demand.cpus,
                                                             ts.running_gpus + job.demand.gpus)
        room = Demand(room.cpus - job.demand.cpus, room.gpus - job.demand.gpus)
        plan.start.append(job.id)
    for q_ in queues.values():
        for job in q_[1:]:
            plan.waiting.setdefault(job.id, BEHIND)
    return plan


def fits_(d, room):
    return d.cpus <= room.cpus + 1e-9 and d.gpus <= room.gpus + 1e-9


def _reference_next(queues, state, room, reachable, plan):
    candidates = []
    for tenant, q_ in queues.items():
        if not q_:
            continue
        head, ts = q_[0], state.setdefault(tenant, TenantState())
        if (why := ts.allows(head.demand)) is not None:
            plan.waiting[head.id] = f"tenant {tenant} {why}"
            continue
        fits = fits_(head.demand, room)
        if not fits:
            plan.waiting[head.id] = f"waiting for cluster room ({head.demand.cpus:g} CPU, {head.demand.gpus:g} GPU needed)"
            if reachable is None or not fits_(head.demand, reachable):
                continue
        candidates.append((ts.share(), -head.priority, head.created_at, head.id, tenant, fits))
    if not candidates:
        return None
    *_, tenant, fits = min(candidates)
    if not fits:
        held = queues[tenant][0].id
        plan.waiting[held] += "; next by fair share, so the room it needs is held for it"
        for *_, job_id, _, others_fit in candidates:
            if others_fit:
                plan.waiting[job_id] = f"behind job {held}, next by fair share, for which the cluster room is held"
        return None
    return queues[tenant].pop(0)


def test_the_plan_is_the_one_that_looked_at_every_head_for_each_start():
    for seed in range(300):
        assert_plans_agree(random.Random(seed))


def assert_plans_agree(rnd):
    tenants_ = {f"t{i}": TenantState(weight=rnd.choice([0.5, 1, 2, 3]), max_jobs=rnd.choice([None, 1, 3, 6]),
                                     max_cpus=rnd.choice([None, None, 4, 10]), max_gpus=rnd.choice([None, 1]),
                                     running_jobs=(n := rnd.randrange(3)), running_cpus=n * rnd.choice([0, 1, 2]),
                                     running_gpus=rnd.choice([0, 0, 1]))
                for i in range(rnd.randrange(1, 9))}
    queued = [QueuedJob(f"j{i:03d}", rnd.choice([*tenants_, "stranger"]),
                        Demand(rnd.choice([0.5, 1, 2, 4, 16]), rnd.choice([0, 0, 0, 1])), rnd.choice([0, 0, 3]),
                        float(rnd.randrange(20))) for i in range(rnd.randrange(60))]
    free = Demand(rnd.choice([0, 1, 3, 8, 30]), rnd.choice([0, 1, 2]))
    reachable = rnd.choice([None, Demand(free.cpus + rnd.choice([0, 4, 12]), free.gpus + rnd.choice([0, 1]))])
    got, want = plan_dispatch(tenants_, queued, free, reachable), reference_plan(tenants_, queued, free, reachable)
    assert (got.start, got.waiting) == (want.start, want.waiting), (tenants_, queued, free, reachable)


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


def add_jobs(p, rows):
    with p.db.session() as s:
        s.add_all(Job(task="classification", **r) for r in rows)


def queued_reasons(p):
    with p.db.session() as s:
        return {j.id: j.progress.get("queue_reason") for j in s.query(Job).filter(Job.status == JobState.QUEUED)}


def test_running_work_read_as_columns_matches_each_jobs_demand_and_placement(platform):
    specs = [{}, {"num_workers": 3}, {"num_workers": 2, "resources_per_worker": {"cpu": 0.5, "gpu": 1}},
             {"resources_per_worker": None}, {"num_workers": 4, "resources_per_worker": {"gpu": 0.25}}]
    progress = [{}, {"worker_pids": {}}, {"worker_pids": {"0": 7}}, {"worker_pids": {"0": 7, "1": 8}}, {"step": 3}]
    add_jobs(platform, [dict(id=f"job-{i}", tenant_id="team-a" if i % 2 else "team-b", spec=spec, progress=prog,
                             status=JobState.RUNNING if i % 3 else JobState.STARTING)
                        for i, (spec, prog) in enumerate((sp, pr) for sp in specs for pr in progress)])
    add_jobs(platform, [dict(id="job-done", tenant_id="team-a", spec={"num_workers": 9}, status=JobState.SUCCEEDED)])
    with platform.db.session() as s:
        states, placed, unplaced = running_work(s)
        active = list(s.query(Job).filter(Job.status.in_(JobState.active())))
        expected = tenant_states(list(s.query(Tenant)), active)
    assert states == expected
    for holds, got in ((True, placed), (False, unplaced)):
        ds = [job_demand(j.spec) for j in active if holds_workers(j) == holds]
        assert (got.cpus, got.gpus) == pytest.approx((sum(d.cpus for d in ds), sum(d.gpus for d in ds)))


def test_claiming_over_queue_heads_starts_what_the_whole_queue_plan_starts(platform):
    """Random tenants, quotas, priorities and demands, several ticks, the cluster's room changing: each
    tick claims exactly the whole-queue plan's jobs, in its order, and each head shows that plan's reason."""
    rnd = random.Random(7)
    t0 = now()
    with platform.db.session() as s:
        for i in range(5):
            s.add(Tenant(id=f"team-{i}", weight=rnd.choice([1, 2, 3]), max_concurrent_jobs=rnd.choice([None, 3, 6]),
                         max_cpus=rnd.choice([None, None, 9.0]), max_gpus=rnd.choice([None, 1.0])))
    add_jobs(platform, [dict(id=f"job-{i:03d}", tenant_id=f"team-{rnd.randrange(5)}", priority=rnd.choice([0, 0, 0, 5]),
                             created_at=t0 + timedelta(seconds=rnd.randrange(100)),
                             spec={"num_workers": rnd.choice([1, 2]), "resources_per_worker": {
                                 "cpu": rnd.choice([0.5, 1, 2]), "gpu": rnd.choice([0, 0, 1])}})
                        for i in range(80)])
    for tick in range(12):
        free = Demand(cpus=rnd.choice([0, 3, 12, 40]), gpus=rnd.choice([0, 1, 2]))
        with platform.db.session() as s:
            active = list(s.query(Job).filter(Job.status.in_(JobState.active())))
            queued = [QueuedJob(j.id, j.tenant_id, job_demand(j.spec), j.priority, j.created_at)
                      for j in s.query(Job).filter(Job.status == JobState.QUEUED)]
            placed = [job_demand(j.spec) for j in active if holds_workers(j)]
            unplaced = [job_demand(j.spec) for j in active if not holds_workers(j)]
            room = Demand(free.cpus - sum(d.cpus for d in unplaced), free.gpus - sum(d.gpus for d in unplaced))
            reachable = Demand(free.cpus + sum(d.cpus for d in placed), free.gpus + sum(d.gpus for d in placed))
            whole = plan_dispatch(tenant_states(list(s.query(Tenant)), active), queued, room, reachable)
        assert [j.id for j in claim_jobs(platform, free)] == whole.start, f"tick {tick}"
        with platform.db.session() as s:
            for j in s.query(Job).filter(Job.status.in_(JobState.active())):  # some start their workers, some end
                if rnd.random() < 0.4:
                    j.status = JobState.SUCCEEDED
                elif rnd.random() < 0.5:
                    j.status, j.progress = JobState.RUNNING, {"worker_pids": {"0": 1}}
            heads = [j.id for t in range(5) for j in s.scalars(
                select(Job).where(Job.tenant_id == f"team-{t}", Job.status == JobState.QUEUED)
                .order_by(Job.priority.desc(), Job.created_at, Job.id).limit(HEAD_DEPTH))]
        reasons = queued_reasons(platform)
        assert {h: reasons[h] for h in heads} == {h: whole.waiting[h] for h in heads}, f"tick {tick}"


def test_only_the_queue_heads_get_a_reason_and_the_rest_of_the_progress_is_kept(platform):
    spec = {"num_workers": 1, "resources_per_worker": {"cpu": 1}}
    t0 = now()
    add_jobs(platform, [dict(id=f"job-{i}", tenant_id="team-a", spec=spec, created_at=t0 + timedelta(seconds=i),
                             progress={"submitted_by": "ci"}) for i in range(HEAD_DEPTH + 3)])
    add_jobs(platform, [dict(id=f"run-{i}", tenant_id="team-a", spec=spec, status=JobState.RUNNING,
                             progress={"worker_pids": {"0": i}}) for i in range(2)])
    assert claim_jobs(platform, Demand(cpus=8)) == []  # team-a is at its quota of 2
    reasons = queued_reasons(platform)
    assert reasons["job-0"] == "tenant team-a at its concurrent-job quota (2)"
    assert all(reasons[f"job-{i}"] == BEHIND for i in range(1, HEAD_DEPTH))
    assert all(reasons[f"job-{i}"] is None for i in range(HEAD_DEPTH, HEAD_DEPTH + 3))  # not read: not written
    with platform.db.session() as s:
        assert s.get(Job, "job-0").progress == {"submitted_by": "ci", "phase": "queued",
                                                "queue_reason": "tenant team-a at its concurrent-job quota (2)"}
    add_jobs(platform, [dict(id="job-urgent", tenant_id="team-a", spec=spec, priority=5)])  # the new head
    claim_jobs(platform, Demand(cpus=8))
    reasons = queued_reasons(platform)
    assert "concurrent-job quota" in reasons["job-urgent"] and reasons["job-0"] == BEHIND


def test_a_tenant_that_starts_more_than_its_queue_heads_gets_the_whole_queues_share(platform):
    """Room for many jobs: team-a starts more jobs than one read of its heads holds, in priority then
    age order, as a plan over its whole queue would."""
    spec = {"num_workers": 1, "resources_per_worker": {"cpu": 1}}
    t0 = now()
    with platform.db.session() as s:
        s.get(Tenant, "team-a").max_concurrent_jobs = None
    add_jobs(platform, [dict(id=f"job-{i:02d}", tenant_id="team-a", spec=spec, priority=i % 3,
                             created_at=t0 + timedelta(seconds=i)) for i in range(12)])
    started = [j.id for j in claim_jobs(platform, Demand(cpus=7))]
    assert len(started) == 7 > HEAD_DEPTH
    assert started == ["job-02", "job-05", "job-08", "job-11", "job-01", "job-04", "job-07"]
    add_jobs(platform, [dict(id=f"job-{i:02d}", tenant_id="team-a", spec=spec, priority=i % 3,
                             created_at=t0 + timedelta(seconds=i)) for i in range(12, 200)])
    with platform.db.session() as s:
        queued = [QueuedJob(j.id, j.tenant_id, ONE, j.priority, j.created_at)
                  for j in s.query(Job).filter(Job.status == JobState.QUEUED)]
    whole = plan_dispatch({"team-a": TenantState(running_jobs=7, running_cpus=7)}, queued, Demand(cpus=150))
    # the 7 starting jobs' workers will take 7 of the 157 CPUs reported free; 150 > 8 * 8 * HEAD_DEPTH
    assert [j.id for j in claim_jobs(platform, Demand(cpus=157))] == whole.start and len(whole.start) == 150


def test_each_database_has_its_own_jobs_demands(tmp_path):
    """The dispatcher remembers each job's demand; a job of the same id in another database is another job."""
    started = []
    for cpus in (1, 4):
        p = Platform(Settings(home=str(tmp_path / f"home-{cpus}"), database_url=f"sqlite:///{tmp_path / f'{cpus}.db'}"))
        p.db.migrate()
        with p.db.session() as s:
            s.add(Tenant(id="team-a"))
        add_jobs(p, [dict(id="job-x", tenant_id="team-a", spec={"resources_per_worker": {"cpu": cpus}})])
        started.append([j.id for j in claim_jobs(p, Demand(cpus=2))])
        p.db.dispose()
    assert started == [["job-x"], []]
