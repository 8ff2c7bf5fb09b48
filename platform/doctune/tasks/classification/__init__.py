"""Document classification: one label per document, or any number of labels.

Dataset format (JSONL, one object per line), single-label::

    {"text": "Stocks fell sharply on Monday ...", "label": "business"}

or multi-label (every record of the dataset then uses ``labels``; it may be empty)::

    {"text": "The minister's tax plan hit bank shares ...", "labels": ["politics", "business"]}

Optional fields: ``id`` (string or number), ``meta`` (object). Any other field is
an error, so a misspelt ``lable`` is caught at upload rather than at training.
Single-label trains with cross-entropy; multi-label with a sigmoid per label
(binary cross-entropy) and a 0.5 threshold. Serving takes ``{"inputs": ["text",
...]}`` (or ``{"text": "..."}``) and returns each document's label, its
probability and the full distribution (multi-label: ``labels`` above 0.5); with
``"explain": true`` each prediction also lists the words that drove its label
(:mod:`doctune.tasks.classification.explain`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks._hf import build_labelled_model, load_labelled_model
from doctune.tasks._records import check_fields
from doctune.tasks.classification import schemas
from doctune.tasks.classification.baseline import tfidf_logreg

THRESHOLD = 0.5  # multi-label: a label is predicted when its sigmoid reaches this

class ClassificationTask:
    name = "classification"
    peft_task_type = "SEQ_CLS"
    primary_metric = "macro_f1"
    metric_names = ("macro_f1", "micro_f1", "accuracy", "loss")
    metric_labels = {"macro_f1": "macro-F1", "micro_f1": "micro-F1", "accuracy": "accuracy", "loss": "loss"}
    text_fields = ("text",)

    # serving schemas (doctune.serve.schemas documents the endpoint with them)
    request_model = schemas.ClassificationRequest
    response_model = schemas.ClassificationResponse
    endpoint_summary = schemas.SUMMARY
    endpoint_description = schemas.DESCRIPTION
    request_examples = schemas.EXAMPLES
    response_example = schemas.RESPONSE_EXAMPLE

    # serving capabilities (see doctune.tasks.check_can_serve)
    multiplexable = True
    multiplex_refusal = None
    quantizable = True
    quantize_refusal = None

    # -- data -----------------------------------------------------------
    def validate_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        example = '{"text": "...", "label": "sport"} or {"text": "...", "labels": ["sport", "politics"]}'
        check_fields(record, where, self.name, ("text",), ("label", "labels", "id", "meta"), example)
        text = record["text"]
        if not isinstance(text, str) or not text.strip():
            raise DoctuneError(f"{where}: 'text' must be a non-empty string", "invalid_dataset", field="text")
        if "label" not in record and "labels" not in record:
            raise DoctuneError(f"{where}: missing 'label' (or 'labels' for multi-label); every classification record "
                               f"needs one, e.g. {example}", "invalid_dataset", field="label")
        if "label" in record and "labels" in record:
            raise DoctuneError(f"{where}: give only one of 'label' (single-label) or 'labels' (multi-label)",
                               "invalid_dataset", field="labels")
        if "labels" in record:
            labels = record["labels"]
            if not isinstance(labels, list) or not all(_is_label(l) for l in labels):
                raise DoctuneError(f"{where}: 'labels' must be a list of non-empty strings or integers; got {labels!r}"[:300],
                                   "invalid_dataset", field="labels")
            return {"text": text, "labels": sorted({str(l).strip() for l in labels})}
        label = record["label"]
        if not _is_label(label):
            raise DoctuneError(
                f"{where}: 'label' must be a non-empty string or integer; got {label!r}",
                "invalid_dataset",
                field="label",
            )
        return {"text": text, "label": str(label).strip()}

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        multi = "labels" in splits["train"][0]
        for split, rows in splits.items():
            for i, r in enumerate(rows, 1):
                if ("labels" in r) != multi:
                    raise DoctuneError(
                        f"{split} record {i}: uses {'label' if multi else 'labels'} but the dataset is "
                        f"{'multi' if multi else 'single'}-label; use one form for every record",
                        "invalid_dataset", field="labels" if multi else "label")
        train_labels = Counter(l for r in splits["train"] for l in _labels_of(r))
        if len(train_labels) < 2:
            raise DoctuneError(
                f"train split has {len(train_labels)} distinct label(s); classification needs at least 2",
                "invalid_dataset",
                field="label",
            )
        for split in ("dev", "test"):
            for i, r in enumerate(splits.get(split, []), 1):
                for label in _labels_of(r):
                    if label not in train_labels:
                        raise DoctuneError(
                            f"{split} record {i}: label {label!r} never appears in train; "
                            f"add train examples for it or remove it (train labels: {sorted(train_labels)})",
                            "invalid_dataset",
                            field="labels" if multi else "label",
                        )
        return {"labels": sorted(train_labels), "label_counts": dict(sorted(train_labels.items())), "multi_label": multi}

    def stratify_key(self, record: dict[str, Any]) -> Any:
        if "labels" in record:  # multi-label: stratify on the first label (or on having none)
            return record["labels"][0] if record["labels"] else "(none)"
        return record["label"]

    def reference_baselines(self, splits: dict[str, list[dict[str, Any]]], info: dict[str, Any]) -> dict[str, Any]:
        """tfidf_logreg: TF-IDF n-grams + logistic regression fitted on train (see classification.baseline)."""
        return {"tfidf_logreg": tfidf_logreg(splits, info, self.metrics)}

    # -- model ----------------------------------------------------------
    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        extra = {"problem_type": "multi_label_classification"} if info.get("multi_label") else {}
        return build_labelled_model("AutoModelForSequenceClassification", base_path, info["labels"], pretrained, **extra)

    def load_model(self, path: str) -> Any:
        return load_labelled_model("AutoModelForSequenceClassification", path)

    def head_modules(self) -> list[str]:
        """Modules trained in full even under LoRA (the fresh task head)."""
        return ["classifier", "score"]

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        label2id = {l: i for i, l in enumerate(info["labels"])}
        enc = tokenizer([r["text"] for r in records], truncation=True, max_length=max_len)

        def target(r: dict[str, Any]) -> Any:
            if "labels" not in r:
                return label2id[r["label"]]
            hot = [0.0] * len(label2id)  # multi-hot, for binary cross-entropy
            for label in r["labels"]:
                hot[label2id[label]] = 1.0
            return hot

        return [
            {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": target(r)}
            for i, r in enumerate(records)
        ]

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        import torch

        feats = tokenizer.pad([{k: b[k] for k in ("input_ids", "attention_mask")} for b in batch], return_tensors="pt")
        multi = isinstance(batch[0]["labels"], list)
        feats["labels"] = torch.tensor([b["labels"] for b in batch], dtype=torch.float if multi else torch.long)
        return dict(feats)

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        if batch["labels"].dim() == 2:  # multi-label: one 0/1 per label
            return (outputs.logits.sigmoid() >= THRESHOLD).int().tolist(), batch["labels"].int().tolist()
        return outputs.logits.argmax(-1).tolist(), batch["labels"].tolist()

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

        n = len(info["labels"])
        p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=list(range(n)), zero_division=0)
        return confusion(predicted, gold, info["labels"]) | {
            # multi-label: subset accuracy (every label of a document right)
            "accuracy": float(accuracy_score(gold, predicted)),
            "macro_f1": float(f1_score(gold, predicted, labels=list(range(n)), average="macro", zero_division=0)),
            "micro_f1": float(f1_score(gold, predicted, labels=list(range(n)), average="micro", zero_division=0)),
            "per_class": {
                info["labels"][i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                for i in range(n)
            },
        }

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[str]:
        """The texts; with ``"explain": true`` each is an :class:`ExplainedText` (a str that asks for attributions)."""
        explain = body.get("explain", False) if isinstance(body, dict) else False
        if not isinstance(explain, bool):
            raise DoctuneError(f"'explain' must be true or false; got {explain!r}"[:200], "invalid_request", field="explain")
        kind = ExplainedText if explain else str
        if isinstance(body, dict) and isinstance(body.get("text"), str):
            return [kind(body["text"])]
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t.strip() for t in inputs):
            raise DoctuneError(
                'request body must be {"inputs": ["document text", ...]} with 1 or more non-empty strings, or {"text": "..."}',
                "invalid_request",
                field="inputs",
            )
        return [kind(t) for t in inputs]

    def predict(self, model: Any, tokenizer: Any, inputs: list[str], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        import torch

        enc = tokenizer(inputs, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        multi = getattr(model.config, "problem_type", None) == "multi_label_classification"
        with torch.inference_mode():
            logits = model(**enc).logits
            probs = logits.sigmoid() if multi else logits.softmax(-1)
        labels, rows = info["labels"], probs.tolist()
        best = [max(range(len(row)), key=row.__getitem__) for row in rows]
        if multi:
            out = [{"labels": [l for l, p in zip(labels, row) if p >= THRESHOLD], "probabilities": dict(zip(labels, row))}
                   for row in rows]
        else:
            out = [{"label": labels[b], "score": row[b], "probabilities": dict(zip(labels, row))} for b, row in zip(best, rows)]
        asked = [i for i, text in enumerate(inputs) if isinstance(text, ExplainedText)]
        if asked:  # the words behind the answered label (multi-label: the most probable one)
            from doctune.tasks.classification.explain import explain

            found = explain(model, tokenizer, [inputs[i] for i in asked], [best[i] for i in asked], max_len, multi)
            for i, words in zip(asked, found):
                out[i]["attributions"] = words
        return out


def _is_label(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (str, int)) and str(value).strip() != ""


def _labels_of(record: dict[str, Any]) -> list[str]:
    return record["labels"] if "labels" in record else [record["label"]]


class ExplainedText(str):
    """A text whose prediction also carries its word attributions (the request said ``"explain": true``)."""


PLUGIN = ClassificationTask()


def confusion(predicted: list[Any], gold: list[Any], labels: list[str]) -> dict[str, Any]:
    """For single-label data, ``{"confusion_matrix": {"labels", "matrix"}}``: ``matrix[i][j]`` counts the
    documents of gold label ``labels[i]`` predicted as ``labels[j]``; nothing for multi-label data."""
    if not gold or isinstance(gold[0], list):
        return {}
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(gold, predicted, labels=list(range(len(labels))))
    return {"confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()}}
