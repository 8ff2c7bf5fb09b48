"""Champion/challenger promotion and rollback without Ray: the decision rule, the
PromotionSpec's field errors, migration 0005 on SQLite and PostgreSQL, every deploy
appending a revision, what a promotion decides (and refuses) from the store, what a
rollback redeploys, and the REST routes for the decisions that change nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from doctune.errors import DoctuneError
from doctune.services import deployments as dep_svc
from doctune.services import tenants
from doctune.spec import DeploymentSpec, PromotionSpec, TenantSpec
from doctune.store.db import Deployment, DeploymentRevision, Job, Model, Sweep, alembic_config


# ------------------------------------------------------------------ the decision rule
def side(model_id, test):
    return {"model_id": model_id, "test": test}


@pytest.mark.parametrize(
    "champion, challenger, metric, force, comparable, decision",
    [
        (None, side("m2", 0.5), "f1", False, True, "deployed"),
        (side("m1", 0.7), side("m1", 0.7), "f1", False, True, "unchanged"),
        (side("m1", 0.7), side("m2", 0.8), "f1", False, True, "promoted"),
        (side("m1", 0.7), side("m2", 0.8), "f1", True, True, "promoted"),
        (side("m1", 0.7), side("m2", 0.7), "f1", False, True, "kept"),  # a tie does not replace the champion
        (side("m1", 0.7), side("m2", 0.6), "f1", False, True, "kept"),
        (side("m1", 0.7), side("m2", 0.6), "f1", True, True, "forced"),
        (side("m1", 2.0), side("m2", 1.5), "loss", False, True, "promoted"),  # lower loss is better
        (side("m1", 9.0), side("m2", 12.0), "perplexity", False, True, "kept"),
        (side("m1", 0.7), side("m2", 0.9), "f1", True, False, "forced"),  # other dataset: better means nothing
        (side("m1", None), side("m2", 0.9), "f1", True, True, "forced"),
    ],
)
def test_decide(champion, challenger, metric, force, comparable, decision):
    assert dep_svc.decide(champion, challenger, metric, force, comparable=comparable) == decision


# ------------------------------------------------------------------ the spec
def spec_errors(**body):
    from doctune.api.deps import parse_body

    with pytest.raises(DoctuneError) as e:
        parse_body(PromotionSpec, {"tenant": "t", "endpoint": "prod", **body})
    return e.value


@pytest.mark.parametrize("body", [{}, {"model_id": "model-1", "sweep_id": "sweep-1"}])
def test_exactly_one_challenger(body):
    err = spec_errors(**body)
    assert "model_id" in err.message and "sweep_id" in err.message, err.message


def test_bad_promotions_name_every_field():
    err = spec_errors(endpoint="Prod!", model_id="model-1", forse=True, deployment={"min_replicas": 3, "max_replicas": 2})
    fields = {e["field"] for e in err.errors}
    assert fields == {"endpoint", "forse", "deployment"}, err.errors
    assert "min_replicas" in err.message and "unknown field" in err.message
    err = spec_errors(model_id="model-1", deployment={"model_id": "model-2", "num_cpus": 1})
    assert err.field == "deployment" and "model_id" in err.message


def test_a_good_promotion_parses():
    spec = PromotionSpec(tenant="t", endpoint="prod", sweep_id="sweep-1", deployment={"min_replicas": 0})
    assert (spec.force, spec.metric, spec.model_id) == (False, None, None)


# ------------------------------------------------------------------ the store


def test_migration_0005_keeps_existing_deployments_as_revision_1(database_url):
    from alembic import command

    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0004")
    engine, at = sa.create_engine(database_url), datetime.now(timezone.utc)
    with engine.begin() as c:
        meta = sa.MetaData()
        t = {n: sa.Table(n, meta, autoload_with=c) for n in ("tenants", "jobs", "models", "deployments")}
        c.execute(t["tenants"].insert().values(id="t", created_at=at, weight=1.0))
        c.execute(t["jobs"].insert().values(id="job-1", tenant_id="t", task="classification", spec={}, status="succeeded",
                                            priority=0, attempt=1, progress={}, metrics={}, created_at=at))
        c.execute(t["models"].insert().values(id="model-1", tenant_id="t", job_id="job-1", task="classification", uri="s3://b/m",
                                              merged=True, info={}, metrics={}, created_at=at))
        c.execute(t["deployments"].insert().values(id="dep-1", tenant_id="t", name="prod", model_id="model-1",
                                                   spec={"name": "prod", "max_replicas": 3}, status="running",
                                                   route="/t/prod", created_at=at))
    command.upgrade(cfg, "head")
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT deployment_id, revision, model_id, spec, reason, decision FROM deployment_revisions")).all()
        assert len(rows) == 1
        dep_id, revision, model_id, spec, reason, decision = rows[0]
        assert (dep_id, revision, model_id, decision) == ("dep-1", 1, "model-1", None)
        assert "max_replicas" in str(spec) and reason
        assert c.execute(sa.text("SELECT revision FROM deployments")).scalar_one() == 1
    command.downgrade(cfg, "0004")
    command.upgrade(cfg, "head")
    engine.dispose()


@pytest.fixture
def world(platform):
    """Tenants t and u; t's models: m1 (test f1 0.70), m2 (0.80), m3 (0.60) on dataset ds-1, m4 (0.95) on ds-2;
    a succeeded sweep whose winner is m2 and a running one; u's model mu."""
    p = platform
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key_t = tenants.create_tenant(p, admin, TenantSpec(name="t"))
    _, key_u = tenants.create_tenant(p, admin, TenantSpec(name="u"))
    models = {"m1": ("t", "ds-1", 0.70), "m2": ("t", "ds-1", 0.80), "m3": ("t", "ds-1", 0.60), "m4": ("t", "ds-2", 0.95),
              "mu": ("u", "ds-u", 0.99)}
    with p.db.session() as s:
        s.add(Sweep(id="sweep-done", tenant_id="t", task="ner", status="succeeded", best_job_id="job-m2", spec={}))
        s.add(Sweep(id="sweep-busy", tenant_id="t", task="ner", status="running", spec={}))
    with p.db.session() as s:
        for mid, (tenant, ds, f1) in models.items():
            s.add(Job(id=f"job-{mid}", tenant_id=tenant, task="ner", status="succeeded", model_id=mid,
                      sweep_id="sweep-done" if mid == "m2" else None,
                      spec={"tenant": tenant, "task": "ner", "dataset": {"id": ds}},
                      metrics={"test": {"f1": f1, "loss": 1.0 - f1}}))
    with p.db.session() as s:
        for mid, (tenant, _, f1) in models.items():
            s.add(Model(id=mid, tenant_id=tenant, job_id=f"job-{mid}", task="ner", uri=f"s3://b/{mid}",
                        metrics={"test": {"f1": f1, "loss": 1.0 - f1}}))
    return p, tenants.authenticate(p, key_t), tenants.authenticate(p, key_u), key_t


