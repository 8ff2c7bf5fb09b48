"""`doctune deployments`: endpoints on Ray Serve (list, show, create, delete,
revisions, rollback, retrain-policy, retrain-events), and the top-level `deploy`, `undeploy`, `promote`,
`rollback` and `revisions`, which are the same commands under their short names.

Commands that change an endpoint wait until the cluster has settled it and exit 1
when it did not end as asked (running, or deleted).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import typer

from doctune.cli.output import show
from doctune.cli.session import ApiKey, Limit, TaskFilter, connect, list_items
from doctune.client import DoctuneClient
from doctune.errors import DoctuneError
from doctune.states import DeploymentState

__all__ = ["app", "deploy", "promote", "revisions", "rollback", "undeploy", "wait_deployment"]

app = typer.Typer(help="Endpoints on Ray Serve: deploy, inspect, roll back, take down.", no_args_is_help=True)

DEPLOYMENT_COLUMNS = ("id", "tenant", "name", "model_id", "status", "revision", "url")
REVISION_COLUMNS = ("revision", "current", "model_id", "reason", "created_at")
DEPLOYING = ("deployed", "promoted", "forced")  # promotion decisions that redeploy the endpoint
UNSETTLED = (DeploymentState.DEPLOYING.value, DeploymentState.DELETING.value)


def wait_deployment(client: DoctuneClient, dep_id: str, deadline_s: float = 600) -> dict[str, Any]:
    """The deployment once no cluster work is under way for it (or at the deadline)."""
    end = time.monotonic() + deadline_s
    dep = client.get_deployment(dep_id)
    while dep["status"] in UNSETTLED and time.monotonic() < end:
        time.sleep(1.0)
        dep = client.get_deployment(dep_id)
    return dep


def _show_settled(client: DoctuneClient, dep_id: str, want: DeploymentState) -> None:
    dep = wait_deployment(client, dep_id)
    show(dep)
    if dep["status"] != want:
        raise typer.Exit(1)


def deploy(
    model_id: str,
    name: str = typer.Option(..., help="Endpoint name; the route is /<tenant>/<name>."),
    min_replicas: int = 1,
    max_replicas: int = 2,
    max_batch_size: int = typer.Option(8, help="Requests a replica batches into one model call."),
    batch_wait_timeout_s: float = typer.Option(0.01, help="Longest a request waits for its batch to fill."),
    quantize: str = typer.Option("none", help="none, or int8 (dynamic, CPU; accuracy change measured at deploy)."),
    multiplex: bool = typer.Option(
        False, "--multiplex/--no-multiplex",
        help="Serve a LoRA adapter (trained with merge_adapter: false) from the shared replicas of its base model; "
        "requests may name another of your adapters in the body field 'model'."),
    api_key: ApiKey = None,
) -> None:
    """Deploy a registered model to an autoscaled Ray Serve endpoint."""
    client = connect(api_key)
    dep = client.deploy(model_id, name, min_replicas=min_replicas, max_replicas=max_replicas,
                        max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s, quantize=quantize,
                        multiplex=multiplex)
    _show_settled(client, dep["id"], DeploymentState.RUNNING)


def undeploy(deployment_id: str, api_key: ApiKey = None) -> None:
    """Take an endpoint down (its model stays registered; deploy the same name to bring it back)."""
    client = connect(api_key)
    client.delete_deployment(deployment_id)
    _show_settled(client, deployment_id, DeploymentState.DELETED)


def rollback(
    deployment_id: str,
    revision: Optional[int] = typer.Option(None, help="Revision to redeploy (default: the one before the current one)."),
    api_key: ApiKey = None,
) -> None:
    """Redeploy an earlier revision of a deployment (its model and settings) as a new revision."""
    client = connect(api_key)
    dep = client.rollback(deployment_id, revision)
    _show_settled(client, dep["id"], DeploymentState.RUNNING)


def revisions(deployment_id: str, api_key: ApiKey = None) -> None:
    """A deployment's revisions (deploys, promotions, rollbacks), oldest first; `-o table` for a table."""
    show(connect(api_key).deployment_revisions(deployment_id), REVISION_COLUMNS)


