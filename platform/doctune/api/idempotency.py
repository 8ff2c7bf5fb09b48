"""``Idempotency-Key`` on the create routes: a repeated request gets the first one's answer.

:class:`IdempotencyMiddleware` is a plain ASGI middleware. For a ``POST`` to one of
:data:`CREATE_ROUTES` (or an append of a dataset version) that carries the header, it reads the body, authenticates the caller (a
request with a bad key passes through to get its 401), hashes the request (method, path, query,
body; a multipart boundary counts as one fixed token, since a retrying client draws a new one) and
claims the key through :mod:`doctune.services.idempotency`. A first request then runs and its
success is stored; a repeat is answered from the store with ``Idempotent-Replayed: true``. A
request without the header runs as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from doctune.errors import DoctuneError
from doctune.services import Principal
from doctune.services import idempotency as idem_svc
from doctune.services import tenants as tenants_svc

CREATE_ROUTES = frozenset({"/v1/jobs", "/v1/sweeps", "/v1/datasets", "/v1/deployments", "/v1/keys", "/v1/tenants"})
HEADER = b"idempotency-key"
APPEND_ROUTE = re.compile(r"/v1/datasets/[^/]+/versions")  # an append creates a dataset version


def is_create_route(path: str) -> bool:
    path = path.rstrip("/")
    return path in CREATE_ROUTES or APPEND_ROUTE.fullmatch(path) is not None


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or []:
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def request_hash(scope: Scope, body: bytes) -> str:
    ctype = _header(scope, b"content-type") or ""
    if "boundary=" in ctype:
        boundary = ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode("latin-1")
        if boundary:
            body = body.replace(boundary, b"BOUNDARY")
    h = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string") or b"", body):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


async def _send_json(send: Send, status: int, body: Any, extra: list[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *extra]})
    await send({"type": "http.response.body", "body": raw})


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, HEADER) if scope["type"] == "http" else None
        if key is None or scope["method"] != "POST" or not is_create_route(scope["path"]):
            return await self.app(scope, receive, send)
        body = await self._read_body(receive)
        if body is None:
            err = DoctuneError(f"request body is over the {self.max_body_bytes}-byte limit", "too_large", field="body")
            return await _send_json(send, 413, err.to_dict())
        replay = _replay(body, receive)
        p = scope["app"].state.platform
        try:
            caller = await anyio.to_thread.run_sync(tenants_svc.authenticate, p, _header(scope, b"authorization"))
        except DoctuneError:
            return await self.app(scope, replay, send)  # the route answers 401
        try:
            claim = await anyio.to_thread.run_sync(idem_svc.claim_key, p, caller, key, scope["method"],
                                                   scope["path"].rstrip("/"), request_hash(scope, body))
        except DoctuneError as exc:
            return await _send_json(send, exc.http_status, exc.to_dict())
        if not claim.new:
            return await _send_json(send, claim.status_code, claim.response, [(b"idempotent-replayed", b"true")])
        await self._run_first(scope, replay, send, p, caller, key)

    async def _run_first(self, scope: Scope, receive: Receive, send: Send, p: Any, caller: Principal, key: str) -> None:
        """Run the first request with this key; store its answer if it succeeded, else drop the claim."""
        status, chunks = 0, []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await anyio.to_thread.run_sync(idem_svc.forget_key, p, caller, key)
            raise
        try:
            answer = json.loads(b"".join(chunks)) if 200 <= status < 300 else None
        except ValueError:
            answer = None
        if answer is None:
            await anyio.to_thread.run_sync(idem_svc.forget_key, p, caller, key)
        else:
            await anyio.to_thread.run_sync(idem_svc.remember_answer, p, caller, key, status, answer)

    async def _read_body(self, receive: Receive) -> bytes | None:
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)


def _replay(body: bytes, upstream: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app, then passes on what the server
    sends next (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive
