"""`doctune datasets`: upload (with a progress bar), append a version, list, show, versions and delete datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from doctune.cli.output import bytes_bar, show
from doctune.cli.session import ApiKey, Limit, TaskFilter, connect, list_items
from doctune.errors import DoctuneError

__all__ = ["app"]

app = typer.Typer(help="Upload and inspect datasets.", no_args_is_help=True)

DATASET_COLUMNS = ("id", "tenant", "name", "task", "version", "info.sizes.train", "info.sizes.dev", "info.sizes.test",
                   "info.bytes")


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
    redact_pii: bool = typer.Option(False, "--redact-pii", help="Replace personal data before anything is stored: "
                                    "emails, phone numbers (Chinese mobiles too), card numbers (Luhn-checked), IBANs "
                                    "(mod-97), US SSNs and Chinese resident IDs (GB 11643 check) and person names "
                                    "after a title (Mr, Dr, ...) or before 先生/女士 become <EMAIL>, <PHONE>, <CARD>, "
                                    "<IBAN>, <NATIONAL_ID>, <PERSON>; counts by type in info.pii_redaction. Names "
                                    "without such a cue are not found (no NER model). Always on when your tenant's "
                                    "setting is (`doctune tenants settings`)."),
    api_key: ApiKey = None,
) -> None:
    """Upload a dataset: --data FILE, or --train/--dev/--test, or --documents ARCHIVE --labels FILE.
    With --redact-pii, personal data is replaced by typed placeholders before it is stored."""
    files = {k: v for k, v in {"data": data, "train": train, "dev": dev, "test": test, "documents": documents,
                               "labels": labels}.items() if v}
    extra = {"skip_bad": "true"} if skip_bad else {}
    for k, v in files.items():
        if not v.is_file():
            raise DoctuneError(f"{v} is not a file; give the path of a JSONL or CSV file (or, for --documents, an archive)", "invalid_request", field=k)
    client = connect(api_key)
    with bytes_bar(sum(f.stat().st_size for f in files.values()), "upload") as bar:
        result = client.upload_dataset(name, task, files, progress=bar.update, seed=seed, redact_pii=redact_pii, **extra)
    show(result)


VERSION_COLUMNS = ("version", "records", "sizes.train", "sizes.dev", "sizes.test", "duplicates", "drift.records",
                   "drift.percent", "drift.tvd", "created_at")


@app.command("append")
def datasets_append(
    dataset: str = typer.Argument(..., metavar="NAME_OR_ID", help="The dataset's id, or its name among yours."),
    data: Path = typer.Option(..., help="New records, JSONL (or .csv), in the dataset's task's format."),
    api_key: ApiKey = None,
) -> None:
    """Append records as the dataset's next version: they are split as the dataset was, no stored record
    changes split, and earlier versions stay readable. Prints the version's counts and label drift, and
    what each endpoint's retrain policy decided."""
    if not data.is_file():
        raise DoctuneError(f"{data} is not a file; give the path of a JSONL or CSV file of new records",
                           "invalid_request", field="data")
    client = connect(api_key)
    with bytes_bar(data.stat().st_size, "append") as bar:
        result = client.append_dataset(dataset, data, progress=bar.update)
    show(result)


@app.command("versions")
def datasets_versions(
    dataset: str = typer.Argument(..., metavar="NAME_OR_ID", help="The dataset's id, or its name among yours."),
    api_key: ApiKey = None,
) -> None:
    """The dataset's versions, oldest first: split sizes, duplicates and the drift from the version before."""
    show(connect(api_key).dataset_versions(dataset), VERSION_COLUMNS)


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
