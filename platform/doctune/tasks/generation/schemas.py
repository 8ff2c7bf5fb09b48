"""The generation endpoint's ``POST /predict`` body and answer, with examples (the plugin's
``request_model``, ``response_model``, ``endpoint_summary``, ``endpoint_description``,
``request_examples`` and ``response_example``; see :mod:`doctune.tasks.serving`)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Field

from doctune.tasks._causal import MAX_INPUTS_CHARS, PARAMETERS, Temperature, TopP
from doctune.tasks.serving import (
    INPUTS,
    MAX_INPUTS_PER_REQUEST,
    MODEL_ID,
    PREDICTIONS,
    ClosedRequest,
    NonBlank,
    StrictRequest,
)

MAX_TEXT_TOKENS = 128


class GenerationParameters(ClosedRequest):
    max_new_tokens: int = Field(MAX_TEXT_TOKENS, ge=1, le=512, description=f"Most tokens to write per document "
                                                                      f"(1 .. 512, default {MAX_TEXT_TOKENS}).")
    temperature: Temperature = 0.0
    top_p: TopP = 1.0


FieldScalar = Union[NonBlank, int, float, bool]
FieldValue = Union[FieldScalar, list[Union[str, int, float, bool]]]


class _NamedValues:
    """JSON schema of ``dict[NonBlank, V]`` as ``propertyNames`` + ``additionalProperties``: pydantic writes
    ``patternProperties``, which would let a blank name through unchecked."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        (pattern, values), = schema.pop("patternProperties").items()
        return {**schema, "propertyNames": {"pattern": pattern}, "additionalProperties": values}


Fields = Annotated[dict[NonBlank, FieldValue], Field(min_length=1), _NamedValues()]


class GenerationRequest(StrictRequest):
    """Documents to write, one per object of named field values: `{"inputs": [{"name": value, ...}, ...],
    "parameters": {...}}`."""

    inputs: list[Fields] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"One object per document to write, {INPUTS}: at least one named value each; a value is a "
                    "non-empty string, a number, a boolean or a list of them (joined with commas). Use the field "
                    "names the model was trained on (GET / does not list them; see the training dataset). The "
                    f"model reads them as `name: value` lines, at most {MAX_INPUTS_CHARS:,} characters in all per "
                    "input.")
    parameters: GenerationParameters = Field(default_factory=GenerationParameters, description=PARAMETERS)


class TextPrediction(BaseModel):
    text: str = Field(description="The document the model wrote.")


class GenerationResponse(BaseModel):
    model_id: str = MODEL_ID
    predictions: list[TextPrediction] = Field(description=PREDICTIONS)


SUMMARY = "Write documents from fields"
DESCRIPTION = ("Each object of named values gets a document written by the model. Requests with the same "
               "parameters are written together.")
EXAMPLES: dict[str, Any] = {
    "sampled": {"summary": "Sampled, 96 tokens at most",
                "value": {"inputs": [{"topic": "sport", "headline": "Owen double sinks Chelsea"}],
                          "parameters": {"max_new_tokens": 96, "temperature": 0.7, "top_p": 0.9}}},
    "greedy": {"summary": "Default parameters (greedy)",
               "value": {"inputs": [{"topic": "business", "headline": "Ad sales boost Time Warner profit"}]}},
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [{"text": "Michael Owen scored twice ..."}]}
