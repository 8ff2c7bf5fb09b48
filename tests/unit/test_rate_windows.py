"""The in-memory rate limits (``rate_limit_storage: memory://``, every replica's and the API's default)
count a moving window without a thread: a key gets exactly its limit per period, the 429 says how long
until the next request may pass, a refused request is not counted, another key or address is
unaffected, the window moves with time, and idle counters are dropped."""

from __future__ import annotations

import pytest

from doctune import metering
from doctune.metering import MovingWindows, RateLimited, RateLimiter


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(metering.time, "monotonic", lambda: now[0])
    return now


def test_a_key_gets_its_limit_then_a_429_with_the_wait(clock):
    limiter = RateLimiter("endpoint:t", "3/minute", "")
    for _ in range(3):
        limiter.check("key-a", "10.0.0.1")
        clock[0] += 1
    with pytest.raises(RateLimited) as e:
        limiter.check("key-a", "10.0.0.1")
    assert e.value.field == "key" and e.value.http_status == 429
    assert e.value.retry_after == 57  # the first request (t=0) leaves the window at t=60; now t=3
    assert "rate_limit_per_key" in e.value.message
    limiter.check("key-b", "10.0.0.1")  # another key has its own window


def test_the_window_moves_and_refusals_are_not_counted(clock):
    limiter = RateLimiter("endpoint:t", "", "2/second")
    limiter.check(None, "10.0.0.1")
    clock[0] += 0.5
    limiter.check(None, "10.0.0.1")
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.check(None, "10.0.0.1")
    clock[0] += 0.6  # the first left the window; the refused ones never entered it
    limiter.check(None, "10.0.0.1")
    with pytest.raises(RateLimited) as e:
        limiter.check(None, "10.0.0.1")
    assert e.value.field == "address" and e.value.retry_after == 1
    limiter.check(None, "10.0.0.2")  # another address has its own window


def test_idle_counters_are_dropped(clock):
    windows = MovingWindows()
    assert windows.hit("a", 5, 10.0) is None and windows.hit("b", 5, 100.0) is None
    clock[0] += MovingWindows.SWEEP_S + 1
    assert windows.hit("c", 5, 10.0) is None  # the sweep runs on this hit
    assert set(windows._hits) == {"b", "c"}  # "a" was idle for its whole period; "b" still counts

