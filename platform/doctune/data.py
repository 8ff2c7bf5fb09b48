"""Turning a tenant's uploaded files into validated, split records.

Called by the dataset service before anything is stored: every problem is
found here, with the file, line and field it is on, so that a bad upload
stores nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Iterator

from doctune.errors import DoctuneError
from doctune.metering import MAX_JSON_DEPTH, check_json_depth
from doctune.tasks import get_task

__all__ = ["parse_jsonl", "split_records", "to_jsonl", "validate_splits"]


# an upload's bad lines reported at once; past this many the rest are only counted
MAX_REPORTED_ERRORS = 20


def parse_jsonl(data: bytes, task: str, source: str, max_rows: int | None = None, fmt: str = "jsonl") -> list[dict[str, Any]]:
    """Parse and validate JSONL (or, with ``fmt="csv"``, CSV) bytes for ``task``. Every bad line is
    found (up to :data:`MAX_REPORTED_ERRORS`) and reported at once in the error's ``errors``, each
    with its ``line`` and ``field``; the message names ``source`` and the first bad line. More than
    ``max_rows`` records, or a record nested deeper than ``MAX_JSON_DEPTH``, is refused."""
    plugin = get_task(task)
    if fmt not in ("jsonl", "csv"):
        raise DoctuneError(f"{source}: unknown format {fmt!r}; upload .jsonl or .csv", "invalid_dataset", field=source)
    if not data.strip():
        raise DoctuneError(
            f"{source} is empty; upload a JSONL file with one record per line (or a CSV file with a header row)",
            "invalid_dataset", field=source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DoctuneError(
            f"{source} line {line}: not valid UTF-8; save the file as UTF-8", "invalid_dataset", field=source
        ) from None
    rows = _csv_objects(text, source) if fmt == "csv" else _jsonl_objects(text, source)
    records: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for n, obj in rows:
        if max_rows is not None and len(records) + len(errors) >= max_rows:
            raise DoctuneError(f"{source} has more than {max_rows} records; upload fewer, or ask the platform admin "
                               "to raise DOCTUNE_MAX_DATASET_ROWS", "too_large", field=source)
        try:
            if isinstance(obj, DoctuneError):
                raise obj
            records.append(plugin.validate_record(obj, f"{source} line {n}"))
        except DoctuneError as exc:
            errors.append({"line": n, "field": exc.field or source, "message": exc.message})
            if len(errors) > MAX_REPORTED_ERRORS:
                break
    if errors:
        raise _bad_lines(source, errors)
    return records


def _bad_lines(source: str, errors: list[dict[str, Any]]) -> DoctuneError:
    """One error for every bad line found: the first one's message, then the other lines and fields
    (the CLI prints the message alone; ``errors`` holds each line's whole message)."""
    shown = errors[:MAX_REPORTED_ERRORS]
    others = ", ".join(f"{e['line']} ({e['field']})" for e in shown[1:])
    more = f"; other bad lines in {source}: {others}" if others else ""
    if len(errors) > MAX_REPORTED_ERRORS:
        more += f", and more (the first {MAX_REPORTED_ERRORS} are listed)"
    return DoctuneError(errors[0]["message"] + more, "invalid_dataset", field=errors[0]["field"], errors=shown)


def _jsonl_objects(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """(line number, the line's object) for each non-blank line; a line that is not one JSON object
    yields a DoctuneError in place of its object."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source} line {n}"
        try:
            obj = json.loads(line)
            check_json_depth(obj, source)
        except RecursionError:
            obj = DoctuneError(f"{where}: objects or arrays nest more than {MAX_JSON_DEPTH} deep; flatten the record",
                               "invalid_dataset", field=source)
        except DoctuneError as exc:
            obj = DoctuneError(f"{where}: {exc.message}", "invalid_dataset", field=source)
        except json.JSONDecodeError as exc:
            obj = DoctuneError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON "
                               "object", "invalid_dataset", field=source)
        if not isinstance(obj, (dict, DoctuneError)):
            obj = DoctuneError(f"{where}: expected a JSON object, got {type(obj).__name__}", "invalid_dataset", field=source)
        yield n, obj


def _csv_objects(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """CSV rows as records: the header row names the task's fields (as in its JSONL format), an empty
    cell leaves its field out, and a cell that starts with ``[`` or ``{`` is JSON (a list of labels,
    tokens or tags; an object of fields). A bad row yields a DoctuneError naming its line and column."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        yield 1, DoctuneError(f"{source} line 1: a CSV file starts with a header row naming the fields, e.g. "
                              "text,label", "invalid_dataset", field=source)
        return
    names = [h.strip() for h in header]
    for cells in reader:
        n = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(names):
            yield n, DoctuneError(f"{source} line {n}: {len(cells)} cells but the header names {len(names)} "
                                  "columns; quote cells that hold commas", "invalid_dataset", field=source)
            continue
        yield n, _csv_record(dict(zip(names, cells)), f"{source} line {n}", source)


def _csv_record(row: dict[str, str], where: str, source: str) -> dict[str, Any] | DoctuneError:
    record: dict[str, Any] = {}
    for name, cell in row.items():
        if not cell.strip():
            continue
        if cell.lstrip()[:1] in "[{":
            try:
                record[name] = json.loads(cell)
            except json.JSONDecodeError as exc:
                return DoctuneError(f"{where}: column {name!r} starts like JSON but is not ({exc.msg}); write a list "
                                    'as ["a", "b"]', "invalid_dataset", field=name)
        else:
            record[name] = cell
    return record


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
