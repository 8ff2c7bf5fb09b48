"""The doctune operator, really running (``kopf.testing.KopfRunner``), against kmock's Kubernetes API
emulator, with this session's real stack behind it: what a platform team sees with ``kubectl``.

A Tenant becomes an API tenant (with its quota) and a namespace holding its ResourceQuota,
LimitRange and API-key Secret; a FineTuneJob in that namespace trains on the local stack and its
status follows the job to Succeeded; deleting one mid-run cancels the job; a Sweep ends with its
leaderboard in status; a ModelDeployment of the trained model serves, and deleting it undeploys; a
bad spec ends Failed with the API's reason."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest

from doctune.client import DoctuneClient
from doctune.corpora import load_bbc_news
from doctune.data import to_jsonl

from .conftest import poll, tiny_job

pytest.importorskip("kopf")
pytest.importorskip("kmock")

from tests.operator.kube import KubeEmulator  # noqa: E402

GROUP, VERSION = "doctune.io", "v1alpha1"
TENANT = "team-kube"


@pytest.fixture(scope="module")
def kube(stack, tmp_path_factory):
    """kmock's API server, and the operator running against it as it would in the cluster."""
    from kopf.testing import KopfRunner

    env = {"DOCTUNE_API_URL": stack.api_url, "DOCTUNE_ADMIN_KEY": stack.admin_key, "DOCTUNE_OPERATOR_POLL_S": "1"}
    saved = {k: os.environ.get(k) for k in [*env, "KUBECONFIG"]}
    with KubeEmulator() as emulator:
        os.environ.update(env, KUBECONFIG=str(emulator.kubeconfig(Path(tmp_path_factory.mktemp("kube")) / "config")))
        try:
            with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "operators.doctune_operator.handlers"],
                            timeout=60) as runner:
                yield emulator
            assert runner.exit_code == 0, runner.output[-5000:]
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def kubectl(kube):
    from kubernetes import client

    api = kube.api_client()
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def cr(kind: str, name: str, spec: dict, namespace: str | None = TENANT) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": meta, "spec": spec}


