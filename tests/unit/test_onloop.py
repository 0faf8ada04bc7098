"""Every handler kopf calls per watch event runs on the event loop, not in a thread of kopf's executor.

kopf runs a plain function in a thread (a submit, a future and a shield per call). Per watch event the
operator has about ten indexes and triggers; in a 10,000-object burst those hops took half of the event
loop's time and the watch fell behind the operator's own writes. This checks the registry itself, so a
new `@kopf.index` or `@kopf.on.event` on a plain function fails here, whatever it is named.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kopf._core.actions.invocation import is_async_fn

import trafficmirror.handlers  # noqa: F401  (registers every handler)
from trafficmirror.handlers.onloop import on_loop


def _registered() -> list[Any]:
    registry = kopf.get_default_registry()
    # kopf keeps no public listing of its registries; these two hold the per-event handlers.
    return [*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers()]


def test_every_index_and_event_handler_is_awaited_on_the_loop() -> None:
    handlers = _registered()
    assert len(handlers) >= 20, [h.id for h in handlers]  # the indexes of every kind and the triggers
    in_threads = sorted(h.id for h in handlers if not is_async_fn(h.fn))
    assert not in_threads, f"run by kopf in a thread per watch event: {in_threads}"


def test_index_ids_are_the_plain_functions_names() -> None:
    """The handlers' kwargs name each index by its ID: wrapping must not change it."""
    ids = {h.id for h in kopf.get_default_registry()._indexing.get_all_handlers()}
    assert {"target_states", "filter_states", "session_users", "tracked_mirrorsessions", "workload_pods"} <= ids


def test_on_loop_keeps_the_name_and_returns_the_functions_answer() -> None:
    def users(namespace: str, **_: Any) -> dict[str, str]:
        return {namespace: "web"}

    wrapped = on_loop(users)
    assert is_async_fn(wrapped) and not hasattr(wrapped, "__wrapped__")
    assert (wrapped.__name__, wrapped.__qualname__) == (users.__name__, users.__qualname__)
    assert asyncio.run(wrapped(namespace="ns", name="x")) == {"ns": "web"}
