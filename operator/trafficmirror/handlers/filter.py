"""MirrorFilter: its binding to the shared registration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trafficmirror.api import MIRROR_FILTER, MirrorFilterSpec
from trafficmirror.handlers.indexes import all_of
from trafficmirror.handlers.registration import Binding, Request, register
from trafficmirror.reconcile.common import Outcome
from trafficmirror.reconcile.filter import (
    delete_filter,
    desired_rules,
    network_service_changes,
    reconcile_filter,
    rule_changes,
)


def _reconcile(request: Request[MirrorFilterSpec]) -> Outcome:
    return reconcile_filter(request.owner, request.spec, request.status, request.annotations, request.context)


def _delete(request: Request[MirrorFilterSpec]) -> Outcome | None:
    users = all_of(request.indexes["session_users"], (request.owner.namespace, "filter", request.owner.name))
    return delete_filter(request.spec, request.status, request.context, users)


def in_sync(spec: MirrorFilterSpec, status: Mapping[str, Any], observed: Any | None) -> bool:
    if observed is None:
        return False
    rules_in_sync = rule_changes(desired_rules(spec), list(observed.rules)).empty
    return rules_in_sync and network_service_changes(list(spec.network_services or []), observed.network_services) == (
        [],
        [],
    )


BINDING = register(
    Binding(
        api=MIRROR_FILTER,
        spec_model=MirrorFilterSpec,
        snapshot_kind="filters",
        reconcile=_reconcile,
        delete=_delete,
        in_sync=in_sync,
        uses_indexes=("session_users",),
    )
)
