"""Document classification: one label per document.

Dataset format (JSONL, one object per line)::

    {"text": "Stocks fell sharply on Monday ...", "label": "business"}

Optional fields: ``id`` (string or number), ``meta`` (object). Any other field is
an error, so a misspelt ``lable`` is caught at upload rather than at training.
Serving takes ``{"inputs": ["text", ...]}`` (or ``{"text": "..."}``) and returns
each document's label, its probability and the full distribution.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks._records import check_fields
from doctune.tasks._hf import build_labelled_model, load_labelled_model



class ClassificationTask:
    name = "classification"
    peft_task_type = "SEQ_CLS"
    primary_metric = "macro_f1"
    metric_names = ("macro_f1", "accuracy", "loss")

    # -- data -----------------------------------------------------------
    def validate_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        check_fields(record, where, self.name, ("text", "label"), ("id", "meta"), '{"text": "...", "label": "sport"}')
        text, label = record.get("text"), record["label"]
        if not isinstance(text, str) or not text.strip():
            raise DoctuneError(f"{where}: 'text' must be a non-empty string", "invalid_dataset", field="text")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or str(label).strip() == "":
            raise DoctuneError(
                f"{where}: 'label' must be a non-empty string or integer; got {label!r}",
                "invalid_dataset",
                field="label",
            )
        return {"text": text, "label": str(label).strip()}

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        train_labels = Counter(r["label"] for r in splits["train"])
        if len(train_labels) < 2:
            raise DoctuneError(
                f"train split has {len(train_labels)} distinct label(s); classification needs at least 2",
                "invalid_dataset",
                field="label",
            )
        for split in ("dev", "test"):
            for i, r in enumerate(splits.get(split, []), 1):
                if r["label"] not in train_labels:
                    raise DoctuneError(
                        f"{split} record {i}: label {r['label']!r} never appears in train; "
                        f"add train examples for it or remove it (train labels: {sorted(train_labels)})",
                        "invalid_dataset",
                        field="label",
                    )
        return {"labels": sorted(train_labels), "label_counts": dict(sorted(train_labels.items()))}

    def stratify_key(self, record: dict[str, Any]) -> Any:
        return record["label"]

    # -- model ----------------------------------------------------------
    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        return build_labelled_model("AutoModelForSequenceClassification", base_path, info["labels"], pretrained)

    def load_model(self, path: str) -> Any:
        return load_labelled_model("AutoModelForSequenceClassification", path)

    def head_modules(self) -> list[str]:
        """Modules trained in full even under LoRA (the fresh task head)."""
        return ["classifier", "score"]

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        label2id = {l: i for i, l in enumerate(info["labels"])}
        enc = tokenizer([r["text"] for r in records], truncation=True, max_length=max_len)
        return [
            {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": label2id[r["label"]]}
            for i, r in enumerate(records)
        ]

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        import torch

        feats = tokenizer.pad([{k: b[k] for k in ("input_ids", "attention_mask")} for b in batch], return_tensors="pt")
        feats["labels"] = torch.tensor([b["labels"] for b in batch], dtype=torch.long)
        return dict(feats)

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        return outputs.logits.argmax(-1).tolist(), batch["labels"].tolist()

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

        n = len(info["labels"])
        p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=list(range(n)), zero_division=0)
        return {
            "accuracy": float(accuracy_score(gold, predicted)),
            "macro_f1": float(f1_score(gold, predicted, labels=list(range(n)), average="macro", zero_division=0)),
            "per_class": {
                info["labels"][i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                for i in range(n)
            },
        }

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[str]:
        if isinstance(body, dict) and isinstance(body.get("text"), str):
            return [body["text"]]
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t.strip() for t in inputs):
            raise DoctuneError(
                'request body must be {"inputs": ["document text", ...]} with 1 or more non-empty strings, or {"text": "..."}',
                "invalid_request",
                field="inputs",
            )
        return inputs

    def predict(self, model: Any, tokenizer: Any, inputs: list[str], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        import torch

        enc = tokenizer(inputs, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        with torch.inference_mode():
            probs = model(**enc).logits.softmax(-1)
        labels = info["labels"]
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": labels[best], "score": row[best], "probabilities": dict(zip(labels, row))})
        return out


PLUGIN = ClassificationTask()
