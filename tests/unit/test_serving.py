"""Serving settings and int8 quantization, without a Ray cluster: the deployment spec
names every bad batching or quantization value and its values reach the replica; int8 is refused, naming ``quantize``,
for tasks whose accuracy change cannot be measured, before anything is stored; on a
real MiniLM the int8 model answers close to fp32 and the measurement returns the record
the API shows; migration 0003 adds ``deployments.info`` and keeps existing rows, on
SQLite and (with DOCTUNE_TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import create_engine, inspect, text

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.errors import DoctuneError, from_validation_error
from doctune.serve.quantize import evaluate_model, measure_quantization, quantize_int8
from doctune.services import tenants
from doctune.services import Platform
from doctune.services.deployments import set_info
from doctune.spec import DeploymentSpec, TenantSpec
from doctune.store.db import Deployment, Job, Model, alembic_config
from doctune.tasks import check_can_serve, get_task

GOOD = {"tenant": "team-a", "model_id": "model-a", "name": "bbc"}


# ------------------------------------------------------------------ spec
def test_batching_and_quantization_defaults():
    spec = DeploymentSpec(**GOOD)
    assert (spec.max_batch_size, spec.batch_wait_timeout_s, spec.quantize) == (8, 0.01, "none")
    # a deployment stored before these fields existed still validates, with the defaults
    old = {**GOOD, "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2.0, "num_cpus": 0.5, "max_batch_size": 8}
    assert DeploymentSpec.model_validate(old).batch_wait_timeout_s == 0.01


@pytest.mark.parametrize("patch, field", [
    ({"batch_wait_timeout_s": -0.01}, "batch_wait_timeout_s"),
    ({"batch_wait_timeout_s": 1.5}, "batch_wait_timeout_s"),
    ({"batch_wait_timeout_s": "soon"}, "batch_wait_timeout_s"),
    ({"quantize": "fp16"}, "quantize"),
    ({"quantize": True}, "quantize"),
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 5000}, "max_batch_size"),
])
def test_bad_serving_values_name_the_field(patch, field):
    with pytest.raises(ValidationError) as e:
        DeploymentSpec(**GOOD, **patch)
    err = from_validation_error(e.value)
    assert err.field == field and err.http_status == 422, err.message


def test_every_bad_serving_value_is_reported_at_once():
    with pytest.raises(ValidationError) as e:
        DeploymentSpec(**GOOD, batch_wait_timeout_s=2, quantize="int4", max_batch_size=0)
    fields = {x["field"] for x in from_validation_error(e.value).errors}
    assert fields == {"batch_wait_timeout_s", "quantize", "max_batch_size"}


def test_the_spec_reaches_the_replica():
    """What build_application hands Serve (read from the application it builds; no cluster)."""
    from types import SimpleNamespace

    from doctune.serve.app import build_application

    dep = SimpleNamespace(id="dep-1", tenant_id="team-a", name="bbc",
                          spec={**GOOD, "max_batch_size": 32, "batch_wait_timeout_s": 0.05, "quantize": "int8"})
    model = SimpleNamespace(id="model-a", uri="s3://doctune/m", task="classification")
    bound = build_application(dep, model, None)._bound_deployment
    assert {k: bound.init_kwargs[k] for k in ("tenant_id", "endpoint", "max_batch_size", "batch_wait_timeout_s", "quantize")} \
        == {"tenant_id": "team-a", "endpoint": "bbc", "max_batch_size": 32, "batch_wait_timeout_s": 0.05, "quantize": "int8"}
    assert bound._deployment_config.max_ongoing_requests == 32  # room for a full batch
    old = build_application(SimpleNamespace(id="dep-2", tenant_id="team-a", name="old", spec=GOOD), model, None)
    assert old._bound_deployment.init_kwargs["batch_wait_timeout_s"] == 0.01  # stored before the field existed


# ------------------------------------------------------------------ which tasks can be quantized
@pytest.mark.parametrize("task", ["classification", "ner", "extraction"])
def test_forward_pass_tasks_can_be_quantized(task):
    check_can_serve(get_task(task), quantize="int8")  # no error


@pytest.mark.parametrize("task, why", [
    ("generation", "generating text"),
    ("summarization", "generating text"),
    ("retrieval", "document index"),
])
def test_tasks_int8_cannot_be_measured_for_are_refused(task, why):
    with pytest.raises(DoctuneError) as e:
        check_can_serve(get_task(task), quantize="int8")
    assert e.value.field == "quantize" and e.value.http_status == 422 and e.value.tenant_error
    assert task in e.value.message and why in e.value.message and "quantize: none" in e.value.message


@pytest.fixture
def api(database_url, tmp_path):
    """The REST API over a real database (no Ray: nothing here reaches the cluster)."""
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    app = create_app(p)
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    with p.db.session() as s:
        s.add(Job(id="job-a", tenant_id="team-a", task="generation", spec={"tenant": "team-a"}, status="succeeded"))
    with p.db.session() as s:
        s.add(Model(id="model-gen", tenant_id="team-a", job_id="job-a", task="generation", uri="s3://doctune/x"))
        s.add(Model(id="model-cls", tenant_id="team-a", job_id="job-a", task="classification", uri="s3://doctune/y"))
        s.add(Model(id="model-cls2", tenant_id="team-a", job_id="job-a", task="classification", uri="s3://doctune/z"))
    with p.db.session() as s:
        s.add(Deployment(id="dep-a", tenant_id="team-a", name="cls", model_id="model-cls",
                         spec={**GOOD, "model_id": "model-cls", "quantize": "int8"}, route="/team-a/cls", status="running"))
    yield p, TestClient(app), {"Authorization": f"Bearer {key}"}
    p.db.dispose()


def test_api_refuses_int8_for_a_generation_model_and_stores_nothing(api):
    p, client, hdr = api
    r = client.post("/v1/deployments", headers=hdr, json={"model_id": "model-gen", "name": "gen", "quantize": "int8"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "quantize" and "generation" in r.json()["error"]["message"]
    with p.db.session() as s:
        assert s.query(Deployment).filter_by(name="gen").count() == 0


def test_api_names_a_bad_batch_wait(api):
    _, client, hdr = api
    r = client.post("/v1/deployments", headers=hdr, json={"model_id": "model-cls", "name": "c", "batch_wait_timeout_s": 3})
    assert r.status_code == 422 and r.json()["error"]["field"] == "batch_wait_timeout_s", r.text


def test_api_shows_the_measured_quantization(api):
    p, client, hdr = api
    assert client.get("/v1/deployments/dep-a", headers=hdr).json()["quantization"] is None  # not measured yet
    record = {"metric": "macro_f1", "fp32": 0.9, "int8": 0.89, "change": -0.01, "examples": 20, "seconds": 1.5}
    set_info(p, "dep-a", {"quantization": record})
    assert client.get("/v1/deployments/dep-a", headers=hdr).json()["quantization"] == record


def _redeploy(client, hdr, **spec) -> None:
    r = client.post("/v1/deployments", headers=hdr, json={"name": "cls", "quantize": "int8", **spec})
    assert r.status_code == 503, r.text  # recorded, then no Ray cluster to submit the deploy job to


def test_the_measurement_stays_with_its_model(api):
    p, client, hdr = api
    record = {"metric": "macro_f1", "fp32": 0.9, "int8": 0.89, "change": -0.01, "examples": 20, "seconds": 1.5}
    set_info(p, "dep-a", {"quantization": record})
    _redeploy(client, hdr, model_id="model-cls", max_replicas=3)  # more replicas: same model, same numbers
    dep = client.get("/v1/deployments/dep-a", headers=hdr).json()
    assert dep["spec"]["max_replicas"] == 3 and dep["quantization"] == record
    _redeploy(client, hdr, model_id="model-cls2")  # another model: measured again by the deploy job
    assert client.get("/v1/deployments/dep-a", headers=hdr).json()["quantization"] is None
    set_info(p, "dep-a", {"quantization": record})
    _redeploy(client, hdr, model_id="model-cls2", quantize="none")  # not quantized: no record to show
    assert client.get("/v1/deployments/dep-a", headers=hdr).json()["quantization"] is None


# ------------------------------------------------------------------ int8 on a real MiniLM
@pytest.fixture(scope="module")
def minilm():
    """MiniLM with a fresh 5-way classification head over real BBC articles. The head's weights
    are drawn with std 1 (not the usual 0.02) so its logits are decisive, as a trained head's are."""
    import torch
    from transformers import AutoTokenizer

    from doctune.corpora import load_bbc_news
    from doctune.tasks import get_task
    from doctune.base_models import resolve_base_model

    records = load_bbc_news(limit_per_class=4)
    info = {"labels": sorted({r["label"] for r in records})}
    base = resolve_base_model("all-minilm-l6-v2")
    plugin = get_task("classification")
    torch.manual_seed(0)
    model = plugin.build_model(base, info).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.classifier.weight, std=1.0)
    return model, plugin, AutoTokenizer.from_pretrained(base), records, info


