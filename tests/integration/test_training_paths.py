"""Training paths a user can ask for that no other test runs as a real job (issue "lifecycle"):

* CPU offload: the optimizer state under ZeRO-2 and the parameters under ZeRO-3 on the host, trained
  with DeepSpeed's CPU Adam; the dev loss falls below the untrained model's, and the plan (asked for the
  same job on GPU workers) shows the memory that offload moves off the accelerator;
* early stopping: a job whose target is reached at its first evaluation stops there, and its events
  say so with the reason;
* a base model the tenant uploaded to the object store: trained on, exported, served."""

from __future__ import annotations

import httpx
import pytest

from doctune.base_models import resolve_base_model
from doctune.data import to_jsonl

from .conftest import ahead, finished, poll, tenant_client, tiny_job

# `make test-full` only: three MiniLM jobs and an endpoint (the offload config, the stopper and the
# upload are unit-tested in tests/unit/test_ds_config.py, test_early_stopping.py, test_base_model_upload.py)
pytestmark = pytest.mark.full

FULL_FT = {"method": "full"}
OFFLOAD = {
    "zero2_optimizer": {"zero_stage": 2, "offload_optimizer": True},
    "zero3_params": {"zero_stage": 3, "offload_optimizer": True, "offload_params": True},
}


def offload_job(dataset_id: str, deepspeed: dict) -> dict:
    return tiny_job(dataset_id, tuning=FULL_FT, deepspeed=deepspeed, max_steps=12, micro_batch_size=8,
                    learning_rate=1e-4, eval_interval=6, checkpoint_interval=100)


@ahead()
def offload_training(request):
    client = tenant_client(request, "team-offload")
    ds = client.upload_dataset("bbc-offload", "classification",
                               {"data": bbc_jsonl(request)}, seed=42)
    return client, {name: client.submit_job(offload_job(ds["id"], cfg)) for name, cfg in OFFLOAD.items()}, ds


@ahead()
def early_stop_training(request):
    client = tenant_client(request, "team-offload")
    ds = client.upload_dataset("bbc-early", "classification", {"data": bbc_jsonl(request)},
                               seed=42)
    # any dev loss meets a target of 100: the job must stop at its first evaluation (step 4 of 40)
    spec = tiny_job(ds["id"], num_workers=1, max_steps=40, eval_interval=4, checkpoint_interval=100,
                    early_stopping={"metric": "loss", "mode": "min", "patience": 3, "target": 100.0})
    return client, client.submit_job(spec)


@ahead()
def uploaded_base_training(request):
    client = tenant_client(request, "team-own-base")
    base = client.upload_base_model("my-minilm", resolve_base_model("all-minilm-l6-v2"))
    ds = client.upload_dataset("bbc-own-base", "classification", {"data": bbc_jsonl(request)},
                               seed=42)
    spec = tiny_job(ds["id"], base_model=base["base_model"], num_workers=1, max_steps=6, eval_interval=6,
                    checkpoint_interval=100)
    return client, client.submit_job(spec), base, ds


def bbc_jsonl(request) -> bytes:
    return to_jsonl(request.getfixturevalue("bbc_small"))


def _done(client, job: dict) -> dict:
    job = poll(lambda: (j := client.get_job(job["id"]))["status"] in ("succeeded", "failed", "cancelled") and j,
               1500, f"job {job['id']}", interval=2)
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.mark.parametrize("name", list(OFFLOAD))
def test_an_offloaded_job_trains_with_cpu_adam_and_its_loss_falls(jobs_ahead, name):
    client, jobs, _ = jobs_ahead["offload_training"]
    job = _done(client, jobs[name])
    m = job["metrics"]
    assert m["optimizer"] == "DeepSpeedCPUAdam", m["optimizer"]
    assert m["step"] == 12
    assert m["dev"]["loss"] < m["baseline"]["dev"]["loss"], (m["dev"], m["baseline"]["dev"])
    print(f"\n{name}: peak memory per worker while training {m['memory']['peak_train_mb']:.0f} MiB, dev loss "
          f"{m['baseline']['dev']['loss']:.3f} -> {m['dev']['loss']:.3f}")  # for the notes (pytest -s)


@pytest.mark.parametrize("name", list(OFFLOAD))
def test_the_plan_shows_the_memory_offload_moves_to_the_host(jobs_ahead, name):
    client, jobs, ds = jobs_ahead["offload_training"]
    on_gpu = {"resources_per_worker": {"cpu": 1, "gpu": 1}}
    kept = client.plan_job(offload_job(ds["id"], {"zero_stage": OFFLOAD[name]["zero_stage"]}) | on_gpu)["memory_per_worker_mb"]
    moved = client.plan_job(offload_job(ds["id"], OFFLOAD[name]) | on_gpu)["memory_per_worker_mb"]
    assert moved["accelerator_mb"] < kept["accelerator_mb"] and moved["host_mb"] > kept["host_mb"], (kept, moved)
    print(f"\n{name}, planned per GPU worker: accelerator {kept['accelerator_mb']:.0f} -> {moved['accelerator_mb']:.0f} MiB, "
          f"host {kept['host_mb']:.0f} -> {moved['host_mb']:.0f} MiB")
    on_cpu = client.plan_job(offload_job(ds["id"], OFFLOAD[name]))
    assert any("same RAM" in w for w in on_cpu["warnings"]), on_cpu["warnings"]


def test_a_job_that_reaches_its_target_stops_early_and_says_why(jobs_ahead):
    client, job = jobs_ahead["early_stop_training"]
    job = _done(client, job)
    assert job["metrics"]["step"] == 4 and job["progress"]["early_stopped_at"] == 4
    events = client.request("GET", f"/v1/jobs/{job['id']}/events", params={"limit": 1000})["events"]
    stops = [e for e in events if e["kind"] == "early_stopped"]
    assert len(stops) == 1 and stops[0]["data"]["step"] == 4, [e["kind"] for e in events]
    assert "dev loss reached its target" in stops[0]["reason"], stops[0]


def test_a_job_on_an_uploaded_base_model_trains_and_serves(jobs_ahead):
    client, job, base, ds = finished(jobs_ahead, "uploaded_base_training")
    assert job["spec"]["base_model"] == base["base_model"] and job["metrics"]["step"] == 6
    dep = client.deploy(job["model_id"], "own-base", min_replicas=1, max_replicas=1, num_cpus=0.25)
    dep = poll(lambda: (d := client.get_deployment(dep["id"]))["status"] != "deploying" and d, 600, "the deployment",
               interval=2)
    assert dep["status"] == "running", dep["message"]
    r = httpx.post(dep["url"], json={"inputs": ["The striker scored twice in the cup final."]},
                   headers={"Authorization": client.key}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] in ds["info"]["labels"], r.json()
