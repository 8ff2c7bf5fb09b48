"""The model registry: evaluated, exported checkpoints ("models") per tenant."""

from __future__ import annotations

from doctune.errors import DoctuneError
from doctune.services._context import Platform, Principal
from doctune.services.tenants import visible
from doctune.store.db import Model


def get_model(p: Platform, caller: Principal, model_id: str) -> Model:
    with p.db.session() as s:
        row = s.get(Model, model_id)
    if row is None or not visible(caller, row.tenant_id):
        raise DoctuneError(f"model {model_id!r} not found", "not_found", field="model_id")
    return row
