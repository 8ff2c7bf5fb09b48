"""NER end to end on real WNUT-16 tweets: upload, a small full fine-tuning job through Ray, entity-level
metrics beside the baseline, an endpoint that returns entities with character offsets,
then undeploy."""

from __future__ import annotations

import httpx
import pytest

from doctune.data import to_jsonl
from doctune.tasks.ner import load_wnut16

from .conftest import ahead, example_job, finished, poll, tenant_client

# `make test-full` only: a NER job and endpoint (the plugin trains, exports and serves in tests/unit/test_ner.py)
# (left out of `make test`, which CI runs, to keep it within 20 minutes)
pytestmark = pytest.mark.full


@ahead()
def ner_training(request):
    client = tenant_client(request, "team-ner")
    ds = client.upload_dataset("wnut-small", "ner", {"data": to_jsonl(load_wnut16(limit=1000))}, seed=42)
    assert "person" in ds["info"]["entity_types"]
    # full fine-tuning: MiniLM with LoRA (r=8, lr 2e-3) still tagged every word O after 180 steps, where
    # full fine-tuning at lr 1e-4 found entities from about step 130 (tests.bench.levers, 800 tweets)
    spec = example_job("wnut-ner.yaml", ds["id"], num_workers=1, max_steps=200, micro_batch_size=16, eval_interval=50,
                       checkpoint_interval=100, tuning={"method": "full"}, learning_rate=1e-4,
                       early_stopping={"metric": "f1", "mode": "max", "patience": 5})
    return client, client.submit_job(spec)


@pytest.fixture(scope="module")
def ner_client(jobs_ahead):
    return jobs_ahead["ner_training"][0]


@pytest.fixture(scope="module")
def ner_job(jobs_ahead):
    return finished(jobs_ahead, "ner_training")[1]


def test_ner_reports_entity_metrics_beside_the_baseline(ner_job):
    report = ner_job["report"]
    assert report["primary_metric"] == "f1"
    assert {"f1", "precision", "recall", "accuracy"} <= set(report["metrics"])
    assert report["references"] == ["gazetteer"]
    # the quality bar is entity-level F1 (seqeval), not token accuracy: tagging every word O is mostly
    # right by accuracy and finds no entity
    f1 = report["metrics"]["f1"]
    assert f1["fine_tuned"] > f1["baseline"], f1
    assert report["best_baseline"]["metric"] == "f1" and 0 <= report["best_baseline"]["value"] <= 1
    assert set(ner_job["metrics"]["test"]["per_type"]) >= {"person"}


def test_ner_endpoint_returns_entities_with_character_offsets(stack, ner_client, ner_job):
    dep = ner_client.deploy(ner_job["model_id"], "tweets", min_replicas=1, max_replicas=1)
    dep = poll(lambda: (d := ner_client.get_deployment(dep["id"]))["status"] != "deploying" and d, 300, "ner deployment")
    assert dep["status"] == "running", dep["message"]
    texts = ["Barack Obama visited the Empire State Building in New York with Google staff .", "nothing here"]
    r = httpx.post(dep["url"], json={"inputs": texts}, headers={"Authorization": ner_client.key}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and all(isinstance(p["entities"], list) for p in preds)
    for text, p in zip(texts, preds):
        for e in p["entities"]:
            assert text[e["start"] : e["end"]] == e["text"] and e["type"] in ner_job["metrics"]["test"]["per_type"]
            assert 0 <= e["score"] <= 1
    bad = httpx.post(dep["url"], json={"inputs": "not a list"}, headers={"Authorization": ner_client.key}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "inputs"

    # undeploy frees the replica; the model stays registered
    ner_client.delete_deployment(dep["id"])
    gone = poll(lambda: (d := ner_client.get_deployment(dep["id"]))["status"] == "deleted" and d, 300, "undeploy")
    assert gone["status"] == "deleted"
    assert httpx.post(dep["url"], json={"inputs": texts}, headers={"Authorization": ner_client.key},
                      timeout=60).status_code == 404
    assert ner_client.get_model(ner_job["model_id"])["id"] == ner_job["model_id"]
