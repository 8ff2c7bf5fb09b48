"""A task plugin that lives outside the package (tests/toy_task, named in DOCTUNE_TASK_PLUGINS when
the session's stack starts) is picked up by every process of the real stack with no edit in
platform/: the API lists it, a job of it trains on Ray, and its Serve endpoint answers in the
toy's own request and answer shape and documents them."""

from __future__ import annotations

import httpx
import pytest

from doctune.data import to_jsonl
from tests.toy_task import reviews

from .conftest import ahead, finished, poll, tenant_client


# the toy plugin also trains with LoRA in the unit session (test_toy_plugin): `make test-full`
pytestmark = pytest.mark.full


@ahead()
def toy_training(request):
    client = tenant_client(request, "toy")
    tasks = {t["name"] for t in client.list_tasks()}
    ds = client.upload_dataset("reviews", "sentiment", {"data": to_jsonl(reviews())}, dev_fraction=0.25,
                               test_fraction=0.25)
    return client, client.submit_job({
        "task": "sentiment", "dataset": {"id": ds["id"]}, "max_steps": 2, "num_workers": 1, "deepspeed": {"zero_stage": 0},
        "micro_batch_size": 4, "max_seq_length": 32, "eval_interval": 2, "checkpoint_interval": 100,
        "learning_rate": 2e-3, "resources_per_worker": {"cpu": 0.5, "threads": 1}}), tasks


def test_a_plugin_from_outside_the_package_trains_and_serves(jobs_ahead):
    client, job, tasks = finished(jobs_ahead, "toy_training")
    assert "sentiment" in tasks
    assert job["report"]["primary_metric"] == "accuracy"
    dep = client.deploy(job["model_id"], "reviews", min_replicas=1, max_replicas=1)
    dep = poll(lambda: (d := client.get_deployment(dep["id"]))["status"] != "deploying" and d, 600, "the toy endpoint")
    assert dep["status"] == "running", dep["message"]
    r = httpx.post(dep["url"], json={"reviews": ["A delight from start to finish.", "Dull and far too long."]},
                   headers={"Authorization": client.key}, timeout=60)
    assert r.status_code == 200, r.text
    assert [set(p) for p in r.json()["predictions"]] == [{"sentiment", "positive"}] * 2
    doc = httpx.get(dep["url"].removesuffix("/predict") + "/openapi.json", timeout=30).json()
    assert "SentimentRequest" in doc["components"]["schemas"]
    client.delete_deployment(dep["id"])
