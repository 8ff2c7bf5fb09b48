"""Deployments: put a registered model behind an autoscaled Ray Serve endpoint.

:func:`deploy_model` records the deployment and submits ``python -m
ray_jobs.deploy`` to the Ray cluster, which runs ``serve.run`` there (the API
process never holds a Ray driver). The route is ``/<tenant>/<name>``. A
deployment with ``quantize: int8`` is refused here when its task's accuracy
change cannot be measured; the deploy job measures it and stores it with
:func:`set_info`.
"""

from __future__ import annotations

from sqlalchemy import func, select

from doctune.errors import DoctuneError
from doctune.serve.quantize import check_quantizable
from doctune.services._context import Platform, Principal
from doctune.services.registry import get_model
from doctune.services.tenants import check_tenant_access, get_owned
from doctune.spec import DeploymentSpec
from doctune.store.db import Deployment, Tenant, new_id


def deploy_model(p: Platform, caller: Principal, spec: DeploymentSpec) -> Deployment:
    check_tenant_access(caller, spec.tenant, write=True)
    model = get_model(p, caller, spec.model_id)
    if model.tenant_id != spec.tenant:
        raise DoctuneError(f"model {spec.model_id!r} not found", "not_found", field="model_id")
    if spec.quantize == "int8":
        check_quantizable(model.task)
    route = f"/{spec.tenant}/{spec.name}"
    with p.db.session() as s:
        existing = s.execute(
            select(Deployment).where(Deployment.tenant_id == spec.tenant, Deployment.name == spec.name)
        ).scalar_one_or_none()
        limit = s.get(Tenant, spec.tenant).max_deployments
        if existing is None and limit is not None:
            count = s.execute(select(func.count()).select_from(Deployment).where(
                Deployment.tenant_id == spec.tenant, Deployment.status.not_in(("failed", "deleted")))).scalar_one()
            if count >= limit:
                raise DoctuneError(
                    f"tenant {spec.tenant} has {count} deployment(s), its quota is {limit}; "
                    "update an existing one (same name) or ask an admin to raise max_deployments",
                    "quota_exceeded", field="max_deployments")
        if existing is not None:
            row = existing
            if row.model_id != spec.model_id or spec.quantize != "int8":
                row.info = None  # the int8 measurement belongs to the model it was made on
            row.model_id, row.spec, row.status, row.message = spec.model_id, spec.model_dump(mode="json"), "deploying", None
        else:
            row = Deployment(
                id=new_id("dep"), tenant_id=spec.tenant, name=spec.name, model_id=spec.model_id,
                spec=spec.model_dump(mode="json"), route=route, status="deploying",
            )
            s.add(row)
    _submit_deploy(p, row.id)
    return row


def _submit_deploy(p: Platform, deployment_id: str) -> None:
    try:
        p.submit_ray_job(f"ray_jobs.deploy --deployment-id {deployment_id}")
    except DoctuneError:
        raise
    except Exception as exc:
        set_status(p, deployment_id, "failed", f"the Ray cluster did not accept the deployment: {exc}")
        raise DoctuneError(f"the Ray cluster did not accept the deployment: {exc}", "unavailable") from None


def serve_applications(p: Platform) -> dict:
    """Ray Serve's applications by name, from the dashboard's REST API."""
    import httpx

    r = httpx.get(f"{p.settings.ray_dashboard_url}/api/serve/applications/",
                  headers={"Authorization": f"Bearer {p.settings.ray_token()}"}, timeout=15)
    r.raise_for_status()
    return r.json().get("applications") or {}


def reconcile_deployments(p: Platform) -> list[str]:
    """At API start: redeploy every deployment recorded as running whose Serve
    application is gone (the Ray cluster was restarted), so endpoints come back."""
    apps = serve_applications(p)
    with p.db.session() as s:
        rows = list(s.execute(select(Deployment).where(Deployment.status == "running")).scalars())
    restored = []
    for row in rows:
        if f"{row.tenant_id}-{row.name}" not in apps:
            set_status(p, row.id, "deploying", "restoring: its Serve application was gone (cluster restart)")
            _submit_deploy(p, row.id)
            restored.append(row.id)
    return restored


def set_status(p: Platform, deployment_id: str, status: str, message: str | None = None) -> None:
    with p.db.session() as s:
        row = s.get(Deployment, deployment_id)
        row.status, row.message = status, message


def set_info(p: Platform, deployment_id: str, info: dict | None) -> None:
    """What the deploy job measured (e.g. ``{"quantization": {...}}``), shown by the API."""
    with p.db.session() as s:
        s.get(Deployment, deployment_id).info = info


def delete_deployment(p: Platform, caller: Principal, deployment_id: str) -> Deployment:
    """Undeploy: the Serve application goes (a Ray job runs ``serve.delete``); the record and
    the model stay. The deployment reads ``deleting``, then ``deleted``; deploying the same
    name again brings it back."""
    dep = get_deployment(p, caller, deployment_id)
    check_tenant_access(caller, dep.tenant_id, write=True)
    if dep.status in ("deleted", "deleting"):
        return dep
    set_status(p, dep.id, "deleting", "undeploy requested")
    try:
        p.submit_ray_job(f"ray_jobs.deploy --deployment-id {dep.id} --delete")
    except Exception as exc:
        set_status(p, dep.id, dep.status, dep.message)
        raise DoctuneError(f"the Ray cluster did not accept the undeploy: {exc}", "unavailable") from None
    return get_deployment(p, caller, deployment_id)


def get_deployment(p: Platform, caller: Principal, deployment_id: str) -> Deployment:
    return get_owned(p, caller, Deployment, deployment_id, "deployment", "deployment_id")
