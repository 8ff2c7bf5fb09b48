"""What routes depend on, as typed aliases: the Platform, the calling principal, a page of a
list, and JSON bodies that are specs (:class:`SpecBody`).

A spec body is read by hand rather than by FastAPI so that the platform's rule holds: the
body's ``tenant`` defaults to the caller's, and naming another tenant is a 403 *before* any
other field is validated (a foreign tenant learns nothing from field errors). The OpenAPI
document still shows the spec as the request body: :func:`document_spec_bodies` adds it.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Iterator

from fastapi import Depends, Query, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ValidationError

from doctune.errors import DoctuneError, from_validation_error
from doctune.metering import parse_json
from doctune.services import Platform, Principal
from doctune.services import tenants as tenants_svc
from doctune.services.tenants import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE


def current_platform(request: Request) -> Platform:
    """The one Platform of this app (``create_app`` puts it on ``app.state``)."""
    return request.app.state.platform


CurrentPlatform = Annotated[Platform, Depends(current_platform)]

api_key_header = APIKeyHeader(name="Authorization", auto_error=False, scheme_name="ApiKey",
                              description="`Bearer <api key>`; keys look like dtk_<id>_<secret>.")


def caller(request: Request, p: CurrentPlatform,
           authorization: Annotated[str | None, Depends(api_key_header)]) -> Principal:
    """Who is calling; 401 for a missing, malformed, wrong or revoked key; 429 (``Retry-After``)
    for a key over ``rate_limit_per_key`` (counted once the key is verified: a key's public id
    alone cannot spend its budget)."""
    who = tenants_svc.authenticate(p, authorization)
    request.app.state.rate_limiter.check(who.key_id, None)
    return who


CurrentCaller = Annotated[Principal, Depends(caller)]


def admin_caller(who: CurrentCaller) -> Principal:
    """The caller, who must be the platform admin (403 otherwise, before any body is read)."""
    if not who.is_admin:
        raise DoctuneError("only a platform admin can do this; use the admin key `doctune up` printed", "forbidden")
    return who


AdminCaller = Annotated[Principal, Depends(admin_caller)]


class PageParams:
    """``?limit=`` and ``?cursor=`` of every list."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[str | None, Query(max_length=512, description="A page's next_cursor, for the page after it.")] = None,
    ) -> None:
        self.limit = limit
        self.cursor = cursor


Paging = Annotated[PageParams, Depends()]
TaskFilter = Annotated[str | None, Query(description="Only this task's (a name from GET /v1/tasks).")]


# ------------------------------------------------------------------ spec bodies
def parse_body(model: type[BaseModel], body: Any, code: str = "invalid_spec") -> Any:
    """``body`` validated as ``model``: one DoctuneError listing every bad field."""
    if not isinstance(body, dict):
        raise DoctuneError("request body must be a JSON object", "invalid_request")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc, code) from None


def claim_tenant(body: Any, who: Principal) -> Any:
    """Default a body's tenant to the caller's, and refuse another tenant's before validating
    anything else: a foreign tenant learns nothing from field errors."""
    if not isinstance(body, dict):
        raise DoctuneError("request body must be a JSON object", "invalid_request")
    if "tenant" not in body and who.tenant_id:
        body = {**body, "tenant": who.tenant_id}
    if isinstance(body.get("tenant"), str):
        tenants_svc.check_tenant_access(who, body["tenant"], write=True)
    return body


async def read_json(request: Request, *, required: bool) -> Any:
    """The request's JSON body (400 when it is not JSON or nests deeper than ``MAX_JSON_DEPTH``; its
    size is capped by ``doctune.api.metering.BodyLimit``); an empty body is ``{}`` unless ``required``."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise DoctuneError("request body is empty; send a JSON object", "invalid_request")
        return {}
    return parse_json(raw, "body")


class SpecBody:
    """A dependency: the JSON body as ``model``. ``claims_tenant``: the body's tenant defaults to the
    caller's and another tenant's is refused first; ``parse``: the validator (default: the model's,
    every bad field reported under ``code``); ``required``: False takes no body as ``{}``."""

    def __init__(self, model: type[BaseModel], *, claims_tenant: bool = True, parse: Callable[[Any], Any] | None = None,
                 code: str = "invalid_spec", required: bool = True) -> None:
        self.model, self.claims_tenant, self.required = model, claims_tenant, required
        self.parse = parse or (lambda body: parse_body(model, body, code))

    async def __call__(self, request: Request, who: CurrentCaller) -> Any:
        body = await read_json(request, required=self.required)
        if self.claims_tenant:
            body = claim_tenant(body, who)
        return self.parse(body)

    def openapi(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the operation's requestBody, the component schemas it refers to)."""
        schema = self.model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        components = schema.pop("$defs", {})
        if self.claims_tenant and "tenant" in schema.get("required", []):
            schema["required"] = [f for f in schema["required"] if f != "tenant"]
            tenant = schema["properties"]["tenant"]
            tenant["description"] = (tenant.get("description", "") + " Defaults to the caller's tenant.").strip()
        components[self.model.__name__] = schema
        ref = {"$ref": f"#/components/schemas/{self.model.__name__}"}
        return {"required": self.required, "content": {"application/json": {"schema": ref}}}, components


def _spec_bodies(dependant) -> Iterator[SpecBody]:
    for dep in dependant.dependencies:
        if isinstance(dep.call, SpecBody):
            yield dep.call
        yield from _spec_bodies(dep)


def document_spec_bodies(openapi: dict[str, Any], routes: list) -> dict[str, Any]:
    """Show each route's spec body in the OpenAPI document as its request body."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        for body in _spec_bodies(route.dependant):
            request_body, components = body.openapi()
            for name, schema in components.items():
                if schemas.setdefault(name, schema) != schema:
                    raise RuntimeError(f"two different schemas are both named {name} in the OpenAPI document")
            for method in route.methods:
                openapi["paths"][route.path_format][method.lower()]["requestBody"] = request_body
    return openapi
