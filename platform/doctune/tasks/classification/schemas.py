"""The classification endpoint's ``POST /predict`` body and answer, with examples (the plugin's
``request_model``, ``response_model``, ``endpoint_summary``, ``endpoint_description``,
``request_examples`` and ``response_example``; see :mod:`doctune.tasks.serving`)."""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, Field

from doctune.tasks.serving import MODEL_ID, PREDICTIONS, TEXTS_CUT, Probability, TextsOrText


class ClassificationRequest(TextsOrText):
    """Documents to classify: `{"inputs": ["...", ...]}` or `{"text": "..."}`."""


class LabelPrediction(BaseModel):
    """A single-label model's answer for one document."""

    label: str = Field(description="The most probable label.")
    score: Probability = Field(description="Its probability.")
    probabilities: dict[str, Probability] = Field(description="Every label's probability (softmax; they sum to 1).")


class MultiLabelPrediction(BaseModel):
    """A multi-label model's answer for one document."""

    labels: list[str] = Field(description="Every label whose probability reaches 0.5, in the model's label order; "
                                          "may be empty.")
    probabilities: dict[str, Probability] = Field(description="Every label's probability (a sigmoid each; "
                                                              "independent, they need not sum to 1).")


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
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [
    {"label": "business", "score": 0.97, "probabilities": {"business": 0.97, "politics": 0.02, "sport": 0.01}},
    {"label": "sport", "score": 0.95, "probabilities": {"business": 0.02, "politics": 0.03, "sport": 0.95}}]}
