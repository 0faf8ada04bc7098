"""What kopf holds of each object: no managedFields, and no full body without a running daemon.

Every watched object arrives with `metadata.managedFields` (server-side apply's field owners), as
large as the rest of the object, and read by nobody here: it is dropped from each watch event (and
from the initial listing) before kopf queues it, so that no body kopf holds or handlers see carries
it. A patch sent by kopf or by the handlers never names it, so nothing is lost on the server.

kopf also keeps no full body of an object that has no daemon or timer running.

For a kind with any daemon or timer (the recheck timer of every kind, the timebox daemon of
sessions), kopf keeps the latest full body of *every* object (metadata with managedFields and
annotations, spec, status) in its per-object memory, so that a daemon started later sees a fresh
body; it lets go of it only when a daemon exits for good. With thousands of objects and few
daemons that is the largest thing kept per object: ~17 KB of parsed JSON, for the object's life.

After kopf has spawned or stopped an object's daemons, the body is dropped when none runs. kopf
sets it again, from the event being handled, as soon as it spawns a daemon for the object (its
own `process_spawning_cause` does that when none is kept), and keeps it current while one runs.

Both wrap functions of kopf's private modules; tests/unit/test_kopf_bodies.py fails when a kopf
release moves or changes them.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kopf._cogs.clients import watching
from kopf._core.reactor import processing

_INSTALLED = "_trafficmirror_releases_idle_bodies"
_STRIPS = "_trafficmirror_strips_managed_fields"


def strip_managed_fields(raw_event: Any) -> Any:
    """The watch event without its object's managedFields (the same dict, changed in place)."""
    if isinstance(raw_event, dict):
        obj = raw_event.get("object")
        if isinstance(obj, dict):
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                meta.pop("managedFields", None)
    return raw_event


def release_idle_body(memory: Any) -> None:
    """Drop kopf's copy of an object's body unless a daemon or timer of the object is running."""
    daemons_memory = memory.daemons_memory
    if not daemons_memory.running_daemons:
        daemons_memory.live_fresh_body = None


def install() -> bool:
    """Wrap kopf's watch stream and spawning step (once); False when this kopf lacks either."""
    return _install_stripping() and _install_release()


def _install_stripping() -> bool:
    original: Callable[..., AsyncIterator[Any]] | None = getattr(watching, "infinite_watch", None)
    if original is None:
        return False
    if not getattr(original, _STRIPS, False):
        watching.infinite_watch = stripping(original)  # type: ignore[assignment]
    return True


def stripping(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """A watch stream like `original`, whose events carry no managedFields."""

    @functools.wraps(original)
    async def infinite_watch(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for raw_event in original(*args, **kwargs):
            yield strip_managed_fields(raw_event)

    setattr(infinite_watch, _STRIPS, True)
    return infinite_watch


def _install_release() -> bool:
    original: Callable[..., Awaitable[Any]] | None = getattr(processing, "process_spawning_cause", None)
    if original is None:
        return False
    if getattr(original, _INSTALLED, False):
        return True

    @functools.wraps(original)
    async def process_spawning_cause(*args: Any, memory: Any, **kwargs: Any) -> Any:
        try:
            return await original(*args, memory=memory, **kwargs)
        finally:
            release_idle_body(memory)

    setattr(process_spawning_cause, _INSTALLED, True)
    processing.process_spawning_cause = process_spawning_cause  # type: ignore[assignment]
    return True


def installed() -> bool:
    return bool(
        getattr(getattr(processing, "process_spawning_cause", None), _INSTALLED, False)
        and getattr(getattr(watching, "infinite_watch", None), _STRIPS, False)
    )
