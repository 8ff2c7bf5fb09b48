"""The pre-flight plan against a real run: its memory estimate is within 30 % of the
peak resident memory the training workers measured, and once a job has run, the plan
predicts time from that measured throughput."""

from __future__ import annotations

import pytest

import os
import subprocess
from pathlib import Path

import yaml

from .conftest import ahead, finished, tiny_job

# `make test-full` only: a full fine-tuning job measured against its plan (the plan's arithmetic: tests/unit/test_plan.py)
# (left out of `make test`, which CI runs, to keep it within 20 minutes)
pytestmark = pytest.mark.full

BIN = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[2] / ".venv")) / "bin"


def _spec(dataset_id: str) -> dict:
    # full fine-tuning under ZeRO-2 on 2 workers: parameters, sharded gradients and optimizer
    # states and activations all weigh in, so the estimate is tested on every term
    return tiny_job(dataset_id, tuning={"method": "full"}, max_steps=6, micro_batch_size=8, max_seq_length=128,
                    eval_interval=100, checkpoint_interval=100, learning_rate=5e-5)


@ahead()
def plan_training(request):
    """Planned before it is submitted, so nothing it measures is in the plan yet."""
    client, dataset = request.getfixturevalue("client_a"), request.getfixturevalue("bbc_dataset")
    spec = _spec(dataset["id"])
    plan = client.plan_job(spec)
    return client, client.submit_job(spec), plan, spec


def test_plan_memory_matches_a_real_run_and_time_comes_from_measured_throughput(jobs_ahead, bbc_dataset):
    client_a, job, plan, spec = finished(jobs_ahead, "plan_training")
    assert plan["model"]["trainable_parameters"] == plan["model"]["parameters"] > 20_000_000
    assert plan["dataset"]["train"] == bbc_dataset["info"]["sizes"]["train"]
    assert plan["steps"]["total"] == 6 and plan["tokens"]["tokens_per_epoch"] > 0
    assert plan["fits"] is True

    measured = job["metrics"]["memory"]
    estimate = plan["memory_per_worker_mb"]
    ratio = estimate["total_mb"] / measured["peak_train_mb"]
    assert 0.7 <= ratio <= 1.3, f"estimate {estimate} vs measured {measured}"

    again = client_a.plan_job(spec)
    est = again["expected_time"]
    assert est is not None and job["id"] in est["own_job_ids"]
    actual = job["metrics"]["timing"]["train_s"]
    assert 0.5 * actual <= est["train_s"] <= 2 * actual + 1


def test_plan_warns_when_settings_will_not_fit(client_a, bbc_dataset):
    spec = _spec(bbc_dataset["id"])
    spec["resources_per_worker"] = {"cpu": 0.5, "threads": 1, "memory_gb": 0.25}
    plan = client_a.plan_job(spec)
    assert plan["fits"] is False
    assert any("resources_per_worker.memory_gb" in w for w in plan["warnings"])
    spec["num_workers"], spec["resources_per_worker"] = 64, {"cpu": 1}
    assert any("exceeds the cluster's" in w for w in client_a.plan_job(spec)["warnings"])


def test_cli_plan_prints_a_readable_summary(stack, tenant_a, bbc_dataset, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_spec(bbc_dataset["id"])))
    out = subprocess.run([str(BIN / "doctune"), "-o", "table", "jobs", "plan", str(path)], capture_output=True, text=True,
                         env={**os.environ, "DOCTUNE_HOME": stack.home, "DOCTUNE_API_KEY": tenant_a}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "GiB per worker" in out.stdout and "tokens per epoch" in out.stdout and "fits" in out.stdout
    bad = subprocess.run([str(BIN / "doctune"), "jobs", "plan", str(tmp_path / "missing.yaml")], capture_output=True,
                         text=True, env={**os.environ, "DOCTUNE_HOME": stack.home, "DOCTUNE_API_KEY": tenant_a}, timeout=120)
    assert bad.returncode != 0 and "cannot read" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
