"""The adapter's lookup cache: concurrent misses of one key make one AWS call, not one each."""

from __future__ import annotations

import threading
import time

import pytest

from trafficmirror.aws.ec2 import PRUNE_MIN_ENTRIES, TtlCache


def test_concurrent_misses_of_one_key_load_once() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl_seconds=60)
    loads: list[str] = []
    start = threading.Barrier(8)

    def load() -> str:
        loads.append("x")
        time.sleep(0.05)  # an AWS round trip, during which the others arrive
        return "t3.small"

    results: list[str] = []

    def ask() -> None:
        start.wait()
        results.append(cache.get_or_load("i-1", load))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["t3.small"] * 8
    assert len(loads) == 1


def test_an_expired_entry_is_loaded_again_and_a_failed_load_is_not_cached() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_seconds=0.01)
    assert cache.get_or_load("k", lambda: 1) == 1
    time.sleep(0.02)
    assert cache.get_or_load("k", lambda: 2) == 2

    def fail() -> int:
        raise RuntimeError("AWS said no")

    fresh: TtlCache[str, int] = TtlCache(ttl_seconds=60)
    with pytest.raises(RuntimeError):
        fresh.get_or_load("k", fail)
    assert fresh.get_or_load("k", lambda: 3) == 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_expired_keys_do_not_pile_up(seed: int) -> None:
    """Keys never asked again (gone ENIs, old addresses) are dropped once expired: over a long run of
    fresh keys at a varying rate, the map holds at most twice the most keys ever live at once, and
    every live key stays."""
    import collections
    import random

    rng = random.Random(seed)
    now = [0.0]
    ttl = 50.0
    cache: TtlCache[int, int] = TtlCache(ttl_seconds=ttl, clock=lambda: now[0])
    put_at: dict[int, float] = {}
    window: collections.deque[float] = collections.deque()
    peak_live = 0
    for key in range(20_000):
        now[0] += rng.uniform(0.0, 0.2) if (key // 2000) % 2 else rng.uniform(0.0, 0.05)
        cache.put(key, key)
        put_at[key] = now[0]
        window.append(now[0])
        while now[0] - window[0] > ttl:
            window.popleft()
        peak_live = max(peak_live, len(window))
        assert len(cache) <= max(PRUNE_MIN_ENTRIES, 2 * peak_live)
    for key, at in put_at.items():
        assert (cache.get(key) == key) is (now[0] - at <= ttl)
    assert len(cache) < 20_000 / 4