def served(p, who, model_id, **settings):
    """Record a deployment of ``model_id`` at endpoint prod as deploy_model does, without submitting to Ray."""
    return dep_svc.record_deployment(p, who, DeploymentSpec(tenant="t", name="prod", model_id=model_id, **settings))


def promo(**kw):
    return PromotionSpec(tenant="t", endpoint="prod", **kw)


def test_every_deploy_appends_a_revision(world):
    p, t, _, _ = world
    first = served(p, t, "m1", max_replicas=3)
    second = served(p, t, "m2", max_replicas=3)
    assert first.id == second.id and (first.revision, second.revision) == (1, 2)
    revs = dep_svc.revisions(p, t, first.id)
    assert [(r.revision, r.model_id, r.reason) for r in revs] == [(1, "m1", "deploy"), (2, "m2", "deploy")]
    assert revs[0].spec["max_replicas"] == 3


def test_a_promotion_decided_against_a_model_replaced_meanwhile_changes_nothing(world):
    p, t, _, _ = world
    served(p, t, "m1")
    plan = dep_svc.plan_promotion(p, t, promo(model_id="m2"))  # m2 beats m1 ...
    assert plan["decision"] == "promoted"
    served(p, t, "m3")  # ... but another deploy lands before the promotion is recorded
    with pytest.raises(DoctuneError) as e:
        dep_svc.record_deployment(p, t, plan["deploy"], expected_revision=plan["expected_revision"])
    assert e.value.code == "conflict" and e.value.field == "endpoint" and "revision 2" in e.value.message
    assert [r.model_id for r in dep_svc.revisions(p, t, plan["deployment"].id)] == ["m1", "m3"]


def test_a_deploy_racing_another_one_is_a_clear_conflict_that_changes_nothing(world):
    p, t, _, _ = world
    first = served(p, t, "m1")
    with p.db.session() as s:  # another deploy of the endpoint took revision 2 at the same moment
        s.add(DeploymentRevision(deployment_id=first.id, revision=2, model_id="m3", spec=first.spec, reason="deploy"))
    with pytest.raises(DoctuneError) as e:
        served(p, t, "m2")
    assert e.value.code == "conflict" and e.value.field == "name" and "retry" in e.value.message
    with p.db.session() as s:
        row = s.get(Deployment, first.id)
        assert (row.model_id, row.revision) == ("m1", 1)


