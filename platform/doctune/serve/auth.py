"""The API-key check every endpoint replica makes, against the metadata store directly.

A replica keeps a key it has verified for ``CACHE_S`` seconds, so a request costs no
database read on a hit; a revoked key stops working within that time.
"""

from __future__ import annotations

import time

from doctune.errors import DoctuneError
from doctune.store.db import Database
from doctune.store.keys import Principal, verify_key

__all__ = ["KeyChecker"]

CACHE_S = 30.0


class KeyChecker:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Principal]] = {}

    def principal(self, authorization: str | None) -> Principal:
        """Who sent ``authorization``; 401 for a missing, malformed, wrong or revoked key."""
        key = authorization or ""
        hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        who = verify_key(self.db, authorization)
        self._cache[key] = (time.monotonic() + CACHE_S, who)
        return who

    def check_endpoint_access(self, authorization: str | None, tenant_id: str) -> Principal:
        """The caller, if it may use an endpoint of ``tenant_id`` (that tenant's key, or an admin's); else 403."""
        who = self.principal(authorization)
        if not who.is_admin and who.tenant_id != tenant_id:
            raise DoctuneError("this endpoint belongs to another tenant; use that tenant's API key", "forbidden")
        return who