def promote(
    endpoint: str = typer.Option(..., help="Endpoint (deployment) name; the route is /<tenant>/<endpoint>."),
    model: Optional[str] = typer.Option(None, "--model", help="The challenger: a registered model id."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="The challenger is this (succeeded) sweep's winner."),
    force: bool = typer.Option(False, "--force", help="Promote even if not better, or tested on another dataset."),
    metric: Optional[str] = typer.Option(None, help="Test metric to compare on (default: the task's primary metric)."),
    api_key: ApiKey = None,
) -> None:
    """Champion/challenger: the challenger replaces the endpoint's model only if its test metric is better
    on the same dataset (or with --force); an endpoint that does not exist yet is deployed."""
    if (model is None) == (sweep is None):
        raise DoctuneError("give exactly one of --model ID or --sweep ID", "invalid_request", field="model_id")
    client = connect(api_key)
    result = client.promote(endpoint, model_id=model, sweep_id=sweep, force=force, metric=metric)
    dep = result["deployment"]
    if result["decision"] in DEPLOYING:
        dep = result["deployment"] = wait_deployment(client, dep["id"])
    show(result)
    typer.echo(result["summary"] + (f"; deployment {dep['id']} revision {dep['revision']} is {dep['status']}" if dep else ""))
    if result["decision"] in DEPLOYING and dep["status"] != DeploymentState.RUNNING:
        raise typer.Exit(1)


@app.command("list")
def deployments_list(
    state: Optional[DeploymentState] = typer.Option(None, "--state", help="Only deployments in this state."),
    task: TaskFilter = None,
    limit: Limit = None,
    api_key: ApiKey = None,
) -> None:
    """Your tenant's deployments, newest first, with their routes."""
    show(list_items(connect(api_key), "/v1/deployments", limit, state=state, task=task), DEPLOYMENT_COLUMNS)


@app.command("show")
def deployments_show(deployment_id: str, api_key: ApiKey = None) -> None:
    """A deployment's model, status, URL, settings and current revision."""
    show(connect(api_key).get_deployment(deployment_id))


RETRAIN_EVENT_COLUMNS = ("id", "at", "decision", "trigger", "job_id", "data.version", "data.growth.records",
                         "data.drift", "data.champion.test", "data.challenger.test", "reason")


@app.command("retrain-policy")
def retrain_policy(
    deployment_id: str,
    min_new_records: Optional[int] = typer.Option(None, help="Retrain once the dataset holds this many records more "
                                                             "than the served model's version."),
    min_growth_percent: Optional[float] = typer.Option(None, help="Retrain once the dataset has grown this percent."),
    max_label_drift: Optional[float] = typer.Option(None, help="Retrain once the label distribution drifts more than "
                                                               "this (total variation distance, 0..1)."),
    schedule: Optional[str] = typer.Option(None, help="Retrain on this cron schedule (UTC), e.g. '0 3 * * 1', when "
                                                      "there is a newer version."),
    metric: Optional[str] = typer.Option(None, help="Test metric to compare on (default: the task's primary metric)."),
    off: bool = typer.Option(False, "--off", help="Remove the policy."),
    api_key: ApiKey = None,
) -> None:
    """Show, set or remove (--off) an endpoint's retrain policy: its model is trained again on the dataset's
    newest version when a trigger fires, and served only if it beats the served model on its test split."""
    client = connect(api_key)
    policy = {k: v for k, v in {"min_new_records": min_new_records, "min_growth_percent": min_growth_percent,
                                "max_label_drift": max_label_drift, "schedule": schedule, "metric": metric}.items()
              if v is not None}
    if off and policy:
        raise DoctuneError("--off removes the policy; give it alone", "invalid_request", field="off")
    if off:
        dep = client.set_retrain_policy(deployment_id, None)
    elif policy:
        dep = client.set_retrain_policy(deployment_id, policy)
    else:
        dep = client.get_deployment(deployment_id)
    show({"deployment_id": dep["id"], "retrain": dep.get("retrain"), "retrain_job_id": dep.get("retrain_job_id")})


@app.command("retrain-events")
def retrain_events(deployment_id: str, api_key: ApiKey = None) -> None:
    """Every decision of an endpoint's retrain policy, oldest first (triggered, skipped, promoted, refused,
    failed), with the growth, drift and both test metrics; `-o table` for a table."""
    show(connect(api_key).retrain_events(deployment_id), RETRAIN_EVENT_COLUMNS)


app.command("create")(deploy)
app.command("delete")(undeploy)
app.command("revisions")(revisions)
app.command("rollback")(rollback)
