"""Turns a reconciler's `Outcome` into kopf's terms: a status patch, Events, a retry or nothing."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from trafficmirror.api import ready_condition
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.metrics import RECONCILES, RESOURCES
from trafficmirror.reconcile.common import RECHECKED_AT_RESYNC, Outcome, Owner, merge_conditions, transition_events
from trafficmirror.reconcile.context import ReconcileContext, RetryLater
from trafficmirror.reconcile.seam import ClusterFacts, Reconciler, Request, parse_request
from trafficmirror.reconcile.timebox import parse_time

MAX_BACKOFF_SECONDS = 300.0
NOT_FOUND_RETRY_SECONDS = 2.0
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
        created_at=parse_time(meta.get("creationTimestamp")),
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
        body.get("spec") or {},
        body.get("status") or {},
        dict(body["metadata"].get("annotations") or {}),
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


def context_for(context: ReconcileContext, indexes: Mapping[str, Any]) -> ReconcileContext:
    """The context with what kopf's indexes know now: nodes' provider IDs, the live owners, Services'
    load-balancer hostnames."""
    changes: dict[str, Any] = {}
    node_provider_ids = indexes.get("node_provider_ids")
    if node_provider_ids is not None:
        changes["node_provider_ids"] = {name: next(iter(store), "") for name, store in node_provider_ids.items()}
    owners = [indexes[name] for name in ("target_owners", "filter_owners", "session_owners") if name in indexes]
    if owners:
        changes["live_owners"] = live_owners_of(*owners)
    service_load_balancers = indexes.get("service_load_balancers")
    if service_load_balancers is not None:
        changes["service_hostnames"] = {key: next(iter(store), "") for key, store in service_load_balancers.items()}
    return dataclasses.replace(context, **changes) if changes else context


async def run(
    kind: str,
    decide: Callable[[], Awaitable[tuple[Outcome | None, Mapping[str, Any]]]],
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    from_timer: bool = False,
) -> Outcome | None:
    """Run a reconcile step (`decide` gives its outcome and the annotations as they are now), then
    write what it decided.

    Waiting (an Outcome with `retry_after`) and AWS trouble become kopf's TemporaryError: kopf
    retries the handler after the delay, with the status written in the meantime. From a timer
    nothing is raised: its next run, one period later, is the retry a periodic check wants.
    """
    try:
        outcome, annotations = await decide()
    except (RetryLater, AwsError) as error:
        RECONCILES.labels(kind, "retry").inc()
        if isinstance(error, RetryLater) and error.outcome is not None:
            write(kind, body, patch, error.outcome)
        if from_timer:
            logger.warning(f"the next resync tries again: {error}")
            return None
        if isinstance(error, AwsError) and error.error_class is ErrorClass.NOT_FOUND:
            # A resource deleted outside while it was being changed: the world moved, not a failure
            # to back off from; the next run sees it gone. (kopf's retry count also counts waits, so
            # a backoff here grows past the resync bound, and the spec edits that follow wait behind it.)
            raise kopf.TemporaryError(str(error), delay=NOT_FOUND_RETRY_SECONDS) from error
        delay = error.delay if isinstance(error, RetryLater) else None
        raise kopf.TemporaryError(str(error), delay=backoff(retry, base=delay or 2.0)) from error
    if outcome is None:
        RECONCILES.labels(kind, "done").inc()
        return None
    write(kind, body, patch, outcome, annotations)
    RECONCILES.labels(kind, outcome.phase.value).inc()
    if outcome.retry_after is not None and not from_timer:
        message = next((c.message for c in outcome.conditions if c.type == "Ready"), "")
        # Waiting on something else is not an error: short, steady delays; only failures back off.
        raise kopf.TemporaryError(message, delay=outcome.retry_after)
    return outcome


def write(
    kind: str, body: kopf.Body, patch: kopf.Patch, outcome: Outcome, annotations: Mapping[str, Any] | None = None
) -> None:
    """The outcome as a status patch (only what differs: a status the object already has costs no
    write), its Events, and the annotations it changes."""
    status = body.get("status") or {}
    generation = int(body["metadata"].get("generation", 1))
    for event in transition_events(status.get("phase"), _ready_reason(status), outcome):
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
    conditions = merge_conditions(
        list(status.get("conditions") or []), outcome.conditions, generation, clear=outcome.clear_conditions
    )
    wanted: dict[str, Any] = {
        "phase": outcome.phase.value,
        "observedGeneration": generation,
        "conditions": conditions,
        **outcome.status_fields,
    }
    for key, value in wanted.items():
        if status.get(key) != value:
            patch.status[key] = merge_patch_value(status.get(key), value)
    current = (body["metadata"].get("annotations") or {}) if annotations is None else annotations
    for key, value in outcome.annotations.items():
        if current.get(key) != value:  # an unchanged annotation would cost a metadata patch of its own
            patch.metadata.annotations[key] = value
    count_phase(kind, body["metadata"]["uid"], outcome.phase.value)


def merge_patch_value(old: Any, new: Any) -> Any:
    """`new` as a JSON merge patch over `old`: a key a map no longer has is removed only when sent as null."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {**dict.fromkeys(k for k in old if k not in new), **new}
    return new


def _ready_reason(status: Mapping[str, Any]) -> str | None:
    condition = ready_condition(status)
    return condition.reason if condition is not None else None


def count_phase(kind: str, uid: str, phase: str | None) -> None:
    previous = _phases.pop(uid, None)
    if previous is not None:
        RESOURCES.labels(*previous).dec()
    if phase is not None:
        _phases[uid] = (kind, phase)
        RESOURCES.labels(kind, phase).inc()


def forget(uid: str) -> None:
    count_phase("", uid, None)


# Failures that the world can fix without a spec change: looked at again once a period.
RECOVERABLE_FAILURES = RECHECKED_AT_RESYNC


def resync_action(phase: str | None, reason: str | None) -> str:
    """What the resync does with an object: 'skip', 'compare' (Ready: against the snapshot) or 'reconcile'.

    Pending and Deleting objects belong to the change and delete handlers, which kopf retries
    until they are done; a Failed object waits for a spec change, unless the world can fix it.
    """
    if phase == "Ready":
        return "compare"
    if phase == "Failed" and reason in RECOVERABLE_FAILURES:
        return "reconcile"
    return "skip"
