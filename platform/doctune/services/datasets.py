"""Datasets: validate a tenant's upload completely, then store it.

Either one file that doctune splits (seeded, stratified) or explicit train/dev/test
files. Nothing is written until every line has passed, and a failure while
writing removes what was written, so a bad upload never changes stored data.
"""

from __future__ import annotations

from typing import Any, Collection

from sqlalchemy import select

from doctune.data import parse_jsonl, split_records, to_jsonl, validate_splits
from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.redaction import redact_upload
from doctune.services.tasks import known_task
from doctune.services.tenants import (DEFAULT_PAGE_SIZE, RowPage, check_tenant_access, delete_with_files, get_owned,
                                      list_owned, storage_refusal)
from doctune.spec import _slug
from doctune.states import JobState, SweepState
from doctune.store.db import Dataset, DatasetVersion, Job, Sweep, new_id, take_quota_lock
from doctune.store.objects import tenant_key
from doctune.tasks import get_task


def upload_dataset(
    p: Platform,
    caller: Principal,
    *,
    tenant: str,
    name: str,
    task: str,
    files: dict[str, bytes],
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    formats: dict[str, str] | None = None,
    redact_pii: bool = False,
) -> Dataset:
    """Store a dataset. ``files`` is ``{"data": ...}`` (split here) or ``{"train", "dev", "test"}``;
    ``formats`` gives each file's format, ``jsonl`` (the default) or ``csv``. ``redact_pii`` (or the
    tenant's setting) replaces personal data before anything is stored (``doctune.services.redaction``)."""
    check_tenant_access(caller, tenant, write=True)
    try:
        _slug(name, "name")
    except ValueError as exc:
        raise DoctuneError(f"dataset {exc}", "invalid_request", field="name") from None
    get_task(task)
    splits, split_how = _parse_files(p, files, task, dev_fraction, test_fraction, seed, formats or {})
    splits, redaction = redact_upload(p, tenant, task, splits, redact_pii)
    info = validate_splits(splits, task) | redaction
    _check_label_count(p, info.get("labels") or ())
    info["split"] = split_how

    blobs = {split: to_jsonl(recs) for split, recs in splits.items()}
    info["bytes"] = sum(len(b) for b in blobs.values())
    return _store_dataset(p, tenant, name, task, blobs, info)


def _store_dataset(p: Platform, tenant: str, name: str, task: str, blobs: dict[str, bytes], info: dict[str, Any]) -> Dataset:
    """Check the storage quota, write the files and record the dataset, all under the quota lock:
    two racing uploads cannot both pass the quota. A failure removes what was written."""
    dataset_id = new_id("ds")
    prefix = tenant_key(tenant, "datasets", dataset_id)
    try:
        with p.db.session() as s:
            take_quota_lock(s)
            refusal = storage_refusal(p, tenant, info["bytes"], f"this upload of {info['bytes']} bytes")
            if refusal is not None:
                raise refusal
            for split, blob in blobs.items():
                p.objects.put_bytes(f"{prefix}/{split}.jsonl", blob)
            row = Dataset(id=dataset_id, tenant_id=tenant, name=name, task=task, uri=p.objects.uri(prefix), info=info,
                          version=1)
            s.add(row)
            s.flush()  # the dataset first: its version 1 refers to it
            s.add(DatasetVersion(dataset_id=dataset_id, version=1, info=first_version_info(row)))
    except Exception:
        p.objects.delete_prefix(prefix + "/")
        raise
    return row


def first_version_info(dataset: Dataset) -> dict[str, Any]:
    """Version 1 of a dataset (its upload): its info, its own files' prefix and its counts
    (``doctune.services.dataset_versions`` adds the next versions)."""
    sizes = dict((dataset.info or {}).get("sizes") or {})
    return {**(dataset.info or {}), "version": 1, "uri": dataset.uri, "added": sizes, "duplicates": 0,
            "records": sum(v for v in sizes.values() if isinstance(v, int))}


