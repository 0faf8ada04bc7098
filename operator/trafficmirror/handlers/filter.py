"""MirrorFilter handlers: create/update/resume and drift all go through one reconcile."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from trafficmirror.api import Phase
from trafficmirror.config import RESYNC_SECONDS
from trafficmirror.handlers import apply
from trafficmirror.handlers.indexes import FILTERS, all_of
from trafficmirror.reconcile.kinds import FILTER
from trafficmirror.reconcile.seam import ClusterFacts, Request

KIND = "MirrorFilter"


@kopf.on.resume(*FILTERS)
@kopf.on.create(*FILTERS)
@kopf.on.update(*FILTERS, field="spec")
async def reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    target_owners: kopf.Index[str, str],
    filter_owners: kopf.Index[str, str],
    session_owners: kopf.Index[str, str],
    **_: Any,
) -> None:
    owners = apply.live_owners_of(target_owners, filter_owners, session_owners)
    await _reconcile(body, patch, retry, logger, memo, owners)


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    live_owners: Callable[[str], str | None],
    from_timer: bool = False,
) -> None:
    await apply.run(
        KIND,
        FILTER.reconcile,
        apply.request_of(FILTER, body, memo.context),
        body=body,
        patch=patch,
        retry=retry,
        logger=logger,
        context=memo.context,
        live_owners=live_owners,
        from_timer=from_timer,
    )


@kopf.timer(*FILTERS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    memo: kopf.Memo,
    target_owners: kopf.Index[str, str],
    filter_owners: kopf.Index[str, str],
    session_owners: kopf.Index[str, str],
    **_: Any,
) -> None:
    action = apply.resync_action(body, memo.config.resync_seconds)
    if action == "skip":
        return
    request = apply.request_of(FILTER, body, memo.context)
    if action == "compare" and isinstance(request, Request):
        aws_id = FILTER.observed_id(request.status)
        known = (await memo.snapshot.get(FILTER.snapshot_kind, request.spec.region)).get(aws_id)
        if FILTER.in_sync(request, known):
            return  # in sync: no call beyond the shared Describe
        logger.info(f"drift: {aws_id} is {'changed' if known else 'missing'} in the snapshot")
    owners = apply.live_owners_of(target_owners, filter_owners, session_owners)
    await _reconcile(body, patch, retry, logger, memo, owners, from_timer=True)


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
    users = tuple(all_of(session_users, (meta["namespace"], "filter", meta["name"])))
    request = apply.request_of(FILTER, body, memo.context, ClusterFacts(users=users))
    if isinstance(request, Request):  # an invalid spec names no region nor policy to delete by
        await apply.run(
            KIND, FILTER.delete, request, body=body, patch=patch, retry=retry, logger=logger, context=memo.context
        )
    apply.forget(meta["uid"])
