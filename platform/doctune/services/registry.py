"""The model registry: evaluated, exported checkpoints ("models") per tenant."""

from __future__ import annotations

from doctune.services._context import Platform, Principal
from doctune.services.tenants import get_owned
from doctune.store.db import Model


def get_model(p: Platform, caller: Principal, model_id: str) -> Model:
    return get_owned(p, caller, Model, model_id, "model", "model_id")
