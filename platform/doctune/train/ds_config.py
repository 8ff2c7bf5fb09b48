"""Build the DeepSpeed config from a JobSpec: ZeRO stage and offload, gradient
accumulation, the optimizer and the LR schedule all live here, in one place."""

from __future__ import annotations

from typing import Any

from doctune.spec import JobSpec


def build_deepspeed_config(spec: JobSpec, world_size: int, total_steps: int, *, on_gpu: bool = False) -> dict[str, Any]:
    ds = spec.deepspeed
    warmup = max(1, int(spec.warmup_ratio * total_steps))  # DeepSpeed requires >= 1
    zero: dict[str, Any] = {"stage": ds.zero_stage, **zero_buckets(ds.zero_stage)}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": spec.micro_batch_size,
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "train_batch_size": spec.micro_batch_size * spec.gradient_accumulation_steps * world_size,
        "gradient_clipping": 1.0,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": spec.learning_rate,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": spec.weight_decay,
                # torch's AdamW (its foreach CUDA kernels on a GPU) needs no op build: DeepSpeed's
                # FusedAdam would be compiled with nvcc on every node at the first step, and
                # the CPU has no fused kernels at all
                "torch_adam": True,
            },
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": spec.learning_rate,
                "warmup_num_steps": warmup,
                "total_num_steps": max(total_steps, warmup + 1),
                "warmup_type": "linear",
            },
        },
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if on_gpu and spec.precision != "fp32":  # on a CPU, bf16 is autocast around the forward (train.precision)
        cfg["bf16"] = {"enabled": True}
    if ds.offload_optimizer:
        # CPU offload: DeepSpeedCPUAdam (built once into TORCH_EXTENSIONS_DIR).
        cfg["optimizer"]["params"].pop("torch_adam")
    return cfg


# Elements per ZeRO buffer. DeepSpeed 0.19's defaults are sized for billion-parameter models on GPUs:
# 5e8-element reduce and all-gather buckets (2 GB each in fp32), and under ZeRO-3 up to 1e9 gathered
# parameters kept live (more than a whole Gemma-3-270M, so nothing was ever released: ZeRO-3 held 8.1 GB
# per worker where ZeRO-0 held 6.6, docs/benchmarks.md "Resources"). 5e7 (200 MB) stays large per
# collective for gloo on one host.
BUCKET_ELEMENTS = 50_000_000


def zero_buckets(stage: int) -> dict[str, Any]:
    """The ZeRO buffer sizes for ``stage`` (none for stage 0)."""
    if stage == 0:
        return {}
    buckets: dict[str, Any] = {"reduce_bucket_size": BUCKET_ELEMENTS}
    if stage in (1, 2):
        return buckets | {"allgather_bucket_size": BUCKET_ELEMENTS}
    return buckets | {"stage3_prefetch_bucket_size": BUCKET_ELEMENTS // 2, "stage3_max_live_parameters": 2 * BUCKET_ELEMENTS,
                      "stage3_max_reuse_distance": 2 * BUCKET_ELEMENTS, "sub_group_size": 2 * BUCKET_ELEMENTS}


def zero3_context(ds_config: dict[str, Any]) -> Any:
    """Under ZeRO-3, tell transformers (and peft) before the model is built: ``from_pretrained``
    then loads straight into partitioned parameters, and peft gathers partitioned adapter
    weights where it needs them whole (AdaLoRA's orthogonality penalty). Keep the returned
    object alive while the engine exists; None for other stages."""
    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)
