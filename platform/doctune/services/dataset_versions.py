"""Dataset versions: append records to a dataset as its next version, without moving any stored one.

Version 1 is the upload (``doctune.services.datasets``); :func:`append_records` validates a file of new
records completely, splits them, and stores only them, under a prefix of their own, as the next
version. A version's split is the splits of every version up to it, in order
(``doctune.store.dataset_files``), so the records of an earlier version keep their split and stay the
first records of a later version's split: every older version stays readable, and a model tested on
one version can also be tested on an earlier version's test split (``DatasetRef.compare_version``).

How new records are split (:func:`assign_splits`): stratified on the task's ``stratify_key`` (the
label, for classification), *cumulatively*: for each key the new records fill its train/dev/test
counts up to the dataset's fractions of everything it will hold, so each label keeps its proportions
across appends (a rare label goes to train first, so dev and test never hold a label train lacks).
Which records go where is decided by a hash of the record with the dataset's seed, so the same file
splits the same way whatever the order of its lines, and a record identical to a stored one (or to an
earlier line of the file) goes to the split that holds it, so a duplicate never leaks into another
split. A pure per-record hash (test if hash < 10%) would not need the stored counts, but a small
append of a rare label would often put none of it in train, or all of it in test.

Each version records its counts (``sizes``: the whole version, ``added``: this append, ``duplicates``),
its label distribution (``distribution``) and the drift from the version before: the total variation
distance between the two distributions (``drift.tvd``, 0 = the same, 1 = disjoint), the labels new to it,
and the same distance for the appended records alone (``drift.added_tvd``). A retrain policy
(``doctune.services.retrain``) compares versions the same way (:func:`compare_versions`).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from doctune.data import parse_jsonl, to_jsonl, validate_splits
from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.datasets import _check_label_count, first_version_info, get_dataset
from doctune.services.redaction import redact_upload
from doctune.services.tenants import check_tenant_access, storage_refusal
from doctune.store.dataset_files import SPLITS, read_split
from doctune.store.db import Dataset, DatasetVersion, take_quota_lock
from doctune.tasks import get_task

__all__ = ["DatasetView", "append_records", "assign_splits", "compare_versions", "dataset_view", "find_dataset",
           "get_version", "label_distribution", "list_versions", "read_version_split", "total_variation",
           "version_rows"]

MAX_VERSIONS_PAGE = 1000


# ------------------------------------------------------------------ reading versions
def find_dataset(p: Platform, caller: Principal, name_or_id: str) -> Dataset:
    """The caller's dataset with this id, else the caller's one dataset with this name; another tenant's
    dataset is 404, like one that does not exist."""
    try:
        return get_dataset(p, caller, name_or_id)
    except DoctuneError as exc:
        if exc.code != "not_found" or not caller.tenant_id:
            raise
    with p.db.session() as s:
        rows = list(s.execute(select(Dataset).where(Dataset.tenant_id == caller.tenant_id, Dataset.name == name_or_id)
                              .order_by(Dataset.created_at.desc())).scalars())
    if not rows:
        raise DoctuneError(f"dataset {name_or_id!r} not found (neither an id nor a name of one of your datasets; "
                           "see `doctune datasets list`)", "not_found", field="dataset")
    if len(rows) > 1:
        raise DoctuneError(f"{len(rows)} of your datasets are named {name_or_id!r} ({', '.join(r.id for r in rows)}); "
                           "name one by its id", "conflict", field="dataset", tenant_error=True)
    return rows[0]


def version_rows(p: Platform, dataset: Dataset, upto: int | None = None) -> list[DatasetVersion]:
    """The dataset's versions, oldest first: all of them, or those up to ``upto``."""
    q = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    if upto is not None:
        q = q.where(DatasetVersion.version <= upto)
    with p.db.session() as s:
        rows = list(s.execute(q.order_by(DatasetVersion.version)).scalars())
    if not rows:  # a dataset recorded without its version 1 (tests that add rows by hand)
        rows = [DatasetVersion(dataset_id=dataset.id, version=1, info=first_version_info(dataset))]
    return rows


def _check_version(dataset: Dataset, version: Any, field: str = "version") -> int:
    newest = dataset.version or 1
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= newest:
        raise DoctuneError(f"dataset {dataset.id} has versions 1..{newest}; got {field} {version!r} "
                           f"(see `doctune datasets versions {dataset.id}`)", "not_found", field=field)
    return version


