"""Every state a job, sweep, deployment or attempt can be in: one ``StrEnum`` each.

The metadata store keeps them as their string values, the API returns them as
strings, and every comparison in the code goes through these names, so a state
is spelled in exactly one place. Each enum also says which of its states are
final (``TERMINAL``) and which hold cluster resources (``ACTIVE``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AttemptState", "DeploymentState", "JobState", "SweepState"]


class JobState(StrEnum):
    """A fine-tuning job (a sweep's trial is a job too)."""

    QUEUED = "queued"  # waiting for its tenant's quota and cluster room
    PAUSED = "paused"  # held by its tenant; resumes from its pause checkpoint
    STARTING = "starting"  # claimed by the dispatcher, handed to the cluster
    RUNNING = "running"  # its driver runs on the cluster
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def terminal(cls) -> tuple["JobState", ...]:
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED)

    @classmethod
    def active(cls) -> tuple["JobState", ...]:
        """States that hold quota and cluster resources."""
        return (cls.STARTING, cls.RUNNING)

    @property
    def is_terminal(self) -> bool:
        return self in JobState.terminal()


class SweepState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def terminal(cls) -> tuple["SweepState", ...]:
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED)

    @property
    def is_terminal(self) -> bool:
        return self in SweepState.terminal()


class DeploymentState(StrEnum):
    DEPLOYING = "deploying"  # recorded; the cluster is starting (or updating) its Serve application
    RUNNING = "running"  # the endpoint answers
    DELETING = "deleting"  # undeploy requested
    DELETED = "deleted"  # the Serve application is gone; the record and the model stay
    FAILED = "failed"

    @classmethod
    def settled(cls) -> tuple["DeploymentState", ...]:
        """States no cluster work is under way for."""
        return (cls.RUNNING, cls.DELETED, cls.FAILED)

    @classmethod
    def gone(cls) -> tuple["DeploymentState", ...]:
        """States that serve nothing and count against no quota."""
        return (cls.DELETED, cls.FAILED)


class AttemptState(StrEnum):
    """One run of a driver on the cluster (a job's attempt, a sweep's or a deploy's driver), as
    the runner reports it. ``UNKNOWN``: the cluster does not know the submission (e.g. its
    head restarted)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in (AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.STOPPED)
