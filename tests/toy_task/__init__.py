"""A toy seventh task, ``sentiment``, that lives outside the doctune package: proof that a task is
added by writing a plugin alone, with no edit anywhere in ``platform/``.

What it does: binary sentiment of short reviews. Dataset records (JSONL)::

    {"text": "A delight from start to finish.", "sentiment": "positive"}

``sentiment`` is ``positive`` or ``negative``; ``id`` and ``meta`` are optional, any other field
is an error. The model is the base encoder (e.g. MiniLM, ``all-minilm-l6-v2``) with a fresh
2-way sequence-classification head (``classifier``), trained with cross-entropy, LoRA or full;
metrics are accuracy (primary) and the F1 of ``positive``. Its endpoint takes
``{"reviews": ["...", ...]}`` and answers, per review, ``{"sentiment", "positive"}`` (the
probability that it is positive): a request and answer shape of its own, documented by the
models in ``schemas.py``. Its models can be multiplexed and int8-quantized.

How it reaches doctune: ``doctune.tasks.register_task(PLUGIN)`` in one process, or
``DOCTUNE_TASK_PLUGINS=tests.toy_task`` (with the repository root on ``PYTHONPATH``) in the
environment the stack starts in, which every process (API, Ray job drivers and workers, Serve
replicas) then inherits. tests/unit/test_toy_plugin.py checks both.

It uses only doctune's public surface (``doctune.errors``, ``doctune.tasks.serving``), as a
plugin outside the package must; copying a few lines of the built-in classification plugin is
the price.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from doctune.errors import DoctuneError
from tests.toy_task import schemas
from tests.toy_task.schemas import SENTIMENTS

EXAMPLE = '{"text": "A delight from start to finish.", "sentiment": "positive"}'
LABELS = list(SENTIMENTS)  # label ids: negative 0, positive 1


def _label_kwargs() -> dict[str, Any]:
    return {"num_labels": 2, "id2label": dict(enumerate(LABELS)), "label2id": {l: i for i, l in enumerate(LABELS)}}


class SentimentTask:
    name = "sentiment"
    peft_task_type = "SEQ_CLS"
    primary_metric = "accuracy"
    metric_names = ("accuracy", "f1", "loss")
    metric_labels = {"accuracy": "accuracy", "f1": "F1 (positive)", "loss": "loss"}
    text_fields = ("text",)

    request_model = schemas.SentimentRequest
    response_model = schemas.SentimentResponse
    endpoint_summary = schemas.SUMMARY
    endpoint_description = schemas.DESCRIPTION
    request_examples = schemas.EXAMPLES
    response_example = schemas.RESPONSE_EXAMPLE

    multiplexable = True
    multiplex_refusal = None
    quantizable = True
    quantize_refusal = None

    # -- data -----------------------------------------------------------
    def validate_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        unknown = sorted(set(record) - {"text", "sentiment", "id", "meta"})
        if unknown:
            raise DoctuneError(f"{where}: unknown field(s) {unknown}; a sentiment record is {EXAMPLE}",
                               "invalid_dataset", field=unknown[0])
        text, sentiment = record.get("text"), record.get("sentiment")
        if not isinstance(text, str) or not text.strip():
            raise DoctuneError(f"{where}: 'text' must be a non-empty string, e.g. {EXAMPLE}", "invalid_dataset",
                               field="text")
        if sentiment not in SENTIMENTS:
            raise DoctuneError(f"{where}: 'sentiment' must be 'positive' or 'negative'; got {sentiment!r}",
                               "invalid_dataset", field="sentiment")
        return {"text": text, "sentiment": sentiment}

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        seen = {r["sentiment"] for r in splits["train"]}
        if seen != set(SENTIMENTS):
            raise DoctuneError(f"the train split has only {sorted(seen)} reviews; it needs positive and negative ones",
                               "invalid_dataset", field="sentiment")
        return {"labels": LABELS}

    def stratify_key(self, record: dict[str, Any]) -> Any:
        return record["sentiment"]

    # -- model ----------------------------------------------------------
    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        import transformers

        cls = transformers.AutoModelForSequenceClassification
        if not pretrained:
            return cls.from_config(transformers.AutoConfig.from_pretrained(base_path, **_label_kwargs()))
        return cls.from_pretrained(base_path, **_label_kwargs())

    def load_model(self, path: str) -> Any:
        if (Path(path) / "adapter_config.json").exists():  # an unmerged adapter over its base model
            import peft

            return peft.AutoPeftModelForSequenceClassification.from_pretrained(path, **_label_kwargs()).eval()
        import transformers

        return transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()

    def head_modules(self) -> list[str]:
        return ["classifier"]

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        enc = tokenizer([r["text"] for r in records], truncation=True, max_length=max_len)
        return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "labels": LABELS.index(r["sentiment"])} for i, r in enumerate(records)]

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        import torch

        feats = tokenizer.pad([{k: b[k] for k in ("input_ids", "attention_mask")} for b in batch], return_tensors="pt")
        feats["labels"] = torch.tensor([b["labels"] for b in batch], dtype=torch.long)
        return dict(feats)

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        return outputs.logits.argmax(-1).tolist(), batch["labels"].tolist()

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, float]:
        right = sum(p == g for p, g in zip(predicted, gold))
        tp = sum(p == g == 1 for p, g in zip(predicted, gold))
        guessed, actual = sum(p == 1 for p in predicted), sum(g == 1 for g in gold)
        return {"accuracy": right / max(len(gold), 1), "f1": 2 * tp / max(guessed + actual, 1)}

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[str]:
        reviews = body.get("reviews") if isinstance(body, dict) else None
        if (not isinstance(body, dict) or set(body) != {"reviews"} or not isinstance(reviews, list) or not reviews
                or not all(isinstance(r, str) and r.strip() for r in reviews)):
            raise DoctuneError('request body must be {"reviews": ["review text", ...]} with 1 or more non-empty '
                               "strings and no other key", "invalid_request", field="reviews")
        return reviews

    def predict(self, model: Any, tokenizer: Any, inputs: list[str], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        import torch

        enc = tokenizer(inputs, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        with torch.inference_mode():
            positive = model(**enc).logits.softmax(-1)[:, 1].tolist()
        return [{"sentiment": "positive" if p >= 0.5 else "negative", "positive": p} for p in positive]


def reviews() -> list[dict[str, Any]]:
    """A dozen hand-written reviews, half positive: enough to see the model learn."""
    return [json.loads(line) for line in (Path(__file__).parent / "reviews.jsonl").read_text().splitlines() if line]


PLUGIN = SentimentTask()
