"""MirrorSession: its reconciler, registered. A session also follows its target and filter: when
either's AWS ID changes (a replaced target), the resync brings the session along."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from trafficmirror.api import MIRROR_SESSION
from trafficmirror.handlers.indexes import one
from trafficmirror.handlers.registration import Binding, Tracked, register
from trafficmirror.reconcile.kinds import SESSION
from trafficmirror.reconcile.seam import ClusterFacts

DEPENDENCY_WAIT_SECONDS = 5.0


def dependency_facts(
    namespace: str, name: str, spec: Mapping[str, Any], indexes: Mapping[str, Any], deleting: bool = False
) -> ClusterFacts:
    """The session's MirrorTarget and MirrorFilter as kopf's indexes know them (no API call)."""
    return ClusterFacts(
        target=one(indexes["target_states"], (namespace, (spec.get("targetRef") or {}).get("name", ""))),
        mirror_filter=one(indexes["filter_states"], (namespace, (spec.get("filterRef") or {}).get("name", ""))),
    )


async def settled(namespace: str, spec: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    """Wait a little for a target and filter created together with the session to become Ready.

    Their states come from kopf's in-memory indexes, so waiting costs no API call; it saves the
    session a round of "WaitingForTarget" and a retry when all three are applied at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEPENDENCY_WAIT_SECONDS
    while loop.time() < deadline:
        facts = dependency_facts(namespace, "", spec, indexes)
        if all(d is not None and d.phase in ("Ready", "Failed") for d in (facts.target, facts.mirror_filter)):
            return
        await asyncio.sleep(0.2)


def follows(tracked: Tracked, indexes: Mapping[str, Any]) -> bool:
    """A Ready session whose target or filter now has another AWS ID."""
    if tracked.request is None:
        return False
    facts = dependency_facts(tracked.namespace, tracked.name, tracked.raw_spec, indexes)
    target, mirror_filter = facts.target, facts.mirror_filter
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
        uses_indexes=("target_states", "filter_states"),
        follows=follows,
        before_reconcile=settled,
    )
)
