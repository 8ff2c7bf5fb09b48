"""``/v1/datasets``: upload (multipart JSONL or CSV), list, read and delete a tenant's datasets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging, TaskFilter
from doctune.api.schemas import DatasetOut, Page
from doctune.services import datasets as datasets_svc

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=DatasetOut)
async def upload_dataset(
    who: CurrentCaller,
    p: CurrentPlatform,
    name: Annotated[str, Form()],
    task: Annotated[str, Form()],
    tenant: Annotated[str | None, Form()] = None,
    dev_fraction: Annotated[float, Form(gt=0, lt=0.5, description="Fraction of 'data' held out for dev.")] = 0.1,
    test_fraction: Annotated[float, Form(gt=0, lt=0.5, description="Fraction of 'data' held out for test.")] = 0.1,
    seed: Annotated[int, Form(ge=0, le=2**32 - 1, description="Seed of the stratified split.")] = 42,
    data: UploadFile | None = None,
    train: UploadFile | None = None,
    dev: UploadFile | None = None,
    test: UploadFile | None = None,
) -> DatasetOut:
    """One file `data` (doctune splits it) or three: `train`, `dev`, `test`, each JSONL, or CSV when its
    file name ends in `.csv` or its content type is `text/csv` (a header row names the task's fields;
    a cell holding a list is JSON, e.g. `["sport", "politics"]`). A bad file is a 422 whose `errors`
    list every bad line (up to 20) with its `line` and `field`. The body streams in under
    a hard cap (413 past DOCTUNE_MAX_UPLOAD_BYTES); the files are read, parsed and stored in a worker
    thread, so a large upload never stalls other requests."""
    uploads = {k: f for k, f in (("data", data), ("train", train), ("dev", dev), ("test", test)) if f}

    def store() -> DatasetOut:
        files = {k: f.file.read() for k, f in uploads.items()}  # spooled to disk by the multipart parser
        formats = {k: "csv" if _is_csv(f) else "jsonl" for k, f in uploads.items()}
        row = datasets_svc.upload_dataset(p, who, tenant=tenant or who.tenant_id or "", name=name, task=task,
                                          files=files, dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed,
                                          formats=formats)
        return DatasetOut.of(row)

    return await run_in_threadpool(store)


def _is_csv(upload: UploadFile) -> bool:
    return (upload.filename or "").lower().endswith(".csv") or (upload.content_type or "").startswith("text/csv")


@router.get("", response_model=Page[DatasetOut])
def list_datasets(who: CurrentCaller, p: CurrentPlatform, page: Paging, task: TaskFilter = None) -> Page[DatasetOut]:
    rows = datasets_svc.list_datasets(p, who, task=task, limit=page.limit, cursor=page.cursor)
    return Page[DatasetOut].of(rows, DatasetOut.of)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, who: CurrentCaller, p: CurrentPlatform) -> DatasetOut:
    return DatasetOut.of(datasets_svc.get_dataset(p, who, dataset_id))


@router.delete("/{dataset_id}", response_model=DatasetOut)
def delete_dataset(dataset_id: str, who: CurrentCaller, p: CurrentPlatform) -> DatasetOut:
    """Delete the dataset's files and record (409 while a queued, running or paused job uses it)."""
    return DatasetOut.of(datasets_svc.delete_dataset(p, who, dataset_id))
