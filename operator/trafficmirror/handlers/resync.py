"""The batched resync: one loop per kind, one shared Describe per kind (and region) per period.

Each period the loop compares every Ready object kopf's index holds with the Describe's answer
(`Binding.in_sync`, no call per object). Only the
objects that need work are handed to kopf's change handler, by a nudge annotation, so every status
write and Event still goes through one path. Between periods, a session that must follow its
target or filter (a new AWS ID in kopf's in-memory index) is nudged at once, at no AWS cost; so is
an object whose work nobody carries on (a retry kopf dropped, a status of an older generation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror.handlers.apply import resync_action
from trafficmirror.handlers.registration import Binding, Tracked
from trafficmirror.metrics import RESYNC_DESCRIBES, RESYNC_NUDGES
from trafficmirror.reconcile.observed import observe

Nudge = Callable[[Binding, Tracked, str], Awaitable[None]]


class Snapshot:
    """AWS resources of a kind by ID, as one Describe found them, and when that Describe started."""

    def __init__(self, aws_for_region: Callable[[str | None], Ec2Mirror]) -> None:
        self._aws_for_region = aws_for_region

    async def fetch(self, kind: str, region: str | None) -> tuple[float, dict[str, Any]]:
        started = time.time()
        items = await asyncio.to_thread(self._describe, kind, region)
        return started, items

    def _describe(self, kind: str, region: str | None) -> dict[str, Any]:
        """AWS resources of a kind by ID, as `Observed` (with the type behind an ENI)."""
        RESYNC_DESCRIBES.labels(kind).inc()
        return observe(self._aws_for_region(region), kind)


def tracked_objects(index: Any) -> list[Tracked]:
    return [item for store in list(index.values()) for item in list(store)]


class ResyncLoop:
    def __init__(
        self,
        binding: Binding,
        snapshot: Snapshot,
        indexes: Mapping[str, Any],
        nudge: Nudge,
        period: float,
        follow_period: float,
        logger: logging.Logger,
    ) -> None:
        self.binding = binding
        self.snapshot = snapshot
        self.indexes = indexes
        self.nudge = nudge
        self.period = period
        self.follow_period = min(follow_period, period)
        self.logger = logger
        self._nudged: dict[str, float] = {}  # uid → when it was last nudged

    async def run(self) -> None:
        next_compare = time.monotonic() + self.period
        while True:
            # Between Describes a pass costs no call: following (sessions) and stalled work, in memory.
            await asyncio.sleep(self.follow_period)
            compare = time.monotonic() >= next_compare - 0.5
            if compare:
                next_compare = time.monotonic() + self.period
            try:
                await self.tick(compare)
            except Exception as error:  # the loop must outlive one bad period (AWS down, a bug)
                self.logger.warning(f"resync of {self.binding.api.plural} failed, next period tries again: {error!r}")

    async def tick(self, compare: bool) -> list[tuple[Tracked, str]]:
        """One pass: the objects nudged and why ('drift', 'missing', 'follow', 'stalled')."""
        objects = [t for t in tracked_objects(self.indexes[self.binding.index_name]) if not t.deleting and t.request]
        due: list[tuple[Tracked, str]] = []
        if self.binding.follows is not None:
            due += [(t, "follow") for t in objects if t.phase == "Ready" and self.binding.follows(t, self.indexes)]
        now_wall = time.time()
        due += [(t, "stalled") for t in objects if self.stalled(t, now_wall)]
        if compare:
            taken = {t.uid for t, _ in due}
            due += await self._compare([t for t in objects if t.uid not in taken])
        now = time.monotonic()
        # One nudge per object per follow period: a reconcile that raced with a change of its target
        # (a replacement) is asked again soon, and nothing is nudged twice while its reconcile runs.
        self._nudged = {uid: at for uid, at in self._nudged.items() if now - at < self.follow_period}
        nudged = []
        for tracked, why in due:
            if tracked.uid in self._nudged:
                continue
            self._nudged[tracked.uid] = now
            RESYNC_NUDGES.labels(self.binding.api.kind, why).inc()
            if why == "stalled":
                self.logger.info(
                    f"stalled: {self.binding.api.kind} {tracked.namespace}/{tracked.name} (generation "
                    f"{tracked.generation}, status of {tracked.observed_generation}) has a retry nobody runs"
                )
            nudged.append((tracked, why))
        await asyncio.gather(*(self.nudge(self.binding, t, why) for t, why in nudged), return_exceptions=True)
        return nudged

    def stalled(self, tracked: Tracked, now: float) -> bool:
        """Work that nobody carries on: no watch event for a follow period, and either a retry kopf
        promised is overdue, or the status is for an older generation.

        kopf runs a change handler only for a difference from the last spec it handled: an edit that
        goes back to that spec while the handler waits to retry (A → B, failed, → A) leaves the retry
        and a stale status behind for good. A nudge is a difference of its own: the reconcile runs,
        the status is written, and kopf forgets the dead retry.
        """
        if now - tracked.seen_at < self.follow_period:
            return False
        if tracked.retry_at is not None:  # a retry still to come is kopf's (a backoff is kept)
            return now - tracked.retry_at >= self.follow_period
        return tracked.observed_generation is not None and tracked.observed_generation != tracked.generation

    async def _compare(self, objects: list[Tracked]) -> list[tuple[Tracked, str]]:
        due: list[tuple[Tracked, str]] = []
        by_region: dict[str | None, list[Tracked]] = {}
        for tracked in objects:
            # Failures to look at again have a timer of their own (registration.recheckable).
            if resync_action(tracked.phase, tracked.ready_reason) == "compare":
                by_region.setdefault(tracked.region, []).append(tracked)
        reconciler = self.binding.reconciler
        for region, ready in by_region.items():
            fetched_at, observed = await self.snapshot.fetch(self.binding.snapshot_kind, region)
            for tracked in ready:
                if tracked.seen_at >= fetched_at - 1.0:
                    continue  # changed while (or after) AWS was asked: the next period compares it
                assert tracked.request is not None
                aws_id = reconciler.observed_id(tracked.request.status)
                known = observed.get(aws_id) if aws_id else None
                if not self.binding.in_sync(tracked, known, self.indexes):
                    self.logger.info(
                        f"drift: {self.binding.api.kind} {tracked.namespace}/{tracked.name} "
                        f"{aws_id} is {'changed' if known else 'missing'} in AWS"
                    )
                    due.append((tracked, "drift" if known else "missing"))
        return due
