"""A tenant's documents become a served, fine-tuned model: a tiny real job runs on
Ray + DeepSpeed, checkpoints and TensorBoard logs land under the tenant's prefix in the S3
server, the job is an MLflow run, the exported model loads with plain transformers, beats the
untrained baseline, and the Serve endpoint answers only the owner's key."""

from __future__ import annotations

import json

import httpx
import pytest

from doctune.data import split_records
from doctune.errors import DoctuneError
from doctune.store.objects import ObjectStore


@pytest.fixture(scope="module")
def finished_job(classification_job):
    return classification_job


def test_job_succeeds_with_full_step_count(finished_job):
    assert finished_job["status"] == "succeeded", finished_job["error"]
    assert finished_job["metrics"]["step"] == 20
    assert finished_job["progress"]["worker_pids"].keys() == {"0", "1"}


def test_lifecycle_and_progress_are_events(client_a, finished_job):
    events = client_a.request("GET", f"/v1/jobs/{finished_job['id']}/events", params={"limit": 1000})["events"]
    assert [e["status"] for e in events if e["kind"] == "status"] == ["queued", "starting", "running", "succeeded"]
    assert all(e["reason"] for e in events if e["kind"] == "status")
    kinds = {e["kind"] for e in events}
    assert {"progress", "eval", "checkpoint"} <= kinds
    assert [e["data"]["step"] for e in events if e["kind"] == "eval"] == [10, 20]


def test_checkpoints_are_in_the_tenants_prefix(stack, finished_job):
    keys = list(ObjectStore(stack).list_keys(f"tenants/team-a/jobs/{finished_job['id']}/checkpoints/"))
    assert any("checkpoint" in k and k.endswith("_optim_states.pt") for k in keys), keys[:20]
    assert any(k.endswith("doctune_state.json") for k in keys)


