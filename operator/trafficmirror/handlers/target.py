"""MirrorTarget handlers: create/update/resume and drift all go through one reconcile."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import kopf

from trafficmirror.api import MirrorTargetSpec, Phase
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.indexes import TARGETS, all_of
from trafficmirror.reconcile.target import delete_target, endpoint_of, reconcile_target

KIND = "MirrorTarget"


@kopf.on.resume(*TARGETS)
@kopf.on.create(*TARGETS)
@kopf.on.update(*TARGETS, field="spec")
async def reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    service_load_balancers: kopf.Index[tuple[str, str], str],
    **_: Any,
) -> None:
    await _reconcile(body, patch, retry, logger, memo, node_provider_ids, service_load_balancers)


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    service_load_balancers: kopf.Index[tuple[str, str], str],
    from_timer: bool = False,
) -> None:
    context = memo.context
    if body["spec"].get("serviceRef"):
        hostnames = {key: next(iter(store), "") for key, store in service_load_balancers.items()}
        context = dataclasses.replace(context, service_hostnames=hostnames)
    await apply.run(
        KIND,
        reconcile_target,
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=context,
        node_provider_ids=node_provider_ids,
        owner=apply.owner_of(KIND, body, memo.context),
        spec=MirrorTargetSpec.model_validate(dict(body["spec"])),
        status=dict(body.get("status", {})),
        annotations=dict(body["metadata"].get("annotations", {})),
        from_timer=from_timer,
    )


@kopf.timer(*TARGETS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    service_load_balancers: kopf.Index[tuple[str, str], str],
    **_: Any,
) -> None:
    action = apply.resync_action(body, memo.config.resync_seconds)
    if action == "skip":
        return
    status = body.get("status", {})
    spec = MirrorTargetSpec.model_validate(dict(body["spec"]))
    if action == "compare":
        known = (await memo.snapshot.get("targets", spec.region)).get(status.get("trafficMirrorTargetId"))
        in_sync = known is not None and endpoint_of(known).get("NetworkInterfaceId") == status.get("networkInterfaceId")
        # A target on a Service's NLB is looked at every period: listeners and target health change
        # outside Kubernetes, and DataPathReady must follow them.
        if in_sync and not status.get("previousTargetIds") and spec.service_ref is None:
            return  # no call beyond the shared Describe
        logger.info(
            f"drift: {status.get('trafficMirrorTargetId')} is {'changed' if known else 'missing'} in the snapshot"
        )
    await _reconcile(body, patch, retry, logger, memo, node_provider_ids, service_load_balancers, from_timer=True)


@kopf.on.delete(*TARGETS)
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
    users = all_of(session_users, (meta["namespace"], "target", meta["name"]))
    patch.status["phase"] = Phase.DELETING.value
    await apply.run(
        KIND,
        delete_target,
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=memo.context,
        spec=MirrorTargetSpec.model_validate(dict(body["spec"])),
        status=dict(body.get("status", {})),
        sessions_using=users,
    )
    apply.forget(meta["uid"])
