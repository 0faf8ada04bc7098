"""One parameterised registration per kind: the kopf handlers every kind shares, written once.

A kind is a `Binding`: its reconciler (the typed seam, `reconcile.seam.Reconciler`) and what the
cluster must tell it (`facts`, from kopf's in-memory indexes). `register` turns it into kopf's
change and delete handlers, a timer only for failures the world can fix, and the index of tracked
objects that the batched resync (`handlers.resync`) walks: there is no per-object timer for a Ready
object; one loop per kind compares them all with one shared Describe per period and nudges only
the objects that need a reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf

from trafficmirror.api import GROUP, VERSION, Kind, Phase, ready_condition
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.onloop import on_loop
from trafficmirror.handlers.patching import patch_annotations
from trafficmirror.reconcile.common import ANNOTATION_PREFIX, CREATE_INTENT_ANNOTATION, Outcome
from trafficmirror.reconcile.context import ReconcileContext
from trafficmirror.reconcile.seam import ClusterFacts, Reconciler, Request, parse_request

# kopf's finalizer on every object of ours (settings.persistence.finalizer).
FINALIZER = f"{ANNOTATION_PREFIX}/finalizer"
# Written by the resync loop to ask for a reconcile; outside the operator's own annotation prefix,
# so that kopf sees it as a change of the object (its own prefix is left out of the diff).
NUDGE_ANNOTATION = f"resync.{GROUP}/requested"
# The indexes every change handler may need: nodes (ENIs by node name), live owners (adoption).
COMMON_INDEXES = ("node_provider_ids", "target_owners", "filter_owners", "session_owners")

# Status fields the resync does not read, left out of what it keeps of each object.
TRACKED_STATUS_LEFT_OUT = frozenset({"conditions"})
# What a kind needs to know from the cluster: (namespace, name, raw spec, indexes, for a delete) → facts.
FactsOf = Callable[[str, str, Mapping[str, Any], Mapping[str, Any], bool], ClusterFacts]


@dataclass(frozen=True)
class Tracked:
    """What the resync keeps of one object between watch events: small, parsed once per change."""

    namespace: str
    name: str
    uid: str
    request: Request[Any, Any] | None  # None: the stored spec does not validate
    raw_spec: Mapping[str, Any]
    phase: str | None
    ready_reason: str | None
    deleting: bool
    seen_at: float  # wall clock of the watch event this was built from
    generation: int = 1
    observed_generation: int | None = None  # the generation the status was written for
    retry_at: float | None = None  # wall clock of the earliest retry kopf's progress records promise
    finalized: bool = True  # kopf's finalizer is on it: kopf has begun, and a delete waits for its handler

    @property
    def region(self) -> str | None:
        return self.request.spec.region if self.request is not None else None


@dataclass(frozen=True)
class Binding:
    api: Kind
    reconciler: Reconciler[Any, Any, Any]
    facts: FactsOf
    # Named kopf indexes `facts` reads.
    uses_indexes: tuple[str, ...] = ()
    # Cheap, in-memory check that a Ready object must follow something else (a session, its target).
    follows: Callable[[Tracked, Mapping[str, Any]], bool] | None = None
    # Awaited before a change handler's reconcile (a session waits briefly for its dependencies).
    before_reconcile: Callable[[str, Mapping[str, Any], Mapping[str, Any]], Awaitable[None]] | None = None
    # Only objects whose spec passes this are the kind's (selector sessions have handlers of their own).
    applies: Callable[[Mapping[str, Any]], bool] | None = None

    @property
    def snapshot_kind(self) -> str:
        return self.reconciler.snapshot_kind

    @property
    def resource(self) -> tuple[str, str, str]:
        return (GROUP, VERSION, self.api.plural)

    @property
    def index_name(self) -> str:
        return f"tracked_{self.api.plural}"

    def in_sync(self, tracked: Tracked, observed: Any | None, indexes: Mapping[str, Any]) -> bool:
        """Whether AWS (one resource of the shared Describe, None when missing) matches the object."""
        if tracked.request is None:
            return True  # an invalid spec is the change handler's (Failed/InvalidSpec)
        facts = self.facts(tracked.namespace, tracked.name, tracked.raw_spec, indexes, False)
        return bool(self.reconciler.in_sync(replace(tracked.request, facts=facts), observed))


BINDINGS: dict[str, Binding] = {}


class Handling:
    """The objects a change handler of this process is at (waiting for a reconcile slot included), and
    when the last one of each ended.

    A retry that kopf promised is late while its handler waits its turn behind thousands of others: that
    is no retry nobody runs, and nudging it only queues one more reconcile of it (and, nudged again every
    follow period, a patch each time). The resync takes a handler at work, or just ended, as seen.
    """

    def __init__(self, keep_ended: float = 65.0) -> None:
        self._active: dict[str, int] = {}  # uid → handlers in progress
        self._ended: dict[str, float] = {}  # uid → wall clock when the last one ended
        self.keep_ended = keep_ended  # seconds an end is remembered (the resync's longest look back)

    @contextlib.contextmanager
    def at(self, uid: str) -> Iterator[None]:
        self._active[uid] = self._active.get(uid, 0) + 1
        try:
            yield
        finally:
            left = self._active.pop(uid) - 1
            if left:
                self._active[uid] = left
            self._ended[uid] = time.time()

    def seen_at(self, uid: str) -> float | None:
        """Now (infinity) while a handler is at it, when the last one ended, or None."""
        return math.inf if uid in self._active else self._ended.get(uid)

    def forget_old(self, now: float) -> None:
        self._ended = {uid: at for uid, at in self._ended.items() if now - at < self.keep_ended}


HANDLING = Handling()


def track(binding: Binding, body: kopf.Body, context: ReconcileContext) -> Tracked:
    meta = body["metadata"]
    status = body.get("status") or {}
    ready = ready_condition(status)
    # Kept for every object for its whole life: the resync compares only the spec and the status's
    # IDs and recorded facts, so neither the conditions (their messages) nor the annotations (kopf's
    # records) are parsed into it.
    request = parse_request(
        binding.reconciler,
        apply.owner_of(binding.reconciler.kind, body, context),
        body.get("spec") or {},
        {key: value for key, value in status.items() if key not in TRACKED_STATUS_LEFT_OUT},
    )
    return Tracked(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        request=request if isinstance(request, Request) else None,
        raw_spec=dict(body.get("spec") or {}),
        phase=status.get("phase"),
        ready_reason=ready.reason if ready is not None else None,
        deleting=bool(meta.get("deletionTimestamp")),
        seen_at=time.time(),
        generation=int(meta.get("generation", 1)),
        observed_generation=status.get("observedGeneration"),
        retry_at=promised_retry(meta.get("annotations") or {}),
        finalized=FINALIZER in (meta.get("finalizers") or ()),
    )


def promised_retry(annotations: Mapping[str, str]) -> float | None:
    """When kopf's progress records (one annotation per handler under our prefix) say that a handler
    that failed temporarily runs again: the earliest such time, None when no handler waits."""
    times = []
    for key, value in annotations.items():
        if not key.startswith(f"{ANNOTATION_PREFIX}/") or key.endswith("/last-handled-configuration"):
            continue
        if not isinstance(value, str) or not value.startswith("{"):
            continue
        try:
            record = json.loads(value)
        except ValueError:
            continue
        delayed = record.get("delayed") if isinstance(record, dict) else None
        if not delayed or record.get("success") or record.get("failure"):
            continue
        try:
            times.append(datetime.fromisoformat(delayed).timestamp())
        except (TypeError, ValueError):
            continue
    return min(times, default=None)


def is_create_intent(outcome: Outcome | None) -> bool:
    """The reconciler's "store the create's token first, then come back at once" (create_once)."""
    return (
        outcome is not None
        and outcome.retry_after == 0
        and outcome.ready_reason == "Creating"
        and CREATE_INTENT_ANNOTATION in outcome.annotations
    )


