"""One Ray Serve application per deployment: a task endpoint behind tenant API keys.

Built by ``ray_jobs.deploy`` on the Ray cluster. Each replica downloads the
exported model from the object store once (and, with ``quantize: int8``, quantizes
its linear layers; see ``doctune.serve.quantize``), checks every request's key
(401 without a valid key, 403 for another tenant's key), batches concurrent
requests together (``max_batch_size`` requests, waiting at most
``batch_wait_timeout_s`` for them), and answers with the task plugin's predictions.

Each replica emits Prometheus metrics through Ray's metrics agent (``ray.serve.metrics``;
Ray prefixes their names with ``ray_`` and adds the tags deployment, replica and
application): requests by tenant, endpoint and status code, latency, inputs per model
call, and a replicas gauge that every live replica sets to 1.
"""


import os
import time
from typing import Any, Awaitable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from doctune.errors import DoctuneError
from doctune.metering import RateLimited, parse_json
from doctune.serve.documents_in import document_body, is_multipart, with_document
from doctune.store.paths import make_scratch
from doctune.tasks.serving import MAX_INPUTS_PER_REQUEST

api = FastAPI(title="doctune endpoint")
# /openapi.json and /docs answer with this replica's task document (TaskEndpoint.openapi_document). serve.ingress
# serves a copy of `api` made when the class is decorated: it keeps this attribute, not later changes to `api`
api.openapi = lambda: serve.get_replica_context().servable_object.openapi_document

MAX_ONGOING_REQUESTS = 16
# seconds, for POST /predict as the replica sees it (auth, batching wait, model call)
LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
# inputs per model call: up to max_batch_size requests of up to 64 inputs each
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]


class EndpointReplica:
    """What every endpoint replica does around its model: the API-key check and the request
    metrics (tagged by tenant and endpoint). Subclasses set ``stores``, ``keys`` and ``tenant_id``."""

    def _start_metrics(self, tenant_id: str, endpoint: str, *, batch_sizes: bool = True) -> None:
        from ray.serve import metrics

        tags = {"tenant": tenant_id, "endpoint": endpoint}
        self.requests_total = metrics.Counter(
            "doctune_endpoint_requests_total", description="POST /predict requests answered, by HTTP status code.",
            tag_keys=("tenant", "endpoint", "status_code"))
        self.latency = metrics.Histogram(
            "doctune_endpoint_latency_seconds", description="Seconds a replica took to answer POST /predict.",
            boundaries=LATENCY_BOUNDARIES, tag_keys=("tenant", "endpoint"))
        self.replicas = metrics.Gauge(
            "doctune_endpoint_replicas", description="1 per live replica (the replica tag tells them apart); "
            "sum by tenant and endpoint for the replica count.", tag_keys=("tenant", "endpoint"))
        own = [self.requests_total, self.latency, self.replicas]
        if batch_sizes:  # where the model runs (a multiplexed router's batches are its shared replicas')
            self.batch_size = batch_size_histogram()
            own.append(self.batch_size)
        for metric in own:
            metric.set_default_tags(dict(tags))  # a copy each: Serve adds its own tags to the dict it is given
        self.replicas.set(1)

    def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s`` (10 s). The replica gauge is set again here:
        Ray evicts a gauge value that was not set again within two metric-export intervals, and a
        replica that had answered requests read 0 replicas on the deployments page."""
        gauge = getattr(self, "replicas", None)  # a health check never fails on metrics
        if gauge is not None:
            gauge.set(1)

    def _open_stores(self, door: str = "endpoint") -> None:
        """The replica's stores, its key checker and rate limits (no service layer runs in a replica).
        ``door`` names the rate-limit counters (each endpoint counts its own)."""
        from doctune.serve.auth import KeyChecker, endpoint_rate_limiter
        from doctune.store.stores import Stores

        self.stores = Stores()
        self.keys = KeyChecker(self.stores.key_verifier, endpoint_rate_limiter(self.stores.settings, door))

    async def _authorize(self, request: Request) -> None:
        """429 past a rate limit, 401 without a valid key, 403 for another tenant's key."""
        client = request.client
        await self.keys.check_endpoint_access(request.headers.get("authorization"), self.tenant_id,
                                              client.host if client else None)

    async def _authorized_body(self, request: Request) -> Any:
        """The request's JSON body, once its key may use this endpoint: 413 past
        ``endpoint_max_body_bytes`` (counted as it streams in), 400 when not JSON or nested too deep.
        A multipart body with a document ``file`` gives ``{"text": <its text>}`` (``documents_in``)."""
        await self._authorize(request)
        cap, raw = self.stores.settings.endpoint_max_body_bytes, bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > cap:
                raise DoctuneError(f"request body is over the {cap}-byte limit of an endpoint; send fewer or shorter "
                                   "inputs per request, or ask the platform admin to raise DOCTUNE_ENDPOINT_MAX_BODY_BYTES",
                                   "too_large", field="body")
        if not raw.strip():
            raise DoctuneError("request body must be JSON", "invalid_request", field="body")
        if is_multipart(request.headers.get("content-type")):  # a document: its text is the body
            body, request.state.document = await document_body(bytes(raw), request.headers["content-type"])
            return body
        return parse_json(bytes(raw), "body")

    @staticmethod
    def _check_count(inputs: list[Any]) -> None:
        if len(inputs) > MAX_INPUTS_PER_REQUEST:
            raise DoctuneError(f"at most {MAX_INPUTS_PER_REQUEST} inputs per request; got {len(inputs)}",
                               "invalid_request", field="inputs")

    async def _counted(self, answer: Awaitable[JSONResponse]) -> JSONResponse:
        """``answer``, counted by status code and timed (a 500 unless an answer is returned); the
        time is also the answer's ``Server-Timing`` header."""
        began, status = time.perf_counter(), 500
        try:
            response = await answer
            status = response.status_code
        finally:
            took = time.perf_counter() - began
            self.requests_total.inc(tags={"status_code": str(status)})
            self.latency.observe(took)
        # what the replica spent (key check, batching, model call): the rest of a client's
        # latency is the network and Serve's proxy (https://www.w3.org/TR/server-timing/)
        response.headers["Server-Timing"] = f"replica;dur={1000 * took:.2f}"
        return response


