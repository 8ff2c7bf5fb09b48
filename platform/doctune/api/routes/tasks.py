"""``/v1/tasks``: the registered task plugins, their metrics and capabilities."""

from __future__ import annotations

from fastapi import APIRouter

from doctune.api.deps import CurrentCaller
from doctune.api.schemas import TaskOut
from doctune.services import tasks as tasks_svc

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("", response_model=list[TaskOut])
def list_tasks(_: CurrentCaller) -> list[TaskOut]:
    return [TaskOut.model_validate(t) for t in tasks_svc.list_tasks()]
