"""Create requests are idempotent by key, on SQLite and PostgreSQL with a real S3 server (no
Ray): a submit whose answer is lost and that the client retries makes one job, not two; a repeat
with the same ``Idempotency-Key`` gets the first answer (multipart uploads too, though each try
draws a new boundary); the same key with another body is a 400 naming the header; racing
repeats create one thing; a key's secret is never stored for replay; and the client retries only
idempotent requests."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.client import DoctuneClient
from doctune.config import Settings
from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, IdempotencyKey, Job

from tests.unit.test_cli import s3  # noqa: F401  (the real S3 server fixture)

pytestmark = pytest.mark.both_databases  # the store itself: on PostgreSQL too

RECORDS = [{"text": f"document {i} about {label}", "label": label} for label in ("sport", "tech") for i in range(20)]


class LoseAnswers(httpx.BaseTransport):
    """The server handles each request, but the first ``n`` answers never reach the client (a
    connection reset after the server committed): what a flaky network does to a submit."""

    def __init__(self, inner: httpx.BaseTransport, n: int = 1) -> None:
        self.inner, self.n, self.sent = inner, n, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        response = self.inner.handle_request(request)
        content = response.read()
        if self.n > 0:
            self.n -= 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return httpx.Response(response.status_code, headers=response.headers, content=content)


@pytest.fixture
def world(database_url, tmp_path, s3):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, **s3))
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    tenant = f"idem-{tmp_path.name[-6:].lower().replace('_', '-')}".strip("-")
    _, key = tenants.create_tenant(p, admin, TenantSpec(name=tenant))
    api = TestClient(create_app(p))
    yield p, api, key, tenant
    p.objects.delete_prefix(f"tenants/{tenant}/")
    p.db.dispose()


def client_losing(api: TestClient, key: str, n: int = 1) -> tuple[DoctuneClient, LoseAnswers]:
    client = DoctuneClient("http://testserver", key)
    transport = LoseAnswers(api._transport, n)
    client.http = httpx.Client(transport=transport, base_url="http://testserver", headers={"Authorization": f"Bearer {key}"})
    return client, transport


def job_spec(dataset_id: str) -> dict:
    return {"task": "classification", "base_model": "all-minilm-l6-v2", "dataset": {"id": dataset_id}, "max_steps": 2}


def count(p, table, tenant):
    with p.db.session() as s:
        return s.query(table).filter(table.tenant_id == tenant).count()


def test_a_retried_submit_never_makes_two_jobs(world):
    p, api, key, tenant = world
    client, transport = client_losing(api, key, n=1)
    ds = client.upload_dataset("docs", "classification", {"data": to_jsonl(RECORDS)})  # its answer is lost too
    assert count(p, Dataset, tenant) == 1 and transport.sent == 2  # retried with the same key: replayed
    transport.n = 2
    job = client.submit_job(job_spec(ds["id"]))  # two answers lost, the third arrives
    assert transport.sent == 5
    with p.db.session() as s:
        assert [j.id for j in s.query(Job).filter(Job.tenant_id == tenant)] == [job["id"]]


def test_a_repeat_gets_the_first_answer_and_another_body_is_refused(world):
    p, api, key, tenant = world
    hdr = {"Authorization": f"Bearer {key}"}
    files = {"data": ("d.jsonl", to_jsonl(RECORDS), "application/jsonl")}
    up = api.post("/v1/datasets", data={"name": "docs", "task": "classification"}, files=files,
                  headers={**hdr, "Idempotency-Key": "upload-1"})
    again = api.post("/v1/datasets", data={"name": "docs", "task": "classification"}, files=files,
                     headers={**hdr, "Idempotency-Key": "upload-1"})
    assert up.status_code == again.status_code == 201 and up.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true" and count(p, Dataset, tenant) == 1
    first = api.post("/v1/jobs", json=job_spec(up.json()["id"]), headers={**hdr, "Idempotency-Key": "job-1"})
    other = api.post("/v1/jobs", json={**job_spec(up.json()["id"]), "max_steps": 3}, headers={**hdr, "Idempotency-Key": "job-1"})
    assert first.status_code == 201
    assert other.status_code == 400 and other.json()["error"]["field"] == "Idempotency-Key"
    plain = api.post("/v1/jobs", json=job_spec(up.json()["id"]), headers=hdr)  # no key: a new job, as before
    assert plain.status_code == 201 and plain.json()["id"] != first.json()["id"] and count(p, Job, tenant) == 2
    bad = api.post("/v1/jobs", json=job_spec("ds-nope"), headers={**hdr, "Idempotency-Key": "job-2"})
    assert bad.status_code == 404  # a failure is not remembered: the corrected request runs with that key
    fixed = api.post("/v1/jobs", json=job_spec("ds-nope"), headers={**hdr, "Idempotency-Key": "job-2"})
    assert fixed.status_code == 404 and "idempotent-replayed" not in fixed.headers


def test_racing_repeats_create_one_job(world):
    p, api, key, tenant = world
    hdr = {"Authorization": f"Bearer {key}"}
    files = {"data": ("d.jsonl", to_jsonl(RECORDS), "application/jsonl")}
    ds = api.post("/v1/datasets", data={"name": "docs", "task": "classification"}, files=files, headers=hdr).json()
    barrier, answers = threading.Barrier(4), []

    def submit():
        barrier.wait()
        answers.append(api.post("/v1/jobs", json=job_spec(ds["id"]), headers={**hdr, "Idempotency-Key": "race-1"}))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count(p, Job, tenant) == 1
    ok = [r for r in answers if r.status_code == 201]
    assert ok and {r.json()["id"] for r in ok} == {ok[0].json()["id"]}
    assert all(r.status_code in (201, 409) for r in answers)  # 409: the first was still being answered


def test_a_keys_secret_is_not_stored_for_replay(world):
    p, api, key, tenant = world
    hdr = {"Authorization": f"Bearer {key}", "Idempotency-Key": "key-1"}
    first = api.post("/v1/keys", json={"role": "viewer"}, headers=hdr)
    assert first.status_code == 201 and first.json()["api_key"]
    again = api.post("/v1/keys", json={"role": "viewer"}, headers=hdr)
    assert again.status_code == 409 and first.json()["id"] in again.json()["error"]["message"]
    with p.db.session() as s:
        stored = s.query(IdempotencyKey).one()
        assert first.json()["api_key"] not in str(stored.response)
    assert len(tenants.list_keys(p, tenants.authenticate(p, key)).items) == 2  # the tenant's first key and this one


def test_the_client_retries_only_idempotent_requests(world):
    p, api, key, tenant = world
    with p.db.session() as s:
        s.add(Job(id="job-c", tenant_id=tenant, task="classification", spec=job_spec("ds-x"), status="queued"))
    client, transport = client_losing(api, key, n=1)
    with pytest.raises(httpx.ReadError):  # a cancel carries no key: not retried
        client.cancel_job("job-c")
    assert transport.sent == 1
    transport.n = 1
    assert client.get_job("job-c")["status"] == "cancelled" and transport.sent == 3  # a GET is retried
