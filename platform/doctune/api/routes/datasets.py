"""``/v1/datasets``: upload (multipart JSONL or CSV, or an archive of documents with labels), list, read and delete a tenant's datasets;
append records as a new version and read the versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from doctune.api.deps import CurrentCaller, CurrentPlatform, Paging, TaskFilter
from doctune.api.schemas import DatasetAppended, DatasetOut, DatasetVersionOut, Page, RetrainEventOut
from doctune.errors import DoctuneError
from doctune.services import dataset_versions as versions_svc
from doctune.services import datasets as datasets_svc
from doctune.services import documents as documents_svc
from doctune.services import retrain as retrain_svc

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
    documents: Annotated[UploadFile | None, File(description="A .zip or .tar.gz of documents (PDF, images, DOCX, "
                                                             "HTML, .eml); needs 'labels' (docs/documents.md).")] = None,
    labels: Annotated[UploadFile | None, File(description="With 'documents': CSV file,label (classification) or JSONL "
                                                          "records naming their document in 'file'.")] = None,
    skip_bad: Annotated[bool, Form(description="With 'documents': make the dataset from the good files and records "
                                               "(the report lists the bad ones); otherwise any bad one stores nothing.")] = False,
    redact_pii: Annotated[bool, Form(description="Replace personal data (emails, phone, card, IBAN and national ID "
                                                 "numbers, person names after a title) with typed placeholders such as "
                                                 "<EMAIL> before anything is stored; counts by type in info.pii_redaction. "
                                                 "On anyway when the tenant's setting is (docs/security.md).")] = False,
) -> DatasetOut:
    """One file `data` (doctune splits it) or three: `train`, `dev`, `test`, each JSONL, or CSV when its
    file name ends in `.csv` or its content type is `text/csv` (a header row names the task's fields;
    a cell holding a list is JSON, e.g. `["sport", "politics"]`). A bad file is a 422 whose `errors`
    list every bad line (up to 20) with its `line` and `field`. The body streams in under
    a hard cap (413 past DOCTUNE_MAX_UPLOAD_BYTES); the files are read, parsed and stored in a worker
    thread (documents are extracted in child processes with time and memory limits), so a large
    upload never stalls other requests. Or an archive of `documents` with its `labels` (docs/documents.md)."""
    if documents is not None or labels is not None:
        return await run_in_threadpool(_store_documents, who, p, name, task, tenant, documents, labels, skip_bad,
                                       dev_fraction, test_fraction, seed, [data, train, dev, test], redact_pii)
    uploads = {k: f for k, f in (("data", data), ("train", train), ("dev", dev), ("test", test)) if f}

    def store() -> DatasetOut:
        files = {k: f.file.read() for k, f in uploads.items()}  # spooled to disk by the multipart parser
        formats = {k: "csv" if _is_csv(f) else "jsonl" for k, f in uploads.items()}
        row = datasets_svc.upload_dataset(p, who, tenant=tenant or who.tenant_id or "", name=name, task=task,
                                          files=files, dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed,
                                          formats=formats, redact_pii=redact_pii)
        return DatasetOut.of(row)

    return await run_in_threadpool(store)


def _store_documents(who, p, name, task, tenant, documents, labels, skip_bad, dev_fraction, test_fraction, seed,
                     others, redact_pii) -> DatasetOut:
    if documents is None or labels is None or any(others):
        raise DoctuneError("a documents upload is two files, 'documents' (a .zip or .tar.gz) and 'labels', and no "
                           "'data', 'train', 'dev' or 'test'", "invalid_request", field="labels" if documents else "documents")
    row = documents_svc.upload_documents(p, who, tenant=tenant or who.tenant_id or "", name=name, task=task,
                                         archive=documents.file.read(), labels=labels.file.read(), skip_bad=skip_bad,
                                         dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed,
                                         redact_pii=redact_pii)
    return DatasetOut.of(row)


def _is_csv(upload: UploadFile) -> bool:
    return (upload.filename or "").lower().endswith(".csv") or (upload.content_type or "").startswith("text/csv")


@router.post("/{dataset_id}/versions", status_code=201, response_model=DatasetAppended)
async def append_dataset(
    dataset_id: str,
    who: CurrentCaller,
    p: CurrentPlatform,
    data: Annotated[UploadFile | None, File(description="New records: JSONL, or CSV (a name ending in .csv or type "
                                                        "text/csv), in the dataset's task's format.")] = None,
) -> DatasetAppended:
    """Append records to a dataset (by id, or by its name among yours) as its next version. The new records
    are split as the dataset was (seeded, stratified on the label, per record: see docs/lifecycle.md); no
    stored record changes split, and every earlier version stays readable. A bad file is a 422 naming the
    line and field, and stores nothing. Answers the new version (counts, label drift) and what the retrain
    policy of each endpoint serving a model trained on this dataset decided."""
    uploads = {"data": data} if data is not None else {}

    def append() -> DatasetAppended:
        files = {k: f.file.read() for k, f in uploads.items()}
        formats = {k: "csv" if _is_csv(f) else "jsonl" for k, f in uploads.items()}
        dataset, version, events = retrain_svc.append_and_evaluate(p, who, dataset_id, files, formats)
        return DatasetAppended(dataset=DatasetOut.of(dataset), version=DatasetVersionOut.of(version),
                               retrain=[RetrainEventOut.of(e) for e in events])

    return await run_in_threadpool(append)


@router.get("/{dataset_id}/versions", response_model=list[DatasetVersionOut])
def dataset_versions(dataset_id: str, who: CurrentCaller, p: CurrentPlatform,
                     after: Annotated[int, Query(ge=0, description="Only versions numbered above this.")] = 0,
                     limit: Annotated[int, Query(ge=1, le=versions_svc.MAX_VERSIONS_PAGE)] = 200,
                     ) -> list[DatasetVersionOut]:
    """The dataset's versions (by id, or by its name among yours), oldest first: counts and label drift."""
    _, rows = versions_svc.list_versions(p, who, dataset_id, after=after, limit=limit)
    return [DatasetVersionOut.of(r) for r in rows]


@router.get("/{dataset_id}/versions/{version}", response_model=DatasetVersionOut)
def dataset_version(dataset_id: str, version: int, who: CurrentCaller, p: CurrentPlatform) -> DatasetVersionOut:
    return DatasetVersionOut.of(versions_svc.get_version(p, who, dataset_id, version)[1])


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
