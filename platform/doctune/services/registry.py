"""The model registry: evaluated, exported checkpoints ("models") per tenant.

:func:`register_model` is the only writer of ``Model`` rows: a job's driver calls it
once the exported model is in the object store.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.tasks import known_task
from doctune.services.tenants import (DEFAULT_PAGE_SIZE, RowPage, check_tenant_access, delete_with_files, get_owned,
                                      list_owned, storage_refusal)
from doctune.spec import JobSpec
from doctune.states import DeploymentState
from doctune.store.db import Deployment, DeploymentRevision, Model, take_quota_lock
from doctune.store.objects import tenant_key


def model_prefix(tenant: str, model_id: str) -> str:
    """Where a model's exported files live in the object store."""
    return tenant_key(tenant, "models", model_id)


def register_model(p: Platform, *, model_id: str, job_id: str, spec: JobSpec, merged: bool,
                   labels: list[str] | None, metrics: dict[str, Any], session: Session | None = None) -> Model:
    """Record an exported model of ``spec.tenant``: its files under :func:`model_prefix`, its
    test/dev/baseline metrics, and how to serve it (labels, sequence length, merged or adapter).
    ``session``: add it in the caller's transaction (the job's driver marks the job succeeded in it)."""
    model = Model(
        id=model_id, tenant_id=spec.tenant, job_id=job_id, task=spec.task,
        uri=p.objects.uri(model_prefix(spec.tenant, model_id)), merged=merged,
        info={"labels": labels, "max_seq_length": spec.max_seq_length},
        metrics={k: metrics[k] for k in ("test", "dev", "baseline")},
    )
    if session is not None:
        session.add(model)
        return model
    with p.db.session() as s:
        s.add(model)
    return model


def export_refusal(p: Platform, tenant: str, model_id: str) -> DoctuneError | None:
    """A job's exported model is kept only if the tenant's storage, with it, stays within quota
    (checked under the quota lock). Over quota: its files are removed and the refusal returned."""
    prefix = model_prefix(tenant, model_id) + "/"
    with p.db.session() as s:
        take_quota_lock(s)
        size = p.objects.prefix_bytes(prefix)
        refusal = storage_refusal(p, tenant, 0, f"the exported model {model_id} ({size} bytes, counted)")
    if refusal is None:
        return None
    p.objects.delete_prefix(prefix)
    return DoctuneError(refusal.message.replace("would pass", "passes") + "; the model was not kept",
                        "quota_exceeded", field="max_storage_bytes", tenant_error=True)


def get_model(p: Platform, caller: Principal, model_id: str) -> Model:
    return get_owned(p, caller, Model, model_id, "model", "model_id")


def list_models(p: Platform, caller: Principal, *, task: str | None = None, limit: int = DEFAULT_PAGE_SIZE,
                cursor: str | None = None) -> RowPage[Model]:
    return list_owned(p, caller, Model, limit=limit, cursor=cursor, task=known_task(task))


def model_in_use(p: Platform, model: Model) -> DoctuneError | None:
    """Why ``model`` cannot be deleted: a deployment serves it, or a deployment's revision history
    (what rollback returns to) names it. None when nothing refers to it."""
    with p.db.session() as s:
        deps = s.execute(select(Deployment).where(Deployment.model_id == model.id)).scalars().all()
        revision = s.execute(select(DeploymentRevision).where(DeploymentRevision.model_id == model.id)
                             .order_by(DeploymentRevision.id).limit(1)).scalar_one_or_none()
    for dep in deps:
        if dep.status != DeploymentState.DELETED:
            return DoctuneError(f"model {model.id} is served by deployment {dep.id} (endpoint {dep.route}, {dep.status}); "
                                f"undeploy it first (DELETE /v1/deployments/{dep.id}), then delete the model",
                                "conflict", field="model_id", tenant_error=True)
    if deps or revision is not None:
        dep_id, number = (revision.deployment_id, revision.revision) if revision is not None else (deps[0].id, deps[0].revision)
        return DoctuneError(f"model {model.id} is revision {number} in the history of deployment {dep_id}, which a "
                            "rollback can return to; a model a deployment has served is kept",
                            "conflict", field="model_id", tenant_error=True)
    return None


def delete_model(p: Platform, caller: Principal, model_id: str) -> Model:
    """Delete a model's files and its record, unless a deployment serves it or ever served it."""
    model = get_model(p, caller, model_id)
    check_tenant_access(caller, model.tenant_id, write=True)
    refusal = model_in_use(p, model)
    if refusal is not None:
        raise refusal
    delete_with_files(p, Model, model.id, model.uri, "model")
    return model


def presign_model_files(p: Platform, caller: Principal, model_id: str, expires_s: int = 900) -> list[dict]:
    """Short-lived download URLs for the caller's own model files; no store credentials leave."""
    model = get_model(p, caller, model_id)
    prefix = p.objects.key_of(model.uri).rstrip("/") + "/"
    return [
        {"path": key[len(prefix):], "bytes": size, "url": p.objects.presign_download(key, expires_s),
         "expires_s": expires_s}
        for key, size in p.objects.list_objects(prefix)
    ]
