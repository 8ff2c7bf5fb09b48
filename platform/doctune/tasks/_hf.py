"""Shared by task plugins whose model is a transformers ``AutoModelFor...`` with a label head."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any


def label_kwargs(labels: list[str]) -> dict[str, Any]:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}}


@cache
def register_missing_heads() -> None:
    """transformers 5 has no token-classification class for Gemma-3 text models (NER on Chinese
    needs one): the generic head, as Llama's, over the same backbone, registered with the Auto
    classes so training, peft and serving find it. Idempotent."""
    from transformers import AutoModelForTokenClassification
    from transformers.modeling_layers import GenericForTokenClassification
    from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3PreTrainedModel

    class Gemma3TextForTokenClassification(GenericForTokenClassification, Gemma3PreTrainedModel):
        config_class = Gemma3TextConfig
        input_modalities = ("text",)

    AutoModelForTokenClassification.register(Gemma3TextConfig, Gemma3TextForTokenClassification, exist_ok=True)


def reads_both_ways(base_path: str) -> dict[str, Any]:
    """Config overrides that let a decoder attend to the right-hand context too: Gemma 3 can
    drop its causal mask (as its embedding variant, EmbeddingGemma, does). Token classification
    needs this: a causal model tags each token before it has read what follows (what it is worth
    on MSRA NER: docs/benchmarks.md). Empty for
    encoders, which already read both ways, and for decoders without the switch."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(base_path)
    return {"use_bidirectional_attention": True} if hasattr(config, "use_bidirectional_attention") else {}


def build_labelled_model(auto_class: str, base_path: str, labels: list[str], pretrained: bool, **config: Any) -> Any:
    """The base model with a fresh ``len(labels)``-way head; ``pretrained=False`` builds the
    architecture only (the plan does so on the meta device)."""
    import transformers

    register_missing_heads()

    cls = getattr(transformers, auto_class)
    kw = {**label_kwargs(labels), **config}
    if not pretrained:
        return cls.from_config(transformers.AutoConfig.from_pretrained(base_path, **kw))
    return cls.from_pretrained(base_path, **kw)


def load_labelled_model(auto_class: str, path: str) -> Any:
    """An exported model for serving: a plain transformers model, or an unmerged peft adapter
    (e.g. prefix tuning) over its base model, whose head size comes from doctune.json."""
    register_missing_heads()
    if (Path(path) / "adapter_config.json").exists():
        import peft

        labels = json.loads((Path(path) / "doctune.json").read_text())["labels"]
        cls = getattr(peft, auto_class.replace("AutoModel", "AutoPeftModel"))
        return cls.from_pretrained(path, **label_kwargs(labels)).eval()
    import transformers

    return getattr(transformers, auto_class).from_pretrained(path).eval()
