"""The Kubernetes side of a Tenant, with the ``kubernetes`` client: its Namespace, ResourceQuota,
LimitRange, API-key Secret, and optionally a dedicated KubeRay ``RayCluster``.

The client is configured as kopf is: in-cluster (the operator's ServiceAccount) or from the
kubeconfig (``KUBECONFIG``). Creates are idempotent: an object that exists already is kept.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

import kopf

from operators.doctune_operator.api import KEY_SECRET, TENANT_LABEL

# the Tenant's quota fields (the API's QuotaSpec) that the namespace's ResourceQuota also enforces
_QUOTA_FIELDS = {"max_cpus": "requests.cpu", "max_gpus": "requests.nvidia.com/gpu"}


@functools.cache
def api_client():
    import os

    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:  # KUBECONFIG read now: the client reads it only when first imported
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.ApiClient()


def core():
    from kubernetes import client

    return client.CoreV1Api(api_client())


def custom():
    from kubernetes import client

    return client.CustomObjectsApi(api_client())


def _create(fn, *args, **kw) -> None:
    """Create an object; one that exists already (409) is left as it is."""
    from kubernetes.client.exceptions import ApiException

    try:
        fn(*args, **kw)
    except ApiException as exc:
        if exc.status != 409:
            raise kopf.TemporaryError(f"Kubernetes refused {fn.__name__}: {exc.status} {exc.reason}", delay=10) from None


def namespace(tenant: str, owner: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": tenant, "labels": {TENANT_LABEL: tenant, "app.kubernetes.io/managed-by": "doctune-operator"}}}
    # the Tenant owns its namespace: deleting it collects everything (not kopf.adopt: it would rename the
    # namespace with a generateName and give a cluster-scoped object a namespace)
    kopf.append_owner_reference(body, owner=owner)
    return body


def resource_quota(tenant: str, limits: dict[str, Any]) -> dict[str, Any]:
    """The namespace's ResourceQuota from the Tenant's quota (``maxCpus``, ``maxGpus``): what pods in the
    namespace (a dedicated RayCluster) may request together."""
    hard = {_QUOTA_FIELDS[k]: str(v) for k, v in limits.items() if k in _QUOTA_FIELDS and v is not None}
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "doctune", "namespace": tenant},
            "spec": {"hard": hard or {"pods": "100"}}}


def limit_range(tenant: str) -> dict[str, Any]:
    """Defaults for a container that names no resources, so the quota can count it."""
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "doctune", "namespace": tenant},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "1", "memory": "2Gi"},
                                 "defaultRequest": {"cpu": "250m", "memory": "512Mi"}}]}}


def key_secret(tenant: str, api_key: str, api_url: str) -> dict[str, Any]:
    data = {"api-key": api_key, "tenant": tenant, "api-url": api_url}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": KEY_SECRET, "namespace": tenant, "labels": {TENANT_LABEL: tenant}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def ray_cluster(tenant: str, image: str, ray_version: str, shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """A dedicated KubeRay RayCluster in the tenant's namespace: a head that runs no work, an autoscaled CPU
    group and, with ``gpu_workers``, a GPU group (one ``nvidia.com/gpu`` each); token auth from the tenant's
    own Secret ``doctune-ray-token``. ``shape``: the Tenant's ``spec.rayCluster`` (min_workers, max_workers,
    worker_cpus, worker_memory, gpu_workers)."""
    shape = shape or {}
    env = [{"name": "RAY_AUTH_MODE", "value": "token"},
           {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "doctune-ray-token", "key": "token"}}}]
    security = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

    def pod(name: str, cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
        limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
        return {"spec": {"containers": [{"name": name, "image": image, "env": env, "securityContext": security,
                                         "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}}]}}

    cpus, memory = str(shape.get("worker_cpus") or 2), str(shape.get("worker_memory") or "8Gi")
    groups = [{"groupName": "cpu", "replicas": int(shape.get("min_workers") or 0),
               "minReplicas": int(shape.get("min_workers") or 0), "maxReplicas": int(shape.get("max_workers") or 4),
               "rayStartParams": {}, "template": pod("ray-worker", cpus, memory)}]
    if shape.get("gpu_workers"):
        groups.append({"groupName": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": int(shape["gpu_workers"]),
                       "rayStartParams": {}, "template": pod("ray-worker", cpus, memory, gpus=1)})
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": "doctune", "namespace": tenant, "labels": {TENANT_LABEL: tenant}},
            "spec": {"rayVersion": ray_version, "enableInTreeAutoscaling": True,
                     "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": pod("ray-head", "1", "4Gi")},
                     "workerGroupSpecs": groups}}


def apply_tenant(tenant: str, owner: dict[str, Any], quota: dict[str, Any]) -> None:
    """Create the tenant's namespace, its ResourceQuota and its LimitRange."""
    _create(core().create_namespace, namespace(tenant, owner))
    _create(core().create_namespaced_resource_quota, tenant, resource_quota(tenant, quota))
    _create(core().create_namespaced_limit_range, tenant, limit_range(tenant))


def apply_key(tenant: str, api_key: str, api_url: str) -> None:
    _create(core().create_namespaced_secret, tenant, key_secret(tenant, api_key, api_url))


RAY_TOKEN_SECRET = "doctune-ray-token"


def head_address(tenant: str) -> str:
    """The Jobs API of the tenant's RayCluster ``doctune``: KubeRay's head Service ``<name>-head-svc``."""
    return f"http://doctune-head-svc.{tenant}.svc:8265"


def apply_ray_cluster(tenant: str, image: str, ray_version: str, token: str, shape: dict[str, Any]) -> str:
    """Create the tenant's Ray token Secret and RayCluster; returns the token the Secret holds (the one
    made first, when a retry or a resume offers a new one)."""
    token_secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": RAY_TOKEN_SECRET, "namespace": tenant},
                    "data": {"token": base64.b64encode(token.encode()).decode()}}
    _create(core().create_namespaced_secret, tenant, token_secret)
    _create(custom().create_namespaced_custom_object, "ray.io", "v1", tenant, "rayclusters",
            ray_cluster(tenant, image, ray_version, shape))
    secret = core().read_namespaced_secret(RAY_TOKEN_SECRET, tenant)
    return base64.b64decode(secret.data["token"]).decode()


def read_key(namespace_name: str) -> tuple[str, str] | None:
    """(tenant, API key) from the namespace's key Secret; None when it has none (yet)."""
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core().read_namespaced_secret(KEY_SECRET, namespace_name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise kopf.TemporaryError(f"cannot read Secret {namespace_name}/{KEY_SECRET}: {exc.status}", delay=10) from None
    data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
    return (data["tenant"], data["api-key"]) if "api-key" in data and "tenant" in data else None


def delete_namespace(name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        core().delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise kopf.TemporaryError(f"cannot delete Namespace {name}: {exc.status}", delay=10) from None
