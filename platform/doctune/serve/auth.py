"""The checks every endpoint replica makes before it reads a request: the client address's
and the key's rate limits (429 with ``Retry-After``), and the API key against the metadata store.

A replica keeps the keys it verified (``doctune.store.keys.KeyVerifier``) until a revocation
anywhere bumps the revocation epoch, which it re-reads at most every second: a revoked key stops
working within 2 s. A key the replica has not seen, or an epoch due to be re-read, costs a
database read, so that check runs in a worker thread and never stalls the replica's event loop
(other requests, the batching of the model's calls).
"""

from __future__ import annotations

import asyncio

from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.metering import RateLimiter
from doctune.store.keys import KeyVerifier, Principal

__all__ = ["KeyChecker", "endpoint_rate_limiter"]


def endpoint_rate_limiter(s: Settings, door: str) -> RateLimiter:
    """The rate limits of one endpoint's replica (``door``: its counters' name)."""
    return RateLimiter(door, s.endpoint_rate_limit_per_key, s.endpoint_rate_limit_per_address, s.rate_limit_storage,
                       settings=("endpoint_rate_limit_per_key", "endpoint_rate_limit_per_address"))


class KeyChecker:
    def __init__(self, verifier: KeyVerifier, limiter: RateLimiter | None = None) -> None:
        self.verifier, self.limiter = verifier, limiter

    async def principal(self, authorization: str | None) -> Principal:
        """Who sent ``authorization``; 401 for a missing, malformed, wrong or revoked key."""
        who = self.verifier.cached(authorization)
        if who is None:
            who = await asyncio.to_thread(self.verifier.verify, authorization)
        return who

    async def check_endpoint_access(self, authorization: str | None, tenant_id: str,
                                    address: str | None = None) -> Principal:
        """The caller, if it may use an endpoint of ``tenant_id`` (that tenant's key, or an admin's) and
        is within its rate limits: 429 past the address's or the key's limit, 401 for a bad key, 403
        for another tenant's key."""
        if self.limiter is not None:
            self.limiter.check(None, address)
        who = await self.principal(authorization)
        if self.limiter is not None:
            self.limiter.check(who.key_id, None)
        if not who.is_admin and who.tenant_id != tenant_id:
            raise DoctuneError("this endpoint belongs to another tenant; use that tenant's API key", "forbidden")
        return who