def _parse_files(p: Platform, files: dict[str, bytes], task: str, dev_fraction: float, test_fraction: float,
                 seed: int, formats: dict[str, str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The uploaded files as validated splits, and how they were split; every file within the byte
    and row caps (``max_upload_bytes``, ``max_dataset_rows``)."""
    limit, rows = p.settings.max_upload_bytes, p.settings.max_dataset_rows
    for field, blob in files.items():
        if len(blob) > limit:
            raise DoctuneError(
                f"{field} is {len(blob)} bytes, over the {limit}-byte upload limit; split it or ask an admin to raise DOCTUNE_MAX_UPLOAD_BYTES",
                "too_large",
                field=field,
            )
    if set(files) == {"data"}:
        records = parse_jsonl(files["data"], task, "data", max_rows=rows, fmt=formats.get("data", "jsonl"))
        _check_label_count(p, {get_task(task).stratify_key(r) for r in records})  # before splitting on them
        splits = split_records(records, task, dev=dev_fraction, test=test_fraction, seed=seed)
        return splits, {"method": "stratified", "seed": seed, "dev": dev_fraction, "test": test_fraction}
    if set(files) == {"train", "dev", "test"}:
        splits = {k: parse_jsonl(v, task, k, max_rows=rows, fmt=formats.get(k, "jsonl")) for k, v in files.items()}
        if sum(len(v) for v in splits.values()) > rows:
            raise DoctuneError(f"the three files hold more than {rows} records together; upload fewer, or ask the "
                               "platform admin to raise DOCTUNE_MAX_DATASET_ROWS", "too_large", field="train")
        return splits, {"method": "uploaded"}
    raise DoctuneError(
        f"upload either one file named 'data' (doctune splits it) or three named 'train', 'dev', 'test'; got {sorted(files)}",
        "invalid_request",
        field="files",
    )


def _check_label_count(p: Platform, labels: Collection[Any]) -> None:
    if len(labels) > p.settings.max_labels:
        raise DoctuneError(f"the dataset has {len(labels)} distinct labels, over the limit of {p.settings.max_labels}; "
                           "merge rare labels, or ask the platform admin to raise DOCTUNE_MAX_LABELS",
                           "invalid_dataset", field="label")


def get_dataset(p: Platform, caller: Principal, dataset_id: str) -> Dataset:
    return get_owned(p, caller, Dataset, dataset_id, "dataset", "dataset.id")


def list_datasets(p: Platform, caller: Principal, *, task: str | None = None, limit: int = DEFAULT_PAGE_SIZE,
                  cursor: str | None = None) -> RowPage[Dataset]:
    return list_owned(p, caller, Dataset, limit=limit, cursor=cursor, task=known_task(task))


# a job in one of these states still reads (or will read) its dataset
JOB_STATES_USING_DATA = (JobState.QUEUED, JobState.STARTING, JobState.RUNNING, JobState.PAUSED)


def dataset_user(p: Platform, dataset: Dataset) -> str | None:
    """The job (or sweep) that still needs ``dataset``, as "job <id> (<status>)"; None when none does."""
    with p.db.session() as s:
        jobs = s.execute(select(Job).where(Job.tenant_id == dataset.tenant_id, Job.status.in_(JOB_STATES_USING_DATA))
                         .order_by(Job.created_at)).scalars().all()
        sweeps = s.execute(select(Sweep).where(Sweep.tenant_id == dataset.tenant_id,
                                               Sweep.status.not_in(SweepState.terminal()))).scalars().all()
    for job in jobs:
        if ((job.spec or {}).get("dataset") or {}).get("id") == dataset.id:
            return f"job {job.id} ({job.status})"
    for sweep in sweeps:
        if (((sweep.spec or {}).get("job") or {}).get("dataset") or {}).get("id") == dataset.id:
            return f"sweep {sweep.id} ({sweep.status})"
    return None


def delete_dataset(p: Platform, caller: Principal, dataset_id: str) -> Dataset:
    """Delete a dataset's files and its record, unless a queued, starting, running or paused job (or an
    unfinished sweep) uses it. Jobs that have ended keep their metrics and models."""
    dataset = get_dataset(p, caller, dataset_id)
    check_tenant_access(caller, dataset.tenant_id, write=True)
    user = dataset_user(p, dataset)
    if user is not None:
        raise DoctuneError(f"dataset {dataset.id} is used by {user}; cancel it or wait until it ends, then delete "
                           "the dataset", "conflict", field="dataset_id", tenant_error=True)
    delete_with_files(p, Dataset, dataset.id, dataset.uri, "dataset")
    return dataset


def read_split(p: Platform, dataset: Dataset, split: str) -> list[dict[str, Any]]:
    import json

    blob = p.objects.get_bytes(f"{p.objects.key_of(dataset.uri)}/{split}.jsonl")
    return [json.loads(l) for l in blob.decode().splitlines() if l.strip()]
