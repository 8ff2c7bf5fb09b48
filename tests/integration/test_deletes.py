"""Deleting a dataset or a model over the real API removes its files from the real S3 server
and its record, and a dataset a live job still uses is refused (409 naming the job) with
nothing removed. A fresh tenant keeps the shared fixtures of other tests out of reach."""

from __future__ import annotations

import pytest

from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.store.objects import ObjectStore

from .conftest import ahead, finished, new_tenant, poll, tenant_client, tiny_job


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


@ahead()
def deletable_training(request):
    """A two-step job whose model is then deleted."""
    client = tenant_client(request, "team-delete-model")
    ds = client.upload_dataset("bbc", "classification", {"data": to_jsonl(request.getfixturevalue("bbc_small"))}, seed=1)
    return client, client.submit_job(tiny_job(ds["id"], num_workers=1, max_steps=2, eval_interval=2, checkpoint_interval=100))


def test_a_model_goes_with_its_files(stack, admin, jobs_ahead):
    client, job = finished(jobs_ahead, "deletable_training")
    prefix = f"tenants/team-delete-model/models/{job['model_id']}/"
    assert stored(stack, prefix), "the job exported no model files"
    with pytest.raises(DoctuneError) as e:  # another tenant cannot see it, let alone delete it
        new_tenant(stack, admin, "team-delete-other").delete_model(job["model_id"])
    assert e.value.http_status == 404

    assert client.delete_model(job["model_id"])["id"] == job["model_id"]
    assert stored(stack, prefix) == []
    assert job["model_id"] not in {m["id"] for m in client.list_models()}
    assert client.get_job(job["id"])["status"] == "succeeded"  # the job and its metrics stay
