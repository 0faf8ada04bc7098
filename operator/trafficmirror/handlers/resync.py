"""The batched resync: one loop per kind, one shared Describe per kind (and region) per period.

Each period the loop compares every Ready object kopf's index holds with the Describe's answer
(`Binding.in_sync`, no call per object). Only the
objects that need work are handed to kopf's change handler, by a nudge annotation, so every status
write and Event still goes through one path. Between periods, a session that must follow its
target or filter (a new AWS ID in kopf's in-memory index) is nudged at once, at no AWS cost; so is
an object whose work nobody carries on (a retry kopf dropped, a status of an older generation, an
object kopf never ran a handler for).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror.handlers.apply import resync_action
from trafficmirror.handlers.registration import HANDLING, Binding, Handling, Tracked
from trafficmirror.metrics import RESYNC_DESCRIBES, RESYNC_NUDGES
from trafficmirror.reconcile.observed import observe

Nudge = Callable[[Binding, Tracked, str], Awaitable[None]]

# How long one pass waits for the shared Describe, and for each nudge. The loop must go on past a call
# that does not answer (a thread or a connection that hangs): it also carries the nudges of work nobody
# else carries on, and one pass waiting for good would stop them all, without a log line. A Describe
# still running is picked up by a later pass (never two of a kind and region at the same time); a nudge
# not answered in time is dropped, and the object nudged again if it still needs it.
DESCRIBE_WAIT_SECONDS = 60.0
NUDGE_TIMEOUT_SECONDS = 60.0
# Phases an object stays in until something changes: no handler has more to do for it.
AT_REST = frozenset({"Ready", "Failed", "Completed"})


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
        describe_wait: float = DESCRIBE_WAIT_SECONDS,
        nudge_timeout: float = NUDGE_TIMEOUT_SECONDS,
        handling: Handling = HANDLING,
    ) -> None:
        self.binding = binding
        self.snapshot = snapshot
        self.indexes = indexes
        self.nudge = nudge
        self.period = period
        self.follow_period = min(follow_period, period)
        self.logger = logger
        self.describe_wait = describe_wait
        self.nudge_timeout = nudge_timeout
        self.handling = handling
        self._nudged: dict[str, float] = {}  # uid → when it was last nudged
        self._stalled_at: dict[str, float] = {}  # uid → wall clock of its last nudge as stalled
        self._describes: dict[str | None, asyncio.Future[tuple[float, dict[str, Any]]]] = {}  # by region

    @property
    def unhandled_after(self) -> float:
        """How long a begun object may go untouched before it is taken as dropped (see `stalled`): as
        long as the handling registry remembers a handler's end, so that an end is never forgotten
        before the wait it counts in is over."""
        return max(self.handling.keep_ended, self.follow_period)

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
        every = tracked_objects(self.indexes[self.binding.index_name])
        # Following and comparing are for live objects with a valid spec; stalled work is looked for in all
        # (a dropped delete, a dropped object whose stored spec is invalid).
        objects = [t for t in every if not t.deleting and t.request]
        due: list[tuple[Tracked, str]] = []
        if self.binding.follows is not None:
            due += [(t, "follow") for t in objects if t.phase == "Ready" and self.binding.follows(t, self.indexes)]
        now_wall = time.time()
        self.handling.forget_old(now_wall)
        self._stalled_at = {uid: at for uid, at in self._stalled_at.items() if now_wall - at < self.unhandled_after}
        taken = {t.uid for t, _ in due}
        due += [(t, "stalled") for t in every if t.uid not in taken and self.stalled(t, now_wall)]
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
                self._stalled_at[tracked.uid] = now_wall
                self.logger.info(
                    f"stalled: {self.binding.api.kind} {tracked.namespace}/{tracked.name} (generation "
                    f"{tracked.generation}, status of {tracked.observed_generation}, phase {tracked.phase}) has "
                    "work nobody carries on"
                )
            nudged.append((tracked, why))
        results = await asyncio.gather(*(self._nudge(t, why) for t, why in nudged), return_exceptions=True)
        unanswered = sum(isinstance(result, TimeoutError) for result in results)
        if unanswered:
            self.logger.warning(
                f"{unanswered} of {len(nudged)} resync nudges of {self.binding.api.plural} not answered within "
                f"{self.nudge_timeout:.0f} s; dropped, the next passes nudge again what still needs it"
            )
        return nudged

    async def _nudge(self, tracked: Tracked, why: str) -> None:
        await asyncio.wait_for(self.nudge(self.binding, tracked, why), self.nudge_timeout)

    async def _describe(self, region: str | None) -> tuple[float, dict[str, Any]] | None:
        """The shared Describe of the region, or None when it has not answered within `describe_wait`:
        it keeps running, and a later pass uses its answer instead of starting another one."""
        task = self._describes.get(region)
        if task is None:
            task = asyncio.ensure_future(self.snapshot.fetch(self.binding.snapshot_kind, region))
            self._describes[region] = task
        done, _ = await asyncio.wait({task}, timeout=self.describe_wait)
        if not done:
            self.logger.warning(
                f"the Describe of {self.binding.api.plural} ({region or 'default region'}) has not answered "
                f"within {self.describe_wait:.0f} s; the resync goes on and compares once it has"
            )
            return None
        del self._describes[region]
        return task.result()  # its error fails this pass; the next period asks again

    def stalled(self, tracked: Tracked, now: float) -> bool:
        """Work that nobody carries on. Never while an event or a handler of this process touched the
        object within a follow period, nor within `unhandled_after` of its last nudge as stalled (the
        nudge's own event may be late). Then:

        - a retry kopf promised is overdue and no handler has run since it was due;
        - the status is for an older generation and no retry is promised;
        - the object is not at rest, kopf has begun it (its finalizer is on), and nothing touched it for
          `unhandled_after`: no status, a Pending one without its retry (a Pending status always has
          one), or a delete not carried on.

        kopf runs a change handler only for a difference from the last spec it handled: an edit that
        goes back to that spec while the handler waits to retry (A → B, failed, → A) leaves the retry
        and a stale status behind for good. And kopf can end a cycle with no handler run and no write
        that brings the next one: its finalizer patch, made but unanswered (an apiserver restart), is
        refused as a conflict on retry and kept for the next cycle; the next event has the finalizer
        already, so that cycle writes nothing (and skips the handlers, a delete's too), and no event
        follows. A nudge is a difference of its own: the handler runs, the status is written, and kopf
        forgets the dead retry.

        The last rule waits kopf's wait for the event of its own write and more. That is no bound on
        kopf (with no event it waits for good) but on a watch running late: an object whose record shows
        the finalizer had its handlers run in that same cycle (a handler at work counts as touched).
        """
        handled = self.handling.seen_at(tracked.uid)
        quiet = now - max(tracked.seen_at, handled or 0.0)
        if quiet < self.follow_period or now - self._stalled_at.get(tracked.uid, -math.inf) < self.unhandled_after:
            return False
        if tracked.retry_at is not None and (handled is None or handled < tracked.retry_at):
            return now - tracked.retry_at >= self.follow_period  # until then, kopf keeps its backoff
        if (
            tracked.retry_at is None
            and not tracked.deleting
            and tracked.observed_generation not in (None, tracked.generation)
        ):
            return True
        at_rest = not tracked.deleting and tracked.phase in AT_REST
        return tracked.finalized and not at_rest and quiet >= self.unhandled_after

    async def _compare(self, objects: list[Tracked]) -> list[tuple[Tracked, str]]:
        due: list[tuple[Tracked, str]] = []
        by_region: dict[str | None, list[Tracked]] = {}
        for tracked in objects:
            # Failures to look at again have a timer of their own (registration.recheckable).
            if resync_action(tracked.phase, tracked.ready_reason) == "compare":
                by_region.setdefault(tracked.region, []).append(tracked)
        reconciler = self.binding.reconciler
        for region, ready in by_region.items():
            fetched = await self._describe(region)
            if fetched is None:
                continue
            fetched_at, observed = fetched
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
