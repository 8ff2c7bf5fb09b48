"""A sweep of a tenant with a dedicated cluster runs there, its driver recording through the API with no
database URL: submitted, the sweep's driver goes to the tenant's cluster (not refused); the driver's
API ledger, against the real app (TestClient), the real database and the real S3 server, loads the
sweep, marks it running, starts trials as jobs of the tenant within its quota and the sweep's trial
count (each with a job token its attempt records through), settles the trials left unfinished and
records the winner; its sweep token acts on that one sweep and nothing else (another sweep, another
tenant's, a forged token, a job token, an API key, a sweep that has ended are all refused, saying
why), and a malformed body is a 4xx naming the field, changing nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.data import to_jsonl
from doctune.drivers.job import _Attempt, _succeeded
from doctune.drivers.ledger import ApiLedger
from doctune.drivers.sweep import _start_trial
from doctune.drivers.sweep_ledger import ApiSweepLedger, DatabaseSweepLedger, sweep_ledger_for
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.services.ray_clusters import set_ray_cluster
from doctune.services.registry import model_prefix
from doctune.spec import RayClusterSpec, TenantSpec
from doctune.store.db import Job, Sweep, Tenant
from doctune.store.job_tokens import mint_job_token, mint_sweep_token
from doctune.store.keys import server_secret

from tests.unit.test_cli import s3  # noqa: F401  (the real S3 server fixture)
from tests.unit.test_reconcile import FakeCluster

ADDR = "http://doctune-head-svc.team-a.svc:8265"
TOKEN = "tenant-a-token-0123456789abcdef"
RECORDS = [{"text": f"document {i} about {label}", "label": label} for label in ("sport", "tech") for i in range(20)]
FINAL = {"test": {"macro_f1": 0.9}, "dev": {"macro_f1": 0.8}, "baseline": {"test": {}}, "step": 2}
RATES = [1e-4, 2e-4, 3e-4]


@pytest.fixture
def world(database_url, tmp_path, s3):  # noqa: F811
    """Tenant ``mine`` with a dedicated cluster and a dataset, tenant ``other`` without; the clusters are
    :class:`FakeCluster`, test doubles of doctune's Runner port that record what is submitted."""
    clusters: dict[str, FakeCluster] = {}
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, api_url="http://testserver", **s3),
                 runner=FakeCluster(), cluster_runner=lambda address, token: clusters.setdefault(address, FakeCluster()))
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    suffix = tmp_path.name[-6:].lower().replace("_", "-")
    mine, other = f"team-a{suffix}".strip("-"), f"team-b{suffix}".strip("-")  # one S3 prefix per test
    keys = {name: tenants.create_tenant(p, admin, TenantSpec(name=name))[1] for name in (mine, other)}
    with p.db.session() as s:
        s.execute(update(Tenant).values(max_concurrent_jobs=2, max_cpus=None, max_trials=None))
    set_ray_cluster(p, admin, mine, RayClusterSpec(address=ADDR, token=TOKEN))
    api = TestClient(create_app(p))
    hdr = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    files = {"data": ("d.jsonl", to_jsonl(RECORDS), "application/jsonl")}
    ds = api.post("/v1/datasets", data={"name": "seed", "task": "classification"}, files=files, headers=hdr[mine])
    assert ds.status_code == 201, ds.text
    yield SimpleNamespace(p=p, tenant=mine, other=other, api=api, hdr=hdr, clusters=clusters, ds=ds.json()["id"])
    for name in (mine, other):
        p.objects.delete_prefix(f"tenants/{name}/")
    p.db.dispose()


