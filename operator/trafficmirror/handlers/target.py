"""MirrorTarget: its binding to the shared registration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trafficmirror.api import MIRROR_TARGET, MirrorTargetSpec
from trafficmirror.handlers.registration import register_referenced
from trafficmirror.reconcile.target import delete_target, endpoint_of, reconcile_target


def in_sync(spec: MirrorTargetSpec, status: Mapping[str, Any], observed: Any | None) -> bool:
    if observed is None or status.get("previousTargetIds"):
        return False
    return endpoint_of(observed).get("NetworkInterfaceId") == status.get("networkInterfaceId")


BINDING = register_referenced(MIRROR_TARGET, reconcile_target, delete_target, in_sync)
