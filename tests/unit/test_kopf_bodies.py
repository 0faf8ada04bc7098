"""What kopf holds of each object (handlers.bodies): a full body only for objects with a running
daemon or timer, and no managedFields in any event it queues.

kopf's own spawning step runs against a real kopf registry with a daemon whose filter follows the
object's spec, through a seeded random sequence of watch events of many objects: after every step
an object without a running daemon has no body kept (the memory that grew with the number of
objects), and a running daemon always sees the newest body of its object."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kopf._cogs.structs import bodies, ephemera, patches
from kopf._core.engines import daemons as kopf_daemons
from kopf._core.intents import causes, registries
from kopf._core.reactor import inventory, processing

import trafficmirror.handlers  # noqa: F401  (installs the release of idle bodies)
from trafficmirror.handlers import bodies as idle_bodies

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
RESOURCE = kopf.Resource("trafficmirror.io", "v1alpha1", "mirrorsessions", kind="MirrorSession", namespaced=True)


def test_the_release_is_installed_on_this_kopf() -> None:
    assert idle_bodies.installed()
    assert idle_bodies.install()  # idempotent
    assert idle_bodies.installed()


def body_of(uid: str, generation: int, timed: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"sessionNumber": 1, "generationMark": generation}
    if timed:
        spec["duration"] = "5m"
    return {
        "apiVersion": "trafficmirror.io/v1alpha1",
        "kind": "MirrorSession",
        "metadata": {"namespace": "ns", "name": f"s-{uid}", "uid": uid, "generation": generation},
        "spec": spec,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bodies_are_kept_only_while_a_daemon_runs(seed: int) -> None:
    asyncio.run(_events(seed))


async def _events(seed: int) -> None:
    rng = random.Random(seed)
    registry = registries.OperatorRegistry()
    settings = kopf.OperatorSettings()
    seen: dict[str, list[int]] = {}

    @kopf.daemon(
        "trafficmirror.io",
        "v1alpha1",
        "mirrorsessions",
        id="timed",
        registry=registry,
        when=lambda spec, **_: "duration" in spec,
        cancellation_timeout=1.0,
    )
    async def timed(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        while not stopped:
            seen.setdefault(body["metadata"]["uid"], []).append(body["spec"]["generationMark"])
            await asyncio.sleep(0.001)

    memories = {f"u{i}": inventory.ResourceMemory() for i in range(30)}
    generations = dict.fromkeys(memories, 0)
    for _step in range(300):
        uid = rng.choice(sorted(memories))
        memory = memories[uid]
        generations[uid] += 1
        raw = body_of(uid, generations[uid], timed=rng.random() < 0.4)
        # As kopf's event processing does: the kept body (if any) is refreshed, else a new one is made.
        if memory.daemons_memory.live_fresh_body is not None:
            memory.daemons_memory.live_fresh_body._replace_with(raw)
        kept = memory.daemons_memory.live_fresh_body
        body = kept if kept is not None else bodies.Body(raw)
        cause = causes.SpawningCause(
            logger=logging.getLogger("test"),
            indices={},
            memo=ephemera.AnyMemo(ephemera.Memo()),
            resource=RESOURCE,
            patch=patches.Patch(body=body),
            body=body,
            reset=False,
        )
        await processing.process_spawning_cause(
            registry=registry, settings=settings, memory=memory, cause=cause, operator_paused=None
        )
        await asyncio.sleep(0.005)  # let daemons run, and the stopped ones exit
        for other_uid, other in memories.items():
            daemons_memory = other.daemons_memory
            if not daemons_memory.running_daemons:
                # The body is dropped at the object's next event at the latest; never kept for good.
                if other_uid == uid:
                    assert daemons_memory.live_fresh_body is None, f"seed {seed}: {uid} keeps a body, no daemon"
            else:
                assert daemons_memory.live_fresh_body is not None
                assert daemons_memory.live_fresh_body["spec"]["generationMark"] == generations[other_uid]
        if memory.daemons_memory.running_daemons and "duration" in raw["spec"]:
            await asyncio.sleep(0.005)
            assert seen[uid][-1] == generations[uid], "a running daemon sees the newest body"

    bodies_kept = sum(1 for m in memories.values() if m.daemons_memory.live_fresh_body is not None)
    running = sum(1 for m in memories.values() if m.daemons_memory.running_daemons)
    assert bodies_kept <= running
    for memory in memories.values():
        await kopf_daemons.stop_daemons(settings=settings, daemons=memory.daemons_memory.running_daemons)
    await asyncio.sleep(0.05)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.just("bookmark"),
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from([None, "ADDED", "MODIFIED", "DELETED", "BOOKMARK"]),
                    "object": st.fixed_dictionaries(
                        {"metadata": st.dictionaries(st.sampled_from(["name", "uid", "managedFields"]), JSON)},
                        optional={"spec": JSON, "status": JSON},
                    ),
                }
            ),
        ),
        max_size=20,
    )
)
def test_the_watch_stream_drops_managed_fields_and_nothing_else(events: list[Any]) -> None:
    """Every event of the wrapped stream, in order: the same but for metadata.managedFields."""
    expected = copy.deepcopy(events)
    for event in expected:
        if isinstance(event, dict):
            event["object"]["metadata"].pop("managedFields", None)

    async def original(**_: Any) -> AsyncIterator[Any]:
        for event in events:
            yield event

    async def collect() -> list[Any]:
        return [event async for event in idle_bodies.stripping(original)(resource=RESOURCE)]

    assert asyncio.run(collect()) == expected
