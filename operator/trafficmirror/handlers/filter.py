"""MirrorFilter handlers: create/update/resume and drift all go through one reconcile."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from trafficmirror.api import MirrorFilterSpec, Phase
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.indexes import FILTERS, all_of
from trafficmirror.reconcile.filter import (
    delete_filter,
    desired_rules,
    network_service_changes,
    reconcile_filter,
    rule_changes,
)

KIND = "MirrorFilter"


@kopf.on.resume(*FILTERS)
@kopf.on.create(*FILTERS)
@kopf.on.update(*FILTERS, field="spec")
async def reconcile(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: logging.Logger, memo: kopf.Memo, **_: Any
) -> None:
    await _reconcile(body, patch, retry, logger, memo)


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    from_timer: bool = False,
) -> None:
    await apply.run(
        KIND,
        reconcile_filter,
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=memo.context,
        owner=apply.owner_of(KIND, body, memo.context),
        spec=MirrorFilterSpec.model_validate(dict(body["spec"])),
        status=dict(body.get("status", {})),
        annotations=dict(body["metadata"].get("annotations", {})),
        from_timer=from_timer,
    )


@kopf.timer(*FILTERS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: logging.Logger, memo: kopf.Memo, **_: Any
) -> None:
    action = apply.resync_action(body, memo.config.resync_seconds)
    if action == "skip":
        return
    status = body.get("status", {})
    spec = MirrorFilterSpec.model_validate(dict(body["spec"]))
    if action == "compare":
        known = (await memo.snapshot.get("filters", spec.region)).get(status.get("trafficMirrorFilterId"))
        rules_in_sync = known is not None and rule_changes(desired_rules(spec), list(known.rules)).empty
        services = network_service_changes(list(spec.network_services or []), known.network_services) if known else None
        if rules_in_sync and services == ([], []):
            return  # in sync: no call beyond the shared Describe
        logger.info(
            f"drift: {status.get('trafficMirrorFilterId')} is {'changed' if known else 'missing'} in the snapshot"
        )
    await _reconcile(body, patch, retry, logger, memo, from_timer=True)


@kopf.on.delete(*FILTERS)
async def delete(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    session_users: kopf.Index[Any, str],
    **_: Any,
) -> None:
    meta = body["metadata"]
    patch.status["phase"] = Phase.DELETING.value
    await apply.run(
        KIND,
        delete_filter,
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=memo.context,
        spec=MirrorFilterSpec.model_validate(dict(body["spec"])),
        status=dict(body.get("status", {})),
        sessions_using=all_of(session_users, (meta["namespace"], "filter", meta["name"])),
    )
    apply.forget(meta["uid"])
