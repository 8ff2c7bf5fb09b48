"""`doctune tenants`: tenants, their quotas, settings, dedicated Ray clusters and usage (creating
tenants, setting quotas, settings and Ray clusters needs the platform admin's key)."""

from __future__ import annotations

from typing import Optional

import typer

from doctune.cli.output import show
from doctune.cli.session import ApiKey, Limit, connect, list_items

__all__ = ["app"]

app = typer.Typer(help="Tenants, their quotas and usage.", no_args_is_help=True)

TENANT_COLUMNS = ("id", "display_name", "quota.weight", "quota.max_concurrent_jobs", "quota.max_cpus", "quota.max_gpus",
                  "quota.max_storage_bytes", "quota.max_deployments", "quota.max_trials", "quota.max_queued_jobs",
                  "quota.max_keys", "settings.redact_pii")
USAGE_COLUMNS = ("tenant", "jobs", "trained_tokens", "worker_cpu_seconds", "worker_gpu_seconds", "storage_bytes")


@app.command("list")
def tenants_list(limit: Limit = None, api_key: ApiKey = None) -> None:
    """The tenants your key sees (an admin: all of them; a tenant's key: its own), with their quotas."""
    show(list_items(connect(api_key), "/v1/tenants", limit), TENANT_COLUMNS)


@app.command("create")
def tenants_create(name: str, display_name: Optional[str] = None, api_key: ApiKey = None) -> None:
    """Create a tenant (admin key); prints its first API key once."""
    show(connect(api_key).create_tenant(name, display_name))


@app.command("show")
def tenants_show(tenant: str, api_key: ApiKey = None) -> None:
    """A tenant's quotas and its dedicated Ray cluster's address, if it has one."""
    show(connect(api_key).request("GET", f"/v1/tenants/{tenant}"))


@app.command("quota")
def tenants_quota(
    tenant: str,
    weight: Optional[float] = None,
    max_jobs: Optional[int] = typer.Option(None, help="Concurrent jobs."),
    max_cpus: Optional[float] = None,
    max_gpus: Optional[float] = None,
    max_storage_bytes: Optional[int] = None,
    max_deployments: Optional[int] = None,
    max_trials: Optional[int] = typer.Option(None, help="Trials one sweep may run."),
    max_queued_jobs: Optional[int] = typer.Option(None, help="Jobs waiting in the queue at once."),
    max_keys: Optional[int] = typer.Option(None, help="Unrevoked API keys."),
    api_key: ApiKey = None,
) -> None:
    """Set a tenant's quotas and fair-share weight (admin). Only the options given change."""
    body = {"weight": weight, "max_concurrent_jobs": max_jobs, "max_cpus": max_cpus, "max_gpus": max_gpus,
            "max_storage_bytes": max_storage_bytes, "max_deployments": max_deployments,
            "max_trials": max_trials,
            "max_queued_jobs": max_queued_jobs, "max_keys": max_keys}
    show(connect(api_key).request("PUT", f"/v1/tenants/{tenant}/quota", json={k: v for k, v in body.items() if v is not None}))


@app.command("settings")
def tenants_settings(
    tenant: str,
    redact_pii: Optional[bool] = typer.Option(
        None, "--redact-pii/--no-redact-pii",
        help="Replace personal data (emails, phone, card, IBAN and national ID numbers, person names after a title) "
             "with typed placeholders in every dataset the tenant uploads from now on, before it is stored; an "
             "upload cannot turn it off. Datasets stored before stay as they are."),
    api_key: ApiKey = None,
) -> None:
    """Set a tenant's settings (admin). Only the options given change; with none, shows them."""
    client = connect(api_key)
    if redact_pii is None:
        show(client.request("GET", f"/v1/tenants/{tenant}")["settings"])
        return
    show(client.set_tenant_settings(tenant, redact_pii=redact_pii))


ray_cluster = typer.Typer(help="A tenant's dedicated Ray cluster: its jobs and sweeps run there (admin).",
                          no_args_is_help=True)
app.add_typer(ray_cluster, name="ray-cluster")


@ray_cluster.command("set")
def ray_cluster_set(
    tenant: str,
    address: str = typer.Option(..., help="The head's Jobs API URL, e.g. http://doctune-head-svc.TENANT.svc:8265."),
    token: str = typer.Option(..., envvar="DOCTUNE_TENANT_RAY_TOKEN", prompt=True, hide_input=True,
                              help="The Ray token the head takes (asked for when not given)."),
    api_key: ApiKey = None,
) -> None:
    """Register or replace the tenant's cluster; running jobs stay where they were submitted."""
    show(connect(api_key).set_ray_cluster(tenant, address, token))


@ray_cluster.command("remove")
def ray_cluster_remove(tenant: str, api_key: ApiKey = None) -> None:
    """Send the tenant's new work to the shared cluster again."""
    show(connect(api_key).remove_ray_cluster(tenant))


@app.command("usage")
def tenants_usage(api_key: ApiKey = None) -> None:
    """Trained tokens, worker CPU/GPU-seconds and stored bytes, per tenant."""
    show(list_items(connect(api_key), "/v1/usage"), USAGE_COLUMNS)
