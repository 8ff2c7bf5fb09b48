"""`doctune models`: registered models (list, show, download, delete), the packaged base
models (`models prepare`), and base models a tenant brings (`models upload`, `models base`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from doctune.cli.output import bytes_bar, show
from doctune.cli.session import ApiKey, Limit, TaskFilter, connect, list_items
from doctune.errors import DoctuneError

__all__ = ["app"]

app = typer.Typer(help="Registered models, and the packaged base models.", no_args_is_help=True)

MODEL_COLUMNS = ("id", "tenant", "task", "job_id", "merged", "uri")


@app.command("list")
def models_list(task: TaskFilter = None, limit: Limit = None, api_key: ApiKey = None) -> None:
    """Your tenant's registered models, newest first."""
    show(list_items(connect(api_key), "/v1/models", limit, task=task), MODEL_COLUMNS)


@app.command("get")
def models_get(model_id: str, api_key: ApiKey = None) -> None:
    """A model's metrics (fine-tuned beside baseline) and where it is stored."""
    show(connect(api_key).get_model(model_id))


app.command("show", help="Same as `models get`.")(models_get)


@app.command("delete")
def models_delete(model_id: str, api_key: ApiKey = None) -> None:
    """Delete a model and its files; refused (conflict) while a deployment serves it."""
    show(connect(api_key).request("DELETE", f"/v1/models/{model_id}"))


@app.command("download")
def models_download(model_id: str, dest: Path = typer.Option(Path("."), help="Folder to write the model into."),
                    api_key: ApiKey = None) -> None:
    """Download a model's files through short-lived presigned URLs."""
    import httpx

    files = connect(api_key).request("GET", f"/v1/models/{model_id}/files")
    out = dest / model_id
    with bytes_bar(sum(f["bytes"] for f in files), model_id) as bar:
        for f in files:
            target = out / f["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            with httpx.stream("GET", f["url"], timeout=120) as r, open(target, "wb") as fh:
                if r.status_code >= 400:
                    raise DoctuneError(f"downloading {f['path']} failed: HTTP {r.status_code}; presigned URLs are "
                                       "short-lived, so run the download again", "unavailable", field="path")
                for chunk in r.iter_bytes():
                    fh.write(chunk)
                    bar.update(len(chunk))
    typer.echo(f"wrote {len(files)} files to {out}")


@app.command("upload")
def models_upload(folder: Path = typer.Argument(..., exists=True, file_okay=False, help="A Hugging Face model folder (config.json, tokenizer, weights)."),
                  name: str = typer.Option(..., "--name", help="The base model's name (lowercase letters, digits, '-')."),
                  tenant: str = typer.Option(None, help="The tenant (the admin's choice; a tenant key's own by default)."),
                  api_key: ApiKey = None) -> None:
    """Bring your own base model: store FOLDER under your tenant's prefix; its base_model is printed.
    Only your tenant's jobs may train on it."""
    client = connect(api_key)
    if any(m["name"] == name for m in client.list_base_models(tenant)):  # before sending gigabytes for nothing
        raise DoctuneError(f"base model {name!r} exists already (see `doctune models base`); models trained on it "
                           "keep reading it, so it is never replaced: upload under another name", "conflict",
                           field="name")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    with bytes_bar(size, name) as bar:
        out = client.upload_base_model(name, folder, tenant=tenant, progress=bar.update)
    show(out)


@app.command("base")
def models_base(tenant: str = typer.Option(None, help="The tenant (the admin's choice)."), api_key: ApiKey = None) -> None:
    """The base models your jobs may train on: the catalog and your uploads (use the base_model column)."""
    show(connect(api_key).list_base_models(tenant), ("name", "source", "base_model", "bytes"))


@app.command("prepare")
def models_prepare() -> None:
    """Make the packaged base models ready locally (Gemma-3-270M is converted from GGUF once, ~1 min)."""
    from doctune.base_models import CATALOG

    for name, resolve in CATALOG.items():
        t = time.monotonic()
        typer.echo(f"{name}: {resolve()} ({time.monotonic() - t:.0f} s)")
