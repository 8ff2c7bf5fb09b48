"""Dataset versions, through the services and the real API (SQLite, a real SeaweedFS S3 server, no Ray):
appended records are split as the dataset was, stratified per label and by a seeded hash of each record,
and no stored record ever changes split; every version records its counts and its label drift; older
versions stay readable, a job names (and records) the version it trains on, and two models tested on
different versions are compared on the earlier version's test split. Bad input is a clear 4xx naming the
field that stores nothing; another tenant's dataset is a 404."""

from __future__ import annotations

import random
import uuid
from collections import Counter

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
from doctune.services import jobs as jobs_svc
from doctune.services.attempts import attempt_view, load_attempt
from doctune.spec import DeploymentSpec, JobSpec, PromotionSpec, TenantSpec
from doctune.store.dataset_files import read_split
from doctune.store.db import Dataset, DatasetVersion, Job, Model

from tests.unit.test_cli import s3  # noqa: F401  (a bucket of its own on the session's real SeaweedFS server)

LABELS = ("sport", "politics", "tech")


def records(n: int, start: int = 0, labels=LABELS, weights=None) -> list[dict]:
    rng = random.Random(start)
    return [{"text": f"article number {i} about {label} " + " ".join(rng.choice("abcdefgh") for _ in range(8)),
             "label": label}
            for i, label in zip(range(start, start + n), rng.choices(labels, weights=weights, k=n))]


@pytest.fixture
def world(s3, tmp_path):  # noqa: F811
    p = Platform(Settings(home=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'doctune.db'}", **s3))
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name=f"a-{uuid.uuid4().hex[:8]}"))  # the S3 server is shared
    _, key_b = tenants.create_tenant(p, admin, TenantSpec(name=f"b-{uuid.uuid4().hex[:8]}"))
    a, b = tenants.authenticate(p, key_a), tenants.authenticate(p, key_b)
    yield p, a, b, key_a, key_b
    p.db.dispose()


def upload(p, who, rows, name="news"):
    return datasets_svc.upload_dataset(p, who, tenant=who.tenant_id, name=name, task="classification",
                                       files={"data": to_jsonl(rows)})


def splits_of(p, ds, version=None):
    return {s: versions_svc.read_version_split(p, ds, s, version) for s in ("train", "dev", "test")}


# ------------------------------------------------------------------ splitting, without storage
def test_new_records_are_split_by_label_and_hash_whatever_their_order():
    new = records(300, start=1000)
    counts = {label: {"train": 80, "dev": 10, "test": 10} for label in LABELS}
    added, dups = versions_svc.assign_splits(new, "classification", seed=42, dev=0.1, test=0.1, stored={}, counts=counts)
    shuffled = new[:]
    random.Random(7).shuffle(shuffled)
    again, _ = versions_svc.assign_splits(shuffled, "classification", seed=42, dev=0.1, test=0.1, stored={},
                                          counts=counts)
    where = {r["text"]: s for s, rows in added.items() for r in rows}
    assert where == {r["text"]: s for s, rows in again.items() for r in rows} and dups == 0
    for label in LABELS:  # each label's split counts, stored plus added, stay at the fractions
        total = counts[label]["test"] + sum(r["label"] == label for r in added["test"])
        everything = 100 + sum(r["label"] == label for r in new)
        assert abs(total / everything - 0.1) < 0.01, (label, total, everything)
    other_seed, _ = versions_svc.assign_splits(new, "classification", seed=43, dev=0.1, test=0.1, stored={},
                                               counts=counts)
    assert {r["text"] for r in other_seed["test"]} != {r["text"] for r in added["test"]}  # the seed decides


def test_duplicates_follow_the_stored_copy_and_a_new_rare_label_goes_to_train():
    stored_rec = {"text": "already stored", "label": "sport"}
    new = [stored_rec, {"text": "fresh", "label": "sport"}, {"text": "only one of a kind", "label": "weather"},
           {"text": "twice in the file", "label": "sport"}, {"text": "twice in the file", "label": "sport"}]
    added, dups = versions_svc.assign_splits(
        new, "classification", seed=1, dev=0.1, test=0.1,
        stored={versions_svc._canonical(stored_rec): "test"}, counts={"sport": {"train": 8, "dev": 1, "test": 1}})
    assert dups == 1 and stored_rec in added["test"]
    assert {"text": "only one of a kind", "label": "weather"} in added["train"]
    twice = [s for s, rows in added.items() for r in rows if r["text"] == "twice in the file"]
    assert len(twice) == 2 and len(set(twice)) == 1  # the two copies never land in different splits


