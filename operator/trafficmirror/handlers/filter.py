"""MirrorFilter: its binding to the shared registration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trafficmirror.api import MIRROR_FILTER, MirrorFilterSpec
from trafficmirror.handlers.registration import register_referenced
from trafficmirror.reconcile.filter import (
    delete_filter,
    desired_rules,
    network_service_changes,
    reconcile_filter,
    rule_changes,
)


def in_sync(spec: MirrorFilterSpec, status: Mapping[str, Any], observed: Any | None) -> bool:
    if observed is None:
        return False
    rules_in_sync = rule_changes(desired_rules(spec), list(observed.rules)).empty
    return rules_in_sync and network_service_changes(list(spec.network_services or []), observed.network_services) == (
        [],
        [],
    )


BINDING = register_referenced(MIRROR_FILTER, reconcile_filter, delete_filter, in_sync)