def get_job(custom, name: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, TENANT, "finetunejobs", name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


@pytest.fixture(scope="module")
def tenant(stack, admin, kubectl):
    """Apply a Tenant; returns a client with the key the operator put in the namespace's Secret, and a
    dataset uploaded with it (datasets have no custom resource: a tenant uploads them with the CLI or console)."""
    custom, core = kubectl
    custom.create_cluster_custom_object(GROUP, VERSION, "tenants", cr("Tenant", TENANT, {
        "displayName": "Team Kube", "maxConcurrentJobs": 1, "maxQueuedJobs": 20}, namespace=None))
    poll(lambda: custom.get_cluster_custom_object(GROUP, VERSION, "tenants", TENANT).get("status", {}).get("state")
         == "Ready", 60, "the Tenant to be Ready")
    secret = core.read_namespaced_secret("doctune-api-key", TENANT)
    key = base64.b64decode(secret.data["api-key"]).decode()
    client = DoctuneClient(stack.api_url, key)
    dataset = client.upload_dataset("bbc-kube", "classification", {"data": to_jsonl(load_bbc_news(8))}, seed=3)
    return client, dataset


def test_a_tenant_gets_its_api_tenant_namespace_quota_limits_and_key(admin, kubectl, tenant):
    custom, core = kubectl
    owner = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", TENANT)
    ns = core.read_namespace(TENANT)
    assert [(o.kind, o.name, o.uid) for o in ns.metadata.owner_references] == [("Tenant", TENANT, owner["metadata"]["uid"])]
    assert ns.metadata.labels["doctune.io/tenant"] == TENANT
    assert core.read_namespaced_resource_quota("doctune", TENANT).spec.hard
    assert core.read_namespaced_limit_range("doctune", TENANT).spec.limits[0].default == {"cpu": "1", "memory": "2Gi"}
    api_tenant = admin.request("GET", f"/v1/tenants/{TENANT}")
    assert api_tenant["display_name"] == "Team Kube"
    assert tenant[0].list_jobs() == []  # the Secret's key is a working member key of this tenant


@pytest.fixture(scope="module")
def trained() -> dict:
    """What one test leaves for a later one (the tiny job's model)."""
    return {}


def test_a_finetunejob_trains_and_its_status_follows_to_succeeded(kubectl, tenant, trained):
    custom, _ = kubectl
    client, dataset = tenant
    custom.create_namespaced_custom_object(GROUP, VERSION, TENANT, "finetunejobs", cr(
        "FineTuneJob", "tiny", tiny_job(dataset["id"], num_workers=1, max_steps=4, eval_interval=2, checkpoint_interval=4)))
    seen: set[str] = set()

    def ended():
        status = (get_job(custom, "tiny") or {}).get("status") or {}
        seen.add(status.get("state", ""))
        return status.get("state") in ("Succeeded", "Failed", "Cancelled") and status

    status = poll(ended, 900, "the FineTuneJob to end", interval=1)
    job = client.get_job(status["jobId"])
    assert status["state"] == "Succeeded", (status, job["error"])
    assert job["status"] == "succeeded" and job["tenant"] == TENANT
    assert status["progressDetail"]["step"] == status["progressDetail"]["totalSteps"] == 4
    assert status["progress"].startswith("4/4 steps (100.0%)")
    assert status["metrics"] and status["modelId"] == job["model_id"]
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert (complete["status"], complete["reason"]) == ("True", "Succeeded") and complete["lastTransitionTime"]
    assert {"Queued", "Running"} & seen  # it was followed on the way, not only read at the end
    trained["model_id"] = job["model_id"]


def test_deleting_a_running_finetunejob_cancels_its_job(kubectl, tenant):
    custom, _ = kubectl
    client, dataset = tenant
    custom.create_namespaced_custom_object(GROUP, VERSION, TENANT, "finetunejobs", cr(
        "FineTuneJob", "long", tiny_job(dataset["id"], num_workers=1, max_steps=50000, eval_interval=100000,
                                        checkpoint_interval=100000)))
    running = poll(lambda: ((get_job(custom, "long") or {}).get("status") or {}).get("state") == "Running"
                   and get_job(custom, "long")["status"], 600, "the long FineTuneJob to run", interval=1)
    custom.delete_namespaced_custom_object(GROUP, VERSION, TENANT, "finetunejobs", "long")
    poll(lambda: get_job(custom, "long") is None, 60, "the finalizer to let the FineTuneJob go")
    job = poll(lambda: (j := client.get_job(running["jobId"]))["status"] in ("cancelled", "failed", "succeeded") and j,
               120, "the job to end")
    assert job["status"] == "cancelled"


def get(custom, plural: str, name: str) -> dict:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, TENANT, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return {"gone": True}
        raise


@pytest.mark.full  # a sweep of Ray Tune trials through its resource: `make test-full` (CI keeps to 20 minutes)
def test_a_sweep_ends_with_its_leaderboard_in_status(kubectl, tenant):
    custom, _ = kubectl
    client, dataset = tenant
    job = tiny_job(dataset["id"], num_workers=1, max_steps=4, eval_interval=2, checkpoint_interval=4)
    job.pop("learning_rate")
    custom.create_namespaced_custom_object(GROUP, VERSION, TENANT, "sweeps", cr("Sweep", "lr", {
        "job": job, "algorithm": "grid", "max_concurrent_trials": 2,  # side by side: the wait is one trial long
        "search_space": {"learning_rate": {"type": "choice", "values": [1e-3, 2e-3]}}}))
    status = poll(lambda: (s := get(custom, "sweeps", "lr").get("status") or {}).get("state")
                  in ("Succeeded", "Failed", "Cancelled") and s, 900, "the Sweep to end", interval=2)
    board = client.sweep_leaderboard(status["sweepId"])
    assert status["state"] == "Succeeded" and board["status"] == "succeeded"
    assert status["progress"] == "2/2 trials ended" and status["bestJobId"] == board["best_job_id"]
    assert [(r["rank"], r["job_id"]) for r in status["leaderboard"]] == [(r["rank"], r["job_id"]) for r in board["trials"]]
    assert all(r["status"] == "succeeded" and r["model_id"] for r in status["leaderboard"])


def test_a_modeldeployment_serves_and_deleting_it_undeploys(kubectl, tenant, trained):
    custom, _ = kubectl
    client, _ = tenant
    custom.create_namespaced_custom_object(GROUP, VERSION, TENANT, "modeldeployments", cr("ModelDeployment", "news", {
        "model_id": trained["model_id"], "min_replicas": 1, "max_replicas": 1, "num_cpus": 0.25}))
    status = poll(lambda: (s := get(custom, "modeldeployments", "news").get("status") or {}).get("state")
                  in ("Running", "Failed") and s, 600, "the ModelDeployment to run", interval=2)
    assert status["state"] == "Running", status
    assert status["url"].endswith(f"/{TENANT}/news/predict")
    r = httpx.post(status["url"], json={"inputs": ["Shares in the bank rose after its profits doubled."]},
                   headers={"Authorization": client.http.headers["Authorization"]}, timeout=120)
    assert r.status_code == 200 and r.json()["model_id"] == trained["model_id"], r.text
    custom.delete_namespaced_custom_object(GROUP, VERSION, TENANT, "modeldeployments", "news")
    poll(lambda: get(custom, "modeldeployments", "news").get("gone"), 60, "the finalizer to let it go")
    poll(lambda: client.get_deployment(status["deploymentId"])["status"] == "deleted", 300, "the undeploy")


def test_a_bad_spec_ends_failed_with_the_reason(kubectl, tenant):
    custom, _ = kubectl
    _, dataset = tenant
    custom.create_namespaced_custom_object(GROUP, VERSION, TENANT, "finetunejobs", cr(
        "FineTuneJob", "bad", tiny_job(dataset["id"], learning_rate=-1.0)))
    status = poll(lambda: ((get_job(custom, "bad") or {}).get("status") or {}).get("state") == "Failed"
                  and get_job(custom, "bad")["status"], 60, "the bad FineTuneJob to fail")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "learning_rate" in ready["message"] and "jobId" not in status


def test_a_tenant_with_its_own_ray_cluster_gets_it_registered_with_the_api(admin, kubectl):
    """The operator makes the tenant's RayCluster and its Ray token, and registers the head Service
    with the API: the tenant's jobs and sweeps now go there; the token is never shown."""
    custom, core = kubectl
    name = "team-kube-ray"
    custom.create_cluster_custom_object(GROUP, VERSION, "tenants", cr("Tenant", name, {
        "displayName": "Team Kube Ray", "rayCluster": {"enabled": True, "maxWorkers": 2}}, namespace=None))
    shown = poll(lambda: (admin.request("GET", f"/v1/tenants/{name}").get("ray_cluster") if any(
        t["id"] == name for t in admin.list_tenants()) else None), 120, "the tenant's Ray cluster to be registered")
    assert shown["address"] == f"http://doctune-head-svc.{name}.svc:8265"
    token = base64.b64decode(core.read_namespaced_secret("doctune-ray-token", name).data["token"]).decode()
    assert custom.get_namespaced_custom_object("ray.io", "v1", name, "rayclusters", "doctune")["spec"]["headGroupSpec"]
    assert token and token not in str(admin.request("GET", f"/v1/tenants/{name}"))
    custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
    poll(lambda: admin.request("GET", f"/v1/tenants/{name}")["ray_cluster"] is None, 120,
         "the deleted Tenant's Ray cluster to be unregistered")
