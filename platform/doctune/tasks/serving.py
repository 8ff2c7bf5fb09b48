"""Building blocks of a task endpoint's request and response models, shared by the task plugins.

Each task plugin describes its ``POST /predict`` body and answer as pydantic models
(``doctune.tasks.<task>.schemas``, exposed as the plugin's ``request_model`` and
``response_model``); :mod:`doctune.serve.schemas` builds an endpoint's OpenAPI document from
them, and :mod:`doctune.serve.app` refuses a request of more than
:data:`MAX_INPUTS_PER_REQUEST` inputs. The plugins stay the validators at runtime
(``parse_request``); these models document what the plugins take, and the plugins' tests
check that the two agree. This module sits in the tasks layer, so plugins (which may not
import ``doctune.serve``) and the serve layer both read it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

__all__ = [
    "INPUTS",
    "MAX_INPUTS_PER_REQUEST",
    "MODEL_ID",
    "PREDICTIONS",
    "TEXTS_CUT",
    "ClosedRequest",
    "NonBlank",
    "Probability",
    "StrictRequest",
    "TextRequest",
    "TextsOrText",
    "TextsRequest",
    "optional_field",
]

MAX_INPUTS_PER_REQUEST = 64
"""Most inputs one ``POST /predict`` request may carry (the endpoint answers 400 past it)."""

INPUTS = f"1 to {MAX_INPUTS_PER_REQUEST} per request"
"""How the request models describe the number of inputs."""

NonBlank = Annotated[str, StringConstraints(pattern=r"\S")]
"""A string with at least one non-whitespace character (what the plugins call non-empty)."""

Probability = Annotated[float, Field(ge=0, le=1)]

TEXTS_CUT = "Each text is read up to the model's max_seq_length tokens; the rest is cut off."
"""A sentence for an endpoint description, for tasks that read raw texts."""

MODEL_ID = Field(description="The id of the registered model that answered.")
"""The ``model_id`` field of every response model."""

PREDICTIONS = "One prediction per input, in the order of the inputs."
"""The start of the description of a response model's ``predictions``."""


class StrictRequest(BaseModel):
    """A request body: strict, as the plugins are ("5" is not an integer and true is not a number)."""

    model_config = ConfigDict(strict=True)


class ClosedRequest(StrictRequest):
    """A request body whose plugin refuses unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid")


def optional_field(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a field that may be left out but is never null: no ``default: null``."""
    schema.pop("default", None)


class TextsRequest(StrictRequest):
    inputs: list[NonBlank] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"The texts, {INPUTS}, each a non-empty string; each gets one prediction, in order.")


class TextRequest(StrictRequest):
    text: NonBlank = Field(description='One text: the same as {"inputs": [text]}.')


class TextsOrText(RootModel[TextsRequest | TextRequest]):
    """Raw texts, `{"inputs": ["...", ...]}`, or one text, `{"text": "..."}`. Subclass it to give the body
    the task's own name and description."""

    model_config = ConfigDict(strict=True)
