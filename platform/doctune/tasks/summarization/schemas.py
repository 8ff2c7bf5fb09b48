"""The summarization endpoint's ``POST /predict`` body and answer, with examples (the plugin's
``request_model``, ``response_model``, ``endpoint_summary``, ``endpoint_description``,
``request_examples`` and ``response_example``; see :mod:`doctune.tasks.serving`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from doctune.tasks._causal import MAX_INPUTS_CHARS, PARAMETERS, Temperature, TopP
from doctune.tasks.serving import INPUTS, MAX_INPUTS_PER_REQUEST, MODEL_ID, PREDICTIONS, ClosedRequest, StrictRequest

MAX_SUMMARY_TOKENS = 64


class SummarizationParameters(ClosedRequest):
    max_new_tokens: int = Field(MAX_SUMMARY_TOKENS, ge=1, le=512, description=f"Most tokens to write per summary "
                                                                         f"(1 .. 512, default {MAX_SUMMARY_TOKENS}).")
    temperature: Temperature = 0.0
    top_p: TopP = 1.0


Document = Annotated[str, StringConstraints(pattern=r"\S", max_length=MAX_INPUTS_CHARS)]


class DocumentsRequest(StrictRequest):
    inputs: list[Document] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"The documents to summarize, {INPUTS}, each non-empty and at most {MAX_INPUTS_CHARS:,} "
                    "characters; a document is cut at its end to fit the model's max_seq_length.")
    parameters: SummarizationParameters = Field(default_factory=SummarizationParameters, description=PARAMETERS)


class DocumentRequest(StrictRequest):
    text: Document = Field(description=f'One document (at most {MAX_INPUTS_CHARS:,} characters): the same as '
                                       '{"inputs": [text]}.')
    parameters: SummarizationParameters = Field(default_factory=SummarizationParameters, description=PARAMETERS)


class SummarizationRequest(RootModel[DocumentsRequest | DocumentRequest]):
    """Documents to summarize: `{"inputs": ["...", ...], "parameters": {...}}` or `{"text": "..."}`."""

    model_config = ConfigDict(strict=True)


class SummaryPrediction(BaseModel):
    summary: str = Field(description="The summary the model wrote.")


class SummarizationResponse(BaseModel):
    model_id: str = MODEL_ID
    predictions: list[SummaryPrediction] = Field(description=PREDICTIONS)


SUMMARY = "Summarize documents"
DESCRIPTION = ("Each document gets a summary written by the model. Requests with the same parameters are written "
               "together; writing takes longer than a classification, about in proportion to max_new_tokens.")
EXAMPLES: dict[str, Any] = {
    "greedy": {"summary": "Greedy, 32 tokens at most",
               "value": {"inputs": ["Quarterly profits at US media giant TimeWarner jumped 76% ..."],
                         "parameters": {"max_new_tokens": 32, "temperature": 0, "top_p": 1}}},
    "text": {"summary": "One document, default parameters",
             "value": {"text": "Quarterly profits at US media giant TimeWarner jumped 76% ..."}},
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [{"summary": "Time Warner profits jump"}]}
