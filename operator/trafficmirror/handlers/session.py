"""MirrorSession handlers. A session also follows its target and filter: when either's AWS ID
changes (a replaced target), the timer and the dependency index bring the session along."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from trafficmirror.api import Phase
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.indexes import SESSIONS, one, pool_of
from trafficmirror.reconcile.kinds import SESSION
from trafficmirror.reconcile.placement import sources_by_target
from trafficmirror.reconcile.seam import ClusterFacts, Dependency, Request

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
    session_placements: kopf.Index[Any, Any],
    target_owners: kopf.Index[str, str],
    filter_owners: kopf.Index[str, str],
    session_owners: kopf.Index[str, str],
    **_: Any,
) -> None:
    owners = apply.live_owners_of(target_owners, filter_owners, session_owners)
    await _reconcile(
        body, patch, retry, logger, memo, node_provider_ids, target_states, filter_states, owners, session_placements
    )


def _facts(
    body: kopf.Body,
    target_states: kopf.Index[Any, Any],
    filter_states: kopf.Index[Any, Any],
    session_placements: kopf.Index[Any, Any] | None = None,
) -> ClusterFacts:
    namespace, spec = body["metadata"]["namespace"], body.get("spec", {})
    mirror_filter = one(filter_states, (namespace, (spec.get("filterRef") or {}).get("name", "")))
    selector = spec.get("targetSelector")
    if not selector:
        target = one(target_states, (namespace, (spec.get("targetRef") or {}).get("name", "")))
        return ClusterFacts(target=target, mirror_filter=mirror_filter)
    # A pool: the target is the one chosen last time (status.targetName); the reconcile may choose anew.
    pool = pool_of(target_states, namespace, dict(selector.get("matchLabels") or {}))
    chosen = body.get("status", {}).get("targetName")
    placements = {uid: next(iter(store)) for uid, store in (session_placements or {}).items() if store}
    return ClusterFacts(
        target=next((member for member in pool if member.name == chosen), None),
        mirror_filter=mirror_filter,
        pool=pool,
        pool_sources=sources_by_target(placements, excluding_uid=body["metadata"]["uid"]),
    )


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    target_states: kopf.Index[Any, Any],
    filter_states: kopf.Index[Any, Any],
    live_owners: Callable[[str], str | None],
    session_placements: kopf.Index[Any, Any] | None = None,
    from_timer: bool = False,
) -> None:
    if not from_timer:
        await _settled(lambda: _dependencies(_facts(body, target_states, filter_states)))
    await apply.run(
        KIND,
        SESSION.reconcile,
        apply.request_of(SESSION, body, memo.context, _facts(body, target_states, filter_states, session_placements)),
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=memo.context,
        node_provider_ids=node_provider_ids,
        live_owners=live_owners,
        from_timer=from_timer,
    )


def _dependencies(facts: ClusterFacts) -> tuple[Dependency | None, Dependency | None]:
    if facts.pool is not None and facts.target is None:  # a pool: wait for its first member at most
        return (facts.pool[0] if facts.pool else None), facts.mirror_filter
    return facts.target, facts.mirror_filter


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
    session_placements: kopf.Index[Any, Any],
    target_owners: kopf.Index[str, str],
    filter_owners: kopf.Index[str, str],
    session_owners: kopf.Index[str, str],
    **_: Any,
) -> None:
    """Costs no AWS call: compares the IDs in status with the target's and filter's current ones."""
    status = body.get("status", {})
    if status.get("phase") != Phase.READY.value or body["metadata"].get("deletionTimestamp"):
        return
    facts = _facts(body, target_states, filter_states)
    target, mirror_filter = facts.target, facts.mirror_filter
    current = (status.get("trafficMirrorTargetId"), status.get("trafficMirrorFilterId"))
    # From a pool, a chosen target that is gone or no longer Ready means choosing again.
    chosen_gone = facts.pool is not None and (target is None or target.phase != Phase.READY.value)
    if not chosen_gone:
        if target is None or mirror_filter is None or current == (target.aws_id, mirror_filter.aws_id):
            return
        if not (target.aws_id and mirror_filter.aws_id):
            return
    wanted = (
        "a target of its pool" if chosen_gone else (target and target.aws_id, mirror_filter and mirror_filter.aws_id)
    )
    logger.info(f"following target/filter: {current} → {wanted}")
    owners = apply.live_owners_of(target_owners, filter_owners, session_owners)
    await _reconcile(
        body,
        patch,
        retry,
        logger,
        memo,
        node_provider_ids,
        target_states,
        filter_states,
        owners,
        session_placements,
        from_timer=True,
    )


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
    session_placements: kopf.Index[Any, Any],
    target_owners: kopf.Index[str, str],
    filter_owners: kopf.Index[str, str],
    session_owners: kopf.Index[str, str],
    **_: Any,
) -> None:
    action = apply.resync_action(body, memo.config.resync_seconds)
    if action == "skip":
        return
    facts = _facts(body, target_states, filter_states, session_placements)
    request = apply.request_of(SESSION, body, memo.context, facts)
    if action == "compare" and isinstance(request, Request):
        aws_id = SESSION.observed_id(request.status)
        known = (await memo.snapshot.get(SESSION.snapshot_kind, request.spec.region)).get(aws_id)
        if SESSION.in_sync(request, known):
            return  # in sync: no call beyond the shared Describe
        logger.info(f"drift: {aws_id} is {'changed' if known else 'missing'} in the snapshot")
    # Not Ready: Pending, or Failed for a fact of the world that may since have changed (the seed's fix).
    owners = apply.live_owners_of(target_owners, filter_owners, session_owners)
    await _reconcile(
        body,
        patch,
        retry,
        logger,
        memo,
        node_provider_ids,
        target_states,
        filter_states,
        owners,
        session_placements,
        from_timer=True,
    )


@kopf.on.delete(*SESSIONS)
async def delete(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: logging.Logger, memo: kopf.Memo, **_: Any
) -> None:
    patch.status["phase"] = Phase.DELETING.value
    request = apply.request_of(SESSION, body, memo.context)
    if isinstance(request, Request):  # an invalid spec names no region nor policy to delete by
        await apply.run(
            KIND, SESSION.delete, request, body=body, patch=patch, retry=retry, logger=logger, context=memo.context
        )
    apply.forget(body["metadata"]["uid"])
