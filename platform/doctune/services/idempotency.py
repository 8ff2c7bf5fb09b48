"""Idempotency keys: a create request (``POST`` of a job, sweep, dataset, deployment, key or
tenant) sent again with the same ``Idempotency-Key`` gets the first request's answer back
instead of creating a second thing.

The API's middleware (:mod:`doctune.api.idempotency`) calls :func:`claim_key` before the route
runs: the first request inserts the row (unique per tenant and key, so two racing repeats
cannot both claim it), later ones get what it holds. :func:`remember_answer` stores a success;
:func:`forget_key` drops the claim when the request failed, so a corrected retry runs again.
An answer that carries an API key's secret is stored without it: the secret is shown once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.store.db import IdempotencyKey

ADMIN_SCOPE = "_admin"  # an admin key's idempotency keys (it has no tenant)
MAX_KEY_LENGTH = 255
SECRET_FIELD = "api_key"  # KeyCreated, TenantCreated: never stored


@dataclass(frozen=True)
class Claim:
    """What :func:`claim_key` found: ``new`` (this request runs), or the first request's answer."""

    new: bool
    status_code: int | None = None
    response: Any = None


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise DoctuneError(f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable characters (a UUID is typical); "
                           f"got {len(key)}", "invalid_request", field="Idempotency-Key")
    return key


def scope_of(caller: Principal) -> str:
    return caller.tenant_id or ADMIN_SCOPE


def claim_key(p: Platform, caller: Principal, key: str, method: str, path: str, request_hash: str) -> Claim:
    """Claim ``key`` for this request, or return the answer of the request that claimed it first.
    The same key with another request (route or body) is a 400; while the first is still being
    answered, a 409 to retry shortly."""
    scope = scope_of(caller)
    try:
        with p.db.session() as s:
            s.add(IdempotencyKey(tenant_id=scope, key=check_key(key), method=method, path=path,
                                 request_hash=request_hash))
        return Claim(new=True)
    except IntegrityError:
        pass
    with p.db.session() as s:
        row = s.execute(select(IdempotencyKey).where(IdempotencyKey.tenant_id == scope,
                                                     IdempotencyKey.key == key)).scalar_one()
    if (row.method, row.path, row.request_hash) != (method, path, request_hash):
        raise DoctuneError(f"Idempotency-Key {key!r} was used for a different request ({row.method} {row.path}); "
                           "send a new key for a new request", "invalid_request", field="Idempotency-Key")
    if row.status_code is None:
        raise DoctuneError(f"the first request with Idempotency-Key {key!r} is still being answered; retry in a moment",
                           "conflict", field="Idempotency-Key")
    if isinstance(row.response, dict) and row.response.get(SECRET_FIELD) == "":
        ident = row.response.get("id") or (row.response.get("tenant") or {}).get("id")
        raise DoctuneError(f"the request with Idempotency-Key {key!r} already created {ident}; its secret key was shown "
                           "only once and is not stored. Revoke that key (DELETE /v1/keys/ID) and create another",
                           "conflict", field="Idempotency-Key")
    return Claim(new=False, status_code=row.status_code, response=row.response)


def remember_answer(p: Platform, caller: Principal, key: str, status_code: int, response: Any) -> None:
    """Store a successful answer for repeats (an API key's secret left out)."""
    if isinstance(response, dict) and SECRET_FIELD in response:
        response = {**response, SECRET_FIELD: ""}
    with p.db.session() as s:
        row = s.execute(select(IdempotencyKey).where(IdempotencyKey.tenant_id == scope_of(caller),
                                                     IdempotencyKey.key == key)).scalar_one()
        row.status_code, row.response = status_code, response


def forget_key(p: Platform, caller: Principal, key: str) -> None:
    """Drop a claim whose request failed: a retry with the same key runs again."""
    with p.db.session() as s:
        s.execute(delete(IdempotencyKey).where(IdempotencyKey.tenant_id == scope_of(caller), IdempotencyKey.key == key))
