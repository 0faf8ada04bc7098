"""One parameterised registration per kind: the kopf handlers every kind shares, written once.

A kind is described by a `Binding` (its API `Kind`, how to reconcile, delete and compare it, and
what it needs from the operator's indexes); `register` turns it into kopf's change and delete
handlers and the in-memory index the batched resync (`handlers.resync`) walks. There are no
per-object timers: one loop per kind compares every object with one shared Describe per period and
nudges only the objects that need a reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar, cast

import kopf
from pydantic import BaseModel, ValidationError

from trafficmirror.api import GROUP, VERSION, Kind, Phase
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.indexes import all_of
from trafficmirror.handlers.patching import patch_annotations
from trafficmirror.reconcile.common import CREATE_INTENT_ANNOTATION, Outcome, Owner, failed
from trafficmirror.reconcile.context import ReconcileContext

SpecT = TypeVar("SpecT", bound=BaseModel)

INVALID_SPEC = "InvalidSpec"
# Written by the resync loop to ask for a reconcile; outside the operator's own annotation prefix,
# so that kopf sees it as a change of the object (its own prefix is left out of the diff).
NUDGE_ANNOTATION = f"resync.{GROUP}/requested"


@dataclass(frozen=True)
class Request(Generic[SpecT]):
    """Everything a reconcile or delete of one object is decided from."""

    owner: Owner
    spec: SpecT
    status: dict[str, Any]
    annotations: dict[str, str]
    indexes: Mapping[str, Any]  # kopf's in-memory indexes, by name
    context: ReconcileContext


class Follows(Protocol):
    def __call__(self, tracked: Tracked, indexes: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True)
class Tracked:
    """What the resync keeps of one object between watch events: small, and the spec parsed once."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: BaseModel | None  # None: the stored spec does not validate
    region: str | None
    status: dict[str, Any]  # without conditions
    phase: str | None
    ready_reason: str | None
    ready_since: str | None
    deleting: bool
    seen_at: float  # wall clock of the watch event this was built from


@dataclass(frozen=True)
class Binding(Generic[SpecT]):
    api: Kind
    reconcile: Callable[[Request[SpecT]], Outcome | None]
    delete: Callable[[Request[SpecT]], Outcome | None]
    # Whether AWS (one resource from the shared Describe, None when missing) matches the object.
    in_sync: Callable[[SpecT, Mapping[str, Any], Any | None], bool]
    # Named kopf indexes the handlers of this kind need besides the object.
    uses_indexes: tuple[str, ...] = ()
    # Cheap, in-memory check that a Ready object must follow something else (a session, its target).
    follows: Follows | None = None
    # Awaited before a change handler's reconcile (a session waits briefly for its dependencies).
    before_reconcile: Callable[[Request[SpecT]], Awaitable[None]] | None = None
    events: list[str] = field(default_factory=list)

    @property
    def spec_model(self) -> type[SpecT]:
        return cast(type[SpecT], self.api.spec_model)

    @property
    def snapshot_kind(self) -> str:
        """The resync's shared Describe: "targets" | "filters" | "sessions"."""
        return self.api.plural.removeprefix("mirror")

    @property
    def resource(self) -> tuple[str, str, str]:
        return (GROUP, VERSION, self.api.plural)

    @property
    def index_name(self) -> str:
        return f"tracked_{self.api.plural}"


BINDINGS: dict[str, Binding[Any]] = {}


def ready_condition(status: Mapping[str, Any]) -> dict[str, Any]:
    """The Ready condition of a stored status ({} when there is none)."""
    return next((dict(c) for c in status.get("conditions", []) if c.get("type") == "Ready"), {})


def decided_by(
    reconcile: Callable[[Owner, SpecT, dict[str, Any], dict[str, str], ReconcileContext], Outcome],
) -> Callable[[Request[SpecT]], Outcome | None]:
    """A reconciler that needs nothing but the object and the context."""
    return lambda r: reconcile(r.owner, r.spec, r.status, r.annotations, r.context)


def deleted_by(
    delete: Callable[[SpecT, dict[str, Any], ReconcileContext, list[str]], Outcome | None], referenced_as: str
) -> Callable[[Request[SpecT]], Outcome | None]:
    """A delete that waits for the sessions referencing the object (`referenced_as`: 'target' | 'filter')."""

    def decide(r: Request[SpecT]) -> Outcome | None:
        users = all_of(r.indexes["session_users"], (r.owner.namespace, referenced_as, r.owner.name))
        return delete(r.spec, r.status, r.context, users)

    return decide


def register_referenced(
    api: Kind,
    reconcile: Callable[[Owner, SpecT, dict[str, Any], dict[str, str], ReconcileContext], Outcome],
    delete: Callable[[SpecT, dict[str, Any], ReconcileContext, list[str]], Outcome | None],
    in_sync: Callable[[SpecT, Mapping[str, Any], Any | None], bool],
) -> Binding[SpecT]:
    """A kind that sessions reference (targets, filters): deleted only when no session uses it."""
    referenced_as = api.plural.removeprefix("mirror").removesuffix("s")
    binding = Binding(
        api=api,
        reconcile=decided_by(reconcile),
        delete=deleted_by(delete, referenced_as),
        in_sync=in_sync,
        uses_indexes=("session_users",),
    )
    return register(binding)


