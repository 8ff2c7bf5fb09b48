"""State changes are compare-and-set in the database, on SQLite and PostgreSQL: a cancel that
races a job's finish never overwrites ``succeeded`` (and a late finish never overwrites
``cancelled``); each job ends exactly once, with one status event; a sweep's cancel is not
undone by its driver finishing."""

from __future__ import annotations

import threading

import pytest

from doctune.errors import DoctuneError
from doctune.services import jobs as jobs_svc
from doctune.services import sweeps as sweeps_svc
from doctune.services import tenants
from doctune.spec import TenantSpec
from doctune.store.db import Job, JobEvent, Sweep

pytestmark = pytest.mark.both_databases  # the store itself: on PostgreSQL too

SPEC = {"tenant": "team-a", "task": "classification", "dataset": {"id": "ds-1"}, "num_workers": 1,
        "resources_per_worker": {"cpu": 1}}


@pytest.fixture
def world(platform):
    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    _, key = tenants.create_tenant(platform, admin, TenantSpec(name="team-a"))
    return platform, tenants.authenticate(platform, key)


def add_jobs(p, n, status="running"):
    with p.db.session() as s:
        for i in range(n):
            s.add(Job(id=f"job-{i}", tenant_id="team-a", task="classification", spec=SPEC, status=status))
    return [f"job-{i}" for i in range(n)]


def terminal_events(p, job_id):
    with p.db.session() as s:
        return [e.status for e in s.query(JobEvent).filter(JobEvent.job_id == job_id)
                if e.status in ("succeeded", "failed", "cancelled")]


def test_cancel_cannot_overwrite_succeeded(world):
    p, member = world
    [job_id] = add_jobs(p, 1)
    jobs_svc.update_job(p, job_id, status="succeeded", model_id="model-1", reason="trained")
    with pytest.raises(DoctuneError) as e:
        jobs_svc.cancel_job(p, member, job_id)
    assert e.value.code == "conflict" and "already succeeded" in e.value.message
    with p.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.model_id) == ("succeeded", "model-1")


def test_a_stale_read_cannot_write_a_state(world):
    """The writer read 'running'; meanwhile the job succeeded: its cancel changes nothing."""
    p, _ = world
    [job_id] = add_jobs(p, 1)
    with p.db.session() as stale:
        job = stale.get(Job, job_id)
        assert job.status == "running"
        jobs_svc.update_job(p, job_id, status="succeeded", reason="the driver finished")  # another connection
        assert jobs_svc.set_job_status(stale, job, "cancelled", reason="late cancel") is None
    with p.db.session() as s:
        assert s.get(Job, job_id).status == "succeeded"
    assert terminal_events(p, job_id) == ["succeeded"]


def test_racing_cancel_and_finish_end_each_job_once(world):
    p, member = world
    ids = add_jobs(p, 12)
    outcome: dict[str, dict[str, str]] = {i: {} for i in ids}
    errors: list[BaseException] = []

    def race(job_id, who, barrier):
        try:
            barrier.wait()
            if who == "cancel":
                try:
                    outcome[job_id]["cancel"] = jobs_svc.cancel_job(p, member, job_id).status
                except DoctuneError as exc:
                    outcome[job_id]["cancel"] = exc.code
            else:
                outcome[job_id]["finish"] = jobs_svc.update_job(p, job_id, status="succeeded", model_id="m").status
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    for job_id in ids:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=race, args=(job_id, who, barrier)) for who in ("cancel", "finish")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    with p.db.session() as s:
        final = {i: s.get(Job, i).status for i in ids}
    for job_id in ids:
        ends = terminal_events(p, job_id)
        assert len(ends) == 1 and ends[0] == final[job_id], (job_id, ends, final[job_id])
        seen = outcome[job_id]
        if final[job_id] == "succeeded":
            assert seen == {"cancel": "conflict", "finish": "succeeded"}
        else:
            assert seen == {"cancel": "cancelled", "finish": "cancelled"}
            with p.db.session() as s:
                assert s.get(Job, job_id).model_id is None


def test_a_cancelled_sweep_stays_cancelled_when_its_driver_finishes(world):
    p, _ = world
    with p.db.session() as s:
        s.add(Sweep(id="sweep-1", tenant_id="team-a", task="classification", spec={}, status="running"))
    sweeps_svc.update_sweep(p, "sweep-1", status="cancelled")
    row = sweeps_svc.update_sweep(p, "sweep-1", status="succeeded", best_job_id="job-0")
    assert row.status == "cancelled"
    with p.db.session() as s:
        assert s.get(Sweep, "sweep-1").status == "cancelled"
