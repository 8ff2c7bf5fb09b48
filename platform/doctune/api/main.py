"""The REST API: ``create_app`` builds the FastAPI app from one router per resource
(``doctune.api.routes``), the error handlers (``doctune.api.errors``), the body-size cap and the rate limits (``doctune.api.metering``).

Started by `doctune up` (``uvicorn doctune.api.app:create_app --factory``, 127.0.0.1) or by the
Helm chart's Deployment. Every route but /healthz and /metrics (``doctune.api.routes.metrics``) needs
``Authorization: Bearer <api key>``.
At start-up (the lifespan) the database is migrated and, with a Ray cluster configured, the
dispatcher starts, and so does the reconciler, which compares jobs, sweeps and endpoints with the
cluster at once and every ``reconcile_interval_s`` (``doctune.services.reconcile``); both stop at shutdown.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from doctune.api.deps import document_spec_bodies
from doctune.api.errors import ERROR_RESPONSES, install_error_handlers
from doctune.api.idempotency import IdempotencyMiddleware
from doctune.api.metering import BodyLimit, RateLimitByAddress, api_rate_limiter
from doctune.api.monitoring import RequestMetrics, metrics_registry
from doctune.api.routes import ROUTERS
from doctune.api.routes import base_models as base_models_routes
from doctune.services import Platform
from doctune.services import tasks as tasks_svc
from doctune.services.reconcile import Reconciler
from doctune.services.scheduler import Dispatcher



@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    p: Platform = app.state.platform
    p.db.migrate()
    reconciler = None
    if p.settings.ray_dashboard_url:
        p.dispatcher = Dispatcher(p)
        p.dispatcher.start()
        reconciler = Reconciler(p).start()  # at once, then every reconcile_interval_s
    try:
        yield
    finally:
        if reconciler is not None:
            reconciler.stop()
        if p.dispatcher is not None:
            p.dispatcher.stop()


def document_task_names(document: dict) -> dict:
    """The ``task`` field of request bodies (a JobSpec, the dataset upload form) lists the registered
    task plugins: a plugin registered from outside the package shows up here with no edit to the API.
    Answers keep a plain string, so a row of a plugin since removed still matches its schema."""
    names = tasks_svc.task_names()
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        if name != "JobSpec" and not name.startswith("Body_"):
            continue
        task = (schema.get("properties") or {}).get("task")
        if task is not None and task.get("type") == "string":
            task["enum"] = names
            task["description"] = f"{task.get('description', '')} One of: {', '.join(names)}.".strip()
    return document


def create_app(platform: Platform | None = None) -> FastAPI:
    """The app over ``platform`` (default: one from the environment's settings). Nothing touches
    the database or the cluster until the app starts (its lifespan)."""
    app = FastAPI(title="doctune", version="0.1.0", lifespan=lifespan,
                  description="Fine-tune and serve document-AI models. Errors are always "
                              '`{"error": {"code", "message", "field"?, "errors"?, "tenant_error"}}`.')
    app.state.platform = platform or Platform()
    install_error_handlers(app)
    settings = app.state.platform.settings
    app.state.rate_limiter = api_rate_limiter(settings)
    # added first = runs last: repeats of a create request with the same Idempotency-Key get the first answer
    app.add_middleware(IdempotencyMiddleware, max_body_bytes=settings.max_upload_bytes + 1024 * 1024)
    app.add_middleware(BodyLimit, settings=settings,  # the address limit, then the body cap, then idempotency
                       own_limits={base_models_routes.PATH: (settings.max_base_model_bytes, "DOCTUNE_MAX_BASE_MODEL_BYTES")})
    app.add_middleware(RateLimitByAddress, limiter=app.state.rate_limiter)
    # added last = runs first: counts and times every answer, the limits' 429s and 413s included
    app.state.metrics_registry, requests, latency = metrics_registry(app.state.platform)
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)
    for router in ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            # the routers' own routes carry their full paths: they are included without a further prefix
            document = document_spec_bodies(document, [route for r in ROUTERS for route in r.routes])
            app.openapi_schema = document_task_names(document)
        return app.openapi_schema

    app.openapi = openapi
    return app
