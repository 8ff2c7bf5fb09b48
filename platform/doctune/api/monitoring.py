"""The API's own metrics and the registry ``/metrics`` serves (``doctune.api.routes.metrics``).

:func:`metrics_registry` makes one ``CollectorRegistry`` per app (not prometheus_client's global
one: several apps in one process, as in the tests, would collide) holding the platform's job
gauges (``doctune.services.monitoring.PlatformCollector``) and the request metrics that
:class:`RequestMetrics` records: ``doctune_api_requests_total{method,route,status_code}`` and
``doctune_api_request_duration_seconds{method,route}``. ``route`` is the matched route's template
(``/v1/jobs/{job_id}``), never the raw path, so that ids in URLs cannot grow the series without bound;
a path no route matches is counted as ``<unmatched>``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from doctune.services import Platform
from doctune.services.monitoring import PlatformCollector

__all__ = ["RequestMetrics", "metrics_registry"]

UNMATCHED = "<unmatched>"


def metrics_registry(p: Platform) -> tuple[CollectorRegistry, Counter, Histogram]:
    """A fresh registry with the platform's gauges, plus the request counter and histogram registered in it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(p))
    requests = Counter("doctune_api_requests", "API requests answered, by method, route and HTTP status code.",
                       ["method", "route", "status_code"], registry=registry)
    latency = Histogram("doctune_api_request_duration_seconds", "Seconds the API took to answer a request.",
                        ["method", "route"], registry=registry)
    return registry, requests, latency


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request (answers of inner middleware, such as a
    429 or a 413, included)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}  # what the client sees when the app raises before answering

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _route_of(scope)
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            self.requests.labels(scope["method"], route, str(status["code"])).inc()


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")  # the router puts the matched route into the (shared) scope
    return getattr(route, "path", None) or UNMATCHED
