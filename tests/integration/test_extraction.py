"""Extraction end to end on the hand-made BBC sets: a tiny LoRA relation job through Ray whose
micro F1 (without no_relation) beats the untrained head, an endpoint that answers entity
pairs with a relation and refuses raw text; a tiny key-field job whose endpoint returns every
field with character offsets; then undeploy."""

from __future__ import annotations

import httpx
import pytest

from doctune.data import to_jsonl
from doctune.tasks.extraction import load_bbc_quote_fields, load_bbc_relations

from .conftest import ahead, example_job, finished, poll, tenant_client, tiny_job

# `make test-full` only: a relation-extraction job and endpoint (the plugin trains, exports and serves in tests/unit/test_extraction.py)
# (left out of `make test`, which CI runs, to keep it within 20 minutes)
pytestmark = pytest.mark.full


@ahead()
def relation_training(request):
    client = tenant_client(request, "team-extraction")
    ds = client.upload_dataset("bbc-relations", "extraction", {"data": to_jsonl(load_bbc_relations())}, seed=42)
    assert ds["info"]["kind"] == "relation"
    assert ds["info"]["labels"] == ["no_relation", "founded", "leads", "member_of", "works_for"]
    spec = example_job("bbc-relations.yaml", ds["id"], num_workers=1, micro_batch_size=16, max_steps=48, eval_interval=16, checkpoint_interval=16,
                       learning_rate=2e-3, early_stopping={"metric": "f1", "mode": "max", "patience": 5})
    return client, client.submit_job(spec)


@ahead(tests=("test_fields_endpoint_returns_every_field_with_offsets",))
def fields_training(request):
    client = tenant_client(request, "team-extraction")
    ds = client.upload_dataset("bbc-quotes", "extraction", {"data": to_jsonl(load_bbc_quote_fields())}, seed=42)
    assert ds["info"]["kind"] == "fields" and ds["info"]["field_names"] == ["organisation", "role", "speaker"]
    spec = tiny_job(ds["id"], task="extraction", num_workers=1, max_steps=16, micro_batch_size=8, eval_interval=8, checkpoint_interval=8)
    return client, client.submit_job(spec)


@pytest.fixture(scope="module")
def ext_client(jobs_ahead):
    return jobs_ahead["relation_training"][0]


@pytest.fixture(scope="module")
def relation_job(jobs_ahead):
    return finished(jobs_ahead, "relation_training")[1]


@pytest.fixture(scope="module")
def fields_job(jobs_ahead):
    return finished(jobs_ahead, "fields_training")[1]


def deploy(client, model_id: str, name: str) -> dict:
    dep = client.deploy(model_id, name, min_replicas=1, max_replicas=1)
    dep = poll(lambda: (d := client.get_deployment(dep["id"]))["status"] != "deploying" and d, 300, f"{name} deployment")
    assert dep["status"] == "running", dep["message"]
    return dep


def undeploy(client, dep: dict) -> None:
    client.delete_deployment(dep["id"])
    assert poll(lambda: client.get_deployment(dep["id"])["status"] == "deleted", 300, "undeploy")


def test_relation_job_beats_the_untrained_head(relation_job):
    report = relation_job["report"]
    assert report["primary_metric"] == "f1" and report["baseline"] == "untrained_head"
    assert {"f1", "precision", "recall", "macro_f1", "accuracy"} <= set(report["metrics"])
    f1 = report["metrics"]["f1"]
    assert f1["fine_tuned"] > f1["baseline"]  # micro F1 over leads/works_for/member_of/founded
    assert set(relation_job["metrics"]["test"]["per_relation"]) == {"founded", "leads", "member_of", "works_for"}


def test_relation_endpoint_answers_entity_pairs(ext_client, relation_job):
    dep = deploy(ext_client, relation_job["model_id"], "relations")
    pairs = [{k: r[k] for k in ("text", "head", "tail")} for r in load_bbc_relations()[:3]]
    r = httpx.post(dep["url"], json={"inputs": pairs}, headers={"Authorization": ext_client.key}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    labels = {"no_relation", "founded", "leads", "member_of", "works_for"}
    assert len(preds) == 3
    for pair, p in zip(pairs, preds):
        assert p["relation"] in labels and set(p["scores"]) == labels
        assert p["score"] == max(p["scores"].values()) and sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["head"]["text"] == pair["text"][pair["head"]["start"] : pair["head"]["end"]]
        assert p["tail"]["text"] == pair["text"][pair["tail"]["start"] : pair["tail"]["end"]]
    for body in ({"inputs": ["raw text is for key-field models"]},
                 {"inputs": [{**pairs[0], "tail": {"start": 0, "end": 10_000}}]}):
        bad = httpx.post(dep["url"], json=body, headers={"Authorization": ext_client.key}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "inputs", bad.text
    undeploy(ext_client, dep)


@pytest.mark.full  # a second extraction job (key fields; relations run in CI): `make test-full`
def test_fields_endpoint_returns_every_field_with_offsets(ext_client, fields_job):
    report = fields_job["report"]
    assert report["primary_metric"] == "f1" and {"f1", "precision", "recall"} <= set(report["metrics"])
    assert set(fields_job["metrics"]["test"]["per_field"]) == {"organisation", "role", "speaker"}
    dep = deploy(ext_client, fields_job["model_id"], "quotes")
    texts = ["\"Growth will slow,\" said Jane Smith, an economist at Barclays.", "nothing to see"]
    r = httpx.post(dep["url"], json={"inputs": texts}, headers={"Authorization": ext_client.key}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2
    for text, p in zip(texts, preds):
        assert set(p["fields"]) == {"organisation", "role", "speaker"}
        for spans in p["fields"].values():
            for s in spans:
                assert text[s["start"] : s["end"]] == s["text"] and 0 <= s["score"] <= 1
    undeploy(ext_client, dep)