def track(binding: Binding[Any], body: kopf.Body) -> Tracked:
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    ready = ready_condition(status)
    status.pop("conditions", None)
    try:
        spec: BaseModel | None = binding.spec_model.model_validate(dict(body.get("spec") or {}))
    except ValidationError:
        spec = None
    return Tracked(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=spec,
        region=getattr(spec, "region", None),
        status=status,
        phase=status.get("phase"),
        ready_reason=ready.get("reason"),
        ready_since=ready.get("lastTransitionTime"),
        deleting=bool(meta.get("deletionTimestamp")),
        seen_at=time.time(),
    )


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
    return apply.resync_action(status.get("phase"), ready_condition(status).get("reason")) == "reconcile"


def _invalid_spec(error: ValidationError) -> Outcome:
    problems = "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else f"spec: {e['msg']}"
        for e in error.errors()
    )
    return failed(INVALID_SPEC, f"the stored spec is not valid, change it: {problems}"[:1000])


def _request(binding: Binding[SpecT], body: kopf.Body, memo: kopf.Memo, indexes: Mapping[str, Any]) -> Request[SpecT]:
    spec = binding.spec_model.model_validate(dict(body.get("spec") or {}))
    return Request(
        owner=apply.owner_of(binding.api.kind, body, memo.context),
        spec=spec,
        status=dict(body.get("status") or {}),
        annotations=dict(body["metadata"].get("annotations") or {}),
        indexes=indexes,
        context=apply.with_nodes(memo.context, indexes.get("node_provider_ids")),
    )


def register(binding: Binding[SpecT]) -> Binding[SpecT]:
    """kopf's handlers for one kind: change (create, update of the spec, resume, resync nudge),
    delete, and the index of tracked objects."""
    kind, resource = binding.api.kind, binding.resource
    BINDINGS[kind] = binding

    def pick(kwargs: dict[str, Any]) -> dict[str, Any]:
        return {name: kwargs[name] for name in (*binding.uses_indexes, "node_provider_ids") if name in kwargs}

    async def change(kwargs: dict[str, Any], nudged: bool = False, from_timer: bool = False) -> None:
        body: kopf.Body = kwargs["body"]
        patch: kopf.Patch = kwargs["patch"]
        if body["metadata"].get("deletionTimestamp"):
            return
        try:
            request = _request(binding, body, kwargs["memo"], pick(kwargs))
        except ValidationError as error:
            apply.write(kind, body, patch, _invalid_spec(error))
            return
        if binding.before_reconcile is not None and not (nudged or from_timer):
            await binding.before_reconcile(request)
        memo, logger = kwargs["memo"], kwargs["logger"]

        async def decide() -> tuple[Outcome | None, Mapping[str, Any]]:
            current = request
            outcome = await asyncio.to_thread(binding.reconcile, current)
            if is_create_intent(outcome):
                # The intent (the create's token) must be stored before the create is sent; it is
                # written at once, and the create follows in the same call: no status write, no
                # Event and no kopf retry for the step in between.
                assert outcome is not None
                intent = {k: v for k, v in outcome.annotations.items() if v is not None}
                meta = body["metadata"]
                await patch_annotations(memo.settings, binding.api, meta["namespace"], meta["name"], intent, logger)
                current = replace(current, annotations={**current.annotations, **intent})
                outcome = await asyncio.to_thread(binding.reconcile, current)
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
        patch.status["phase"] = Phase.DELETING.value
        try:
            request = _request(binding, body, memo, pick(kwargs))
        except ValidationError:
            logger.warning("the stored spec is not valid: nothing in AWS is deleted for it")
        else:

            async def decide() -> tuple[Outcome | None, Mapping[str, Any]]:
                return await asyncio.to_thread(binding.delete, request), request.annotations

            await apply.run(kind, decide, body=body, patch=patch, retry=retry, logger=logger)
        apply.forget(body["metadata"]["uid"])

    def tracked(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Tracked]:
        meta = body["metadata"]
        return {(meta["namespace"], meta["name"]): track(binding, body)}

    handler_id = kind.lower()
    kopf.on.create(*resource, id=f"{handler_id}-reconcile")(on_change)
    kopf.on.update(*resource, id=f"{handler_id}-reconcile", field="spec")(on_change)
    kopf.on.update(*resource, id=f"{handler_id}-nudge", field=("metadata", "annotations", NUDGE_ANNOTATION))(on_nudge)
    kopf.on.resume(*resource, id=f"{handler_id}-resume")(on_resume)
    kopf.on.delete(*resource, id=f"{handler_id}-delete")(on_delete)
    # Failures the world can fix (an instance resized, a quota freed) are looked at again once a period.
    # Only such objects have a timer (kopf starts and stops it as the filter's answer changes): a
    # Ready object has none, the batched resync compares it.
    kopf.timer(
        *resource,
        id=f"{handler_id}-recheck",
        interval=RESYNC_SECONDS,
        initial_delay=RESYNC_SECONDS,
        when=recheckable,
    )(on_recheck)
    kopf.index(*resource, id=binding.index_name)(tracked)
    return binding
