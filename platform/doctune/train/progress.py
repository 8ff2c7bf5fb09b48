"""The channel between a job's driver and its rank-0 training worker.

:func:`progress_actor` starts a small Ray actor in the driver's process tree: rank 0
sends it progress (step, loss, evaluations, the final result), the driver reads it and
copies it into the job record, and the driver sets its stop flag to pause the run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_actor"]


def progress_actor() -> Any:
    """A new ProgressActor handle (``num_cpus=0``: it holds no training resources)."""
    import ray

    @ray.remote(num_cpus=0)
    class ProgressActor:
        """Collects rank 0's progress and carries a stop request from the driver to rank 0."""

        def __init__(self) -> None:
            self.state: dict[str, Any] = {"worker_pids": {}}
            self.version = 0
            self.stop_requested = False

        def update(self, fields: dict[str, Any]) -> None:
            self.state.update(fields)
            self.version += 1

        def register_worker(self, rank: int, pid: int) -> None:
            self.state["worker_pids"] = {**self.state["worker_pids"], str(rank): pid}
            self.version += 1

        def get(self) -> tuple[int, dict[str, Any]]:
            return self.version, self.state

        def request_stop(self) -> None:
            self.stop_requested = True

        def should_stop(self) -> bool:
            return self.stop_requested

    return ProgressActor.remote()
