"""``/v1/cluster`` and ``/v1/queue``: the cluster's resources and the job queue in fair-share order
(platform admin, read-only)."""

from __future__ import annotations

from fastapi import APIRouter

from doctune.api.deps import AdminCaller, CurrentPlatform
from doctune.api.schemas import ClusterOut, QueuedJobOut
from doctune.services import cluster as cluster_svc

router = APIRouter(tags=["cluster"])


@router.get("/v1/cluster", response_model=ClusterOut)
def cluster_resources(who: AdminCaller, p: CurrentPlatform) -> ClusterOut:
    """Ray's logical CPUs and GPUs, in all, in use and free (503 when the cluster does not answer)."""
    return ClusterOut.model_validate(cluster_svc.cluster_resources(p, who))


@router.get("/v1/queue", response_model=list[QueuedJobOut])
def job_queue(who: AdminCaller, p: CurrentPlatform) -> list[QueuedJobOut]:
    """Every queued job of every tenant, in the order the dispatcher starts them as room and quotas allow."""
    return [QueuedJobOut.model_validate(row) for row in cluster_svc.queue_order(p, who)]
