"""The sentiment endpoint's ``POST /predict`` body and answer, with examples: what the toy plugin
(``tests.toy_task``) documents as its ``request_model``, ``response_model`` and examples. Built only
from the public building blocks of ``doctune.tasks.serving``, as a plugin outside the package must."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from doctune.tasks.serving import INPUTS, MAX_INPUTS_PER_REQUEST, MODEL_ID, PREDICTIONS, ClosedRequest, NonBlank, Probability

SENTIMENTS = ("negative", "positive")


class SentimentRequest(ClosedRequest):
    """Reviews to read: `{"reviews": ["...", ...]}`; no other key."""

    reviews: list[NonBlank] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"The reviews, {INPUTS}, each a non-empty string; each gets one prediction, in order.")


class SentimentPrediction(BaseModel):
    sentiment: Literal["negative", "positive"] = Field(description="The more probable sentiment of the review.")
    positive: Probability = Field(description="The probability that the review is positive (0 .. 1).")


class SentimentResponse(BaseModel):
    model_id: str = MODEL_ID
    predictions: list[SentimentPrediction] = Field(description=PREDICTIONS)


SUMMARY = "Tell positive reviews from negative ones"
DESCRIPTION = ("Each review gets its sentiment, positive or negative, and the probability that it is positive. "
               "A review is read up to the model's max_seq_length tokens.")
EXAMPLES: dict[str, Any] = {
    "one": {"summary": "One review", "value": {"reviews": ["A delight from start to finish."]}},
    "several": {"summary": "Several reviews",
                "value": {"reviews": ["A delight from start to finish.", "Dull, slow and far too long."]}},
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [
    {"sentiment": "positive", "positive": 0.94}, {"sentiment": "negative", "positive": 0.08}]}
