"""``/v1/cluster`` and ``/v1/queue``: the cluster's resources and the job queue in fair-share order
(platform admin, read-only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from doctune.api.deps import MAX_PAGE_SIZE, AdminCaller, CurrentPlatform
from doctune.api.schemas import ClusterOut, QueuedJobOut
from doctune.services import cluster as cluster_svc

router = APIRouter(tags=["cluster"])


@router.get("/v1/cluster", response_model=ClusterOut)
def cluster_resources(who: AdminCaller, p: CurrentPlatform) -> ClusterOut:
    """Ray's logical CPUs and GPUs, in all, in use and free (503 when the cluster does not answer)."""
    return ClusterOut.model_validate(cluster_svc.cluster_resources(p, who))


@router.get("/v1/queue", response_model=list[QueuedJobOut])
def job_queue(who: AdminCaller, p: CurrentPlatform,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="The first this many in order.")] = 100,
              ) -> list[QueuedJobOut]:
    """The queued jobs of every tenant, in the order the dispatcher starts them as room and quotas allow:
    the first ``limit`` of them."""
    return [QueuedJobOut.model_validate(row) for row in cluster_svc.queue_order(p, who)[:limit]]
