"""The request and response of a task endpoint, per task, and the OpenAPI document it serves.

``doctune.serve.app.TaskEndpoint`` reads ``POST /predict``'s body as raw JSON and lets
the task plugin's ``parse_request`` (and ``check_request``) validate it, answering 400
with a JSON error naming the field; so FastAPI alone would document no body at all.
The pydantic models here describe, for each task, the bodies those plugins accept and
the predictions their ``predict`` returns (``doctune.tasks.<task>`` and
``doctune.tasks._causal``), and :func:`endpoint_openapi` builds from them the OpenAPI 3
document of an endpoint of one task. Each replica builds its task's document when it
starts and FastAPI serves it at ``<route>/openapi.json`` and ``<route>/docs`` (the ingress
app's ``openapi`` returns it; see ``doctune.serve.app``). The plugins stay the validators at
runtime: a few of their checks (a span inside its text, a rendered generation input under
20,000 characters, a request of the other extraction kind) are told in descriptions only.
tests/unit/test_endpoint_schemas.py checks the models against the plugins: the plugins'
own example requests pass both, rejected bodies fail both, and real predictions
validate against the response models.
"""

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from doctune.errors import DoctuneError
from doctune.serve.app import MAX_INPUTS_PER_REQUEST
from doctune.tasks import get_task
from doctune.tasks._causal import MAX_INPUTS_CHARS
from doctune.tasks.generation import MAX_TEXT_TOKENS
from doctune.tasks.retrieval import DEFAULT_K, MAX_K, SNIPPET
from doctune.tasks.summarization import MAX_SUMMARY_TOKENS

__all__ = ["ErrorResponse", "ModelDescription", "endpoint_openapi", "request_model", "response_model"]

NonBlank = Annotated[str, StringConstraints(pattern=r"\S")]
"""A string with at least one non-whitespace character (what the plugins call non-empty)."""

_INPUTS = f"1 to {MAX_INPUTS_PER_REQUEST} per request"


class _Request(BaseModel):
    # strict: "5" is not an integer and true is not a number, as in the plugins
    model_config = ConfigDict(strict=True)


