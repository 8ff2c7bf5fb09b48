"""One Ray Serve application per deployment: a task endpoint behind tenant API keys.

Built by ``ray_jobs.deploy`` on the Ray cluster. Each replica downloads the
exported model from the object store once, checks every request's key
(401 without a valid key, 403 for another tenant's key), batches concurrent
requests together, and answers with the task plugin's predictions.
"""


import os
import tempfile
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from doctune.errors import DoctuneError

api = FastAPI(title="doctune endpoint")


@serve.deployment(max_ongoing_requests=16, health_check_period_s=10)
@serve.ingress(api)
class TaskEndpoint:
    def __init__(self, *, deployment_id: str, tenant_id: str, model_id: str, model_uri: str, task: str, home: "str | None") -> None:
        if home:
            os.environ["DOCTUNE_HOME"] = home
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import json
        from pathlib import Path

        import torch
        from transformers import AutoTokenizer

        from doctune.services._context import Platform
        from doctune.tasks import get_task

        torch.set_num_threads(1)
        self.platform = Platform()
        self.deployment_id, self.tenant_id, self.model_id = deployment_id, tenant_id, model_id
        self.plugin = get_task(task)
        local = Path(tempfile.mkdtemp(prefix="doctune-model-"))
        store = self.platform.objects
        store.download_dir(store.key_of(model_uri), local)
        self.meta = json.loads((local / "doctune.json").read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.model = self.plugin.load_model(str(local))

    def _authorize(self, request: Request) -> None:
        from doctune.services.tenants import authenticate

        who = authenticate(self.platform, request.headers.get("authorization"))
        if not who.is_admin and who.tenant_id != self.tenant_id:
            raise DoctuneError("this endpoint belongs to another tenant; use that tenant's API key", "forbidden")

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _predict_batch(self, requests: list[list[str]]) -> list[list[dict[str, Any]]]:
        flat = [t for r in requests for t in r]
        preds = self.plugin.predict(self.model, self.tokenizer, flat, self.meta, self.meta.get("max_seq_length", 256))
        out, i = [], 0
        for r in requests:
            out.append(preds[i : i + len(r)])
            i += len(r)
        return out

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
            try:
                body = await request.json()
            except Exception:
                raise DoctuneError("request body must be JSON", "invalid_request", field="body") from None
            inputs = self.plugin.parse_request(body)
            if len(inputs) > 64:
                raise DoctuneError(f"at most 64 inputs per request; got {len(inputs)}", "invalid_request", field="inputs")
            preds = await self._predict_batch(inputs)
            return JSONResponse({"model_id": self.model_id, "predictions": preds})
        except DoctuneError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @api.get("/")
    async def describe(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
        except DoctuneError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.http_status)
        return JSONResponse({"model_id": self.model_id, "task": self.meta["task"], "labels": self.meta.get("labels")})


def build_application(deployment: Any, model: Any, home: str | None):
    spec = deployment.spec
    return TaskEndpoint.options(
        name=f"{deployment.tenant_id}-{deployment.name}",
        autoscaling_config={
            "min_replicas": spec["min_replicas"],
            "max_replicas": spec["max_replicas"],
            "target_ongoing_requests": spec["target_ongoing_requests"],
            "upscale_delay_s": 5,
            "downscale_delay_s": 60,
        },
        ray_actor_options={"num_cpus": spec["num_cpus"]},
    ).bind(
        deployment_id=deployment.id, tenant_id=deployment.tenant_id, model_id=model.id,
        model_uri=model.uri, task=model.task, home=home,
    )
