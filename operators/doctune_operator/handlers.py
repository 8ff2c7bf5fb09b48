"""The kopf handlers: ``kopf run -m operators.doctune_operator.handlers --all-namespaces``.

Environment: ``DOCTUNE_API_URL`` (the API Service), ``DOCTUNE_ADMIN_KEY`` (only Tenants use it),
``DOCTUNE_OPERATOR_POLL_S`` (how often an unfinished object's state is read; default 10),
``DOCTUNE_RAY_IMAGE`` and ``DOCTUNE_RAY_VERSION`` (a Tenant's dedicated RayCluster).

Each namespaced resource acts as the tenant whose key Secret its namespace holds (a Tenant's
handler made it). Deleting a resource cancels (a job, a sweep) or undeploys (a deployment) its
object first: kopf's finalizer ``doctune.io/finalizer`` holds the resource until that is done.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any, Callable

import kopf

from doctune.client import DoctuneClient
from doctune.errors import DoctuneError
from operators.doctune_operator import api, cluster
from operators.doctune_operator.api import ENDED, GROUP, VERSION, kopf_errors

QUOTA_FIELDS = ("weight", "max_concurrent_jobs", "max_cpus", "max_gpus", "max_storage_bytes", "max_deployments",
                "max_trials", "max_queued_jobs", "max_keys")
ENDED_STATES = {api.state_name(s) for s in ENDED} | {"Failed"}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "doctune.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="doctune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="doctune.io")
    settings.posting.level = logging.WARNING
    api.api_url()  # fail at start, with the fix, when the API's address is missing


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, its ServiceAccount; elsewhere the kubeconfig that ``KUBECONFIG`` names (read now, not at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


# ---------------------------------------------------------------------------------------------- Tenant
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.resume(GROUP, VERSION, "tenants")
def tenant_created(name: str, spec: dict, body: dict, patch: kopf.Patch, **_: Any) -> None:
    """The API's tenant (with its quota), then its Namespace, ResourceQuota, LimitRange and key Secret."""
    spec = api.snake(dict(spec))
    quota = {k: spec[k] for k in QUOTA_FIELDS if k in spec}
    cluster.apply_tenant(name, body, quota)  # first: a retry after a Kubernetes error makes no second key
    if cluster.read_key(name) is None:
        cluster.apply_key(name, _tenant_key(name, spec.get("display_name")), api.api_url())
    if quota:
        with kopf_errors("setting the tenant's quota"):
            api.admin_client().request("PUT", f"/v1/tenants/{name}/quota", json=quota)
    if (spec.get("ray_cluster") or {}).get("enabled"):
        apply_ray_cluster(name, spec["ray_cluster"])
    patch.status.update({"state": "Ready", "namespace": name,
                         "conditions": [api.condition("Ready", True, "Ready", f"namespace {name} and its API key are ready")]})


def _tenant_key(name: str, display_name: str | None) -> str:
    """A member key of tenant ``name``: made with the tenant, or a new one when the tenant exists already."""
    admin = api.admin_client()
    with kopf_errors(f"creating tenant {name}"):
        try:
            return admin.create_tenant(name, display_name)["api_key"]
        except DoctuneError as exc:
            if exc.code != "conflict":
                raise
            return admin.request("POST", "/v1/keys", json={"tenant": name, "role": "member"})["api_key"]


def apply_ray_cluster(name: str, shape: dict[str, Any]) -> None:
    """With ``rayCluster.enabled``: the tenant's RayCluster, registered with the API so that the tenant's
    jobs and sweeps run there. Without it: unregistered (new work goes to the shared cluster); the
    RayCluster itself is left for its jobs to finish."""
    admin = api.admin_client()
    if not shape.get("enabled"):
        ignore_ended(lambda: admin.remove_ray_cluster(name))
        return
    token = cluster.apply_ray_cluster(name, os.environ.get("DOCTUNE_RAY_IMAGE", "rayproject/ray:2.60.0-py311"),
                                      os.environ.get("DOCTUNE_RAY_VERSION", "2.60.0"), secrets.token_urlsafe(32), shape)
    with kopf_errors(f"registering tenant {name}'s Ray cluster"):
        admin.set_ray_cluster(name, cluster.head_address(name), token)


