"""Quotas that read-then-write hold under races, and cancels stop work, on SQLite and PostgreSQL
with a real SeaweedFS S3 server (no Ray): racing uploads and racing deploys never pass a quota;
storage counts datasets, checkpoints and exported models; an export over the quota is refused and
removed; an ended job's checkpoints can be deleted; a sweep over ``max_trials``, or beyond the
concurrent-job quota, is refused up front naming the field; cancelling a sweep cancels its
unfinished trials; a cancelled trial's driver asks its workers to stop and registers no model."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.services.datasets import upload_dataset
from doctune.services.deployments import record_deployment
from doctune.services.registry import export_refusal, model_prefix
from doctune.spec import DeploymentSpec, TenantSpec
from doctune.store.db import Dataset, Deployment, Job, Model, Sweep, Tenant

from tests.unit.test_cli import s3  # noqa: F401  (the real S3 server fixture)

JOB = {"tenant": "team-a", "task": "classification", "dataset": {"id": "ds-1"}, "max_steps": 4,
       "num_workers": 1, "resources_per_worker": {"cpu": 1}}
RECORDS = [{"text": f"document number {i} about {'sport' if i % 2 else 'money'}", "label": "sport" if i % 2 else "business"}
           for i in range(40)]


@pytest.fixture
def world(database_url, tmp_path, s3):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, **s3))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    tenant = f"team-{tmp_path.name[-6:].lower().replace('_', '-')}".strip("-")  # one S3 prefix per test
    _, key = tenants.create_tenant(p, admin, TenantSpec(name=tenant))
    with p.db.session() as s:
        s.add(Dataset(id="ds-1", tenant_id=tenant, name="one", task="classification", info={"labels": ["a", "b"]},
                      uri=f"s3://doctune/tenants/{tenant}/datasets/ds-1"))
    yield SimpleNamespace(p=p, tenant=tenant, admin=admin, member=tenants.authenticate(p, key),
                          api=TestClient(create_app(p)), hdr={"Authorization": f"Bearer {key}"},
                          admin_hdr={"Authorization": f"Bearer {admin_key}"}, job={**JOB, "tenant": tenant})
    p.objects.delete_prefix(f"tenants/{tenant}/")
    p.db.dispose()


def set_quota(w, **quota):
    with w.p.db.session() as s:
        for k, v in quota.items():
            setattr(s.get(Tenant, w.tenant), k, v)


def race(n, fn):
    """Run fn(i) in n threads released together; returns (results, DoctuneErrors)."""
    barrier, results, errors, lock = threading.Barrier(n), [], [], threading.Lock()

    def one(i):
        barrier.wait()
        try:
            out = fn(i)
            with lock:
                results.append(out)
        except DoctuneError as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


# ------------------------------------------------------------------- storage
def test_racing_uploads_cannot_both_pass_the_storage_quota(world):
    w = world
    blob = to_jsonl(RECORDS)
    set_quota(w, max_storage_bytes=int(len(blob) * 1.5))  # room for one upload, not two
    done, refused = race(4, lambda i: upload_dataset(w.p, w.member, tenant=w.tenant, name=f"up-{i}",
                                                     task="classification", files={"data": blob}))
    assert len(done) == 1 and len(refused) == 3
    assert {e.code for e in refused} == {"quota_exceeded"} and {e.field for e in refused} == {"max_storage_bytes"}
    stored = w.p.objects.prefix_bytes(f"tenants/{w.tenant}/")
    assert stored <= len(blob) * 1.5
    assert {k.split("/")[3] for k in w.p.objects.list_keys(f"tenants/{w.tenant}/datasets/")} == {done[0].id}


def test_storage_counts_checkpoints_and_models_and_an_export_over_it_is_refused(world):
    w = world
    w.p.objects.put_bytes(f"tenants/{w.tenant}/jobs/job-old/checkpoints/attempt-1/step-1/rank0.pt", b"c" * 4000)
    set_quota(w, max_storage_bytes=5000)
    with pytest.raises(DoctuneError) as e:  # the checkpoint counts: 4000 + this upload pass 5000
        upload_dataset(w.p, w.member, tenant=w.tenant, name="more", task="classification",
                       files={"data": to_jsonl(RECORDS)})
    assert e.value.code == "quota_exceeded" and "checkpoints" in e.value.message
    w.p.objects.put_bytes(model_prefix(w.tenant, "model-big") + "/model.safetensors", b"m" * 2000)
    refusal = export_refusal(w.p, w.tenant, "model-big")
    assert refusal is not None and refusal.field == "max_storage_bytes" and "not kept" in refusal.message
    assert list(w.p.objects.list_keys(model_prefix(w.tenant, "model-big") + "/")) == []  # removed
    w.p.objects.put_bytes(model_prefix(w.tenant, "model-small") + "/model.safetensors", b"m" * 500)
    assert export_refusal(w.p, w.tenant, "model-small") is None  # 4500 fits: kept


def test_an_ended_jobs_checkpoints_can_be_deleted_and_free_the_quota(world):
    w = world
    with w.p.db.session() as s:
        s.add(Job(id="job-ck", tenant_id=w.tenant, task="classification", spec=w.job, status="running"))
    key = f"tenants/{w.tenant}/jobs/job-ck/checkpoints/attempt-1/step-2/rank0.pt"
    w.p.objects.put_bytes(key, b"c" * 3000)
    r = w.api.delete("/v1/jobs/job-ck/checkpoints", headers=w.hdr)
    assert r.status_code == 409 and "may still resume" in r.json()["error"]["message"]
    with w.p.db.session() as s:
        s.get(Job, "job-ck").status = "succeeded"
    r = w.api.delete("/v1/jobs/job-ck/checkpoints", headers=w.hdr)
    assert r.status_code == 200 and r.json() == {"job_id": "job-ck", "deleted_objects": 1, "freed_bytes": 3000}
    assert w.p.objects.prefix_bytes(f"tenants/{w.tenant}/") == 0


# ------------------------------------------------------------------- deployments
def test_racing_deploys_cannot_pass_the_deployment_quota(world):
    w = world
    with w.p.db.session() as s:
        s.add(Job(id="job-m", tenant_id=w.tenant, task="classification", spec=w.job, status="succeeded"))
    with w.p.db.session() as s:
        s.add(Model(id="model-1", tenant_id=w.tenant, job_id="job-m", task="classification",
                    uri=f"s3://doctune/tenants/{w.tenant}/models/model-1"))
    set_quota(w, max_deployments=2)
    done, refused = race(6, lambda i: record_deployment(
        w.p, w.member, DeploymentSpec(tenant=w.tenant, name=f"ep-{i}", model_id="model-1")))
    assert len(done) == 2 and len(refused) == 4
    assert {e.field for e in refused} == {"max_deployments"}
    with w.p.db.session() as s:
        assert s.query(Deployment).filter(Deployment.tenant_id == w.tenant).count() == 2


# ------------------------------------------------------------------- sweeps
def sweep_body(w, **kw):
    return {"tenant": w.tenant, "job": w.job, "algorithm": "grid",
            "search_space": {"learning_rate": {"type": "choice", "values": [1e-4, 2e-4, 3e-4]},
                             "tuning.lora.r": {"type": "choice", "values": [4, 8]}}, **kw}


def test_a_grid_over_max_trials_is_refused_up_front(world):
    w = world
    set_quota(w, max_trials=5)
    r = w.api.post("/v1/sweeps", json=sweep_body(w), headers=w.hdr)  # 3 x 2 = 6 trials
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "search_space" and "6 combinations" in err["message"] and "max_trials" in err["message"]
    r = w.api.post("/v1/sweeps", json=sweep_body(w, algorithm="random", num_samples=9), headers=w.hdr)
    assert r.status_code == 422 and r.json()["error"]["field"] == "num_samples"
    with w.p.db.session() as s:
        assert s.query(Sweep).count() == 0
    r = w.api.put(f"/v1/tenants/{w.tenant}/quota", json={"max_trials": 6}, headers=w.admin_hdr)
    assert r.status_code == 200 and r.json()["quota"]["max_trials"] == 6


def test_unfinished_sweeps_count_against_the_concurrent_job_quota(world):
    w = world
    set_quota(w, max_concurrent_jobs=2)
    with w.p.db.session() as s:
        for i in range(2):
            s.add(Sweep(id=f"sweep-{i}", tenant_id=w.tenant, task="classification", spec=sweep_body(w), status="running"))
    r = w.api.post("/v1/sweeps", json=sweep_body(w), headers=w.hdr)
    assert r.status_code == 429 and r.json()["error"]["field"] == "max_concurrent_jobs"
    assert "doctune sweeps cancel" in r.json()["error"]["message"]


def test_cancelling_a_sweep_cancels_its_unfinished_trials(world):
    w = world
    with w.p.db.session() as s:
        s.add(Sweep(id="sweep-c", tenant_id=w.tenant, task="classification", spec=sweep_body(w), status="running"))
    with w.p.db.session() as s:
        for job_id, status in (("trial-done", "succeeded"), ("trial-run", "running"), ("trial-start", "starting")):
            s.add(Job(id=job_id, tenant_id=w.tenant, task="classification", spec=w.job, status=status, sweep_id="sweep-c"))
    r = w.api.post("/v1/sweeps/sweep-c/cancel", headers=w.hdr)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    with w.p.db.session() as s:
        assert {j: s.get(Job, j).status for j in ("trial-done", "trial-run", "trial-start")} == {
            "trial-done": "succeeded", "trial-run": "cancelled", "trial-start": "cancelled"}
    again = w.api.post("/v1/sweeps/sweep-c/cancel", headers=w.hdr)
    assert again.status_code == 409
    other = w.api.post("/v1/sweeps/sweep-nope/cancel", headers=w.hdr)
    assert other.status_code == 404


def test_a_trial_of_a_cancelled_sweep_is_told_to_stop(world):
    """The driver's progress pump: a running trial whose sweep was cancelled becomes cancelled and
    asks rank 0 to stop (without a checkpoint); a pause request asks for a pause."""
    from doctune.drivers.job import ProgressPump

    w = world
    with w.p.db.session() as s:
        s.add(Sweep(id="sweep-p", tenant_id=w.tenant, task="classification", spec=sweep_body(w), status="cancelled"))
    with w.p.db.session() as s:
        s.add(Job(id="trial-p", tenant_id=w.tenant, task="classification", spec=w.job, status="running", sweep_id="sweep-p"))
        s.add(Job(id="job-pause", tenant_id=w.tenant, task="classification", spec=w.job, status="running", control="pause"))
    assert ProgressPump(w.p, "trial-p", None)._stop_wanted() == "cancel"
    with w.p.db.session() as s:
        assert s.get(Job, "trial-p").status == "cancelled"
    assert ProgressPump(w.p, "job-pause", None)._stop_wanted() == "pause"


def test_a_job_cancelled_as_it_finishes_registers_no_model(world):
    from doctune.drivers.job import _Attempt, _succeeded

    w = world
    with w.p.db.session() as s:
        s.add(Job(id="job-late", tenant_id=w.tenant, task="classification", spec=w.job, status="running"))
    attempt = _Attempt(w.p, "job-late")
    w.p.objects.put_bytes(model_prefix(w.tenant, attempt.model_id) + "/model.safetensors", b"m" * 100)
    w.api.post("/v1/jobs/job-late/cancel", headers=w.hdr)  # the cancel lands while the driver exports
    final = {"test": {"macro_f1": 0.9}, "dev": {"macro_f1": 0.9}, "baseline": {}, "step": 4}
    out = _succeeded(attempt, SimpleNamespace(checkpoint=None), {"final": final, "step": 4})
    assert out == {"cancelled_at": 4}
    with w.p.db.session() as s:
        job = s.get(Job, "job-late")
        assert (job.status, job.model_id) == ("cancelled", None)
        assert s.query(Model).filter(Model.job_id == "job-late").count() == 0
    assert list(w.p.objects.list_keys(model_prefix(w.tenant, attempt.model_id) + "/")) == []


def test_a_job_whose_export_passes_the_storage_quota_fails_saying_so(world):
    from doctune.drivers.job import _Attempt, _succeeded

    w = world
    with w.p.db.session() as s:
        s.add(Job(id="job-big", tenant_id=w.tenant, task="classification", spec=w.job, status="running"))
    attempt = _Attempt(w.p, "job-big")
    w.p.objects.put_bytes(model_prefix(w.tenant, attempt.model_id) + "/model.safetensors", b"m" * 3000)
    set_quota(w, max_storage_bytes=2000)
    final = {"test": {"macro_f1": 0.9}, "dev": {"macro_f1": 0.9}, "baseline": {}, "step": 4}
    out = _succeeded(attempt, SimpleNamespace(checkpoint=None), {"final": final, "step": 4})
    assert out["refused"]["code"] == "quota_exceeded"
    with w.p.db.session() as s:
        job = s.get(Job, "job-big")
        assert (job.status, job.model_id, job.error["field"]) == ("failed", None, "max_storage_bytes")
        assert "not kept" in job.error["message"] and s.query(Model).count() == 0
    assert w.p.objects.prefix_bytes(f"tenants/{w.tenant}/") == 0
