"""``/healthz``: the only route that needs no key (load balancers and `doctune status` poll it)."""

from __future__ import annotations

from fastapi import APIRouter

from doctune.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")
