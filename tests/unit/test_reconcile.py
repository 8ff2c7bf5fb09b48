"""The reconciler converges the metadata store on what the cluster runs, on SQLite and PostgreSQL:
a job claimed but never handed to the cluster is queued again and then runs; a driver the cluster
took but whose id was never recorded is adopted, not run twice; a job the cluster forgot (its head
restarted) retries from its last checkpoint in the real S3 server, then fails with the reason when
no retries are left; a sweep whose driver is gone fails with its trials; deployments stuck in
``deploying`` or ``deleting`` settle from what Serve runs; and all of it happens at API start and
every few seconds on its own, with no GET.

The cluster here is :class:`FakeCluster`, a test double of doctune's own Runner port
(``doctune.runners.base.Runner``), not of Ray: the Ray side of these faults is in
tests/integration/test_faults.py."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from doctune.config import Settings
from doctune.runners.base import AttemptStatus, ClusterResources
from doctune.services import Platform, tenants
from doctune.services.reconcile import Reconciler, reconcile_all
from doctune.services.scheduler import Demand, claim_jobs, dispatch_once
from doctune.spec import TenantSpec
from doctune.states import AttemptState, DeploymentState, JobState, SweepState
from doctune.store.db import Deployment, Job, JobEvent, Model, Sweep, now

from tests.unit.test_cli import s3  # noqa: F401  (a bucket of its own on the session's real SeaweedFS server)

SPEC = {"tenant": "team-a", "task": "classification", "num_workers": 2, "retries": 1,
        "resources_per_worker": {"cpu": 0.5}, "dataset": {"id": "ds-x"}, "base_model": "all-minilm-l6-v2"}


class FakeCluster:
    """Implements the Runner port as a cluster would answer it; ``restart_head()`` forgets every
    run and Serve application, as a restarted Ray head does; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.runs: dict[str, AttemptStatus] = {}
        self.submitted: list[tuple[str, list[str], str]] = []
        self.apps: dict[str, dict] = {}
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise ConnectionError("the Ray dashboard does not answer")

    def submit(self, module: str, args: list[str], *, submission_id: str | None = None) -> str:
        self._up()
        sid = submission_id or f"raysubmit_{len(self.submitted)}"
        if sid in self.runs:
            raise RuntimeError(f"job {sid} already exists")
        self.runs[sid] = AttemptStatus(AttemptState.RUNNING)
        self.submitted.append((module, args, sid))
        return sid

    def status(self, submission_id: str) -> AttemptStatus:
        self._up()
        return self.runs.get(submission_id, AttemptStatus(AttemptState.UNKNOWN, f"{submission_id} not found"))

    def stop(self, submission_id: str) -> None:
        self.runs[submission_id] = AttemptStatus(AttemptState.STOPPED)

    def logs(self, submission_id: str) -> str:
        return ""

    def deploy_app(self, deployment_id: str) -> str:
        return self.submit("ray_jobs.deploy", ["--deployment-id", deployment_id])

    def delete_app(self, deployment_id: str) -> str:
        return self.submit("ray_jobs.deploy", ["--deployment-id", deployment_id, "--delete"])

    def applications(self) -> dict:
        self._up()
        return self.apps

    def resources(self) -> ClusterResources:
        self._up()
        return ClusterResources(cpus=4, gpus=0, memory_bytes=8e9)

    def restart_head(self) -> None:
        self.runs.clear()
        self.apps.clear()

    def end(self, submission_id: str, state: AttemptState, message: str = "") -> None:
        self.runs[submission_id] = AttemptStatus(state, message)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def p(database_url, tmp_path, s3, cluster):  # noqa: F811
    """A Platform on a fresh database (SQLite, and PostgreSQL when configured), the real S3 server,
    the fake cluster, tenant team-a, and a grace period of 0 s (a claim counts as stranded at once)."""
    plat = Platform(Settings(home=str(tmp_path), database_url=database_url, reconcile_grace_s=0.0, **s3),
                    runner=cluster)
    plat.db.migrate()
    admin = tenants.authenticate(plat, tenants.create_admin_key(plat))
    tenants.create_tenant(plat, admin, TenantSpec(name="team-a"))
    yield plat
    plat.objects.delete_prefix("tenants/team-a/")
    plat.db.dispose()


def add_job(p: Platform, job_id: str, **fields) -> None:
    with p.db.session() as s:
        s.add(Job(id=job_id, tenant_id="team-a", task="classification", spec=dict(SPEC), **fields))