def get_version(p: Platform, caller: Principal, name_or_id: str, version: int) -> tuple[Dataset, DatasetVersion]:
    dataset = find_dataset(p, caller, name_or_id)
    _check_version(dataset, version)
    return dataset, version_rows(p, dataset, version)[-1]


def list_versions(p: Platform, caller: Principal, name_or_id: str, *, after: int = 0,
                  limit: int = MAX_VERSIONS_PAGE) -> tuple[Dataset, list[DatasetVersion]]:
    """A page of the dataset's versions, oldest first: those numbered above ``after``, at most ``limit``."""
    if not 1 <= limit <= MAX_VERSIONS_PAGE:
        raise DoctuneError(f"limit must be 1..{MAX_VERSIONS_PAGE}; got {limit}", "invalid_request", field="limit")
    dataset = find_dataset(p, caller, name_or_id)
    return dataset, [r for r in version_rows(p, dataset) if r.version > after][:limit]


@dataclass(frozen=True)
class DatasetView:
    """What a job of one dataset version reads: the dataset's uri (version 1's files) and the version's
    info, with ``parts`` (each version's own files, in order) and, for ``compare_version``,
    ``compare_test`` (that version's test-split size: its records are the first ones of the test split)."""

    id: str
    uri: str
    info: dict[str, Any]


def dataset_view(p: Platform, dataset: Dataset, version: int | None = None,
                 compare_version: int | None = None) -> DatasetView:
    rows = version_rows(p, dataset, version or dataset.version or 1)
    info = {**rows[-1].info, "parts": [r.info.get("uri") or dataset.uri for r in rows]}
    if compare_version is not None and compare_version < rows[-1].version:
        earlier = next(r for r in rows if r.version == compare_version)
        info["compare_test"] = {str(compare_version): int((earlier.info.get("sizes") or {}).get("test", 0))}
    return DatasetView(id=dataset.id, uri=dataset.uri, info=info)


def read_version_split(p: Platform, dataset: Dataset, split: str, version: int | None = None) -> list[dict[str, Any]]:
    """The records of ``split`` in ``version`` of the dataset (default: its newest)."""
    return read_split(p.objects, dataset_view(p, dataset, version).info["parts"], split)


# ------------------------------------------------------------------ distributions and drift
def label_distribution(splits: dict[str, list[dict[str, Any]]], task: str) -> dict[str, int]:
    """How many records of every split have each value of the task's stratify key."""
    plugin = get_task(task)
    counts = Counter(str(plugin.stratify_key(r)) for rows in splits.values() for r in rows)
    return dict(sorted(counts.items()))


def total_variation(a: dict[str, int], b: dict[str, int]) -> float:
    """The total variation distance between two count distributions: half the L1 distance of their
    proportions, 0 (the same) .. 1 (disjoint). 0 when either is empty."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def compare_versions(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Growth and drift from one version's info to another's: ``records`` added, ``percent`` growth,
    ``tvd`` of their label distributions, and the labels ``new_labels`` brings."""
    before, after = int(old.get("records") or 0), int(new.get("records") or 0)
    a, b = old.get("distribution") or {}, new.get("distribution") or {}
    return {"from_version": old.get("version"), "to_version": new.get("version"), "records": after - before,
            "percent": round(100.0 * (after - before) / before, 4) if before else None,
            "tvd": round(total_variation(a, b), 6), "new_labels": sorted(set(b) - set(a))}


# ------------------------------------------------------------------ splitting new records
def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _rank(seed: int, canonical: str) -> bytes:
    return hashlib.sha256(f"{seed}\n{canonical}".encode()).digest()


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def assign_splits(records: list[dict[str, Any]], task: str, *, seed: int, dev: float, test: float,
                  stored: dict[str, str], counts: dict[str, dict[str, int]]) -> tuple[dict[str, list], int]:
    """Split new ``records`` (see the module's docstring): ``stored`` maps each stored record (canonical
    JSON) to its split, ``counts`` each stratify key to its stored records per split. Returns the records
    added to each split, in the file's order, and how many were duplicates of stored records."""
    plugin = get_task(task)
    where: dict[str, str] = {}  # canonical -> split, of this file's records
    groups: dict[str, dict[str, int]] = defaultdict(dict)  # key -> canonical -> copies in the file
    duplicates = 0
    for r in records:
        c = _canonical(r)
        if c in stored:
            where[c] = stored[c]
            duplicates += 1
        else:
            copies = groups[str(plugin.stratify_key(r))]
            copies[c] = copies.get(c, 0) + 1
    for key, copies in groups.items():
        have = counts.get(key, {})
        n, total = sum(copies.values()), sum(have.values()) + sum(copies.values())
        want = {"test": min(n, max(0, _round(total * test) - have.get("test", 0)))}
        want["dev"] = min(n - want["test"], max(0, _round(total * dev) - have.get("dev", 0)))
        while have.get("train", 0) + n - want["test"] - want["dev"] < 1 and want["test"] + want["dev"] > 0:
            want["dev" if want["dev"] else "test"] -= 1  # keep the label in train: dev and test need it there
        placed = {"test": 0, "dev": 0}
        for c in sorted(copies, key=lambda c: _rank(seed, c)):
            split = next((s for s in ("test", "dev") if placed[s] < want[s]), "train")
            placed[split] = placed.get(split, 0) + copies[c]
            where[c] = split
    added: dict[str, list] = {s: [] for s in SPLITS}
    for r in records:
        added[where[_canonical(r)]].append(r)
    return added, duplicates