def _optional(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a field that may be left out but is never null: no ``default: null``."""
    schema.pop("default", None)


class _ClosedRequest(_Request):
    """A body whose plugin refuses unknown keys (retrieval, generation parameters, entity pairs)."""

    model_config = ConfigDict(strict=True, extra="forbid")


# -- requests: texts (classification, ner, key-field extraction) ----------------------------------
class TextsRequest(_Request):
    inputs: list[NonBlank] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"The texts, {_INPUTS}, each a non-empty string; each gets one prediction, in order.")


class TextRequest(_Request):
    text: NonBlank = Field(description='One text: the same as {"inputs": [text]}.')


class ClassificationRequest(RootModel[Union[TextsRequest, TextRequest]]):
    """Documents to classify: `{"inputs": ["...", ...]}` or `{"text": "..."}`."""

    model_config = ConfigDict(strict=True)


class NerRequest(RootModel[Union[TextsRequest, TextRequest]]):
    """Raw texts to find entities in: `{"inputs": ["...", ...]}` or `{"text": "..."}`. A text is split into
    words on whitespace, each Chinese character being a word of its own."""

    model_config = ConfigDict(strict=True)


# -- requests: extraction --------------------------------------------------------------------------
class EntitySpan(_ClosedRequest):
    start: int = Field(ge=0, description="Offset of the entity's first character in `text`.")
    end: int = Field(ge=1, description="Offset just past its last character (exclusive): 0 <= start < end <= "
                                       "len(text), and the span must cover more than whitespace.")
    type: NonBlank = Field(None, description="Informational entity type, e.g. \"person\"; not used by the model.",
                           json_schema_extra=_optional)  # may be left out, but not null


class EntityPair(_ClosedRequest):
    text: NonBlank = Field(description="The text that mentions both entities.")
    head: EntitySpan = Field(description="The first entity of the relation (character offsets into `text`).")
    tail: EntitySpan = Field(description="The second entity; it must not overlap `head`.")


class RelationRequest(_Request):
    inputs: list[EntityPair] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"Entity pairs, {_INPUTS}: for an endpoint serving a relation model.")


class ExtractionRequest(RootModel[Union[RelationRequest, TextsRequest, TextRequest]]):
    """A relation model takes entity pairs, `{"inputs": [{"text", "head", "tail"}, ...]}`; a key-field model
    takes raw texts, `{"inputs": ["...", ...]}` or `{"text": "..."}`. A request of the other kind than the
    served model's (see `GET /`: relation labels, or `B-`/`I-` field tags) is answered 400, field `inputs`."""

    model_config = ConfigDict(strict=True)


# -- requests: text-writing tasks -------------------------------------------------------------------
Temperature = Annotated[float, Field(ge=0, le=2, description="0 (the default) writes greedily, the most likely "
                                                              "token each time; above 0 (up to 2) samples, more "
                                                              "varied as it rises. Typical 0.7.")]
TopP = Annotated[float, Field(gt=0, le=1, description="Nucleus sampling when temperature > 0: sample from the "
                                                       "smallest set of tokens whose probability reaches top_p "
                                                       "(0 < top_p <= 1; 1 keeps every token).")]


class SummarizationParameters(_ClosedRequest):
    max_new_tokens: int = Field(MAX_SUMMARY_TOKENS, ge=1, le=512, description=f"Most tokens to write per summary "
                                                                         f"(1 .. 512, default {MAX_SUMMARY_TOKENS}).")
    temperature: Temperature = 0.0
    top_p: TopP = 1.0


class GenerationParameters(_ClosedRequest):
    max_new_tokens: int = Field(MAX_TEXT_TOKENS, ge=1, le=512, description=f"Most tokens to write per document "
                                                                      f"(1 .. 512, default {MAX_TEXT_TOKENS}).")
    temperature: Temperature = 0.0
    top_p: TopP = 1.0


Document = Annotated[str, StringConstraints(pattern=r"\S", max_length=MAX_INPUTS_CHARS)]
_PARAMETERS = "Optional; the same for every input of the request."


class DocumentsRequest(_Request):
    inputs: list[Document] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"The documents to summarize, {_INPUTS}, each non-empty and at most {MAX_INPUTS_CHARS:,} "
                    "characters; a document is cut at its end to fit the model's max_seq_length.")
    parameters: SummarizationParameters = Field(default_factory=SummarizationParameters, description=_PARAMETERS)


class DocumentRequest(_Request):
    text: Document = Field(description=f'One document (at most {MAX_INPUTS_CHARS:,} characters): the same as '
                                       '{"inputs": [text]}.')
    parameters: SummarizationParameters = Field(default_factory=SummarizationParameters, description=_PARAMETERS)


class SummarizationRequest(RootModel[Union[DocumentsRequest, DocumentRequest]]):
    """Documents to summarize: `{"inputs": ["...", ...], "parameters": {...}}` or `{"text": "..."}`."""

    model_config = ConfigDict(strict=True)


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


class GenerationRequest(_Request):
    """Documents to write, one per object of named field values: `{"inputs": [{"name": value, ...}, ...],
    "parameters": {...}}`."""

    inputs: list[Fields] = Field(
        min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
        description=f"One object per document to write, {_INPUTS}: at least one named value each; a value is a "
                    "non-empty string, a number, a boolean or a list of them (joined with commas). Use the field "
                    "names the model was trained on (GET / does not list them; see the training dataset). The "
                    "model reads them as `name: value` lines, at most 20,000 characters in all per input.")
    parameters: GenerationParameters = Field(default_factory=GenerationParameters, description=_PARAMETERS)


