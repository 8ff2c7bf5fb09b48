"""Errors to HTTP: every error the API answers is ``{"error": {"code", "message", "field"?,
"errors"?, "tenant_error"}}`` with the status of ``doctune.errors.HTTP_STATUS``; never a stack
trace (a rate limit's 429 also carries ``Retry-After``, and so does the 503 of a metadata database
that stayed busy or unreachable past its wait). Installed by ``create_app``; :data:`ERROR_RESPONSES` documents them on every operation."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from doctune.api.metering import error_response
from doctune.api.schemas import ErrorOut
from doctune.errors import DoctuneError, from_validation_error

log = logging.getLogger("doctune.api")

ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorOut, "description": what}
    for status, what in (
        (400, "Bad request: a malformed body, cursor or field (`error.field` names it)."),
        (401, "No key, or a malformed, wrong or revoked one."),
        (403, "The key may not do this (another tenant, a viewer writing, not an admin)."),
        (404, "No such object (another tenant's ids read as not found), or no such route."),
        (409, "Conflicts with the object's state (e.g. in use, already finished)."),
        (413, "The body is over its size limit (uploads: DOCTUNE_MAX_UPLOAD_BYTES; other bodies: DOCTUNE_MAX_JSON_BYTES)."),
        (422, "Invalid spec or parameters; `error.errors` lists every bad field."),
        (429, "Over a tenant quota, or over a rate limit (then `Retry-After` says when to retry)."),
        (503, "The cluster, the object store or the metadata database did not answer (the database: with `Retry-After`)."),
    )
}

_HTTP_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict", 413: "too_large"}


async def doctune_error(_: Request, exc: DoctuneError) -> JSONResponse:
    return error_response(exc)


async def request_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(from_validation_error(exc, "invalid_request").to_dict(), status_code=422)


async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, method not allowed) in the same shape."""
    code = _HTTP_CODES.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "internal")
    message = str(exc.detail) if exc.status_code != 404 else "no such route; see /docs for the API"
    return JSONResponse(DoctuneError(message, code).to_dict(), status_code=exc.status_code)


DB_RETRY_AFTER_S = 2


async def database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
    """The metadata database stayed locked (SQLite waits ``timeout`` seconds first) or did not
    answer (PostgreSQL down): nothing the caller did wrong, so a 503 to retry, never a 500."""
    log.warning("metadata database unavailable: %s", exc.orig if exc.orig is not None else exc, exc_info=exc)
    err = DoctuneError(f"the metadata database is busy or unreachable; retry in {DB_RETRY_AFTER_S} seconds "
                       "(a create sent again with the same Idempotency-Key is not made twice)", "unavailable")
    return JSONResponse(err.to_dict(), status_code=503, headers={"Retry-After": str(DB_RETRY_AFTER_S)})


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OperationalError):  # raised outside a route (a middleware): the same 503
        return await database_unavailable(request, exc)
    log.exception("internal error")
    err = DoctuneError("internal error; the platform logged the details", "internal")
    return JSONResponse(err.to_dict(), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DoctuneError, doctune_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(Exception, internal_error)
