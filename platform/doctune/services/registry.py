"""The model registry: evaluated, exported checkpoints ("models") per tenant.

:func:`register_model` is the only writer of ``Model`` rows: a job's driver calls it
once the exported model is in the object store.
"""

from __future__ import annotations

from typing import Any

from doctune.services import Platform, Principal
from doctune.services.tenants import get_owned
from doctune.spec import JobSpec
from doctune.store.db import Model
from doctune.store.objects import tenant_key


def model_prefix(tenant: str, model_id: str) -> str:
    """Where a model's exported files live in the object store."""
    return tenant_key(tenant, "models", model_id)


def register_model(p: Platform, *, model_id: str, job_id: str, spec: JobSpec, merged: bool,
                   labels: list[str] | None, metrics: dict[str, Any]) -> Model:
    """Record an exported model of ``spec.tenant``: its files under :func:`model_prefix`, its
    test/dev/baseline metrics, and how to serve it (labels, sequence length, merged or adapter)."""
    model = Model(
        id=model_id, tenant_id=spec.tenant, job_id=job_id, task=spec.task,
        uri=p.objects.uri(model_prefix(spec.tenant, model_id)), merged=merged,
        info={"labels": labels, "max_seq_length": spec.max_seq_length},
        metrics={k: metrics[k] for k in ("test", "dev", "baseline")},
    )
    with p.db.session() as s:
        s.add(model)
    return model


def get_model(p: Platform, caller: Principal, model_id: str) -> Model:
    return get_owned(p, caller, Model, model_id, "model", "model_id")


def presign_model_files(p: Platform, caller: Principal, model_id: str, expires_s: int = 900) -> list[dict]:
    """Short-lived download URLs for the caller's own model files; no store credentials leave."""
    model = get_model(p, caller, model_id)
    prefix = p.objects.key_of(model.uri).rstrip("/") + "/"
    pages = p.objects.client.get_paginator("list_objects_v2").paginate(Bucket=p.objects.bucket, Prefix=prefix)
    return [
        {"path": o["Key"][len(prefix):], "bytes": o["Size"], "url": p.objects.presign_download(o["Key"], expires_s),
         "expires_s": expires_s}
        for page in pages for o in page.get("Contents", [])
    ]
