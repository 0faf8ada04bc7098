"""MirrorSession handlers. A session also follows its target and filter: when either's AWS ID
changes (a replaced target), the timer and the dependency index bring the session along."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from trafficmirror.api import MirrorSessionSpec, Phase
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.indexes import SESSIONS, one
from trafficmirror.reconcile.session import Dependency, delete_session, reconcile_session

KIND = "MirrorSession"
FOLLOW_SECONDS = 10.0
DEPENDENCY_WAIT_SECONDS = 5.0  # how soon a session notices its target or filter got a new AWS ID


@kopf.on.resume(*SESSIONS)
@kopf.on.create(*SESSIONS)
@kopf.on.update(*SESSIONS, field="spec")
async def reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    target_states: kopf.Index[Any, Any],
    filter_states: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    await _reconcile(body, patch, retry, logger, memo, node_provider_ids, target_states, filter_states)


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    target_states: kopf.Index[Any, Any],
    filter_states: kopf.Index[Any, Any],
    from_timer: bool = False,
) -> None:
    spec = MirrorSessionSpec.model_validate(dict(body["spec"]))
    namespace = body["metadata"]["namespace"]
    target_key, filter_key = (namespace, spec.target_ref.name), (namespace, spec.filter_ref.name)
    if not from_timer:
        await _settled(lambda: (one(target_states, target_key), one(filter_states, filter_key)))
    await apply.run(
        KIND,
        reconcile_session,
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=memo.context,
        node_provider_ids=node_provider_ids,
        owner=apply.owner_of(KIND, body, memo.context),
        spec=spec,
        status=dict(body.get("status", {})),
        annotations=dict(body["metadata"].get("annotations", {})),
        target=one(target_states, target_key),
        mirror_filter=one(filter_states, filter_key),
        from_timer=from_timer,
    )


async def _settled(dependencies: Callable[[], tuple[Dependency | None, Dependency | None]]) -> None:
    """Wait a little for a target and filter created together with the session to become Ready.

    Their states come from kopf's in-memory indexes, so waiting costs no API call; it saves the
    session a round of "WaitingForTarget" and a retry when all three are applied at once.
    """
    deadline = asyncio.get_running_loop().time() + DEPENDENCY_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        states = dependencies()
        if all(d is not None and d.phase in ("Ready", "Failed") for d in states):
            return
        await asyncio.sleep(0.2)


@kopf.timer(*SESSIONS, interval=FOLLOW_SECONDS, initial_delay=FOLLOW_SECONDS)
async def follow_dependencies(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    target_states: kopf.Index[Any, Any],
    filter_states: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """Costs no AWS call: compares the IDs in status with the target's and filter's current ones."""
    status = body.get("status", {})
    if status.get("phase") != Phase.READY.value or body["metadata"].get("deletionTimestamp"):
        return
    spec = MirrorSessionSpec.model_validate(dict(body["spec"]))
    namespace = body["metadata"]["namespace"]
    target = one(target_states, (namespace, spec.target_ref.name))
    mirror_filter = one(filter_states, (namespace, spec.filter_ref.name))
    current = (status.get("trafficMirrorTargetId"), status.get("trafficMirrorFilterId"))
    if target is None or mirror_filter is None or current == (target.aws_id, mirror_filter.aws_id):
        return
    if not (target.aws_id and mirror_filter.aws_id):
        return
    logger.info(f"following target/filter: {current} → {(target.aws_id, mirror_filter.aws_id)}")
    await _reconcile(body, patch, retry, logger, memo, node_provider_ids, target_states, filter_states, from_timer=True)


@kopf.timer(*SESSIONS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    target_states: kopf.Index[Any, Any],
    filter_states: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    action = apply.resync_action(body, memo.config.resync_seconds)
    if action == "skip":
        return
    status = body.get("status", {})
    spec = MirrorSessionSpec.model_validate(dict(body["spec"]))
    if action == "compare":
        known = (await memo.snapshot.get("sessions", spec.region)).get(status.get("trafficMirrorSessionId"))
        observed = (
            (known.target_id, known.filter_id, known.session_number, known.packet_length, known.virtual_network_id)
            if known
            else None
        )
        recorded = (
            status.get("trafficMirrorTargetId"),
            status.get("trafficMirrorFilterId"),
            spec.session_number,
            spec.packet_length,
            status.get("virtualNetworkId"),
        )
        if observed == recorded:
            return  # in sync: no call beyond the shared Describe
        logger.info(
            f"drift: {status.get('trafficMirrorSessionId')} is {'changed' if known else 'missing'} in the snapshot"
        )
    # Not Ready: Pending, or Failed for an instance type the user may since have changed (the seed's fix).
    await _reconcile(body, patch, retry, logger, memo, node_provider_ids, target_states, filter_states, from_timer=True)


@kopf.on.delete(*SESSIONS)
async def delete(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: logging.Logger, memo: kopf.Memo, **_: Any
) -> None:
    patch.status["phase"] = Phase.DELETING.value
    await apply.run(
        KIND,
        delete_session,
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=memo.context,
        spec=MirrorSessionSpec.model_validate(dict(body["spec"])),
        status=dict(body.get("status", {})),
    )
    apply.forget(body["metadata"]["uid"])
