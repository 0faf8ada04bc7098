"""Time-boxed sessions: one kopf daemon per running session with an end (spec.duration or stopAt).

The daemon sleeps until the end, or until the next refresh of the time left, whichever is first;
no call is made while it sleeps. At the end it nudges the session, so that its change handler ends
it through the one path every status write takes (`reconcile.session.end_session`: the AWS session
deleted, phase Completed, the cost). A watch event that changes the end wakes the daemon at once
(an edited duration: `session_end_changes`); a Completed or deleted session has no daemon (kopf stops it as the filter
stops matching), so nothing wakes it again.

Between wake-ups the daemon refreshes the Completed=False condition's "… left" and the cost so far
with one status patch that carries the object's resourceVersion: a patch that raced with the
change handler's own write is refused by the apiserver and simply skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._cogs.clients import api, errors

from trafficmirror.api import GROUP, MIRROR_SESSION, VERSION, Phase
from trafficmirror.handlers import onloop
from trafficmirror.handlers.patching import patch_annotations
from trafficmirror.handlers.registration import NUDGE_ANNOTATION, nudge_value
from trafficmirror.reconcile import timebox
from trafficmirror.reconcile.common import ConditionUpdate, merge_conditions

RENUDGE_SECONDS = 30.0  # a nudge whose reconcile did not end the session (AWS trouble) is repeated
RETRY_SECONDS = 2.0  # a nudge the apiserver refused
_wakes: dict[str, asyncio.Event] = {}  # uid → set when a watch event may have moved the end
_ends: dict[str, tuple[Any, Any]] = {}  # uid → (spec.duration, spec.stopAt) as last seen

RESOURCE = (GROUP, VERSION, MIRROR_SESSION.plural)


def stop_of(body: Mapping[str, Any]) -> datetime | None:
    """The end of a session as its (live) body says now; None without one or with an unreadable one
    (the change handler reports an invalid spec)."""
    spec = body.get("spec") or {}
    try:
        stop_at = timebox.parse_time(spec.get("stopAt"))
        return timebox.stop_time(
            spec.get("duration"), stop_at, timebox.parse_time(body["metadata"].get("creationTimestamp"))
        )
    except ValueError:
        return None


def running_with_end(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    return (
        bool(spec.get("duration") or spec.get("stopAt"))
        and status.get("phase") != Phase.COMPLETED.value
        and not meta.get("deletionTimestamp")
    )


def _ends_of(body: Mapping[str, Any]) -> tuple[Any, Any]:
    spec = body.get("spec") or {}
    return spec.get("duration"), spec.get("stopAt")


@onloop.index(*RESOURCE)
def session_end_changes(uid: str, body: kopf.Body, **_: Any) -> None:
    """Wakes a sleeping daemon when a watch event moves its session's end. kopf calls indexers for
    every event before any handler, quietly and without state on the object; nothing is indexed."""
    wake = _wakes.get(uid)
    if wake is not None and _ends.get(uid) != (ends := _ends_of(body)):
        _ends[uid] = ends
        wake.set()


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> bool:
    """Until `seconds` pass, the daemon is stopped, or a watch event moves the end; True when the
    full time passed."""
    waiters = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())]
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    wake.clear()
    return not done


@kopf.daemon(*RESOURCE, id="mirrorsession-timebox", when=running_with_end, cancellation_timeout=5.0)
async def time_box(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    meta = body["metadata"]
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    wake = _wakes.setdefault(uid, asyncio.Event())
    _ends[uid] = _ends_of(body)
    refresh = float(getattr(memo.config, "timebox_refresh_seconds", 60.0))
    try:
        while not stopped:
            stop, now = stop_of(body), datetime.now(UTC)
            if stop is None:
                await _sleep(stopped, wake, refresh)
                continue
            if timebox.is_over(stop, now):
                logger.info(f"the time is over at {timebox.format_time(stop)}: ending the capture")
                annotations = {NUDGE_ANNOTATION: nudge_value("time-up")}
                try:
                    await patch_annotations(memo.settings, MIRROR_SESSION, namespace, name, annotations, logger)
                except errors.APIError as error:  # kopf's own retries are spent: try again soon, not after a backoff
                    logger.warning(f"could not ask for the end of the capture, trying again: {error}")
                    await _sleep(stopped, wake, RETRY_SECONDS)
                    continue
                await _sleep(stopped, wake, RENUDGE_SECONDS)
                continue
            slept = await _sleep(stopped, wake, timebox.next_wake(stop, now, refresh) or 0.0)
            stop, now = stop_of(body), datetime.now(UTC)
            if slept and not stopped and stop is not None and not timebox.is_over(stop, now):
                await _refresh(body, memo, stop, now, logger)
    finally:
        if _wakes.get(uid) is wake:
            del _wakes[uid]
            _ends.pop(uid, None)


def refreshed_status(body: Mapping[str, Any], stop: datetime, now: datetime, price: Any) -> dict[str, Any] | None:
    """The time left and the cost so far as a status patch, or None when there is nothing to refresh
    (the change handler has not written the session's status yet)."""
    status = body.get("status") or {}
    conditions = list(status.get("conditions") or [])
    current = next((c for c in conditions if c.get("type") == timebox.COMPLETED), None)
    if current is None or current.get("status") != "False":
        return None
    message = timebox.running_message(stop, now)
    before = str(current.get("message", "")).split(f"; {timebox.ENDS_AT} ", 1)
    if len(before) == 2:  # "not mirroring yet (reason); ends at …": the reason stays in front
        message = f"{before[0]}; {message}"
    update = ConditionUpdate(timebox.COMPLETED, "False", timebox.RUNNING, message)
    generation = int(current.get("observedGeneration") or status.get("observedGeneration") or 1)
    patch: dict[str, Any] = {"conditions": merge_conditions(conditions, [update], generation, now=now)}
    since = timebox.parse_time(status.get("mirroringSince"))
    if status.get("phase") == Phase.READY.value and since is not None:
        patch["estimatedCost"] = timebox.estimated_cost(timebox.eni_hours([timebox.Interval(since)], now), price, now)
    return patch


async def _refresh(body: kopf.Body, memo: kopf.Memo, stop: datetime, now: datetime, logger: logging.Logger) -> None:
    patch = refreshed_status(body, stop, now, memo.context.price)
    if patch is None:
        return
    meta = body["metadata"]
    resource = kopf.Resource(
        GROUP,
        VERSION,
        MIRROR_SESSION.plural,
        kind=MIRROR_SESSION.kind,
        namespaced=True,
        subresources=frozenset({"status"}),
    )
    try:
        await api.patch(
            url=resource.get_url(namespace=meta["namespace"], name=meta["name"], subresource="status"),
            headers={"Content-Type": "application/merge-patch+json"},
            # The resourceVersion makes it conditional: a newer write (the handler's) wins.
            payload={"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch},
            settings=memo.settings,
            logger=logger,
        )
    except (errors.APIConflictError, errors.APINotFoundError):
        return  # a newer write won, or the session is gone: nothing to refresh
    except errors.APIError as error:  # only a refresh: the next one tries again
        logger.warning(f"could not refresh the time left: {error}")