# -- requests: retrieval ------------------------------------------------------------------------------
K = Field(DEFAULT_K, ge=1, le=MAX_K, description=f"How many documents to return per query (1 .. {MAX_K}, "
                                                  f"default {DEFAULT_K}); fewer when the collection is smaller.")


class QueryRequest(_ClosedRequest):
    query: NonBlank = Field(description="What to search the endpoint's document collection for.")
    k: int = K


class QueriesRequest(_ClosedRequest):
    queries: list[NonBlank] = Field(min_length=1, max_length=MAX_INPUTS_PER_REQUEST,
                                    description=f"Several searches, {_INPUTS}; each gets its own results, in order.")
    k: int = K


class RetrievalRequest(RootModel[Union[QueryRequest, QueriesRequest]]):
    """One search, `{"query": "...", "k": 10}`, or several, `{"queries": ["...", ...], "k": 10}`: exactly one of
    `query` and `queries`, and no other key."""

    model_config = ConfigDict(strict=True)


# -- predictions ----------------------------------------------------------------------------------------
Probability = Annotated[float, Field(ge=0, le=1)]


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


class Entity(BaseModel):
    type: str = Field(description="The entity type (the tag without its B-/I- prefix).")
    text: str = Field(description="The entity's characters: input[start:end].")
    start: int = Field(ge=0, description="Character offset of its first character in the input.")
    end: int = Field(ge=1, description="Character offset just past its last character (exclusive).")
    score: Probability = Field(description="The mean probability of the entity's word tags.")


class EntitiesPrediction(BaseModel):
    entities: list[Entity] = Field(description="The entities found, in text order; words cut off by the model's "
                                               "max_seq_length yield none.")


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


class SummaryPrediction(BaseModel):
    summary: str = Field(description="The summary the model wrote.")


class TextPrediction(BaseModel):
    text: str = Field(description="The document the model wrote.")


class SearchResult(BaseModel):
    doc_id: str = Field(description="The document's id: its doc_id in the training data, else `sha1:` and 16 hex "
                                    "digits of its text.")
    score: float = Field(description="Cosine similarity of the query and the document (-1 .. 1; higher is closer).")
    text: str = Field(max_length=SNIPPET, description=f"The document's first {SNIPPET} characters.")


class SearchPrediction(BaseModel):
    results: list[SearchResult] = Field(description="The k closest documents of the collection, best first.")


# -- responses ------------------------------------------------------------------------------------------
_MODEL_ID = Field(description="The id of the registered model that answered.")
_PREDICTIONS = "One prediction per input, in the order of the inputs (per query for retrieval)."


class ClassificationResponse(BaseModel):
    model_id: str = _MODEL_ID
    predictions: list[Union[LabelPrediction, MultiLabelPrediction]] = Field(
        description=_PREDICTIONS + " A single-label model answers label, score and probabilities; a multi-label "
                                   "model answers labels and probabilities.")


class NerResponse(BaseModel):
    model_id: str = _MODEL_ID
    predictions: list[EntitiesPrediction] = Field(description=_PREDICTIONS)


class ExtractionResponse(BaseModel):
    model_id: str = _MODEL_ID
    predictions: list[Union[RelationPrediction, FieldsPrediction]] = Field(
        description=_PREDICTIONS + " A relation model answers a relation per pair; a key-field model answers fields.")


class SummarizationResponse(BaseModel):
    model_id: str = _MODEL_ID
    predictions: list[SummaryPrediction] = Field(description=_PREDICTIONS)


class GenerationResponse(BaseModel):
    model_id: str = _MODEL_ID
    predictions: list[TextPrediction] = Field(description=_PREDICTIONS)


class RetrievalResponse(BaseModel):
    model_id: str = _MODEL_ID
    predictions: list[SearchPrediction] = Field(description=_PREDICTIONS)


