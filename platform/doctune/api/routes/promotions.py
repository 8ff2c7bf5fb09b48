"""``/v1/promotions``: champion/challenger at an endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from doctune.api.deps import CurrentCaller, CurrentPlatform, SpecBody
from doctune.api.schemas import DeploymentOut, PromotionOut
from doctune.services import deployments as deployments_svc
from doctune.spec import PromotionSpec

router = APIRouter(prefix="/v1/promotions", tags=["deployments"])

PromotionBody = Annotated[PromotionSpec, Depends(SpecBody(PromotionSpec))]


@router.post("", response_model=PromotionOut)
def promote(spec: PromotionBody, who: CurrentCaller, p: CurrentPlatform) -> PromotionOut:
    """The challenger (model_id, or sweep_id's winner) replaces the model served at the endpoint only if
    its test metric is better on the same dataset, or if forced; "kept" changes nothing."""
    result = deployments_svc.promote(p, who, spec)
    dep = result["deployment"]
    return PromotionOut.model_validate(
        {**result, "deployment": DeploymentOut.of(dep, p.settings.serve_url) if dep is not None else None})
