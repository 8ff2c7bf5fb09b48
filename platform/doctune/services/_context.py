"""The handles every service needs: settings, the metadata store, the object store.

One :class:`Platform` per process (API server, job driver, CLI in-process
calls); built lazily so importing doctune costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from doctune.config import Settings, load_settings
from doctune.store.db import Database
from doctune.store.objects import ObjectStore


@dataclass
class Principal:
    """Who is calling: a tenant's member/viewer, or the platform admin (tenant None)."""

    key_id: str
    role: str
    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.tenant_id is None


class Platform:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.dispatcher = None  # the API server sets its Dispatcher here, so submissions wake it

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url)

    @cached_property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.settings)

    def ray_jobs_client(self):
        from ray.job_submission import JobSubmissionClient

        from doctune.errors import DoctuneError

        if not self.settings.ray_dashboard_url:
            raise DoctuneError("no Ray cluster configured: run `doctune up` or set DOCTUNE_RAY_DASHBOARD_URL", "unavailable")
        os.environ.update(self.settings.ray_env())
        return JobSubmissionClient(self.settings.ray_dashboard_url)

    def submit_ray_job(self, module_args: str, submission_id: str | None = None) -> str:
        """Run ``python -m <module_args>`` as a Ray job with this platform's settings;
        every job and deployment the platform starts goes through here."""
        import sys

        env = {"DOCTUNE_HOME": self.settings.home} if self.settings.home else {}
        return self.ray_jobs_client().submit_job(
            entrypoint=f"{sys.executable} -m {module_args}", submission_id=submission_id, runtime_env={"env_vars": env}
        )
