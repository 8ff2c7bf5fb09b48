"""A tenant's dedicated Ray cluster: only an admin registers, replaces or removes it, bad input is a
422 naming the field, no answer ever shows its token; the tenant's jobs and sweeps are submitted
there (the shared cluster keeps everyone else's), and a job's status, log and cancel reach the
cluster it was submitted to even after the tenant's cluster was replaced. (A sweep submitted through
the API, whose driver there records through the API: tests/unit/test_sweep_ledger.py.)

The clusters here are :class:`FakeCluster`, a test double of doctune's own Runner port, not of Ray;
which runner a tenant gets is checked on the real :class:`RayJobsRunner` (its address and token)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.runners import RayJobsRunner
from doctune.services import Platform, tenants
from doctune.services.jobs import cancel_job, job_logs, reconcile_job
from doctune.services.ray_clusters import remove_ray_cluster, set_ray_cluster
from doctune.services.scheduler import dispatch_once
from doctune.services.sweeps import reconcile_sweep
from doctune.spec import RayClusterSpec, TenantSpec
from doctune.states import AttemptState, JobState
from doctune.store.db import Job, Sweep

from tests.unit.test_reconcile import SPEC, FakeCluster

SHARED = "http://127.0.0.1:8265"
ADDR_A = "http://doctune-head-svc.team-a.svc:8265"
ADDR_B = "http://doctune-head-svc-2.team-a.svc:8265"
TOKEN_A, TOKEN_B = "tenant-a-token-0123456789abcdef", "tenant-a-token-replaced-9876543210"


@pytest.fixture
def world(database_url, tmp_path):
    """The shared cluster and one fake cluster per registered address; tenants team-a and team-b."""
    clusters: dict[str, FakeCluster] = {}
    shared = FakeCluster()
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, ray_dashboard_url=SHARED),
                 runner=shared, cluster_runner=lambda address, token: clusters.setdefault(address, FakeCluster()))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    tenants.create_tenant(p, admin, TenantSpec(name="team-b"))
    yield p, admin, shared, clusters, {"admin": _bearer(admin_key), "a": _bearer(key_a)}
    p.db.dispose()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_an_admin_registers_replaces_and_removes_a_tenants_cluster_and_no_answer_shows_its_token(world):
    p, _, _, _, hdr = world
    client = TestClient(create_app(p))
    put = client.put("/v1/tenants/team-a/ray-cluster", headers=hdr["admin"], json={"address": ADDR_A + "/",
                                                                                   "token": TOKEN_A})
    assert put.status_code == 200, put.text
    assert put.json()["ray_cluster"]["address"] == ADDR_A
    client.put("/v1/tenants/team-a/ray-cluster", headers=hdr["admin"], json={"address": ADDR_B, "token": TOKEN_B})
    answers = [client.get("/v1/tenants/team-a", headers=hdr["admin"]), client.get("/v1/tenants/team-a", headers=hdr["a"]),
               client.get("/v1/tenants", headers=hdr["admin"]), client.get("/openapi.json")]
    assert answers[0].json()["ray_cluster"]["address"] == ADDR_B
    assert answers[1].json()["ray_cluster"]["address"] == ADDR_B  # the tenant sees where its work runs
    assert all(TOKEN_A not in r.text and TOKEN_B not in r.text for r in answers + [put])
    removed = client.delete("/v1/tenants/team-a/ray-cluster", headers=hdr["admin"])
    assert removed.status_code == 200 and removed.json()["ray_cluster"] is None
    assert client.get("/v1/tenants/team-a", headers=hdr["admin"]).json()["ray_cluster"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"address": "ftp://head:8265", "token": TOKEN_A}, "address"),
    ({"address": "doctune-head-svc:8265", "token": TOKEN_A}, "address"),
    ({"address": ADDR_A, "token": "short"}, "token"),
    ({"address": ADDR_A}, "token"),
    ({"address": ADDR_A, "token": TOKEN_A, "namespace": "team-a"}, "namespace"),
])
def test_a_bad_cluster_is_refused_naming_the_field_and_changes_nothing(world, body, field):
    p, _, _, _, hdr = world
    client = TestClient(create_app(p))
    r = client.put("/v1/tenants/team-a/ray-cluster", headers=hdr["admin"], json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert field in {error.get("field")} | {e["field"] for e in error.get("errors") or []}
    assert client.get("/v1/tenants/team-a", headers=hdr["admin"]).json()["ray_cluster"] is None


def test_only_an_admin_may_register_a_cluster_and_only_for_a_tenant_that_exists(world):
    p, _, _, _, hdr = world
    client = TestClient(create_app(p))
    body = {"address": ADDR_A, "token": TOKEN_A}
    assert client.put("/v1/tenants/team-a/ray-cluster", headers=hdr["a"], json=body).status_code == 403
    assert client.delete("/v1/tenants/team-a/ray-cluster", headers=hdr["a"]).status_code == 403
    assert client.put("/v1/tenants/nobody/ray-cluster", headers=hdr["admin"], json=body).status_code == 404
    gone = client.delete("/v1/tenants/team-a/ray-cluster", headers=hdr["admin"])  # it has none
    assert gone.status_code == 404 and "no Ray cluster" in gone.json()["error"]["message"]
    assert p.runner_for("team-a") is p.runner


def test_a_tenant_with_a_cluster_gets_a_runner_on_its_address_and_token_the_others_the_shared_one(tmp_path,
                                                                                                database_url):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, ray_dashboard_url=SHARED))
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    for name in ("team-a", "team-b"):
        tenants.create_tenant(p, admin, TenantSpec(name=name))
    set_ray_cluster(p, admin, "team-a", RayClusterSpec(address=ADDR_A, token=TOKEN_A))
    own, shared = p.runner_for("team-a"), p.runner_for("team-b")
    assert isinstance(own, RayJobsRunner) and (own.address, own.token(), own.dedicated) == (ADDR_A, TOKEN_A, True)
    assert shared is p.runner and (shared.address, shared.dedicated) == (SHARED, False)
    remove_ray_cluster(p, admin, "team-a")
    assert p.runner_for("team-a") is p.runner
    p.db.dispose()


def _job(p: Platform, job_id: str) -> Job:
    with p.db.session() as s:
        return s.get(Job, job_id)


def test_a_job_runs_on_the_cluster_it_was_submitted_to_after_the_tenant_changes_cluster(world):
    p, admin, shared, clusters, _ = world
    set_ray_cluster(p, admin, "team-a", RayClusterSpec(address=ADDR_A, token=TOKEN_A))
    with p.db.session() as s:
        s.add(Job(id="job-a1", tenant_id="team-a", task="classification", spec=dict(SPEC)))
        s.add(Job(id="job-b1", tenant_id="team-b", task="classification", spec={**SPEC, "tenant": "team-b"}))
    assert sorted(dispatch_once(p)) == ["job-a1", "job-b1"]
    assert [sid for _, _, sid in clusters[ADDR_A].submitted] == ["job-a1"]
    assert [sid for _, _, sid in shared.submitted] == ["job-b1"]  # team-b has no cluster of its own

    set_ray_cluster(p, admin, "team-a", RayClusterSpec(address=ADDR_B, token=TOKEN_B))  # replaced while it runs
    clusters[ADDR_A].end("job-a1", AttemptState.STOPPED)
    assert reconcile_job(p, _job(p, "job-a1")).status == JobState.CANCELLED  # its state came from cluster A
    with p.db.session() as s:
        s.add(Job(id="job-a2", tenant_id="team-a", task="classification", spec=dict(SPEC)))
    assert dispatch_once(p) == ["job-a2"]
    assert [sid for _, _, sid in clusters[ADDR_B].submitted] == ["job-a2"]  # new work: the new cluster

    remove_ray_cluster(p, admin, "team-a")  # removed while job-a2 runs: cancel still reaches cluster B
    member = tenants.Principal(key_id="k", role="member", tenant_id="team-a")
    assert job_logs(p, member, "job-a2") == ""
    cancel_job(p, member, "job-a2")
    assert clusters[ADDR_B].status("job-a2").state == AttemptState.STOPPED
    assert all(sid != "job-a2" for _, _, sid in shared.submitted)


def test_a_sweep_is_submitted_to_the_cluster_it_recorded(world):
    p, admin, shared, clusters, _ = world
    set_ray_cluster(p, admin, "team-a", RayClusterSpec(address=ADDR_A, token=TOKEN_A))
    with p.db.session() as s:
        s.add(Sweep(id="sweep-a", tenant_id="team-a", task="classification", spec={},
                    ray_cluster_id=p.cluster_for("team-a")))
    with p.db.session() as s:
        row = s.get(Sweep, "sweep-a")
    assert reconcile_sweep(p, row, grace_s=0).ray_submission_id == "sweep-a"
    assert [sid for _, _, sid in clusters[ADDR_A].submitted] == ["sweep-a"] and shared.submitted == []


class BusyCluster(FakeCluster):
    """A cluster whose every CPU is in use."""

    def resources(self):
        from doctune.runners.base import ClusterResources

        return ClusterResources(cpus=4, gpus=0, memory_bytes=8e9, cpus_used=4)


@pytest.mark.parametrize("busy", ["shared", "dedicated"])
def test_each_cluster_is_planned_against_its_own_free_resources(world, busy):
    """A full shared cluster does not hold back a tenant with its own cluster, and a full dedicated
    cluster does not hold back everyone else: each queue waits only for its own cluster."""
    p, admin, shared, clusters, _ = world
    if busy == "shared":
        p.runner = BusyCluster()
    else:
        clusters[ADDR_A] = BusyCluster()
    set_ray_cluster(p, admin, "team-a", RayClusterSpec(address=ADDR_A, token=TOKEN_A))
    with p.db.session() as s:
        s.add(Job(id="job-a1", tenant_id="team-a", task="classification", spec=dict(SPEC)))
        s.add(Job(id="job-b1", tenant_id="team-b", task="classification", spec={**SPEC, "tenant": "team-b"}))
    started = dispatch_once(p)
    assert started == (["job-a1"] if busy == "shared" else ["job-b1"])
    waiting = _job(p, "job-b1" if busy == "shared" else "job-a1")
    assert waiting.status == JobState.QUEUED and "cluster" in (waiting.progress or {}).get("queue_reason", "")
