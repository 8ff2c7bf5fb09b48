"""The model registry: evaluated, exported checkpoints ("models") per tenant."""

from __future__ import annotations

from doctune.services._context import Platform, Principal
from doctune.services.tenants import get_owned
from doctune.store.db import Model


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
