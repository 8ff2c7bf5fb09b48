"""Deleting a dataset or a model over the real API removes its files from the real S3 server
and its record, and a dataset a live job still uses is refused (409 naming the job) with
nothing removed. The dataset test's fresh tenant keeps the shared fixtures of other tests out of reach; the
model deleted is that of test_lifecycle.py's job, which nothing else uses."""

from __future__ import annotations

import pytest

from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.store.objects import ObjectStore

from .conftest import new_tenant, poll, tiny_job
from .test_lifecycle import lifecycle_job, paused_then_failed  # noqa: F401  (registers the job it deletes the model of)


def stored(stack, prefix: str) -> list[str]:
    return sorted(ObjectStore(stack).list_keys(prefix))


def test_a_dataset_in_use_stays_then_goes_with_its_files(stack, admin, bbc_small):
    client = new_tenant(stack, admin, "team-delete-data")
    ds = client.upload_dataset("bbc", "classification", {"data": to_jsonl(bbc_small)}, seed=1)
    prefix = f"tenants/team-delete-data/datasets/{ds['id']}/"
    assert stored(stack, prefix) == [prefix + s for s in ("dev.jsonl", "test.jsonl", "train.jsonl")]

    job = client.submit_job(tiny_job(ds["id"], max_steps=200))
    client.request("POST", f"/v1/jobs/{job['id']}/pause")  # held while queued, or checkpointing if it already started
    with pytest.raises(DoctuneError) as e:
        client.delete_dataset(ds["id"])
    assert e.value.http_status == 409 and job["id"] in e.value.message
    assert len(stored(stack, prefix)) == 3 and client.get_dataset(ds["id"])["id"] == ds["id"]

    client.cancel_job(job["id"])
    poll(lambda: client.get_job(job["id"])["status"] == "cancelled", 300, "the job to be cancelled")
    assert client.delete_dataset(ds["id"])["id"] == ds["id"]
    assert stored(stack, prefix) == []
    with pytest.raises(DoctuneError) as e:
        client.get_dataset(ds["id"])
    assert e.value.http_status == 404
    assert ds["id"] not in {d["id"] for d in client.list_datasets()}


def test_a_model_goes_with_its_files(stack, admin, client_a, jobs_ahead):
    """On team-a's model of the lifecycle job, which nothing else uses (no job of its own: each job started costs
    this session tens of seconds of its 2 cores)."""
    client, (_, job) = client_a, lifecycle_job(jobs_ahead)
    prefix = f"tenants/team-a/models/{job['model_id']}/"
    assert stored(stack, prefix), "the job exported no model files"
    with pytest.raises(DoctuneError) as e:  # another tenant cannot see it, let alone delete it
        new_tenant(stack, admin, "team-delete-other").delete_model(job["model_id"])
    assert e.value.http_status == 404

    assert client.delete_model(job["model_id"])["id"] == job["model_id"]
    assert stored(stack, prefix) == []
    assert job["model_id"] not in {m["id"] for m in client.list_models()}
    assert client.get_job(job["id"])["status"] == "succeeded"  # the job and its metrics stay
