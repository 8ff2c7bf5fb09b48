"""Whether a task's models can be served multiplexed or int8-quantized: one check for every caller.

A plugin declares ``multiplexable`` and ``quantizable`` (with ``multiplex_refusal`` /
``quantize_refusal``, the reason, where False). The rules here add what is true of any
plugin: a merged export has no adapter to put over a shared base, int8 is not offered with
multiplex, and int8's accuracy change is only measured for a plugin evaluated by one forward
pass (``collate`` -> model -> ``predictions``, no ``evaluate_batch`` hook).
``doctune.services.deployments`` refuses a deployment with :func:`check_can_serve`;
``doctune.serve.adapters.AdapterPool`` and ``doctune.serve.quantize`` check again where the
model is loaded or measured.
"""

from __future__ import annotations

from typing import Any

from doctune.errors import DoctuneError


def quantize_refusal(plugin: Any) -> str | None:
    """Why the int8 accuracy change of this task's models cannot be measured (None: it can)."""
    if not plugin.quantizable:
        return plugin.quantize_refusal
    if getattr(plugin, "evaluate_batch", None) is not None:
        return ("they are evaluated by the plugin's evaluate_batch hook, not by one forward pass, so the accuracy "
                "change of int8 is not measured for them")
    if not callable(getattr(plugin, "predictions", None)):
        return f"the {plugin.name} plugin has no predictions() to compare fp32 and int8 outputs with"
    return None


def multiplex_refusal(plugin: Any, *, merged: bool, quantize: str = "none") -> str | None:
    """Why a model of this task cannot be served from a shared base model (None: it can)."""
    if not plugin.multiplexable:
        return plugin.multiplex_refusal
    if merged:
        return ("the model was exported merged (adapter folded into a full copy of the base model), so there is "
                "no adapter to put over a shared base; deploy it with multiplex: false, or retrain it with "
                "tuning.merge_adapter: false (a LoRA, AdaLoRA, IA3 or prefix-tuning method)")
    if quantize != "none":
        return ("multiplexed adapters run over the shared fp32 base model; quantize: int8 is not available "
                "with multiplex: true. Deploy with quantize: none, or with multiplex: false")
    return None


def check_can_serve(plugin: Any, *, multiplex: bool = False, quantize: str = "none", merged: bool = False) -> None:
    """Refuse (422, naming ``quantize`` or ``multiplex``) to serve a model of ``plugin``'s task the way
    asked: ``quantize="int8"`` and/or ``multiplex=True``; ``merged``: the model was exported merged."""
    if quantize == "int8":
        reason = quantize_refusal(plugin)
        if reason is not None:
            raise DoctuneError(f"quantize: int8 is not available for {plugin.name} models: {reason}. "
                               "Deploy with quantize: none", "invalid_spec", field="quantize")
    if multiplex:
        reason = multiplex_refusal(plugin, merged=merged, quantize=quantize)
        if reason is not None:
            raise DoctuneError(f"multiplex: true is not available for this model: {reason}", "invalid_spec",
                               field="multiplex")
