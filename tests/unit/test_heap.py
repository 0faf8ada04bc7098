"""handlers.heap: memory freed in the middle of glibc's heap goes back to the system (the operator's
RSS after a burst of objects), through the loop the operator runs.

The heap is made as a burst leaves it: many blocks allocated (touched, so resident), then all freed but
the last, which pins the top of the heap, so that free() alone gives nothing back. Within a few periods
of the loop the process's resident memory must fall by most of what was freed."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from pathlib import Path

import pytest

from trafficmirror.handlers.heap import malloc_trim, release_free_heap

BLOCK = 32 * 1024  # below glibc's mmap threshold: the blocks come from the heap itself
BLOCKS = 4096  # 128 MiB


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    if name is None or malloc_trim() is None:
        pytest.fail("this test needs glibc, which the operator's image ships")
    lib = ctypes.CDLL(name)
    lib.malloc.restype = ctypes.c_void_p
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


def test_freed_heap_goes_back_to_the_system_within_a_few_periods() -> None:
    lib = libc()
    blocks = []
    for _ in range(BLOCKS):
        address = lib.malloc(BLOCK)
        assert address
        ctypes.memset(address, 1, BLOCK)
        blocks.append(address)
    for address in blocks[:-1]:
        lib.free(address)
    held = rss_kb()
    freed_kb = (BLOCKS - 1) * BLOCK // 1024

    async def run() -> int:
        task = asyncio.create_task(release_free_heap(0.05, logging.getLogger("test")))
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                if held - rss_kb() >= freed_kb // 2:
                    break
            return rss_kb()
        finally:
            task.cancel()

    try:
        after = asyncio.run(run())
    finally:
        lib.free(blocks[-1])
    assert held - after >= freed_kb // 2, f"RSS {held} kB → {after} kB after freeing {freed_kb} kB"


def test_a_failing_trim_stops_the_loop_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise OSError("no")

    asyncio.run(asyncio.wait_for(release_free_heap(0.01, logging.getLogger("test"), trim=broken), timeout=10))
    assert calls == [1]
    assert "giving free heap memory back failed" in caplog.text
