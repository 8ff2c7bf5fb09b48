"""The API's meters, installed by ``create_app``: a hard cap on every request body (413) and
rate limits per client address and per API key (429 with ``Retry-After``).

The body cap counts the bytes as they arrive, so a body with no ``Content-Length`` (chunked)
is cut off at the cap like one that declares its length; a multipart upload may be as large as
``max_upload_bytes`` (plus 1 MiB of multipart framing), any other body ``max_json_bytes``.
The address limit is checked here, before the key is; the key's limit after the key is verified
(``doctune.api.deps.caller``), so nobody can spend another key's budget by sending its public id.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi.responses import JSONResponse

from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.metering import RateLimited, RateLimiter

__all__ = ["BodyLimit", "RateLimitByAddress", "api_rate_limiter", "error_response"]

MULTIPART_FRAMING = 1024 * 1024
UNMETERED_PATHS = ("/healthz",)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def error_response(exc: DoctuneError) -> JSONResponse:
    """The API's JSON error, with ``Retry-After`` when the error is a rate limit."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)


def api_rate_limiter(s: Settings) -> RateLimiter:
    return RateLimiter("api", s.rate_limit_per_key, s.rate_limit_per_address, s.rate_limit_storage)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BodyLimit:
    """ASGI middleware: 413 for a body over its cap, whether declared (``Content-Length``) or
    counted while it streams in; the app's own answer to a cut-off body is replaced by the 413."""

    def __init__(self, app: Any, settings: Settings, own_limits: dict[str, tuple[int, str]] | None = None) -> None:
        self.app, self.settings, self.own_limits = app, settings, own_limits or {}

    def cap_of(self, scope: Scope) -> tuple[int, str]:
        """(the byte cap, the setting that raises it) for this request: a path with its own limit
        (a base model's upload) has it, a multipart upload the upload limit, any other body the JSON limit."""
        if scope.get("path") in self.own_limits:
            return self.own_limits[scope["path"]]
        if (_header(scope, b"content-type") or "").lower().startswith("multipart/form-data"):
            return self.settings.max_upload_bytes + MULTIPART_FRAMING, "DOCTUNE_MAX_UPLOAD_BYTES"
        return self.settings.max_json_bytes, "DOCTUNE_MAX_JSON_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap, setting = self.cap_of(scope)
        too_large = DoctuneError(f"request body is over the {cap}-byte limit for this request; send less, or ask the "
                                 f"platform admin to raise {setting}", "too_large", field="body")
        length = _header(scope, b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > cap):
            return await error_response(too_large)(scope, receive, send)
        state = {"received": 0, "over": False, "started": False}

        async def capped_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > cap:
                    state["over"] = True
                    raise too_large
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if state["over"] and not state["started"]:
                return  # the app's answer to a body cut off at the cap: the 413 goes instead
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except DoctuneError:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await error_response(too_large)(scope, receive, send)


class RateLimitByAddress:
    """ASGI middleware: 429 with ``Retry-After`` for a client address over ``rate_limit_per_address``
    (every route but /healthz, before the key is checked: it meters guessing keys too)."""

    def __init__(self, app: Any, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in UNMETERED_PATHS:
            client = scope.get("client")
            try:
                self.limiter.check(None, client[0] if client else None)
            except RateLimited as exc:
                return await error_response(exc)(scope, receive, send)
        await self.app(scope, receive, send)
