"""Information extraction: the relation between two marked entities, or named fields as spans.

One task, two dataset kinds; the records decide which, and a dataset is all one kind.

Relation records (JSONL, one entity pair per line)::

    {"text": "Tim Cook runs Apple.", "head": {"start": 0, "end": 8}, "tail": {"start": 14, "end": 19},
     "relation": "leads"}

``head`` and ``tail`` are character offsets into ``text`` (``end`` exclusive); each may
carry an informational ``type`` string. The spans must not overlap. ``relation`` is a
label; ``no_relation`` means "both are mentioned, no relation is stated" and is always a
class. The model reads the text with typed-free punctuation entity markers (Zhou & Chen,
2021), ``@ Tim Cook @ runs # Apple #.``, so no new vocabulary is needed, and classifies it
with a sequence-classification head. When the marked text is longer than
``max_seq_length`` tokens, the tokens kept are the four markers, then the entities' own
tokens, then the context tokens nearest an entity: truncation never cuts a marker out.
Metrics are the TACRED scoring: micro precision/recall/F1 over every relation except
``no_relation`` (a prediction counts as positive unless it is ``no_relation``), plus
accuracy and macro F1 over the relations.

Key-field records (JSONL, one document per line)::

    {"text": "Agreement between Acme Ltd and Bob Smith, 1 May 2024.",
     "fields": {"party": [{"start": 18, "end": 26}, {"start": 31, "end": 40}], "date": [{"start": 42, "end": 52}]}}

Each field name maps to a list of spans (possibly empty); spans of a document do not
overlap. The model tags words (the tokenizer's words) with BIO tags over the field names,
the first sub-token of each word carrying the tag, as ner does. Metrics are span-level
(seqeval): a span counts only if its field and its exact extent are right.

Optional fields in both kinds: ``id`` (string or number), ``meta`` (object). Any other
field is an error. Serving: a relation model takes ``{"inputs": [{"text", "head",
"tail"}, ...]}`` and returns each input's ``relation``, ``score``, ``scores`` and the
two spans with their text; a key-field model takes ``{"inputs": ["raw text", ...]}``
(or ``{"text": "..."}``) and returns ``{"fields": {name: [{"text", "start", "end",
"score"}, ...]}}`` with every field name the model knows.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks._hf import build_labelled_model, load_labelled_model
from doctune.tasks._records import check_fields
from doctune.tasks import _tagging
from doctune.tasks.extraction import schemas

NO_RELATION = "no_relation"
HEAD_MARKER, TAIL_MARKER = "@", "#"
FIELD_NAME = re.compile(r"^\S+$")
AUTO_CLASS = {"relation": "AutoModelForSequenceClassification", "fields": "AutoModelForTokenClassification"}
KIND_WORDS = {"relation": "relation record ('head', 'tail', 'relation')", "fields": "key-field record ('fields')"}
RELATION_EXAMPLE = ('{"text": "Tim Cook runs Apple", "head": {"start": 0, "end": 8}, '
                    '"tail": {"start": 14, "end": 19}, "relation": "leads"}')
FIELDS_EXAMPLE = '{"text": "Paid by Acme Ltd", "fields": {"payer": [{"start": 8, "end": 16}]}}'
REQUEST_SHAPES = (
    'the request body is {"inputs": [{"text": "Tim Cook runs Apple", "head": {"start": 0, "end": 8}, '
    '"tail": {"start": 14, "end": 19}}, ...]} for a relation model, or {"inputs": ["raw text", ...]} '
    '(or {"text": "..."}) for a key-field model'
)


# -- spans and markers ---------------------------------------------------------
def check_span(value: Any, text: str, name: str, typed: bool = False) -> dict[str, int]:
    """``value`` as a ``{"start", "end"}`` span of ``text``; ValueError saying what is wrong
    with ``name`` otherwise. ``typed``: an optional ``type`` string is allowed (and dropped)."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object like {{\"start\": 0, \"end\": 8}} (character offsets, end "
                         f"exclusive); got {type(value).__name__}")
    allowed = ("start", "end", "type") if typed else ("start", "end")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {unknown}; a span has {', '.join(repr(k) for k in allowed)}")
    start, end = value.get("start"), value.get("end")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise ValueError(f"{name} needs integer 'start' and 'end' (character offsets, end exclusive); "
                         f"got start={start!r}, end={end!r}")
    if not 0 <= start < end <= len(text):
        raise ValueError(f"{name} is [{start}, {end}) but needs 0 <= start < end <= {len(text)} (the text's length "
                         "in characters; end is exclusive)")
    if not text[start:end].strip():
        raise ValueError(f"{name} [{start}, {end}) covers only whitespace; point it at the entity's characters")
    if "type" in value and not (isinstance(value["type"], str) and value["type"].strip()):
        raise ValueError(f"{name}.type must be a non-empty string (e.g. \"person\"); got {value['type']!r}")
    return {"start": start, "end": end}


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def mark(text: str, head: dict[str, int], tail: dict[str, int]) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with ``@ head @`` and ``# tail #`` markers (Zhou & Chen 2021, typed-free
    punctuation markers), and the character range of each marked entity, markers included,
    in the new text (head first)."""
    marks = [(head["start"], 1, 0), (head["end"], 0, 0), (tail["start"], 1, 1), (tail["end"], 0, 1)]
    out, pos, regions = "", 0, [[0, 0], [0, 0]]
    for at, opening, which in sorted(marks):  # at one offset a closing marker goes before an opening one
        out += text[pos:at]
        pos = at
        symbol = (HEAD_MARKER, TAIL_MARKER)[which]
        if opening:
            regions[which][0] = len(out)
            out += f"{symbol} "
        else:
            out += f" {symbol}"
            regions[which][1] = len(out)
    out += text[pos:]
    return out, [(a, b) for a, b in regions]


def keep_tokens(offsets: list[tuple[int, int]], special: list[int], regions: list[tuple[int, int]],
                max_len: int) -> list[int]:
    """Indices of the tokens to keep, in order, so that at most ``max_len`` remain: special
    tokens and the four markers always, then the entities' tokens (their first tokens
    first), then the context tokens nearest an entity. Cuts one window around both entities,
    or one around each when they are far apart."""
    n = len(offsets)
    if n <= max_len:
        return list(range(n))
    inside = [[j for j in range(n) if not special[j] and offsets[j][0] < b and offsets[j][1] > a] for a, b in regions]
    markers = {j for (a, b), toks in zip(regions, inside) for j in toks if offsets[j][0] <= a or offsets[j][1] >= b}
    position = {j: k for toks in inside for k, j in enumerate(toks)}

    def rank(j: int) -> tuple[int, int]:
        if special[j] or j in markers:
            return (0, 0)
        if j in position:
            return (1, position[j])
        return (2, min(toks[0] - j if j < toks[0] else j - toks[-1] for toks in inside if toks))

    return sorted(sorted(range(n), key=lambda j: (rank(j), j))[:max_len])


def relation_inputs(items: list[dict[str, Any]], tokenizer: Any, max_len: int) -> list[list[int]]:
    """Token ids of each marked ``{"text", "head", "tail"}``, at most ``max_len`` long, markers kept."""
    _need_fast(tokenizer)
    marked = [mark(x["text"], x["head"], x["tail"]) for x in items]
    enc = tokenizer([m for m, _ in marked], return_offsets_mapping=True, return_special_tokens_mask=True)
    out = []
    for i, (_, regions) in enumerate(marked):
        keep = keep_tokens(enc["offset_mapping"][i], enc["special_tokens_mask"][i], regions, max_len)
        out.append([enc["input_ids"][i][j] for j in keep])
    return out


def relation_scores(predicted: list[int], gold: list[int], labels: list[str]) -> dict[str, Any]:
    """TACRED scoring: micro precision/recall/F1 over every relation but ``no_relation`` (a
    prediction is a positive unless it is ``no_relation``), accuracy, and per-relation and
    macro F1 over the relations."""
    none = labels.index(NO_RELATION)

    def prf(correct: int, guessed: int, actual: int) -> tuple[float, float, float]:
        p = correct / guessed if guessed else 0.0
        r = correct / actual if actual else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    pairs = list(zip(predicted, gold))
    p, r, f = prf(sum(a == b != none for a, b in pairs), sum(a != none for a in predicted), sum(b != none for b in gold))
    per_relation = {}
    for c, label in enumerate(labels):
        if c != none:
            pc, rc, fc = prf(sum(a == b == c for a, b in pairs), predicted.count(c), gold.count(c))
            per_relation[label] = {"precision": pc, "recall": rc, "f1": fc, "support": gold.count(c)}
    return {
        "precision": p,
        "recall": r,
        "f1": f,
        "macro_f1": sum(v["f1"] for v in per_relation.values()) / max(len(per_relation), 1),
        "accuracy": sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0,
        "per_relation": per_relation,
    }


def _need_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise DoctuneError(
            "extraction needs a fast (Rust) tokenizer to map tokens back to character offsets; "
            "use a base model that ships tokenizer.json",
            "invalid_spec",
            field="base_model",
        )


def _kind(record: dict[str, Any]) -> str:
    return "fields" if "fields" in record else "relation"


def _field_names(labels: list[str]) -> list[str]:
    return [l[2:] for l in labels if l.startswith("B-")]


class ExtractionTask:
    name = "extraction"
    # The two kinds need different peft task types (SEQ_CLS, TOKEN_CLS) and the type is fixed
    # per task: a plain PeftModel passes every keyword through to either model.
    peft_task_type = None
    primary_metric = "f1"  # relation: micro F1 without no_relation; fields: span-level micro F1
    metric_names = ("f1", "precision", "recall", "macro_f1", "accuracy", "loss")
    metric_labels = {"f1": "F1", "precision": "precision", "recall": "recall", "macro_f1": "macro-F1",
                     "accuracy": "accuracy", "loss": "loss"}
    text_fields = ("text",)  # plan_texts reads a relation record's text with its entity markers

    # serving schemas (doctune.serve.schemas documents the endpoint with them)
    request_model = schemas.ExtractionRequest
    response_model = schemas.ExtractionResponse
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
        relation_keys = [k for k in ("head", "tail", "relation") if k in record]
        if "fields" in record and relation_keys:
            raise DoctuneError(
                f"{where}: has 'fields' (key-field extraction) and {relation_keys} (relation extraction); a record "
                f"is one kind, e.g. {RELATION_EXAMPLE} or {FIELDS_EXAMPLE}",
                "invalid_dataset",
                field="fields",
            )
        if "fields" not in record and not relation_keys:
            raise DoctuneError(
                f"{where}: missing 'head', 'tail' and 'relation' (relation extraction, e.g. {RELATION_EXAMPLE}) "
                f"or 'fields' (key-field extraction, e.g. {FIELDS_EXAMPLE})",
                "invalid_dataset",
                field="relation",
            )
        if "fields" in record:
            check_fields(record, where, "extraction key-field", ("text", "fields"), ("id", "meta"), FIELDS_EXAMPLE)
        else:
            check_fields(record, where, "extraction relation", ("text", "head", "tail", "relation"), ("id", "meta"),
                         RELATION_EXAMPLE)
        text = record["text"]
        if not isinstance(text, str) or not text.strip():
            raise DoctuneError(f"{where}: 'text' must be a non-empty string", "invalid_dataset", field="text")
        if "fields" in record:
            return {"text": text, "fields": self._check_fields(record["fields"], text, where)}
        spans = {}
        for name in ("head", "tail"):
            try:
                spans[name] = check_span(record[name], text, f"'{name}'", typed=True)
            except ValueError as exc:
                raise DoctuneError(f"{where}: {exc}", "invalid_dataset", field=name) from None
        head, tail = spans["head"], spans["tail"]
        if _overlap(head, tail):
            raise DoctuneError(
                f"{where}: 'head' [{head['start']}, {head['end']}) and 'tail' [{tail['start']}, {tail['end']}) overlap; "
                "mark two separate spans of the text",
                "invalid_dataset",
                field="tail",
            )
        relation = record["relation"]
        if not isinstance(relation, str) or not relation.strip():
            raise DoctuneError(
                f"{where}: 'relation' must be a non-empty string (e.g. \"works_for\", or \"{NO_RELATION}\" when the "
                f"text states no relation between the two); got {relation!r}",
                "invalid_dataset",
                field="relation",
            )
        return {"text": text, "head": head, "tail": tail, "relation": relation.strip()}

    def _check_fields(self, fields: Any, text: str, where: str) -> dict[str, list[dict[str, int]]]:
        if not isinstance(fields, dict):
            raise DoctuneError(
                f"{where}: 'fields' must be an object mapping each field name to a list of spans, e.g. "
                f"{FIELDS_EXAMPLE}; got {type(fields).__name__}",
                "invalid_dataset",
                field="fields",
            )
        out: dict[str, list[dict[str, int]]] = {}
        located: list[tuple[dict[str, int], str]] = []
        for name, spans in fields.items():
            if not FIELD_NAME.match(name):
                raise DoctuneError(f"{where}: field name {name!r} must be non-empty without whitespace "
                                   "(e.g. 'party' or 'due_date')", "invalid_dataset", field="fields")
            if not isinstance(spans, list):
                raise DoctuneError(
                    f"{where}: fields[{name!r}] must be a list of spans (empty if the document has none); "
                    f"got {type(spans).__name__}",
                    "invalid_dataset",
                    field="fields",
                )
            out[name] = []
            for i, value in enumerate(spans):
                label = f"fields[{name!r}][{i}]"
                try:
                    span = check_span(value, text, label)
                except ValueError as exc:
                    raise DoctuneError(f"{where}: {exc}", "invalid_dataset", field="fields") from None
                for other, other_label in located:
                    if _overlap(span, other):
                        raise DoctuneError(
                            f"{where}: {label} [{span['start']}, {span['end']}) overlaps {other_label} "
                            f"[{other['start']}, {other['end']}); each character belongs to at most one field span",
                            "invalid_dataset",
                            field="fields",
                        )
                located.append((span, label))
                out[name].append(span)
            out[name].sort(key=lambda s: s["start"])
        return out

    def redact_record(self, record: dict[str, Any], redactor: Any) -> dict[str, Any]:
        """The record with personal data in its text replaced (doctune.pii), its spans moved onto the
        same words of the redacted text (a span over an e-mail address now covers ``<EMAIL>``)."""
        if "fields" in record:
            spans = [s for field_spans in record["fields"].values() for s in field_spans]
            text, moved = redactor.text_with_spans(record["text"], spans)
            rest = iter(moved)
            return {**record, "text": text, "fields": {k: [next(rest) for _ in v] for k, v in record["fields"].items()}}
        text, (head, tail) = redactor.text_with_spans(record["text"], [record["head"], record["tail"]])
        return {**record, "text": text, "head": head, "tail": tail}

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        kind = _kind(splits["train"][0])
        for split, rows in splits.items():
            for i, r in enumerate(rows, 1):
                if _kind(r) != kind:
                    raise DoctuneError(
                        f"{split} record {i} (text {r['text'][:40]!r}): is a {KIND_WORDS[_kind(r)]} but train record 1 "
                        f"is a {KIND_WORDS[kind]}; a dataset uses one kind for every record",
                        "invalid_dataset",
                        field=_kind(r),
                    )
        return self._relation_info(splits) if kind == "relation" else self._fields_info(splits)

    def _relation_info(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        counts = Counter(r["relation"] for r in splits["train"])
        relations = sorted(set(counts) - {NO_RELATION})
        if not relations:
            raise DoctuneError(
                f"train split has no relation other than '{NO_RELATION}'; relation extraction needs train examples "
                "of at least one relation",
                "invalid_dataset",
                field="relation",
            )
        for split in ("dev", "test"):
            for i, r in enumerate(splits.get(split, []), 1):
                if r["relation"] not in counts and r["relation"] != NO_RELATION:
                    raise DoctuneError(
                        f"{split} record {i}: relation {r['relation']!r} never appears in train; add train examples "
                        f"for it or relabel it (train relations: {relations}, plus '{NO_RELATION}')",
                        "invalid_dataset",
                        field="relation",
                    )
        labels = [NO_RELATION] + relations
        return {"kind": "relation", "labels": labels, "relations": relations,
                "relation_counts": {l: counts[l] for l in labels}}

    def _fields_info(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        counts: Counter[str] = Counter(name for r in splits["train"] for name, spans in r["fields"].items() for _ in spans)
        if not counts:
            raise DoctuneError(
                "train split has no field spans (every field list is empty); key-field extraction needs train "
                "documents with at least one span",
                "invalid_dataset",
                field="fields",
            )
        for split in ("dev", "test"):
            for i, r in enumerate(splits.get(split, []), 1):
                for name, spans in r["fields"].items():
                    if spans and name not in counts:
                        raise DoctuneError(
                            f"{split} record {i}: field {name!r} has spans but none in train; add train examples "
                            f"for it or remove it (train fields: {sorted(counts)})",
                            "invalid_dataset",
                            field="fields",
                        )
        names = sorted(counts)
        return {
            "kind": "fields",
            "labels": ["O"] + [f"{p}-{n}" for n in names for p in ("B", "I")],
            "field_names": names,
            "field_counts": {n: counts[n] for n in names},
        }

    def stratify_key(self, record: dict[str, Any]) -> Any:
        if _kind(record) == "relation":
            return record["relation"]
        counts = {name: len(spans) for name, spans in record["fields"].items() if spans}
        if not counts:
            return "(none)"
        return min(counts, key=lambda n: (-counts[n], n))  # the record's most frequent field

    def plan_texts(self, records: list[dict[str, Any]]) -> list[str]:
        return [mark(r["text"], r["head"], r["tail"])[0] if _kind(r) == "relation" else r["text"] for r in records]

    # -- model ----------------------------------------------------------
    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        return build_labelled_model(AUTO_CLASS[info["kind"]], base_path, info["labels"], pretrained)

    def load_model(self, path: str) -> Any:
        kind = json.loads((Path(path) / "doctune.json").read_text())["kind"]
        return load_labelled_model(AUTO_CLASS[kind], path)

    def head_modules(self) -> list[str]:
        """Modules trained in full even under LoRA (the fresh task head)."""
        return ["classifier", "score"]

    def export_extras(self, model: Any, tokenizer: Any, info: dict[str, Any], splits: Any, max_len: int,
                      out_dir: Path) -> dict[str, Any]:
        """The dataset kind, for serving (doctune.json)."""
        return {"kind": info["kind"]}

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        label2id = {l: i for i, l in enumerate(info["labels"])}
        if info["kind"] == "relation":
            return [
                {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": label2id[r["relation"]]}
                for r, ids in zip(records, relation_inputs(records, tokenizer, max_len))
            ]
        _need_fast(tokenizer)
        enc = tokenizer([r["text"] for r in records], truncation=True, max_length=max_len)
        out = []
        for i, r in enumerate(records):
            spans = sorted((s["start"], s["end"], name) for name, ss in r["fields"].items() for s in ss)
            labels, previous, current = [], None, None
            for w in enc.word_ids(i):
                # only the first sub-token of each word is labelled; the rest and special tokens are ignored
                if w is None or w == previous:
                    labels.append(_tagging.IGNORE)
                else:
                    start, end = enc.word_to_chars(i, w)
                    hit = next((s for s in spans if s[0] < end and s[1] > start), None)
                    tag = "O" if hit is None else ("I-" if hit == current else "B-") + hit[2]
                    labels.append(label2id[tag])
                    current = hit
                previous = w
            out.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels})
        return out

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        if isinstance(batch[0]["labels"], list):  # key fields: one label per token, padded with IGNORE
            return _tagging.collate_tags(batch, tokenizer)
        import torch

        feats = tokenizer.pad([{k: b[k] for k in ("input_ids", "attention_mask")} for b in batch], return_tensors="pt")
        feats["labels"] = torch.tensor([b["labels"] for b in batch], dtype=torch.long)
        return {k: v.long() for k, v in feats.items()}

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        if batch["labels"].dim() == 2:  # key fields: the labelled positions of each document
            return _tagging.tag_predictions(outputs, batch)
        return outputs.logits.argmax(-1).tolist(), batch["labels"].tolist()

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        if info["kind"] == "relation":
            return relation_scores(predicted, gold, info["labels"])
        out = _tagging.tag_metrics(predicted, gold, info["labels"])  # seqeval, span-level
        out["per_field"] = out.pop("per_type")
        return out

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[Any]:
        if isinstance(body, dict) and isinstance(body.get("text"), str) and body["text"].strip():
            return [body["text"]]
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise DoctuneError(f"'inputs' must be a non-empty list; {REQUEST_SHAPES}", "invalid_request", field="inputs")
        if all(isinstance(x, str) and x.strip() for x in inputs):
            return inputs
        if not all(isinstance(x, dict) for x in inputs):
            raise DoctuneError(f"'inputs' must be all non-empty strings or all objects; {REQUEST_SHAPES}",
                               "invalid_request", field="inputs")
        return [self._check_pair(x, i) for i, x in enumerate(inputs)]

    def _check_pair(self, item: dict[str, Any], i: int) -> dict[str, Any]:
        def refuse(problem: str) -> DoctuneError:
            return DoctuneError(f"inputs[{i}]: {problem}; {REQUEST_SHAPES}", "invalid_request", field="inputs")

        if set(item) != {"text", "head", "tail"}:
            raise refuse(f"has keys {sorted(item)}; an entity pair has exactly 'text', 'head' and 'tail'")
        text = item["text"]
        if not isinstance(text, str) or not text.strip():
            raise refuse("'text' must be a non-empty string")
        try:
            head = check_span(item["head"], text, "'head'", typed=True)
            tail = check_span(item["tail"], text, "'tail'", typed=True)
        except ValueError as exc:
            raise refuse(str(exc)) from None
        if _overlap(head, tail):
            raise refuse("'head' and 'tail' overlap; mark two separate spans of the text")
        return {"text": text, "head": head, "tail": tail}

    def check_request(self, inputs: list[Any], info: dict[str, Any]) -> None:
        """The request's shape must match the served model's kind; checked per request, before batching,
        so a wrong request never fails the requests batched with it."""
        relation = info["kind"] == "relation"
        if any(isinstance(x, dict) != relation for x in inputs):
            wanted = "objects {text, head, tail}" if relation else "raw text strings"
            raise DoctuneError(f"this endpoint serves a {'relation' if relation else 'key-field'} extraction model: "
                               f"'inputs' must be {wanted}; {REQUEST_SHAPES}", "invalid_request", field="inputs")

    def predict(self, model: Any, tokenizer: Any, inputs: list[Any], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        self.check_request(inputs, info)
        relation = info["kind"] == "relation"
        if relation:
            return self._predict_relations(model, tokenizer, inputs, info, max_len)
        return self._predict_fields(model, tokenizer, inputs, info, max_len)

    def _predict_relations(self, model: Any, tokenizer: Any, inputs: list[dict[str, Any]], info: dict[str, Any],
                           max_len: int) -> list[dict[str, Any]]:
        import torch

        ids = relation_inputs(inputs, tokenizer, max_len)
        feats = tokenizer.pad([{"input_ids": x, "attention_mask": [1] * len(x)} for x in ids], return_tensors="pt")
        device = getattr(model, "device", None)
        feats = {k: (v.to(device) if device is not None else v) for k, v in feats.items()}
        with torch.inference_mode():
            probs = model(**feats).logits.softmax(-1).cpu().tolist()
        labels = info["labels"]
        out = []
        for x, row in zip(inputs, probs):
            best = max(range(len(row)), key=row.__getitem__)
            text = x["text"]
            out.append({
                "relation": labels[best],
                "score": row[best],
                "scores": dict(zip(labels, row)),
                "head": {**x["head"], "text": text[x["head"]["start"] : x["head"]["end"]]},
                "tail": {**x["tail"], "text": text[x["tail"]["start"] : x["tail"]["end"]]},
            })
        return out

    def _predict_fields(self, model: Any, tokenizer: Any, inputs: list[str], info: dict[str, Any],
                        max_len: int) -> list[dict[str, Any]]:
        import torch

        _need_fast(tokenizer)
        labels = info["labels"]
        out: list[dict[str, Any]] = [{"fields": {n: [] for n in _field_names(labels)}} for _ in inputs]
        enc = tokenizer(inputs, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        device = getattr(model, "device", None)
        feats = {k: (v.to(device) if device is not None else v) for k, v in enc.items()}
        with torch.inference_mode():
            probs = model(**feats).logits.softmax(-1).cpu()
        for row, text in enumerate(inputs):
            words, tags, scores = _tagging.word_tags(enc.word_ids(row), *probs[row].max(-1), labels)
            for name, a, b in _tagging.spans(tags):
                start, end = enc.word_to_chars(row, words[a]).start, enc.word_to_chars(row, words[b - 1]).end
                out[row]["fields"][name].append(
                    {"text": text[start:end], "start": start, "end": end, "score": sum(scores[a:b]) / (b - a)})
        return out


def load_bbc_relations() -> list[dict[str, Any]]:
    """The hand-made BBC person-organisation relation set (``data/bbc_relations.jsonl``; see
    ``data/README.md``): 223 entity pairs in 168 real BBC News sentences, 5 classes."""
    return _package_data("bbc_relations.jsonl")


def load_bbc_quote_fields() -> list[dict[str, Any]]:
    """The hand-made BBC quote-attribution key-field set (``data/bbc_quote_fields.jsonl``):
    41 real BBC News sentences with ``speaker``, ``role`` and ``organisation`` spans."""
    return _package_data("bbc_quote_fields.jsonl")


def _package_data(name: str) -> list[dict[str, Any]]:
    from importlib.resources import files

    text = (files(__name__) / "data" / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


PLUGIN = ExtractionTask()
