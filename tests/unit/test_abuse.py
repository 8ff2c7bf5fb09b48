"""Every door is metered: each test performs one abuse over raw HTTP against the API app (the
FastAPI TestClient, and a real uvicorn server for bodies with no length) and asserts what the
caller sees: oversized bodies (declared or chunked) are a 413 naming the limit and the setting
that raises it; deeply nested JSON is a 400, never a 500; too many rows or labels are refused
before anything is stored; a key or an address over its rate is a 429 with ``Retry-After``;
tenant quotas on queued jobs and keys are a 429; and every list is a page."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec

JSON_CAP, UPLOAD_CAP = 4096, 64 * 1024


def make_world(database_url: str, tmp_path, **settings):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, max_json_bytes=JSON_CAP,
                          max_upload_bytes=UPLOAD_CAP, **settings))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    hdr = {"admin": {"Authorization": f"Bearer {admin_key}"}, "a": {"Authorization": f"Bearer {key_a}"}}
    return p, hdr


@pytest.fixture
def world(database_url, tmp_path):
    p, hdr = make_world(database_url, tmp_path, max_dataset_rows=20, max_labels=3)
    yield p, TestClient(create_app(p)), hdr
    p.db.dispose()


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def chunks(blob: bytes, size: int = 1024):
    """A body sent in chunks with no Content-Length (HTTP/1.1 chunked transfer encoding)."""
    for i in range(0, len(blob), size):
        yield blob[i:i + size]


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.jsonl"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + v + b"\r\n" for k, v in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def jsonl(*lines: str) -> bytes:
    return "\n".join(lines).encode()


# ------------------------------------------------------------------ point 10: bodies and uploads
def test_json_body_over_the_cap_is_413_naming_the_limit_and_the_setting(world):
    _, client, hdr = world
    body = b'{"task": "classification", "padding": "' + b"x" * JSON_CAP + b'"}'
    err = error_of(client.post("/v1/jobs", headers={**hdr["a"], "Content-Type": "application/json"}, content=body), 413)
    assert err["code"] == "too_large" and str(JSON_CAP) in err["message"] and "DOCTUNE_MAX_JSON_BYTES" in err["message"]


def test_chunked_json_body_with_no_length_is_cut_off_at_the_cap(world):
    _, client, hdr = world
    body = b'{"task": "classification", "padding": "' + b"x" * (4 * JSON_CAP) + b'"}'
    r = client.post("/v1/jobs", headers={**hdr["a"], "Content-Type": "application/json"}, content=chunks(body))
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    err = error_of(r, 413)
    assert "DOCTUNE_MAX_JSON_BYTES" in err["message"]


def test_chunked_upload_over_the_cap_is_413_and_stores_nothing(world):
    _, client, hdr = world
    big = jsonl(*['{"text": "%s", "label": "a"}' % ("y" * 1000)] * 1600)  # 1.6 MB: over 64 KiB + 1 MiB of framing
    body, content_type = multipart({"name": "big", "task": "classification"}, {"data": big})
    r = client.post("/v1/datasets", headers={**hdr["a"], "Content-Type": content_type}, content=chunks(body, 64 * 1024))
    err = error_of(r, 413)
    assert "DOCTUNE_MAX_UPLOAD_BYTES" in err["message"]
    assert client.get("/v1/datasets", headers=hdr["a"]).json()["items"] == []


def test_deeply_nested_json_is_400_not_500(world):
    _, client, hdr = world
    for depth in (40, 2000):  # over the 32 the platform allows; deep enough to overflow Python's own parser
        body = b'{"task": "classification", "x": ' + b"[" * depth + b"]" * depth + b"}"
        err = error_of(client.post("/v1/jobs", headers={**hdr["a"], "Content-Type": "application/json"}, content=body), 400)
        assert err["field"] == "body" and "32 deep" in err["message"]


def test_dataset_rows_labels_and_nesting_are_capped_before_anything_is_stored(world):
    _, client, hdr = world
    cases = [
        (jsonl(*['{"text": "t%d", "label": "%s"}' % (i, "ab"[i % 2]) for i in range(25)]), 413, "DOCTUNE_MAX_DATASET_ROWS"),
        (jsonl(*['{"text": "t%d", "label": "l%d"}' % (i, i % 4) for i in range(20)]), 422, "DOCTUNE_MAX_LABELS"),
        (jsonl('{"text": "t", "label": "a", "x": ' + "[" * 3000 + "]" * 3000 + "}"), 422, "data line 1"),
    ]
    for data, status, needle in cases:
        r = client.post("/v1/datasets", headers=hdr["a"], data={"name": "d", "task": "classification"},
                        files={"data": ("d.jsonl", data)})
        assert needle in error_of(r, status)["message"]
    assert client.get("/v1/datasets", headers=hdr["a"]).json()["items"] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(world):
    """The same app behind a real uvicorn server, as `doctune up` runs it."""
    import uvicorn

    p, _, hdr = world
    server = uvicorn.Server(uvicorn.Config(create_app(p), host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield server.config.port, hdr
    server.should_exit = True
    thread.join(10)


def test_real_server_cuts_off_an_endless_chunked_body(served):
    """A client that streams a body with no length and never stops gets a 413 once the cap passes."""
    port, hdr = served
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{'Authorization'}: {hdr['a']['Authorization']}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 1024
        answer = b""
        try:
            for _ in range(10 * JSON_CAP // len(chunk)):  # ten times the cap: the server answers long before
                conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except OSError:
            pass  # the server closed the connection after answering
        while b"\r\n\r\n" not in answer:
            data = conn.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


# ------------------------------------------------------------------ point 11: keys
def test_new_keys_are_hmac_and_an_old_scrypt_key_still_works_then_is_rehashed(world):
    from doctune.store.db import ApiKey
    from doctune.store.keys import scrypt_hash

    p, client, hdr = world
    key_id = hdr["a"]["Authorization"].split("_")[1]
    with p.db.session() as s:
        row = s.get(ApiKey, key_id)
        assert (row.hash_scheme, row.salt) == ("hmac-sha256", "")
        s.add(ApiKey(id="legacy0000", tenant_id="team-a", role="member", salt="ab" * 16,
                     hash=scrypt_hash("old-secret", "ab" * 16), hash_scheme="scrypt"))
    assert client.get("/v1/whoami", headers={"Authorization": "Bearer dtk_legacy0000_wrong"}).status_code == 401
    r = client.get("/v1/whoami", headers={"Authorization": "Bearer dtk_legacy0000_old-secret"})
    assert r.status_code == 200 and r.json()["tenant"] == "team-a"
    with p.db.session() as s:
        assert s.get(ApiKey, "legacy0000").hash_scheme == "hmac-sha256"  # scrypt is paid once per old key
    p.key_verifier.forget()
    assert client.get("/v1/whoami", headers={"Authorization": "Bearer dtk_legacy0000_old-secret"}).status_code == 200


@pytest.mark.both_databases
def test_a_revoked_key_stops_working_in_another_process_within_2_seconds(world, database_url, tmp_path):
    """A replica (its own KeyVerifier on the same database, as another process has) that has the key
    cached refuses it within 2 s of a revocation made through the API."""
    import asyncio

    from doctune.serve.auth import KeyChecker
    from doctune.store.stores import Stores

    p, client, hdr = world
    replica = KeyChecker(Stores(p.settings).key_verifier)
    key = hdr["a"]["Authorization"]
    assert asyncio.run(replica.check_endpoint_access(key, "team-a")).tenant_id == "team-a"  # now cached there
    viewer = client.post("/v1/keys", headers=hdr["a"], json={"role": "viewer"}).json()
    assert client.delete(f"/v1/keys/{key.split('_')[1]}", headers={"Authorization": f"Bearer {viewer['api_key']}"}
                         ).status_code == 403  # viewers cannot revoke
    assert client.delete(f"/v1/keys/{key.split('_')[1]}", headers=hdr["admin"]).status_code == 200
    revoked_at = time.monotonic()
    assert client.get("/v1/whoami", headers=hdr["a"]).status_code == 401  # the revoking process: at once
    while True:
        try:
            asyncio.run(replica.check_endpoint_access(key, "team-a"))
        except Exception as exc:
            assert getattr(exc, "code", None) == "unauthenticated"
            break
        assert time.monotonic() - revoked_at < 2.0, "the replica still accepts a key revoked 2 s ago"
        time.sleep(0.05)


def test_replica_checks_keys_off_its_event_loop(world):
    """A key the replica has not cached is verified in a worker thread, not on the loop serving requests."""
    import asyncio

    from doctune.serve.auth import KeyChecker
    from doctune.store.stores import Stores

    p, _, hdr = world
    verifier = Stores(p.settings).key_verifier
    threads = []
    verify = verifier.verify
    verifier.verify = lambda key: threads.append(threading.get_ident()) or verify(key)

    async def check() -> int:
        await KeyChecker(verifier).check_endpoint_access(hdr["a"]["Authorization"], "team-a")
        return threading.get_ident()

    loop_thread = asyncio.run(check())
    assert threads and threads[0] != loop_thread


def test_cli_never_falls_back_to_the_admin_key(world, tmp_path, monkeypatch):
    import json
    import os

    from typer.testing import CliRunner

    from doctune.cli import app
    from doctune.cli import session
    from doctune.client import DoctuneClient

    p, client, hdr = world
    home = tmp_path / "home"
    home.mkdir()
    admin_key = hdr["admin"]["Authorization"].removeprefix("Bearer ")
    (home / "stack.json").write_text(json.dumps({"api_url": "http://testserver", "admin_key": admin_key}))
    for var in [v for v in os.environ if v.startswith("DOCTUNE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DOCTUNE_HOME", str(home))

    def in_process(api_url: str, api_key: str | None) -> DoctuneClient:
        c = DoctuneClient(api_url, api_key)
        c.http = TestClient(create_app(p), headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        return c

    previous = session.set_client_factory(in_process)
    try:
        runner = CliRunner()
        out = runner.invoke(app, ["tenants", "list"])
        assert out.exit_code == 2 and "--as-admin" in out.output and "team-a" not in out.output
        out = runner.invoke(app, ["--as-admin", "tenants", "list"])
        assert out.exit_code == 0 and "team-a" in out.output, out.output
    finally:
        session.set_client_factory(previous)
        session.set_as_admin(False)


def test_demo_prints_the_tenant_key_masked(capsys, tmp_path):
    from pathlib import Path

    from doctune.cli.demo import _try_it_yourself

    key = "dtk_0123456789ab_SECRETSECRETSECRETSECRETSECRETSE"
    _try_it_yourself("http://127.0.0.1:8000/x", key, Path(tmp_path) / "demo.key", [{"text": "hello"}])
    printed = capsys.readouterr().out
    assert "SECRETSECRET" not in printed and "dtk_0123456789ab_SECR" in printed and "demo.key" in printed


# ------------------------------------------------------------------ point 12: rate limits, quotas, pages
def replica_app(replica) -> FastAPI:
    """An HTTP app that answers as an endpoint replica does before its model runs."""
    from doctune.errors import DoctuneError
    from doctune.serve.app import error_json

    api = FastAPI()

    @api.post("/predict")
    async def predict(request: Request):
        try:
            return {"inputs": await replica._authorized_body(request)}
        except DoctuneError as exc:
            return error_json(exc)

    return api


@pytest.fixture
def limited(database_url, tmp_path):
    p, hdr = make_world(database_url, tmp_path, rate_limit_per_key="3/minute", rate_limit_per_address="8/minute")
    yield p, TestClient(create_app(p)), hdr
    p.db.dispose()


def test_a_key_over_its_rate_is_429_with_retry_after_and_others_go_on(limited):
    _, client, hdr = limited
    assert [client.get("/v1/jobs", headers=hdr["a"]).status_code for _ in range(3)] == [200, 200, 200]
    r = client.get("/v1/jobs", headers=hdr["a"])
    err = error_of(r, 429)
    assert err["code"] == "rate_limited" and err["field"] == "key" and "rate_limit_per_key" in err["message"]
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert client.get("/v1/jobs", headers=hdr["admin"]).status_code == 200  # another key: its own budget


def test_guessing_keys_from_one_address_is_429(limited):
    _, client, _ = limited
    statuses = [client.get("/v1/jobs", headers={"Authorization": f"Bearer dtk_guess{i:04d}_x"}).status_code
                for i in range(9)]
    assert statuses == [401] * 8 + [429]
    r = client.get("/v1/whoami")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and "rate_limit_per_address" in r.text
    assert client.get("/healthz").status_code == 200  # load balancers' probe is never limited


def test_a_key_is_not_spent_by_someone_sending_its_public_id(limited):
    """The key's own budget is counted only once the key is verified: an attacker at another address
    who sends the key's public id with wrong secrets does not lock its owner out."""
    p, client, hdr = limited
    key_id = hdr["a"]["Authorization"].split("_")[1]
    attacker = TestClient(client.app, client=("10.0.0.9", 5000))
    assert [attacker.get("/v1/jobs", headers={"Authorization": f"Bearer dtk_{key_id}_wrong"}).status_code
            for _ in range(5)] == [401] * 5
    assert [client.get("/v1/jobs", headers=hdr["a"]).status_code for _ in range(3)] == [200] * 3