def test_total_variation_distance():
    assert versions_svc.total_variation({"a": 5, "b": 5}, {"a": 10, "b": 10}) == 0.0
    assert versions_svc.total_variation({"a": 1}, {"b": 1}) == 1.0
    assert versions_svc.total_variation({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
    assert versions_svc.total_variation({}, {"a": 1}) == 0.0


# ------------------------------------------------------------------ appending, stored
def test_appends_keep_every_stored_record_in_its_split_and_record_counts_and_drift(world):
    p, a, _, _, _ = world
    ds = upload(p, a, records(200))
    v1 = splits_of(p, ds)
    ds, v2 = versions_svc.append_records(p, a, ds.id, {"data": to_jsonl(records(100, start=500))})
    ds, v3 = versions_svc.append_records(p, a, "news", {"data": to_jsonl(records(100, start=900, weights=(8, 1, 1)))})
    assert (ds.version, v2.version, v3.version) == (3, 2, 3)

    later = splits_of(p, ds)
    for split in ("train", "dev", "test"):  # version 1's records open each split, in their order
        assert later[split][:len(v1[split])] == v1[split]
    assert splits_of(p, ds, 1) == v1  # and version 1 itself is still what it was
    assert sum(len(v) for v in later.values()) == 400 and ds.info["sizes"] == {s: len(v) for s, v in later.items()}
    assert sum(v3.info["added"].values()) == 100 and v3.info["records"] == 400
    assert abs(len(later["test"]) / 400 - 0.1) < 0.02 and abs(len(later["dev"]) / 400 - 0.1) < 0.02

    # drift: the total variation distance of the label distributions of versions 2 and 3, by hand
    def dist(s):
        return Counter(r["label"] for rows in s.values() for r in rows)

    v2_dist = dist(splits_of(p, ds, 2))
    expected = versions_svc.total_variation(dict(v2_dist), dict(dist(later)))
    assert v3.info["drift"]["tvd"] == pytest.approx(expected, abs=1e-6) and expected > 0.05
    assert v3.info["drift"]["records"] == 100 and v3.info["drift"]["percent"] == pytest.approx(100 * 100 / 300, abs=1e-3)
    assert v3.info["drift"]["added_tvd"] > v3.info["drift"]["tvd"]  # the append alone is further off
    assert v2.info["drift"]["tvd"] < 0.05  # the same mix as the upload: little drift
    rows = versions_svc.list_versions(p, a, ds.id)[1]
    assert [r.version for r in rows] == [1, 2, 3] and rows[0].info["distribution"] == dict(sorted(dist(v1).items()))


def test_a_duplicate_of_a_stored_record_stays_in_its_split(world):
    p, a, _, _, _ = world
    ds = upload(p, a, records(100))
    test_record = splits_of(p, ds)["test"][0]
    ds, v2 = versions_svc.append_records(p, a, ds.id, {"data": to_jsonl([test_record] + records(20, start=300))})
    assert v2.info["duplicates"] == 1 and splits_of(p, ds)["test"].count(test_record) == 2


def test_a_new_label_lands_in_train_first(world):
    p, a, _, _, _ = world
    ds = upload(p, a, records(100))
    ds, v2 = versions_svc.append_records(p, a, ds.id, {"data": to_jsonl(records(3, start=700, labels=("weather",)))})
    assert v2.info["added"]["train"] == 3 and "weather" in ds.info["labels"] and v2.info["drift"]["new_labels"] == ["weather"]


@pytest.mark.parametrize("blob, field, code", [
    (b'{"text": "fine", "label": "sport"}\nnot json\n', "data", "invalid_dataset"),
    (b'{"text": "no label here"}\n', "label", "invalid_dataset"),
    (b'{"text": "multi", "labels": ["sport"]}\n', "label", "invalid_dataset"),  # the dataset is single-label
    (b"", "data", "invalid_dataset"),
])
def test_bad_appends_name_the_field_and_store_nothing(world, blob, field, code):
    p, a, _, _, _ = world
    ds = upload(p, a, records(60))
    before = sorted(p.objects.list_objects(p.objects.key_of(ds.uri) + "/"))
    with pytest.raises(DoctuneError) as e:
        versions_svc.append_records(p, a, ds.id, {"data": blob})
    assert (e.value.code, e.value.field) == (code, field), e.value.message
    assert sorted(p.objects.list_objects(p.objects.key_of(ds.uri) + "/")) == before
    with p.db.session() as s:
        assert s.get(Dataset, ds.id).version == 1 and s.query(DatasetVersion).filter_by(dataset_id=ds.id).count() == 1


def test_other_tenants_datasets_are_not_found_and_viewers_cannot_append(world):
    p, a, b, _, _ = world
    ds = upload(p, a, records(60))
    for ref in (ds.id, "news"):
        with pytest.raises(DoctuneError) as e:
            versions_svc.append_records(p, b, ref, {"data": to_jsonl(records(5, start=80))})
        assert e.value.http_status == 404
    viewer = tenants.authenticate(p, tenants.create_key(p, a, a.tenant_id, "viewer")[1])
    with pytest.raises(DoctuneError) as e:
        versions_svc.append_records(p, viewer, ds.id, {"data": to_jsonl(records(5, start=80))})
    assert e.value.http_status == 403


def test_a_quota_refusal_stores_nothing(world):
    p, a, _, _, _ = world
    ds = upload(p, a, records(60))
    used = p.objects.prefix_bytes(f"tenants/{a.tenant_id}/")
    tenants.set_quota(p, tenants.authenticate(p, tenants.create_admin_key(p)), a.tenant_id,
                      {"max_storage_bytes": used + 10})
    with pytest.raises(DoctuneError) as e:
        versions_svc.append_records(p, a, ds.id, {"data": to_jsonl(records(50, start=300))})
    assert e.value.code == "quota_exceeded" and p.objects.prefix_bytes(f"tenants/{a.tenant_id}/") == used


# ------------------------------------------------------------------ jobs and comparisons across versions
def test_a_job_records_its_version_and_trains_on_that_versions_records(world):
    p, a, _, _, _ = world
    ds = upload(p, a, records(60))
    ds, _ = versions_svc.append_records(p, a, ds.id, {"data": to_jsonl(records(30, start=300))})
    base = {"tenant": a.tenant_id, "task": "classification", "dataset": {"id": ds.id}, "max_steps": 1}
    assert jobs_svc.pin_dataset_version(JobSpec.model_validate(base), ds)["dataset"]["version"] == 2
    with pytest.raises(DoctuneError) as e:
        jobs_svc.check_spec(p, a, JobSpec.model_validate({**base, "dataset": {"id": ds.id, "version": 3}}))
    assert (e.value.http_status, e.value.field) == (404, "dataset.version")
    with pytest.raises(Exception, match="compare_version"):
        JobSpec.model_validate({**base, "dataset": {"id": ds.id, "version": 1, "compare_version": 2}})

    with p.db.session() as s:
        s.add(Job(id="job-v1", tenant_id=a.tenant_id, task="classification", status="queued",
                  spec={**base, "dataset": {"id": ds.id, "version": 1}}))
        s.add(Job(id="job-v2", tenant_id=a.tenant_id, task="classification", status="queued",
                  spec={**base, "dataset": {"id": ds.id, "version": 2, "compare_version": 1}}))
    one = attempt_view(*load_attempt(p, "job-v1"))
    two = attempt_view(*load_attempt(p, "job-v2"))
    assert len(read_split(p.objects, one["dataset_info"]["parts"], "train")) == one["dataset_info"]["sizes"]["train"]
    assert len(read_split(p.objects, two["dataset_info"]["parts"], "train")) == ds.info["sizes"]["train"]
    assert two["dataset_info"]["compare_test"] == {"1": one["dataset_info"]["sizes"]["test"]}
    assert one["dataset_uri"] == two["dataset_uri"] == ds.uri


def test_models_tested_on_different_versions_are_compared_on_the_earlier_test_split(world):
    p, a, _, _, _ = world
    ds = upload(p, a, records(60))
    ds, _ = versions_svc.append_records(p, a, ds.id, {"data": to_jsonl(records(30, start=300))})
    t = a.tenant_id
    with p.db.session() as s:
        for mid, version, test, by_version in (("m-old", 1, 0.70, None), ("m-new", 2, 0.60, {"1": {"macro_f1": 0.80}}),
                                               ("m-blind", 2, 0.99, None)):
            s.add(Job(id=f"job-{mid}", tenant_id=t, task="classification", status="succeeded", model_id=mid,
                      spec={"dataset": {"id": ds.id, "version": version}},
                      metrics={"test": {"macro_f1": test}, **({"test_by_version": by_version} if by_version else {})}))
    with p.db.session() as s:
        for mid, test in (("m-old", 0.70), ("m-new", 0.60), ("m-blind", 0.99)):
            s.add(Model(id=mid, tenant_id=t, job_id=f"job-{mid}", task="classification", uri=f"s3://b/{mid}",
                        metrics={"test": {"macro_f1": test}}))
    dep_svc.record_deployment(p, a, DeploymentSpec(tenant=t, name="prod", model_id="m-old"))
    with pytest.raises(DoctuneError) as e:  # tested on version 2 alone: not comparable, however high
        dep_svc.plan_promotion(p, a, PromotionSpec(tenant=t, endpoint="prod", model_id="m-blind"))
    assert e.value.code == "conflict" and "compare_version: 1" in e.value.message
    plan = dep_svc.plan_promotion(p, a, PromotionSpec(tenant=t, endpoint="prod", model_id="m-new"))
    assert plan["decision"] == "promoted" and plan["challenger"]["test"] == 0.80  # on version 1's test split
    assert plan["test_split"] == {"dataset_id": ds.id, "version": 1}


# ------------------------------------------------------------------ over HTTP
def test_the_api_appends_lists_versions_and_refuses_bad_input(world):
    p, a, b, key_a, key_b = world
    ds = upload(p, a, records(60))
    http = TestClient(create_app(p), raise_server_exceptions=False)
    auth = {"Authorization": f"Bearer {key_a}"}
    new = to_jsonl(records(30, start=300))

    r = http.post(f"/v1/datasets/{ds.id}/versions", headers={**auth, "Idempotency-Key": "append-1"},
                  files={"data": ("new.jsonl", new, "application/jsonl")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["dataset"]["version"] == 2 and body["version"]["version"] == 2 and body["retrain"] == []
    assert sum(body["version"]["added"].values()) == 30 and body["version"]["records"] == 90
    again = http.post(f"/v1/datasets/{ds.id}/versions", headers={**auth, "Idempotency-Key": "append-1"},
                      files={"data": ("new.jsonl", new, "application/jsonl")})
    assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"  # a retry appends once

    csv = "text,label\nfrom a spreadsheet,sport\n".encode()
    r = http.post("/v1/datasets/news/versions", headers=auth, files={"data": ("more.csv", csv, "text/csv")})
    assert r.status_code == 201 and r.json()["version"]["version"] == 3

    listed = http.get(f"/v1/datasets/{ds.id}/versions", headers=auth).json()
    assert [v["version"] for v in listed] == [1, 2, 3] and listed[0]["drift"] is None
    assert listed[1]["drift"]["records"] == 30 and 0 <= listed[1]["drift"]["tvd"] <= 1
    assert http.get(f"/v1/datasets/{ds.id}/versions/2", headers=auth).json()["records"] == 90
    assert http.get(f"/v1/datasets/{ds.id}/versions/9", headers=auth).status_code == 404

    bad = http.post(f"/v1/datasets/{ds.id}/versions", headers=auth,
                    files={"data": ("bad.jsonl", b'{"text": "x", "label": "sport"}\n{"text": 5}\n', "application/jsonl")})
    assert bad.status_code == 422 and bad.json()["error"]["errors"][0]["line"] == 2
    missing = http.post(f"/v1/datasets/{ds.id}/versions", headers=auth)
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "data"
    foreign = http.post(f"/v1/datasets/{ds.id}/versions", headers={"Authorization": f"Bearer {key_b}"},
                        files={"data": ("new.jsonl", new, "application/jsonl")})
    assert foreign.status_code == 404
    assert http.get(f"/v1/datasets/{ds.id}/versions", headers={"Authorization": f"Bearer {key_b}"}).status_code == 404
    assert http.get(f"/v1/datasets/{ds.id}", headers=auth).json()["version"] == 3  # nothing the refusals did


def test_deleting_a_dataset_deletes_every_version(world):
    p, a, _, _, _ = world
    ds = upload(p, a, records(60))
    versions_svc.append_records(p, a, ds.id, {"data": to_jsonl(records(20, start=300))})
    datasets_svc.delete_dataset(p, a, ds.id)
    assert not list(p.objects.list_objects(p.objects.key_of(ds.uri) + "/"))
    with p.db.session() as s:
        assert s.get(Dataset, ds.id) is None and s.query(DatasetVersion).filter_by(dataset_id=ds.id).count() == 0


def test_appends_to_a_redacted_dataset_are_redacted_too(world):
    p, a, _, _, _ = world
    rows = records(60)
    ds = datasets_svc.upload_dataset(p, a, tenant=a.tenant_id, name="private", task="classification",
                                     files={"data": to_jsonl(rows)}, redact_pii=True)
    new = [{"text": "write to jane.doe@example.com about the match", "label": "sport"}] + records(10, start=300)
    ds, v2 = versions_svc.append_records(p, a, ds.id, {"data": to_jsonl(new)})
    stored = [r["text"] for rows_ in splits_of(p, ds).values() for r in rows_]
    assert not any("jane.doe@example.com" in t for t in stored)
    assert v2.info["pii_redaction"]["records_changed"] == 1
