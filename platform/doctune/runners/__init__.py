"""Runners: the one way services hand work to a compute cluster.

:class:`Runner` is the port: submit a driver as a job, read its state and log, stop it,
deploy or delete a Serve application, and read the cluster's resources. Adapters:
:class:`RayJobsRunner` (the Ray Jobs API of any Ray head: the embedded one, or a
KubeRay cluster's head Service) and :class:`KubeRayRunner` (one KubeRay RayJob, with its own
Ray cluster, per run; imported only when chosen). :func:`runner_for` picks the adapter from the
settings (``DOCTUNE_RUNNER``: ``shared`` or ``rayjob``).
"""

from doctune.runners.base import AttemptStatus, ClusterResources, Runner
from doctune.runners.jobs_api import RayJobsRunner

__all__ = ["AttemptStatus", "ClusterResources", "RayJobsRunner", "Runner", "runner_for"]


def runner_for(settings) -> Runner:
    """The runner the settings name (``DOCTUNE_RUNNER``); the Ray Jobs API by default."""
    from doctune.errors import DoctuneError

    kind = getattr(settings, "runner", "") or "shared"
    if kind in ("shared", "ray-jobs"):
        return RayJobsRunner(settings)
    if kind == "rayjob":
        from doctune.runners.kuberay import KubeRayRunner

        return KubeRayRunner(settings)
    raise DoctuneError(f"unknown runner {kind!r}; DOCTUNE_RUNNER takes 'shared' (the Ray Jobs API of one Ray "
                       "cluster) or 'rayjob' (a KubeRay RayJob per run)", "unavailable", field="runner")
