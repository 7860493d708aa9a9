"""The gateway's result cache: the key, LRU order, the TTL, the bounds in bytes, and its hit/miss counts."""

from __future__ import annotations

import pytest

from gateway import cache as cache_module
from gateway.cache import CacheEntry, ResultCache, cache_key

OVERHEAD = 64  # bytes an entry is charged on top of its responses


class Clock:
    """A time.monotonic that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cache_module.time, "monotonic", fake)
    return fake


def test_the_key_is_stable_and_depends_on_method_model_version_and_request():
    key = cache_key("/aisemble.llm.v1.LlmService/Complete", b"\x0a\x02hi", "smollm2", "1")
    assert key == cache_key("/aisemble.llm.v1.LlmService/Complete", b"\x0a\x02hi", "smollm2", "1")
    assert len(key) == 64 and int(key, 16) >= 0  # a sha256 in hex
    others = {
        cache_key("/aisemble.llm.v1.LlmService/Chat", b"\x0a\x02hi", "smollm2", "1"),
        cache_key("/aisemble.llm.v1.LlmService/Complete", b"\x0a\x02ho", "smollm2", "1"),
        cache_key("/aisemble.llm.v1.LlmService/Complete", b"\x0a\x02hi", "smollm2-onnx", "1"),
        cache_key("/aisemble.llm.v1.LlmService/Complete", b"\x0a\x02hi", "smollm2", "2"),
    }
    assert key not in others and len(others) == 4


def test_the_key_parts_cannot_run_into_each_other():
    assert cache_key("ab", b"", "c", "1") != cache_key("a", b"", "bc", "1")
    assert cache_key("m", b"", "model", "12") != cache_key("m", b"", "model1", "2")
    assert cache_key("m", b"x", "model", "1") != cache_key("m", b"", "model", "1x")


def test_an_entry_is_charged_its_bytes_plus_an_overhead():
    assert CacheEntry((b"abc", b"de"), 0.0).size == 5 + OVERHEAD
    assert CacheEntry((), 0.0).size == OVERHEAD


def test_miss_then_hit_are_counted(clock):
    cache = ResultCache()
    assert cache.get("k") is None
    assert cache.put("k", (b"response",))
    assert cache.get("k") == (b"response",)
    assert cache.get("k") == (b"response",)
    assert cache.get("other") is None
    assert (cache.hits, cache.misses) == (2, 2)
    assert len(cache) == 1 and cache.bytes == len(b"response") + OVERHEAD


def test_a_stream_is_replayed_message_by_message_in_order(clock):
    cache = ResultCache()
    stream = (b"first", b"second", b"", b"last")
    cache.put("k", stream)
    assert cache.get("k") == stream


def test_an_entry_lives_ttl_seconds_then_is_gone(clock):
    cache = ResultCache(ttl_s=10.0)
    cache.put("k", (b"x",))
    clock.now += 10.0
    assert cache.get("k") == (b"x",)  # still alive at exactly its expiry
    clock.now += 0.001
    assert cache.get("k") is None
    assert len(cache) == 0 and cache.bytes == 0  # an expired entry is dropped when found, not just hidden
    assert (cache.hits, cache.misses) == (1, 1)


def test_putting_again_renews_the_ttl_and_replaces_without_double_counting(clock):
    cache = ResultCache(ttl_s=10.0)
    cache.put("k", (b"old-value",))
    clock.now += 8.0
    cache.put("k", (b"new",))
    assert cache.bytes == len(b"new") + OVERHEAD and len(cache) == 1
    clock.now += 8.0  # 16 s after the first put, 8 s after the second
    assert cache.get("k") == (b"new",)


def test_the_least_recently_used_entry_is_evicted_first(clock):
    cache = ResultCache(max_bytes=3 * (10 + OVERHEAD), max_entry_bytes=1024)
    for key in ("a", "b", "c"):
        assert cache.put(key, (b"0123456789",))
    assert cache.get("a") is not None  # a is now the most recently used; b the least
    cache.put("d", (b"0123456789",))
    assert cache.get("b") is None
    assert all(cache.get(key) is not None for key in ("a", "c", "d"))
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes


def test_a_large_entry_evicts_as_many_as_it_needs(clock):
    cache = ResultCache(max_bytes=3 * (10 + OVERHEAD), max_entry_bytes=1024)
    for key in ("a", "b", "c"):
        cache.put(key, (b"0123456789",))
    big = b"x" * (2 * (10 + OVERHEAD) - OVERHEAD)  # charged as two small entries: one small one stays
    assert cache.put("big", (big,))
    assert cache.get("a") is None and cache.get("b") is None
    assert cache.get("c") is not None and cache.get("big") is not None
    assert cache.bytes == cache.max_bytes == 3 * (10 + OVERHEAD)


def test_an_entry_over_the_entry_bound_is_refused_and_nothing_is_evicted(clock):
    cache = ResultCache(max_bytes=10_000, max_entry_bytes=100)
    cache.put("small", (b"x",))
    assert not cache.put("big", (b"x" * (100 - OVERHEAD + 1),))
    assert cache.put("fits", (b"x" * (100 - OVERHEAD),))  # exactly at the bound
    assert cache.get("big") is None and cache.get("small") == (b"x",)
    assert len(cache) == 2


def test_an_entry_over_the_whole_cache_is_refused(clock):
    cache = ResultCache(max_bytes=100, max_entry_bytes=10_000)
    cache.put("small", (b"x",))
    assert not cache.put("big", (b"x" * 100,))
    assert cache.get("small") == (b"x",)  # refusing it did not empty the cache


def test_a_refused_put_keeps_the_previous_value_of_its_key(clock):
    cache = ResultCache(max_bytes=10_000, max_entry_bytes=100)
    cache.put("k", (b"kept",))
    assert not cache.put("k", (b"x" * 200,))
    assert cache.get("k") == (b"kept",)
