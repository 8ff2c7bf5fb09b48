"""Pre-flight plan: what a job will need before anything runs.

:func:`estimate_memory` is pure arithmetic over a :class:`ModelShape` and the
JobSpec: resident memory per training worker, split into the model's
parameters, gradients, optimizer states (AdamW moments, plus the fp32 master
partition DeepSpeed's ZeRO optimizer keeps), activations saved for the backward
pass of one micro-batch, and the worker runtime itself. The ZeRO stage divides
what it shards by the number of workers; offload moves state from the
accelerator to host memory (on a CPU-only cluster both are the same RAM, so
offload changes where, not how much).

:func:`model_shape` builds the task's model on PyTorch's ``meta`` device (no
weights are read), applies the same tuning as the training loop, and counts.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from doctune.spec import JobSpec
from doctune.train.ds_config import BUCKET_ELEMENTS
from doctune.train.precision import resolve_precision

MB = 1024 * 1024
# Resident memory of a training worker before any model or data is loaded: Python,
# torch, DeepSpeed, transformers and the Ray Train worker. Measured on CPU workers
# (`start_mb` in a finished job's `metrics.memory`: 530 MiB).
RUNTIME_MB_CPU = 530.0
RUNTIME_MB_GPU = 1500.0  # adds the CUDA context and NCCL buffers (not measured here: no GPU)
# Resident memory exceeds the sum of live tensors: glibc keeps freed blocks for reuse,
# and autograd and the optimizer make short-lived temporaries. Measured on single-worker
# CPU runs of MiniLM (full fine-tuning, ZeRO-0 and ZeRO-2): peak RSS / tensor sum = 1.21-1.24.
ALLOCATOR_OVERHEAD = 1.25
REDUCE_BUCKET = BUCKET_ELEMENTS  # the reduce_bucket_size doctune's DeepSpeed config sets (elements)


@dataclass(frozen=True)
class ModelShape:
    params_total: int
    params_trainable: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    lm_head: bool  # a vocabulary-sized output (decoder LMs): its logits dominate activations
    memory_efficient_attention: bool  # SDPA keeps no seq x seq attention matrix for backward
    adapter_inputs: int = 0  # summed input width of the layers with LoRA adapters, per transformer layer


@dataclass(frozen=True)
class MemoryEstimate:
    parameters_mb: float
    gradients_mb: float
    optimizer_mb: float
    activations_mb: float
    runtime_mb: float
    total_mb: float  # per worker: what its process will hold at peak
    training_state_mb: float  # total minus the runtime: what the job itself adds
    accelerator_mb: float  # of the total, on the GPU (0 on a CPU-only cluster)
    host_mb: float  # of the total, in host RAM

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in asdict(self).items()}


def activation_bytes(shape: ModelShape, batch: int, seq: int, bytes_per_value: int) -> float:
    """Activations one micro-batch keeps for backward (Korthikanti et al. 2022, "Reducing
    Activation Recomputation in Large Transformer Models", per layer 34sbh + 5as^2b bytes at
    16 bits with dropout), rescaled to ``bytes_per_value`` (dropout masks stay 1 byte) and to
    the model's own MLP width."""
    s, b, h, i, a = seq, batch, shape.hidden, shape.intermediate, shape.heads
    v = bytes_per_value
    attention = (5 * v + 1) * s * b * h  # QKV input, Q, K, V, output-projection input (+ its dropout mask)
    if not shape.memory_efficient_attention:
        attention += (2 * v + 1) * a * s * s * b  # softmax output, its dropout mask and output
    mlp = 2 * v * s * b * h + 2 * v * s * b * i + s * b * h  # input, activation in/out, dropout mask
    norms = 2 * v * s * b * h
    adapters = (v + 1) * s * b * shape.adapter_inputs  # LoRA: each adapter keeps its own dropped-out input
    per_layer = attention + mlp + norms + adapters
    head = 2 * v * s * b * shape.vocab if shape.lm_head else 0  # logits and their gradient
    embeddings = v * s * b * h
    return shape.layers * per_layer + head + embeddings