def submit(w) -> str:
    body = {"metric": "macro_f1", "algorithm": "grid",
            "job": {"task": "classification", "base_model": "all-minilm-l6-v2", "dataset": {"id": w.ds},
                    "max_steps": 2, "num_workers": 1, "resources_per_worker": {"cpu": 1}},
            "search_space": {"learning_rate": {"type": "choice", "values": RATES}}}
    r = w.api.post("/v1/sweeps", headers=w.hdr[w.tenant], json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def add_sweep(w, sweep_id, tenant):
    with w.p.db.session() as s:
        s.add(Sweep(id=sweep_id, tenant_id=tenant, task="classification", status="running",
                    spec={"tenant": tenant, "job": {"task": "classification"}, "algorithm": "grid",
                          "search_space": {"learning_rate": {"type": "choice", "values": RATES}}}))


def token_for(w, sweep_id, tenant=None, sid=None):
    return mint_sweep_token(server_secret(w.p.db), tenant or w.tenant, sweep_id, sid or sweep_id)


def ledger(w, sweep_id, token=None):
    return ApiSweepLedger("http://testserver", token or token_for(w, sweep_id), sweep_id, http=w.api)


def row(w, model, key):
    with w.p.db.session() as s:
        return s.get(model, key)


def trials(w, sweep_id):
    with w.p.db.session() as s:
        return s.query(Job).filter(Job.sweep_id == sweep_id).count()


def test_a_sweep_of_a_tenant_with_a_dedicated_cluster_is_submitted_there(world):
    """Its driver records through the API, so the sweep is no longer refused (it was a 409)."""
    w = world
    sweep_id = submit(w)
    sweep = row(w, Sweep, sweep_id)
    assert sweep.ray_cluster_id == w.p.cluster_for(w.tenant) and sweep.ray_submission_id == sweep_id
    assert w.clusters[ADDR].submitted == [("ray_jobs.sweep", ["--sweep-id", sweep_id], sweep_id)]
    assert w.p.runner.submitted == []  # the shared cluster got nothing


def test_the_api_ledger_records_the_trials_and_the_winner(world):
    w = world
    sweep_id = submit(w)
    lg = ledger(w, sweep_id)
    record = lg.load()
    assert (record.tenant, record.status, record.max_concurrent_jobs) == (w.tenant, "queued", 2)
    assert record.spec["job"]["dataset"]["id"] == w.ds
    lg.mark_running()
    assert row(w, Sweep, sweep_id).status == "running" and not lg.ended()
    # the first trial: a job of the tenant, whose attempt records through the API with its own job token
    first = _start_trial(lg, {"learning_rate": RATES[0]})
    assert isinstance(first.ledger, ApiLedger)
    job = row(w, Job, first.job_id)
    assert (job.tenant_id, job.sweep_id, job.status, job.spec["learning_rate"]) == (w.tenant, sweep_id, "starting",
                                                                                   RATES[0])
    attempt = _Attempt(w.p, first.job_id, first.ledger)
    first.ledger.mark_running("the trial's driver started")
    w.p.objects.put_bytes(model_prefix(w.tenant, attempt.model_id) + "/model.safetensors", b"m" * 100)
    _succeeded(attempt, SimpleNamespace(checkpoint=None), {"final": FINAL, "step": 2})
    assert row(w, Job, first.job_id).status == "succeeded"
    # the second runs; the third waits for the tenant's quota (429), then starts; no fourth (409)
    second = lg.start_trial({"learning_rate": RATES[1]})
    second.ledger.mark_running("the trial's driver started")
    with w.p.db.session() as s:
        s.get(Tenant, w.tenant).max_concurrent_jobs = 1
    with pytest.raises(DoctuneError) as err:
        lg.start_trial({"learning_rate": RATES[2]})
    assert err.value.code == "quota_exceeded" and trials(w, sweep_id) == 2
    with w.p.db.session() as s:
        s.get(Tenant, w.tenant).max_concurrent_jobs = 2
    lg.start_trial({"learning_rate": RATES[2]})
    with pytest.raises(DoctuneError, match="started all of its 3 trials") as err:
        lg.start_trial({"learning_rate": RATES[0]})
    assert err.value.code == "conflict" and trials(w, sweep_id) == 3
    # the end: the unfinished trials are failed, saying why, and the winner is recorded
    lg.settle_unfinished()
    assert row(w, Job, second.job_id).status == "failed"
    assert "without a result" in row(w, Job, second.job_id).error["message"]
    outcome = lg.record_outcome()
    assert outcome["winner"]["job_id"] == first.job_id and not outcome["cancelled"] and len(outcome["trials"]) == 3
    sweep = row(w, Sweep, sweep_id)
    assert (sweep.status, sweep.best_job_id) == ("succeeded", first.job_id)
    # ended: the token with it; the driver hears so and starts nothing more
    assert lg.ended() and _start_trial(lg, {"learning_rate": RATES[1]}) is None
    with pytest.raises(DoctuneError, match="has ended") as err:
        lg.load()
    assert err.value.code == "forbidden" and trials(w, sweep_id) == 3


def test_a_cancelled_sweep_stops_its_driver_and_keeps_its_state(world):
    w = world
    sweep_id = submit(w)
    lg = ledger(w, sweep_id)
    lg.mark_running()
    trial = lg.start_trial({"learning_rate": RATES[0]})
    assert w.api.post(f"/v1/sweeps/{sweep_id}/cancel", headers=w.hdr[w.tenant]).status_code == 200
    assert lg.ended() and trial.ledger.stop_wanted() == "cancel"  # the trial's attempt hears it too
    lg.record_failed({"code": "sweep_failed", "message": "late"})
    assert lg.record_outcome() == {"sweep_id": sweep_id, "winner": None, "trials": [], "cancelled": True}
    sweep = row(w, Sweep, sweep_id)
    assert (sweep.status, sweep.error) == ("cancelled", None)


def test_a_sweep_token_acts_on_its_own_sweep_only(world):
    w = world
    add_sweep(w, "sweep-a", w.tenant)
    add_sweep(w, "sweep-b", w.tenant)
    add_sweep(w, "sweep-x", w.other)
    hdr = {"X-Sweep-Token": token_for(w, "sweep-a")}
    assert w.api.get("/v1/sweeps/sweep-a/driver", headers=hdr).status_code == 200
    for other in ("sweep-b", "sweep-x", "sweep-nope"):  # another sweep of the tenant, another tenant's, none at all
        for method, path, body in (("GET", "", None), ("POST", "/running", None), ("POST", "/settle", None),
                                   ("POST", "/finished", None),
                                   ("POST", "/trials", {"overrides": {"learning_rate": RATES[0]}}),
                                   ("POST", "/failed", {"error": {"code": "x", "message": "m"}})):
            r = w.api.request(method, f"/v1/sweeps/{other}/driver{path}", headers=hdr, json=body)
            assert r.status_code == 403 and "is for sweep sweep-a" in r.json()["error"]["message"], (other, path)
    assert (row(w, Sweep, "sweep-b").status, row(w, Sweep, "sweep-x").status) == ("running", "running")
    assert trials(w, "sweep-b") == trials(w, "sweep-x") == 0
    # a token made for sweep-x, but naming another tenant: its MAC does not match
    r = w.api.get("/v1/sweeps/sweep-x/driver", headers={"X-Sweep-Token": token_for(w, "sweep-x", tenant=w.tenant)})
    assert r.status_code == 401 and "not valid" in r.json()["error"]["message"]
    forged = hdr["X-Sweep-Token"][:-4] + ("0000" if not hdr["X-Sweep-Token"].endswith("0000") else "1111")
    assert w.api.get("/v1/sweeps/sweep-a/driver", headers={"X-Sweep-Token": forged}).status_code == 401
    r = w.api.get("/v1/sweeps/sweep-a/driver")
    assert r.status_code == 401 and "X-Sweep-Token" in r.json()["error"]["message"]
    # a job token is not a sweep token, nor an API key, nor the other way round
    job_token = mint_job_token(server_secret(w.p.db), w.tenant, "sweep-a", 1, "sweep-a")
    assert w.api.get("/v1/sweeps/sweep-a/driver", headers={"X-Sweep-Token": job_token}).status_code == 401
    assert w.api.get("/v1/sweeps/sweep-a/driver", headers=w.hdr[w.tenant]).status_code == 401
    assert w.api.get("/v1/sweeps/sweep-a", headers={"Authorization": f"Bearer {hdr['X-Sweep-Token']}"}).status_code == 401
    # another run of the sweep's driver (another submission) is refused
    r = w.api.get("/v1/sweeps/sweep-a/driver", headers={"X-Sweep-Token": token_for(w, "sweep-a", sid="sweep-a-2")})
    assert r.status_code == 403 and "another driver" in r.json()["error"]["message"]


@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/trials", {"overrides": "learning_rate=1e-4"}, 422, "body.overrides"),
    ("/trials", {}, 422, "body.overrides"),
    ("/trials", {"overrides": {"learning_rate": RATES[0]}, "tenant": "x"}, 422, "body.tenant"),
    ("/trials", {"overrides": {"learning_rate": 5e-4}}, 400, "overrides.learning_rate"),
    ("/trials", {"overrides": {"learning_rate": "fast"}}, 400, "overrides.learning_rate"),
    ("/trials", {"overrides": {}}, 400, "overrides.learning_rate"),
    ("/trials", {"overrides": {"learning_rate": RATES[0], "tenant": "someone-else"}}, 400, "overrides.tenant"),
    ("/failed", {"error": {"code": "sweep_failed"}}, 422, "body.error.message"),
    ("/failed", {"error": "it broke"}, 422, "body.error"),
])
def test_a_malformed_body_is_a_4xx_naming_the_field_and_changes_nothing(world, path, body, status, field):
    w = world
    sweep_id = submit(w)
    r = w.api.post(f"/v1/sweeps/{sweep_id}/driver{path}", headers={"X-Sweep-Token": token_for(w, sweep_id)}, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field, r.text
    assert (row(w, Sweep, sweep_id).status, trials(w, sweep_id)) == ("queued", 0)


def test_the_driver_takes_its_sweep_ledger_from_its_environment(world, monkeypatch):
    w = world
    monkeypatch.delenv("DOCTUNE_JOB_LEDGER", raising=False)
    assert isinstance(sweep_ledger_for(w.p, "sweep-1"), DatabaseSweepLedger)  # the shared cluster: as before
    monkeypatch.setenv("DOCTUNE_JOB_LEDGER", "api")
    monkeypatch.setenv("DOCTUNE_SWEEP_TOKEN", "dts_x.y")
    lg = sweep_ledger_for(w.p, "sweep-1")
    assert isinstance(lg, ApiSweepLedger) and str(lg.http.base_url) == "http://testserver"
    monkeypatch.delenv("DOCTUNE_SWEEP_TOKEN")
    with pytest.raises(DoctuneError, match="DOCTUNE_SWEEP_TOKEN"):
        sweep_ledger_for(w.p, "sweep-1")
