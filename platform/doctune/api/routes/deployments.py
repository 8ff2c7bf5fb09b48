"""``/v1/deployments``: serve a model behind an autoscaled endpoint; list, read, undeploy, revisions, rollback;
its retrain policy and that policy's decisions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging, SpecBody, TaskFilter
from doctune.api.schemas import (DeploymentOut, EndpointMetricsOut, Page, RetrainEventOut, RevisionOut,
                                 RollbackRequest)
from doctune.services import cluster as cluster_svc
from doctune.services import deployments as deployments_svc
from doctune.services import retrain as retrain_svc
from doctune.spec import DeploymentSpec, RetrainPolicySpec
from doctune.states import DeploymentState

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])

DeploymentBody = Annotated[DeploymentSpec, Depends(SpecBody(DeploymentSpec))]
RollbackBody = Annotated[RollbackRequest, Depends(SpecBody(RollbackRequest, claims_tenant=False,
                                                           code="invalid_request", required=False))]
RetrainPolicyBody = Annotated[RetrainPolicySpec, Depends(SpecBody(RetrainPolicySpec, claims_tenant=False))]


def visible_deployment(deployment_id: str, who: CurrentCaller, p: CurrentPlatform) -> Any:
    """The caller's deployment; another tenant's id is 404 (checked before a body is read)."""
    return deployments_svc.get_deployment(p, who, deployment_id)


VisibleDeployment = Annotated[Any, Depends(visible_deployment)]  # a deployments_svc row


@router.post("", status_code=201, response_model=DeploymentOut)
def deploy_model(spec: DeploymentBody, who: CurrentCaller, p: CurrentPlatform) -> DeploymentOut:
    """Deploy a model (a name deployed again is updated: a new revision)."""
    return DeploymentOut.of(deployments_svc.deploy_model(p, who, spec), p.settings.serve_url)


@router.get("", response_model=Page[DeploymentOut])
def list_deployments(who: CurrentCaller, p: CurrentPlatform, page: Paging,
                     state: Annotated[DeploymentState | None, Query(description="Only deployments in this state.")] = None,
                     task: TaskFilter = None) -> Page[DeploymentOut]:
    """The caller's deployments, newest first; ``task``: those serving a model of that task."""
    rows = deployments_svc.list_deployments(p, who, state=state, task=task, limit=page.limit, cursor=page.cursor)
    return Page[DeploymentOut].of(rows, lambda d: DeploymentOut.of(d, p.settings.serve_url))


@router.get("/{deployment_id}", response_model=DeploymentOut)
def get_deployment(deployment: VisibleDeployment, p: CurrentPlatform) -> DeploymentOut:
    return DeploymentOut.of(deployment, p.settings.serve_url)


@router.delete("/{deployment_id}", response_model=DeploymentOut)
def delete_deployment(deployment_id: str, who: CurrentCaller, p: CurrentPlatform) -> DeploymentOut:
    """Undeploy: the endpoint goes away; the deployment record and its model stay."""
    return DeploymentOut.of(deployments_svc.delete_deployment(p, who, deployment_id), p.settings.serve_url)


@router.get("/{deployment_id}/revisions", response_model=list[RevisionOut])
def deployment_revisions(deployment: VisibleDeployment, who: CurrentCaller, p: CurrentPlatform,
                         after: Annotated[int, Query(ge=0, description="Only revisions numbered above this (paging: "
                                                                       "the last revision of the previous page).")] = 0,
                         limit: Annotated[int, Query(ge=1, le=deployments_svc.MAX_REVISIONS_PAGE)] = 200,
                         ) -> list[RevisionOut]:
    """Every deploy, promotion and rollback of the deployment, oldest first, a page of ``limit`` at a
    time (the next page: ``after`` = the last revision shown); ``current`` marks the one served."""
    rows = deployments_svc.revisions(p, who, deployment.id, after=after, limit=limit)
    return [RevisionOut.of(r, deployment.revision) for r in rows]


@router.post("/{deployment_id}/rollback", response_model=DeploymentOut)
def rollback(deployment: VisibleDeployment, body: RollbackBody, who: CurrentCaller, p: CurrentPlatform) -> DeploymentOut:
    """Redeploy an earlier revision (default: the one before the current one) as a new revision.
    ``deployment`` comes before ``body``: another tenant's id is 404 before any field error."""
    return DeploymentOut.of(deployments_svc.rollback(p, who, deployment.id, body.revision), p.settings.serve_url)


@router.put("/{deployment_id}/retrain-policy", response_model=DeploymentOut)
def set_retrain_policy(deployment: VisibleDeployment, policy: RetrainPolicyBody, who: CurrentCaller,
                       p: CurrentPlatform) -> DeploymentOut:
    """Set the endpoint's retrain policy: retrain its model on its dataset's newest version when the dataset
    grows or its labels drift enough (checked at each append), or on a cron schedule; the retrained model is
    served only if its test metric beats the served one's (docs/lifecycle.md). No revision is added."""
    return DeploymentOut.of(retrain_svc.set_policy(p, who, deployment.id, policy), p.settings.serve_url)


@router.delete("/{deployment_id}/retrain-policy", response_model=DeploymentOut)
def delete_retrain_policy(deployment: VisibleDeployment, who: CurrentCaller, p: CurrentPlatform) -> DeploymentOut:
    """Remove the endpoint's retrain policy (a retrain job under way still finishes and is still compared)."""
    return DeploymentOut.of(retrain_svc.set_policy(p, who, deployment.id, None), p.settings.serve_url)


@router.get("/{deployment_id}/retrain-events", response_model=list[RetrainEventOut])
def retrain_events(deployment: VisibleDeployment, who: CurrentCaller, p: CurrentPlatform,
                   after: Annotated[int, Query(ge=0, description="Only events with ids above this (paging).")] = 0,
                   limit: Annotated[int, Query(ge=1, le=retrain_svc.MAX_EVENTS_PAGE)] = 200,
                   ) -> list[RetrainEventOut]:
    """Every decision of the endpoint's retrain policy, oldest first: triggered, skipped, promoted, refused,
    failed, each with its reason, the growth and drift that decided it and both models' test metric."""
    return [RetrainEventOut.of(e) for e in retrain_svc.list_events(p, who, deployment.id, after=after, limit=limit)]


@router.get("/{deployment_id}/metrics", response_model=EndpointMetricsOut)
def deployment_metrics(deployment: VisibleDeployment, who: CurrentCaller, p: CurrentPlatform) -> EndpointMetricsOut:
    """The endpoint's requests by status code, latency, batch sizes and live replicas, as its replicas
    report them to the cluster's Prometheus targets now (503 when the cluster does not answer)."""
    return EndpointMetricsOut.model_validate(cluster_svc.endpoint_metrics(p, who, deployment.id))
