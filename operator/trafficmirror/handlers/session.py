"""MirrorSession: its binding to the shared registration. A session also follows its target and
filter: when either's AWS ID changes (a replaced target), the resync brings the session along."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from trafficmirror.api import MIRROR_SESSION, MirrorSessionSpec
from trafficmirror.handlers.indexes import one
from trafficmirror.handlers.registration import Binding, Request, Tracked, register
from trafficmirror.reconcile.common import Outcome
from trafficmirror.reconcile.session import Dependency, delete_session, reconcile_session

DEPENDENCY_WAIT_SECONDS = 5.0


def _dependencies(
    namespace: str, spec: MirrorSessionSpec, indexes: Mapping[str, Any]
) -> tuple[Dependency | None, Dependency | None]:
    return (
        one(indexes["target_states"], (namespace, spec.target_ref.name)),
        one(indexes["filter_states"], (namespace, spec.filter_ref.name)),
    )


def _reconcile(request: Request[MirrorSessionSpec]) -> Outcome:
    target, mirror_filter = _dependencies(request.owner.namespace, request.spec, request.indexes)
    return reconcile_session(
        request.owner, request.spec, request.status, request.annotations, request.context, target, mirror_filter
    )


def _delete(request: Request[MirrorSessionSpec]) -> Outcome | None:
    return delete_session(request.spec, request.status, request.context)


async def _settled(request: Request[MirrorSessionSpec]) -> None:
    """Wait a little for a target and filter created together with the session to become Ready.

    Their states come from kopf's in-memory indexes, so waiting costs no API call; it saves the
    session a round of "WaitingForTarget" and a retry when all three are applied at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEPENDENCY_WAIT_SECONDS
    while loop.time() < deadline:
        states = _dependencies(request.owner.namespace, request.spec, request.indexes)
        if all(d is not None and d.phase in ("Ready", "Failed") for d in states):
            return
        await asyncio.sleep(0.2)


def in_sync(spec: MirrorSessionSpec, status: Mapping[str, Any], observed: Any | None) -> bool:
    if observed is None:
        return False
    actual = (
        observed.target_id,
        observed.filter_id,
        observed.session_number,
        observed.packet_length,
        observed.virtual_network_id,
    )
    recorded = (
        status.get("trafficMirrorTargetId"),
        status.get("trafficMirrorFilterId"),
        spec.session_number,
        spec.packet_length,
        status.get("virtualNetworkId"),
    )
    return actual == recorded


def follows(tracked: Tracked, indexes: Mapping[str, Any]) -> bool:
    """A Ready session whose target or filter now has another AWS ID (no AWS call: kopf's indexes)."""
    assert isinstance(tracked.spec, MirrorSessionSpec)
    target, mirror_filter = _dependencies(tracked.namespace, tracked.spec, indexes)
    if target is None or mirror_filter is None or not (target.aws_id and mirror_filter.aws_id):
        return False
    current = (tracked.status.get("trafficMirrorTargetId"), tracked.status.get("trafficMirrorFilterId"))
    return current != (target.aws_id, mirror_filter.aws_id)


BINDING = register(
    Binding(
        api=MIRROR_SESSION,
        reconcile=_reconcile,
        delete=_delete,
        in_sync=in_sync,
        uses_indexes=("target_states", "filter_states"),
        follows=follows,
        before_reconcile=_settled,
    )
)
