"""Multiplexed LoRA endpoints: many tenants' adapters over one base model per replica.

A deployment with ``multiplex: true`` is served by two kinds of Ray Serve application,
both started by ``ray_jobs.deploy`` (:func:`run_multiplexed`):

* one shared application per task and base model, named by :func:`shared_app_name`,
  with no HTTP route. Each :class:`AdapterServer` replica holds an
  :class:`~doctune.serve.adapters.AdapterPool` (one copy of the base model) and loads
  adapter models on demand through Ray Serve model multiplexing
  (``serve.multiplexed``), and Serve sends a request to a replica that has its adapter
  loaded when there is one. Past ``shared_max_adapters_per_replica`` an adapter is
  unloaded by :func:`~doctune.serve.adapters.pick_adapter_to_evict`: a tenant holding its
  share (``shared_adapters_per_tenant``) recycles its own least recently used adapter, so
  one tenant's traffic cannot push every other tenant's adapters out. Requests for one
  adapter are batched together (``serve.batch`` splits batches by model id); requests for
  different adapters are not.
* one router application per endpoint (:class:`AdapterRoute`, route ``/<tenant>/<name>``,
  a tenth of a CPU). It checks the API key exactly as ``doctune.serve.app.TaskEndpoint``
  does, takes the model version from the body's ``"model"`` (default: the deployment's
  model), checks that it is an adapter of the endpoint's tenant with the endpoint's task
  and base model, and forwards the inputs to the shared application under that model id.
  It answers ``{"model_id", "predictions"}`` and emits TaskEndpoint's metrics (the
  shared replicas emit the batch-size histogram).

The shared application serves every tenant's adapters, so its settings (replicas, CPUs,
batching, adapters per replica and per tenant) are the platform's (:class:`SharedServing`,
from ``DOCTUNE_SHARED_*``), never those of whichever deployment happens to start it; a
deployment's own replica settings apply to its router. It goes when no deploying or running
multiplexed deployment uses it any more (:func:`delete_unused_shared_apps`).
"""

# no `from __future__ import annotations`: FastAPI must see `request: Request` as the class, not a string
import asyncio
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from doctune.errors import HTTP_STATUS, DoctuneError
from doctune.serve.documents_in import with_document
from doctune.serve.names import app_name
from doctune.states import DeploymentState
from doctune.store.paths import make_scratch
from doctune.serve.app import (MAX_ONGOING_REQUESTS, EndpointReplica, batch_size_histogram, error_json, replica_options,
                               split_batch)

__all__ = [
    "MODEL_FIELD",
    "AdapterRoute",
    "AdapterServer",
    "SharedServing",
    "base_model_of",
    "build_router_application",
    "build_shared_application",
    "delete_unused_shared_apps",
    "find_adapter_model",
    "run_multiplexed",
    "shared_app_name",
    "shared_apps_in_use",
]

MODEL_FIELD = "model"  # the request body field naming the model version
ROUTER_NUM_CPUS = 0.1
# endpoint applications are named by deployment id (doctune.serve.names.app_name: 'dep-<hex>'), which never
# holds '_', so no endpoint's application can take a shared application's name
SHARED_PREFIX = "lora_"

router_api = FastAPI(title="doctune multiplexed endpoint")
# /openapi.json and /docs: this router's task document, with the request field `model` (as in serve/app.py)
router_api.openapi = lambda: serve.get_replica_context().servable_object.openapi_document


@dataclass(frozen=True)
class SharedServing:
    """The platform's settings of every shared application (``DOCTUNE_SHARED_*``)."""

    min_replicas: int = 1
    max_replicas: int = 2
    num_cpus: float = 0.5
    max_adapters_per_replica: int = 8
    adapters_per_tenant: int = 4
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0

    @classmethod
    def of(cls, settings: Any) -> "SharedServing":
        """From the platform's settings; a DoctuneError naming the variable when they disagree."""
        out = cls(**{name: getattr(settings, f"shared_{name}") for name in (
            "min_replicas", "max_replicas", "num_cpus", "max_adapters_per_replica", "adapters_per_tenant",
            "max_batch_size", "batch_wait_timeout_s")})
        if not 1 <= out.adapters_per_tenant <= out.max_adapters_per_replica:
            raise DoctuneError(f"DOCTUNE_SHARED_ADAPTERS_PER_TENANT ({out.adapters_per_tenant}) must be between 1 and "
                               f"DOCTUNE_SHARED_MAX_ADAPTERS_PER_REPLICA ({out.max_adapters_per_replica})",
                               "invalid_request", field="shared_adapters_per_tenant")
        if not 0 <= out.min_replicas <= out.max_replicas or out.max_replicas < 1:
            raise DoctuneError(f"DOCTUNE_SHARED_MIN_REPLICAS ({out.min_replicas}) must be <= "
                               f"DOCTUNE_SHARED_MAX_REPLICAS ({out.max_replicas}), and the latter >= 1",
                               "invalid_request", field="shared_max_replicas")
        return out