@kopf.on.update(GROUP, VERSION, "tenants", field="spec")
def tenant_updated(name: str, spec: dict, old: dict, **_: Any) -> None:
    snake = api.snake(dict(spec))
    quota = {k: v for k, v in snake.items() if k in QUOTA_FIELDS}
    if quota:
        with kopf_errors("setting the tenant's quota"):
            api.admin_client().request("PUT", f"/v1/tenants/{name}/quota", json=quota)
    was = api.snake(dict(old or {})).get("ray_cluster") or {}  # with field="spec", old is the old spec
    if snake.get("ray_cluster") or was.get("enabled"):
        apply_ray_cluster(name, snake.get("ray_cluster") or {})


@kopf.on.delete(GROUP, VERSION, "tenants")
def tenant_deleted(name: str, **_: Any) -> None:
    """Revoke the tenant's keys and delete its namespace (its resources go with it); the API keeps the
    tenant's record, models and history."""
    admin = api.admin_client()
    ignore_ended(lambda: admin.remove_ray_cluster(name))  # its new work would have nowhere to run
    with kopf_errors(f"revoking tenant {name}'s keys"):
        for key in admin.list_keys():
            if key.get("tenant") == name and not key.get("revoked_at"):
                admin.request("DELETE", f"/v1/keys/{key['id']}")
    cluster.delete_namespace(name)


# ------------------------------------------------------------------------------------- shared helpers
def namespace_client(namespace: str, patch: kopf.Patch) -> DoctuneClient:
    found = cluster.read_key(namespace)
    if found is None:
        message = (f"namespace {namespace} has no Secret {api.KEY_SECRET}: apply a Tenant named {namespace} "
                   "(kind: Tenant, apiVersion: doctune.io/v1alpha1) first")
        patch.status.update({"state": "Pending", "conditions": [api.condition("Ready", False, "TenantNotReady", message)]})
        raise kopf.TemporaryError(message, delay=10)
    return api.tenant_client(found[1])


def submit(what: str, call, patch: kopf.Patch) -> dict[str, Any]:
    """Make the API call; when it fails, say why in the status before kopf retries or gives up."""
    try:
        with kopf_errors(what):
            return call()
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        failed = api.failed_status(exc)
        if isinstance(exc, kopf.TemporaryError):
            failed["state"] = "Pending"
        patch.status.update(failed)
        raise


