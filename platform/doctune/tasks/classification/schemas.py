"""The classification endpoint's ``POST /predict`` body and answer, with examples (the plugin's
``request_model``, ``response_model``, ``endpoint_summary``, ``endpoint_description``,
``request_examples`` and ``response_example``; see :mod:`doctune.tasks.serving`)."""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

from doctune.tasks.serving import (MODEL_ID, PREDICTIONS, TEXTS_CUT, Probability, TextRequest, TextsRequest,
                                    optional_field)

EXPLAIN = Field(False, description="true: each prediction also carries 'attributions', the words that drove the "
                                   "answered label (integrated gradients over the word embeddings). It costs several "
                                   "plain predictions; see docs/benchmarks.md.")


class ClassifyTexts(TextsRequest):
    explain: bool = EXPLAIN


class ClassifyText(TextRequest):
    explain: bool = EXPLAIN


class ClassificationRequest(RootModel[ClassifyTexts | ClassifyText]):
    """Documents to classify: `{"inputs": ["...", ...]}` or `{"text": "..."}`, with `"explain": true` for
    word attributions."""

    model_config = ConfigDict(strict=True)


class WordAttribution(BaseModel):
    """One word of the document and how much it drove the answered label."""

    word: str = Field(description="The word as it appears in the text (a Chinese character is a word).")
    start: int = Field(ge=0, description="Its first character's offset in the text.")
    end: int = Field(ge=0, description="The offset just past its last character.")
    score: float = Field(ge=-1, le=1, description="Positive: for the label; negative: against it; the largest "
                                                  "magnitude in a text is 1.")


ATTRIBUTIONS = Field(None, json_schema_extra=optional_field,
                     description="With explain: true only: every word the model read (up to max_seq_length tokens), "
                                 "in order, with its attribution to the answered label (multi-label: to the most "
                                 "probable label).")


class LabelPrediction(BaseModel):
    """A single-label model's answer for one document."""

    label: str = Field(description="The most probable label.")
    score: Probability = Field(description="Its probability.")
    probabilities: dict[str, Probability] = Field(description="Every label's probability (softmax; they sum to 1).")
    attributions: list[WordAttribution] = ATTRIBUTIONS


class MultiLabelPrediction(BaseModel):
    """A multi-label model's answer for one document."""

    labels: list[str] = Field(description="Every label whose probability reaches 0.5, in the model's label order; "
                                          "may be empty.")
    probabilities: dict[str, Probability] = Field(description="Every label's probability (a sigmoid each; "
                                                              "independent, they need not sum to 1).")
    attributions: list[WordAttribution] = ATTRIBUTIONS


class ClassificationResponse(BaseModel):
    model_id: str = MODEL_ID
    predictions: list[Union[LabelPrediction, MultiLabelPrediction]] = Field(
        description=PREDICTIONS + " A single-label model answers label, score and probabilities; a multi-label "
                                  "model answers labels and probabilities.")


SUMMARY = "Classify documents"
DESCRIPTION = ("Each document gets the model's label and every label's probability (a multi-label model: every "
               "label whose probability reaches 0.5). " + TEXTS_CUT)
EXAMPLES: dict[str, Any] = {
    "inputs": {"summary": "Several documents",
               "value": {"inputs": ["Stocks fell sharply on Monday after the central bank raised rates.",
                                    "Owen scored twice as Newcastle beat Chelsea."]}},
    "text": {"summary": "One document", "value": {"text": "Stocks fell sharply on Monday ..."}},
    "explain": {"summary": "Which words drove the label",
                "value": {"text": "Owen scored twice as Newcastle beat Chelsea.", "explain": True}},
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [
    {"label": "business", "score": 0.97, "probabilities": {"business": 0.97, "politics": 0.02, "sport": 0.01}},
    {"label": "sport", "score": 0.95, "probabilities": {"business": 0.02, "politics": 0.03, "sport": 0.95}}]}