def _fractions(info: dict[str, Any]) -> tuple[int, float, float]:
    """The dataset's seed and dev/test fractions: as it was split, or (uploaded splits) as its sizes are."""
    split = info.get("split") or {}
    if split.get("method") == "stratified":
        return int(split.get("seed", 42)), float(split["dev"]), float(split["test"])
    sizes = info.get("sizes") or {}
    total = sum(sizes.get(s, 0) for s in SPLITS) or 1
    return int(split.get("seed", 42)), sizes.get("dev", 0) / total, sizes.get("test", 0) / total


# ------------------------------------------------------------------ appending
def append_records(p: Platform, caller: Principal, name_or_id: str, files: dict[str, bytes],
                   formats: dict[str, str] | None = None) -> tuple[Dataset, DatasetVersion]:
    """Validate ``files["data"]`` (JSONL, or CSV with ``formats={"data": "csv"}``) against the dataset's task,
    split it, and store it as the dataset's next version. Nothing is stored unless every record passes and
    the new version as a whole is a valid dataset; a failure while storing removes what was written."""
    dataset = find_dataset(p, caller, name_or_id)
    check_tenant_access(caller, dataset.tenant_id, write=True)
    blob = _one_file(p, files)
    prev = version_rows(p, dataset)
    parts = [r.info.get("uri") or dataset.uri for r in prev]
    stored_splits = {s: read_split(p.objects, parts, s) for s in SPLITS}
    room = p.settings.max_dataset_rows - sum(len(v) for v in stored_splits.values())
    if room < 1:
        raise DoctuneError(f"dataset {dataset.id} already holds {p.settings.max_dataset_rows} records, the most one "
                           "dataset may hold; upload a new dataset, or ask the platform admin to raise "
                           "DOCTUNE_MAX_DATASET_ROWS", "too_large", field="data")
    records = parse_jsonl(blob, dataset.task, "data", max_rows=room, fmt=(formats or {}).get("data", "jsonl"))
    # personal data is replaced as it was in the upload (or as the tenant's setting says), before duplicates are found
    redacted, redaction = redact_upload(p, dataset.tenant_id, dataset.task, {"data": records},
                                        bool((dataset.info or {}).get("pii_redaction")))
    seed, dev, test = _fractions(dataset.info or {})
    added, duplicates = assign_splits(redacted["data"], dataset.task, seed=seed, dev=dev, test=test,
                                      stored=_stored_index(stored_splits), counts=_key_counts(stored_splits, dataset.task))
    info = _next_info(p, dataset, prev[-1], stored_splits, added, duplicates) | redaction
    return _store_version(p, dataset, prev[-1], {s: to_jsonl(added[s]) for s in SPLITS}, info)


def _one_file(p: Platform, files: dict[str, bytes]) -> bytes:
    if set(files) != {"data"}:
        raise DoctuneError(f"an append is one file named 'data' (JSONL or CSV) of new records, which doctune splits "
                           f"as it split the dataset; got {sorted(files) or 'no file'}", "invalid_request", field="data")
    limit = p.settings.max_upload_bytes
    if len(files["data"]) > limit:
        raise DoctuneError(f"data is {len(files['data'])} bytes, over the {limit}-byte upload limit; append it in "
                           "parts or ask an admin to raise DOCTUNE_MAX_UPLOAD_BYTES", "too_large", field="data")
    return files["data"]


