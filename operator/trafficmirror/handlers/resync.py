"""The batched view of AWS used by the drift timers: one Describe per kind per period, shared by all
objects, instead of one per object."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror.metrics import RESYNC_DESCRIBES
from trafficmirror.reconcile.observed import observe


class Snapshot:
    def __init__(self, aws_for_region: Callable[[str | None], Ec2Mirror], period: float) -> None:
        self._aws_for_region = aws_for_region
        self._period = period
        self._entries: dict[tuple[str, str | None], tuple[float, dict[str, Any]]] = {}
        self._locks: dict[tuple[str, str | None], asyncio.Lock] = {}

    async def get(self, kind: str, region: str | None) -> dict[str, Any]:
        """AWS resources of a kind by ID, as `Observed` (with the type behind an ENI), one period old at most."""
        key = (kind, region)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            fetched_at, items = self._entries.get(key, (0.0, {}))
            # Slightly under a period, so that timers firing once per period always see a fresh view.
            if time.monotonic() - fetched_at >= self._period * 0.9:
                items = await asyncio.to_thread(self._describe, kind, region)
                self._entries[key] = (time.monotonic(), items)
            return items

    def _describe(self, kind: str, region: str | None) -> dict[str, Any]:
        RESYNC_DESCRIBES.labels(kind).inc()
        return observe(self._aws_for_region(region), kind)