def test_a_new_endpoint_is_deployed_with_the_promotions_settings(world):
    p, t, _, _ = world
    plan = dep_svc.plan_promotion(p, t, promo(model_id="m1", deployment={"min_replicas": 0, "max_replicas": 4}))
    assert plan["decision"] == "deployed" and plan["champion"] is None and plan["deployment"] is None
    assert plan["challenger"] == {"model_id": "m1", "test": 0.70, "job_id": "job-m1", "sweep_id": None}
    target = plan["deploy"]
    assert (target.name, target.model_id, target.min_replicas, target.max_replicas) == ("prod", "m1", 0, 4)


def test_a_better_challenger_is_promoted_with_the_endpoints_settings(world):
    p, t, _, _ = world
    served(p, t, "m1", max_replicas=3)
    plan = dep_svc.plan_promotion(p, t, promo(model_id="m2"))
    assert plan["decision"] == "promoted"
    assert plan["champion"] == {"model_id": "m1", "test": 0.70} and plan["challenger"]["test"] == 0.80
    assert (plan["deploy"].model_id, plan["deploy"].max_replicas) == ("m2", 3)
    assert "0.8000" in plan["summary"] and "0.7000" in plan["summary"]


def test_a_worse_challenger_is_kept_out_unless_forced(world):
    p, t, _, _ = world
    dep = served(p, t, "m1")
    plan = dep_svc.plan_promotion(p, t, promo(model_id="m3"))
    assert plan["decision"] == "kept" and "deploy" not in plan and plan["deployment"].model_id == "m1"
    assert plan["summary"].startswith("kept:") and "0.6000" in plan["summary"] and "0.7000" in plan["summary"]
    assert dep_svc.promote(p, t, promo(model_id="m3"))["decision"] == "kept"  # nothing to submit
    assert [r.revision for r in dep_svc.revisions(p, t, dep.id)] == [1]
    forced = dep_svc.plan_promotion(p, t, promo(model_id="m3", force=True))
    assert forced["decision"] == "forced" and forced["deploy"].model_id == "m3"
    assert dep_svc.plan_promotion(p, t, promo(model_id="m1"))["decision"] == "unchanged"


def test_lower_loss_wins(world):
    p, t, _, _ = world
    served(p, t, "m1")
    assert dep_svc.plan_promotion(p, t, promo(model_id="m2", metric="loss"))["decision"] == "promoted"
    assert dep_svc.plan_promotion(p, t, promo(model_id="m3", metric="loss"))["decision"] == "kept"


def test_models_tested_on_other_datasets_are_not_compared(world):
    p, t, _, _ = world
    served(p, t, "m1")
    with pytest.raises(DoctuneError) as e:
        dep_svc.plan_promotion(p, t, promo(model_id="m4"))
    assert (e.value.code, e.value.field) == ("conflict", "model_id")
    assert "ds-1" in e.value.message and "ds-2" in e.value.message and "force" in e.value.message
    assert dep_svc.plan_promotion(p, t, promo(model_id="m4", force=True))["decision"] == "forced"


def test_a_sweeps_winner_is_the_challenger(world):
    p, t, _, _ = world
    served(p, t, "m1")
    plan = dep_svc.plan_promotion(p, t, promo(sweep_id="sweep-done"))
    assert plan["decision"] == "promoted"
    assert plan["challenger"] == {"model_id": "m2", "test": 0.80, "job_id": "job-m2", "sweep_id": "sweep-done"}
    with pytest.raises(DoctuneError) as e:
        dep_svc.plan_promotion(p, t, promo(sweep_id="sweep-busy"))
    assert (e.value.code, e.value.field) == ("conflict", "sweep_id") and "running" in e.value.message


@pytest.mark.parametrize("kw, code, field", [
    ({"model_id": "mu"}, "not_found", "model_id"),  # another tenant's model reads as missing
    ({"model_id": "nope"}, "not_found", "model_id"),
    ({"sweep_id": "nope"}, "not_found", "sweep_id"),
    ({"model_id": "m2", "metric": "bleu"}, "invalid_spec", "metric"),
])
def test_bad_challengers_name_the_field(world, kw, code, field):
    p, t, _, _ = world
    with pytest.raises(DoctuneError) as e:
        dep_svc.plan_promotion(p, t, promo(**kw))
    assert (e.value.code, e.value.field) == (code, field), e.value.message


def test_a_deleted_endpoint_comes_back_with_its_settings(world):
    p, t, _, _ = world
    dep = served(p, t, "m1", max_replicas=5)
    dep_svc.set_status(p, dep.id, "deleted")
    plan = dep_svc.plan_promotion(p, t, promo(model_id="m3"))
    assert plan["decision"] == "deployed" and (plan["deploy"].model_id, plan["deploy"].max_replicas) == ("m3", 5)