def job(p: Platform, job_id: str) -> Job:
    with p.db.session() as s:
        return s.get(Job, job_id)


def reasons(p: Platform, job_id: str) -> list[str]:
    with p.db.session() as s:
        return [e.reason or "" for e in s.execute(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "status")
                                                  .order_by(JobEvent.id)).scalars()]


def active_jobs(p: Platform) -> int:
    """The tenant's running-job count, as its concurrency quota sees it."""
    with p.db.session() as s:
        return len(list(s.execute(select(Job.id).where(Job.tenant_id == "team-a",
                                                       Job.status.in_(JobState.active()))).scalars()))


def write_checkpoint(p: Platform, job_id: str, attempt: int, step: int) -> str:
    """A complete two-rank checkpoint of ``job_id``'s attempt in the S3 server (the layout
    doctune.train.checkpoints writes); returns its bucket/key path."""
    from doctune.train.checkpoints import MANIFEST_PREFIX, STATE_FILE

    d = f"tenants/team-a/jobs/{job_id}/checkpoints/attempt-{attempt}/checkpoint_{step:06d}"
    files = {0: ["state/mp_rank_00_model_states.pt", STATE_FILE], 1: ["state/zero_pp_rank_1_optim.pt"]}
    for rank, names in files.items():
        for name in names:
            p.objects.put_bytes(f"{d}/{name}", json.dumps({"checkpoint_step": step}).encode())
        p.objects.put_bytes(f"{d}/{MANIFEST_PREFIX}{rank}.json", json.dumps(names).encode())
    return f"{p.settings.bucket}/{d}"


# ------------------------------------------------------------------ jobs
def test_a_job_claimed_but_never_submitted_is_queued_again_then_runs(p, cluster):
    add_job(p, "job-claimed")
    assert [j.id for j in claim_jobs(p, Demand(cpus=4))] == ["job-claimed"]  # the API stops right here
    assert active_jobs(p) == 1 and cluster.submitted == []

    reconcile_all(p, grace_s=3600)  # a fresh claim may be mid-submit: left alone within the grace period
    assert job(p, "job-claimed").status == JobState.STARTING

    reconcile_all(p)
    j = job(p, "job-claimed")
    assert j.status == JobState.QUEUED and j.attempt == 1 and active_jobs(p) == 0
    assert "never handed to the cluster" in reasons(p, "job-claimed")[-1]
    assert dispatch_once(p) == ["job-claimed"]
    assert cluster.submitted == [("ray_jobs.finetune", ["--job-id", "job-claimed"], "job-claimed")]
    assert job(p, "job-claimed").ray_submission_id == "job-claimed"


def test_a_driver_the_cluster_took_but_never_recorded_is_adopted_not_run_twice(p, cluster):
    from doctune.services.jobs import add_event

    add_job(p, "job-half")
    claim_jobs(p, Demand(cpus=4))
    add_event(p, "job-half", "submit", {"submission_id": "job-half", "attempt": 1})
    cluster.submit("ray_jobs.finetune", ["--job-id", "job-half"], submission_id="job-half")  # then the API died
    reconcile_all(p)
    j = job(p, "job-half")
    assert j.status == JobState.STARTING and j.ray_submission_id == "job-half"
    assert len(cluster.submitted) == 1


def test_a_job_the_cluster_forgot_retries_from_its_last_checkpoint_then_fails_with_the_reason(p, cluster):
    add_job(p, "job-lost")
    assert dispatch_once(p) == ["job-lost"]
    with p.db.session() as s:
        s.get(Job, "job-lost").status = JobState.RUNNING  # its driver started
    write_checkpoint(p, "job-lost", 1, 6)
    newest = write_checkpoint(p, "job-lost", 1, 12)

    cluster.down = True  # the head is restarting: nothing is decided while it does not answer
    reconcile_all(p)
    assert job(p, "job-lost").status == JobState.RUNNING
    cluster.down = False
    cluster.restart_head()
    reconcile_all(p)
    j = job(p, "job-lost")
    assert (j.status, j.attempt, j.resume_from, j.ray_submission_id) == (JobState.QUEUED, 2, newest, None)
    assert "no longer knows" in reasons(p, "job-lost")[-1] and f"from checkpoint {newest}" in reasons(p, "job-lost")[-1]
    assert active_jobs(p) == 0  # its quota is free while it waits

    assert dispatch_once(p) == ["job-lost"]  # attempt 2, under a submission id of its own
    sid = job(p, "job-lost").ray_submission_id
    assert sid.startswith("job-lost-a2-") and cluster.submitted[-1][1] == ["--job-id", "job-lost"]
    cluster.end(sid, AttemptState.FAILED, "the driver was OOM-killed")
    reconcile_all(p)
    j = job(p, "job-lost")
    assert j.status == JobState.FAILED and j.error["code"] == "driver_lost"
    assert "OOM-killed" in j.error["message"] and "no retries left" in reasons(p, "job-lost")[-1]
    assert active_jobs(p) == 0