def _stored_index(splits: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    return {_canonical(r): split for split in SPLITS for r in splits[split]}


def _key_counts(splits: dict[str, list[dict[str, Any]]], task: str) -> dict[str, dict[str, int]]:
    plugin = get_task(task)
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for split in SPLITS:
        for r in splits[split]:
            out[str(plugin.stratify_key(r))][split] += 1
    return out


def _next_info(p: Platform, dataset: Dataset, prev: DatasetVersion, stored: dict[str, list], added: dict[str, list],
               duplicates: int) -> dict[str, Any]:
    """The new version's info: the task's checks over the whole version (a record in dev or test whose
    label train lacks is refused here, naming the field), its counts, distribution and drift."""
    whole = {s: stored[s] + added[s] for s in SPLITS}
    try:
        task_info = validate_splits(whole, dataset.task)
    except DoctuneError as exc:  # its record numbers count the stored records of the split first
        raise DoctuneError(f"data: the new records do not fit dataset {dataset.id} (version {prev.version + 1} would "
                           f"be invalid): {exc.message}", exc.code, field=exc.field or "data", errors=exc.errors) from None
    _check_label_count(p, task_info.get("labels") or ())
    before = {**prev.info, "distribution": prev.info.get("distribution") or label_distribution(stored, dataset.task),
              "records": sum(len(v) for v in stored.values())}
    info = {**task_info, "split": (dataset.info or {}).get("split"), "version": prev.version + 1,
            "added": {s: len(added[s]) for s in SPLITS}, "duplicates": duplicates,
            "records": sum(len(v) for v in whole.values()), "distribution": label_distribution(whole, dataset.task)}
    drift = compare_versions(before, info)
    drift["added_tvd"] = round(total_variation(before["distribution"], label_distribution(added, dataset.task)), 6)
    info["drift"], info["previous"] = drift, {"distribution": before["distribution"], "records": before["records"]}
    return info


def _store_version(p: Platform, dataset: Dataset, prev: DatasetVersion, blobs: dict[str, bytes],
                   info: dict[str, Any]) -> tuple[Dataset, DatasetVersion]:
    """Write the new records under a prefix of their own and record the version, under the quota lock and
    only if the dataset is still at ``prev`` (a racing append is a 409); a failure removes the files."""
    version = prev.version + 1
    prefix = f"{p.objects.key_of(dataset.uri).rstrip('/')}/v{version}-{uuid.uuid4().hex[:8]}"
    info = {**info, "uri": p.objects.uri(prefix), "bytes": sum(len(b) for b in blobs.values())}
    previous = info.pop("previous")
    try:
        with p.db.session() as s:
            take_quota_lock(s)
            refusal = storage_refusal(p, dataset.tenant_id, info["bytes"], f"this append of {info['bytes']} bytes")
            if refusal is not None:
                raise refusal
            moved = s.execute(update(Dataset).where(Dataset.id == dataset.id, Dataset.version == prev.version)
                              .values(version=version, info=_dataset_info(dataset, info))
                              .execution_options(synchronize_session=False)).rowcount
            if moved != 1:
                raise DoctuneError(f"dataset {dataset.id} changed while this append was checked (another append, or "
                                   "it was deleted); nothing was stored: append again", "conflict", field="dataset",
                                   tenant_error=True)
            for split, blob in blobs.items():
                p.objects.put_bytes(f"{prefix}/{split}.jsonl", blob)
            if prev.id is not None and not prev.info.get("distribution"):  # version 1 learns its distribution now
                s.execute(update(DatasetVersion).where(DatasetVersion.id == prev.id)
                          .values(info={**prev.info, **previous}))
            row = DatasetVersion(dataset_id=dataset.id, version=version, info=info)
            s.add(row)
    except IntegrityError:
        p.objects.delete_prefix(prefix + "/")
        raise DoctuneError(f"dataset {dataset.id} changed while this append was stored; nothing was stored: append "
                           "again", "conflict", field="dataset", tenant_error=True) from None
    except Exception:
        p.objects.delete_prefix(prefix + "/")
        raise
    with p.db.session() as s:
        return s.get(Dataset, dataset.id), row


def _dataset_info(dataset: Dataset, info: dict[str, Any]) -> dict[str, Any]:
    """The dataset's info as of its newest version: what the upload recorded (how it was split, a documents
    report), the task's info, counts and bytes of the whole version."""
    own = ("uri", "bytes", "drift", "added", "duplicates", "split", "pii_redaction")  # the version's, or the upload's
    return {**(dataset.info or {}), **{k: v for k, v in info.items() if k not in own},
            "bytes": int((dataset.info or {}).get("bytes") or 0) + info["bytes"]}
