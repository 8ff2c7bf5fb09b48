"""Concurrent creates are never a 500: several threads create sweeps, jobs and datasets (each
with an ``Idempotency-Key``, as ``doctune.client`` sends them) and read, while the dispatcher and
the reconciler write beside them, against the real API app, the real S3 server and a real SQLite
file (and PostgreSQL when DOCTUNE_TEST_DATABASE_URL is set). No answer is a 5xx, and every create
happened exactly once.

What this found (the 500 a sweep got while jobs were being submitted): not the database, but the
first ``from transformers import AutoTokenizer`` of the API process running on several request
threads at once (every job and sweep check loads its base model's tokenizer); transformers resolves
that name lazily and not thread-safely, so some threads got an ImportError. The tokenizer now loads
under a lock, checked in a fresh interpreter below. A database that stays busy past its wait is a
503 with ``Retry-After``, not a trace."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.data import to_jsonl
from doctune.services import Platform, tenants
from doctune.services.reconcile import reconcile_all
from doctune.services.scheduler import dispatch_once
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Job, Sweep, Tenant

from tests.unit.test_cli import s3  # noqa: F401  (a bucket of its own on the session's real SeaweedFS server)
from tests.unit.test_reconcile import FakeCluster

pytestmark = pytest.mark.both_databases  # the store itself: on PostgreSQL too

RECORDS = [{"text": f"document {i} about {label}", "label": label} for label in ("sport", "tech") for i in range(20)]
ROUNDS, THREADS = 6, 6


@pytest.fixture
def world(database_url, tmp_path, s3):  # noqa: F811
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, reconcile_grace_s=0.0, **s3),
                 runner=FakeCluster())
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key = tenants.create_tenant(p, admin, TenantSpec(name="busy"))
    with p.db.session() as s:  # no quota in the way: this test is about contention
        s.execute(update(Tenant).where(Tenant.id == "busy").values(
            max_concurrent_jobs=None, max_queued_jobs=None, max_trials=None))
    yield p, TestClient(create_app(p), raise_server_exceptions=False), {"Authorization": f"Bearer {key}"}
    p.objects.delete_prefix("tenants/busy/")
    p.db.dispose()


def job_spec(dataset_id: str) -> dict:
    return {"task": "classification", "base_model": "all-minilm-l6-v2", "dataset": {"id": dataset_id}, "max_steps": 2}


def sweep_spec(dataset_id: str) -> dict:
    return {"tenant": "busy", "job": job_spec(dataset_id),
            "search_space": {"learning_rate": {"type": "choice", "values": [1e-3, 2e-3]}}}


def _background(p: Platform, stop: threading.Event, errors: list) -> None:
    """The API's dispatcher and reconciler, writing as fast as they can."""
    while not stop.is_set():
        try:
            dispatch_once(p)
            reconcile_all(p, grace_s=0.0)
        except Exception as exc:  # noqa: BLE001  (recorded and asserted on below)
            errors.append(repr(exc))


def test_concurrent_creates_are_never_a_500_and_each_happens_once(world):
    p, api, hdr = world
    files = {"data": ("d.jsonl", to_jsonl(RECORDS), "application/jsonl")}
    ds = api.post("/v1/datasets", data={"name": "seed", "task": "classification"}, files=files, headers=hdr)
    assert ds.status_code == 201, ds.text
    ds_id = ds.json()["id"]
    stop, bg_errors = threading.Event(), []
    bg = threading.Thread(target=_background, args=(p, stop, bg_errors), daemon=True)
    bg.start()
    answers: list[tuple[str, int, str]] = []

    def post(kind: str, key: str):
        h = {**hdr, "Idempotency-Key": key}
        if kind == "sweep":
            return api.post("/v1/sweeps", json=sweep_spec(ds_id), headers=h)
        if kind == "job":
            return api.post("/v1/jobs", json=job_spec(ds_id), headers=h)
        return api.post("/v1/datasets", data={"name": key, "task": "classification"}, files=files, headers=h)

    def worker(n: int) -> None:
        for i in range(ROUNDS):
            kind = ("sweep", "job", "dataset")[(n + i) % 3]
            key = f"{kind}-{n}-{i}-{uuid.uuid4().hex[:6]}"
            r = post(kind, key)
            if r.status_code in (409, 503):  # busy or still being answered: retried as the client does
                r = post(kind, key)
            answers.append((kind, r.status_code, r.text[:300]))
            for path in ("/v1/jobs", "/v1/sweeps", "/v1/datasets"):
                g = api.get(path, headers=hdr)
                answers.append((f"GET {path}", g.status_code, g.text[:300]))

    deadline = time.monotonic() + 240
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker, n) for n in range(THREADS)]
        for f in futures:
            f.result(timeout=max(1.0, deadline - time.monotonic()))
    stop.set()
    bg.join(30)
    assert [a for a in answers if a[1] >= 500] == [] and not bg_errors, bg_errors[:3]
    assert [a for a in answers if a[1] != 200 and a[1] != 201] == []
    made = {k: sum(1 for a in answers if a[0] == k) for k in ("sweep", "job", "dataset")}
    with p.db.session() as s:
        trials = s.query(Job).filter(Job.sweep_id.is_not(None)).count()
        assert s.query(Sweep).count() == made["sweep"]
        assert s.query(Job).count() - trials == made["job"]
        assert s.query(Dataset).count() == made["dataset"] + 1


