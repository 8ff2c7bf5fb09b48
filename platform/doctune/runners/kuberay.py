"""The KubeRay adapter of the Runner port (``DOCTUNE_RUNNER=rayjob``): each run is a KubeRay
``RayJob`` (``ray.io/v1``) with a Ray cluster of its own, made with the ``kubernetes`` client.

- The RayJob is named after the submission id (``dt-<id>``, DNS-safe), runs ``python -m module
  args`` on a head and an autoscaled CPU (or GPU) worker group, shuts its cluster down when the
  driver ends (``shutdownAfterJobFinishes``), is deleted by KubeRay ``rayjob_ttl_s`` after it
  finished, and is retried ``rayjob_backoff_limit`` times by KubeRay.
- It is owned (``ownerReferences``) by ``rayjob_owner`` (e.g. the API's Deployment), so removing
  the platform removes every RayJob and, through KubeRay's own ownership, their clusters.
- With ``rayjob_queue`` it carries ``kueue.x-k8s.io/queue-name`` and is created suspended, so
  Kueue admits it under the cluster's quotas.
- The job's credentials never enter the RayJob: its pods take them from the Secret
  ``rayjob_env_secret`` (``envFrom``); the RayJob names only where the components are.
- :meth:`status` reads ``status.jobStatus`` (the Ray job) and ``status.jobDeploymentStatus``
  (KubeRay's view); :meth:`stop` deletes the RayJob (its cluster goes with it), after which the
  submission reads ``UNKNOWN``, as a run the cluster no longer knows.
- Serve applications need a long-lived cluster: :meth:`deploy_app`, :meth:`delete_app` and
  :meth:`applications` go to the shared Ray head (the chart's RayCluster) through
  :class:`RayJobsRunner`.
"""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path
from typing import Any

from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.runners.base import AttemptStatus, ClusterResources
from doctune.runners.jobs_api import RayJobsRunner
from doctune.states import AttemptState

__all__ = ["KubeRayRunner", "rayjob_name"]

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
SUBMISSION = "doctune.io/submission-id"
_JOB_STATES = {"PENDING": AttemptState.PENDING, "RUNNING": AttemptState.RUNNING,
               "SUCCEEDED": AttemptState.SUCCEEDED, "FAILED": AttemptState.FAILED, "STOPPED": AttemptState.STOPPED}
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_ACTIVE = ("", "New", "Initializing", "Waiting", "Running", "Suspending", "Retrying")


def rayjob_name(submission_id: str) -> str:
    """A DNS-1123 name for the submission's RayJob: ``dt-`` and the id, lowercased, at most 50
    characters (KubeRay appends suffixes to name the cluster and the submitter)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", submission_id.lower()).strip("-")
    return f"dt-{slug}"[:50].rstrip("-")


def _quantity(value: str) -> float:
    """A Kubernetes quantity ("2", "500m", "16Gi") as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value).strip())
    if not match:
        return 0.0
    return float(match.group(1)) * units.get(match.group(2), 1.0)


