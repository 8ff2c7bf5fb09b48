"""Base models a tenant brings: ``doctune models upload --name NAME DIR`` (``POST
/v1/base-models``) stores a Hugging Face model folder under ``tenants/<tenant>/base-models/
NAME/``, and ``GET /v1/base-models`` lists them beside the catalog. A job of that tenant
names one by the ``base_model`` the upload returns (``s3://<bucket>/tenants/...``); no other
tenant may (``doctune.base_models.check_base_model_allowed``).

The upload is a tar archive (the CLI streams one). Nothing of it reaches the object store
until every member has been checked: plain files only (no links, devices or folders that
climb out: ``..``, absolute names), at most :data:`MAX_FILES` of them, a ``config.json`` that
is a JSON object with a ``model_type`` and a tokenizer beside it. It is unpacked into a
scratch folder of mode 0700 that is deleted whatever happens; ``config.json`` is stored last,
so a model whose upload broke off is never listed or used. A name is uploaded once: models
trained on it must keep reading the same weights.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

from doctune.base_models import CATALOG, OWN_BASE_MODELS, own_base_model_key
from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.tenants import check_tenant_access, get_tenant, storage_refusal
from doctune.spec import SLUG
from doctune.store.db import take_quota_lock
from doctune.store.objects import tenant_key
from doctune.store.paths import confined_path, make_scratch

__all__ = ["MAX_FILES", "check_upload", "list_base_models", "upload_base_model"]

MAX_FILES = 200
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def _tenant_of(caller: Principal, tenant: str | None) -> str:
    tenant = tenant or caller.tenant_id
    if not tenant:
        raise DoctuneError("the platform admin uploads for a tenant: give its name (tenant=...)", "invalid_request",
                           field="tenant")
    return tenant


def check_upload(p: Platform, caller: Principal, *, tenant: str | None, name: str,
                 size: int | None = None) -> str:
    """Everything that can be refused before the archive is read: who, which name, whether it
    is taken, whether ``size`` bytes fit the quota. Returns the tenant."""
    tenant = _tenant_of(caller, tenant)
    check_tenant_access(caller, tenant, write=True)
    if get_tenant(p, tenant) is None:
        raise DoctuneError(f"tenant {tenant!r} does not exist", "not_found", field="tenant")
    if not isinstance(name, str) or not SLUG.match(name):
        raise DoctuneError(f"name must be 1-63 lowercase letters, digits or '-', starting and ending with a letter "
                           f"or digit; got {name!r}"[:300], "invalid_request", field="name")
    if name in CATALOG:
        raise DoctuneError(f"{name!r} is a catalog model's name; choose another name for your model",
                           "conflict", field="name", tenant_error=True)
    if any(True for _ in p.objects.list_keys(own_base_model_key(tenant, name) + "/config.json")):
        raise DoctuneError(f"tenant {tenant} already has a base model {name!r}; models trained on it keep reading it, "
                           "so it is never replaced: upload under another name", "conflict", field="name",
                           tenant_error=True)
    if size is not None:
        refusal = storage_refusal(p, tenant, size, f"a base model of {size} bytes")
        if refusal is not None:
            raise refusal
    return tenant


def _bad(why: str) -> DoctuneError:
    return DoctuneError(f"archive refused, nothing was stored: {why}", "invalid_request", field="archive")


def _unpack(archive: Path, into: Path, max_bytes: int) -> int:
    """Unpack the checked members of ``archive`` into ``into``; returns their bytes (at most
    ``max_bytes``: a compressed archive may unpack to far more than was sent)."""
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise _bad(f"not a tar archive ({exc}); send the model folder as `tar -C DIR -cf - .`") from None
    total, files = 0, 0
    with tar:
        for member in tar:
            rel = member.name[2:] if member.name.startswith("./") else member.name
            if member.isdir() and rel in ("", "."):
                continue
            dest = confined_path(into, rel.rstrip("/") if member.isdir() else rel, what="archive member")
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise _bad(f"member {member.name!r} is a link or a special file; only plain files are accepted")
            files, total = files + 1, total + member.size
            if total > max_bytes:
                raise DoctuneError(f"archive refused, nothing was stored: it unpacks to more than {max_bytes} bytes, "
                                   "the platform's limit for a base model (DOCTUNE_MAX_BASE_MODEL_BYTES)", "too_large",
                                   field="archive")
            if files > MAX_FILES:
                raise _bad(f"more than {MAX_FILES} files; a Hugging Face model folder holds a few")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
    return total


def _check_model_folder(folder: Path) -> None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise _bad("no config.json at the top of the archive; archive the model folder's contents "
                   "(`doctune models upload --name NAME DIR` does)") from None
    except (ValueError, UnicodeDecodeError):
        raise _bad("config.json is not JSON") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise _bad("config.json has no model_type: it is not a Hugging Face model's config")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise _bad(f"no tokenizer beside config.json (one of {', '.join(TOKENIZER_FILES)}); save it with "
                   "tokenizer.save_pretrained(DIR)")


def upload_base_model(p: Platform, caller: Principal, *, tenant: str | None, name: str,
                      archive: Path) -> dict[str, Any]:
    """Check, unpack and store the model folder in ``archive`` as tenant's base model ``name``."""
    tenant = check_upload(p, caller, tenant=tenant, name=name)
    folder = make_scratch("doctune-upload-")
    prefix = own_base_model_key(tenant, name)
    try:
        size = _unpack(archive, folder, p.settings.max_base_model_bytes)
        _check_model_folder(folder)
        files = sorted(f for f in folder.rglob("*") if f.is_file())
        with p.db.session() as s:  # the quota, now that the size is known, checked and spent under the lock
            take_quota_lock(s)
            check_upload(p, caller, tenant=tenant, name=name, size=size)
            try:
                for f in sorted(files, key=lambda f: f.name == "config.json"):  # config.json last: the model is complete
                    p.objects.upload_file(f, f"{prefix}/{f.relative_to(folder).as_posix()}")
            except Exception:
                p.objects.delete_prefix(prefix + "/")
                raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"name": name, "tenant": tenant, "base_model": p.objects.uri(prefix), "source": "uploaded",
            "bytes": size, "files": len(files)}


def list_base_models(p: Platform, caller: Principal, tenant: str | None = None) -> list[dict[str, Any]]:
    """The catalog, then the tenant's uploaded base models (by name)."""
    out: list[dict[str, Any]] = [{"name": n, "tenant": None, "base_model": n, "source": "catalog", "bytes": None,
                                  "files": None} for n in CATALOG]
    tenant = tenant or caller.tenant_id
    if not tenant:
        return out
    check_tenant_access(caller, tenant)
    root = tenant_key(tenant, OWN_BASE_MODELS) + "/"
    sizes: dict[str, list[int]] = {}
    complete = set()
    for key, size in p.objects.list_objects(root):
        name, _, rest = key[len(root):].partition("/")
        sizes.setdefault(name, []).append(size)
        if rest == "config.json":
            complete.add(name)
    for name in sorted(complete):
        out.append({"name": name, "tenant": tenant, "base_model": p.objects.uri(own_base_model_key(tenant, name)),
                    "source": "uploaded", "bytes": sum(sizes[name]), "files": len(sizes[name])})
    return out
