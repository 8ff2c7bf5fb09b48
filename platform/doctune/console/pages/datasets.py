"""Datasets: upload JSONL/CSV, preview, detected labels with a class-balance chart, validation errors
by line and field, the tenant's datasets, delete.

The file goes to ``POST /v1/datasets`` as it is (a ``.csv`` name makes it CSV); the API validates
every line, and a bad file's 422 lists each bad line in ``errors``, which this page shows as a table.
Documents (docs/documents.md): an archive (.zip, .tar.gz) with a labels file goes as the parts
``documents`` and ``labels`` (with ``skip_bad``); the upload report shows one row per file."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from doctune.console.context import Console, action
from doctune.errors import DoctuneError

PREVIEW_ROWS = 10
ERROR_COLUMNS = ["line", "field", "message"]
REPORT_COLUMNS = ["file", "status", "extractor", "language", "pages", "error"]
ARCHIVES = [".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz"]
LIST_COLUMNS = ["id", "name", "task", "train", "dev", "test", "labels", "created_at"]


def build(console: Console) -> None:
    with gr.Row():
        task = console.add("datasets.task", gr.Dropdown(["classification"], value="classification", label="Task",
                                                        elem_id="datasets-task", scale=1))
        name = console.add("datasets.name", gr.Textbox(label="Name", placeholder="bbc-news (default: the file's name)",
                                                       elem_id="datasets-name", scale=1))
        upload = console.add("datasets.file", gr.File(label="JSONL or CSV file", file_types=[".jsonl", ".json", ".csv"],
                                                      type="filepath", elem_id="datasets-file", scale=2))
    send = console.add("datasets.upload", gr.Button("Upload", variant="primary", elem_id="datasets-upload"))
    status = console.add("datasets.status", gr.Markdown("", elem_id="datasets-status"))
    errors = console.add("datasets.errors", gr.Dataframe(pd.DataFrame(columns=ERROR_COLUMNS), label="Validation errors",
                                                         visible=False, wrap=True, elem_id="datasets-errors"))
    preview = console.add("datasets.preview", gr.Dataframe(label="Preview (first rows)", wrap=True, elem_id="datasets-preview"))
    balance = console.add("datasets.balance", gr.BarPlot(_balance({}), x="label", y="count",
                                                         label="Class balance (train split)", elem_id="datasets-balance"))
    _documents(console, task, name, status, balance)
    gr.Markdown("---")
    table = console.add("datasets.list", gr.Dataframe(pd.DataFrame(columns=LIST_COLUMNS), label="Your datasets",
                                                      interactive=False, elem_id="datasets-list"))
    with gr.Row():
        refresh = console.add("datasets.refresh", gr.Button("Refresh", elem_id="datasets-refresh", scale=1))
        pick = console.add("datasets.pick", gr.Dropdown([], label="Dataset", elem_id="datasets-pick", scale=3))
        delete = console.add("datasets.delete", gr.Button("Delete", variant="stop", elem_id="datasets-delete", scale=1))
    console.writes(send, delete)
    _wire(console, task, name, upload, send, status, errors, preview, balance, table, refresh, pick, delete)
    _wire_documents(console, task, name, status, balance, table, pick)


def _documents(console: Console, task, name, status, balance) -> None:
    with gr.Accordion("Documents: an archive (.zip, .tar.gz) of PDFs, scans, DOCX, HTML, .eml with a labels file",
                      open=False, elem_id="datasets-documents"):
        with gr.Row():
            console.add("datasets.archive", gr.File(label="Archive of documents", file_types=ARCHIVES, type="filepath",
                                                    elem_id="datasets-archive", scale=2))
            console.add("datasets.labels", gr.File(label="Labels file (CSV file,label or JSONL)",
                                                   file_types=[".csv", ".jsonl", ".json"], type="filepath",
                                                   elem_id="datasets-labels", scale=2))
            console.add("datasets.skip_bad", gr.Checkbox(False, label="Skip bad files (make the dataset from the good ones)",
                                                         elem_id="datasets-skip-bad", scale=1))
        console.writes(console.add("datasets.upload_documents", gr.Button("Upload documents", variant="primary",
                                                                          elem_id="datasets-upload-documents")))
        console.add("datasets.report", gr.Dataframe(pd.DataFrame(columns=REPORT_COLUMNS), label="Upload report (per file)",
                                                    wrap=True, interactive=False, elem_id="datasets-report"))


def _wire_documents(console: Console, task, name, status, balance, table, pick) -> None:
    el = console.elements

    @action
    def upload_documents(task_name: str, ds_name: str, archive: str | None, labels: str | None, skip_bad: bool,
                         request: gr.Request):
        if not archive or not labels:
            raise DoctuneError("Choose both the archive of documents and its labels file.", "invalid_request",
                               field="documents" if not archive else "labels")
        client = console.client(request)
        name_ = (ds_name or "").strip() or _name_from(Path(Path(archive).name.split(".")[0]))
        listed = client.list_datasets(limit=200)
        try:
            ds = client.upload_dataset(name_, task_name, {"documents": Path(archive), "labels": Path(labels)},
                                       skip_bad=str(bool(skip_bad)).lower())
        except DoctuneError as e:
            if not e.errors and e.code != "invalid_dataset":
                raise
            return (f"**Not uploaded:** {e.message}", report_frame({}, e), _balance({}), _list_frame(listed),
                    gr.update(choices=[(f"{d['name']} ({d['id']})", d["id"]) for d in listed]))
        listed = client.list_datasets(limit=200)
        return (_summary(ds), report_frame(ds["info"].get("documents") or {}), _balance(ds["info"]), _list_frame(listed),
                gr.update(choices=[(f"{d['name']} ({d['id']})", d["id"]) for d in listed]))

    el["datasets.upload_documents"].click(
        upload_documents, [task, name, el["datasets.archive"], el["datasets.labels"], el["datasets.skip_bad"]],
        [status, el["datasets.report"], balance, table, pick], api_name="upload_documents")


def report_frame(report: dict[str, Any], error: DoctuneError | None = None) -> pd.DataFrame:
    """One row per file of the upload report (or, for a refused upload, per bad file or record it names)."""
    if error is not None:
        rows = [[e.get("field", ""), "error", "", "", "", e.get("message", "")] for e in error.errors or []]
        return pd.DataFrame(rows or [["", "error", "", "", "", error.message]], columns=REPORT_COLUMNS)
    rows = [[f.get("file", ""), f.get("status", ""), f.get("extractor", ""), f.get("language", ""),
             f.get("pages", ""), f.get("error", "")] for f in report.get("files") or []]
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def _wire(console: Console, task, name, upload, send, status, errors, preview, balance, table, refresh, pick, delete) -> None:
    @action
    def list_datasets(request: gr.Request):
        items = console.client(request).list_datasets(limit=200)
        return _list_frame(items), gr.update(choices=[(f"{d['name']} ({d['id']})", d["id"]) for d in items])

    @action
    def task_choices(request: gr.Request):
        names = [t["name"] for t in console.client(request).list_tasks()]
        return gr.update(choices=names, value=names[0] if names else None)

    @action
    def upload_dataset(task_name: str, ds_name: str, path: str | None, request: gr.Request):
        if not path:
            raise DoctuneError("Choose a JSONL or CSV file to upload.", "invalid_request", field="file")
        shown = preview_rows(Path(path))
        client = console.client(request)
        name_ = (ds_name or "").strip() or _name_from(Path(path))
        try:
            ds = client.upload_dataset(name_, task_name, {"data": Path(path)})
        except DoctuneError as e:
            if not e.errors and e.code != "invalid_dataset":
                raise
            return (f"**Not uploaded:** {e.message}", gr.update(value=_errors_frame(e), visible=True), shown,
                    _balance({}), *list_datasets(request))
        return (_summary(ds), gr.update(value=pd.DataFrame(columns=ERROR_COLUMNS), visible=False), shown,
                _balance(ds["info"]), *list_datasets(request))

    @action
    def delete_dataset(dataset_id: str | None, request: gr.Request):
        if not dataset_id:
            raise DoctuneError("Pick a dataset to delete.", "invalid_request", field="dataset")
        ds = console.client(request).delete_dataset(dataset_id)
        return (f"Deleted **{ds['name']}** ({ds['id']}).", *list_datasets(request))

    console.on_sign_in(list_datasets, [table, pick])
    console.on_sign_in(task_choices, [task])
    refresh.click(list_datasets, None, [table, pick], api_name="list_datasets")
    send.click(upload_dataset, [task, name, upload], [status, errors, preview, balance, table, pick],
               api_name="upload_dataset")
    delete.click(delete_dataset, [pick], [status, table, pick], api_name="delete_dataset")


def preview_rows(path: Path, n: int = PREVIEW_ROWS) -> pd.DataFrame:
    """The file's first ``n`` records as a table (lists and objects as JSON), read here without
    validating: the API validates the whole file."""
    text = path.read_bytes()[: 1 << 20].decode("utf-8-sig", errors="replace")
    if path.suffix.lower() == ".csv":
        rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(text)))[:n]
    else:
        rows = []
        for line in text.splitlines():
            if len(rows) >= n:
                break
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = {"(not JSON)": line[:200]}
                rows.append(obj if isinstance(obj, dict) else {"(not an object)": line[:200]})
    cells = [{k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in r.items()} for r in rows]
    return pd.DataFrame(cells)


def _balance(info: dict[str, Any]) -> pd.DataFrame:
    """The class balance the task reported: the first ``*_counts`` mapping in the dataset's info
    (label_counts for classification, entity_counts for NER, ...)."""
    counts = next((v for k, v in sorted(info.items()) if k.endswith("_counts") and isinstance(v, dict)), {})
    # typed columns even when empty: an untyped empty frame makes Gradio send ``label`` as a quantitative
    # axis, and the chart then drew no bars for the string labels that came later
    return pd.DataFrame({"label": pd.Series([str(k) for k in counts], dtype=str),
                         "count": pd.Series([int(v) for v in counts.values()], dtype="int64")})


def _errors_frame(e: DoctuneError) -> pd.DataFrame:
    rows = e.errors or [{"line": "", "field": e.field or "", "message": e.message}]
    return pd.DataFrame([[r.get("line", ""), r.get("field", ""), r.get("message", "")] for r in rows], columns=ERROR_COLUMNS)


def _summary(ds: dict[str, Any]) -> str:
    info = ds.get("info") or {}
    sizes = info.get("sizes") or {}
    labels = info.get("labels") or info.get("entity_types") or info.get("relations") or []
    what = f"; {len(labels)} labels: {', '.join(map(str, labels[:30]))}" if labels else ""
    return (f"Uploaded **{ds['name']}** as `{ds['id']}` ({ds['task']}): "
            f"{sizes.get('train', 0)} train / {sizes.get('dev', 0)} dev / {sizes.get('test', 0)} test{what}.")


def _list_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for d in items:
        info, sizes = d.get("info") or {}, (d.get("info") or {}).get("sizes") or {}
        labels = info.get("labels") or info.get("entity_types") or []
        rows.append([d["id"], d["name"], d["task"], sizes.get("train"), sizes.get("dev"), sizes.get("test"),
                     ", ".join(map(str, labels[:12])), str(d.get("created_at") or "")[:19]])
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def _name_from(path: Path) -> str:
    """A dataset name (a slug) from the uploaded file's name."""
    stem = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")[:60]
    return stem if re.match(r"^[a-z0-9]", stem or "") else f"dataset-{stem}".strip("-")
