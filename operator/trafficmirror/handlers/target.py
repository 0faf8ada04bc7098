"""MirrorTarget: its binding to the shared registration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trafficmirror.api import MIRROR_TARGET, MirrorTargetSpec
from trafficmirror.handlers.indexes import all_of
from trafficmirror.handlers.registration import Binding, Request, register
from trafficmirror.reconcile.common import Outcome
from trafficmirror.reconcile.target import delete_target, endpoint_of, reconcile_target


def _reconcile(request: Request[MirrorTargetSpec]) -> Outcome:
    return reconcile_target(request.owner, request.spec, request.status, request.annotations, request.context)


def _delete(request: Request[MirrorTargetSpec]) -> Outcome | None:
    users = all_of(request.indexes["session_users"], (request.owner.namespace, "target", request.owner.name))
    return delete_target(request.spec, request.status, request.context, users)


def in_sync(spec: MirrorTargetSpec, status: Mapping[str, Any], observed: Any | None) -> bool:
    if observed is None or status.get("previousTargetIds"):
        return False
    return endpoint_of(observed).get("NetworkInterfaceId") == status.get("networkInterfaceId")


BINDING = register(
    Binding(
        api=MIRROR_TARGET,
        spec_model=MirrorTargetSpec,
        snapshot_kind="targets",
        reconcile=_reconcile,
        delete=_delete,
        in_sync=in_sync,
        uses_indexes=("session_users",),
    )
)
