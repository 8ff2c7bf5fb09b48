"""Apply a JobSpec's tuning method to a freshly built task model.

One function, used by the training loop and by the pre-flight plan (on a model
built on the ``meta`` device), so the plan counts exactly the parameters the
loop will train. Methods: full fine-tuning, LoRA, AdaLoRA, prefix tuning and IA3
(all from ``peft``, with the task's fresh head trained in full), and "freeze all
but the top N layers".
"""

from __future__ import annotations

import re
from typing import Any

from doctune.spec import JobSpec

PEFT_METHODS = ("lora", "adalora", "prefix", "ia3")
ALL_LINEAR = "all-linear"  # target_modules: [all-linear] adapts every linear layer but the heads
# The attention projections, by architecture family: the first group a model has all of is
# LoRA's default target (BERT-like encoders name theirs query/key/value/dense, decoders q/k/v/o_proj).
ATTENTION_PROJECTIONS = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("query", "key", "value", "dense"),
    ("c_attn", "c_proj"),
)
_LAYER = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def is_peft(spec: JobSpec) -> bool:
    return spec.tuning.method in PEFT_METHODS


def merges_on_export(spec: JobSpec) -> bool:
    """Whether the exported model is a plain transformers model (adapters merged in)."""
    if spec.tuning.method == "prefix":
        return False  # virtual tokens cannot be folded into weights
    return not is_peft(spec) or spec.tuning.merge_adapter


def apply_tuning(model: Any, spec: JobSpec, plugin: Any, total_steps: int | None = None) -> Any:
    """Return the model to train: unchanged for full fine-tuning, partly frozen for
    'freeze', wrapped by peft for the adapter methods."""
    t = spec.tuning
    if t.method == "full":
        return model
    present = {n.split(".")[-1] for n, _ in model.named_modules()}
    heads = [h for h in plugin.head_modules() if h in present]
    if t.method == "freeze":
        return freeze_all_but_top(model, t.freeze.trainable_layers, heads)

    import peft

    task_type = peft.TaskType[plugin.peft_task_type] if plugin.peft_task_type else None  # None: a plain PeftModel
    if t.method == "lora":
        cfg = peft.LoraConfig(task_type=task_type, r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                              target_modules=adapter_targets(model, t.lora.target_modules, heads), modules_to_save=heads)
    elif t.method == "adalora":
        steps = max(total_steps or 100, 10)
        a = t.adalora
        # rank budget: keep init_r for the first 10 % of steps, prune until 70 %, then fine-tune the final ranks
        cfg = peft.AdaLoraConfig(task_type=task_type, init_r=a.init_r, target_r=a.target_r, lora_alpha=a.alpha,
                                 lora_dropout=a.dropout, target_modules=adapter_targets(model, a.target_modules, heads),
                                 modules_to_save=heads,
                                 total_step=steps, tinit=steps // 10, tfinal=int(steps * 0.3), deltaT=1)
    elif t.method == "prefix":
        cfg = peft.PrefixTuningConfig(task_type=task_type, num_virtual_tokens=t.prefix.num_virtual_tokens,
                                      modules_to_save=heads)
    else:  # ia3
        cfg = peft.IA3Config(task_type=task_type, target_modules=t.ia3.target_modules,
                             feedforward_modules=t.ia3.feedforward_modules, modules_to_save=heads)
    try:
        return peft.get_peft_model(model, cfg)
    except ValueError as exc:  # e.g. target modules that this architecture does not have
        from doctune.errors import DoctuneError

        linears = sorted(linear_layer_names(model))
        raise DoctuneError(f"tuning.{t.method}: {exc}. This model's linear layers are named: {', '.join(linears)}",
                           "invalid_spec", field=f"tuning.{t.method}.target_modules") from None


def linear_layer_names(model: Any) -> set[str]:
    """The last name part of every linear layer (``query``, ``q_proj``, ``dense``...)."""
    return {n.split(".")[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}


def adapter_targets(model: Any, asked: list[str] | None, heads: list[str]) -> list[str]:
    """What LoRA/AdaLoRA adapt: the spec's ``target_modules``; ``[all-linear]`` for every linear
    layer but the task head and the LM head (which are trained in full or not at all); null for
    the base model's attention projections (so that a spec that changes only ``base_model``
    still works), or every linear layer where none is recognised."""
    if asked and asked != [ALL_LINEAR]:
        return asked
    present = linear_layer_names(model)
    for group in ATTENTION_PROJECTIONS:
        if not asked and set(group) <= present:
            return list(group)
    return sorted(present - set(heads) - {"lm_head"})


def freeze_all_but_top(model: Any, n: int, heads: list[str]) -> Any:
    """Freeze everything but the top ``n`` transformer layers, the modules after them (pooler,
    final norm) and the task head."""
    names = [name for name, _ in model.named_parameters()]
    layer_of = {name: int(m.group(1)) for name in names if (m := _LAYER.search(name))}
    if not layer_of:
        from doctune.errors import DoctuneError

        raise DoctuneError("tuning.method 'freeze' needs a model with numbered transformer layers; use 'full' or 'lora'",
                           "invalid_spec", field="tuning.method")
    first_kept = max(layer_of.values()) + 1 - n
    last_layer_param = max(i for i, name in enumerate(names) if name in layer_of)
    for i, (name, p) in enumerate(model.named_parameters()):
        in_head = any(name.startswith(f"{h}.") or f".{h}." in name for h in heads)
        after_layers = name not in layer_of and i > last_layer_param
        p.requires_grad = in_head or after_layers or layer_of.get(name, -1) >= first_kept
    return model


def adalora_step(model: Any, step: int) -> None:
    """AdaLoRA's rank reallocation after an optimizer step, when the adapters' gradients are
    in place (ZeRO 0/1 keep them on the parameters; stages 2/3 partition them away, and
    AdaLoRA then trains at its initial ranks)."""
    base = getattr(model, "base_model", None)
    if base is None or not hasattr(base, "update_and_allocate"):
        return
    if any(p.grad is None for n, p in model.named_parameters() if "lora_" in n and p.requires_grad):
        return
    base.update_and_allocate(step)
