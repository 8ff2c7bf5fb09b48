"""``/metrics``: the Prometheus text format of the platform's job gauges and the API's request metrics
(``doctune.api.monitoring``). Like /healthz it needs no key, because Prometheus scrapes without one:
it carries only counts, ages and ids (tenant, job, route), no credentials and no spec contents, and the
chart's Ingress does not route it (docs/security.md, "Metrics"). Not in the OpenAPI document: it is
for Prometheus, not for clients."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
