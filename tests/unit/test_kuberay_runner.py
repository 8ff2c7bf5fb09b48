"""KubeRayRunner against kmock's Kubernetes API emulator: the RayJob it makes is valid against
KubeRay's CRD (no field a real API server would prune), owned, queued for Kueue, carries no
credential, reports the RayJob's status, and is gone after stop."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("kmock")
pytest.importorskip("kubernetes")

from doctune.config import Settings  # noqa: E402
from doctune.errors import DoctuneError  # noqa: E402
from doctune.runners import runner_for  # noqa: E402
from doctune.runners.kuberay import KubeRayRunner, rayjob_name  # noqa: E402
from doctune.states import AttemptState  # noqa: E402
from tests.operator.kube import KubeEmulator, crd_schema, validate  # noqa: E402

NS = "doctune"
SECRETS = {"database_url": "postgresql://doctune:pg-s3cret@db/doctune", "s3_access_key": "minio-root",
           "s3_secret_key": "minio-s3cret", "admin_key": "dtk_admin_s3cret"}


@pytest.fixture(scope="module")
def kube():
    with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def api(kube):
    from kubernetes import client

    custom = client.CustomObjectsApi(kube.api_client())
    custom.create_namespaced_custom_object("apps", "v1", NS, "deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "doctune-api", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {}}})
    return custom


def settings(**overrides) -> Settings:
    values = dict(runner="rayjob", kube_namespace=NS, rayjob_image="ghcr.io/example/doctune:0.1.0",
                  rayjob_queue="team-a", rayjob_owner="apps/v1/deployments/doctune-api",
                  rayjob_env_secret="doctune-job-env", rayjob_ttl_s=120, rayjob_backoff_limit=1,
                  api_url="http://doctune-api:8000", bucket="doctune", **SECRETS)
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def runner(kube, api):
    return KubeRayRunner(settings(), api_client=kube.api_client())


def test_the_setting_picks_the_adapter_and_an_image_is_required(kube):
    assert isinstance(runner_for(settings()), KubeRayRunner)
    with pytest.raises(DoctuneError) as err:
        KubeRayRunner(settings(rayjob_image=""), api_client=kube.api_client()).submit("ray_jobs.finetune", [])
    assert err.value.field == "rayjob_image" and "DOCTUNE_RAYJOB_IMAGE" in err.value.message


def test_a_run_is_a_schema_valid_owned_queued_rayjob_without_credentials(runner, api):
    sid = runner.submit("ray_jobs.finetune", ["--job-id", "job_01ABC"], submission_id="job_01ABC-attempt-1")
    assert sid == "job_01ABC-attempt-1"
    job = api.get_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", rayjob_name(sid))
    sent = {k: v for k, v in job.items() if k != "status"}
    sent["metadata"] = {k: v for k, v in job["metadata"].items() if k not in ("uid", "resourceVersion", "creationTimestamp")}
    assert validate(sent, crd_schema("ray.io_rayjobs.yaml", "v1")) == []

    owner = api.get_namespaced_custom_object("apps", "v1", NS, "deployments", "doctune-api")
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "doctune-api",
                                                   "uid": owner["metadata"]["uid"], "controller": True,
                                                   "blockOwnerDeletion": True}]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    spec = job["spec"]
    assert spec["suspend"] is True  # Kueue admits it
    assert (spec["shutdownAfterJobFinishes"], spec["ttlSecondsAfterFinished"], spec["backoffLimit"]) == (True, 120, 1)
    assert spec["entrypoint"] == "python -m ray_jobs.finetune --job-id job_01ABC" and spec["jobId"] == sid
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["envFrom"] == [{"secretRef": {"name": "doctune-job-env"}}]
    assert {"name": "DOCTUNE_CREDENTIALS_FROM_ENV", "value": "1"} in head["env"]
    text = json.dumps(job)
    assert not [name for name, value in SECRETS.items() if value in text]


def test_status_follows_the_rayjob_and_stop_cleans_it_up(runner, api):
    sid = runner.submit("ray_jobs.sweep", ["--sweep-id", "swp_1"], submission_id="swp_1")
    name = rayjob_name(sid)
    assert runner.status(sid).state == AttemptState.PENDING

    def report(**status):
        api.patch_namespaced_custom_object_status("ray.io", "v1", NS, "rayjobs", name, {"status": status})

    report(jobDeploymentStatus="Running", jobStatus="RUNNING")
    assert runner.status(sid).state == AttemptState.RUNNING
    report(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED", message="Job finished successfully.")
    assert runner.status(sid) .state == AttemptState.SUCCEEDED
    report(jobDeploymentStatus="Failed", jobStatus=None, reason="DeadlineExceeded", message="the cluster did not start")
    assert runner.status(sid).state == AttemptState.FAILED and "did not start" in runner.status(sid).message

    runner.stop(sid)
    assert name not in [j["metadata"]["name"] for j in api.list_namespaced_custom_object("ray.io", "v1", NS, "rayjobs")["items"]]
    assert runner.status(sid).state == AttemptState.UNKNOWN
    runner.stop(sid)  # stopping what is gone is no error


def test_names_are_dns_safe():
    assert rayjob_name("Job_01ABC.attempt:2") == "dt-job-01abc-attempt-2"
    assert len(rayjob_name("x" * 200)) <= 50


def test_resources_are_the_nodes_allocatable_less_the_runs_in_flight(kube, runner, api):
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                      "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "1"}}})
    res = runner.resources()
    assert (res.cpus, res.gpus, res.memory_bytes) == (16.0, 1.0, 64 * 2**30)
    in_flight = [j for j in api.list_namespaced_custom_object("ray.io", "v1", NS, "rayjobs")["items"]]
    assert res.cpus_used == len(in_flight) * (1 + 4 * 2.0)
