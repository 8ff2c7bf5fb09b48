"""One root error type for everything doctune reports to a user.

Raised anywhere (services, task plugins, the training driver); the API turns it
into ``{"error": {"code", "message", "field"?}}`` with the status from
``HTTP_STATUS``; the CLI prints it and exits non-zero. Errors caused by a
tenant's own data or settings carry ``tenant_error=True`` so the console can say
"your dataset has a problem" rather than "the platform failed". It is a plain
picklable exception so it crosses Ray process boundaries intact.
"""

from __future__ import annotations

from typing import Any

HTTP_STATUS: dict[str, int] = {
    "invalid_spec": 422,
    "invalid_dataset": 422,
    "invalid_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "quota_exceeded": 429,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}

_TENANT_CODES = {"invalid_spec", "invalid_dataset", "invalid_request", "too_large", "quota_exceeded", "rate_limited"}


class DoctuneError(Exception):
    """An error with a stable ``code``, a message that says how to fix it, and
    optionally the ``field`` (or list of ``errors``) it is about."""

    def __init__(
        self,
        message: str,
        code: str = "internal",
        *,
        field: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        tenant_error: bool | None = None,
    ) -> None:
        super().__init__(message, code, field, errors, tenant_error)
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        self.message = message
        self.code = code
        self.field = field
        self.errors = errors or []
        self.tenant_error = code in _TENANT_CODES if tenant_error is None else tenant_error

    def __str__(self) -> str:
        return self.message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "tenant_error": self.tenant_error}
        if self.field:
            body["field"] = self.field
        if self.errors:
            body["errors"] = self.errors
        return {"error": body}


def from_validation_error(exc: Any, code: str = "invalid_spec", prefix: str = "") -> DoctuneError:
    """Turn a pydantic ``ValidationError`` into one DoctuneError listing every bad field."""
    errors = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling against the spec reference"
        msg = msg.removeprefix("Value error, ")
        errors.append({"field": loc or "(root)", "message": msg})
    lines = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    first = errors[0]["field"] if errors else None
    return DoctuneError(f"{len(errors)} invalid field(s): {lines}", code, field=first, errors=errors)


def error_from_response(status_code: int, text: str) -> DoctuneError:
    """The DoctuneError an API answer of ``status_code`` (400 or more) carries in its body
    (``{"error": {...}}``); a body that is not one becomes an ``internal`` error quoting it."""
    import json

    try:
        err = json.loads(text)["error"]
        err["message"]
    except Exception:
        return DoctuneError(f"HTTP {status_code}: {text[:500]}", "internal")
    code = err.get("code") if err.get("code") in HTTP_STATUS else "internal"
    return DoctuneError(err.get("message", ""), code, field=err.get("field"), errors=err.get("errors"))