def nudge_value(why: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {why}"


def recheckable(status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    if meta.get("deletionTimestamp"):
        return False
    ready = ready_condition(status)
    return apply.resync_action(status.get("phase"), ready.reason if ready is not None else None) == "reconcile"


def register(binding: Binding) -> Binding:
    """kopf's handlers for one kind: change (create, update of the spec, resume, resync nudge),
    delete, a recheck timer for failures the world can fix, and the index of tracked objects."""
    kind, resource, reconciler = binding.api.kind, binding.resource, binding.reconciler
    BINDINGS[kind] = binding

    def indexes_of(kwargs: dict[str, Any]) -> dict[str, Any]:
        return {name: kwargs[name] for name in (*binding.uses_indexes, *COMMON_INDEXES) if name in kwargs}

    async def change(kwargs: dict[str, Any], nudged: bool = False, from_timer: bool = False) -> None:
        body: kopf.Body = kwargs["body"]
        if body["metadata"].get("deletionTimestamp"):
            return
        meta, spec, indexes = body["metadata"], body.get("spec") or {}, indexes_of(kwargs)
        with HANDLING.at(meta["uid"]):
            if binding.before_reconcile is not None and not (nudged or from_timer):
                await binding.before_reconcile(meta["namespace"], spec, indexes)
            async with kwargs["memo"].reconcile_slots:
                await decide_and_write(kwargs, meta, spec, indexes, from_timer)

    async def decide_and_write(
        kwargs: dict[str, Any],
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        indexes: dict[str, Any],
        from_timer: bool,
    ) -> None:
        body: kopf.Body = kwargs["body"]
        patch: kopf.Patch = kwargs["patch"]
        memo, logger = kwargs["memo"], kwargs["logger"]
        context = apply.context_for(memo.context, indexes)
        request = apply.request_of(
            reconciler, body, context, binding.facts(meta["namespace"], meta["name"], spec, indexes, False)
        )

        async def decide() -> tuple[Outcome | None, Mapping[str, Any]]:
            if isinstance(request, Outcome):  # the stored spec is invalid: say so, do not retry
                return request, request.annotations
            current = request
            outcome = await asyncio.to_thread(reconciler.reconcile, current, context)
            if is_create_intent(outcome):
                # The intent (the create's token) must be stored before the create is sent; it is
                # written at once, and the create follows in the same call: no status write, no
                # Event and no kopf retry for the step in between.
                assert outcome is not None
                intent = {k: v for k, v in outcome.annotations.items() if v is not None}
                await patch_annotations(memo.settings, binding.api, meta["namespace"], meta["name"], intent, logger)
                current = replace(current, annotations={**current.annotations, **intent})
                outcome = await asyncio.to_thread(reconciler.reconcile, current, context)
            return outcome, current.annotations

        outcome = await apply.run(
            kind, decide, body=body, patch=patch, retry=kwargs["retry"], logger=logger, from_timer=from_timer
        )
        if from_timer and outcome is not None and outcome.retry_after is not None:
            # Work has begun that the change handler carries on (kopf retries it); the timer stops
            # with the failure it was looking at. The nudge rides on the same patch.
            patch.metadata.annotations[NUDGE_ANNOTATION] = nudge_value("recheck")

    async def on_change(**kwargs: Any) -> None:
        await change(kwargs)

    async def on_resume(**kwargs: Any) -> None:
        # A Ready object of the current generation is the resync's: it is compared with the shared
        # Describe instead of being reconciled one by one (a restart with 10,000 objects stays cheap).
        body: kopf.Body = kwargs["body"]
        status = body.get("status") or {}
        generation = int(body["metadata"].get("generation", 1))
        if status.get("phase") == Phase.READY.value and status.get("observedGeneration") == generation:
            apply.count_phase(kind, body["metadata"]["uid"], Phase.READY.value)
            return
        await change(kwargs)

    async def on_nudge(**kwargs: Any) -> None:
        await change(kwargs, nudged=True)

    async def on_recheck(**kwargs: Any) -> None:
        await change(kwargs, from_timer=True)

    async def on_delete(
        body: kopf.Body, patch: kopf.Patch, retry: int, logger: logging.Logger, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        meta, indexes = body["metadata"], indexes_of(kwargs)
        if (body.get("status") or {}).get("phase") != Phase.DELETING.value:  # no patch that changes nothing
            patch.status["phase"] = Phase.DELETING.value
        context = apply.context_for(memo.context, indexes)
        facts = binding.facts(meta["namespace"], meta["name"], body.get("spec") or {}, indexes, True)
        request = apply.request_of(reconciler, body, context, facts)
        if isinstance(request, Request):  # an invalid spec names no region nor policy to delete by

            async def decide() -> tuple[Outcome | None, Mapping[str, Any]]:
                return await asyncio.to_thread(reconciler.delete, request, context), request.annotations

            with HANDLING.at(meta["uid"]):
                await apply.run(kind, decide, body=body, patch=patch, retry=retry, logger=logger)
        apply.forget(meta["uid"])

    def tracked(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[tuple[str, str], Tracked]:
        meta = body["metadata"]
        return {(meta["namespace"], meta["name"]): track(binding, body, memo.context)}

    handler_id = kind.lower()
    applies = binding.applies

    def ours(spec: kopf.Spec, **_: Any) -> bool:
        return applies is None or applies(spec)

    kopf.on.create(*resource, id=f"{handler_id}-reconcile", when=ours)(on_change)
    kopf.on.update(*resource, id=f"{handler_id}-reconcile", field="spec", when=ours)(on_change)
    kopf.on.update(*resource, id=f"{handler_id}-nudge", field=("metadata", "annotations", NUDGE_ANNOTATION), when=ours)(
        on_nudge
    )
    kopf.on.resume(*resource, id=f"{handler_id}-resume", when=ours)(on_resume)
    kopf.on.delete(*resource, id=f"{handler_id}-delete", when=ours)(on_delete)
    # Failures the world can fix (an instance resized, a quota freed) are looked at again once a period.
    # Only such objects have a timer (kopf starts and stops it as the filter's answer changes): a
    # Ready object has none, the batched resync compares it.
    kopf.timer(
        *resource,
        id=f"{handler_id}-recheck",
        interval=RESYNC_SECONDS,
        initial_delay=RESYNC_SECONDS,
        when=lambda **kwargs: ours(**kwargs) and recheckable(**kwargs),
    )(on_recheck)
    kopf.index(*resource, id=binding.index_name, when=ours)(on_loop(tracked))
    return binding
