"""Quotas hold on the real stack: with a concurrent-job quota of 1, a tenant's
second job waits in the queue (saying why) until the first ends (here: is cancelled while
it trains, which stops it and registers no model), then runs; an upload that would pass
the storage quota is refused and stores nothing."""

from __future__ import annotations

import pytest

from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.store.objects import ObjectStore

from .conftest import poll, tiny_job



@pytest.fixture(scope="module")
def dataset_b(client_b, bbc_small):
    return client_b.upload_dataset("bbc-b", "classification", {"data": to_jsonl(bbc_small[::3])}, seed=1)


def test_second_job_waits_for_the_concurrent_job_quota_and_a_running_job_cancels(admin, client_b, dataset_b):
    admin.request("PUT", "/v1/tenants/team-b/quota", json={"max_concurrent_jobs": 1})
    try:
        first = client_b.submit_job(tiny_job(dataset_b["id"], num_workers=1, max_steps=500, checkpoint_interval=1000, eval_interval=1000))
        second = client_b.submit_job(tiny_job(dataset_b["id"], num_workers=1, max_steps=500, checkpoint_interval=1000, eval_interval=1000))
        seen_waiting = []

        def first_training_second_waiting():
            a, b = client_b.get_job(first["id"]), client_b.get_job(second["id"])
            assert b["status"] == "queued", "quota of 1 exceeded"
            if a["status"] == "running" and a["progress"].get("step", 0) >= 1:
                seen_waiting.append(b["progress"].get("queue_reason", ""))
            return len(seen_waiting) >= 2

        poll(first_training_second_waiting, 900, "team-b's first job to train while the second waits", interval=0.5)
        assert any("concurrent-job quota (1)" in r for r in seen_waiting), seen_waiting
        client_b.cancel_job(first["id"])  # a running job: its driver is stopped, and it frees the quota
        a = poll(lambda: (j := client_b.get_job(first["id"]))["status"] != "running" and j, 60, "the cancel")
        assert a["status"] == "cancelled" and a["model_id"] is None
        b = poll(lambda: (j := client_b.get_job(second["id"]))["status"] == "running" and j, 600, "the second job to start")
        assert b["started_at"] >= a["finished_at"]
    finally:
        for job in [j for j in client_b.list_jobs() if j["status"] in ("queued", "starting", "running")]:
            client_b.cancel_job(job["id"])  # neither may hold the cluster's room after the test, failed or not
        admin.request("PUT", "/v1/tenants/team-b/quota", json={"max_concurrent_jobs": 2})


def test_upload_over_the_storage_quota_is_refused(stack, admin, client_b, dataset_b, bbc_small):
    store = ObjectStore(stack)
    used = store.prefix_bytes("tenants/team-b/")
    admin.request("PUT", "/v1/tenants/team-b/quota", json={"max_storage_bytes": used + 1000})
    try:
        before = sorted(store.list_keys("tenants/team-b/datasets/"))
        with pytest.raises(DoctuneError) as e:
            client_b.upload_dataset("too-big", "classification", {"data": to_jsonl(bbc_small)})
        assert e.value.code == "quota_exceeded" and e.value.http_status == 429 and e.value.field == "max_storage_bytes"
        assert sorted(store.list_keys("tenants/team-b/datasets/")) == before
    finally:
        admin.request("PUT", "/v1/tenants/team-b/quota", json={"max_storage_bytes": None})