# ------------------------------------------------------------------ names and checks
def shared_app_name(task: str, base_model: str) -> str:
    """``lora_<task>_<base>``: the shared application of ``task`` adapters over ``base_model``
    (a catalog name as it is; a path or URI as a short slug plus a hash of it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", base_model.lower()).strip("-")
    if slug != base_model or len(slug) > 40:
        slug = f"{slug[-40:].strip('-')}-{hashlib.sha1(base_model.encode()).hexdigest()[:8]}".lstrip("-")
    return f"{SHARED_PREFIX}{task}_{slug}"


def base_model_of(p: Any, model: Any) -> str | None:
    """The ``base_model`` of the job that trained ``model`` (a Model row); None if not recorded."""
    from doctune.store.db import Job

    with p.db.session() as s:
        job = s.get(Job, model.job_id)
        return (job.spec or {}).get("base_model") if job is not None else None


def find_adapter_model(p: Any, model_id: str, *, task: str, base_model: str, tenant_id: str | None = None) -> Any:
    """The Model row ``model_id`` if it is an adapter model the shared application of ``task``
    over ``base_model`` can serve (and, with ``tenant_id``, that tenant's); otherwise a
    DoctuneError naming the request field ``model``."""
    from doctune.store.db import Job, Model

    with p.db.session() as s:  # the model and the job that records its base model, in one session
        row = s.get(Model, model_id)
        job = s.get(Job, row.job_id) if row is not None else None
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        whose = f" among tenant {tenant_id}'s models" if tenant_id else ""
        raise DoctuneError(f"model {model_id!r} not found{whose}; name one of your registered models, or leave "
                           f"'{MODEL_FIELD}' out for the endpoint's own", "not_found", field=MODEL_FIELD)
    base = (job.spec or {}).get("base_model") if job is not None else None
    if row.task != task or base != base_model:
        raise DoctuneError(f"model {model_id!r} is a {row.task} model over base model {base!r}; this endpoint serves "
                           f"{task} adapters over {base_model!r}. Query an endpoint of that model's kind, or deploy it "
                           "to its own endpoint", "invalid_request", field=MODEL_FIELD)
    if row.merged:
        raise DoctuneError(f"model {model_id!r} was exported merged (a full model), so it cannot share this endpoint's "
                           "base model; deploy it to its own endpoint, or retrain it with tuning.merge_adapter: false",
                           "invalid_request", field=MODEL_FIELD)
    return row


# ------------------------------------------------------------------ the shared application
def _serve_cache(loader: Any) -> Any:
    """Ray Serve's model cache of a ``serve.multiplexed`` loader (its ``models``: model id ->
    loaded object, least recently used first), which the loader itself evicts from."""
    cache = getattr(loader, "__serve_multiplex_wrapper", None)
    if cache is None or not hasattr(cache, "models"):
        raise DoctuneError("this Ray Serve version keeps multiplexed models elsewhere; the shared application "
                           "cannot enforce per-tenant adapter shares", "internal")
    return cache


class _Adapter:
    """What ``get_model`` returns: one adapter loaded in the replica's pool. Serve calls
    ``__del__`` when it evicts the adapter; Python calls it again when the object goes, which
    must not unload a newer load of the same model."""

    def __init__(self, model_id: str, tenant_id: str, model: Any, tokenizer: Any, meta: dict[str, Any],
                 release: Any) -> None:
        self.model_id, self.tenant_id = model_id, tenant_id
        self.model, self.tokenizer, self.meta = model, tokenizer, meta
        self._release = release

    def __del__(self) -> None:
        release, self._release = getattr(self, "_release", None), None
        if release is not None:
            try:
                release(self.model_id)
            except Exception:  # noqa: BLE001 - at interpreter exit the pool may be gone already
                pass


def _point_at_local_base(local: Path, meta: dict[str, Any]) -> None:
    """Point the adapter at this node's copy of its base model when the directory recorded at
    training (the training worker's) is not here."""
    cfg_file = local / "adapter_config.json"
    if not cfg_file.exists() or not meta.get("base_model"):
        return
    cfg = json.loads(cfg_file.read_text())
    if Path(str(cfg.get("base_model_name_or_path", ""))).joinpath("config.json").exists():
        return
    from doctune.base_models import resolve_base_model

    cfg["base_model_name_or_path"] = resolve_base_model(meta["base_model"])
    cfg_file.write_text(json.dumps(cfg, indent=2))


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, health_check_period_s=10)
class AdapterServer:
    """A replica of a shared application: one base model, up to ``max_adapters`` adapters over
    it, of which a tenant holding ``adapters_per_tenant`` recycles its own."""

    def __init__(self, *, task: str, base_model: str, home: str | None, max_adapters: int = 8,
                 adapters_per_tenant: int = 4, max_batch_size: int = 8, batch_wait_timeout_s: float = 0.01) -> None:
        if home:
            os.environ["DOCTUNE_HOME"] = home
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from ray.serve import metrics

        from doctune.serve.adapters import AdapterPool
        from doctune.tasks import get_task

        from doctune.store.stores import Stores

        torch.set_num_threads(1)
        self.stores = Stores()  # adapters are read from the store; keys are checked by the routers
        self.task, self.base_model = task, base_model
        self.plugin = get_task(task)
        self.pool = AdapterPool(self.plugin)
        self.max_adapters, self.adapters_per_tenant = max_adapters, adapters_per_tenant

        async def get_model(model_id: str) -> _Adapter:
            # under Serve's model-cache lock: one load (and one eviction) at a time
            row = await asyncio.to_thread(find_adapter_model, self.stores, model_id, task=self.task,
                                          base_model=self.base_model)
            await self._make_room(_serve_cache(get_model), row.tenant_id)
            return await asyncio.to_thread(self._load, row)  # the replica keeps answering meanwhile

        # Serve keeps the loaded adapters and routes by them, but never evicts (-1): _make_room does, per tenant
        self.get_model = serve.multiplexed(max_num_models_per_replica=-1)(get_model)
        self._predict_batch.set_max_batch_size(max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batch_size = batch_size_histogram()  # tagged per batch with the adapter's tenant and endpoint
        self.pool_bytes = metrics.Gauge(
            "doctune_adapter_pool_bytes", description="Tensor bytes a shared replica holds: kind=shared is its one "
            "copy of the base model, kind=adapters the loaded adapters' own weights and heads.", tag_keys=("kind",))
        self._report_memory()

    async def _make_room(self, cache: Any, tenant_id: str) -> None:
        """Unload the adapter :func:`pick_adapter_to_evict` names, if the replica is full."""
        from doctune.serve.adapters import pick_adapter_to_evict

        loaded = [(model_id, adapter.tenant_id) for model_id, adapter in cache.models.items()]
        victim = pick_adapter_to_evict(loaded, tenant_id, self.max_adapters, self.adapters_per_tenant)
        if victim is None:
            return
        adapter = cache.models.pop(victim)
        cache._push_multiplexed_replica_info = True  # tell Serve's router it is gone
        await asyncio.to_thread(adapter.__del__)

    def _load(self, row: Any) -> _Adapter:
        model_id = row.id
        store = self.stores.objects
        local = make_scratch("doctune-adapter-")
        try:
            store.download_dir(store.key_of(row.uri), local)
            meta = json.loads((local / "doctune.json").read_text())
            _point_at_local_base(local, meta)
            tokenizer = self.pool.tokenizer(str(local))
            model = self.pool.load(model_id, str(local))
        finally:
            shutil.rmtree(local, ignore_errors=True)
        self._report_memory()
        return _Adapter(model_id, row.tenant_id, model, tokenizer, meta, self._unload)

    def _unload(self, model_id: str) -> None:
        self.pool.unload(model_id)
        self._report_memory()

    def _report_memory(self) -> None:
        mem = self.pool.memory()
        self.pool_bytes.set(mem["shared"], tags={"kind": "shared"})
        self.pool_bytes.set(sum(mem["adapters"].values()), tags={"kind": "adapters"})

    async def predict(self, inputs: list[Any], endpoint: str = "") -> dict[str, Any]:
        """Predictions of the adapter named by the request's multiplexed model id, as
        ``{"predictions": [...]}``, or a DoctuneError as ``{"error": {...}}``."""
        try:
            adapter = await self.get_model(serve.get_multiplexed_model_id())
            check = getattr(self.plugin, "check_request", None)  # per request: a bad one never fails its batch
            if check is not None:
                check(inputs, adapter.meta)
            return {"predictions": await self._predict_batch(inputs, adapter, endpoint)}
        except DoctuneError as exc:
            return exc.to_dict()

    def memory(self) -> dict[str, Any]:
        """This replica's :meth:`AdapterPool.memory` (for benchmarks and operators)."""
        return self.pool.memory()

    # the spec's max_batch_size and batch_wait_timeout_s replace these in __init__; Serve splits
    # batches by multiplexed model id, so every request of a batch is for the same adapter
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _predict_batch(self, requests: list[list[Any]], adapters: list[_Adapter],
                             endpoints: list[str]) -> list[list[dict[str, Any]]]:
        adapter = adapters[0]
        flat = [x for r in requests for x in r]
        self.batch_size.observe(len(flat), tags={"tenant": adapter.tenant_id, "endpoint": endpoints[0]})
        preds = self.plugin.predict(adapter.model, adapter.tokenizer, flat, adapter.meta,
                                    adapter.meta.get("max_seq_length", 256))
        return split_batch(preds, requests)


# ------------------------------------------------------------------ the per-endpoint router
@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, health_check_period_s=10)
@serve.ingress(router_api)
class AdapterRoute(EndpointReplica):
    """An endpoint's router: authenticates, picks the model version, forwards to the shared application."""

    def __init__(self, *, tenant_id: str, endpoint: str, model_id: str, task: str,
                 base_model: str, shared_app: str, home: str | None) -> None:
        if home:
            os.environ["DOCTUNE_HOME"] = home
        from doctune.store.db import Model
        from doctune.tasks import get_task

        self._open_stores(f"endpoint:{tenant_id}/{endpoint}")
        self.tenant_id, self.endpoint, self.model_id = tenant_id, endpoint, model_id
        self.task, self.base_model = task, base_model
        self.plugin = get_task(task)
        with self.stores.db.session() as s:
            row = s.get(Model, model_id)
        self.labels = (row.info or {}).get("labels") if row is not None else None
        self._servable = {model_id}  # model ids checked already (a registered model does not change)
        self.shared = serve.get_app_handle(shared_app)
        self._start_metrics(tenant_id, endpoint, batch_sizes=False)
        from doctune.serve.schemas import multiplexed_openapi

        self.openapi_document = multiplexed_openapi(task, f"doctune {task} endpoint {tenant_id}/{endpoint} (multiplexed)")

    def _model_version(self, body: Any) -> str:
        requested = body.get(MODEL_FIELD) if isinstance(body, dict) else None
        if requested is None:
            return self.model_id
        if not isinstance(requested, str) or not requested.strip() or len(requested) > 64:
            raise DoctuneError(f"'{MODEL_FIELD}' must be a registered model id (1 to 64 characters); "
                               f"got {requested!r}"[:300], "invalid_request", field=MODEL_FIELD)
        if requested not in self._servable:
            find_adapter_model(self.stores, requested, task=self.task, base_model=self.base_model,
                               tenant_id=self.tenant_id)
            if len(self._servable) < 4096:
                self._servable.add(requested)
        return requested

    @router_api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        return await self._counted(self._predict(request))

    async def _predict(self, request: Request) -> JSONResponse:
        try:
            body = await self._authorized_body(request)
            model_id = self._model_version(body)
            if isinstance(body, dict):
                body = {k: v for k, v in body.items() if k != MODEL_FIELD}
            inputs = self.plugin.parse_request(body)
            self._check_count(inputs)
            out = await self.shared.options(multiplexed_model_id=model_id).predict.remote(inputs, self.endpoint)
            if "error" in out:
                return JSONResponse(out, status_code=HTTP_STATUS.get(out["error"].get("code"), 500))
            return JSONResponse(with_document({"model_id": model_id, "predictions": out["predictions"]},
                                              getattr(request.state, "document", None)))
        except DoctuneError as exc:
            return error_json(exc)

    @router_api.get("/")
    async def describe(self, request: Request) -> JSONResponse:
        try:
            await self._authorize(request)
        except DoctuneError as exc:
            return error_json(exc)
        return JSONResponse({"model_id": self.model_id, "task": self.task, "labels": self.labels,
                             "multiplex": True, "base_model": self.base_model})


