"""MirrorSession: its reconciler, registered. A session also follows its target and filter: when
either's AWS ID changes (a replaced target), the resync brings the session along. A session that
chooses from a pool (`spec.targetSelector`) is brought along the same way when its chosen target is
gone or no longer Ready: its reconcile chooses again."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from trafficmirror.api import MIRROR_SESSION, Phase
from trafficmirror.handlers.indexes import one, pool_of
from trafficmirror.handlers.registration import Binding, Tracked, register
from trafficmirror.handlers.workload import is_selector
from trafficmirror.reconcile.kinds import SESSION
from trafficmirror.reconcile.placement import sources_by_target
from trafficmirror.reconcile.seam import ClusterFacts, Dependency

DEPENDENCY_WAIT_SECONDS = 5.0


def dependency_facts(
    namespace: str, name: str, spec: Mapping[str, Any], indexes: Mapping[str, Any], deleting: bool = False
) -> ClusterFacts:
    """The session's MirrorTarget (or pool) and MirrorFilter as kopf's indexes know them (no API call)."""
    mirror_filter = one(indexes["filter_states"], (namespace, (spec.get("filterRef") or {}).get("name", "")))
    selector = spec.get("targetSelector")
    if not selector:
        target = one(indexes["target_states"], (namespace, (spec.get("targetRef") or {}).get("name", "")))
        return ClusterFacts(target=target, mirror_filter=mirror_filter)
    # A pool: the target is the one chosen last time (status.targetName); the reconcile may choose anew.
    pool = pool_of(indexes["target_states"], namespace, dict(selector.get("matchLabels") or {}))
    uid, chosen = one(indexes["session_choices"], (namespace, name)) or ("", "")
    placements = {key: next(iter(store)) for key, store in indexes["session_placements"].items() if store}
    return ClusterFacts(
        target=next((member for member in pool if chosen and member.name == chosen), None),
        mirror_filter=mirror_filter,
        pool=pool,
        pool_sources=sources_by_target(placements, excluding_uid=uid),
    )


def _awaited(facts: ClusterFacts) -> tuple[Dependency | None, Dependency | None]:
    if facts.pool is not None and facts.target is None:  # a pool: wait for its first member at most
        return (facts.pool[0] if facts.pool else None), facts.mirror_filter
    return facts.target, facts.mirror_filter


async def settled(namespace: str, spec: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    """Wait a little for a target and filter created together with the session to become Ready.

    Their states come from kopf's in-memory indexes, so waiting costs no API call; it saves the
    session a round of "WaitingForTarget" and a retry when all three are applied at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEPENDENCY_WAIT_SECONDS
    while loop.time() < deadline:
        awaited = _awaited(dependency_facts(namespace, "", spec, indexes))
        if all(d is not None and d.phase in ("Ready", "Failed") for d in awaited):
            return
        await asyncio.sleep(0.2)


def follows(tracked: Tracked, indexes: Mapping[str, Any]) -> bool:
    """A Ready session whose target or filter now has another AWS ID, or whose chosen target of a
    pool is gone or no longer Ready (its reconcile chooses again)."""
    if tracked.request is None:
        return False
    facts = dependency_facts(tracked.namespace, tracked.name, tracked.raw_spec, indexes)
    target, mirror_filter = facts.target, facts.mirror_filter
    if facts.pool is not None and (target is None or target.phase != Phase.READY.value):
        return True
    if target is None or mirror_filter is None or not (target.aws_id and mirror_filter.aws_id):
        return False
    status = tracked.request.status
    current = (status.traffic_mirror_target_id, status.traffic_mirror_filter_id)
    return current != (target.aws_id, mirror_filter.aws_id)


BINDING = register(
    Binding(
        MIRROR_SESSION,
        SESSION,
        dependency_facts,
        uses_indexes=("target_states", "filter_states", "session_placements", "session_choices"),
        follows=follows,
        before_reconcile=settled,
        # A pod or node selector session is not mirrored itself: handlers.workload makes its children.
        applies=lambda spec: not is_selector(spec),
    )
)
