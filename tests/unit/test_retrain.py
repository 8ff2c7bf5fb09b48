"""Retrain policies (SQLite, a real SeaweedFS S3 server, a fake cluster in place of Ray): the triggers fire on
growth (records or percent) and label drift from the served model's dataset version, and on a cron
schedule; a trigger submits the served model's own job on the newest version, also tested on the served
model's test split; once it succeeds the retrained model replaces the served one only if it is better
there; every decision is an event with the growth, the drift and both test metrics; the policy is set
and read over HTTP, and a bad one is a 422 naming its field."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.services import dataset_versions as versions_svc
from doctune.services import datasets as datasets_svc
from doctune.services import deployments as dep_svc
from doctune.services import retrain as retrain_svc
from doctune.spec import DeploymentSpec, JobSpec, RetrainPolicySpec, TenantSpec
from doctune.store.db import Deployment, Job, Model, RetrainEvent

from tests.unit.test_cli import s3  # noqa: F401  (a bucket of its own on the session's real SeaweedFS server)
from tests.unit.test_dataset_versions import records
from tests.unit.test_reconcile import FakeCluster


# ------------------------------------------------------------------ the decision alone
def info(version, records_, dist):
    return {"version": version, "records": records_, "distribution": dist}


SERVED = info(1, 200, {"a": 100, "b": 100})


@pytest.mark.parametrize("policy, newest, kinds, trigger", [
    ({"min_new_records": 50}, info(2, 260, {"a": 130, "b": 130}), ("growth", "drift"), "growth"),
    ({"min_new_records": 100}, info(2, 260, {"a": 130, "b": 130}), ("growth", "drift"), None),
    ({"min_growth_percent": 25}, info(3, 250, {"a": 125, "b": 125}), ("growth", "drift"), "growth"),
    ({"min_growth_percent": 30}, info(3, 250, {"a": 125, "b": 125}), ("growth", "drift"), None),
    ({"max_label_drift": 0.1}, info(2, 220, {"a": 140, "b": 80}), ("growth", "drift"), "drift"),  # tvd 0.136
    ({"max_label_drift": 0.2}, info(2, 220, {"a": 140, "b": 80}), ("growth", "drift"), None),
    ({"min_new_records": 1}, info(1, 200, {"a": 100, "b": 100}), ("growth", "drift"), None),  # nothing newer
    ({"schedule": "0 3 * * *"}, info(2, 201, {"a": 101, "b": 100}), ("schedule",), "schedule"),
    ({"schedule": "0 3 * * *", "min_new_records": 1}, info(2, 201, {"a": 101, "b": 100}), ("growth",), "growth"),
    ({"max_label_drift": 0.01}, info(2, 300, {"a": 150, "b": 150}), ("schedule",), None),  # not a schedule
])
def test_triggers(policy, newest, kinds, trigger):
    fired, change, why = retrain_svc.evaluate_triggers(RetrainPolicySpec(**policy), SERVED, newest, kinds)
    assert fired == trigger, why
    assert change["records"] == newest["records"] - 200 and 0 <= change["tvd"] <= 1 and why


def test_schedules():
    monday = datetime(2025, 1, 6, 2, 0, tzinfo=timezone.utc)
    assert not retrain_svc.schedule_due("0 3 * * 1", monday, monday + timedelta(minutes=59))
    assert retrain_svc.schedule_due("0 3 * * 1", monday, monday + timedelta(hours=1))
    assert not retrain_svc.schedule_due("0 3 * * 1", monday + timedelta(hours=1), monday + timedelta(days=6))


@pytest.mark.parametrize("body, field", [
    ({}, "(root)"),
    ({"schedule": "every day"}, "schedule"),
    ({"schedule": "0 3 * * 1 2025"}, "schedule"),
    ({"max_label_drift": 1.5}, "max_label_drift"),
    ({"min_new_records": 0}, "min_new_records"),
    ({"min_new_records": 5, "when": "soon"}, "when"),
])
def test_bad_policies_name_the_field(body, field):
    from doctune.api.deps import parse_body

    with pytest.raises(DoctuneError) as e:
        parse_body(RetrainPolicySpec, body)
    assert e.value.http_status == 422 and field in {err["field"] for err in e.value.errors}, e.value.errors


# ------------------------------------------------------------------ the whole policy, with the stores
@pytest.fixture
def world(s3, tmp_path):  # noqa: F811
    """Tenant t serving model m-champ (macro-F1 0.70 on its test split) at endpoint prod, trained on
    version 1 of a 200-record dataset; the endpoint's policy retrains on 25% growth."""
    cluster = FakeCluster()
    p = Platform(Settings(home=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'doctune.db'}", **s3), runner=cluster)
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    _, key = tenants.create_tenant(p, admin, TenantSpec(name=tenant))
    who = tenants.authenticate(p, key)
    ds = datasets_svc.upload_dataset(p, who, tenant=tenant, name="news", task="classification",
                                     files={"data": to_jsonl(records(200))})
    spec = JobSpec(tenant=tenant, task="classification", dataset={"id": ds.id, "version": 1}, max_steps=2,
                   num_workers=1, learning_rate=1e-3)
    finish(p, "job-champ", "m-champ", tenant, spec.model_dump(mode="json"), test=0.70)
    dep = dep_svc.record_deployment(p, who, DeploymentSpec(tenant=tenant, name="prod", model_id="m-champ",
                                                           retrain={"min_growth_percent": 25}))
    yield p, who, key, ds, dep, cluster
    p.db.dispose()


def finish(p, job_id, model_id, tenant, spec, *, test, by_version=None, status="succeeded"):
    """Record job ``job_id`` as its driver would once it ends (a retrain job exists already: it is updated)."""
    metrics = {"test": {"macro_f1": test}, **({"test_by_version": by_version} if by_version else {})}
    with p.db.session() as s:
        job = s.get(Job, job_id) or Job(id=job_id, tenant_id=tenant, task="classification", spec=spec)
        job.status, job.metrics = status, metrics
        job.model_id = model_id if status == "succeeded" else None
        s.merge(job)
    if status == "succeeded":
        with p.db.session() as s:
            s.add(Model(id=model_id, tenant_id=tenant, job_id=job_id, task="classification", uri=f"s3://b/{model_id}",
                        metrics={"test": {"macro_f1": test}}))


def append(p, who, ds, n, start, **kw):
    return retrain_svc.append_and_evaluate(p, who, ds.id, {"data": to_jsonl(records(n, start=start, **kw))})


def served(p, dep):
    with p.db.session() as s:
        return s.get(Deployment, dep.id)


def events(p, dep):
    with p.db.session() as s:
        return list(s.query(RetrainEvent).filter_by(deployment_id=dep.id).order_by(RetrainEvent.id))


def test_growth_triggers_a_retrain_that_is_promoted_only_when_better(world):
    p, who, _, ds, dep, cluster = world
    _, _, decided = append(p, who, ds, 20, start=1000)  # +10%: below 25%
    assert [e.decision for e in decided] == ["skipped"] and "min_growth_percent 25" in decided[0].reason
    assert decided[0].data["growth"]["records"] == 20 and decided[0].data["champion"] == {"model_id": "m-champ",
                                                                                            "test": 0.70}
    _, version, decided = append(p, who, ds, 40, start=2000)  # +30% since the served model's version 1
    (event,) = decided
    assert (event.decision, event.trigger, version.version) == ("triggered", "growth", 3) and event.job_id
    with p.db.session() as s:
        job = s.get(Job, event.job_id)
        champion_spec = s.get(Job, "job-champ").spec
    assert job.status == "queued" and job.spec["dataset"] == {"id": ds.id, "version": 3, "compare_version": 1}
    same = lambda spec: {k: v for k, v in spec.items() if k not in ("dataset", "name")}  # noqa: E731
    assert same(job.spec) == same(champion_spec)  # the served model's own job, on the newest version
    assert served(p, dep).retrain_state["pending"]["job_id"] == job.id

    _, _, decided = append(p, who, ds, 80, start=3000)  # one retrain at a time
    assert decided[0].decision == "skipped" and f"retrain job {job.id} is still under way" in decided[0].reason
    assert retrain_svc.run_retrains(p) == 0  # the job has not ended

    # better on the served model's test split (0.80 against 0.70), though worse on its own bigger one
    finish(p, job.id, "m-better", who.tenant_id, job.spec, test=0.65, by_version={"1": {"macro_f1": 0.80}})
    assert retrain_svc.run_retrains(p) == 1
    assert served(p, dep).model_id == "m-better" and "pending" not in served(p, dep).retrain_state
    last = events(p, dep)[-1]
    assert last.decision == "promoted" and last.job_id == job.id
    assert (last.data["champion"]["test"], last.data["challenger"]["test"]) == (0.70, 0.80)
    assert ("--deployment-id", dep.id) in [tuple(a) for _, a, _ in cluster.submitted]  # redeployed
    assert retrain_svc.run_retrains(p) == 0  # settled once


def test_a_worse_retrained_model_is_refused_and_a_failed_job_changes_nothing(world):
    p, who, _, ds, dep, _ = world
    retrain_svc.set_policy(p, who, dep.id, RetrainPolicySpec(max_label_drift=0.1))
    _, _, decided = append(p, who, ds, 60, start=1000, weights=(1, 0, 0))  # all sport: the mix drifts
    (event,) = decided
    assert (event.decision, event.trigger) == ("triggered", "drift") and event.data["drift"] > 0.1
    with p.db.session() as s:
        job = s.get(Job, event.job_id)
    finish(p, job.id, "m-worse", who.tenant_id, job.spec, test=0.9, by_version={"1": {"macro_f1": 0.60}})
    retrain_svc.run_retrains(p)
    last = events(p, dep)[-1]
    assert last.decision == "refused" and served(p, dep).model_id == "m-champ"
    assert (last.data["champion"]["test"], last.data["challenger"]["test"]) == (0.70, 0.60)

    _, _, decided = append(p, who, ds, 40, start=5000, weights=(1, 0, 0))  # drifts further: a new retrain
    assert decided[0].decision == "triggered"
    finish(p, decided[0].job_id, None, who.tenant_id, {}, test=0.0, status="failed")
    retrain_svc.run_retrains(p)
    assert events(p, dep)[-1].decision == "failed" and served(p, dep).model_id == "m-champ"
    assert "pending" not in served(p, dep).retrain_state


def test_a_schedule_retrains_when_there_is_a_newer_version(world):
    p, who, _, ds, dep, _ = world
    retrain_svc.set_policy(p, who, dep.id, RetrainPolicySpec(schedule="0 3 * * *"))
    start = datetime(2025, 1, 6, 4, 0, tzinfo=timezone.utc)
    with p.db.session() as s:  # the policy was set at 04:00 on a Monday
        row = s.get(Deployment, dep.id)
        row.retrain_state = {**row.retrain_state, "schedule_from": start.isoformat()}
    assert retrain_svc.run_retrains(p, at=start + timedelta(hours=1)) == 0 and not events(p, dep)
    day = start + timedelta(hours=23, minutes=1)  # 03:01 the next day
    assert retrain_svc.run_retrains(p, at=day) == 1
    assert events(p, dep)[-1].decision == "skipped" and "newest version" in events(p, dep)[-1].reason
    append(p, who, ds, 5, start=1000)  # no growth or drift trigger in this policy: the schedule decides
    assert events(p, dep)[-1].decision == "skipped"
    retrain_svc.run_retrains(p, at=day + timedelta(hours=1))  # not due again yet
    assert events(p, dep)[-1].decision == "skipped"
    retrain_svc.run_retrains(p, at=day + timedelta(days=1))
    assert (events(p, dep)[-1].decision, events(p, dep)[-1].trigger) == ("triggered", "schedule")


def test_the_policy_over_http(world):
    p, who, key, ds, dep, _ = world
    http = TestClient(create_app(p), raise_server_exceptions=False)
    auth = {"Authorization": f"Bearer {key}"}
    r = http.put(f"/v1/deployments/{dep.id}/retrain-policy", headers=auth,
                 json={"min_new_records": 30, "schedule": "0 3 * * 1", "metric": "accuracy"})
    assert r.status_code == 200, r.text
    assert r.json()["retrain"]["min_new_records"] == 30 and r.json()["revision"] == 1  # no new revision
    bad = http.put(f"/v1/deployments/{dep.id}/retrain-policy", headers=auth, json={"schedule": "whenever"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "schedule"
    wrong_metric = http.put(f"/v1/deployments/{dep.id}/retrain-policy", headers=auth, json={"min_new_records": 3,
                                                                                          "metric": "bleu"})
    assert wrong_metric.status_code == 422 and wrong_metric.json()["error"]["field"] == "metric"
    assert http.get(f"/v1/deployments/{dep.id}", headers=auth).json()["retrain"]["min_new_records"] == 30

    appended = http.post(f"/v1/datasets/{ds.id}/versions", headers=auth,
                         files={"data": ("new.jsonl", to_jsonl(records(40, start=900)), "application/jsonl")})
    assert appended.status_code == 201, appended.text
    (decided,) = appended.json()["retrain"]
    assert decided["decision"] == "triggered" and decided["data"]["metric"] == "accuracy"
    assert http.get(f"/v1/deployments/{dep.id}", headers=auth).json()["retrain_job_id"] == decided["job_id"]
    listed = http.get(f"/v1/deployments/{dep.id}/retrain-events", headers=auth).json()
    assert [e["id"] for e in listed] == [decided["id"]]

    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, other = tenants.create_tenant(p, admin, TenantSpec(name=f"o-{uuid.uuid4().hex[:8]}"))
    foreign = {"Authorization": f"Bearer {other}"}
    assert http.put(f"/v1/deployments/{dep.id}/retrain-policy", headers=foreign,
                    json={"min_new_records": 1}).status_code == 404
    assert http.get(f"/v1/deployments/{dep.id}/retrain-events", headers=foreign).status_code == 404
    removed = http.delete(f"/v1/deployments/{dep.id}/retrain-policy", headers=auth)
    assert removed.status_code == 200 and removed.json()["retrain"] is None


def test_a_rollback_keeps_the_endpoints_policy(world):
    p, who, _, _, dep, _ = world
    with p.db.session() as s:
        s.add(Model(id="m-two", tenant_id=who.tenant_id, job_id="job-champ", task="classification", uri="s3://b/m2"))
    dep_svc.record_deployment(p, who, DeploymentSpec(tenant=who.tenant_id, name="prod", model_id="m-two"))
    retrain_svc.set_policy(p, who, dep.id, RetrainPolicySpec(min_new_records=7))
    spec, _ = dep_svc.plan_rollback(p, who, dep.id)
    assert spec.model_id == "m-champ" and spec.retrain.min_new_records == 7
