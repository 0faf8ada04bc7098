"""kopf handlers that are plain functions, run on the event loop instead of in a thread.

kopf runs a plain (non-async) handler in a thread of its executor: one submit, one future and one
`asyncio.shield` per call. The indexes and the watch-event triggers are plain functions of a few dict
lookups, called for every watch event of their resources: with 10,000 objects applied at once these
thread hops took about half of the event loop's time (py-spy), and the watch fell behind the
operator's own writes. As coroutine functions kopf awaits them on the loop, with no hop. The
functions stay plain (tests and other modules call them directly); only what kopf registers is wrapped.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import kopf

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def on_loop(fn: Callable[..., T]) -> Callable[..., Coroutine[Any, Any, T]]:
    """`fn` as a coroutine function with its name, so kopf awaits it and keeps its handler ID. (No
    `__wrapped__`: kopf would follow it to the plain function and use a thread again.)"""

    async def handler(**kwargs: Any) -> T:
        return fn(**kwargs)

    handler.__name__, handler.__qualname__ = fn.__name__, fn.__qualname__
    handler.__module__, handler.__doc__ = fn.__module__, fn.__doc__
    return handler


def index(*resource: Any, **options: Any) -> Callable[[F], F]:
    """`kopf.index`, run on the loop; the decorated function is returned as it is."""

    def register(fn: F) -> F:
        kopf.index(*resource, **options)(on_loop(fn))
        return fn

    return register


def event(*resource: Any, **options: Any) -> Callable[[F], F]:
    """`kopf.on.event`, run on the loop; the decorated function is returned as it is."""

    def register(fn: F) -> F:
        kopf.on.event(*resource, **options)(on_loop(fn))
        return fn

    return register