def test_rollback_redeploys_the_previous_revision_as_a_new_one(world):
    p, t, u, _ = world
    dep = served(p, t, "m1", max_replicas=3)
    with pytest.raises(DoctuneError) as e:
        dep_svc.plan_rollback(p, t, dep.id)
    assert (e.value.code, e.value.field) == ("conflict", "revision")
    served(p, t, "m2", max_replicas=3)
    spec, reason = dep_svc.plan_rollback(p, t, dep.id)
    assert (spec.model_id, spec.max_replicas, reason) == ("m1", 3, "rollback to revision 1")
    after = dep_svc.record_deployment(p, t, spec, reason=reason)
    assert (after.revision, after.model_id) == (3, "m1")
    spec, reason = dep_svc.plan_rollback(p, t, dep.id)  # rolling back a rollback: like helm, back to revision 2
    assert (spec.model_id, reason) == ("m2", "rollback to revision 2")
    assert dep_svc.plan_rollback(p, t, dep.id, revision=2)[0].model_id == "m2"
    for bad, code in ((0, "invalid_request"), ("2", "invalid_request"), (True, "invalid_request"), (3, "invalid_request"),
                      (9, "not_found")):
        with pytest.raises(DoctuneError) as e:
            dep_svc.plan_rollback(p, t, dep.id, revision=bad)
        assert (e.value.code, e.value.field) == (code, "revision"), (bad, e.value.message)
    with pytest.raises(DoctuneError) as e:
        dep_svc.plan_rollback(p, u, dep.id)
    assert e.value.http_status == 404
    with pytest.raises(DoctuneError) as e:
        dep_svc.revisions(p, u, dep.id)
    assert e.value.http_status == 404


def test_the_decision_is_stored_on_the_revision(world):
    p, t, _, _ = world
    served(p, t, "m1")
    plan = dep_svc.plan_promotion(p, t, promo(model_id="m2"))
    record = {k: plan[k] for k in ("decision", "metric", "champion", "challenger")}
    dep = dep_svc.record_deployment(p, t, plan["deploy"], reason=plan["summary"], decision=record)
    last = dep_svc.revisions(p, t, dep.id)[-1]
    assert last.decision["decision"] == "promoted" and last.decision["champion"]["test"] == 0.70
    assert last.reason.startswith("promoted:")


# ------------------------------------------------------------------ the REST routes
def test_routes_for_decisions_that_change_nothing(world):
    from doctune.api.app import create_app

    p, t, _, key_t = world
    dep = served(p, t, "m1")
    client = TestClient(create_app(p))
    hdr = {"Authorization": f"Bearer {key_t}"}
    r = client.post("/v1/promotions", headers=hdr, json={"endpoint": "prod", "model_id": "m3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "kept" and body["champion"] == {"model_id": "m1", "test": 0.70}
    assert body["challenger"]["model_id"] == "m3" and body["deployment"]["revision"] == 1
    r = client.post("/v1/promotions", headers=hdr, json={"endpoint": "prod", "model_id": "m4"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "model_id"
    r = client.post("/v1/promotions", headers=hdr, json={"endpoint": "prod"})
    assert r.status_code == 422 and "sweep_id" in r.json()["error"]["message"]
    assert client.get(f"/v1/deployments/{dep.id}", headers=hdr).json()["revision"] == 1
    revs = client.get(f"/v1/deployments/{dep.id}/revisions", headers=hdr).json()
    assert [(r["revision"], r["current"], r["model_id"]) for r in revs] == [(1, True, "m1")]
    r = client.post(f"/v1/deployments/{dep.id}/rollback", headers=hdr, json={})
    assert r.status_code == 409 and r.json()["error"]["field"] == "revision"
    r = client.post(f"/v1/deployments/{dep.id}/rollback", headers=hdr, json={"revison": 1})
    assert r.status_code == 400 and r.json()["error"]["field"] == "revison"


def test_the_python_client_speaks_these_routes(world):
    from doctune.api.app import create_app
    from doctune.client import DoctuneClient

    p, t, _, key_t = world
    dep = served(p, t, "m1")
    api = DoctuneClient("http://testserver", key_t)
    api.http = TestClient(create_app(p), headers={"Authorization": f"Bearer {key_t}"})  # served in-process
    kept = api.promote("prod", model_id="m3")
    assert kept["decision"] == "kept" and kept["summary"].startswith("kept: m1")
    assert api.promote("prod", model_id="m1", metric="loss")["decision"] == "unchanged"
    assert [r["revision"] for r in api.deployment_revisions(dep.id)] == [1]
    with pytest.raises(DoctuneError) as e:
        api.rollback(dep.id, revision=5)
    assert (e.value.code, e.value.field) == ("not_found", "revision")
    with pytest.raises(DoctuneError) as e:
        api.promote("prod", sweep_id="sweep-busy")
    assert (e.value.code, e.value.field) == ("conflict", "sweep_id")
