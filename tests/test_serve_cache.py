"""Tests of serve/cache.py: the exact prediction cache (LRU, byte bound, in-flight de-dup), the typed-through cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.cache import PredictionCache, TypedThroughCache, context_key
from codecomp.text.digest import digest

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- context_key


def test_context_key_is_16_bytes_and_deterministic() -> None:
    key = context_key("v1", "cpp", b"int main() {", b"}", b"n=3")
    assert len(key) == 16
    assert key == context_key("v1", "cpp", b"int main() {", b"}", b"n=3")


def test_context_key_framing_is_unambiguous() -> None:
    keys = {
        context_key("v1", "cpp", b"ab", b"c"),
        context_key("v1", "cpp", b"a", b"bc"),
        context_key("v1", "cppa", b"", b"bc"),
        context_key("v1c", "pp", b"a", b"bc"),
        context_key("v1", "cpp", b"a", b"b", b"c"),
        context_key("v2", "cpp", b"ab", b"c"),
        context_key("v1", "javascript", b"ab", b"c"),
        context_key("v1", "cpp", b"ab", b"c", b"n=5"),
    }
    assert len(keys) == 8


# ---------------------------------------------------------------- PredictionCache: synchronous API


def test_put_get_exact_values_and_counters() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=100)
    cache.put(b"a", "alpha", 10)
    assert cache.get(b"a") == "alpha"
    assert cache.get(b"b") is None
    assert (cache.hits, cache.misses, len(cache), cache.nbytes) == (1, 1, 1, 10)
    cache.put(b"a", "again", 30)  # replacing an entry re-accounts its size
    assert cache.get(b"a") == "again"
    assert (len(cache), cache.nbytes) == (1, 30)


def test_lru_order_and_byte_bound() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=30)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key.decode(), 10)
    assert cache.get(b"a") == "a"  # now b is the least recently used
    cache.put(b"d", "d", 10)
    assert cache.get(b"b") is None
    assert [cache.get(k) for k in (b"a", b"c", b"d")] == ["a", "c", "d"]
    assert (cache.nbytes, cache.evictions, len(cache)) == (30, 1, 3)
    cache.put(b"e", "e", 25)  # needs room for 25 bytes: evicts a, c and d (in LRU order a, c, d)
    assert (len(cache), cache.nbytes, cache.evictions) == (1, 25, 4)
    assert cache.get(b"e") == "e"


def test_oversize_entry_is_not_stored_and_drops_stale_value() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=30)
    cache.put(b"a", "small", 10)
    cache.put(b"big", "huge", 31)
    assert cache.get(b"big") is None
    assert cache.get(b"a") == "small"  # nothing was evicted for an entry that cannot fit
    cache.put(b"a", "huge", 31)
    assert cache.get(b"a") is None
    assert (len(cache), cache.nbytes, cache.evictions) == (0, 0, 0)
    with pytest.raises(ValueError):
        cache.put(b"x", "x", -1)


def test_off_switch_stores_nothing_and_does_not_share() -> None:
    cache: PredictionCache[int] = PredictionCache(max_bytes=0)
    cache.put(b"a", 1, 0)
    assert cache.get(b"a") is None
    assert len(cache) == 0
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return 7

    async def main() -> list[tuple[int, str]]:
        return list(await asyncio.gather(*(cache.get_or_compute(b"k", compute, lambda v: 1) for _ in range(2))))

    assert asyncio.run(main()) == [(7, "miss"), (7, "miss")]
    assert calls == 2
    assert (cache.hits, cache.shared, len(cache)) == (0, 0, 0)


# ---------------------------------------------------------------- PredictionCache: get_or_compute


def test_get_or_compute_miss_then_hit() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=100)
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        return "value"

    async def main() -> list[tuple[str, str]]:
        return [await cache.get_or_compute(b"k", compute, len) for _ in range(3)]

    assert asyncio.run(main()) == [("value", "miss"), ("value", "hit"), ("value", "hit")]
    assert calls == 1
    assert (cache.misses, cache.hits, cache.shared, cache.nbytes) == (1, 2, 0, 5)


def test_in_flight_requests_are_computed_once() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=100)
    calls = 0

    async def main() -> list[tuple[str, str]]:
        release = asyncio.Event()

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            return "value"

        first = asyncio.create_task(cache.get_or_compute(b"k", compute, len))
        await asyncio.sleep(0)
        second = asyncio.create_task(cache.get_or_compute(b"k", compute, len))
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
        release.set()
        return [await first, await second]

    assert asyncio.run(main()) == [("value", "miss"), ("value", "shared")]
    assert calls == 1
    assert (cache.misses, cache.shared, cache.hits, len(cache)) == (1, 1, 0, 1)
    assert cache._inflight == {}


def test_exception_reaches_every_sharer_and_is_not_cached() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=100)
    calls = 0

    async def main() -> list[BaseException | tuple[str, str]]:
        release = asyncio.Event()

        async def failing() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            raise RuntimeError("model container died")

        tasks = [asyncio.create_task(cache.get_or_compute(b"k", failing, len)) for _ in range(3)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert results[0] is results[1] is results[2]  # the same exception, not three computations
    assert calls == 1
    assert (len(cache), cache._inflight) == (0, {})

    async def succeed() -> str:
        return "ok"

    # The failure was not cached: the next request computes again.
    assert asyncio.run(cache.get_or_compute(b"k", succeed, len)) == ("ok", "miss")


def test_not_cacheable_value_reaches_sharers_but_is_not_stored() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=100)

    async def main() -> list[tuple[str, str]]:
        release = asyncio.Event()

        async def degraded() -> str:
            await release.wait()
            return "partial"

        tasks = [
            asyncio.create_task(cache.get_or_compute(b"k", degraded, len, cacheable=lambda v: v != "partial"))
            for _ in range(2)
        ]
        await asyncio.sleep(0)
        release.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == [("partial", "miss"), ("partial", "shared")]
    assert (len(cache), cache.nbytes) == (0, 0)
    assert cache.get(b"k") is None


def test_cancelling_the_first_caller_does_not_hang_the_sharer() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=100)
    calls = 0

    async def main() -> tuple[str, str]:
        release = asyncio.Event()

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            return "value"

        first = asyncio.create_task(cache.get_or_compute(b"k", compute, len))
        await asyncio.sleep(0)
        second = asyncio.create_task(cache.get_or_compute(b"k", compute, len))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        release.set()
        return await asyncio.wait_for(second, timeout=5)

    assert asyncio.run(main()) == ("value", "shared")
    assert calls == 1
    assert cache.get(b"k") == "value"  # the computation survived its first caller and was stored


def test_cancelling_every_caller_cancels_the_computation() -> None:
    cache: PredictionCache[str] = PredictionCache(max_bytes=100)
    cancelled = False

    async def main() -> tuple[str, str]:
        async def never() -> str:
            nonlocal cancelled
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled = True
                raise
            return "unreachable"

        callers = [asyncio.create_task(cache.get_or_compute(b"k", never, len)) for _ in range(2)]
        await asyncio.sleep(0)
        for caller in callers:
            caller.cancel()
        while not all(caller.done() for caller in callers):  # return as soon as they are (not later)
            await asyncio.sleep(0)
        assert all(caller.cancelled() for caller in callers)
        # The abandoned computation is forgotten at once, even before its cancellation has completed.
        assert cache._inflight == {}

        async def fresh() -> str:
            return "fresh"

        # So a new identical request starts afresh rather than joining the abandoned computation.
        result = await asyncio.wait_for(cache.get_or_compute(b"k", fresh, len), timeout=5)
        await asyncio.sleep(0)
        assert cancelled  # checked before asyncio.run's shutdown would cancel a leftover task anyway
        return result

    assert asyncio.run(main()) == ("fresh", "miss")


# ---------------------------------------------------------------- TypedThroughCache


def test_typed_through_answers_the_rest_of_a_candidate_only_for_the_same_context() -> None:
    cache = TypedThroughCache(sessions=2, max_typed=4)
    prefix, suffix = b"const total = comp", b"\n}\n"
    candidates = [WireCandidate(b"uteTotal(items);", -0.5, True), WireCandidate(b"are(a, b);", -1.0, True)]
    cache.store("ada", "char", len(prefix), digest((prefix,)), digest((suffix,)), candidates)
    same_suffix = digest((suffix,))
    assert cache.lookup("ada", "char", prefix + b"ute", same_suffix) == [WireCandidate(b"Total(items);", -0.5, True)]
    assert cache.lookup("ada", "char", prefix + b"x", same_suffix) is None  # typed what no candidate says
    assert cache.lookup("ada", "char", prefix, same_suffix) is None  # nothing typed since
    assert cache.lookup("ada", "char", prefix + b"uteT", digest((b"\n",))) is None  # the code below changed
    assert cache.lookup("ada", "char", b"let" + prefix[3:] + b"u", same_suffix) is None  # the code above changed
    assert cache.lookup("ada", "char", prefix + b"uteTo", same_suffix) is None  # more than max_typed
    assert cache.lookup("bob", "char", prefix + b"u", same_suffix) is None  # another session
    assert cache.lookup("ada", "tree", prefix + b"u", same_suffix) is None  # another model
    assert (cache.hits, cache.misses) == (1, 7)
