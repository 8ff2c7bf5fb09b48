"""Every door's meters: how deep a JSON body may nest, and how many requests one API key or
one client address may make in a period (a 429 with ``Retry-After`` past it).

The API (``doctune.api.main``: its body-size limit and rate limits) and every endpoint replica
(``doctune.serve.app``) use these, so that a request is metered the same way at both doors.
Limits come from :class:`~doctune.config.Settings` (``rate_limit_per_key`` and the like) and are
counted by the `limits <https://limits.readthedocs.io>`_ library, in this process's memory by
default or in a shared store (``rate_limit_storage``, e.g. ``redis://host:6379``).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from doctune.errors import DoctuneError

__all__ = ["MAX_JSON_DEPTH", "RateLimited", "RateLimiter", "check_json_depth", "parse_json"]

MAX_JSON_DEPTH = 32  # nested objects and arrays in one body or dataset record


class RateLimited(DoctuneError):
    """429: over a rate limit; ``retry_after`` is the whole seconds until the next request may pass."""

    def __init__(self, message: str, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, "rate_limited", field=field)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return RateLimited, (self.message, self.retry_after, self.field)


def check_json_depth(value: Any, field: str = "body", max_depth: int = MAX_JSON_DEPTH) -> None:
    """400 when ``value`` has objects or arrays nested more than ``max_depth`` deep (checked
    without recursion, so no depth can overflow the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > max_depth:
            raise DoctuneError(f"{field} nests objects or arrays more than {max_depth} deep; flatten it",
                               "invalid_request", field=field)
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def parse_json(raw: bytes | str, field: str = "body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``raw`` parsed as JSON: 400 naming ``field`` when it is not JSON or nests too deep (a
    nesting so deep that the parser itself gives up is the same 400, never a 500)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise DoctuneError(f"{field} nests objects or arrays more than {max_depth} deep; flatten it",
                           "invalid_request", field=field) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DoctuneError(f"{field} is not valid JSON ({exc}); send one JSON value", "invalid_request", field=field) from None
    check_json_depth(value, field, max_depth)
    return value


class RateLimiter:
    """Requests per API key and per client address at one door (``door`` names its counters).

    ``per_key`` and ``per_address`` are rates like ``"600/minute"`` (``""``: no limit);
    ``settings`` name the settings they came from, for the message of a 429."""

    def __init__(self, door: str, per_key: str, per_address: str, storage_uri: str = "memory://",
                 settings: tuple[str, str] = ("rate_limit_per_key", "rate_limit_per_address")) -> None:
        from limits import parse, storage, strategies

        self.door = door
        self.storage = storage.storage_from_string(storage_uri or "memory://")
        try:  # a sliding window: no double burst at a window's edge
            self.strategy: Any = strategies.MovingWindowRateLimiter(self.storage)
        except NotImplementedError:  # a store that keeps fixed windows only (memcached)
            self.strategy = strategies.FixedWindowRateLimiter(self.storage)
        self.rules = [(parse(rate) if rate else None, what, setting)
                      for rate, what, setting in ((per_key, "key", settings[0]), (per_address, "address", settings[1]))]

    def check(self, key_id: str | None, address: str | None) -> None:
        """Count one request of ``key_id`` from ``address``; 429 (:class:`RateLimited`) past either limit.
        A request with no key is counted by its address only."""
        for (rate, what, setting), who in zip(self.rules, (key_id, address)):
            if rate is None or not who:
                continue
            if not self.strategy.hit(rate, self.door, what, who):
                reset = self.strategy.get_window_stats(rate, self.door, what, who).reset_time
                retry_after = max(1, math.ceil(reset - time.time()))
                raise RateLimited(f"too many requests from this {what}: the limit is {rate} ({setting}); "
                                  f"retry after {retry_after} s", retry_after, field=what)
