"""The numeric precision a job trains and evaluates in (``JobSpec.precision``).

``auto`` (the default) is bf16 wherever the hardware multiplies bf16 natively: a GPU (DeepSpeed's
bf16 mode: bf16 weights, fp32 master weights in the optimizer), or a CPU with Intel AMX or
AVX-512 BF16 units. On such a CPU a bf16 matrix product runs about 4 times as fast as fp32 (3.8x
on a 2-core AMX machine, 4.2x on a 2-core AVX-512 BF16 one; docs/benchmarks.md, *Precision*), so
the worker's forward passes run under ``torch.autocast("cpu", dtype=torch.bfloat16)``: weights,
gradients and the optimizer stay fp32, only the matrix products and the activations they produce
are bf16. Elsewhere ``auto`` is fp32: a CPU without those units would emulate bf16, more slowly
than fp32.

The model's outputs are handed back in fp32, so that losses, metrics and decoding (Viterbi, argmax,
NumPy) see the same dtypes whichever precision trained the model; the exported model is fp32 either way.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["apply_precision", "cpu_has_bf16_units", "resolve_precision", "train_in_cpu_bf16"]


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (Intel AMX tiles or AVX-512 BF16)."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes: assume not
        return False


def resolve_precision(requested: str, use_gpu: bool) -> str:
    """``fp32`` or ``bf16``: what ``requested`` (auto, fp32 or bf16) means on this worker."""
    if requested != "auto":
        return requested
    return "bf16" if use_gpu or cpu_has_bf16_units() else "fp32"


def _outputs_in_fp32(out: Any) -> Any:
    """``out`` with its bf16 tensors (logits, loss, hidden states) cast to fp32."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype == torch.bfloat16 else out
    if isinstance(out, dict):  # transformers' ModelOutput is a dict as well as a dataclass
        for key, value in list(out.items()):
            if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
                out[key] = value.float()
        return out
    return out


def _attend_eagerly(model: Any) -> None:
    """Attention as plain matrix products: PyTorch's fused CPU attention kernel is slower in bf16
    than in fp32 on its backward pass (4.4 times, MiniLM-L6, batch 32 x 128 tokens), where the
    matrix products of eager attention run on the bf16 units."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the model
    if hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation("eager")


def train_in_cpu_bf16(model: Any) -> Any:
    """``model`` with its forward run under CPU bf16 autocast and its outputs returned in fp32
    (training, evaluation and generation all call the forward); the weights stay fp32."""
    import torch

    _attend_eagerly(model)
    forward = model.forward

    @functools.wraps(forward)
    def forward_in_bf16(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _outputs_in_fp32(out)

    model.forward = forward_in_bf16
    return model


def apply_precision(model: Any, requested: str, use_gpu: bool) -> Any:
    """``model`` ready to train in ``requested`` precision on this worker: wrapped for CPU bf16 autocast
    where that resolves to bf16 on a CPU; unchanged on a GPU (DeepSpeed's bf16 mode casts it) and in fp32."""
    if use_gpu or resolve_precision(requested, use_gpu) != "bf16":
        return model
    return train_in_cpu_bf16(model)