# ------------------------------------------------------------------ building and running
def build_shared_application(task: str, base_model: str, serving: SharedServing, home: str | None):
    """The shared application of ``task`` adapters over ``base_model``, with the platform's settings."""
    return AdapterServer.options(
        **replica_options(serving),
        ray_actor_options={"num_cpus": serving.num_cpus},
    ).bind(task=task, base_model=base_model, home=home, max_adapters=serving.max_adapters_per_replica,
           adapters_per_tenant=serving.adapters_per_tenant, max_batch_size=serving.max_batch_size,
           batch_wait_timeout_s=serving.batch_wait_timeout_s)


def build_router_application(deployment: Any, model: Any, base_model: str, home: str | None):
    """The router application of a multiplexed deployment (its endpoint)."""
    from doctune.spec import DeploymentSpec

    spec = DeploymentSpec.from_stored(deployment.spec)
    return AdapterRoute.options(
        name=app_name(deployment),
        **replica_options(spec),
        ray_actor_options={"num_cpus": ROUTER_NUM_CPUS},
    ).bind(
        tenant_id=deployment.tenant_id, endpoint=deployment.name, model_id=model.id,
        task=model.task, base_model=base_model, shared_app=shared_app_name(model.task, base_model), home=home,
    )


def run_multiplexed(p: Any, deployment: Any, model: Any, home: str | None, deadline_s: float = 600.0) -> str:
    """On the Ray cluster (``ray_jobs.deploy``): start the shared application for the model's
    task and base model unless it runs already, then ``serve.run`` the endpoint's router at
    the deployment's route. Returns the shared application's name."""
    base = base_model_of(p, model)
    if base is None:
        raise DoctuneError(f"model {model.id}: its training job records no base_model, so the base model it would "
                           "share is unknown; deploy it with multiplex: false", "invalid_spec", field="multiplex")
    shared = shared_app_name(model.task, base)
    end = time.monotonic() + deadline_s
    while True:
        app = serve.status().applications.get(shared)
        state = getattr(app, "status", None)
        if state == "RUNNING":
            break
        if state in (None, "NOT_STARTED", "DEPLOY_FAILED", "UNHEALTHY"):
            serving = SharedServing.of(p.settings)
            serve.run(build_shared_application(model.task, base, serving, home), name=shared, route_prefix=None)
            break
        if time.monotonic() > end:  # DEPLOYING (another deployment starts it) or DELETING
            raise DoctuneError(f"the shared application {shared} stayed {state} for {deadline_s:.0f}s; "
                               "deploy again later", "unavailable")
        time.sleep(1.0)
    serve.run(build_router_application(deployment, model, base, home),
              name=app_name(deployment), route_prefix=deployment.route)
    return shared


def shared_apps_in_use(p: Any) -> set[str]:
    """Names of the shared applications that deploying or running multiplexed deployments use."""
    from sqlalchemy import select

    from doctune.store.db import Deployment, Model

    with p.db.session() as s:
        rows = s.execute(select(Deployment.spec, Model).join(Model, Model.id == Deployment.model_id)
                         .where(Deployment.status.in_((DeploymentState.DEPLOYING, DeploymentState.RUNNING)))).all()
    names = set()
    for spec, model in rows:
        if (spec or {}).get("multiplex"):
            base = base_model_of(p, model)
            if base:
                names.add(shared_app_name(model.task, base))
    return names


def delete_unused_shared_apps(p: Any) -> list[str]:
    """``serve.delete`` every shared application no deploying or running multiplexed
    deployment uses; returns their names."""
    in_use = shared_apps_in_use(p)
    unused = [name for name in serve.status().applications if name.startswith(SHARED_PREFIX) and name not in in_use]
    for name in unused:
        serve.delete(name, _blocking=True)
    return unused
