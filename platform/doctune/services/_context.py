"""The handles every service needs: settings, the stores, and the runners.

One :class:`Platform` per process (API server, job driver, CLI in-process
calls); built lazily so importing doctune costs nothing.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable

from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.runners import RayJobsRunner, Runner, runner_for
from doctune.store.db import Job, RayCluster, Sweep
from doctune.store.job_tokens import mint_job_token, mint_sweep_token
from doctune.store.keys import Principal, server_secret
from doctune.store.stores import Stores
from doctune.store.tenant_keys import tenant_keys

__all__ = ["Platform", "Principal"]

# builds the runner of a tenant's dedicated cluster from its address and token
ClusterRunner = Callable[[str, str], Runner]


class Platform(Stores):
    """The stores plus the runners that hand work to a cluster: ``runner``, the shared cluster's
    (deployments, resources, and every tenant without a cluster of its own), and
    :meth:`runner_on` a tenant's dedicated cluster. The API server also sets ``dispatcher`` so
    that submissions wake it. ``cluster_runner``: how a dedicated cluster's runner is built
    (default: :class:`RayJobsRunner` on its address and token, giving drivers only the tenant's
    credentials and a job or sweep token, :meth:`tenant_job_env`)."""

    def __init__(self, settings: Settings | None = None, runner: Runner | None = None,
                 cluster_runner: ClusterRunner | None = None) -> None:
        super().__init__(settings)
        if runner is not None:
            self.runner = runner
        self.dispatcher = None
        self._cluster_runner = cluster_runner
        self._cluster_runners: dict[str, Runner] = {}
        self._tenant_env: dict[str, dict[str, str]] = {}
        self._tenant_key: dict[str, tuple[str, str]] = {}

    @cached_property
    def runner(self) -> Runner:  # type: ignore[override]  # set in __init__ when given
        return runner_for(self.settings)

    def cluster_for(self, tenant_id: str) -> str | None:
        """The id of the tenant's dedicated Ray cluster, or None: its work goes to the shared one."""
        from sqlalchemy import select

        with self.db.session() as s:
            return s.execute(select(RayCluster.id).where(RayCluster.tenant_id == tenant_id,
                                                         RayCluster.retired_at.is_(None))).scalars().first()

    def runner_on(self, cluster_id: str | None) -> Runner:
        """The runner of a recorded cluster (a job's or sweep's ``ray_cluster_id``), retired or not;
        None: the shared cluster's."""
        if cluster_id is None:
            return self.runner
        if cluster_id not in self._cluster_runners:
            with self.db.session() as s:
                row = s.get(RayCluster, cluster_id)
            if row is None:
                return self.runner
            if self._cluster_runner is not None:
                self._cluster_runners[cluster_id] = self._cluster_runner(row.address, row.token)
            else:
                tenant = row.tenant_id
                self._cluster_runners[cluster_id] = RayJobsRunner(
                    self.settings, address=row.address, token=row.token,
                    credentials=lambda module, args, sid: self.tenant_job_env(tenant, module, args, sid))
        return self._cluster_runners[cluster_id]

    def tenant_job_env(self, tenant_id: str, module: str = "ray_jobs.finetune", args: list[str] | None = None,
                       submission_id: str | None = None) -> dict[str, str]:
        """What a driver submitted to the tenant's dedicated cluster is given: the tenant's object-store
        key (issued on the store once per process), never the root key nor the database URL; a job's
        driver (``ray_jobs.finetune --job-id J``) also a token for J's current attempt and this
        submission, a sweep's driver (``ray_jobs.sweep --sweep-id S``) a token for S and this submission
        (:mod:`doctune.store.job_tokens`), with which it records its work through the API."""
        if tenant_id not in self._tenant_env:
            key = tenant_keys(self.settings).issue(tenant_id)
            self._tenant_key[tenant_id] = (key.access_key, key.secret_key)
            self._tenant_env[tenant_id] = self.settings.tenant_job_env(key.access_key, key.secret_key)
        args = list(args or [])
        if module == "ray_jobs.finetune" and "--job-id" in args:
            job_id = args[args.index("--job-id") + 1]
            token = {"job_token": self._job_token(tenant_id, job_id, submission_id or job_id)}
        elif module == "ray_jobs.sweep" and "--sweep-id" in args:
            sweep_id = args[args.index("--sweep-id") + 1]
            token = {"sweep_token": self._sweep_token(tenant_id, sweep_id, submission_id or sweep_id)}
        else:
            return self._tenant_env[tenant_id]
        return self.settings.tenant_job_env(*self._tenant_key[tenant_id], **token)

    def _tenants_row(self, table: Any, row_id: str, tenant_id: str, what: str) -> Any:
        """The row a token is minted for: it must be the tenant's (403 otherwise), and the API must be
        reachable from the tenant's cluster (503 otherwise)."""
        if not self.settings.api_url:
            raise DoctuneError("a driver on a tenant's dedicated cluster reports through the doctune API, and none "
                               "is configured: set DOCTUNE_API_URL to an address that cluster reaches", "unavailable")
        with self.db.session() as s:
            row = s.get(table, row_id)
        if row is None or row.tenant_id != tenant_id:
            raise DoctuneError(f"{what} {row_id!r} is not tenant {tenant_id}'s: nothing is submitted to its cluster",
                               "forbidden", field=f"{what}_id")
        return row

    def _job_token(self, tenant_id: str, job_id: str, submission_id: str) -> str:
        job = self._tenants_row(Job, job_id, tenant_id, "job")
        return mint_job_token(server_secret(self.db, self.settings.key_secret), tenant_id, job_id, job.attempt,
                              submission_id)

    def _sweep_token(self, tenant_id: str, sweep_id: str, submission_id: str) -> str:
        self._tenants_row(Sweep, sweep_id, tenant_id, "sweep")
        return mint_sweep_token(server_secret(self.db, self.settings.key_secret), tenant_id, sweep_id, submission_id)

    def runner_for(self, tenant_id: str) -> Runner:
        """Where the tenant's jobs and sweeps go now: its dedicated cluster, else the shared one."""
        return self.runner_on(self.cluster_for(tenant_id))