class KubeRayRunner:
    def __init__(self, settings: Settings, api_client: Any = None) -> None:
        self.settings = settings
        self._api_client = api_client
        self._owner: dict[str, Any] | None = None
        self.shared = RayJobsRunner(settings)

    # ---------------------------------------------------------------- the Kubernetes API
    def api_client(self):
        if self._api_client is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                import os

                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
            self._api_client = client.ApiClient()
        return self._api_client

    def custom(self):
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client())

    @property
    def namespace(self) -> str:
        if self.settings.kube_namespace:
            return self.settings.kube_namespace
        return _SA_NAMESPACE.read_text().strip() if _SA_NAMESPACE.exists() else "default"

    def _call(self, what: str, fn, *args, **kw):
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DoctuneError(f"Kubernetes refused to {what}: {exc.status} {exc.reason}", "unavailable") from None

    # ---------------------------------------------------------------- the RayJob
    def owner_reference(self) -> list[dict[str, Any]]:
        """The owner every RayJob names (read once: its uid), or none when ``rayjob_owner`` is unset."""
        if not self.settings.rayjob_owner:
            return []
        if self._owner is None:
            group, version, plural, name = (self.settings.rayjob_owner.split("/") + ["", "", "", ""])[:4]
            body = self._call(f"read the owner {self.settings.rayjob_owner}", self.custom().get_namespaced_custom_object,
                              group, version, self.namespace, plural, name) if name else None
            if not body:
                raise DoctuneError(f"DOCTUNE_RAYJOB_OWNER={self.settings.rayjob_owner!r} names no object in namespace "
                                   f"{self.namespace}: give <group>/<version>/<plural>/<name>, e.g. "
                                   "apps/v1/deployments/doctune-api", "unavailable", field="rayjob_owner")
            self._owner = {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": name,
                           "uid": body["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
        return [self._owner]

    def pod_template(self, role: str, cpus: float, memory: str, gpus: int = 0) -> dict[str, Any]:
        s = self.settings
        env = [{"name": k, "value": v} for k, v in sorted(s.ray_process_env().items()) if v]
        limits = {"cpu": str(cpus), "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
        container = {
            "name": role, "image": s.rayjob_image, "env": env,
            "resources": {"requests": {"cpu": str(cpus), "memory": memory}, "limits": limits},
            "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
        }
        if s.rayjob_env_secret:
            container["envFrom"] = [{"secretRef": {"name": s.rayjob_env_secret}}]
        return {"metadata": {"labels": {"app.kubernetes.io/managed-by": "doctune"}}, "spec": {"containers": [container]}}

    def rayjob(self, module: str, args: list[str], submission_id: str) -> dict[str, Any]:
        """The RayJob manifest of one run."""
        s = self.settings
        if not s.rayjob_image:
            raise DoctuneError("the rayjob runner needs DOCTUNE_RAYJOB_IMAGE: the doctune image its Ray pods run",
                               "unavailable", field="rayjob_image")
        labels = {"app.kubernetes.io/managed-by": "doctune", "app.kubernetes.io/component": "run"}
        if s.rayjob_queue:
            labels["kueue.x-k8s.io/queue-name"] = s.rayjob_queue
        workers = {"groupName": "gpu" if s.rayjob_worker_gpus else "cpu", "replicas": 1, "minReplicas": 0,
                   "maxReplicas": s.rayjob_max_workers,
                   "rayStartParams": {"num-cpus": str(int(s.rayjob_worker_cpus))},
                   "template": self.pod_template("ray-worker", s.rayjob_worker_cpus, s.rayjob_worker_memory,
                                                 s.rayjob_worker_gpus)}
        return {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RayJob",
            "metadata": {"name": rayjob_name(submission_id), "namespace": self.namespace, "labels": labels,
                         "annotations": {SUBMISSION: submission_id}, "ownerReferences": self.owner_reference()},
            "spec": {
                "entrypoint": " ".join(["python", "-m", module, *map(shlex.quote, args)]),
                "jobId": submission_id,
                "shutdownAfterJobFinishes": True,
                "ttlSecondsAfterFinished": s.rayjob_ttl_s,
                "backoffLimit": s.rayjob_backoff_limit,
                "suspend": bool(s.rayjob_queue),  # Kueue unsuspends it once admitted
                "rayClusterSpec": {
                    "rayVersion": "2.60.0", "enableInTreeAutoscaling": True,
                    "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                                      "template": self.pod_template("ray-head", 1, "4Gi")},
                    "workerGroupSpecs": [workers],
                },
            },
        }

    # ---------------------------------------------------------------- the Runner port
    def submit(self, module: str, args: list[str], *, submission_id: str | None = None) -> str:
        submission_id = submission_id or f"doctune-{uuid.uuid4().hex[:12]}"
        body = self.rayjob(module, args, submission_id)
        self._call("create a RayJob", self.custom().create_namespaced_custom_object, GROUP, VERSION,
                   self.namespace, PLURAL, body)
        return submission_id

    def get(self, submission_id: str) -> dict[str, Any] | None:
        return self._call("read a RayJob", self.custom().get_namespaced_custom_object, GROUP, VERSION,
                          self.namespace, PLURAL, rayjob_name(submission_id))

    def status(self, submission_id: str) -> AttemptStatus:
        job = self.get(submission_id)
        if job is None:
            return AttemptStatus(AttemptState.UNKNOWN, f"no RayJob {rayjob_name(submission_id)} in {self.namespace}")
        st = job.get("status") or {}
        message = st.get("message") or st.get("reason") or st.get("jobDeploymentStatus") or ""
        if st.get("jobStatus") in _JOB_STATES:
            return AttemptStatus(_JOB_STATES[st["jobStatus"]], message)
        if st.get("jobDeploymentStatus") in ("Failed", "ValidationFailed"):
            return AttemptStatus(AttemptState.FAILED, message)
        return AttemptStatus(AttemptState.PENDING, message)

    def stop(self, submission_id: str) -> None:
        """Delete the RayJob; KubeRay deletes its cluster with it (no error when it is gone already)."""
        self._call("delete a RayJob", self.custom().delete_namespaced_custom_object, GROUP, VERSION, self.namespace,
                   PLURAL, rayjob_name(submission_id), propagation_policy="Background")

    def logs(self, submission_id: str) -> str:
        """The log of the RayJob's submitter pod (KubeRay's K8s Job that runs ``ray job submit``)."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        pods = self._call("list pods", core.list_namespaced_pod, self.namespace,
                          label_selector=f"job-name={rayjob_name(submission_id)}")
        for pod in (pods.items if pods else []):
            return self._call("read a log", core.read_namespaced_pod_log, pod.metadata.name, self.namespace) or ""
        return ""

    # ---------------------------------------------------------------- Serve: the shared cluster
    def deploy_app(self, deployment_id: str) -> str:
        return self.shared.deploy_app(deployment_id)

    def delete_app(self, deployment_id: str) -> str:
        return self.shared.delete_app(deployment_id)

    def applications(self) -> dict[str, Any]:
        return self.shared.applications()

    # ---------------------------------------------------------------- resources
    def resources(self) -> ClusterResources:
        """The nodes' allocatable CPUs, GPUs and memory; in use: what this runner's unfinished RayJobs
        may grow to (head plus their most workers), since each brings its own cluster."""
        from kubernetes import client

        nodes = self._call("list nodes", client.CoreV1Api(self.api_client()).list_node)
        total = {"cpu": 0.0, "nvidia.com/gpu": 0.0, "memory": 0.0}
        for node in (nodes.items if nodes else []):
            for key in total:
                total[key] += _quantity((node.status.allocatable or {}).get(key, "0"))
        jobs = self._call("list RayJobs", self.custom().list_namespaced_custom_object, GROUP, VERSION,
                          self.namespace, PLURAL, label_selector="app.kubernetes.io/managed-by=doctune") or {}
        active = [j for j in jobs.get("items", []) if (j.get("status") or {}).get("jobDeploymentStatus", "") in _ACTIVE]
        s = self.settings
        return ClusterResources(cpus=total["cpu"], gpus=total["nvidia.com/gpu"], memory_bytes=total["memory"],
                                cpus_used=len(active) * (1 + s.rayjob_max_workers * s.rayjob_worker_cpus),
                                gpus_used=len(active) * s.rayjob_max_workers * s.rayjob_worker_gpus)