def test_an_endpoint_rate_limits_its_callers_with_retry_after(world, monkeypatch, tmp_path):
    """The endpoint replica's own checks (doctune.serve.app.EndpointReplica), served over HTTP: a key
    over endpoint_rate_limit_per_key gets a 429 with Retry-After; a body over the endpoint's cap a 413."""
    from doctune.serve.app import EndpointReplica

    p, _, hdr = world
    for name, value in (("home", tmp_path / "replica"), ("database_url", p.settings.database_url),
                        ("endpoint_rate_limit_per_key", "2/minute"), ("endpoint_max_body_bytes", 2048)):
        monkeypatch.setenv(f"DOCTUNE_{name.upper()}", str(value))  # a replica reads its settings from these

    class Replica(EndpointReplica):  # what a replica's __init__ sets up, less the model
        def __init__(self) -> None:
            self._open_stores("endpoint:test")
            self.tenant_id = "team-a"

    client = TestClient(replica_app(Replica()))
    assert client.post("/predict", headers=hdr["a"], json={"inputs": ["x" * 3000]}).status_code == 413
    assert client.post("/predict", headers=hdr["a"], json={"inputs": ["x"]}).status_code == 200
    r = client.post("/predict", headers=hdr["a"], json={"inputs": ["x"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "endpoint_rate_limit_per_key" in r.json()["error"]["message"]
    nested = b'{"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert client.post("/predict", headers=hdr["admin"], content=nested).status_code == 413  # over 2048 bytes first
    r = client.post("/predict", headers=hdr["admin"], content=b'{"inputs": ' + b"[" * 40 + b"]" * 40 + b"}")
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"


def test_queued_jobs_over_the_tenant_quota_are_429(world):
    from doctune.store.db import Dataset, Job

    p, client, hdr = world
    spec = {"task": "classification", "dataset": {"id": "ds-a"}, "max_steps": 1}
    with p.db.session() as s:
        s.add(Dataset(id="ds-a", tenant_id="team-a", name="a", task="classification",
                      uri="s3://doctune/tenants/team-a/datasets/ds-a", info={}))
        s.add_all([Job(id=f"job-q{i}", tenant_id="team-a", task="classification", spec={"tenant": "team-a", **spec},
                       status="queued") for i in range(2)])
    assert client.put("/v1/tenants/team-a/quota", headers=hdr["admin"], json={"max_queued_jobs": 2}).status_code == 200
    err = error_of(client.post("/v1/jobs", headers=hdr["a"], json=spec), 429)
    assert err["code"] == "quota_exceeded" and err["field"] == "max_queued_jobs" and "cancel" in err["message"]
    assert len(client.get("/v1/jobs", headers=hdr["a"]).json()["items"]) == 2  # nothing recorded
    assert client.post("/v1/jobs/job-q0/cancel", headers=hdr["a"]).status_code == 200
    r = client.post("/v1/jobs", headers=hdr["a"], json=spec)  # a freed place: past the quota, to the next check
    assert r.status_code != 429 and r.json()["error"]["code"] == "unavailable"  # (no object store in this test)


def test_keys_over_the_tenant_quota_are_429(world):
    _, client, hdr = world
    assert client.put("/v1/tenants/team-a/quota", headers=hdr["admin"], json={"max_keys": 2}).status_code == 200
    made = client.post("/v1/keys", headers=hdr["a"], json={"role": "viewer"})
    assert made.status_code == 201  # the tenant's first key plus this one
    err = error_of(client.post("/v1/keys", headers=hdr["a"], json={"role": "viewer"}), 429)
    assert err["code"] == "quota_exceeded" and err["field"] == "max_keys" and "revoke" in err["message"]
    assert client.delete(f"/v1/keys/{made.json()['id']}", headers=hdr["a"]).status_code == 200
    assert client.post("/v1/keys", headers=hdr["a"], json={"role": "viewer"}).status_code == 201


def _lists_rows(model) -> bool:
    """Whether a route's response model is a list of rows (``list[...]``) or a page of them (``Page[...]``)."""
    from typing import get_origin

    from doctune.api.schemas import Page

    return get_origin(model) is list or (isinstance(model, type) and issubclass(model, Page))


def test_every_list_route_is_a_page_with_a_capped_size(world):
    """Each GET route that lists rows the platform grows takes limit (capped) and pages on."""
    from fastapi.routing import APIRoute

    from doctune.api.routes import ROUTERS

    p, client, hdr = world
    # the registered task plugins; one model's few exported files; a log (text, read from an offset); a job's
    # TensorBoard event files (one per attempt, and attempts are capped by max_failures)
    unpaged_by_design = {"/v1/tasks", "/v1/models/{model_id}/files", "/v1/jobs/{job_id}/logs",
                         "/v1/jobs/{job_id}/tensorboard"}
    routes = [route for router in ROUTERS for route in router.routes]
    assert len(routes) > 20
    for route in routes:
        if not isinstance(route, APIRoute) or "GET" not in route.methods or route.path in unpaged_by_design:
            continue
        params = {q.alias for q in route.dependant.query_params} | {
            q.alias for d in route.dependant.dependencies for q in d.query_params}
        if not _lists_rows(route.response_model):
            continue  # one object (a job, a deployment's metrics, the cluster), not a list
        assert "limit" in params, f"GET {route.path} lists without a page size"
    assert client.post("/v1/tenants", headers=hdr["admin"], json={"name": "team-b"}).status_code == 201
    r = client.get("/v1/usage", headers=hdr["admin"], params={"limit": 1})
    assert r.status_code == 200 and len(r.json()["items"]) == 1 and r.json()["next_cursor"]
    assert client.get("/v1/usage", headers=hdr["admin"], params={"limit": 10_000}).status_code == 422