class ModelDescription(BaseModel):
    """What `GET /` answers: the model this endpoint serves."""

    model_id: str = Field(description="The id of the registered model this endpoint serves.")
    task: str = Field(description="Its task.")
    labels: list[str] | None = Field(description="The labels the model predicts: classes (classification), BIO "
                                                 "tags such as `B-person` (ner, key-field extraction) or relations "
                                                 "(relation extraction); null for tasks without labels.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable error code: invalid_request (400), unauthenticated (401), forbidden (403).")
    message: str = Field(description="What is wrong and how to fix it, e.g. the body shape the endpoint takes.")
    tenant_error: bool = Field(description="True when the request (the caller's data) is at fault rather than "
                                           "the platform.")
    field: str = Field(None, description="The request field at fault, e.g. `inputs` or `parameters.temperature`; "
                                         "absent when none is.", json_schema_extra=_optional)
    errors: list[dict[str, str]] = Field(None, description="Each bad field with its message, when several are.",
                                         json_schema_extra=_optional)


class ErrorResponse(BaseModel):
    """Every error: `{"error": {"code", "message", "tenant_error", "field"?}}`."""

    error: ErrorDetail = Field(description="What went wrong.")


# -- the document -----------------------------------------------------------------------------------------
_TEXTS = "Each text is read up to the model's max_seq_length tokens; the rest is cut off."
_TASKS: dict[str, dict[str, Any]] = {
    "classification": {
        "request": ClassificationRequest, "response": ClassificationResponse,
        "summary": "Classify documents",
        "description": "Each document gets the model's label and every label's probability (a multi-label model: "
                       "every label whose probability reaches 0.5). " + _TEXTS,
        "examples": {
            "inputs": {"summary": "Several documents",
                       "value": {"inputs": ["Stocks fell sharply on Monday after the central bank raised rates.",
                                            "Owen scored twice as Newcastle beat Chelsea."]}},
            "text": {"summary": "One document", "value": {"text": "Stocks fell sharply on Monday ..."}},
        },
        "response_example": {"model_id": "model-3f9c2a", "predictions": [
            {"label": "business", "score": 0.97, "probabilities": {"business": 0.97, "politics": 0.02, "sport": 0.01}},
            {"label": "sport", "score": 0.95, "probabilities": {"business": 0.02, "politics": 0.03, "sport": 0.95}}]},
    },
    "ner": {
        "request": NerRequest, "response": NerResponse,
        "summary": "Find named entities",
        "description": "Each text gets its entities with their type and character offsets into the text "
                       "(`text == input[start:end]`). " + _TEXTS,
        "examples": {
            "inputs": {"summary": "Several texts", "value": {"inputs": ["View from the Empire State Building in NYC",
                                                                         "Tim Cook visited Paris"]}},
            "text": {"summary": "One text", "value": {"text": "View from the Empire State Building in NYC"}},
        },
        "response_example": {"model_id": "model-3f9c2a", "predictions": [{"entities": [
            {"type": "facility", "text": "Empire State Building", "start": 14, "end": 35, "score": 0.91},
            {"type": "geo-loc", "text": "NYC", "start": 39, "end": 42, "score": 0.88}]}]},
    },
    "extraction": {
        "request": ExtractionRequest, "response": ExtractionResponse,
        "summary": "Extract relations or key fields",
        "description": "A relation model gets entity pairs and answers the relation between each pair's head and "
                       "tail; a key-field model gets raw texts and answers every field it knows with the spans "
                       "found for it. `GET /` tells which: relation names, or `B-`/`I-` tags over field names.",
        "examples": {
            "relation": {"summary": "Entity pairs (a relation model)",
                         "value": {"inputs": [{"text": "Tim Cook runs Apple.", "head": {"start": 0, "end": 8},
                                               "tail": {"start": 14, "end": 19}}]}},
            "fields": {"summary": "Raw texts (a key-field model)",
                       "value": {"inputs": ['"Numbers are good," said David Naude, economist at Deutsche Bank.']}},
        },
        "response_example": {"model_id": "model-3f9c2a", "predictions": [
            {"relation": "leads", "score": 0.93, "scores": {"no_relation": 0.04, "founded": 0.03, "leads": 0.93},
             "head": {"start": 0, "end": 8, "text": "Tim Cook"}, "tail": {"start": 14, "end": 19, "text": "Apple"}}]},
    },
    "summarization": {
        "request": SummarizationRequest, "response": SummarizationResponse,
        "summary": "Summarize documents",
        "description": "Each document gets a summary written by the model. Requests with the same parameters are "
                       "written together; writing takes longer than a classification, about in proportion to "
                       "max_new_tokens.",
        "examples": {
            "greedy": {"summary": "Greedy, 32 tokens at most",
                       "value": {"inputs": ["Quarterly profits at US media giant TimeWarner jumped 76% ..."],
                                 "parameters": {"max_new_tokens": 32, "temperature": 0, "top_p": 1}}},
            "text": {"summary": "One document, default parameters",
                     "value": {"text": "Quarterly profits at US media giant TimeWarner jumped 76% ..."}},
        },
        "response_example": {"model_id": "model-3f9c2a", "predictions": [{"summary": "Time Warner profits jump"}]},
    },
    "generation": {
        "request": GenerationRequest, "response": GenerationResponse,
        "summary": "Write documents from fields",
        "description": "Each object of named values gets a document written by the model. Requests with the same "
                       "parameters are written together.",
        "examples": {
            "sampled": {"summary": "Sampled, 96 tokens at most",
                        "value": {"inputs": [{"topic": "sport", "headline": "Owen double sinks Chelsea"}],
                                  "parameters": {"max_new_tokens": 96, "temperature": 0.7, "top_p": 0.9}}},
            "greedy": {"summary": "Default parameters (greedy)",
                       "value": {"inputs": [{"topic": "business", "headline": "Ad sales boost Time Warner profit"}]}},
        },
        "response_example": {"model_id": "model-3f9c2a", "predictions": [{"text": "Michael Owen scored twice ..."}]},
    },
    "retrieval": {
        "request": RetrievalRequest, "response": RetrievalResponse,
        "summary": "Search the document collection",
        "description": "Each query gets the k documents of the endpoint's collection (the documents of the dataset "
                       "the model was trained on) closest to it by cosine similarity, best first.",
        "examples": {
            "query": {"summary": "One query", "value": {"query": "interest rates held", "k": 3}},
            "queries": {"summary": "Several queries",
                        "value": {"queries": ["interest rates held", "new games console"], "k": 5}},
        },
        "response_example": {"model_id": "model-3f9c2a", "predictions": [{"results": [
            {"doc_id": "bbc-business-4c1e0f6a2d", "score": 0.83, "text": "UK interest rates have been held ..."},
            {"doc_id": "bbc-business-9a7e3c51f0", "score": 0.71, "text": "The Bank of England has ..."}]}]},
    },
}


