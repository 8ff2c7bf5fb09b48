"""``/v1/base-models``: the base models a job may train on: the catalog, and the models a
tenant uploaded (``doctune models upload --name NAME DIR``)."""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from doctune.api.deps import CurrentCaller, CurrentPlatform
from doctune.api.schemas import Page
from doctune.errors import DoctuneError
from doctune.services import base_models as base_models_svc
from doctune.store.paths import make_scratch

router = APIRouter(prefix="/v1/base-models", tags=["base-models"])
PATH = "/v1/base-models"  # the upload enforces its own byte limit (doctune.api.main)


class BaseModelOut(BaseModel):
    name: str
    tenant: str | None = Field(description="The owning tenant; null for a catalog model.")
    base_model: str = Field(description="What to write as a job's base_model.")
    source: str = Field(description="catalog or uploaded.")
    bytes: int | None
    files: int | None


@router.get("", response_model=Page[BaseModelOut])
def list_base_models(who: CurrentCaller, p: CurrentPlatform,
                     tenant: Annotated[str | None, Query(max_length=63, description="The admin's choice of tenant.")] = None,
                     limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 100,
                     cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the page before.")] = None,
                     ) -> dict[str, Any]:
    """The catalog, then your tenant's uploaded base models (by name), a page at a time."""
    every = base_models_svc.list_base_models(p, who, tenant)
    names = [m["base_model"] for m in every]
    start = names.index(cursor) + 1 if cursor in names else 0
    items = every[start:start + limit]
    more = start + limit < len(every)
    return {"items": items, "next_cursor": items[-1]["base_model"] if more and items else None}


@router.post("", status_code=201, response_model=BaseModelOut,
             openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary"}}}}})
async def upload_base_model(request: Request, who: CurrentCaller, p: CurrentPlatform,
                            name: Annotated[str, Query(max_length=63, description="The model's name (a slug).")],
                            tenant: Annotated[str | None, Query(max_length=63)] = None) -> dict[str, Any]:
    """A Hugging Face model folder as a tar archive body (`tar -C DIR -cf - .`); it becomes
    `s3://<bucket>/tenants/<tenant>/base-models/<name>`, a base_model only your tenant's jobs may use."""
    limit = p.settings.max_base_model_bytes
    length = request.headers.get("content-length")
    size = int(length) if length and length.isdigit() else None
    tenant = await run_in_threadpool(base_models_svc.check_upload, p, who, tenant=tenant, name=name, size=size)
    folder = await run_in_threadpool(make_scratch, "doctune-upload-body-")
    archive = folder / "model.tar"
    try:
        received = 0
        with open(archive, "wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise DoctuneError(f"the archive is over {limit} bytes, the platform's limit for a base "
                                       "model (DOCTUNE_MAX_BASE_MODEL_BYTES); nothing was stored", "too_large",
                                       field="archive")
                out.write(chunk)
        return await run_in_threadpool(base_models_svc.upload_base_model, p, who, tenant=tenant, name=name,
                                       archive=archive)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