def test_two_reconcilers_deciding_on_one_lost_job_requeue_it_once(p, cluster):
    """A GET and the periodic pass (or two API replicas) may both find a job lost: the second
    decision, made on what it read before the first was applied, changes nothing, even after the
    dispatcher has started the retry."""
    from doctune.services.jobs import retry_or_fail

    add_job(p, "job-race")
    dispatch_once(p)
    stale = job(p, "job-race")
    cluster.restart_head()
    retry_or_fail(p, stale, "lost (first reconciler)")
    assert dispatch_once(p) == ["job-race"]  # attempt 2 starts
    retry_or_fail(p, stale, "lost (second reconciler, late)")
    j = job(p, "job-race")
    assert (j.status, j.attempt) == (JobState.STARTING, 2) and j.ray_submission_id.startswith("job-race-a2-")
    assert sum("lost" in r for r in reasons(p, "job-race")) == 1


def test_a_driver_stopped_on_the_cluster_cancels_its_job_and_a_live_one_is_left_alone(p, cluster):
    add_job(p, "job-stopped")
    add_job(p, "job-live")
    assert sorted(dispatch_once(p)) == ["job-live", "job-stopped"]
    cluster.stop("job-stopped")
    reconcile_all(p)
    assert job(p, "job-stopped").status == JobState.CANCELLED
    assert job(p, "job-live").status == JobState.STARTING and active_jobs(p) == 1


# ------------------------------------------------------------------ sweeps and their trials
def test_a_sweep_whose_driver_is_lost_fails_and_its_trials_with_it(p, cluster):
    old = now() - timedelta(minutes=5)
    with p.db.session() as s:
        s.add(Sweep(id="sweep-lost", tenant_id="team-a", task="classification", spec={}, status=SweepState.RUNNING,
                    ray_submission_id="sweep-lost"))
        s.add(Sweep(id="sweep-unsent", tenant_id="team-a", task="classification", spec={}, created_at=old))
    cluster.submit("ray_jobs.sweep", ["--sweep-id", "sweep-lost"], submission_id="sweep-lost")
    add_job(p, "job-trial", sweep_id="sweep-lost", status=JobState.RUNNING)
    reconcile_all(p)
    assert job(p, "job-trial").status == JobState.RUNNING  # its sweep's driver runs it
    with p.db.session() as s:
        assert s.get(Sweep, "sweep-unsent").ray_submission_id == "sweep-unsent"  # recorded, never submitted: sent now
    assert cluster.submitted[-1] == ("ray_jobs.sweep", ["--sweep-id", "sweep-unsent"], "sweep-unsent")

    cluster.restart_head()
    reconcile_all(p)
    with p.db.session() as s:
        sweep = s.get(Sweep, "sweep-lost")
    assert sweep.status == SweepState.FAILED and "no longer knows" in sweep.error["message"]
    trial = job(p, "job-trial")
    assert trial.status == JobState.FAILED and "its sweep sweep-lost ended (failed)" in trial.error["message"]
    assert active_jobs(p) == 0


# ------------------------------------------------------------------ deployments
def add_deployment(p: Platform, dep_id: str, status: str, driver: str | None) -> None:
    with p.db.session() as s:
        if s.get(Model, "model-x") is None:
            s.add(Job(id="job-m", tenant_id="team-a", task="classification", spec=dict(SPEC), status=JobState.SUCCEEDED))
            s.flush()
            s.add(Model(id="model-x", tenant_id="team-a", job_id="job-m", task="classification", uri="s3://doctune/x"))
            s.flush()
        s.add(Deployment(id=dep_id, tenant_id="team-a", name=dep_id.removeprefix("dep-"), model_id="model-x", spec={},
                         route=f"/team-a/{dep_id}", status=status, ray_submission_id=driver))


