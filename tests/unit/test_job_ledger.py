"""A job on a tenant's dedicated cluster records its attempt through the API, with no database URL:
the driver's API ledger, against the real app (TestClient), the real database and the real S3 server,
loads the attempt, marks it running, copies progress into events, hears a pause and a cancel, ends it
as succeeded (model registered), paused, re-queued, failed or refused over the storage quota; its job
token acts on that one attempt of that one job and nothing else (another job, another tenant's job,
a forged token, an attempt that has ended or a later run of the job are all refused, saying why)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.drivers.job import ProgressPump, _Attempt, _failed, _paused, _succeeded
from doctune.drivers.ledger import ApiLedger, DatabaseLedger, ledger_for
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.services.registry import model_prefix
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Job, JobEvent, Model, Tenant
from doctune.store.job_tokens import mint_job_token
from doctune.store.keys import server_secret

from tests.unit.test_cli import s3  # noqa: F401  (the real S3 server fixture)

FINAL = {"test": {"macro_f1": 0.9}, "dev": {"macro_f1": 0.8}, "baseline": {"test": {}}, "step": 4}


@pytest.fixture
def world(database_url, tmp_path, s3):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, api_url="http://testserver", **s3))
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    suffix = tmp_path.name[-6:].lower().replace("_", "-")
    mine, other = f"team-a{suffix}".strip("-"), f"team-b{suffix}".strip("-")  # one S3 prefix per test
    for name in (mine, other):
        tenants.create_tenant(p, admin, TenantSpec(name=name))
    with p.db.session() as s:
        s.add(Dataset(id="ds-1", tenant_id=mine, name="one", task="classification", info={"labels": ["a", "b"]},
                      uri=f"s3://doctune/tenants/{mine}/datasets/ds-1"))
    api = TestClient(create_app(p))
    with api:  # the lifespan (no cluster configured: no dispatcher)
        yield SimpleNamespace(p=p, tenant=mine, other=other, api=api)
    p.objects.delete_prefix(f"tenants/{mine}/")
    p.db.dispose()


def add_job(w, job_id, *, tenant=None, status="starting", attempt=1, **spec):
    """A job as the dispatcher leaves it: claimed, with the submission it planned recorded."""
    tenant = tenant or w.tenant
    body = {"tenant": tenant, "task": "classification", "dataset": {"id": "ds-1"}, "max_steps": 4, "num_workers": 1,
            "resources_per_worker": {"cpu": 1}, **spec}
    with w.p.db.session() as s:
        s.add(Job(id=job_id, tenant_id=tenant, task="classification", spec=body, status=status, attempt=attempt))
    submitted(w, job_id, job_id)


def submitted(w, job_id, sid):
    with w.p.db.session() as s:
        s.add(JobEvent(job_id=job_id, kind="submit", data={"submission_id": sid}))


def token_for(w, job_id, tenant=None, attempt=1, sid=None):
    return mint_job_token(server_secret(w.p.db), tenant or w.tenant, job_id, attempt, sid or job_id)


def ledger(w, job_id, token=None):
    return ApiLedger("http://testserver", token or token_for(w, job_id), job_id, http=w.api)


def job(w, job_id):
    with w.p.db.session() as s:
        return s.get(Job, job_id)


def events(w, job_id, kind):
    with w.p.db.session() as s:
        return [e.data for e in s.query(JobEvent).filter(JobEvent.job_id == job_id, JobEvent.kind == kind)
                .order_by(JobEvent.id)]


def test_the_api_ledger_runs_an_attempt_to_a_registered_model(world):
    w = world
    add_job(w, "job-ok")
    lg = ledger(w, "job-ok")
    attempt = _Attempt(w.p, "job-ok", lg)
    assert (attempt.job.attempt, attempt.job.dataset_uri) == (1, f"s3://doctune/tenants/{w.tenant}/datasets/ds-1")
    lg.mark_running("the job's Ray driver started (attempt 1)")
    assert job(w, "job-ok").status == "running"
    state = {"step": 2, "total_steps": 4, "loss": 0.5, "history": [{"step": 2, "dev": {"macro_f1": 0.7}}],
             "last_checkpoint_step": 2}
    lg.record_progress({}, state)
    assert job(w, "job-ok").progress["step"] == 2
    assert events(w, "job-ok", "progress")[0]["loss"] == 0.5 and events(w, "job-ok", "checkpoint") == [{"step": 2}]
    assert events(w, "job-ok", "eval") == [{"step": 2, "dev": {"macro_f1": 0.7}}]
    assert ProgressPump(w.p, "job-ok", None, lg)._stop_wanted() is None
    w.p.objects.put_bytes(model_prefix(w.tenant, attempt.model_id) + "/model.safetensors", b"m" * 100)
    out = _succeeded(attempt, SimpleNamespace(checkpoint=None), {"final": FINAL, "step": 4})
    assert out["test"] == {"macro_f1": 0.9} and "refused" not in out
    done = job(w, "job-ok")
    assert (done.status, done.model_id) == ("succeeded", attempt.model_id)
    with w.p.db.session() as s:
        model = s.get(Model, attempt.model_id)
        assert (model.tenant_id, model.info["labels"], model.metrics["dev"]) == (w.tenant, ["a", "b"], {"macro_f1": 0.8})
    with pytest.raises(DoctuneError, match="has ended") as err:  # the attempt ended: its token with it
        lg.load()
    assert err.value.code == "forbidden"


def test_the_api_ledger_hears_a_pause_and_records_it(world):
    w = world
    add_job(w, "job-p", status="running")
    lg = ledger(w, "job-p")
    attempt = _Attempt(w.p, "job-p", lg)
    w.api.post("/v1/jobs/job-p/attempt/running", headers=lg.headers, json={"reason": "x"})
    with w.p.db.session() as s:
        s.get(Job, "job-p").control = "pause"
    assert ProgressPump(w.p, "job-p", None, lg)._stop_wanted() == "pause"
    ckpt = f"{w.p.settings.bucket}/tenants/{w.tenant}/jobs/job-p/checkpoints/attempt-1/checkpoint_000000"
    out = _paused(attempt, SimpleNamespace(checkpoint=SimpleNamespace(path=ckpt)), {"paused_at": 2, "tokens_seen": 10})
    assert out == {"paused_at": 2, "checkpoint": ckpt}
    paused = job(w, "job-p")
    assert (paused.status, paused.resume_from, paused.control) == ("paused", ckpt, None)
    assert paused.metrics["usage"]["trained_tokens"] == 10
    # resumed: the same attempt runs again as another submission, and the old run's token stays refused
    with w.p.db.session() as s:
        s.get(Job, "job-p").status = "starting"
    submitted(w, "job-p", "job-p-a1-abc123")
    with pytest.raises(DoctuneError, match="has ended"):
        lg.load()
    assert ledger(w, "job-p", token_for(w, "job-p", sid="job-p-a1-abc123")).load().resume_from == ckpt


def test_the_api_ledger_requeues_a_failed_attempt_then_fails_the_last(world):
    w = world
    add_job(w, "job-f", status="running", retries=1)
    out = _failed(_Attempt(w.p, "job-f", ledger(w, "job-f")), RuntimeError("worker died"))
    assert out == {"requeued": True, "attempt": 2}
    again = job(w, "job-f")
    assert (again.status, again.attempt, again.error["message"]) == ("queued", 2, "worker died")
    with w.p.db.session() as s:
        s.get(Job, "job-f").status = "running"
    submitted(w, "job-f", "job-f-a2-def456")
    with pytest.raises(DoctuneError, match="has ended"):  # attempt 1's token
        ledger(w, "job-f").load()
    second = ledger(w, "job-f", token_for(w, "job-f", attempt=2, sid="job-f-a2-def456"))
    # the API, not the driver, decides whether retries are left
    r = w.api.post("/v1/jobs/job-f/attempt/requeued", headers=second.headers,
                   json={"resume_from": None, "usage": {}, "error": {}, "reason": "again"})
    assert r.status_code == 409 and "was its last" in r.json()["error"]["message"]
    with pytest.raises(RuntimeError, match="worker died"):
        _failed(_Attempt(w.p, "job-f", second), RuntimeError("worker died"))
    assert (job(w, "job-f").status, job(w, "job-f").attempt) == ("failed", 2)


def test_the_api_ledger_fails_an_export_over_the_storage_quota(world):
    w = world
    add_job(w, "job-big", status="running")
    attempt = _Attempt(w.p, "job-big", ledger(w, "job-big"))
    w.p.objects.put_bytes(model_prefix(w.tenant, attempt.model_id) + "/model.safetensors", b"m" * 3000)
    with w.p.db.session() as s:
        s.get(Tenant, w.tenant).max_storage_bytes = 2000
    out = _succeeded(attempt, SimpleNamespace(checkpoint=None), {"final": FINAL, "step": 4})
    assert out["refused"]["code"] == "quota_exceeded"
    big = job(w, "job-big")
    assert (big.status, big.model_id, big.error["field"]) == ("failed", None, "max_storage_bytes")
    assert w.p.objects.prefix_bytes(f"tenants/{w.tenant}/") == 0


def test_a_cancel_stops_the_attempt_and_registers_nothing(world):
    w = world
    add_job(w, "job-c", status="running")
    lg = ledger(w, "job-c")
    attempt = _Attempt(w.p, "job-c", lg)
    w.p.objects.put_bytes(model_prefix(w.tenant, attempt.model_id) + "/model.safetensors", b"m" * 100)
    with w.p.db.session() as s:
        s.get(Job, "job-c").status = "cancelled"
    assert ProgressPump(w.p, "job-c", None, lg)._stop_wanted() == "cancel"
    out = _succeeded(attempt, SimpleNamespace(checkpoint=None), {"final": FINAL, "step": 4})
    assert out == {"cancelled_at": 4}
    assert job(w, "job-c").model_id is None and list(w.p.objects.list_keys(model_prefix(w.tenant, attempt.model_id)
                                                                            + "/")) == []


def test_a_job_token_acts_on_its_own_attempt_only(world):
    w = world
    add_job(w, "job-a")
    add_job(w, "job-b")
    add_job(w, "job-x", tenant=w.other)
    hdr = {"X-Job-Token": token_for(w, "job-a")}
    assert w.api.get("/v1/jobs/job-a/attempt", headers=hdr).status_code == 200
    for other in ("job-b", "job-x", "job-nope"):  # another job of the tenant, another tenant's, none at all
        r = w.api.get(f"/v1/jobs/{other}/attempt", headers=hdr)
        assert r.status_code == 403 and "is for job job-a" in r.json()["error"]["message"]
        r = w.api.post(f"/v1/jobs/{other}/attempt/running", headers=hdr, json={"reason": "x"})
        assert r.status_code == 403
    assert job(w, "job-b").status == "starting" and job(w, "job-x").status == "starting"
    # a token made for job-x, but naming another tenant: its MAC does not match
    r = w.api.get("/v1/jobs/job-x/attempt", headers={"X-Job-Token": token_for(w, "job-x", tenant=w.tenant)})
    assert r.status_code == 401 and "not valid" in r.json()["error"]["message"]
    forged = hdr["X-Job-Token"][:-4] + ("0000" if not hdr["X-Job-Token"].endswith("0000") else "1111")
    assert w.api.get("/v1/jobs/job-a/attempt", headers={"X-Job-Token": forged}).status_code == 401
    r = w.api.get("/v1/jobs/job-a/attempt")
    assert r.status_code == 401 and "X-Job-Token" in r.json()["error"]["message"]
    assert w.api.get("/v1/jobs/job-a/attempt", headers={"X-Job-Token": "dtk_abc_def"}).status_code == 401
    # a job's own checkpoints only
    w.api.post("/v1/jobs/job-a/attempt/running", headers=hdr, json={"reason": "x"})
    r = w.api.post("/v1/jobs/job-a/attempt/paused", headers=hdr, json={
        "resume_from": f"{w.p.settings.bucket}/tenants/{w.other}/jobs/job-x/checkpoints/x", "usage": {}, "progress": {}, "reason": "x"})
    assert r.status_code == 403 and r.json()["error"]["field"] == "resume_from"
    # nor an API key's routes: the job token is not an API key
    assert w.api.get("/v1/jobs/job-a", headers={"Authorization": f"Bearer {hdr['X-Job-Token']}"}).status_code == 401
    # ended: refused, and the record stays as it ended
    w.api.post("/v1/jobs/job-a/attempt/failed", headers=hdr, json={"error": {"code": "x", "message": "m"}, "reason": "m"})
    assert job(w, "job-a").status == "failed"
    r = w.api.get("/v1/jobs/job-a/attempt/control", headers=hdr)
    assert r.status_code == 403 and "has ended" in r.json()["error"]["message"]


def test_the_driver_takes_its_ledger_from_its_environment(world, monkeypatch):
    w = world
    monkeypatch.delenv("DOCTUNE_JOB_LEDGER", raising=False)
    assert isinstance(ledger_for(w.p, "job-1"), DatabaseLedger)  # the shared cluster: as before
    monkeypatch.setenv("DOCTUNE_JOB_LEDGER", "api")
    monkeypatch.setenv("DOCTUNE_JOB_TOKEN", "dta_x.y")
    lg = ledger_for(w.p, "job-1")
    assert isinstance(lg, ApiLedger) and str(lg.http.base_url) == "http://testserver"
    monkeypatch.delenv("DOCTUNE_JOB_TOKEN")
    with pytest.raises(DoctuneError, match="DOCTUNE_JOB_TOKEN"):
        ledger_for(w.p, "job-1")
