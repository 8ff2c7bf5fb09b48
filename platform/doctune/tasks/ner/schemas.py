"""The ner endpoint's ``POST /predict`` body and answer, with examples (the plugin's
``request_model``, ``response_model``, ``endpoint_summary``, ``endpoint_description``,
``request_examples`` and ``response_example``; see :mod:`doctune.tasks.serving`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from doctune.tasks.serving import MODEL_ID, PREDICTIONS, TEXTS_CUT, Probability, TextsOrText


class NerRequest(TextsOrText):
    """Raw texts to find entities in: `{"inputs": ["...", ...]}` or `{"text": "..."}`. A text is split into
    words on whitespace, each Chinese character being a word of its own."""


class Entity(BaseModel):
    type: str = Field(description="The entity type (the tag without its B-/I- prefix).")
    text: str = Field(description="The entity's characters: input[start:end].")
    start: int = Field(ge=0, description="Character offset of its first character in the input.")
    end: int = Field(ge=1, description="Character offset just past its last character (exclusive).")
    score: Probability = Field(description="The mean probability of the entity's word tags.")


class EntitiesPrediction(BaseModel):
    entities: list[Entity] = Field(description="The entities found, in text order; words cut off by the model's "
                                               "max_seq_length yield none.")


class NerResponse(BaseModel):
    model_id: str = MODEL_ID
    predictions: list[EntitiesPrediction] = Field(description=PREDICTIONS)


SUMMARY = "Find named entities"
DESCRIPTION = ("Each text gets its entities with their type and character offsets into the text "
               "(`text == input[start:end]`). " + TEXTS_CUT)
EXAMPLES: dict[str, Any] = {
    "inputs": {"summary": "Several texts", "value": {"inputs": ["View from the Empire State Building in NYC",
                                                                 "Tim Cook visited Paris"]}},
    "text": {"summary": "One text", "value": {"text": "View from the Empire State Building in NYC"}},
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [{"entities": [
    {"type": "facility", "text": "Empire State Building", "start": 14, "end": 35, "score": 0.91},
    {"type": "geo-loc", "text": "NYC", "start": 39, "end": 42, "score": 0.88}]}]}