def deployment(p: Platform, dep_id: str) -> Deployment:
    with p.db.session() as s:
        return s.get(Deployment, dep_id)


def test_deployments_stuck_deploying_or_deleting_settle_from_what_serve_runs(p, cluster):
    from doctune.serve.names import app_name

    for dep_id, status in (("dep-up", "deploying"), ("dep-gone", "deploying"), ("dep-busy", "deploying"),
                           ("dep-deleted", "deleting"), ("dep-left", "deleting")):
        add_deployment(p, dep_id, status, driver=f"drv-{dep_id}")
        cluster.submit("ray_jobs.deploy", [dep_id], submission_id=f"drv-{dep_id}")
    add_deployment(p, "dep-running", "running", driver=None)
    for dep_id in ("dep-up", "dep-left", "dep-running", "dep-busy"):
        cluster.apps[app_name(deployment(p, dep_id))] = {"status": "RUNNING"}
    reconcile_all(p)
    assert {d: deployment(p, d).status for d in ("dep-up", "dep-gone", "dep-deleted")} == {
        "dep-up": "deploying", "dep-gone": "deploying", "dep-deleted": "deleting"}  # their drivers still work

    for dep_id in ("dep-up", "dep-gone", "dep-deleted", "dep-left"):
        cluster.end(f"drv-{dep_id}", AttemptState.FAILED, "the driver died")  # ended without recording anything
    n = len(cluster.submitted)
    reconcile_all(p)
    assert deployment(p, "dep-up").status == DeploymentState.RUNNING  # Serve runs it: it is running
    assert deployment(p, "dep-deleted").status == DeploymentState.DELETED  # Serve has no application: deleted
    assert deployment(p, "dep-busy").status == DeploymentState.DEPLOYING  # its driver is still at work
    resent = {tuple(args): sid for _, args, sid in cluster.submitted[n:]}
    assert set(resent) == {("--deployment-id", "dep-gone"), ("--deployment-id", "dep-left", "--delete")}
    assert deployment(p, "dep-left").ray_submission_id == resent[("--deployment-id", "dep-left", "--delete")]
    assert deployment(p, "dep-gone").status == DeploymentState.DEPLOYING  # being deployed again, by a new driver
    assert deployment(p, "dep-gone").ray_submission_id == resent[("--deployment-id", "dep-gone")]

    cluster.restart_head()  # every Serve application is gone with the head
    reconcile_all(p)
    assert deployment(p, "dep-running").status == DeploymentState.DEPLOYING  # restored by a fresh deploy
    assert ("ray_jobs.deploy", ["--deployment-id", "dep-running"]) in [(m, a) for m, a, _ in cluster.submitted]


# ------------------------------------------------------------------ on its own: at API start and periodically
def test_the_api_reconciles_at_start_and_then_periodically_without_any_get(p, cluster):
    from fastapi.testclient import TestClient

    from doctune.api.main import create_app

    add_job(p, "job-stranded")
    claim_jobs(p, Demand(cpus=4))  # the previous API process stopped after this claim
    p.settings.ray_dashboard_url = "http://ray.invalid"  # a cluster is configured: the API reconciles with it
    p.settings.reconcile_interval_s = 0.2
    with TestClient(create_app(p)):
        deadline = time.monotonic() + 30
        while job(p, "job-stranded").ray_submission_id is None and time.monotonic() < deadline:
            time.sleep(0.1)
        j = job(p, "job-stranded")
        assert j.status == JobState.STARTING and j.ray_submission_id == "job-stranded", reasons(p, "job-stranded")
        assert any("never handed to the cluster" in r for r in reasons(p, "job-stranded"))

        with p.db.session() as s:
            s.get(Job, "job-stranded").status = JobState.RUNNING
        cluster.restart_head()  # later, with nobody polling the job: the periodic pass retries it
        deadline = time.monotonic() + 30
        while job(p, "job-stranded").attempt == 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job(p, "job-stranded").attempt == 2 and any("no longer knows" in r for r in reasons(p, "job-stranded"))


def test_reconciler_thread_runs_on_its_own(p, cluster):
    add_job(p, "job-x")
    claim_jobs(p, Demand(cpus=4))
    r = Reconciler(p, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 20
        while r.passes < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        r.stop()
    assert r.passes >= 3 and job(p, "job-x").status == JobState.QUEUED
