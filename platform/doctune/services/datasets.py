"""Datasets: validate a tenant's upload completely, then store it.

Either one file that doctune splits (seeded, stratified) or explicit train/dev/test
files. Nothing is written until every line has passed, and a failure while
writing removes what was written, so a bad upload never changes stored data.
"""

from __future__ import annotations

from typing import Any

from doctune.data import parse_jsonl, split_records, to_jsonl, validate_splits
from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.tenants import check_tenant_access, get_owned, list_owned
from doctune.spec import _slug
from doctune.store.db import Dataset, new_id
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
) -> Dataset:
    """Store a dataset. ``files`` is ``{"data": ...}`` (split here) or ``{"train", "dev", "test"}``."""
    check_tenant_access(caller, tenant, write=True)
    try:
        _slug(name, "name")
    except ValueError as exc:
        raise DoctuneError(f"dataset {exc}", "invalid_request", field="name") from None
    get_task(task)
    limit = p.settings.max_upload_bytes
    for field, blob in files.items():
        if len(blob) > limit:
            raise DoctuneError(
                f"{field} is {len(blob)} bytes, over the {limit}-byte upload limit; split it or ask an admin to raise DOCTUNE_MAX_UPLOAD_BYTES",
                "too_large",
                field=field,
            )
    if set(files) == {"data"}:
        records = parse_jsonl(files["data"], task, "data")
        splits = split_records(records, task, dev=dev_fraction, test=test_fraction, seed=seed)
        split_how: dict[str, Any] = {"method": "stratified", "seed": seed, "dev": dev_fraction, "test": test_fraction}
    elif set(files) == {"train", "dev", "test"}:
        splits = {k: parse_jsonl(v, task, k) for k, v in files.items()}
        split_how = {"method": "uploaded"}
    else:
        raise DoctuneError(
            f"upload either one file named 'data' (doctune splits it) or three named 'train', 'dev', 'test'; got {sorted(files)}",
            "invalid_request",
            field="files",
        )
    info = validate_splits(splits, task)
    info["split"] = split_how

    blobs = {split: to_jsonl(recs) for split, recs in splits.items()}
    _check_storage_quota(p, tenant, sum(len(b) for b in blobs.values()))
    info["bytes"] = sum(len(b) for b in blobs.values())
    dataset_id = new_id("ds")
    prefix = tenant_key(tenant, "datasets", dataset_id)
    try:
        for split, blob in blobs.items():
            p.objects.put_bytes(f"{prefix}/{split}.jsonl", blob)
        with p.db.session() as s:
            row = Dataset(id=dataset_id, tenant_id=tenant, name=name, task=task, uri=p.objects.uri(prefix), info=info)
            s.add(row)
    except Exception:
        p.objects.delete_prefix(prefix + "/")
        raise
    return row


def _check_storage_quota(p: Platform, tenant: str, adding: int) -> None:
    from doctune.services.tenants import get_tenant

    limit = get_tenant(p, tenant).max_storage_bytes
    if limit is None:
        return
    used = p.objects.prefix_bytes(tenant_key(tenant) + "/")
    if used + adding > limit:
        raise DoctuneError(
            f"tenant {tenant} stores {used} bytes; {adding} more would pass its storage quota of {limit} bytes. "
            "Delete old datasets or models, or ask an admin to raise max_storage_bytes",
            "quota_exceeded",
            field="max_storage_bytes",
        )


def get_dataset(p: Platform, caller: Principal, dataset_id: str) -> Dataset:
    return get_owned(p, caller, Dataset, dataset_id, "dataset", "dataset.id")


def list_datasets(p: Platform, caller: Principal) -> list[Dataset]:
    return list_owned(p, caller, Dataset)


def read_split(p: Platform, dataset: Dataset, split: str) -> list[dict[str, Any]]:
    import json

    blob = p.objects.get_bytes(f"{p.objects.key_of(dataset.uri)}/{split}.jsonl")
    return [json.loads(l) for l in blob.decode().splitlines() if l.strip()]