def test_the_job_wrote_tensorboard_logs_that_only_its_tenant_reads(stack, finished_job, client_a, client_b, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from doctune.cli.jobs import download_tensorboard

    job_id = finished_job["id"]
    keys = list(ObjectStore(stack).list_keys(f"tenants/team-a/jobs/{job_id}/tensorboard/"))
    assert len(keys) == 1 and "events.out.tfevents" in keys[0], keys  # one attempt, one event file
    with pytest.raises(DoctuneError) as refused:
        client_b.request("GET", f"/v1/jobs/{job_id}/tensorboard")
    assert refused.value.code == "not_found"
    [folder] = download_tensorboard(client_a, [job_id], tmp_path)
    acc = EventAccumulator(str(tmp_path / folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "throughput/tokens_per_s", "throughput/steps_per_s",
            "memory/rank0_rss_mb", "memory/peak_train_mb", "baseline/test/macro_f1"} <= tags, tags
    assert [e.step for e in acc.Scalars("dev/macro_f1")] == [10, 20]
    assert [e.step for e in acc.Scalars("train/loss")][-1] == 20
    [test] = acc.Scalars("test/macro_f1")
    assert test.step == 20 and test.value == pytest.approx(finished_job["metrics"]["test"]["macro_f1"], abs=1e-6)


def test_the_job_is_an_mlflow_run_with_its_settings_metrics_and_model(stack, finished_job):
    import mlflow

    mlflow.set_tracking_uri(stack.mlflow_uri)
    job_id = finished_job["id"]
    runs = mlflow.search_runs(experiment_names=["doctune/team-a"], filter_string=f"tags.`doctune.job_id` = '{job_id}'")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED" and run["run_id"] == finished_job["metrics"]["mlflow"]["run_id"]
    assert run["params.learning_rate"] == "0.002" and run["params.tuning.method"] == "lora"
    assert run["params.deepspeed.zero_stage"] == "2" and run["params.max_steps"] == "20"
    test = finished_job["metrics"]["test"]["macro_f1"]
    assert run["metrics.test/macro_f1"] == pytest.approx(test) and "metrics.baseline/test/macro_f1" in run
    client = mlflow.MlflowClient(stack.mlflow_uri)
    assert [m.step for m in client.get_metric_history(run["run_id"], "dev/macro_f1")] == [10, 20]
    model = {f.path for f in client.list_artifacts(run["run_id"], "model")}
    assert "model/config.json" in model, model


def test_exported_model_loads_with_plain_transformers(stack, finished_job, client_a, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_info = client_a.get_model(finished_job["model_id"])
    assert model_info["merged"] is True
    store = ObjectStore(stack)
    store.download_dir(store.key_of(model_info["uri"]), tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert set(model.config.id2label.values()) == {"business", "entertainment", "politics", "sports", "tech"}
    logits = model(**tok(["Shares in the bank rose after profits beat forecasts."], return_tensors="pt")).logits
    assert logits.shape == (1, 5)


def test_training_beats_the_untrained_baseline(finished_job):
    m = finished_job["metrics"]
    assert m["baseline"]["kind"] == "untrained_head"
    assert m["dev"]["accuracy"] > m["baseline"]["dev"]["accuracy"]
    assert m["test"]["macro_f1"] > m["baseline"]["test"]["macro_f1"]


@pytest.fixture(scope="module")
def endpoint(classification_endpoint):
    return classification_endpoint


def test_endpoint_answers_with_a_label_from_the_dataset(endpoint, tenant_a, bbc_small):
    doc = split_records(bbc_small, "classification", seed=42)["test"][0]
    r = httpx.post(endpoint["url"], json={"inputs": [doc["text"], "Parliament votes on the budget."]},
                   headers={"Authorization": f"Bearer {tenant_a}"}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    labels = {"business", "entertainment", "politics", "sports", "tech"}
    assert len(preds) == 2 and all(p["label"] in labels for p in preds)
    assert abs(sum(preds[0]["probabilities"].values()) - 1) < 1e-4


@pytest.mark.parametrize("header, status", [(None, 401), ("Bearer dtk_000000000000_nope", 401), ("garbage", 401)])
def test_endpoint_refuses_missing_or_bad_keys(endpoint, header, status):
    headers = {"Authorization": header} if header else {}
    r = httpx.post(endpoint["url"], json={"inputs": ["x"]}, headers=headers, timeout=30)
    assert r.status_code == status
    assert r.json()["error"]["code"] == "unauthenticated"


def test_endpoint_refuses_another_tenants_key(endpoint, tenant_b):
    r = httpx.post(endpoint["url"], json={"inputs": ["x"]}, headers={"Authorization": f"Bearer {tenant_b}"}, timeout=30)
    assert r.status_code == 403


def test_a_key_revoked_through_the_api_stops_working_at_the_endpoint_within_2_seconds(endpoint, client_a):
    """The replica has the key cached (it answered with it); the revocation epoch reaches it within 2 s."""
    import time

    made = client_a.request("POST", "/v1/keys", json={"role": "viewer"})
    headers = {"Authorization": f"Bearer {made['api_key']}"}
    assert httpx.post(endpoint["url"], json={"inputs": ["x"]}, headers=headers, timeout=60).status_code == 200
    client_a.request("DELETE", f"/v1/keys/{made['id']}")
    revoked_at = time.monotonic()
    while (status := httpx.post(endpoint["url"], json={"inputs": ["x"]}, headers=headers, timeout=60).status_code) == 200:
        assert time.monotonic() - revoked_at < 2.5, "the endpoint still takes a key revoked 2.5 s ago"
        time.sleep(0.1)
    assert status == 401


def test_other_tenant_cannot_see_job_model_or_deployment(client_b, finished_job, endpoint):
    for call, arg in ((client_b.get_job, finished_job["id"]), (client_b.get_model, finished_job["model_id"]),
                      (client_b.get_deployment, endpoint["id"])):
        with pytest.raises(DoctuneError) as e:
            call(arg)
        assert e.value.code == "not_found"


def _cli(stack, key, *args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DOCTUNE_HOME": stack.home, "DOCTUNE_API_KEY": key}
    return subprocess.run([str(Path(sys.executable).parent / "doctune"), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_shows_jobs_logs_usage_and_downloads_models(stack, tenant_a, finished_job, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = _cli(stack, tenant_a, "-o", "table", "jobs", "list")
    assert out.returncode == 0 and finished_job["id"] in out.stdout and "succeeded" in out.stdout
    logs = _cli(stack, tenant_a, "jobs", "logs", finished_job["id"])
    assert logs.returncode == 0 and f"doctune job {finished_job['id']}" in logs.stdout
    usage = json.loads(_cli(stack, tenant_a, "tenants", "usage").stdout)
    assert usage[0]["tenant"] == "team-a" and usage[0]["trained_tokens"] > 0 and usage[0]["storage_bytes"] > 0
    assert finished_job["metrics"]["usage"]["trained_tokens"] == finished_job["metrics"]["tokens_seen"] > 0
    dl = _cli(stack, tenant_a, "models", "download", finished_job["model_id"], "--dest", str(tmp_path))
    assert dl.returncode == 0, dl.stderr
    AutoModelForSequenceClassification.from_pretrained(tmp_path / finished_job["model_id"])


def test_cli_upload_shows_progress_and_stores_the_dataset(stack, tenant_a, bbc_small, tmp_path):
    from doctune.data import to_jsonl

    f = tmp_path / "bbc.jsonl"
    f.write_bytes(to_jsonl(bbc_small))
    out = _cli(stack, tenant_a, "datasets", "upload", "--name", "cli-upload", "--data", str(f))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["info"]["sizes"]["train"] > 0
    assert "upload" in out.stderr and "100%" in out.stderr  # the tqdm bar reached the file's size


def test_cli_errors_are_one_line_and_nonzero(stack, tenant_b, finished_job):
    out = _cli(stack, tenant_b, "jobs", "get", finished_job["id"])
    assert out.returncode == 2 and "error [not_found]" in out.stderr and "Traceback" not in out.stderr
