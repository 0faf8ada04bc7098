"""MirrorTarget handlers: create/update/resume and drift all go through one reconcile."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import kopf

from trafficmirror.api import Phase
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.indexes import TARGETS, all_of
from trafficmirror.reconcile.kinds import TARGET
from trafficmirror.reconcile.seam import ClusterFacts, Request

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
    target_owners: kopf.Index[str, str],
    filter_owners: kopf.Index[str, str],
    session_owners: kopf.Index[str, str],
    **_: Any,
) -> None:
    owners = apply.live_owners_of(target_owners, filter_owners, session_owners)
    await _reconcile(body, patch, retry, logger, memo, node_provider_ids, service_load_balancers, owners)


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    node_provider_ids: kopf.Index[str, str],
    service_load_balancers: kopf.Index[tuple[str, str], str],
    live_owners: Callable[[str], str | None],
    from_timer: bool = False,
) -> None:
    context = memo.context
    if body["spec"].get("serviceRef"):
        hostnames = {key: next(iter(store), "") for key, store in service_load_balancers.items()}
        context = dataclasses.replace(context, service_hostnames=hostnames)
    await apply.run(
        KIND,
        TARGET.reconcile,
        apply.request_of(TARGET, body, memo.context),
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=context,
        node_provider_ids=node_provider_ids,
        live_owners=live_owners,
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
    target_owners: kopf.Index[str, str],
    filter_owners: kopf.Index[str, str],
    session_owners: kopf.Index[str, str],
    **_: Any,
) -> None:
    action = apply.resync_action(body, memo.config.resync_seconds)
    if action == "skip":
        return
    request = apply.request_of(TARGET, body, memo.context)
    if action == "compare" and isinstance(request, Request):
        aws_id = TARGET.observed_id(request.status)
        known = (await memo.snapshot.get(TARGET.snapshot_kind, request.spec.region)).get(aws_id)
        if TARGET.in_sync(request, known):
            return  # no call beyond the shared Describe
        logger.info(f"drift: {aws_id} is {'changed' if known else 'missing'} in the snapshot")
    owners = apply.live_owners_of(target_owners, filter_owners, session_owners)
    await _reconcile(
        body, patch, retry, logger, memo, node_provider_ids, service_load_balancers, owners, from_timer=True
    )


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
    request = apply.request_of(TARGET, body, memo.context, ClusterFacts(users=tuple(users)))
    if isinstance(request, Request):  # an invalid spec names no region nor policy to delete by
        await apply.run(
            KIND, TARGET.delete, request, body=body, patch=patch, retry=retry, logger=logger, context=memo.context
        )
    apply.forget(meta["uid"])
