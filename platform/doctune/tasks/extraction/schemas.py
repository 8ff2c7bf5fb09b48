"""The extraction endpoint's ``POST /predict`` body and answer, with examples (the plugin's
``request_model``, ``response_model``, ``endpoint_summary``, ``endpoint_description``,
``request_examples`` and ``response_example``; see :mod:`doctune.tasks.serving`). A few of
the plugin's checks (a span inside its text, spans that do not overlap, a request of the other
kind than the served model's) are told in descriptions only: JSON Schema cannot compare values."""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

from doctune.tasks.serving import (
    INPUTS,
    MAX_INPUTS_PER_REQUEST,
    MODEL_ID,
    PREDICTIONS,
    ClosedRequest,
    NonBlank,
    Probability,
    StrictRequest,
    TextRequest,
    TextsRequest,
    optional_field,
)


class EntitySpan(ClosedRequest):
    start: int = Field(ge=0, description="Offset of the entity's first character in `text`.")
    end: int = Field(ge=1, description="Offset just past its last character (exclusive): 0 <= start < end <= "
                                       "len(text), and the span must cover more than whitespace.")
    type: NonBlank = Field(None, description="Informational entity type, e.g. \"person\"; not used by the model.",
                           json_schema_extra=optional_field)  # may be left out, but not null


class EntityPair(ClosedRequest):
    text: NonBlank = Field(description="The text that mentions both entities.")
    head: EntitySpan = Field(description="The first entity of the relation (character offsets into `text`).")
    tail: EntitySpan = Field(description="The second entity; it must not overlap `head`.")


class RelationRequest(StrictRequest):
    inputs: list[EntityPair] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"Entity pairs, {INPUTS}: for an endpoint serving a relation model.")


class ExtractionRequest(RootModel[Union[RelationRequest, TextsRequest, TextRequest]]):
    """A relation model takes entity pairs, `{"inputs": [{"text", "head", "tail"}, ...]}`; a key-field model
    takes raw texts, `{"inputs": ["...", ...]}` or `{"text": "..."}`. A request of the other kind than the
    served model's (see `GET /`: relation labels, or `B-`/`I-` field tags) is answered 400, field `inputs`."""

    model_config = ConfigDict(strict=True)


class PairSpan(BaseModel):
    start: int = Field(ge=0, description="As in the request.")
    end: int = Field(ge=1, description="As in the request.")
    text: str = Field(description="The entity's characters: text[start:end].")


class RelationPrediction(BaseModel):
    """A relation model's answer for one entity pair."""

    relation: str = Field(description="The most probable relation; `no_relation` when none is stated.")
    score: Probability = Field(description="Its probability.")
    scores: dict[str, Probability] = Field(description="Every relation's probability (they sum to 1).")
    head: PairSpan = Field(description="The request's head span with its text.")
    tail: PairSpan = Field(description="The request's tail span with its text.")


class FieldSpan(BaseModel):
    text: str = Field(description="The span's characters: input[start:end].")
    start: int = Field(ge=0, description="Character offset of its first character in the input.")
    end: int = Field(ge=1, description="Character offset just past its last character (exclusive).")
    score: Probability = Field(description="The mean probability of the span's word tags.")


class FieldsPrediction(BaseModel):
    """A key-field model's answer for one text."""

    fields: dict[str, list[FieldSpan]] = Field(description="Every field name the model knows, each with the spans "
                                                           "found for it (an empty list when none).")


class ExtractionResponse(BaseModel):
    model_id: str = MODEL_ID
    predictions: list[Union[RelationPrediction, FieldsPrediction]] = Field(
        description=PREDICTIONS + " A relation model answers a relation per pair; a key-field model answers fields.")


SUMMARY = "Extract relations or key fields"
DESCRIPTION = ("A relation model gets entity pairs and answers the relation between each pair's head and tail; a "
               "key-field model gets raw texts and answers every field it knows with the spans found for it. `GET /` "
               "tells which: relation names, or `B-`/`I-` tags over field names.")
EXAMPLES: dict[str, Any] = {
    "relation": {"summary": "Entity pairs (a relation model)",
                 "value": {"inputs": [{"text": "Tim Cook runs Apple.", "head": {"start": 0, "end": 8},
                                       "tail": {"start": 14, "end": 19}}]}},
    "fields": {"summary": "Raw texts (a key-field model)",
               "value": {"inputs": ['"Numbers are good," said David Naude, economist at Deutsche Bank.']}},
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [
    {"relation": "leads", "score": 0.93, "scores": {"no_relation": 0.04, "founded": 0.03, "leads": 0.93},
     "head": {"start": 0, "end": 8, "text": "Tim Cook"}, "tail": {"start": 14, "end": 19, "text": "Apple"}}]}
