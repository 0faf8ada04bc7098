"""Turns a reconciler's `Outcome` into kopf's terms: a status patch, Events, a retry or nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from trafficmirror.aws.errors import AwsError
from trafficmirror.metrics import RECONCILES, RESOURCES
from trafficmirror.reconcile.common import Outcome, Owner, merge_conditions, transition_events
from trafficmirror.reconcile.context import ReconcileContext, RetryLater

MAX_BACKOFF_SECONDS = 300.0
_phases: dict[str, tuple[str, str]] = {}  # uid → (kind, phase), for the resources gauge


def owner_of(kind: str, body: kopf.Body, context: ReconcileContext) -> Owner:
    meta = body["metadata"]
    return Owner(
        kind=kind,
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        cluster=context.cluster,
    )


def backoff(retry: int, base: float = 2.0) -> float:
    """Exponential with full jitter: many objects throttled at once must not retry in lockstep."""
    return random.uniform(base, min(MAX_BACKOFF_SECONDS, base * 2 ** min(retry, 10)))


async def run(
    kind: str,
    reconcile: Callable[..., Outcome | None],
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    context: ReconcileContext,
    node_provider_ids: kopf.Index[str, str] | None = None,
    from_timer: bool = False,
    **kwargs: Any,
) -> Outcome | None:
    """Run a (blocking) reconcile in a thread, then write what it decided.

    From a timer nothing is raised: the next tick (one resync period later) carries on, which is
    the backoff a periodic check wants, and a timer's retry would not see the status it just wrote.
    """
    if node_provider_ids is not None:
        nodes = {name: next(iter(store), "") for name, store in node_provider_ids.items()}
        context = dataclasses.replace(context, node_provider_ids=nodes)
    try:
        outcome = await asyncio.to_thread(reconcile, ctx=context, **kwargs)
    except (RetryLater, AwsError) as error:
        RECONCILES.labels(kind, "retry").inc()
        if from_timer:
            logger.warning(f"resync will try again next period: {error}")
            return None
        raise kopf.TemporaryError(str(error), delay=backoff(retry)) from error
    if outcome is None:
        RECONCILES.labels(kind, "done").inc()
        return None
    write(kind, body, patch, outcome)
    RECONCILES.labels(kind, outcome.phase.value).inc()
    if outcome.retry_after is not None and not from_timer:
        message = next((c.message for c in outcome.conditions if c.type == "Ready"), "")
        # Waiting on something else is not an error: short, steady delays; only failures back off.
        raise kopf.TemporaryError(message, delay=outcome.retry_after)
    return outcome


def write(kind: str, body: kopf.Body, patch: kopf.Patch, outcome: Outcome) -> None:
    status = body.get("status", {})
    generation = int(body["metadata"].get("generation", 1))
    for event in transition_events(status.get("phase"), _ready_reason(status), outcome):
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
    patch.status["phase"] = outcome.phase.value
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = merge_conditions(status.get("conditions", []), outcome.conditions, generation)
    for key, value in outcome.status_fields.items():
        patch.status[key] = value
    for key, value in outcome.annotations.items():
        patch.metadata.annotations[key] = value
    _count_phase(kind, body["metadata"]["uid"], outcome.phase.value)


def _ready_reason(status: dict[str, Any]) -> str | None:
    return next((c.get("reason") for c in status.get("conditions", []) if c.get("type") == "Ready"), None)


def _count_phase(kind: str, uid: str, phase: str | None) -> None:
    previous = _phases.pop(uid, None)
    if previous is not None:
        RESOURCES.labels(*previous).dec()
    if phase is not None:
        _phases[uid] = (kind, phase)
        RESOURCES.labels(kind, phase).inc()


def forget(uid: str) -> None:
    _count_phase("", uid, None)


# Failures that the world can fix without a spec change: the resync looks at them again.
RECOVERABLE_FAILURES = frozenset({"UnsupportedInstanceType"})


def resync_action(body: kopf.Body, period: float, now: datetime | None = None) -> str:
    """What a drift timer does with an object: 'skip', 'compare' (Ready: against the snapshot) or 'reconcile'.

    A Pending object belongs to the change handlers, which retry it themselves; the timer steps in
    only when it has been Pending too long for that (nobody is moving it), e.g. a create that the
    timer's own last run recorded ('Creating').
    """
    status = body.get("status", {})
    if body["metadata"].get("deletionTimestamp"):
        return "skip"
    phase, reason = status.get("phase"), _ready_reason(status)
    if phase == "Ready":
        return "compare"
    if phase == "Failed":
        return "reconcile" if reason in RECOVERABLE_FAILURES else "skip"  # others need a spec change
    # A create the timer itself recorded waits one period; other Pending objects, two.
    patience = period if reason == "Creating" else 2 * period
    return "reconcile" if _seconds_in_state(status, now or datetime.now(UTC)) >= patience else "skip"


def _seconds_in_state(status: dict[str, Any], now: datetime) -> float:
    ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    try:
        since = datetime.strptime(ready["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return float("inf")
    return (now - since).total_seconds()