def estimate_memory(shape: ModelShape, spec: JobSpec, *, on_gpu: bool) -> MemoryEstimate:
    """Peak resident memory per worker for ``spec`` (see the module docstring)."""
    world = spec.num_workers
    stage = spec.deepspeed.zero_stage
    P, T = shape.params_total, shape.params_trainable
    # GPU trains in bf16 with fp32 master weights in the optimizer. CPU weights stay fp32 (bf16 only under autocast).
    w_bytes = 2 if on_gpu else 4
    params = w_bytes * P / (world if stage == 3 else 1)
    # from_pretrained reads the checkpoint into host memory before copying it into the
    # model; the allocator keeps those pages (ZeRO-3 loads straight into partitions)
    params += 4 * P / world if stage == 3 else 4 * P
    grads = w_bytes * T / (world if stage >= 2 else 1)
    if stage == 2:  # contiguous gradients: every gradient passes through a reduce bucket
        grads += w_bytes * min(T, REDUCE_BUCKET)
    shard = world if stage >= 1 else 1
    adam = 8 * T / shard  # two fp32 moments per trainable parameter
    # ZeRO's optimizer keeps its own flat fp32 copy of its partition (even when training
    # in fp32); stage 0 hands the model's parameters to a plain torch optimizer.
    master = (4 * T / shard) if (stage >= 1 or on_gpu) else 0.0
    workspace = 8 * T / shard  # AdamW's foreach step: about two fp32 temporaries per parameter
    optimizer = adam + master + workspace
    cpu_bf16 = not on_gpu and resolve_precision(spec.precision, on_gpu) == "bf16"
    if cpu_bf16:  # autocast: bf16 activations, and a bf16 copy of each weight kept for the backward pass
        params += 2 * P / (world if stage == 3 else 1)
    acts = activation_bytes(shape, spec.micro_batch_size, spec.max_seq_length, 2 if cpu_bf16 else w_bytes)
    params, grads, optimizer, acts = (x * ALLOCATOR_OVERHEAD for x in (params, grads, optimizer, acts))
    runtime = (RUNTIME_MB_GPU if on_gpu else RUNTIME_MB_CPU) * MB
    total = params + grads + optimizer + acts + runtime
    if on_gpu:
        host = runtime + (optimizer if spec.deepspeed.offload_optimizer else 0.0)
        host += params if spec.deepspeed.offload_params else 0.0
        accel = total - host
    else:
        host, accel = total, 0.0
    return MemoryEstimate(
        parameters_mb=params / MB,
        gradients_mb=grads / MB,
        optimizer_mb=optimizer / MB,
        activations_mb=acts / MB,
        runtime_mb=runtime / MB,
        total_mb=total / MB,
        training_state_mb=(total - runtime) / MB,
        accelerator_mb=accel / MB,
        host_mb=host / MB,
    )


def model_shape(spec: JobSpec, plugin: Any, base_path: str, info: dict[str, Any], *, on_gpu: bool = False) -> ModelShape:
    """Count the parameters (all and trainable) of the model the loop would build."""
    import torch

    from doctune.train.tuning import apply_tuning

    with torch.device("meta"):
        model = apply_tuning(plugin.build_model(base_path, info, pretrained=False), spec, plugin)
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    attn = getattr(text_cfg, "_attn_implementation", None) or getattr(cfg, "_attn_implementation", None)
    dropout = float(getattr(text_cfg, "attention_probs_dropout_prob", getattr(text_cfg, "attention_dropout", 0.0)) or 0.0)
    hidden = int(getattr(text_cfg, "hidden_size"))
    layers = int(getattr(text_cfg, "num_hidden_layers"))
    adapter_inputs = sum(int(getattr(m.base_layer, "in_features", 0)) for _, m in model.named_modules()
                         if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    return ModelShape(
        params_total=total,
        params_trainable=trainable,
        hidden=hidden,
        layers=layers,
        heads=int(getattr(text_cfg, "num_attention_heads")),
        intermediate=int(getattr(text_cfg, "intermediate_size", 4 * hidden)),
        vocab=int(getattr(text_cfg, "vocab_size", 0)),
        lm_head=any(n.endswith("lm_head") for n, _ in model.named_modules()),
        # SDPA trains without a seq x seq matrix only where a fused kernel runs: on GPUs, or
        # on CPUs when attention dropout is off (with dropout the CPU falls back to the math path)
        memory_efficient_attention=attn in ("flash_attention_2", "flash_attention_3")
        or (attn == "sdpa" and (on_gpu or dropout == 0.0)),
        adapter_inputs=adapter_inputs // max(layers, 1),
    )


_TOKENIZER_LOCK = threading.Lock()  # a fast tokenizer must not encode on two threads at once


# transformers imports its classes lazily (``transformers.AutoTokenizer`` resolves on first use), and
# that first resolution is not thread-safe: two API threads checking a job and a sweep at once got
# "ImportError: cannot import name 'AutoTokenizer' from 'transformers'" (a 500). Loading runs under this lock.
_LOAD_LOCK = threading.Lock()


def load_tokenizer(path: str, cached: bool = True) -> Any:
    """A base model's tokenizer, loaded once per process (the API plans and checks many jobs, from
    several threads at once: the first import and load run one at a time). ``cached=False`` for a
    temporary folder (a tenant's uploaded base model, fetched for one plan and then removed)."""
    with _LOAD_LOCK:
        return _load_tokenizer(path) if cached else _load_tokenizer.__wrapped__(path)


@lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def count_tokens(texts: list[str], tokenizer: Any, max_len: int) -> dict[str, Any]:
    """Tokens per epoch (after truncation), how many documents get truncated, and the share
    of tokens the tokenizer cannot represent (its unknown token)."""
    with _TOKENIZER_LOCK:
        enc = tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
    lengths = [len(ids) for ids in enc]
    unk = tokenizer.unk_token_id
    raw = sum(lengths)
    unknown = sum(sum(1 for t in ids if t == unk) for ids in enc) if unk is not None else 0
    return {
        "documents": len(texts),
        "tokens_per_epoch": sum(min(n, max_len) for n in lengths),
        "tokens_before_truncation": raw,
        "truncated_documents": sum(1 for n in lengths if n > max_len),
        "mean_tokens": raw / max(len(texts), 1),
        "unknown_token_fraction": unknown / max(raw, 1),
    }