def error_json(exc: DoctuneError) -> JSONResponse:
    """An endpoint's JSON error, with ``Retry-After`` when it is a rate limit."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)


def split_batch(preds: list[Any], requests: list[list[Any]]) -> list[list[Any]]:
    """A batched model call's predictions, handed back per request, in order."""
    out, i = [], 0
    for r in requests:
        out.append(preds[i : i + len(r)])
        i += len(r)
    return out


def batch_size_histogram() -> Any:
    from ray.serve import metrics

    return metrics.Histogram(
        "doctune_endpoint_batch_size", description="Inputs per model call (batched requests together).",
        boundaries=BATCH_SIZE_BOUNDARIES, tag_keys=("tenant", "endpoint"))


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, health_check_period_s=10)
@serve.ingress(api)
class TaskEndpoint(EndpointReplica):
    def __init__(self, *, deployment_id: str, tenant_id: str, endpoint: str, model_id: str, model_uri: str, task: str,
                 home: "str | None", max_batch_size: int = 8, batch_wait_timeout_s: float = 0.01,
                 quantize: str = "none") -> None:
        if home:
            os.environ["DOCTUNE_HOME"] = home
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import json

        import torch
        from transformers import AutoTokenizer

        from doctune.tasks import get_task

        torch.set_num_threads(1)
        self._open_stores(f"endpoint:{deployment_id}")
        self.deployment_id, self.tenant_id, self.model_id = deployment_id, tenant_id, model_id
        self.plugin = get_task(task)
        local = make_scratch("doctune-model-")
        store = self.stores.objects
        store.download_dir(store.key_of(model_uri), local)
        self.meta = json.loads((local / "doctune.json").read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.model = self.plugin.load_model(str(local))
        if quantize == "int8":
            from doctune.serve.quantize import quantize_int8

            self.model = quantize_int8(self.model, inplace=True)
        self._predict_batch.set_max_batch_size(max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._start_metrics(tenant_id, endpoint)
        from doctune.serve.schemas import endpoint_openapi

        self.openapi_document = endpoint_openapi(task, f"doctune {task} endpoint {tenant_id}/{endpoint}")

    # the spec's max_batch_size and batch_wait_timeout_s replace these in __init__
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _predict_batch(self, requests: list[list[str]]) -> list[list[dict[str, Any]]]:
        flat = [t for r in requests for t in r]
        self.batch_size.observe(len(flat))
        preds = self.plugin.predict(self.model, self.tokenizer, flat, self.meta, self.meta.get("max_seq_length", 256))
        return split_batch(preds, requests)

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        return await self._counted(self._predict(request))

    async def _predict(self, request: Request) -> JSONResponse:
        try:
            inputs = self.plugin.parse_request(await self._authorized_body(request))
            check = getattr(self.plugin, "check_request", None)  # e.g. the input shape the served model takes
            if check is not None:
                check(inputs, self.meta)
            self._check_count(inputs)
            preds = await self._predict_batch(inputs)
            return JSONResponse(with_document({"model_id": self.model_id, "predictions": preds},
                                              getattr(request.state, "document", None)))
        except DoctuneError as exc:
            return error_json(exc)

    @api.get("/")
    async def describe(self, request: Request) -> JSONResponse:
        try:
            await self._authorize(request)
        except DoctuneError as exc:
            return error_json(exc)
        return JSONResponse({"model_id": self.model_id, "task": self.meta["task"], "labels": self.meta.get("labels")})


def replica_options(spec: Any) -> dict[str, Any]:
    """Serve options every endpoint deployment takes from a DeploymentSpec: autoscaling, and
    room for a full batch (a replica holds at most ``max_ongoing_requests`` requests at once)."""
    return {
        "max_ongoing_requests": max(MAX_ONGOING_REQUESTS, spec.max_batch_size),
        "autoscaling_config": {
            "min_replicas": spec.min_replicas,
            "max_replicas": spec.max_replicas,
            "target_ongoing_requests": spec.target_ongoing_requests,
            "upscale_delay_s": spec.upscale_delay_s,
            "downscale_delay_s": spec.downscale_delay_s,
        },
    }


def build_application(deployment: Any, model: Any, home: str | None):
    from doctune.spec import DeploymentSpec

    spec = DeploymentSpec.from_stored(deployment.spec)  # fields added since get their defaults, dropped ones go
    from doctune.serve.names import app_name

    return TaskEndpoint.options(
        name=app_name(deployment), **replica_options(spec),
        ray_actor_options={"num_cpus": spec.num_cpus},
    ).bind(
        deployment_id=deployment.id, tenant_id=deployment.tenant_id, endpoint=deployment.name, model_id=model.id,
        model_uri=model.uri, task=model.task, home=home, max_batch_size=spec.max_batch_size,
        batch_wait_timeout_s=spec.batch_wait_timeout_s, quantize=spec.quantize,
    )
