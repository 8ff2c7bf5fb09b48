"""`doctune datasets`: upload (with a progress bar), list, show and delete datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from doctune.cli.output import bytes_bar, show
from doctune.cli.session import ApiKey, Limit, TaskFilter, connect, list_items
from doctune.errors import DoctuneError

__all__ = ["app"]

app = typer.Typer(help="Upload and inspect datasets.", no_args_is_help=True)

DATASET_COLUMNS = ("id", "tenant", "name", "task", "info.sizes.train", "info.sizes.dev", "info.sizes.test", "info.bytes")


@app.command("upload")
def datasets_upload(
    name: str = typer.Option(..., help="Dataset name (slug)."),
    task: str = typer.Option("classification"),
    data: Optional[Path] = typer.Option(None, help="One JSONL (or .csv) file; doctune makes a seeded, stratified split."),
    train: Optional[Path] = None,
    dev: Optional[Path] = None,
    test: Optional[Path] = None,
    seed: int = 42,
    documents: Optional[Path] = typer.Option(None, help="A .zip or .tar.gz of PDFs, scans, DOCX, HTML or .eml files "
                                                        "(docs/documents.md); needs --labels."),
    labels: Optional[Path] = typer.Option(None, help="With --documents: CSV file,label (classification) or JSONL "
                                                     "records naming their document in 'file'."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="With --documents: make the dataset from the good files; "
                                                            "the report in its info lists the bad ones."),
    api_key: ApiKey = None,
) -> None:
    """Upload a dataset: --data FILE, or --train/--dev/--test, or --documents ARCHIVE --labels FILE."""
    files = {k: v for k, v in {"data": data, "train": train, "dev": dev, "test": test, "documents": documents,
                               "labels": labels}.items() if v}
    extra = {"skip_bad": "true"} if skip_bad else {}
    for k, v in files.items():
        if not v.is_file():
            raise DoctuneError(f"{v} is not a file; give the path of a JSONL or CSV file (or, for --documents, an archive)", "invalid_request", field=k)
    client = connect(api_key)
    with bytes_bar(sum(f.stat().st_size for f in files.values()), "upload") as bar:
        result = client.upload_dataset(name, task, files, progress=bar.update, seed=seed, **extra)
    show(result)


@app.command("list")
def datasets_list(task: TaskFilter = None, limit: Limit = None, api_key: ApiKey = None) -> None:
    """Your tenant's datasets, newest first, with their split sizes."""
    show(list_items(connect(api_key), "/v1/datasets", limit, task=task), DATASET_COLUMNS)


@app.command("show")
def datasets_show(dataset_id: str, api_key: ApiKey = None) -> None:
    """A dataset's task, labels, split sizes and where it is stored."""
    show(connect(api_key).request("GET", f"/v1/datasets/{dataset_id}"))


@app.command("delete")
def datasets_delete(dataset_id: str, api_key: ApiKey = None) -> None:
    """Delete a dataset and its files; refused (conflict) while a job or model uses it."""
    show(connect(api_key).request("DELETE", f"/v1/datasets/{dataset_id}"))
