"""Datasets from documents: an archive (``.zip``/``.tar.gz``) of PDFs, scans, DOCX, HTML or e-mails
plus a labels file, turned into a task's records by ``doctune.documents`` and stored like an
uploaded JSONL dataset (``services.datasets``).

Labels: for classification a CSV (``file,label``) or JSONL (``{"file", "label"}``); for the other
tasks JSONL records that name their document in ``file`` instead of giving its text (NER records
give ``entities``: ``[{"start", "end", "label", "text"?}]``). Spans refer to the extracted text; a
span's optional ``text`` (the quoted entity) lets doctune say why a span no longer matches, and move
it when the quote is found elsewhere. The upload report (per file: status, extractor, language,
pages, characters, error; per record: spans that do not match) lands in the dataset's info. Any bad
file or record stores nothing unless ``skip_bad``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from doctune.data import split_records, to_jsonl, validate_splits
from doctune.documents import Document, DocumentError, Limits, extract_many, normal_name, read_archive
from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.datasets import _check_label_count, _store_dataset
from doctune.services.redaction import redact_upload
from doctune.services.tenants import check_tenant_access
from doctune.spec import _slug
from doctune.store.db import Dataset
from doctune.tasks import get_task

__all__ = ["upload_documents"]

TEXT_FIELD = {"retrieval": "document"}  # the field a document's text fills; "text" for every other task
MAX_REPORTED = 200  # report rows kept in the dataset's info (the counts are always whole)
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\s\u3400-\u9fff\uf900-\ufaff]+")


def upload_documents(p: Platform, caller: Principal, *, tenant: str, name: str, task: str, archive: bytes,
                     labels: bytes, skip_bad: bool = False, dev_fraction: float = 0.1, test_fraction: float = 0.1,
                     seed: int = 42, limits: Limits | None = None, redact_pii: bool = False) -> Dataset:
    """Extract the archive's documents, join them with the labels and store the dataset; DoctuneError
    (with a per-file ``errors`` list) when any file or record is bad and ``skip_bad`` is false.
    ``redact_pii`` (or the tenant's setting): personal data replaced first (``doctune.services.redaction``)."""
    check_tenant_access(caller, tenant, write=True)
    try:
        _slug(name, "name")
    except ValueError as exc:
        raise DoctuneError(f"dataset {exc}", "invalid_request", field="name") from None
    get_task(task)
    _check_size(p, archive, "documents")
    _check_size(p, labels, "labels")
    rows = parse_labels(labels, task)
    try:
        files, archive_errors = read_archive(archive, limits)
    except DocumentError as exc:
        raise DoctuneError(f"documents: {exc.message}", "invalid_dataset", field="documents") from None
    wanted = {r["file"] for _, r in rows}
    docs: dict[str, Document | DocumentError] = dict(archive_errors)
    docs.update(extract_many(((f, b) for f, b in files.items() if f in wanted), limits))
    report = _file_report(files, docs, wanted)
    records, record_report = _records(task, rows, docs)
    report["records"] = record_report
    _refuse_or_skip(report, skip_bad)
    if not records:
        raise DoctuneError("no record is left after extraction; see the report of every file and record above",
                           "invalid_dataset", field="labels")
    _check_label_count(p, {get_task(task).stratify_key(r) for r in records})
    splits = split_records(records, task, dev=dev_fraction, test=test_fraction, seed=seed)
    splits, redaction = redact_upload(p, tenant, task, splits, redact_pii, documents_report=report)
    info = validate_splits(splits, task) | redaction
    _check_label_count(p, info.get("labels") or ())
    info["split"] = {"method": "stratified", "seed": seed, "dev": dev_fraction, "test": test_fraction}
    info["documents"] = report
    blobs = {split: to_jsonl(recs) for split, recs in splits.items()}
    info["bytes"] = sum(len(b) for b in blobs.values())
    return _store_dataset(p, tenant, name, task, blobs, info)


def _check_size(p: Platform, blob: bytes, field: str) -> None:
    limit = p.settings.max_upload_bytes
    if len(blob) > limit:
        raise DoctuneError(f"{field} is {len(blob)} bytes, over the {limit}-byte upload limit; upload it in parts or "
                           "ask an admin to raise DOCTUNE_MAX_UPLOAD_BYTES", "too_large", field=field)


def parse_labels(blob: bytes, task: str) -> list[tuple[int, dict[str, Any]]]:
    """(line, record) pairs of the labels file; each record names its document in ``file``."""
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DoctuneError("labels: not valid UTF-8; save the file as UTF-8", "invalid_dataset", field="labels") from None
    if not text.strip():
        raise DoctuneError("labels is empty; give one line per document", "invalid_dataset", field="labels")
    if text.lstrip().startswith("{"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DoctuneError(f"labels line {n}: invalid JSON ({exc.msg}); one JSON object per line",
                                       "invalid_dataset", field="labels") from None
    elif task == "classification":
        rows = _csv_rows(text)
    else:
        raise DoctuneError(f"labels for a {task} dataset are JSONL records naming their document in 'file'; a CSV "
                           "maps files to labels only for classification", "invalid_dataset", field="labels")
    for n, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not row["file"].strip():
            raise DoctuneError(f"labels line {n}: needs 'file', the document's path inside the archive, e.g. "
                               '{"file": "contracts/a.pdf", "label": "lease"}', "invalid_dataset", field="file")
        row["file"] = normal_name(row["file"].strip())
    return rows


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "file" not in columns or "label" not in columns:
        raise DoctuneError(f"labels CSV needs a header with 'file' and 'label' columns; got {columns}",
                           "invalid_dataset", field="labels")
    reader.fieldnames = columns
    return [(n, {"file": r["file"] or "", "label": (r["label"] or "").strip()}) for n, r in enumerate(reader, 2)]


def _file_report(files: dict[str, bytes], docs: dict[str, Document | DocumentError], wanted: set[str]) -> dict[str, Any]:
    rows = []
    for name in sorted(set(files) | set(docs)):
        result = docs.get(name)
        if isinstance(result, Document):
            rows.append({"file": name, "status": "ok", "extractor": result.extractor, "language": result.language,
                         "pages": len(result.pages), "chars": len(result.text), "ocr_pages": result.ocr_pages,
                         "page_starts": [pg.start for pg in result.pages],  # page n starts at page_starts[n-1]
                         **({"attachments": result.attachments} if result.attachments else {})})
        elif isinstance(result, DocumentError):
            rows.append({"file": name, "status": "error", "code": result.code, "error": result.message})
        elif name not in wanted:
            rows.append({"file": name, "status": "unlabelled", "error": "no line of the labels file names it; not used"})
    bad = [r for r in rows if r["status"] == "error"]
    return {"files": rows[:MAX_REPORTED], "file_count": len(rows), "bad_files": len(bad),
            "extractors": sorted({r["extractor"] for r in rows if r["status"] == "ok"})}


def _records(task: str, rows: list[tuple[int, dict[str, Any]]],
             docs: dict[str, Document | DocumentError]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The task's records, and the report of records that were dropped or whose spans moved."""
    plugin = get_task(task)
    records, bad, moved = [], [], []
    for n, row in rows:
        where = f"labels line {n} ({row['file']})"
        doc = docs.get(row["file"])
        if not isinstance(doc, Document):
            why = doc.message if isinstance(doc, DocumentError) else "the archive holds no file of that name"
            bad.append({"line": n, "file": row["file"], "why": why})
            continue
        record = {k: v for k, v in row.items() if k != "file"}
        problems, relocated = check_spans(record, doc.text)
        moved += [{"line": n, "file": row["file"], "page": doc.page_of(m["now"][0]), **m} for m in relocated]
        if problems:
            bad += [{"line": n, "file": row["file"], "page": doc.page_of(min(pr["span"][0], len(doc.text))), **pr}
                    for pr in problems]
            continue
        try:
            records.append(plugin.validate_record(_fill(task, record, doc), where))
        except DoctuneError as exc:
            bad.append({"line": n, "file": row["file"], "why": exc.message})
    return records, {"total": len(rows), "kept": len(records), "bad": len(bad), "bad_records": bad[:MAX_REPORTED],
                     "relocated_spans": moved[:MAX_REPORTED]}


def _fill(task: str, record: dict[str, Any], doc: Document) -> dict[str, Any]:
    """The record with the document's text in the task's text field (NER: tokens and BIO tags)."""
    if task == "ner":
        entities = record.pop("entities", None)
        if not isinstance(entities, list):
            raise DoctuneError("a NER record from a document needs 'entities': [{\"start\", \"end\", \"label\"}, ...] "
                               "(character offsets in the extracted text)", "invalid_dataset", field="entities")
        for i, e in enumerate(entities):
            if not (isinstance(e, dict) and isinstance(e.get("start"), int) and isinstance(e.get("end"), int)
                    and isinstance(e.get("label"), str) and e["label"].strip()):
                raise DoctuneError(f"entities[{i}] must be {{\"start\": int, \"end\": int, \"label\": \"org\"}}; got {e!r}",
                                   "invalid_dataset", field="entities")
        return {**record, **bio_tags(doc.text, entities)}
    return {**record, TEXT_FIELD.get(task, "text"): doc.text}


def bio_tags(text: str, entities: list[dict[str, Any]]) -> dict[str, list[str]]:
    """``text`` as tokens (words; each Chinese character is one) with BIO tags from character spans."""
    tokens, tags = [], []
    for m in _TOKEN.finditer(text):
        tag = "O"
        for e in entities:
            if e["start"] < m.end() and m.start() < e["end"]:
                tag = ("I-" if tags and tags[-1][2:] == e["label"] and m.start() > e["start"] else "B-") + str(e["label"])
                break
        tokens.append(m.group())
        tags.append(tag)
    return {"tokens": tokens, "tags": tags}


def check_spans(record: Any, text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check every ``{"start", "end"}`` span in ``record`` against ``text``: (problems, relocations). A span
    with a quoted ``text`` that is found elsewhere is moved there; the quote key is removed."""
    problems: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    for span in _spans(record):
        start, end, quote = span["start"], span["end"], span.pop("text", None)
        if quote is None:
            if end > len(text):
                problems.append({"span": [start, end], "why": f"ends past the extracted text ({len(text)} characters)"})
            continue
        if text[start:end] == quote:
            continue
        found = _find(text, quote, start)
        if found is None:
            problems.append({"span": [start, end], "quote": quote, "why": f"the extracted text reads "
                             f"{text[start:end]!r} there and holds {quote!r} nowhere: OCR misread it, or the "
                             "extractor dropped or reordered it"})
            continue
        span["start"], span["end"] = found
        moved.append({"span": [start, end], "now": list(found), "quote": quote,
                      "why": "extraction shifted the text (headers, line breaks or spacing differ)"})
    return problems, moved


def _spans(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        if isinstance(value.get("start"), int) and isinstance(value.get("end"), int):
            return [value]
        return [s for v in value.values() for s in _spans(v)]
    if isinstance(value, list):
        return [s for v in value for s in _spans(v)]
    return []


def _find(text: str, quote: str, near: int) -> tuple[int, int] | None:
    """The occurrence of ``quote`` nearest ``near``, whitespace-insensitive; None when absent."""
    words = quote.split()
    if not words:
        return None
    hits = [m.span() for m in re.finditer(r"\s+".join(re.escape(w) for w in words), text)]
    return min(hits, key=lambda h: abs(h[0] - near)) if hits else None


def _refuse_or_skip(report: dict[str, Any], skip_bad: bool) -> None:
    report["skip_bad"] = skip_bad
    errors = [{"field": r["file"], "message": r["error"], "code": r.get("code")}
              for r in report["files"] if r["status"] == "error"]
    errors += [{"field": f"labels line {r['line']} ({r['file']})", "message": r["why"]}
               for r in report["records"]["bad_records"] if not any(e["field"] == r["file"] for e in errors)]
    if errors and not skip_bad:
        first = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        raise DoctuneError(f"{len(errors)} file(s) or record(s) cannot be used ({first}{'; ...' if len(errors) > 3 else ''}); "
                           "nothing was stored. Fix them, or upload with skip_bad=true (--skip-bad) to make the dataset "
                           "from the good ones", "invalid_dataset", field="documents", errors=errors[:MAX_REPORTED])
