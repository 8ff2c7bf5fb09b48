"""Turning a tenant's uploaded files into validated, split records.

Called by the dataset service before anything is stored: every problem is
found here, with the file, line and field it is on, so that a bad upload
stores nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from doctune.errors import DoctuneError
from doctune.metering import MAX_JSON_DEPTH, check_json_depth
from doctune.tasks import get_task

__all__ = ["parse_jsonl", "split_records", "to_jsonl", "validate_splits"]


def parse_jsonl(data: bytes, task: str, source: str, max_rows: int | None = None) -> list[dict[str, Any]]:
    """Parse and validate JSONL bytes for ``task``; errors name ``source`` and the line. More than
    ``max_rows`` records, or a record nested deeper than ``MAX_JSON_DEPTH``, is refused."""
    plugin = get_task(task)
    if not data.strip():
        raise DoctuneError(
            f"{source} is empty; upload a JSONL file with one record per line", "invalid_dataset", field=source
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DoctuneError(
            f"{source} line {line}: not valid UTF-8; save the file as UTF-8", "invalid_dataset", field=source
        ) from None
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source} line {n}"
        if max_rows is not None and len(records) >= max_rows:
            raise DoctuneError(f"{source} has more than {max_rows} records; upload fewer, or ask the platform admin "
                               "to raise DOCTUNE_MAX_DATASET_ROWS", "too_large", field=source)
        try:
            obj = json.loads(line)
            check_json_depth(obj, source)
        except RecursionError:
            raise DoctuneError(f"{where}: objects or arrays nest more than {MAX_JSON_DEPTH} deep; flatten the record",
                               "invalid_dataset", field=source) from None
        except DoctuneError as exc:
            raise DoctuneError(f"{where}: {exc.message}", "invalid_dataset", field=source) from None
        except json.JSONDecodeError as exc:
            raise DoctuneError(
                f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
                "invalid_dataset",
                field=source,
            ) from None
        if not isinstance(obj, dict):
            raise DoctuneError(
                f"{where}: expected a JSON object, got {type(obj).__name__}", "invalid_dataset", field=source
            )
        records.append(plugin.validate_record(obj, where))
    return records


def split_records(
    records: list[dict[str, Any]], task: str, *, dev: float = 0.1, test: float = 0.1, seed: int = 42
) -> dict[str, list[dict[str, Any]]]:
    """A seeded split, stratified on the task's key so every label lands in every split."""
    import numpy as np

    if not (0 < dev < 0.5 and 0 < test < 0.5 and dev + test < 0.9):
        raise DoctuneError(
            f"dev and test fractions must each be in (0, 0.5) and sum below 0.9; got dev={dev}, test={test}",
            "invalid_request",
            field="split",
        )
    plugin = get_task(task)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[plugin.stratify_key(r)].append(i)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
    for key in sorted(groups, key=str):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test))
        n_dev = int(round(len(idx) * dev))
        if len(idx) - n_test - n_dev < 1:
            raise DoctuneError(
                f"label {key!r} has only {len(idx)} example(s): too few to split into train/dev/test; add examples",
                "invalid_dataset",
                field="label",
            )
        out["test"] += idx[:n_test].tolist()
        out["dev"] += idx[n_test : n_test + n_dev].tolist()
        out["train"] += idx[n_test + n_dev :].tolist()
    result = {}
    for name, idx in out.items():
        idx = sorted(idx)
        rng.shuffle(idx)
        result[name] = [records[i] for i in idx]
    return result


def validate_splits(splits: dict[str, list[dict[str, Any]]], task: str) -> dict[str, Any]:
    for name in ("train", "dev", "test"):
        if not splits.get(name):
            raise DoctuneError(
                f"the {name} split is empty; upload a non-empty {name} file or let doctune split one file",
                "invalid_dataset",
                field=name,
            )
    info = get_task(task).check_splits(splits)
    info["sizes"] = {k: len(v) for k, v in splits.items()}
    return info


def to_jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