def test_int8_logits_are_close_to_fp32(minilm):
    import torch

    model, plugin, tokenizer, records, info = minilm
    batch = plugin.collate(plugin.encode(records, tokenizer, info, 64), tokenizer)
    batch.pop("labels")
    q = quantize_int8(model)
    assert isinstance(q.bert.encoder.layer[0].attention.self.query, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear)  # the original is untouched
    with torch.no_grad():
        fp32, int8 = model(**batch).logits, q(**batch).logits
    assert not torch.equal(fp32, int8)  # it did quantize
    # per document: the cosine of a short logit vector is ill-conditioned (the worst of 20, norm 1.1 against a
    # median 2.7, measured 0.79 per-channel and 0.94 per-tensor), so the mean, and the largest error of any logit
    assert torch.nn.functional.cosine_similarity(fp32, int8).mean() > 0.95  # 0.972 measured (x86), both scales
    assert (fp32 - int8).abs().max() < 1.0  # 0.58 measured per-channel (0.82 per-tensor)
    assert (fp32.argmax(-1) == int8.argmax(-1)).sum() >= 15  # of 20; 18 measured: near-ties of a random head flip


def test_measurement_returns_the_deployment_record(minilm):
    model, plugin, tokenizer, records, info = minilm
    record = measure_quantization(model, plugin, tokenizer, records, info, max_len=64)
    assert set(record) == {"metric", "fp32", "int8", "change", "examples", "seconds"}
    assert record["metric"] == "macro_f1" and record["examples"] == len(records) == 20
    assert record["change"] == pytest.approx(record["int8"] - record["fp32"])
    assert 0 <= record["fp32"] <= 1 and 0 <= record["int8"] <= 1 and record["seconds"] > 0
    # fp32 is the model's own metric on those examples, evaluated the plugin's way
    examples = plugin.encode(records, tokenizer, info, 64)
    assert record["fp32"] == pytest.approx(evaluate_model(model, plugin, tokenizer, examples, info)["macro_f1"])
    assert abs(record["change"]) <= 0.25


