"""The REST API: routes translate HTTP to service calls, and DoctuneErrors to HTTP.

Started by `doctune up` (uvicorn, 127.0.0.1) or by the Helm chart's Deployment.
Every route but /healthz needs ``Authorization: Bearer <api key>``. Errors are
always ``{"error": {"code", "message", "field"?}}``; never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from doctune.errors import DoctuneError, from_validation_error
from doctune.services import datasets as datasets_svc
from doctune.services import deployments as deployments_svc
from doctune.services import jobs as jobs_svc
from doctune.services import plans as plans_svc
from doctune.services import registry as registry_svc
from doctune.services import sweeps as sweeps_svc
from doctune.services import tenants as tenants_svc
from doctune.services import usage as usage_svc
from doctune.services import Platform, Principal
from doctune.spec import DeploymentSpec, PromotionSpec, QuotaSpec, TenantSpec, parse_job_spec, parse_sweep_spec

log = logging.getLogger("doctune.api")


def _job_view(job) -> dict[str, Any]:
    return {
        "id": job.id,
        "tenant": job.tenant_id,
        "task": job.task,
        "status": job.status,
        "spec": job.spec,
        "progress": job.progress or {},
        "metrics": job.metrics or {},
        "report": jobs_svc.job_report(job),
        "error": job.error,
        "model_id": job.model_id,
        "attempt": job.attempt,
        "pause_requested": job.control == "pause",
        "resume_from": job.resume_from,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _sweep_view(sw) -> dict[str, Any]:
    return {"id": sw.id, "tenant": sw.tenant_id, "task": sw.task, "status": sw.status, "spec": sw.spec,
            "best_job_id": sw.best_job_id, "error": sw.error,
            "created_at": sw.created_at.isoformat() if sw.created_at else None,
            "finished_at": sw.finished_at.isoformat() if sw.finished_at else None}


def _dataset_view(ds) -> dict[str, Any]:
    return {"id": ds.id, "tenant": ds.tenant_id, "name": ds.name, "task": ds.task, "uri": ds.uri, "info": ds.info}


def _model_view(m) -> dict[str, Any]:
    return {"id": m.id, "tenant": m.tenant_id, "job_id": m.job_id, "task": m.task, "uri": m.uri,
            "merged": m.merged, "info": m.info, "metrics": m.metrics}


def _deployment_view(d, serve_url: str) -> dict[str, Any]:
    return {"id": d.id, "tenant": d.tenant_id, "name": d.name, "model_id": d.model_id, "status": d.status,
            "route": d.route, "url": f"{serve_url}{d.route}/predict", "message": d.message, "spec": d.spec,
            # quantize: int8 only, once measured: {"metric", "fp32", "int8", "change", "examples", "seconds"}
            "quantization": (d.info or {}).get("quantization"),
            "revision": d.revision}  # its current revision (GET /v1/deployments/{id}/revisions)


def _revision_view(r, current: int) -> dict[str, Any]:
    return {"revision": r.revision, "current": r.revision == current, "model_id": r.model_id, "reason": r.reason,
            "decision": r.decision, "spec": r.spec, "created_at": r.created_at.isoformat() if r.created_at else None}


def create_app(platform: Platform | None = None) -> FastAPI:
    p = platform or Platform()
    p.db.migrate()
    app = FastAPI(title="doctune", version="0.1.0")

    @app.on_event("startup")
    def _reconcile() -> None:  # a restarted API loses no job: ask Ray what happened meanwhile
        import threading

        def run() -> None:
            try:
                n = jobs_svc.reconcile_with_ray(p)
                if n:
                    log.warning("reconciled %d job(s) with the Ray Jobs API", n)
                restored = deployments_svc.reconcile_deployments(p)
                if restored:
                    log.warning("redeploying %d endpoint(s) lost with the Ray cluster", len(restored))
            except Exception:
                log.exception("could not reconcile jobs with Ray")

        if p.settings.ray_dashboard_url:
            threading.Thread(target=run, daemon=True).start()
            from doctune.services.scheduler import Dispatcher

            p.dispatcher = Dispatcher(p)
            p.dispatcher.start()

    @app.on_event("shutdown")
    def _stop_dispatcher() -> None:
        if p.dispatcher is not None:
            p.dispatcher.stop()

    @app.exception_handler(DoctuneError)
    async def _doctune_error(_: Request, exc: DoctuneError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = from_validation_error(exc, "invalid_request")
        return JSONResponse(err.to_dict(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict", 413: "too_large"}.get(
            exc.status_code, "invalid_request" if exc.status_code < 500 else "internal")
        message = str(exc.detail) if exc.status_code != 404 else "no such route; see /docs for the API"
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        err = DoctuneError("internal error; the platform logged the details", "internal")
        return JSONResponse(err.to_dict(), status_code=500)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        limit = p.settings.max_upload_bytes + 1024 * 1024
        if length and length.isdigit() and int(length) > limit:
            err = DoctuneError(
                f"request body is {length} bytes, over the {p.settings.max_upload_bytes}-byte upload limit",
                "too_large",
                field="body",
            )
            return JSONResponse(err.to_dict(), status_code=413)
        return await call_next(request)

    def caller(authorization: str | None = Header(default=None)) -> Principal:
        return tenants_svc.authenticate(p, authorization)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # ---------------------------------------------------------------- tenants
    @app.post("/v1/tenants", status_code=201)
    def create_tenant(body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        if not who.is_admin:
            raise DoctuneError("only a platform admin can create tenants", "forbidden")
        spec = _parse(TenantSpec, body)
        tenant, key = tenants_svc.create_tenant(p, who, spec)
        return {"tenant": {"id": tenant.id, "display_name": tenant.display_name}, "api_key": key}

    @app.get("/v1/tenants/{tenant_id}")
    def get_tenant(tenant_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return tenants_svc.describe_tenant(p, who, tenant_id)

    @app.put("/v1/tenants/{tenant_id}/quota")
    def set_quota(tenant_id: str, body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        if not who.is_admin:
            raise DoctuneError("only a platform admin can set quotas", "forbidden")
        spec = _parse(QuotaSpec, body)
        return tenants_svc.set_quota(p, who, tenant_id, spec.model_dump(exclude_unset=True))

    @app.get("/v1/keys")
    def list_keys(who: Principal = Depends(caller)) -> list[dict[str, Any]]:
        return tenants_svc.list_keys(p, who)

    @app.post("/v1/keys", status_code=201)
    def create_key(body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        tenant = _claim_tenant(body, who).get("tenant")
        if not isinstance(tenant, str) or not tenant:
            raise DoctuneError("name the tenant the key is for", "invalid_request", field="tenant")
        role = body.get("role", "member")
        if role not in ("member", "viewer"):
            raise DoctuneError(f"role must be 'member' or 'viewer'; got {role!r}", "invalid_request", field="role")
        view, key = tenants_svc.create_key(p, who, tenant, role)
        return {**view, "api_key": key}

    @app.post("/v1/keys/{key_id}/rotate", status_code=201)
    def rotate_key(key_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        view, key = tenants_svc.rotate_key(p, who, key_id)
        return {**view, "api_key": key}

    @app.delete("/v1/keys/{key_id}")
    def revoke_key(key_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return tenants_svc.revoke_key(p, who, key_id)

    @app.get("/v1/whoami")
    def whoami(who: Principal = Depends(caller)) -> dict[str, Any]:
        return {"tenant": who.tenant_id, "role": who.role, "key_id": who.key_id}

    # ---------------------------------------------------------------- datasets
    @app.post("/v1/datasets", status_code=201)
    async def upload_dataset(
        name: str = Form(...),
        task: str = Form(...),
        tenant: str | None = Form(None),
        dev_fraction: float = Form(0.1, gt=0, lt=0.5, description="Fraction of 'data' held out for dev."),
        test_fraction: float = Form(0.1, gt=0, lt=0.5, description="Fraction of 'data' held out for test."),
        seed: int = Form(42, ge=0, le=2**32 - 1, description="Seed of the stratified split."),
        data: UploadFile | None = None,
        train: UploadFile | None = None,
        dev: UploadFile | None = None,
        test: UploadFile | None = None,
        who: Principal = Depends(caller),
    ) -> dict[str, Any]:
        files = {k: await f.read() for k, f in (("data", data), ("train", train), ("dev", dev), ("test", test)) if f}
        row = datasets_svc.upload_dataset(
            p, who, tenant=tenant or who.tenant_id or "", name=name, task=task, files=files,
            dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed,
        )
        return _dataset_view(row)

    @app.get("/v1/datasets")
    def list_datasets(who: Principal = Depends(caller)) -> list[dict[str, Any]]:
        return [_dataset_view(d) for d in datasets_svc.list_datasets(p, who)]

    @app.get("/v1/datasets/{dataset_id}")
    def get_dataset(dataset_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _dataset_view(datasets_svc.get_dataset(p, who, dataset_id))

    # ---------------------------------------------------------------- jobs
    @app.post("/v1/jobs", status_code=201)
    def submit_job(body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        return _job_view(jobs_svc.submit_job(p, who, parse_job_spec(_claim_tenant(body, who))))

    @app.post("/v1/jobs/plan")
    def plan_job(body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        """Pre-flight plan for a JobSpec (nothing runs): memory per worker, tokens, steps,
        expected time from measured throughput, and warnings when it will not fit."""
        return plans_svc.plan_job(p, who, parse_job_spec(_claim_tenant(body, who)))

    @app.get("/v1/jobs")
    def list_jobs(who: Principal = Depends(caller)) -> list[dict[str, Any]]:
        return [_job_view(j) for j in jobs_svc.list_jobs(p, who)]

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _job_view(jobs_svc.get_job(p, who, job_id))

    @app.get("/v1/jobs/{job_id}/events")
    def job_events(job_id: str, after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000), who: Principal = Depends(caller)) -> dict[str, Any]:
        events = jobs_svc.list_events(p, who, job_id, after=after, limit=limit)
        return {
            "events": [{"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "status": e.status, "reason": e.reason, "data": e.data}
                       for e in events],
            "next_after": events[-1].id if events else after,
        }

    @app.get("/v1/jobs/{job_id}/logs")
    def job_logs(job_id: str, offset: int = Query(0, ge=0), who: Principal = Depends(caller)) -> dict[str, Any]:
        text = jobs_svc.job_logs(p, who, job_id)
        return {"text": text[offset:], "offset": len(text)}

    @app.post("/v1/jobs/{job_id}/pause")
    def pause_job(job_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _job_view(jobs_svc.pause_job(p, who, job_id))

    @app.post("/v1/jobs/{job_id}/resume")
    def resume_job(job_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _job_view(jobs_svc.resume_job(p, who, job_id))

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel_job(job_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _job_view(jobs_svc.cancel_job(p, who, job_id))

    # ---------------------------------------------------------------- sweeps
    @app.post("/v1/sweeps", status_code=201)
    def submit_sweep(body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        """A JobSpec (``job``) plus a search space over its fields, searched by Ray Tune."""
        return _sweep_view(sweeps_svc.submit_sweep(p, who, parse_sweep_spec(_claim_tenant(body, who))))

    @app.get("/v1/sweeps")
    def list_sweeps(who: Principal = Depends(caller)) -> list[dict[str, Any]]:
        return [_sweep_view(x) for x in sweeps_svc.list_sweeps(p, who)]

    @app.get("/v1/sweeps/{sweep_id}")
    def get_sweep(sweep_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _sweep_view(sweeps_svc.get_sweep(p, who, sweep_id))

    @app.get("/v1/sweeps/{sweep_id}/leaderboard")
    def sweep_leaderboard(sweep_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        """The sweep's trials ranked by its dev metric (ties: lower cost), with their settings."""
        return sweeps_svc.sweep_leaderboard(p, who, sweep_id)

    @app.get("/v1/leaderboard")
    def leaderboard(task: str | None = None, tenant: str | None = None, metric: str | None = None,
                    limit: int = Query(20, ge=1, le=200), who: Principal = Depends(caller)) -> dict[str, Any]:
        """A tenant's finished jobs (single jobs and sweep trials) ranked on dev, one board per task."""
        return sweeps_svc.tenant_leaderboard(p, who, tenant or who.tenant_id or "", task, metric, limit)

    # ---------------------------------------------------------------- models
    @app.get("/v1/models/{model_id}")
    def get_model(model_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _model_view(registry_svc.get_model(p, who, model_id))

    @app.get("/v1/models/{model_id}/files")
    def model_files(model_id: str, who: Principal = Depends(caller)) -> list[dict[str, Any]]:
        return registry_svc.presign_model_files(p, who, model_id)

    @app.get("/v1/usage")
    def usage(who: Principal = Depends(caller)) -> list[dict[str, Any]]:
        return usage_svc.tenant_usage(p, who)

    # ---------------------------------------------------------------- deployments
    @app.post("/v1/deployments", status_code=201)
    def deploy(body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        spec = _parse(DeploymentSpec, _claim_tenant(body, who))
        return _deployment_view(deployments_svc.deploy_model(p, who, spec), p.settings.serve_url)

    @app.delete("/v1/deployments/{deployment_id}")
    def delete_deployment(deployment_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        """Undeploy: the endpoint goes away; the deployment record and its model stay."""
        return _deployment_view(deployments_svc.delete_deployment(p, who, deployment_id), p.settings.serve_url)

    @app.get("/v1/deployments/{deployment_id}")
    def get_deployment(deployment_id: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return _deployment_view(deployments_svc.get_deployment(p, who, deployment_id), p.settings.serve_url)

    @app.get("/v1/deployments/{deployment_id}/revisions")
    def deployment_revisions(deployment_id: str, who: Principal = Depends(caller)) -> list[dict[str, Any]]:
        """Every deploy, promotion and rollback of the deployment, oldest first."""
        rows = deployments_svc.revisions(p, who, deployment_id)
        return [_revision_view(r, rows[-1].revision) for r in rows]  # written with the deployment: the last is current

    @app.post("/v1/deployments/{deployment_id}/rollback")
    def rollback(deployment_id: str, body: dict[str, Any] | None = None, who: Principal = Depends(caller)) -> dict[str, Any]:
        """Redeploy an earlier revision ({"revision": n}; default: the one before the current one) as a new revision."""
        deployments_svc.get_deployment(p, who, deployment_id)  # another tenant's id: 404 before any field error
        body = body or {}
        unknown = sorted(set(body) - {"revision"})
        if unknown:
            raise DoctuneError(f"unknown field(s) {', '.join(unknown)}; the body takes only revision (a number), or nothing",
                               "invalid_request", field=unknown[0])
        return _deployment_view(deployments_svc.rollback(p, who, deployment_id, body.get("revision")), p.settings.serve_url)

    # ---------------------------------------------------------------- promotions
    @app.post("/v1/promotions")
    def promote(body: dict[str, Any], who: Principal = Depends(caller)) -> dict[str, Any]:
        """Champion/challenger: the challenger (model_id, or sweep_id's winner) replaces the model served at
        the endpoint only if its test metric is better on the same dataset, or if force; "kept" changes nothing."""
        result = deployments_svc.promote(p, who, _parse(PromotionSpec, _claim_tenant(body, who)))
        dep = result["deployment"]
        return {**result, "deployment": _deployment_view(dep, p.settings.serve_url) if dep is not None else None}

    return app


def _claim_tenant(body: Any, who: Principal) -> dict[str, Any]:
    """Default a body's tenant to the caller's, and refuse another tenant's before
    validating anything else: a foreign tenant learns nothing from field errors."""
    if not isinstance(body, dict):
        raise DoctuneError("request body must be a JSON object", "invalid_request")
    if "tenant" not in body and who.tenant_id:
        body = {**body, "tenant": who.tenant_id}
    if isinstance(body.get("tenant"), str):
        tenants_svc.check_tenant_access(who, body["tenant"], write=True)
    return body


def _parse(model, body: Any):
    from pydantic import ValidationError

    if not isinstance(body, dict):
        raise DoctuneError("request body must be a JSON object", "invalid_request")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
