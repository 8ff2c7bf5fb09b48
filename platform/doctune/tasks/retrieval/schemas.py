"""The retrieval endpoint's ``POST /predict`` body and answer, with examples (the plugin's
``request_model``, ``response_model``, ``endpoint_summary``, ``endpoint_description``,
``request_examples`` and ``response_example``; see :mod:`doctune.tasks.serving`)."""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

from doctune.tasks.serving import INPUTS, MAX_INPUTS_PER_REQUEST, MODEL_ID, ClosedRequest, NonBlank

DEFAULT_K, MAX_K = 10, 100
SNIPPET = 300  # characters of a document returned with a search result

K = Field(DEFAULT_K, ge=1, le=MAX_K, description=f"How many documents to return per query (1 .. {MAX_K}, "
                                                  f"default {DEFAULT_K}); fewer when the collection is smaller.")


class QueryRequest(ClosedRequest):
    query: NonBlank = Field(description="What to search the endpoint's document collection for.")
    k: int = K


class QueriesRequest(ClosedRequest):
    queries: list[NonBlank] = Field(min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
                                    description=f"Several searches, {INPUTS}; each gets its own results, in order.")
    k: int = K


class RetrievalRequest(RootModel[Union[QueryRequest, QueriesRequest]]):
    """One search, `{"query": "...", "k": 10}`, or several, `{"queries": ["...", ...], "k": 10}`: exactly one of
    `query` and `queries`, and no other key."""

    model_config = ConfigDict(strict=True)


class SearchResult(BaseModel):
    doc_id: str = Field(description="The document's id: its doc_id in the training data, else `sha1:` and 16 hex "
                                    "digits of its text.")
    score: float = Field(description="Cosine similarity of the query and the document (-1 .. 1; higher is closer).")
    text: str = Field(max_length=SNIPPET, description=f"The document's first {SNIPPET} characters.")


class SearchPrediction(BaseModel):
    results: list[SearchResult] = Field(description="The k closest documents of the collection, best first.")


class RetrievalResponse(BaseModel):
    model_id: str = MODEL_ID
    predictions: list[SearchPrediction] = Field(description="One prediction per query, in the order of the queries.")


SUMMARY = "Search the document collection"
DESCRIPTION = ("Each query gets the k documents of the endpoint's collection (the documents of the dataset the model "
               "was trained on) closest to it by cosine similarity, best first.")
EXAMPLES: dict[str, Any] = {
    "query": {"summary": "One query", "value": {"query": "interest rates held", "k": 3}},
    "queries": {"summary": "Several queries",
                "value": {"queries": ["interest rates held", "new games console"], "k": 5}},
}
RESPONSE_EXAMPLE: dict[str, Any] = {"model_id": "model-3f9c2a", "predictions": [{"results": [
    {"doc_id": "bbc-business-4c1e0f6a2d", "score": 0.83, "text": "UK interest rates have been held ..."},
    {"doc_id": "bbc-business-9a7e3c51f0", "score": 0.71, "text": "The Bank of England has ..."}]}]}