def _task(task: str) -> dict[str, Any]:
    try:
        return _TASKS[task]
    except KeyError:
        raise DoctuneError(f"no endpoint schema for task {task!r}; choose one of: {', '.join(sorted(_TASKS))}",
                           "invalid_spec", field="task") from None


def request_model(task: str) -> type[BaseModel]:
    """The pydantic model of ``POST /predict``'s body for ``task``."""
    return _task(task)["request"]


def response_model(task: str) -> type[BaseModel]:
    """The pydantic model of ``POST /predict``'s 200 answer for ``task``."""
    return _task(task)["response"]


def _error(description: str, example: DoctuneError) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description,
            "content": {"application/json": {"example": example.to_dict()}}}


def _bad_request_example(task: str) -> DoctuneError:
    """What the task's plugin really answers to an empty body (the 400 example)."""
    try:
        get_task(task).parse_request({})
    except DoctuneError as exc:
        return exc
    return DoctuneError("request body must be JSON", "invalid_request", field="body")


_UNAUTHENTICATED = DoctuneError("missing API key; send 'Authorization: Bearer <key>'", "unauthenticated")
_FORBIDDEN = DoctuneError("this endpoint belongs to another tenant; use that tenant's API key", "forbidden")


def endpoint_openapi(task: str, title: str) -> dict[str, Any]:
    """The OpenAPI 3 document of an endpoint serving a ``task`` model: ``POST /predict`` with the task's
    request body, its 200 answer and the 400/401/403 errors, ``GET /`` describing the model, and the API
    key as a bearer security scheme. Built by FastAPI from the models above on a throwaway app whose
    routes are typed (the real endpoint reads the raw body; see the module docstring)."""
    from fastapi import Body, Depends, FastAPI
    from fastapi.security import HTTPBearer

    import doctune

    spec = _task(task)
    api_key = HTTPBearer(
        scheme_name="ApiKey", bearerFormat="dtk_<id>_<secret>",
        description="A doctune API key of the tenant that owns the endpoint (or an admin key), sent as "
                    "`Authorization: Bearer dtk_<id>_<secret>`. In /docs, paste the key alone under Authorize.")
    app = FastAPI(
        title=title, version=doctune.__version__,
        description=(
            f"A doctune {task} endpoint. `POST /predict`: {spec['summary'].lower()}. Send JSON "
            f"(`Content-Type: application/json`) with at most "
            f"{MAX_INPUTS_PER_REQUEST} inputs per request; concurrent requests are batched into one model call. "
            "Errors answer `{\"error\": {\"code\", \"message\", \"tenant_error\", \"field\"}}`: 400 for a body the "
            "task does not take (naming the field), 401 without a valid API key, 403 with another tenant's key."))
    request, response = spec["request"], spec["response"]
    errors = {
        400: _error("The body is not what this task takes; `field` names the culprit.", _bad_request_example(task)),
        401: _error("Missing, malformed or revoked API key.", _UNAUTHENTICATED),
        403: _error("The key belongs to another tenant.", _FORBIDDEN),
    }

    answers = {200: {"content": {"application/json": {"example": spec["response_example"]}}}, **errors}

    @app.post("/predict", response_model=response, responses=answers, dependencies=[Depends(api_key)],
              summary=spec["summary"], description=spec["description"], operation_id="predict",
              response_description="One prediction per input.")
    async def predict(body: Annotated[request, Body(openapi_examples=spec["examples"])]) -> Any:  # type: ignore
        raise NotImplementedError  # documentation only

    @app.get("/", response_model=ModelDescription, responses={k: errors[k] for k in (401, 403)},
             dependencies=[Depends(api_key)], summary="Describe the served model", operation_id="describe",
             description="The model's id, task and labels.", response_description="The served model.")
    async def describe() -> Any:
        raise NotImplementedError  # documentation only

    doc = app.openapi()
    # the real endpoint answers a bad body with 400 (the plugin's error), never FastAPI's 422
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        doc["components"]["schemas"].pop(name, None)
    return doc



def multiplexed_openapi(task: str, title: str) -> dict[str, Any]:
    """:func:`endpoint_openapi` for a multiplexed endpoint: every request body also takes ``model``,
    the model version to answer with (see ``doctune.serve.multiplex``)."""
    doc = endpoint_openapi(task, title)
    schemas = doc.get("components", {}).get("schemas", {})

    def objects(schema: dict[str, Any]) -> list[dict[str, Any]]:
        if "$ref" in schema:
            return objects(schemas[schema["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in schema or "oneOf" in schema:
            return [o for s in schema.get("anyOf", schema.get("oneOf", [])) for o in objects(s)]
        return [schema] if "properties" in schema else []

    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    for schema in objects(body):
        schema["properties"]["model"] = {
            "type": "string", "minLength": 1, "maxLength": 64, "title": "Model",
            "description": "The model version to answer with: one of this tenant's adapter models of the same task "
                           "and base model (404 for a model the tenant does not have). Default: the endpoint's model."}
    return doc
