"""``/v1/models``: a tenant's registered (evaluated, exported) models: list, read, download, delete."""

from __future__ import annotations

from fastapi import APIRouter

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging, TaskFilter
from doctune.api.schemas import ModelFileOut, ModelOut, Page
from doctune.services import registry as registry_svc

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=Page[ModelOut])
def list_models(who: CurrentCaller, p: CurrentPlatform, page: Paging, task: TaskFilter = None) -> Page[ModelOut]:
    rows = registry_svc.list_models(p, who, task=task, limit=page.limit, cursor=page.cursor)
    return Page[ModelOut].of(rows, ModelOut.of)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, who: CurrentCaller, p: CurrentPlatform) -> ModelOut:
    """Test metrics beside the baseline, and where the model is stored."""
    return ModelOut.of(registry_svc.get_model(p, who, model_id))


@router.get("/{model_id}/files", response_model=list[ModelFileOut])
def model_files(model_id: str, who: CurrentCaller, p: CurrentPlatform) -> list[ModelFileOut]:
    """15-minute presigned download URLs for the model's files."""
    return [ModelFileOut.model_validate(f) for f in registry_svc.presign_model_files(p, who, model_id)]


@router.delete("/{model_id}", response_model=ModelOut)
def delete_model(model_id: str, who: CurrentCaller, p: CurrentPlatform) -> ModelOut:
    """Delete the model's files and record (409 while a deployment serves it or its history names it)."""
    return ModelOut.of(registry_svc.delete_model(p, who, model_id))
