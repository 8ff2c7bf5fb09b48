"""Tenant isolation across the whole REST API: every route the app declares is
called with tenant B's key against tenant A's objects, and none of them reveals or
changes anything of A's. The routes come from the app's own OpenAPI document, so
a new route cannot be left out. Also: keys can be listed (ids only), rotated and
revoked, and viewers are read-only."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.services import tenants
from doctune.services import Platform
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Deployment, Job, Model, Sweep

pytestmark = pytest.mark.both_databases  # the store itself: on PostgreSQL too


@pytest.fixture
def world(database_url, tmp_path):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    app = create_app(p)
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    _, key_b = tenants.create_tenant(p, admin, TenantSpec(name="team-b"))
    ids = {"dataset_id": "ds-a", "job_id": "job-a", "model_id": "model-a", "deployment_id": "dep-a", "sweep_id": "sweep-a",
           "key_id": key_a.split("_")[1], "tenant_id": "team-a", "version": "1"}
    with p.db.session() as s:
        s.add(Dataset(id="ds-a", tenant_id="team-a", name="a", task="classification", uri="s3://doctune/tenants/team-a/datasets/ds-a", info={"labels": ["x", "y"]}))
        s.add(Sweep(id="sweep-a", tenant_id="team-a", task="classification", status="succeeded",
                    spec={"tenant": "team-a", "job": {"task": "classification"}, "search_space": {}}))
    with p.db.session() as s:
        s.add(Job(id="job-a", tenant_id="team-a", task="classification", spec={"tenant": "team-a"}, status="succeeded",
                  sweep_id="sweep-a"))
    with p.db.session() as s:
        s.add(Model(id="model-a", tenant_id="team-a", job_id="job-a", task="classification", uri="s3://doctune/tenants/team-a/models/model-a"))
    with p.db.session() as s:
        s.add(Deployment(id="dep-a", tenant_id="team-a", name="a", model_id="model-a", spec={}, route="/team-a/a", status="running"))
    yield p, TestClient(app), key_a, key_b, ids
    p.db.dispose()


def _routes(app):
    for path, methods in app.openapi()["paths"].items():
        for method in methods:
            yield method.upper(), path


# routes whose credential is a token, not an API key: the `ray job submit` door's submission token, and
# the job or sweep token of a driver on a tenant's dedicated cluster (an API key there is no credential: 401)
TOKEN_DOORS = ("/v1/jobs/direct", "/v1/jobs/{job_id}/attempt", "/v1/sweeps/{sweep_id}/driver")


def test_foreign_key_is_denied_on_every_route(world):
    p, client, key_a, key_b, ids = world
    routes = list(_routes(client.app))
    assert len(routes) >= 15
    hdr = {"Authorization": f"Bearer {key_b}"}
    body = {"tenant": "team-a", "model_id": "model-a", "name": "stolen", "task": "classification",
            "dataset": {"id": "ds-a"}, "max_steps": 1, "role": "member", "max_concurrent_jobs": 99}
    for method, path in routes:
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        if path == "/v1/datasets" and method == "POST":
            r = client.post(url, headers=hdr, data={"tenant": "team-a", "name": "x", "task": "classification"},
                            files={"data": ("d.jsonl", b'{"text": "a", "label": "x"}\n')})
        elif path == "/v1/base-models":
            r = client.request(method, url, headers=hdr, params={"tenant": "team-a", "name": "stolen"}, content=b"")
        elif path.startswith("/v1/jobs/direct"):  # the `ray job submit` door: a submission token, not a key
            r = client.request(method, url, headers={**hdr, "X-Submission-Token": "dtj_guess"},
                               json={"token": "dtj_guess", "spec": {**body, "dataset": {"id": "ds-a"}}} if method == "POST" else None)
        else:
            r = client.request(method, url, headers=hdr, json=body if method in ("POST", "PUT", "PATCH") else None)
        assert r.status_code < 500, (method, path, r.text)
        if path == "/v1/whoami":
            assert r.json()["tenant"] == "team-b"
        elif r.status_code < 400:
            assert "team-a" not in r.text and "ds-a" not in r.text, (method, path, r.text)
        else:
            assert r.status_code in (401, 403, 404) if path.startswith(TOKEN_DOORS) else r.status_code in (403, 404), \
                (method, path, r.status_code, r.text)
            assert set(r.json()["error"]) >= {"code", "message"}
    # and nothing of A's changed
    with p.db.session() as s:
        assert s.get(Job, "job-a").status == "succeeded"
    assert client.get("/v1/jobs/job-a", headers={"Authorization": f"Bearer {key_a}"}).status_code == 200
    assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {key_a}"}).status_code == 200


def test_every_route_but_health_needs_a_key(world):
    _, client, *_ = world
    for method, path in _routes(client.app):
        if path == "/healthz":
            continue
        url = re.sub(r"\{\w+\}", "x", path)
        if path.startswith("/v1/jobs/direct"):  # no key here: the submission token is the credential, and it is checked
            r = client.request(method, url, json={"token": "dtj_guess", "spec": {"task": "classification"}} if method == "POST" else None)
            assert r.status_code in (401, 422), (method, path, r.status_code)
            continue
        r = client.request(method, url)
        assert r.status_code == 401, (method, path, r.status_code)


def test_keys_list_rotate_revoke(world):
    _, client, key_a, _, ids = world
    a = {"Authorization": f"Bearer {key_a}"}
    listed = client.get("/v1/keys", headers=a).json()
    assert [k["id"] for k in listed["items"]] == [ids["key_id"]] and listed["next_cursor"] is None
    assert key_a.split("_", 2)[2] not in client.get("/v1/keys", headers=a).text  # secrets never shown

    viewer = client.post("/v1/keys", headers=a, json={"role": "viewer"}).json()["api_key"]
    v = {"Authorization": f"Bearer {viewer}"}
    assert client.get("/v1/jobs", headers=v).status_code == 200
    r = client.post("/v1/jobs", headers=v, json={"task": "classification", "dataset": {"id": "ds-a"}, "max_steps": 1})
    assert r.status_code == 403 and "read-only" in r.json()["error"]["message"]

    rotated = client.post(f"/v1/keys/{ids['key_id']}/rotate", headers=a)
    assert rotated.status_code == 201
    new_key = rotated.json()["api_key"]
    assert client.get("/v1/jobs", headers=a).status_code == 401  # the old key is dead at once
    n = {"Authorization": f"Bearer {new_key}"}
    assert client.get("/v1/jobs/job-a", headers=n).status_code == 200
    assert client.delete(f"/v1/keys/{new_key.split('_')[1]}", headers=n).status_code == 200
    assert client.get("/v1/jobs", headers=n).status_code == 401


def test_admin_sets_quotas_members_cannot(world):
    p, client, key_a, _, _ = world
    from doctune.services.tenants import create_admin_key

    admin = {"Authorization": f"Bearer {create_admin_key(p)}"}
    a = {"Authorization": f"Bearer {key_a}"}
    r = client.put("/v1/tenants/team-a/quota", headers=admin, json={"max_concurrent_jobs": 1, "max_cpus": None})
    assert r.status_code == 200 and r.json()["quota"]["max_concurrent_jobs"] == 1 and r.json()["quota"]["max_cpus"] is None
    assert client.get("/v1/tenants/team-a", headers=a).json()["quota"]["max_concurrent_jobs"] == 1
    assert client.put("/v1/tenants/team-a/quota", headers=a, json={"max_concurrent_jobs": 50}).status_code == 403
    bad = client.put("/v1/tenants/team-a/quota", headers=admin, json={"max_cpus": -1, "max_jobs": 3})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["error"]["errors"]} == {"max_cpus", "max_jobs"}
