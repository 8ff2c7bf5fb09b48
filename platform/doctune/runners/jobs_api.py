"""The Ray Jobs API adapter of the Runner port: any Ray head with token auth, the embedded
one (``doctune up``) or a KubeRay cluster's head Service. The only module that imports
``ray.job_submission``.

Without ``address`` it is the platform's shared cluster (``DOCTUNE_RAY_DASHBOARD_URL`` and the
platform's Ray token); with ``address`` and ``token`` it is a tenant's dedicated cluster, whose
head takes only that tenant's token. Such a cluster's processes do not have the platform's
environment, so every driver submitted there is given it (where the other components are), and,
since the tenant can read what a job there was given (``ray job list`` shows its runtime_env), only
the credentials ``credentials`` returns for that submission (its module, arguments and submission
id): the tenant's own object-store key, never the root key nor the database URL, and for a job's
driver a token for that one attempt (:meth:`doctune.config.Settings.tenant_job_env`). Without
``credentials`` a dedicated cluster's runner submits nothing."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.runners.base import AttemptStatus, ClusterResources
from doctune.states import AttemptState

__all__ = ["RayJobsRunner"]

_STATES = {"PENDING": AttemptState.PENDING, "RUNNING": AttemptState.RUNNING, "SUCCEEDED": AttemptState.SUCCEEDED,
           "FAILED": AttemptState.FAILED, "STOPPED": AttemptState.STOPPED}


_NO_CLUSTER = "no Ray cluster configured: run `doctune up` or set DOCTUNE_RAY_DASHBOARD_URL"


class RayJobsRunner:
    def __init__(self, settings: Settings, *, address: str = "", token: str = "",
                 credentials: Callable[[str, list[str], str | None], dict[str, str]] | None = None) -> None:
        self.settings = settings
        self.dedicated = bool(address)
        self._credentials = credentials
        self.address = (address or settings.ray_dashboard_url).rstrip("/")
        self._token = token
        self._client = None
        self._http_client = None
        self._http_lock = threading.Lock()

    def token(self) -> str:
        """The Ray auth token this cluster's head takes: a dedicated cluster's own, else the platform's."""
        return self._token if self.dedicated else self.settings.ray_token()

    # ---------------------------------------------------------------- the Jobs API
    def client(self):
        from ray.job_submission import JobSubmissionClient

        if not self.address:
            raise DoctuneError(_NO_CLUSTER, "unavailable")
        if self._client is None:
            os.environ.update(self.settings.ray_env())
            # a header of our own: Ray then sends it instead of the process's (the platform's) token
            headers = {"Authorization": f"Bearer {self._token}"} if self.dedicated else None
            self._client = JobSubmissionClient(self.address, headers=headers)
        return self._client

    def submit(self, module: str, args: list[str], *, submission_id: str | None = None) -> str:
        import shlex

        # the job's own credentials: Ray processes find none in their environment (config.ray_process_env)
        home = {"DOCTUNE_HOME": self.settings.home} if self.settings.home else {}
        if self.dedicated:  # its head was not started with the platform's environment, and its tenant reads this
            if self._credentials is None:
                raise DoctuneError(f"the Ray cluster at {self.address} is a tenant's: it gets only that tenant's "
                                   "credentials, and none were given to its runner", "internal")
            env = {**self.settings.ray_process_env(), **home, **self._credentials(module, args, submission_id)}
        else:
            env = {**home, **self.settings.job_env()}
        entrypoint = " ".join([shlex.quote(sys.executable), "-m", module, *map(shlex.quote, args)])
        return self.client().submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                        runtime_env={"env_vars": env})

    def status(self, submission_id: str) -> AttemptStatus:
        try:
            info = self.client().get_job_info(submission_id)
        except RuntimeError as exc:  # the Jobs API answers 404 as a RuntimeError
            if "does not exist" in str(exc) or "404" in str(exc):
                return AttemptStatus(AttemptState.UNKNOWN, f"the Ray cluster does not know {submission_id}")
            raise
        state = _STATES.get(str(getattr(info.status, "value", info.status)), AttemptState.UNKNOWN)
        return AttemptStatus(state, info.message or "")

    def stop(self, submission_id: str) -> None:
        self.client().stop_job(submission_id)

    def logs(self, submission_id: str) -> str:
        return self.client().get_job_logs(submission_id)

    # ---------------------------------------------------------------- Serve
    def deploy_app(self, deployment_id: str) -> str:
        return self.submit("ray_jobs.deploy", ["--deployment-id", deployment_id])

    def delete_app(self, deployment_id: str) -> str:
        return self.submit("ray_jobs.deploy", ["--deployment-id", deployment_id, "--delete"])

    def applications(self) -> dict[str, Any]:
        return self._dashboard("/api/serve/applications/").get("applications") or {}

    # ---------------------------------------------------------------- resources
    def resources(self) -> ClusterResources:
        usage = self._dashboard("/api/cluster_status")["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        cpu_used, cpu_total = usage.get("CPU", [0.0, 0.0])
        gpu_used, gpu_total = usage.get("GPU", [0.0, 0.0])
        return ClusterResources(cpus=cpu_total, gpus=gpu_total, memory_bytes=usage.get("memory", [0, 0])[1],
                                cpus_used=cpu_used, gpus_used=gpu_used)

    def metrics_text(self) -> list[str]:
        """Each target of the head's Prometheus service discovery (``/api/prometheus/sd``, what a
        Prometheus ``http_sd_configs`` reads), scraped once."""
        groups: Any = self._dashboard("/api/prometheus/sd")
        targets = sorted({t for group in groups for t in group.get("targets", [])})
        texts = []
        for target in targets:
            r = self._http().get(f"http://{target}/metrics")
            if r.status_code == 200:
                texts.append(r.text)
        return texts

    def _http(self) -> Any:
        """One HTTP client for the runner's life, shared by its threads: a client per call built a new
        TLS context each time (about 20 ms of CPU, under the GIL), and the dispatcher reads the free
        resources every tick and on every submit, which held up the API's requests."""
        import httpx

        with self._http_lock:
            if self._http_client is None:
                self._http_client = httpx.Client(timeout=15)
            return self._http_client

    def _dashboard(self, path: str) -> Any:
        if not self.address:
            raise DoctuneError(_NO_CLUSTER, "unavailable")
        r = self._http().get(f"{self.address}{path}", headers={"Authorization": f"Bearer {self.token()}"})
        r.raise_for_status()
        return r.json()
