"""The REST API's resource surface over a real database (no Ray, no object store): every list is
a page, newest first, that a cursor walks to the end; state and task filters (a bad value is a
422 naming the parameter); each tenant lists only its own rows; deletes refuse what is in use
(409 naming the user), another tenant's ids (404) and viewers (403); the OpenAPI document shows
the spec models as request bodies and a response schema for every operation; and naming
another tenant in a body is a 403 before any field is validated."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.client import DoctuneClient
from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from doctune.store.db import ApiKey, Dataset, Deployment, DeploymentRevision, Job, Model, Sweep

pytestmark = pytest.mark.both_databases  # the store itself: on PostgreSQL too

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def world(database_url, tmp_path):
    """Tenants team-a (member and viewer keys) and team-b, and an admin; team-a has 7 jobs of
    two tasks in several states, datasets, a sweep, models and deployments; team-b has one of each."""
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))  # no S3 endpoint: no object store
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    _, key_b = tenants.create_tenant(p, admin, TenantSpec(name="team-b"))
    _, viewer_a = tenants.create_key(p, admin, "team-a", "viewer")
    _add_rows(p)
    client = TestClient(create_app(p))
    hdr = {name: {"Authorization": f"Bearer {key}"} for name, key in
           (("admin", admin_key), ("a", key_a), ("b", key_b), ("viewer", viewer_a))}
    yield p, client, hdr
    p.db.dispose()


def _add_rows(p: Platform) -> None:
    states = ["queued", "running", "succeeded", "succeeded", "failed", "paused", "cancelled"]
    with p.db.session() as s:
        s.add(Dataset(id="ds-a1", tenant_id="team-a", name="one", task="classification", uri="s3://doctune/tenants/team-a/datasets/ds-a1",
                      info={}, created_at=at(0)))
        s.add(Dataset(id="ds-a2", tenant_id="team-a", name="two", task="ner", uri="s3://doctune/tenants/team-a/datasets/ds-a2",
                      info={}, created_at=at(1)))
        s.add(Dataset(id="ds-a3", tenant_id="team-a", name="idle", task="classification",
                      uri="s3://doctune/tenants/team-a/datasets/ds-a3", info={}, created_at=at(2)))
        s.add(Dataset(id="ds-b1", tenant_id="team-b", name="b", task="classification", uri="s3://doctune/tenants/team-b/datasets/ds-b1",
                      info={}, created_at=at(3)))
        s.add(Sweep(id="sweep-a", tenant_id="team-a", task="ner", status="succeeded", created_at=at(4),
                    spec={"tenant": "team-a", "job": {"task": "ner", "dataset": {"id": "ds-a2"}}, "search_space": {}}))
        s.add(Sweep(id="sweep-b", tenant_id="team-b", task="classification", status="running", created_at=at(5),
                    spec={"tenant": "team-b", "job": {"task": "classification", "dataset": {"id": "ds-b1"}}, "search_space": {}}))
    with p.db.session() as s:
        for i, state in enumerate(states):
            task = "ner" if i % 2 else "classification"
            dataset = "ds-a2" if task == "ner" else "ds-a1"
            s.add(Job(id=f"job-a{i}", tenant_id="team-a", task=task, status=state, created_at=at(10 + i),
                      spec={"tenant": "team-a", "task": task, "dataset": {"id": dataset}}))
        s.add(Job(id="job-b", tenant_id="team-b", task="classification", status="succeeded", created_at=at(20),
                  spec={"tenant": "team-b", "dataset": {"id": "ds-b1"}}))
    with p.db.session() as s:
        for model_id, job_id, task in (("model-served", "job-a2", "classification"), ("model-history", "job-a3", "ner"),
                                       ("model-free", "job-a2", "classification")):
            s.add(Model(id=model_id, tenant_id="team-a", job_id=job_id, task=task, created_at=at(30 + len(model_id)),
                        uri=f"s3://doctune/tenants/team-a/models/{model_id}"))
        s.add(Model(id="model-b", tenant_id="team-b", job_id="job-b", task="classification", created_at=at(40),
                    uri="s3://doctune/tenants/team-b/models/model-b"))
    with p.db.session() as s:
        s.add(Deployment(id="dep-live", tenant_id="team-a", name="live", model_id="model-served", spec={}, route="/team-a/live",
                         status="running", created_at=at(50)))
        s.add(Deployment(id="dep-gone", tenant_id="team-a", name="gone", model_id="model-history", spec={},
                         route="/team-a/gone", status="deleted", created_at=at(51)))
        s.add(Deployment(id="dep-b", tenant_id="team-b", name="b", model_id="model-b", spec={}, route="/team-b/b",
                         status="running", created_at=at(52)))
    with p.db.session() as s:
        s.add(DeploymentRevision(deployment_id="dep-gone", revision=1, model_id="model-history", spec={}, reason="deploy"))


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


# ------------------------------------------------------------------ pages
def test_a_cursor_walks_every_page_newest_first(world):
    _, client, hdr = world
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get("/v1/jobs", headers=hdr["a"], params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        page = r.json()
        assert r.status_code == 200 and len(page["items"]) <= 3
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == [f"job-a{i}" for i in range(6, -1, -1)]
    cursor = client.get("/v1/jobs", headers=hdr["a"], params={"limit": 1}).json()["next_cursor"]
    created, row_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
    assert row_id == "job-a6" and datetime.fromisoformat(created).replace(tzinfo=timezone.utc) == at(16)


def test_rows_created_at_the_same_moment_are_ordered_by_id_and_none_is_lost(world):
    p, client, hdr = world
    with p.db.session() as s:
        for suffix in "xyz":
            s.add(Dataset(id=f"ds-same-{suffix}", tenant_id="team-a", name=suffix, task="classification",
                          uri=f"s3://doctune/tenants/team-a/datasets/ds-same-{suffix}", info={}, created_at=at(100)))
    first = client.get("/v1/datasets", headers=hdr["a"], params={"limit": 2}).json()
    rest = client.get("/v1/datasets", headers=hdr["a"], params={"limit": 200, "cursor": first["next_cursor"]}).json()
    assert [d["id"] for d in first["items"] + rest["items"]] == ["ds-same-z", "ds-same-y", "ds-same-x", "ds-a3", "ds-a2", "ds-a1"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("params, status, field", [
    ({"limit": 0}, 422, "limit"), ({"limit": 201}, 422, "limit"), ({"limit": "many"}, 422, "limit"),
    ({"cursor": "not a cursor!"}, 400, "cursor"), ({"cursor": base64.urlsafe_b64encode(b"yesterday|x").decode()}, 400, "cursor"),
])
def test_bad_page_parameters_name_the_parameter(world, params, status, field):
    _, client, hdr = world
    r = client.get("/v1/models", headers=hdr["a"], params=params)
    assert r.status_code == status and field in r.json()["error"]["field"], r.text
    assert client.get("/v1/models", headers=hdr["a"], params={"limit": 200}).status_code == 200


# ------------------------------------------------------------------ filters
def test_state_and_task_filters(world):
    _, client, hdr = world
    assert ids(client.get("/v1/jobs", headers=hdr["a"], params={"state": "succeeded"})) == ["job-a3", "job-a2"]
    assert ids(client.get("/v1/jobs", headers=hdr["a"], params={"task": "ner"})) == ["job-a5", "job-a3", "job-a1"]
    assert ids(client.get("/v1/jobs", headers=hdr["a"], params={"task": "ner", "state": "paused"})) == ["job-a5"]
    assert ids(client.get("/v1/datasets", headers=hdr["a"], params={"task": "ner"})) == ["ds-a2"]
    assert ids(client.get("/v1/sweeps", headers=hdr["admin"], params={"state": "running"})) == ["sweep-b"]
    assert ids(client.get("/v1/sweeps", headers=hdr["admin"], params={"task": "ner"})) == ["sweep-a"]
    assert ids(client.get("/v1/models", headers=hdr["a"], params={"task": "ner"})) == ["model-history"]
    assert ids(client.get("/v1/deployments", headers=hdr["a"], params={"state": "running"})) == ["dep-live"]
    assert ids(client.get("/v1/deployments", headers=hdr["a"], params={"task": "ner"})) == ["dep-gone"]  # its model's task


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/sweeps", "/v1/deployments"])
def test_a_bad_state_is_a_422_naming_state(world, path):
    _, client, hdr = world
    r = client.get(path, headers=hdr["a"], params={"state": "sleeping"})
    assert r.status_code == 422 and r.json()["error"]["field"].endswith("state"), r.text


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/jobs", "/v1/sweeps", "/v1/models", "/v1/deployments"])
def test_an_unknown_task_is_a_422_listing_the_tasks(world, path):
    _, client, hdr = world
    r = client.get(path, headers=hdr["a"], params={"task": "astrology"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "task" and "classification" in r.json()["error"]["message"]


# ------------------------------------------------------------------ tenancy of lists
def test_each_tenant_lists_only_its_own_rows_and_an_admin_every_tenants(world):
    _, client, hdr = world
    own = {"/v1/datasets": ["ds-b1"], "/v1/jobs": ["job-b"], "/v1/sweeps": ["sweep-b"], "/v1/models": ["model-b"],
           "/v1/deployments": ["dep-b"], "/v1/tenants": ["team-b"]}
    for path, expected in own.items():
        assert ids(client.get(path, headers=hdr["b"])) == expected, path
    assert {k["tenant"] for k in client.get("/v1/keys", headers=hdr["b"]).json()["items"]} == {"team-b"}
    assert set(ids(client.get("/v1/tenants", headers=hdr["admin"]))) == {"team-a", "team-b"}
    assert len(ids(client.get("/v1/jobs", headers=hdr["admin"]))) == 8
    assert {k["tenant"] for k in client.get("/v1/keys", headers=hdr["admin"]).json()["items"]} == {None, "team-a", "team-b"}


def test_keys_can_be_read_by_id_only_within_the_tenant(world):
    p, client, hdr = world
    with p.db.session() as s:
        b_key = s.query(ApiKey).filter_by(tenant_id="team-b").one().id
        admin_key = s.query(ApiKey).filter_by(tenant_id=None).one().id
    assert client.get(f"/v1/keys/{b_key}", headers=hdr["b"]).json()["role"] == "member"
    assert client.get(f"/v1/keys/{b_key}", headers=hdr["admin"]).status_code == 200
    assert client.get(f"/v1/keys/{b_key}", headers=hdr["a"]).status_code == 404
    assert client.get(f"/v1/keys/{admin_key}", headers=hdr["a"]).status_code == 404


# ------------------------------------------------------------------ deletes
def test_a_dataset_in_use_is_not_deleted(world):
    _, client, hdr = world
    r = client.delete("/v1/datasets/ds-a1", headers=hdr["a"])  # job-a0 (queued) trains on it
    assert r.status_code == 409 and "job-a0" in r.json()["error"]["message"], r.text
    r = client.delete("/v1/datasets/ds-a2", headers=hdr["a"])  # job-a1 (running), job-a5 (paused)
    assert r.status_code == 409 and "job-a1" in r.json()["error"]["message"]
    r = client.delete("/v1/datasets/ds-b1", headers=hdr["b"])  # sweep-b is running on it
    assert r.status_code == 409 and "sweep-b" in r.json()["error"]["message"]
    assert client.delete("/v1/datasets/ds-a3", headers=hdr["viewer"]).status_code == 403
    assert client.delete("/v1/datasets/ds-a3", headers=hdr["b"]).status_code == 404
    assert ids(client.get("/v1/datasets", headers=hdr["a"])) == ["ds-a3", "ds-a2", "ds-a1"]  # nothing went


def test_a_model_a_deployment_serves_or_served_is_not_deleted(world):
    _, client, hdr = world
    r = client.delete("/v1/models/model-served", headers=hdr["a"])
    assert r.status_code == 409 and "dep-live" in r.json()["error"]["message"] and "undeploy" in r.json()["error"]["message"]
    r = client.delete("/v1/models/model-history", headers=hdr["a"])  # its deployment was undeployed; the history stays
    assert r.status_code == 409 and "dep-gone" in r.json()["error"]["message"]
    assert client.delete("/v1/models/model-free", headers=hdr["viewer"]).status_code == 403
    assert client.delete("/v1/models/model-free", headers=hdr["b"]).status_code == 404
    assert len(ids(client.get("/v1/models", headers=hdr["a"]))) == 3


@pytest.mark.parametrize("path", ["/v1/datasets/ds-a3", "/v1/models/model-free"])
def test_a_delete_the_object_store_refuses_keeps_the_record(world, path):
    """Files go first, then the record: with the store unreachable the record stays, so the delete can be retried.
    (That the files really go is tests/integration/test_deletes.py, on a real S3 server.)"""
    _, client, hdr = world
    r = client.delete(path, headers=hdr["a"])
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert client.get(path, headers=hdr["a"]).status_code == 200


def test_a_row_still_referred_to_is_a_409_before_any_file_is_touched(world):
    p, client, hdr = world
    with pytest.raises(DoctuneError) as e:  # deployment_revisions refers to it (a foreign key)
        tenants.delete_with_files(p, Model, "model-history", "s3://doctune/tenants/team-a/models/model-history", "model")
    assert e.value.http_status == 409  # not 503: the object store (there is none here) was never reached
    assert client.get("/v1/models/model-history", headers=hdr["a"]).status_code == 200


# ------------------------------------------------------------------ tasks, the document, the body rule
def test_tasks_lists_every_plugin_with_its_metrics(world):
    _, client, hdr = world
    tasks = {t["name"]: t for t in client.get("/v1/tasks", headers=hdr["viewer"]).json()}
    assert {"classification", "ner", "retrieval", "summarization"} <= set(tasks)
    cls = tasks["classification"]
    assert cls["primary_metric"] in cls["metric_names"] and cls["metric_labels"]["macro_f1"] == "macro-F1"
    assert {"multiplexable", "quantizable", "text_fields"} <= set(cls)


SPEC_BODIES = {("post", "/v1/jobs"): "JobSpec", ("post", "/v1/jobs/plan"): "JobSpec", ("post", "/v1/sweeps"): "SweepSpec",
               ("post", "/v1/deployments"): "DeploymentSpec", ("post", "/v1/promotions"): "PromotionSpec",
               ("post", "/v1/tenants"): "TenantSpec", ("put", "/v1/tenants/{tenant_id}/quota"): "QuotaSpec",
               ("post", "/v1/keys"): "KeyCreate", ("post", "/v1/deployments/{deployment_id}/rollback"): "RollbackRequest",
               ("put", "/v1/tenants/{tenant_id}/ray-cluster"): "RayClusterSpec",
               ("put", "/v1/tenants/{tenant_id}/settings"): "TenantSettingsSpec",
               ("put", "/v1/deployments/{deployment_id}/retrain-policy"): "RetrainPolicySpec",
               # what a job's driver on a tenant's dedicated cluster records (doctune.drivers.ledger.ApiLedger)
               **{("post", f"/v1/jobs/{{job_id}}/attempt/{end}"): model for end, model in (
                   ("running", "AttemptRunning"), ("progress", "AttemptProgress"), ("failed", "AttemptFailed"),
                   ("requeued", "AttemptRequeued"), ("paused", "AttemptPaused"), ("export-check", "ExportCheck"),
                   ("succeeded", "AttemptSucceeded"))},
               # what a sweep's driver there records (doctune.drivers.sweep_ledger.ApiSweepLedger)
               ("post", "/v1/sweeps/{sweep_id}/driver/trials"): "TrialRequest",
               ("post", "/v1/sweeps/{sweep_id}/driver/failed"): "SweepFailed"}


MULTIPART_BODIES = ("/v1/datasets", "/v1/datasets/{dataset_id}/versions")  # an upload, an append: files


def test_the_document_shows_typed_bodies_and_every_response(world):
    _, client, _ = world
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert len(ok) == 1, (method, path)
            assert "$ref" in str(op["responses"][ok[0]]["content"]["application/json"]["schema"]), (method, path)
            assert op["responses"]["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
            body = op.get("requestBody", {}).get("content", {})
            if (method, path) in SPEC_BODIES:
                assert body["application/json"]["schema"] == {"$ref": f"#/components/schemas/{SPEC_BODIES[method, path]}"}
            elif method in ("post", "put") and path not in MULTIPART_BODIES and "{" in path:
                assert not body, (method, path)  # an action on an id: no body
            elif method == "post" and path in MULTIPART_BODIES:
                assert "multipart/form-data" in body, (method, path)  # files
    assert "learning_rate" in schemas["JobSpec"]["properties"] and "DatasetRef" in schemas
    assert "tenant" not in schemas["JobSpec"]["required"]  # it defaults to the caller's tenant
    assert schemas["Page_JobOut_"]["properties"]["next_cursor"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("path, body", [
    ("/v1/jobs", {"tenant": "team-a", "task": "astrology", "learning_rate": -1, "surprise": 1}),
    ("/v1/jobs/plan", {"tenant": "team-a"}),
    ("/v1/sweeps", {"tenant": "team-a", "search_space": "all of it"}),
    ("/v1/deployments", {"tenant": "team-a", "name": "Not A Slug!"}),
    ("/v1/promotions", {"tenant": "team-a", "endpoint": 3}),
    ("/v1/keys", {"tenant": "team-a", "role": "admin"}),
])
def test_naming_another_tenant_is_a_403_before_any_field_is_validated(world, path, body):
    _, client, hdr = world
    r = client.post(path, headers=hdr["b"], json=body)
    assert r.status_code == 403 and r.json()["error"]["field"] == "tenant", r.text
    assert "errors" not in r.json()["error"]


def test_admin_only_bodies_and_foreign_ids_are_refused_before_the_body_is_read(world):
    _, client, hdr = world
    assert client.post("/v1/tenants", headers=hdr["a"], json={"name": "Bad Name!", "x": 1}).status_code == 403
    assert client.put("/v1/tenants/team-a/quota", headers=hdr["a"], json={"max_cpus": -1}).status_code == 403
    r = client.post("/v1/tenants", headers=hdr["admin"], json={"name": "Bad Name!", "x": 1})
    assert r.status_code == 422 and {e["field"] for e in r.json()["error"]["errors"]} == {"name", "x"}
    created = client.post("/v1/tenants", headers=hdr["admin"], json={"name": "team-c"}).json()
    assert created["tenant"]["id"] == "team-c" and created["tenant"]["quota"]["max_deployments"] == 4
    assert created["api_key"].startswith("dtk_")
    r = client.post("/v1/deployments/dep-live/rollback", headers=hdr["b"], json={"revison": "x"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "deployment_id"


def test_a_bad_spec_names_every_bad_field(world):
    _, client, hdr = world
    r = client.post("/v1/jobs", headers=hdr["a"], json={"task": "classification", "dataset": {"id": "ds-a1"},
                                                        "learning_rate": -1, "surprise": True})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["error"]["errors"]} == {"learning_rate", "surprise"}
    assert client.post("/v1/jobs", headers=hdr["a"], content=b"{not json").status_code == 400
    assert client.post("/v1/jobs", headers=hdr["a"], json=[1, 2]).status_code == 400
    r = client.post("/v1/keys", headers=hdr["a"], json={"role": "root"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "role"


# ------------------------------------------------------------------ the Python client and the lifespan
def test_the_client_follows_cursors(world):
    _, client, hdr = world
    api = DoctuneClient("http://testserver", None)
    api.http = TestClient(client.app, headers=hdr["a"])
    pages = list(api.pages("/v1/jobs", page_size=2))
    assert [len(p["items"]) for p in pages] == [2, 2, 2, 1]
    assert [j["id"] for j in api.list_jobs()] == [f"job-a{i}" for i in range(6, -1, -1)]
    assert [j["id"] for j in api.list_jobs(limit=3)] == ["job-a6", "job-a5", "job-a4"]
    assert [j["id"] for j in api.list_jobs(state="succeeded", task="classification")] == ["job-a2"]
    assert [d["id"] for d in api.list_deployments(task="classification")] == ["dep-live"]
    assert {t["name"] for t in api.list_tasks()} >= {"classification", "ner"}


def test_the_lifespan_migrates_and_starts_no_dispatcher_without_a_cluster(database_url, tmp_path):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    app = create_app(p)  # builds the app only: nothing touches the database yet
    with TestClient(app) as client:
        key = tenants.create_admin_key(p)  # the tables exist: the lifespan migrated
        assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {key}"}).json()["role"] == "admin"
        assert p.dispatcher is None
    p.db.dispose()
