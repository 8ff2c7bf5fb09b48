"""The OpenAPI document of a task endpoint, built from its task plugin's request and response models.

``doctune.serve.app.TaskEndpoint`` reads ``POST /predict``'s body as raw JSON and lets the
task plugin's ``parse_request`` (and ``check_request``) validate it, answering 400 with a
JSON error naming the field; so FastAPI alone would document no body at all. Each task
plugin describes the bodies it accepts and the predictions its ``predict`` returns as
pydantic models with examples (``request_model``, ``response_model``, ``request_examples``,
``response_example``, ``endpoint_summary``, ``endpoint_description``; see
``doctune.tasks.serving``), and :func:`endpoint_openapi` builds from them the OpenAPI 3
document of an endpoint of that task. Each replica builds its task's document when it starts
and FastAPI serves it at ``<route>/openapi.json`` and ``<route>/docs`` (the ingress app's
``openapi`` returns it; see ``doctune.serve.app``). What is generic lives here: the error
body, ``GET /``'s model description, the API key and the 400/401/403 answers. The plugins
stay the validators at runtime; tests/unit/test_endpoint_schemas.py checks the models against
them.
"""

from typing import Annotated, Any

from pydantic import BaseModel, Field

from doctune.errors import DoctuneError
from doctune.tasks import TaskPlugin, get_task
from doctune.tasks.serving import MAX_INPUTS_PER_REQUEST, optional_field

__all__ = ["ErrorResponse", "ModelDescription", "endpoint_openapi", "multiplexed_openapi", "request_model",
           "response_model"]


class ModelDescription(BaseModel):
    """What `GET /` answers: the model this endpoint serves."""

    model_id: str = Field(description="The id of the registered model this endpoint serves.")
    task: str = Field(description="Its task.")
    labels: list[str] | None = Field(description="The labels the model predicts, as its task names them: e.g. "
                                                 "classes, BIO tags such as `B-person`, or relations; null for tasks "
                                                 "without labels.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable error code: invalid_request (400), unauthenticated (401), forbidden (403).")
    message: str = Field(description="What is wrong and how to fix it, e.g. the body shape the endpoint takes.")
    tenant_error: bool = Field(description="True when the request (the caller's data) is at fault rather than "
                                           "the platform.")
    field: str = Field(None, description="The request field at fault, e.g. `inputs` or `parameters.temperature`; "
                                         "absent when none is.", json_schema_extra=optional_field)
    errors: list[dict[str, str]] = Field(None, description="Each bad field with its message, when several are.",
                                         json_schema_extra=optional_field)


class ErrorResponse(BaseModel):
    """Every error: `{"error": {"code", "message", "tenant_error", "field"?}}`."""

    error: ErrorDetail = Field(description="What went wrong.")


def _plugin(task: str | TaskPlugin) -> TaskPlugin:
    return get_task(task) if isinstance(task, str) else task


def request_model(task: str | TaskPlugin) -> type[BaseModel]:
    """The pydantic model of ``POST /predict``'s body for ``task`` (a task name or its plugin)."""
    return _plugin(task).request_model


def response_model(task: str | TaskPlugin) -> type[BaseModel]:
    """The pydantic model of ``POST /predict``'s 200 answer for ``task`` (a task name or its plugin)."""
    return _plugin(task).response_model


def _error(description: str, example: DoctuneError) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description,
            "content": {"application/json": {"example": example.to_dict()}}}


def _bad_request_example(plugin: TaskPlugin) -> DoctuneError:
    """What the task's plugin really answers to an empty body (the 400 example)."""
    try:
        plugin.parse_request({})
    except DoctuneError as exc:
        return exc
    return DoctuneError("request body must be JSON", "invalid_request", field="body")


_UNAUTHENTICATED = DoctuneError("missing API key; send 'Authorization: Bearer <key>'", "unauthenticated")
_FORBIDDEN = DoctuneError("this endpoint belongs to another tenant; use that tenant's API key", "forbidden")


def endpoint_openapi(task: str | TaskPlugin, title: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3 document of an endpoint serving a model of ``task`` (a task name or its plugin):
    ``POST /predict`` with the plugin's request body, its 200 answer and the 400/401/403 errors,
    ``GET /`` describing the model, and the API key as a bearer security scheme. Built by FastAPI from
    the plugin's models on a throwaway app whose routes are typed (the real endpoint reads the raw body;
    see the module docstring). ``title`` defaults to "doctune <task> endpoint"."""
    from fastapi import Body, Depends, FastAPI
    from fastapi.security import HTTPBearer

    import doctune

    plugin = _plugin(task)
    name = plugin.name
    api_key = HTTPBearer(
        scheme_name="ApiKey", bearerFormat="dtk_<id>_<secret>",
        description="A doctune API key of the tenant that owns the endpoint (or an admin key), sent as "
                    "`Authorization: Bearer dtk_<id>_<secret>`. In /docs, paste the key alone under Authorize.")
    app = FastAPI(
        title=title or f"doctune {name} endpoint", version=doctune.__version__,
        description=(
            f"A doctune {name} endpoint. `POST /predict`: {plugin.endpoint_summary.lower()}. Send JSON "
            f"(`Content-Type: application/json`) with at most "
            f"{MAX_INPUTS_PER_REQUEST} inputs per request; concurrent requests are batched into one model call. "
            "Errors answer `{\"error\": {\"code\", \"message\", \"tenant_error\", \"field\"}}`: 400 for a body the "
            "task does not take (naming the field), 401 without a valid API key, 403 with another tenant's key."))
    request, response = plugin.request_model, plugin.response_model
    errors = {
        400: _error("The body is not what this task takes; `field` names the culprit.", _bad_request_example(plugin)),
        401: _error("Missing, malformed or revoked API key.", _UNAUTHENTICATED),
        403: _error("The key belongs to another tenant.", _FORBIDDEN),
    }

    answers = {200: {"content": {"application/json": {"example": plugin.response_example}}}, **errors}

    @app.post("/predict", response_model=response, responses=answers, dependencies=[Depends(api_key)],
              summary=plugin.endpoint_summary, description=plugin.endpoint_description, operation_id="predict",
              response_description="One prediction per input.")
    async def predict(body: Annotated[request, Body(openapi_examples=plugin.request_examples)]) -> Any:  # type: ignore
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


def multiplexed_openapi(task: str | TaskPlugin, title: str | None = None) -> dict[str, Any]:
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