def keep_times(old: dict, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` status with each condition's lastTransitionTime kept when its status and reason did not change."""
    before = {c.get("type"): c for c in old.get("conditions") or []}
    for c in new.get("conditions") or []:
        prev = before.get(c["type"])
        if prev and prev.get("status") == c["status"] and prev.get("reason") == c["reason"]:
            c["lastTransitionTime"] = prev.get("lastTransitionTime", c["lastTransitionTime"])
    return new


def unfinished(id_field: str):
    return lambda status, **_: bool(status.get(id_field)) and status.get("state") not in ENDED_STATES


def ignore_ended(call) -> None:
    """Cancel or undeploy; an object that already ended (409) or is gone (404) needs nothing more."""
    try:
        with kopf_errors("cleaning up"):
            call()
    except kopf.PermanentError as exc:
        if "[conflict]" not in str(exc) and "[not_found]" not in str(exc):
            raise


def cancel_unfinished(namespace: str, status: dict, id_key: str, cancel: Callable[[Any, str], Any]) -> None:
    """A deleted resource's job or sweep (``status[id_key]``) is cancelled unless it has ended."""
    found = cluster.read_key(namespace)
    if status.get(id_key) and status.get("state") not in ENDED_STATES and found:
        ignore_ended(lambda: cancel(api.tenant_client(found[1]), status[id_key]))


# ------------------------------------------------------------------------------------- FineTuneJob
@kopf.on.create(GROUP, VERSION, "finetunejobs")
def job_created(namespace: str, spec: dict, status: dict, patch: kopf.Patch, **_: Any) -> None:
    if status.get("jobId"):
        return
    client = namespace_client(namespace, patch)
    job = submit("submitting the job", lambda: client.submit_job(api.snake(dict(spec))), patch)
    patch.status.update(api.job_status(job))


@kopf.timer(GROUP, VERSION, "finetunejobs", interval=api.poll_interval(), when=unfinished("jobId"))
def job_polled(namespace: str, status: dict, patch: kopf.Patch, **_: Any) -> None:
    client = namespace_client(namespace, patch)
    with kopf_errors("reading the job"):
        job = client.get_job(status["jobId"])
    patch.status.update(keep_times(status, api.job_status(job)))


@kopf.on.delete(GROUP, VERSION, "finetunejobs")
def job_deleted(namespace: str, status: dict, **_: Any) -> None:
    cancel_unfinished(namespace, status, "jobId", lambda client, job_id: client.cancel_job(job_id))


# ------------------------------------------------------------------------------------------- Sweep
@kopf.on.create(GROUP, VERSION, "sweeps")
def sweep_created(namespace: str, spec: dict, status: dict, patch: kopf.Patch, **_: Any) -> None:
    if status.get("sweepId"):
        return
    client = namespace_client(namespace, patch)
    sweep = submit("submitting the sweep", lambda: client.submit_sweep(api.snake(dict(spec))), patch)
    patch.status.update({"state": api.state_name(sweep["status"]), "sweepId": sweep["id"],
                         "conditions": [api.condition("Submitted", True, "Submitted", f"sweep {sweep['id']}")]})


@kopf.timer(GROUP, VERSION, "sweeps", interval=api.poll_interval(), when=unfinished("sweepId"))
def sweep_polled(namespace: str, status: dict, patch: kopf.Patch, **_: Any) -> None:
    client = namespace_client(namespace, patch)
    with kopf_errors("reading the sweep's leaderboard"):
        board = client.sweep_leaderboard(status["sweepId"])
    patch.status.update(keep_times(status, api.sweep_status(board)))


@kopf.on.delete(GROUP, VERSION, "sweeps")
def sweep_deleted(namespace: str, status: dict, **_: Any) -> None:
    cancel_unfinished(namespace, status, "sweepId", lambda client, sweep_id: client.cancel_sweep(sweep_id))


# --------------------------------------------------------------------------------- ModelDeployment
@kopf.on.create(GROUP, VERSION, "modeldeployments")
@kopf.on.update(GROUP, VERSION, "modeldeployments", field="spec")
def deployment_applied(name: str, namespace: str, spec: dict, patch: kopf.Patch, **_: Any) -> None:
    """Deploy the model at endpoint ``spec.name`` (default: the resource's name); with ``spec.promotion``
    (``sweepId``, ``metric``, ``force``) only when the challenger beats the model served there now.
    ``spec.retrain`` (the endpoint's retrain policy) is passed through either way."""
    client = namespace_client(namespace, patch)
    body = api.snake(dict(spec))
    endpoint = body.pop("name", None) or name
    promotion = body.pop("promotion", None)
    if promotion is None:
        dep = submit("deploying the model", lambda: client.deploy(body.pop("model_id", None), endpoint, **body), patch)
        patch.status.update(api.deployment_status(dep))
        return
    model_id = body.pop("model_id", None)
    retrain = body.pop("retrain", None)  # the endpoint's, whatever the promotion decides: set on its own below
    result = submit("promoting the model", lambda: client.promote(
        endpoint, model_id=None if promotion.get("sweep_id") else model_id, sweep_id=promotion.get("sweep_id"),
        force=bool(promotion.get("force")), metric=promotion.get("metric"), **body), patch)
    if result.get("deployment"):
        dep_id = result["deployment"]["id"]
        result["deployment"] = submit("setting the retrain policy",
                                      lambda: client.set_retrain_policy(dep_id, retrain), patch)
    status = api.deployment_status(result["deployment"]) if result.get("deployment") else {"state": "Pending"}
    status["promotion"] = {"decision": result.get("decision"), "summary": str(result.get("summary") or "")[:1000]}
    patch.status.update(status)


@kopf.timer(GROUP, VERSION, "modeldeployments", interval=api.poll_interval(), when=unfinished("deploymentId"))
def deployment_polled(namespace: str, status: dict, patch: kopf.Patch, **_: Any) -> None:
    client = namespace_client(namespace, patch)
    with kopf_errors("reading the deployment"):
        dep = client.get_deployment(status["deploymentId"])
    patch.status.update(keep_times(status, api.deployment_status(dep)))


@kopf.on.delete(GROUP, VERSION, "modeldeployments")
def deployment_deleted(namespace: str, status: dict, **_: Any) -> None:
    found = cluster.read_key(namespace)
    if status.get("deploymentId") and status.get("state") not in ENDED_STATES and found:
        ignore_ended(lambda: api.tenant_client(found[1]).delete_deployment(status["deploymentId"]))
