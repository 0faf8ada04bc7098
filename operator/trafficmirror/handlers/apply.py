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

from trafficmirror.api import ready_condition
from trafficmirror.aws.errors import AwsError
from trafficmirror.metrics import RECONCILES, RESOURCES
from trafficmirror.reconcile.common import RECHECKED_AT_RESYNC, Outcome, Owner, merge_conditions, transition_events
from trafficmirror.reconcile.context import ReconcileContext, RetryLater
from trafficmirror.reconcile.seam import ClusterFacts, Reconciler, Request, parse_request

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


def request_of(
    reconciler: Reconciler[Any, Any, Any],
    body: kopf.Body,
    context: ReconcileContext,
    facts: ClusterFacts | None = None,
) -> Request[Any, Any] | Outcome:
    """The typed request for a reconciler, or a Failed outcome when the stored spec is invalid."""
    return parse_request(
        reconciler,
        owner_of(reconciler.kind, body, context),
        body.get("spec", {}),
        body.get("status", {}),
        dict(body["metadata"].get("annotations", {})),
        facts,
    )


def live_owners_of(*indexes: kopf.Index[str, str]) -> Callable[[str], str | None]:
    """A UID lookup over the kinds' owner indexes: which live object owns an AWS resource's tag."""

    def lookup(uid: str) -> str | None:
        for index in indexes:
            store = index.get(uid)
            if store is not None:
                return next(iter(store), None)
        return None

    return lookup


async def run(
    kind: str,
    step: Callable[[Request[Any, Any], ReconcileContext], Outcome | None],
    request: Request[Any, Any] | Outcome,
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    context: ReconcileContext,
    node_provider_ids: kopf.Index[str, str] | None = None,
    live_owners: Callable[[str], str | None] | None = None,
    from_timer: bool = False,
) -> Outcome | None:
    """Run a (blocking) reconcile step in a thread, then write what it decided.

    From a timer nothing is raised: the next tick (one resync period later) carries on, which is
    the backoff a periodic check wants, and a timer's retry would not see the status it just wrote.
    """
    if isinstance(request, Outcome):  # the stored spec is invalid: say so, do not retry
        write(kind, body, patch, request)
        RECONCILES.labels(kind, request.phase.value).inc()
        return request
    if node_provider_ids is not None:
        nodes = {name: next(iter(store), "") for name, store in node_provider_ids.items()}
        context = dataclasses.replace(context, node_provider_ids=nodes)
    if live_owners is not None:
        context = dataclasses.replace(context, live_owners=live_owners)
    try:
        outcome = await asyncio.to_thread(step, request, context)
    except (RetryLater, AwsError) as error:
        RECONCILES.labels(kind, "retry").inc()
        if isinstance(error, RetryLater) and error.outcome is not None:
            write(kind, body, patch, error.outcome)
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
    patch.status["conditions"] = merge_conditions(
        status.get("conditions", []), outcome.conditions, generation, clear=outcome.clear_conditions
    )
    for key, value in outcome.status_fields.items():
        patch.status[key] = value
    for key, value in outcome.annotations.items():
        patch.metadata.annotations[key] = value
    _count_phase(kind, body["metadata"]["uid"], outcome.phase.value)


def _ready_reason(status: dict[str, Any]) -> str | None:
    condition = ready_condition(status)
    return condition.reason if condition is not None else None


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
RECOVERABLE_FAILURES = RECHECKED_AT_RESYNC


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
    ready = ready_condition(status)
    if ready is None or not ready.last_transition_time:
        return float("inf")
    try:
        since = datetime.strptime(ready.last_transition_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return float("inf")
    return (now - since).total_seconds()
