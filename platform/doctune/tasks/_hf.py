"""Shared by task plugins whose model is a transformers ``AutoModelFor...`` with a label head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def label_kwargs(labels: list[str]) -> dict[str, Any]:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}}


def build_labelled_model(auto_class: str, base_path: str, labels: list[str], pretrained: bool, **config: Any) -> Any:
    """The base model with a fresh ``len(labels)``-way head; ``pretrained=False`` builds the
    architecture only (the plan does so on the meta device)."""
    import transformers

    cls = getattr(transformers, auto_class)
    kw = {**label_kwargs(labels), **config}
    if not pretrained:
        return cls.from_config(transformers.AutoConfig.from_pretrained(base_path, **kw))
    return cls.from_pretrained(base_path, **kw)


def load_labelled_model(auto_class: str, path: str) -> Any:
    """An exported model for serving: a plain transformers model, or an unmerged peft adapter
    (e.g. prefix tuning) over its base model, whose head size comes from doctune.json."""
    if (Path(path) / "adapter_config.json").exists():
        import peft

        labels = json.loads((Path(path) / "doctune.json").read_text())["labels"]
        cls = getattr(peft, auto_class.replace("AutoModel", "AutoPeftModel"))
        return cls.from_pretrained(path, **label_kwargs(labels)).eval()
    import transformers

    return getattr(transformers, auto_class).from_pretrained(path).eval()
