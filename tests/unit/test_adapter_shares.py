"""One tenant cannot push another's adapters out of a shared replica: the replica's eviction
policy keeps each tenant's share (``DOCTUNE_SHARED_ADAPTERS_PER_TENANT``). A tenant that
floods the replica with its own adapter versions recycles its own; a tenant below its share
takes room from one above it. The shared replica applies the policy to Ray Serve's own
model cache (checked here with the replica's eviction step on a cache of loaded adapters)."""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict
from types import SimpleNamespace

import pytest

from doctune.serve.adapters import pick_adapter_to_evict


def _loaded(*owners: str) -> list[tuple[str, str]]:
    """Adapters in least-recently-used order: ``a1`` is tenant a's first, and so on."""
    seen: dict[str, int] = {}
    out = []
    for owner in owners:
        seen[owner] = seen.get(owner, 0) + 1
        out.append((f"{owner}{seen[owner]}", owner))
    return out


def test_room_left_evicts_nothing():
    assert pick_adapter_to_evict(_loaded("a", "b"), "a", capacity=4, share=2) is None


def test_a_flooding_tenant_recycles_its_own_adapters():
    # b holds its share (2); a loads adapter after adapter: b's stay, even though they are the oldest
    loaded = _loaded("b", "b", "a", "a")
    for _ in range(10):
        victim = pick_adapter_to_evict(loaded, "a", capacity=4, share=2)
        assert dict(loaded)[victim] == "a"
        loaded = [x for x in loaded if x[0] != victim] + [(f"a-version-{_}", "a")]
    assert [m for m, owner in loaded if owner == "b"] == ["b1", "b2"]


def test_a_tenant_below_its_share_takes_room_from_one_above_it():
    # a filled the replica while b was quiet; b's first load takes a's least recently used one
    assert pick_adapter_to_evict(_loaded("a", "a", "a", "a"), "b", capacity=4, share=2) == "a1"
    assert pick_adapter_to_evict(_loaded("c", "a", "a", "a"), "b", capacity=4, share=2) == "a1"  # c is within share


def test_with_more_tenants_than_shares_the_largest_holder_gives_way():
    # capacity 4, share 2: a and b at their share, c arrives: someone must give; the largest, oldest
    assert pick_adapter_to_evict(_loaded("b", "a", "a", "b"), "c", capacity=4, share=2) == "b1"
    # c itself among the largest: it recycles its own
    assert pick_adapter_to_evict(_loaded("a", "b", "c", "d"), "c", capacity=4, share=2) == "c1"


def test_the_replica_evicts_from_serves_cache_by_the_policy():
    """AdapterServer._make_room on a cache shaped as Ray Serve's (model id -> loaded adapter,
    least recently used first): the flooding tenant's own adapter is unloaded and released."""
    from doctune.serve.multiplex import AdapterServer, _Adapter

    released = []
    models = OrderedDict((m, _Adapter(m, owner, None, None, {}, released.append))
                         for m, owner in _loaded("b", "b", "a", "a"))
    cache = SimpleNamespace(models=models, _push_multiplexed_replica_info=False)
    replica = SimpleNamespace(max_adapters=4, adapters_per_tenant=2)
    asyncio.run(AdapterServer.func_or_class._make_room(replica, cache, "a"))
    assert list(cache.models) == ["b1", "b2", "a2"] and released == ["a1"]
    assert cache._push_multiplexed_replica_info is True  # Serve's router learns a1 is gone
    asyncio.run(AdapterServer.func_or_class._make_room(replica, cache, "b"))  # room now: nothing goes
    assert released == ["a1"]


def test_serves_model_cache_is_where_the_replica_looks():
    """The replica evicts from Ray Serve's multiplex wrapper: its attribute and ``models`` dict."""
    from ray.serve import api
    from ray.serve.multiplex import _ModelMultiplexWrapper

    assert '"__serve_multiplex_wrapper"' in inspect.getsource(api.multiplexed)
    assert "self.models = OrderedDict()" in inspect.getsource(_ModelMultiplexWrapper.__init__)
    assert "max_num_models_per_replica > 0" in inspect.getsource(_ModelMultiplexWrapper.load_model)  # -1: never evicts


def test_a_loader_without_serves_cache_is_an_error_not_silence():
    from doctune.errors import DoctuneError
    from doctune.serve.multiplex import _serve_cache

    with pytest.raises(DoctuneError):
        _serve_cache(lambda model_id: None)
