"""The adapter's lookup cache: concurrent misses of one key make one AWS call, not one each."""

from __future__ import annotations

import threading
import time

import pytest

from trafficmirror.aws.ec2 import TtlCache


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