def test_measurement_refuses_an_empty_test_split(minilm):
    model, plugin, tokenizer, _, info = minilm
    with pytest.raises(DoctuneError) as e:
        measure_quantization(model, plugin, tokenizer, [], info, max_len=64)
    assert e.value.field == "quantize" and "empty test split" in e.value.message


# ------------------------------------------------------------------ migration 0003
def test_migration_0003_adds_deployment_info_and_keeps_rows(database_url, tmp_path):
    from alembic import command

    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0002")
    engine = create_engine(database_url)
    try:
        with engine.begin() as c:
            c.execute(text("INSERT INTO tenants (id, created_at, weight) VALUES ('team-a', CURRENT_TIMESTAMP, 1.0)"))
            c.execute(text("INSERT INTO jobs (id, tenant_id, task, spec, status, progress, metrics, created_at, priority, attempt) "
                           "VALUES ('job-a', 'team-a', 'classification', '{}', 'succeeded', '{}', '{}', CURRENT_TIMESTAMP, 0, 1)"))
            c.execute(text("INSERT INTO models (id, tenant_id, job_id, task, uri, merged, info, metrics, created_at) "
                           "VALUES ('model-a', 'team-a', 'job-a', 'classification', 's3://b/m', true, '{}', '{}', CURRENT_TIMESTAMP)"))
            c.execute(text("INSERT INTO deployments (id, tenant_id, name, model_id, spec, status, route, created_at) "
                           "VALUES ('dep-a', 'team-a', 'a', 'model-a', '{}', 'running', '/team-a/a', CURRENT_TIMESTAMP)"))
        command.upgrade(cfg, "0003")
        with engine.connect() as c:
            cols = {col["name"]: col for col in inspect(c).get_columns("deployments")}
            assert cols["info"]["nullable"]
            assert c.execute(text("SELECT status, info FROM deployments WHERE id = 'dep-a'")).one() == ("running", None)
        command.downgrade(cfg, "0002")
        with engine.connect() as c:
            assert "info" not in {col["name"] for col in inspect(c).get_columns("deployments")}
            assert c.execute(text("SELECT status FROM deployments WHERE id = 'dep-a'")).scalar_one() == "running"
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    try:
        set_info(p, "dep-a", {"quantization": {"metric": "macro_f1", "change": 0.0}})
        with p.db.session() as s:
            assert s.get(Deployment, "dep-a").info == {"quantization": {"metric": "macro_f1", "change": 0.0}}
    finally:
        p.db.dispose()
