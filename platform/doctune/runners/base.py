"""The Runner port: what services ask of a compute cluster, whatever runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from doctune.states import AttemptState

__all__ = ["AttemptStatus", "ClusterResources", "Runner"]


@dataclass(frozen=True)
class AttemptStatus:
    """A submitted driver's state as the cluster reports it, and the cluster's message."""

    state: AttemptState
    message: str = ""


@dataclass(frozen=True)
class ClusterResources:
    """Logical CPUs and GPUs, and task memory in bytes: in all, and in use now."""

    cpus: float
    gpus: float
    memory_bytes: float
    cpus_used: float = 0.0
    gpus_used: float = 0.0

    @property
    def cpus_free(self) -> float:
        return self.cpus - self.cpus_used

    @property
    def gpus_free(self) -> float:
        return self.gpus - self.gpus_used


class Runner(Protocol):
    """Every adapter runs a driver as ``python -m <module> <args...>`` with the platform's Python
    and settings, and names each run by its submission id."""

    def submit(self, module: str, args: list[str], *, submission_id: str | None = None) -> str:
        """Start ``python -m module args...`` on the cluster; returns the submission id."""

    def status(self, submission_id: str) -> AttemptStatus:
        """The run's state; ``UNKNOWN`` when the cluster does not know it."""

    def stop(self, submission_id: str) -> None:
        """Stop the run (no error when it already ended)."""

    def logs(self, submission_id: str) -> str:
        """The driver's log so far."""

    def deploy_app(self, deployment_id: str) -> str:
        """Start (or update) the deployment's Serve application; returns the submission id of the
        driver doing it."""

    def delete_app(self, deployment_id: str) -> str:
        """Delete the deployment's Serve application; returns the submission id of the driver doing it."""

    def applications(self) -> dict[str, Any]:
        """The cluster's Serve applications by name, with their status."""

    def resources(self) -> ClusterResources:
        """The cluster's logical resources, in all and in use."""

    def metrics_text(self) -> list[str]:
        """The Prometheus text of every metrics target the cluster advertises (its nodes' metrics
        agents, where Serve replicas report), one string per target."""