def test_a_database_that_stays_busy_is_a_503_with_retry_after(world, monkeypatch):
    p, api, hdr = world
    from doctune.services import sweeps as sweeps_svc

    def locked(*_a, **_k):
        raise OperationalError("INSERT INTO sweeps ...", {}, Exception("database is locked"))

    monkeypatch.setattr(sweeps_svc, "submit_sweep", locked)
    r = api.post("/v1/sweeps", json=sweep_spec("ds-x"), headers=hdr)
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
    err = r.json()["error"]
    assert err["code"] == "unavailable" and "busy" in err["message"] and "INSERT" not in err["message"]


def test_a_sweep_stored_and_submitted_is_answered_even_when_recording_its_driver_finds_the_database_busy(
        world, monkeypatch):
    """Found by the contention test above (13 sweeps for 12 creates, 1 run in 3 under load): the sweep was
    stored and its driver submitted, then recording the driver's id met a busy database and the request was a
    503; the client's retry, its Idempotency-Key dropped with the failure, created a second sweep. Now the
    request succeeds and the reconciler records the id (the cluster has that driver): one sweep, one driver."""
    p, api, hdr = world
    from doctune.services import sweeps as sweeps_svc

    files = {"data": ("d.jsonl", to_jsonl(RECORDS), "application/jsonl")}
    ds_id = api.post("/v1/datasets", data={"name": "seed", "task": "classification"}, files=files, headers=hdr).json()["id"]
    real_update = sweeps_svc.update_sweep

    def busy_when_recording_the_driver(p_, sweep_id, **fields):
        if "ray_submission_id" in fields:
            raise OperationalError("UPDATE sweeps ...", {}, Exception("database is locked"))
        return real_update(p_, sweep_id, **fields)

    monkeypatch.setattr(sweeps_svc, "update_sweep", busy_when_recording_the_driver)
    h = {**hdr, "Idempotency-Key": "sweep-once"}
    first = api.post("/v1/sweeps", json=sweep_spec(ds_id), headers=h)
    assert first.status_code == 201, first.text
    again = api.post("/v1/sweeps", json=sweep_spec(ds_id), headers=h)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    monkeypatch.setattr(sweeps_svc, "update_sweep", real_update)
    reconcile_all(p, grace_s=0.0)
    with p.db.session() as s:
        sweeps = s.query(Sweep).all()
    assert [(w.id, w.ray_submission_id) for w in sweeps] == [(first.json()["id"], first.json()["id"])]
    assert [sid for _, _, sid in p.runner.submitted] == [first.json()["id"]]  # one driver, not a second


def test_a_sweep_whose_driver_the_reconciler_submitted_first_is_adopted_not_failed(world):
    """The other way to two sweeps for one create: the reconciler (grace 0 here) read the stored sweep before the
    API submitted it and submitted its driver first; the API's submit then met "already exists", failed the
    sweep and answered 503, and the retry created a second. Now the API adopts the driver the cluster has."""
    p, api, hdr = world
    files = {"data": ("d.jsonl", to_jsonl(RECORDS), "application/jsonl")}
    ds_id = api.post("/v1/datasets", data={"name": "seed", "task": "classification"}, files=files, headers=hdr).json()["id"]
    cluster = p.runner
    real_submit = cluster.submit

    def reconciler_came_first(module, args, *, submission_id=None):
        real_submit(module, args, submission_id=submission_id)  # what reconcile_sweep did a moment earlier
        return real_submit(module, args, submission_id=submission_id)  # the API's own: "already exists"

    cluster.submit = reconciler_came_first
    r = api.post("/v1/sweeps", json=sweep_spec(ds_id), headers={**hdr, "Idempotency-Key": "sweep-raced"})
    assert r.status_code == 201 and r.json()["status"] == "queued", r.text
    with p.db.session() as s:
        assert [(w.id, w.ray_submission_id, w.status) for w in s.query(Sweep).all()] == [(r.json()["id"], r.json()["id"], "queued")]
    assert [sid for _, _, sid in cluster.submitted] == [r.json()["id"]]


def test_an_idempotency_claim_on_a_busy_database_is_a_503(world, monkeypatch):
    p, api, hdr = world
    from doctune.services import idempotency as idem_svc

    def locked(*_a, **_k):
        raise OperationalError("INSERT INTO idempotency_keys ...", {}, Exception("database is locked"))

    monkeypatch.setattr(idem_svc, "claim_key", locked)  # raised in the middleware, outside any route
    r = api.post("/v1/sweeps", json=sweep_spec("ds-x"), headers={**hdr, "Idempotency-Key": "k-1"})
    assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text


ROOT = Path(__file__).resolve().parents[2]
RACE = """
import threading
from doctune.base_models import resolve_base_model
from doctune.train.plan import load_tokenizer
path, barrier, errors = resolve_base_model("all-minilm-l6-v2"), threading.Barrier(16), []
def check():
    barrier.wait()
    try:
        load_tokenizer(path)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=check) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(errors)
"""


def test_the_first_tokenizer_loads_on_many_threads_at_once():
    """A fresh process, as the API is at its first job: sixteen request threads load the tokenizer at
    once (without the lock, 4 runs of 4 had threads get "cannot import name 'AutoTokenizer'")."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # one fresh process (each costs ~15 s of the 2 cores): without the lock, every run of 4 showed the race
    out = subprocess.run([sys.executable, "-c", RACE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]
