"""Export of a trained model to the object store in Hugging Face format.

The worker loop (:mod:`doctune.train.loop`) calls :func:`export_trained_model` on every
rank at the end of a run: under ZeRO-3 the parameters are gathered to rank 0 (a
collective), rank 0 writes the model (LoRA merged or kept as an adapter), the tokenizer
and ``doctune.json`` (what serving needs to know) under the job's export prefix, and all
ranks wait for it at a barrier.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from doctune.store.paths import scratch_dir
from doctune.train.tuning import is_peft, merges_on_export

__all__ = ["export_model", "export_trained_model"]


def export_model(module, tokenizer, spec, info, store, prefix: str, plugin=None, splits=None) -> None:
    """Write the model in Hugging Face format (LoRA merged or kept as an adapter)."""
    merged = merges_on_export(spec)
    model = module
    if is_peft(spec) and merged:
        model = module.merge_and_unload()
    with tempfile.TemporaryDirectory(prefix="doctune-export-", dir=scratch_dir()) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {
            "task": spec.task,
            "labels": info.get("labels"),
            "max_seq_length": spec.max_seq_length,
            "tuning": spec.tuning.method,
            "adapter_merged": merged if is_peft(spec) else None,  # false: an adapter over base_model
            "lora_merged": merged if spec.tuning.method == "lora" else None,
            "base_model": spec.base_model,
        }
        extras = getattr(plugin, "export_extras", None)  # e.g. retrieval's document index
        if extras is not None:
            meta.update(extras(model, tokenizer, info, splits, spec.max_seq_length, Path(tmp)) or {})
        (Path(tmp) / "doctune.json").write_text(json.dumps(meta, indent=2))
        store.upload_dir(tmp, prefix)


def export_trained_model(engine, *, rank: int, tokenizer, spec, info, store, prefix: str, plugin: Any,
                         splits: dict[str, list[dict[str, Any]]]) -> None:
    """Every rank calls this: ZeRO-3 gathers the full parameters (a collective), rank 0
    exports them with :func:`export_model`, and all ranks meet at a barrier after."""
    import deepspeed
    import torch.distributed as dist

    if spec.deepspeed.zero_stage == 3:
        # the test and dev evaluations' forward passes can leave prefetched parameters in flight;
        # gathering them and partitioning them again on exit then fails ("Cannot partition a param
        # in flight", Gemma-3-270M full fine-tuning): wait for them and release every parameter first
        engine.empty_partition_cache()
    gather = (
        deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=0)
        if spec.deepspeed.zero_stage == 3
        else nullcontext()
    )
    with gather:
        if rank == 0:
            export_model(engine.module, tokenizer, spec, info, store, prefix, plugin, splits)
    dist.barrier()
