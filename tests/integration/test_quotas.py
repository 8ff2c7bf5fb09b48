"""Quotas hold on the real stack: with a concurrent-job quota of 1, a tenant's
second job waits in the queue (saying why) until the first ends, then runs; an
upload that would pass the storage quota is refused and stores nothing."""

from __future__ import annotations

import pytest

from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.store.objects import ObjectStore

from .conftest import poll, tiny_job

ACTIVE = ("starting", "running")


@pytest.fixture(scope="module")
def dataset_b(client_b, bbc_small):
    return client_b.upload_dataset("bbc-b", "classification", {"data": to_jsonl(bbc_small[::3])}, seed=1)


def test_second_job_waits_for_the_concurrent_job_quota(admin, client_b, dataset_b):
    admin.request("PUT", "/v1/tenants/team-b/quota", json={"max_concurrent_jobs": 1})
    try:
        first = client_b.submit_job(tiny_job(dataset_b["id"], max_steps=2, checkpoint_interval=100, eval_interval=100))
        second = client_b.submit_job(tiny_job(dataset_b["id"], max_steps=2, checkpoint_interval=100, eval_interval=100))
        seen_waiting = []

        def both_done():
            a, b = client_b.get_job(first["id"]), client_b.get_job(second["id"])
            assert not (a["status"] in ACTIVE and b["status"] in ACTIVE), "quota of 1 exceeded"
            if b["status"] == "queued" and a["status"] in ACTIVE:
                seen_waiting.append(b["progress"].get("queue_reason", ""))
            return a["status"] in ("succeeded", "failed") and b["status"] in ("succeeded", "failed") and (a, b)

        a, b = poll(both_done, 900, "both jobs of team-b", interval=0.5)
        assert a["status"] == b["status"] == "succeeded", (a["error"], b["error"])
        assert any("concurrent-job quota (1)" in r for r in seen_waiting), seen_waiting
        assert b["started_at"] >= a["finished_at"]
    finally:
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
