"""Every door's meters: how deep a JSON body may nest, and how many requests one API key or
one client address may make in a period (a 429 with ``Retry-After`` past it).

The API (``doctune.api.main``: its body-size limit and rate limits) and every endpoint replica
(``doctune.serve.app``) use these, so that a request is metered the same way at both doors.
Limits come from :class:`~doctune.config.Settings` (``rate_limit_per_key`` and the like) and are
counted in this process's memory by default (a moving window per key and per address:
:class:`MovingWindows`) or, with a shared store (``rate_limit_storage``, e.g.
``redis://host:6379``), by the `limits <https://limits.readthedocs.io>`_ library in that store.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from typing import Any

from doctune.errors import DoctuneError

__all__ = ["MAX_JSON_DEPTH", "MovingWindows", "RateLimited", "RateLimiter", "check_json_depth", "parse_json"]

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
        self.rules = [(parse(rate) if rate else None, what, setting)
                      for rate, what, setting in ((per_key, "key", settings[0]), (per_address, "address", settings[1]))]
        self.windows: MovingWindows | None = None
        self.strategy: Any = None
        if (storage_uri or "memory://") == "memory://":  # this process's own counters
            self.windows = MovingWindows()
            return
        self.storage = storage.storage_from_string(storage_uri)
        try:  # a sliding window: no double burst at a window's edge
            self.strategy = strategies.MovingWindowRateLimiter(self.storage)
        except NotImplementedError:  # a store that keeps fixed windows only (memcached)
            self.strategy = strategies.FixedWindowRateLimiter(self.storage)

    def check(self, key_id: str | None, address: str | None) -> None:
        """Count one request of ``key_id`` from ``address``; 429 (:class:`RateLimited`) past either limit.
        A request with no key is counted by its address only."""
        for (rate, what, setting), who in zip(self.rules, (key_id, address)):
            if rate is None or not who:
                continue
            if self.windows is not None:
                wait = self.windows.hit((what, who), rate.amount, rate.get_expiry())
                if wait is None:
                    continue
                retry_after = max(1, math.ceil(wait))
            elif self.strategy.hit(rate, self.door, what, who):
                continue
            else:
                reset = self.strategy.get_window_stats(rate, self.door, what, who).reset_time
                retry_after = max(1, math.ceil(reset - time.time()))
            raise RateLimited(f"too many requests from this {what}: the limit is {rate} ({setting}); "
                              f"retry after {retry_after} s", retry_after, field=what)


class MovingWindows:
    """Moving-window counters in this process's memory: for each counter, the times of the requests it
    let through in the last period, oldest first, so that a request costs about a microsecond and no
    thread. (The ``limits`` library's memory storage re-arms a timer thread every 10 ms and copies each
    window to expire it; on a busy endpoint replica that made the key check cost 0.1-0.4 ms a request,
    milliseconds at its tail: tests/bench/serving_backends.py.) Counters idle for a whole period are
    dropped every ``SWEEP_S`` seconds. Safe to call from several threads."""

    SWEEP_S = 60.0

    def __init__(self) -> None:
        self._hits: dict[Any, tuple[deque[float], float]] = {}  # counter -> (times let through, its period)
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    def hit(self, counter: Any, amount: int, period: float) -> float | None:
        """Count one request on ``counter`` if fewer than ``amount`` passed in the last ``period``
        seconds (None); else count nothing and return the seconds until one more may pass."""
        now = time.monotonic()
        with self._lock:
            if now - self._swept > self.SWEEP_S:
                self._sweep(now)
            entry = self._hits.get(counter)
            if entry is None:
                entry = self._hits[counter] = (deque(), period)
            times = entry[0]
            edge = now - period
            while times and times[0] <= edge:
                times.popleft()
            if len(times) >= amount:
                return times[-amount] + period - now if amount else period
            times.append(now)
            return None

    def _sweep(self, now: float) -> None:
        for counter, (times, period) in list(self._hits.items()):
            if not times or times[-1] <= now - period:
                del self._hits[counter]
        self._swept = now
