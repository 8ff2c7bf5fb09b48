"""The operator's pure parts: an API error becomes the kopf error that says whether a retry helps,
a resource's spec keys become the API's, and a job's state becomes a status with conditions."""

from __future__ import annotations

import httpx
import pytest

kopf = pytest.importorskip("kopf")

from doctune.errors import DoctuneError  # noqa: E402
from operators.doctune_operator import api  # noqa: E402
from operators.doctune_operator.handlers import keep_times  # noqa: E402


@pytest.mark.parametrize("error,kind,reason", [
    (DoctuneError("learning_rate must be > 0", "invalid_spec", errors=[{"field": "learning_rate", "message": "> 0"}]),
     kopf.PermanentError, "InvalidSpec"),
    (DoctuneError("dataset ds_1 not found", "not_found"), kopf.PermanentError, "Failed"),
    (DoctuneError("tenant team-a has 20 queued jobs", "quota_exceeded"), kopf.TemporaryError, "QuotaExceeded"),
    (DoctuneError("database down", "unavailable"), kopf.TemporaryError, "ApiUnavailable"),
    (DoctuneError("HTTP 502: bad gateway", "internal"), kopf.TemporaryError, "ApiUnavailable"),
    (httpx.ConnectError("connection refused"), kopf.TemporaryError, "ApiUnavailable"),
])
def test_api_errors_become_permanent_or_temporary_with_a_reason(error, kind, reason):
    with pytest.raises(kind) as raised:
        with api.kopf_errors("submitting the job"):
            raise error
    assert api.reason_of(raised.value) == reason
    assert str(raised.value).startswith("submitting the job: ")
    if kind is kopf.TemporaryError:
        assert raised.value.delay >= 10
    status = api.failed_status(raised.value)
    assert status["conditions"][0]["reason"] == reason and status["conditions"][0]["status"] == "False"


def test_an_invalid_spec_names_its_fields():
    err = DoctuneError("the job spec is invalid", "invalid_spec",
                       errors=[{"field": "learning_rate", "message": "must be greater than 0"}])
    with pytest.raises(kopf.PermanentError) as raised:
        with api.kopf_errors("submitting the job"):
            raise err
    assert "learning_rate: must be greater than 0" in str(raised.value)


def test_spec_keys_in_either_case_become_the_apis():
    assert api.snake({"baseModel": "x", "tuning": {"loraSpec": {"targetModules": ["query"]}}, "max_steps": 4}) == \
        {"base_model": "x", "tuning": {"lora_spec": {"target_modules": ["query"]}}, "max_steps": 4}


def test_a_job_becomes_a_status_with_progress_metrics_and_conditions():
    running = api.job_status({"id": "job_1", "status": "running", "metrics": {"dev": {"accuracy": 0.5}},
                              "progress": {"phase": "training", "step": 5, "total_steps": 20, "loss": 1.2}})
    assert running["state"] == "Running" and running["progressDetail"]["percent"] == 25.0
    assert running["progress"] == "5/20 steps (25.0%), loss 1.2" and running["id"] == running["jobId"] == "job_1"
    assert running["metrics"] == {"dev.accuracy": 0.5}
    assert [(c["type"], c["status"], c["reason"]) for c in running["conditions"]] == \
        [("Submitted", "True", "Submitted"), ("Ready", "True", "Running")]
    failed = api.job_status({"id": "job_1", "status": "failed", "error": {"message": "out of memory"}, "progress": {}})
    assert failed["conditions"][1] == {**failed["conditions"][1], "type": "Complete", "status": "False",
                                       "reason": "Failed", "message": "out of memory"}


def test_a_condition_keeps_its_transition_time_until_it_changes():
    old = {"conditions": [api.condition("Ready", True, "Running", "training") | {"lastTransitionTime": "T0"}]}
    same = keep_times(old, {"conditions": [api.condition("Ready", True, "Running", "step 5")]})
    assert same["conditions"][0]["lastTransitionTime"] == "T0"
    moved = keep_times(old, {"conditions": [api.condition("Ready", False, "Succeeded", "done")]})
    assert moved["conditions"][0]["lastTransitionTime"] != "T0"


def test_a_sweep_board_becomes_a_leaderboard():
    board = {"sweep_id": "swp_1", "metric": "accuracy", "mode": "max", "status": "running", "best_job_id": "job_2",
             "trials": [{"rank": 1, "job_id": "job_2", "status": "succeeded", "dev": 0.9, "test": 0.8, "model_id": "m",
                         "steps": 4, "settings": {"learning_rate": 0.001}},
                        {"rank": 2, "job_id": "job_3", "status": "running", "dev": None, "test": None,
                         "model_id": None, "steps": 2, "settings": {}}]}
    status = api.sweep_status(board)
    assert status["state"] == "Running" and status["bestJobId"] == "job_2"
    assert status["progress"] == "1/2 trials ended" and status["id"] == "swp_1"
    assert status["leaderboard"][0] == {"rank": 1, "job_id": "job_2", "status": "succeeded", "dev": 0.9, "test": 0.8,
                                        "model_id": "m", "steps": 4}


def test_a_tenants_dedicated_raycluster_is_valid_against_kuberays_crd():
    from operators.doctune_operator import cluster
    from tests.operator.kube import crd_schema, validate

    body = cluster.ray_cluster("team-a", "ghcr.io/example/doctune:0.1.0", "2.60.0",
                               {"enabled": True, "min_workers": 1, "max_workers": 8, "worker_cpus": 4,
                                "worker_memory": "16Gi", "gpu_workers": 2})
    assert validate(body, crd_schema("ray.io_rayclusters.yaml", "v1")) == []
    assert body["metadata"]["namespace"] == "team-a" and body["spec"]["enableInTreeAutoscaling"] is True
    cpu, gpu = body["spec"]["workerGroupSpecs"]
    assert (cpu["minReplicas"], cpu["maxReplicas"], gpu["maxReplicas"]) == (1, 8, 2)
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for group in [body["spec"]["headGroupSpec"], *body["spec"]["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        assert container["securityContext"]["runAsNonRoot"] and container["resources"]["limits"]
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"]
