"""The batched resync's decisions, one period at a time: which objects it hands to a reconcile, and
how many Describes it makes. In-memory: kopf's index is a dict of lists, the Describe a counted fake.

The invariants: at steady state (every object in sync) no object is nudged and each kind costs one
Describe per period, whatever the number of objects; an object is nudged at most once per follow period;
an object that changed after the Describe started is not judged on that Describe.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficmirror.aws.ec2 import AwsSession
from trafficmirror.handlers import session as session_handlers
from trafficmirror.handlers.registration import Binding, Handling, Tracked, promised_retry
from trafficmirror.handlers.resync import ResyncLoop
from trafficmirror.reconcile.common import Owner, owner_description, owner_tags
from trafficmirror.reconcile.kinds import SESSION
from trafficmirror.reconcile.observed import Observed
from trafficmirror.reconcile.seam import Dependency, Request, parse_request

PERIOD = 60.0


class FakeSnapshot:
    """Answers the shared Describe from a dict; counts the calls; `started` is when the Describe began."""

    def __init__(self, sessions: dict[str, Observed[AwsSession]]) -> None:
        self.sessions = sessions
        self.calls = 0
        self.started = time.time()

    async def fetch(self, kind: str, region: str | None) -> tuple[float, dict[str, Any]]:
        assert kind == "sessions"
        self.calls += 1
        return self.started, dict(self.sessions)


def _session(i: int, **changes: Any) -> tuple[Tracked, Observed[AwsSession]]:
    raw_spec = {
        "source": {"networkInterfaceId": f"eni-{i:017x}"},
        "targetRef": {"name": "t"},
        "filterRef": {"name": "f"},
        "sessionNumber": 1,
    }
    owner = Owner("MirrorSession", "ns", f"s{i}", f"uid-{i}", 1, "test")
    aws = AwsSession(
        session_id=f"tms-{i:017x}",
        network_interface_id=f"eni-{i:017x}",
        target_id="tmt-1",
        filter_id="tmf-1",
        session_number=1,
        virtual_network_id=1000 + i,
        packet_length=None,
        description=owner_description(owner, None),
        tags=owner_tags(owner, None),
    )
    status = {
        "phase": "Ready",
        "trafficMirrorSessionId": aws.session_id,
        "trafficMirrorTargetId": "tmt-1",
        "trafficMirrorFilterId": "tmf-1",
        "virtualNetworkId": aws.virtual_network_id,
        "sourceInstanceType": "t3.small",
    }
    request = parse_request(SESSION, owner, raw_spec, status)
    assert isinstance(request, Request)
    tracked = Tracked(
        namespace="ns",
        name=f"s{i}",
        uid=owner.uid,
        request=request,
        raw_spec=raw_spec,
        phase="Ready",
        ready_reason="Ready",
        deleting=False,
        seen_at=time.time() - 600,
    )
    return replace(tracked, **changes), Observed(aws, "t3.small", True)


def _status(tracked: Tracked, **fields: Any) -> Tracked:
    assert tracked.request is not None
    return replace(tracked, request=replace(tracked.request, status=tracked.request.status.model_copy(update=fields)))


def _world(count: int) -> tuple[dict[str, Any], FakeSnapshot, list[Tracked]]:
    pairs = [_session(i) for i in range(count)]
    indexes: dict[str, Any] = {
        session_handlers.BINDING.index_name: {(t.namespace, t.name): [t] for t, _ in pairs},
        "target_states": {("ns", "t"): [Dependency("t", "Ready", "tmt-1")]},
        "filter_states": {("ns", "f"): [Dependency("f", "Ready", "tmf-1")]},
    }
    return indexes, FakeSnapshot({o.resource.session_id: o for _, o in pairs}), [t for t, _ in pairs]


def _sid(tracked: Tracked) -> str:
    assert tracked.request is not None
    return str(tracked.request.status.traffic_mirror_session_id)


def _change(snapshot: FakeSnapshot, session_id: str, **fields: Any) -> None:
    observed = snapshot.sessions[session_id]
    snapshot.sessions[session_id] = replace(observed, resource=replace(observed.resource, **fields))


def _loop(
    indexes: dict[str, Any],
    snapshot: FakeSnapshot,
    nudged: list[tuple[str, str]],
    follow_period: float = 5.0,
    handling: Handling | None = None,
    unhandled_after: float = 65.0,
) -> ResyncLoop:
    async def nudge(binding: Binding, tracked: Tracked, why: str) -> None:
        nudged.append((tracked.name, why))

    return ResyncLoop(
        session_handlers.BINDING,
        snapshot,  # type: ignore[arg-type]
        indexes,
        nudge,
        period=PERIOD,
        follow_period=follow_period,
        logger=logging.getLogger("test"),
        # never the process-wide registry: tests would see each other
        handling=handling or Handling(keep_ended=unhandled_after),
    )


@pytest.mark.parametrize("count", [1, 100, 3000])
def test_steady_state_costs_one_describe_per_period_and_no_reconcile(count: int) -> None:
    indexes, snapshot, _ = _world(count)
    nudged: list[tuple[str, str]] = []
    loop = _loop(indexes, snapshot, nudged)
    for _ in range(3):
        asyncio.run(loop.tick(compare=True))
    assert snapshot.calls == 3
    assert nudged == []


def test_drift_missing_and_follow_are_nudged_once_per_follow_period() -> None:
    indexes, snapshot, objects = _world(10)
    del snapshot.sessions[_sid(objects[0])]  # deleted outside
    _change(snapshot, _sid(objects[1]), session_number=7)  # modified outside
    key = session_handlers.BINDING.index_name
    indexes[key][("ns", "s2")] = [_status(objects[2], traffic_mirror_target_id="tmt-old")]  # its target is new
    _change(snapshot, _sid(objects[2]), target_id="tmt-old")
    nudged: list[tuple[str, str]] = []
    loop = _loop(indexes, snapshot, nudged)
    asyncio.run(loop.tick(compare=True))
    assert sorted(nudged) == [("s0", "missing"), ("s1", "drift"), ("s2", "follow")]
    asyncio.run(loop.tick(compare=True))  # within the follow period: nobody twice
    assert len(nudged) == 3
    # Between periods the follow check costs no Describe.
    calls = snapshot.calls
    asyncio.run(loop.tick(compare=False))
    assert snapshot.calls == calls


def test_an_object_changed_after_the_describe_started_waits_for_the_next_period() -> None:
    indexes, snapshot, objects = _world(3)
    key = session_handlers.BINDING.index_name
    fresh = replace(objects[0], seen_at=snapshot.started + 0.5)  # became Ready while AWS was asked
    indexes[key][("ns", "s0")] = [fresh]
    del snapshot.sessions[_sid(objects[0])]  # so the Describe predates it
    nudged: list[tuple[str, str]] = []
    asyncio.run(_loop(indexes, snapshot, nudged).tick(compare=True))
    assert nudged == []


def test_completed_sessions_are_never_compared_followed_or_nudged_though_aws_has_nothing() -> None:
    """A time-boxed session whose time is over: its AWS session is gone on purpose."""
    indexes, snapshot, objects = _world(6)
    key = session_handlers.BINDING.index_name
    for tracked in objects[:3]:
        completed = _status(
            replace(tracked, phase="Completed", ready_reason="Completed"), traffic_mirror_target_id="tmt-old"
        )
        indexes[key][(tracked.namespace, tracked.name)] = [completed]
        del snapshot.sessions[_sid(tracked)]
    nudged: list[tuple[str, str]] = []
    loop = _loop(indexes, snapshot, nudged)
    for _ in range(3):
        asyncio.run(loop.tick(compare=True))
        asyncio.run(loop.tick(compare=False))
    assert nudged == []


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_worlds_nudge_exactly_the_objects_out_of_sync(seed: int) -> None:
    """Seeded: random drift over random objects; the nudged set is exactly the drifted set, each once."""
    rng = random.Random(seed)
    print(f"seed={seed}")
    indexes, snapshot, objects = _world(rng.randint(5, 200))
    drifted: dict[str, str] = {}
    for tracked in rng.sample(objects, rng.randint(0, len(objects))):
        sid = _sid(tracked)
        change = rng.choice(["delete", "number", "length", "filter", "skip-pending", "skip-deleting"])
        key = (tracked.namespace, tracked.name)
        if change == "delete":
            del snapshot.sessions[sid]
            drifted[tracked.name] = "missing"
        elif change == "number":
            _change(snapshot, sid, session_number=2)
            drifted[tracked.name] = "drift"
        elif change == "length":
            _change(snapshot, sid, packet_length=100)
            drifted[tracked.name] = "drift"
        elif change == "filter":
            _change(snapshot, sid, filter_id="tmf-other")
            drifted[tracked.name] = "drift"
        elif change == "skip-pending":  # kopf's change handler owns it (a retry promised); the resync stays away
            indexes[session_handlers.BINDING.index_name][key] = [
                replace(tracked, phase="Pending", retry_at=time.time() + 60)
            ]
            del snapshot.sessions[sid]
        else:  # the delete handler owns it (Deleting, a retry promised while it waits)
            indexes[session_handlers.BINDING.index_name][key] = [
                replace(tracked, deleting=True, phase="Deleting", retry_at=time.time() + 60)
            ]
            del snapshot.sessions[sid]
    nudged: list[tuple[str, str]] = []
    loop = _loop(indexes, snapshot, nudged)
    asyncio.run(loop.tick(compare=True))
    asyncio.run(loop.tick(compare=True))
    assert dict(nudged) == drifted
    assert len(nudged) == len(drifted)
    assert snapshot.calls == 2


def test_a_retry_kopf_dropped_or_a_stale_generation_is_nudged_and_a_pending_backoff_is_not() -> None:
    """kopf runs a change handler only for a difference from the last spec it handled: an edit back to
    that spec while a handler waits to retry leaves the retry (and a stale status) behind for good."""
    indexes, snapshot, objects = _world(10)
    key = session_handlers.BINDING.index_name
    now = time.time()
    cases = {
        "s0": {"phase": "Pending", "retry_at": now - 10},  # a retry due 10 s ago, no event since: dropped
        "s1": {"observed_generation": 7, "generation": 9},  # edits after the last status, nobody at work
        "s2": {"phase": "Pending", "retry_at": now + 60},  # a backoff still to come: kopf's
        "s3": {"observed_generation": 7, "generation": 9, "retry_at": now + 60},  # kopf retries it
        "s4": {"phase": "Pending", "retry_at": now - 10, "seen_at": now - 1},  # just changed: at work
        "s5": {"observed_generation": 3, "generation": 3},  # settled
        # kopf ended its cycle without a handler and without a write (its finalizer patch, made but
        # unanswered, refused on retry): no status, no retry, no event since
        "s6": {"phase": None, "ready_reason": None},
        "s7": {"phase": "Pending", "observed_generation": 1},  # a Pending status without its retry
        "s8": {"phase": None, "ready_reason": None, "seen_at": now - 30},  # kopf may still be at it
        "s9": {"phase": "Failed", "observed_generation": 1},  # at rest: waits for a change
    }
    for name, changes in cases.items():
        i = int(name[1:])
        indexes[key][("ns", name)] = [replace(objects[i], **changes)]
    nudged: list[tuple[str, str]] = []
    asyncio.run(_loop(indexes, snapshot, nudged).tick(compare=False))
    assert sorted(nudged) == [("s0", "stalled"), ("s1", "stalled"), ("s6", "stalled"), ("s7", "stalled")]


def test_an_object_whose_status_event_runs_late_is_not_nudged_and_one_nudged_waits_before_the_next() -> None:
    """In a burst the watch runs late: an object's record still has no status 30 s after its handler
    wrote one. The handler's end counts as seen for kopf's whole wait (a 10,000-object burst otherwise
    nudged such objects every follow period, hundreds of patches). Once nudged as dropped, an object is
    not nudged again until that wait has passed: the nudge's own event may be just as late."""
    indexes, snapshot, objects = _world(3)
    key = session_handlers.BINDING.index_name
    handling = Handling()
    for tracked in objects:  # no status, last event 600 s ago
        indexes[key][("ns", tracked.name)] = [replace(tracked, phase=None, ready_reason=None)]
    with handling.at("uid-0"):  # s0's handler ended now; its status event is on its way
        pass
    handling._ended["uid-1"] = time.time() - 30  # s1's handler ended 30 s ago
    nudged: list[tuple[str, str]] = []
    loop = _loop(indexes, snapshot, nudged, follow_period=0.01, handling=handling)
    asyncio.run(loop.tick(compare=False))
    assert nudged == [("s2", "stalled")]  # only the one nobody has touched for kopf's whole wait
    for _ in range(3):
        time.sleep(0.02)  # past the follow period: only the wait keeps s2 from a second nudge
        asyncio.run(loop.tick(compare=False))
    assert nudged == [("s2", "stalled")]


FOLLOW, WAIT = 5.0, 65.0


def _decide(state: dict[str, Any], quiet: float) -> bool:
    """Whether the resync nudges an object in `state` (see the strategy below) untouched for `quiet` s."""
    now = time.time()
    handling = Handling(keep_ended=WAIT)
    if state["handler_ended_ago"] is not None:
        handling._ended["uid-0"] = now - state["handler_ended_ago"]
    tracked, _ = _session(0)
    retry_at = now + state["retry_in"] if state["retry_in"] is not None else None
    tracked = replace(tracked, phase=state["phase"], generation=state["generation"])
    tracked = replace(tracked, observed_generation=state["observed"], deleting=state["deleting"])
    tracked = replace(tracked, finalized=state["finalized"], seen_at=now - quiet, retry_at=retry_at)
    loop = _loop({}, FakeSnapshot({}), [], follow_period=FOLLOW, handling=handling)
    if state["nudged_ago"] is not None:
        loop._stalled_at["uid-0"] = now - state["nudged_ago"]
    return loop.stalled(tracked, now)


states = st.fixed_dictionaries(
    {
        "phase": st.sampled_from([None, "Pending", "Ready", "Failed", "Completed", "Deleting"]),
        "generation": st.integers(1, 3),
        "observed": st.one_of(st.none(), st.integers(1, 3)),
        "deleting": st.booleans(),
        "finalized": st.booleans(),
        "retry_in": st.one_of(st.none(), st.floats(-400, 400)),
        "handler_ended_ago": st.one_of(st.none(), st.floats(0, 60)),
        "nudged_ago": st.one_of(st.none(), st.floats(0, 64)),
    }
)


@settings(max_examples=500, deadline=None)
@given(state=states, quiet=st.floats(0, 400), more=st.floats(0, 400))
def test_the_stalled_decision_never_nudges_work_in_hand_and_always_nudges_work_dropped(
    state: dict[str, Any], quiet: float, more: float
) -> None:
    """Properties over every state an object's record can be in (not the rule restated):
    - work in hand is never nudged: touched within a follow period, a retry still to come that no
      handler has run yet, or nudged within the wait;
    - an object at rest (Ready, Failed or Completed, not being deleted, no retry, the status of its
      generation) is never nudged;
    - waiting longer never takes a nudge back;
    - a begun object that is not at rest, with no retry promised, untouched for the whole wait and not
      nudged within it, is nudged (whatever kopf dropped, the loop picks it up)."""
    nudge = _decide(state, quiet)
    ended = state["handler_ended_ago"]
    touched = min(quiet, ended if ended is not None else math.inf)
    retry_ran = state["retry_in"] is not None and ended is not None and -ended >= state["retry_in"]
    if touched < FOLLOW or (state["nudged_ago"] is not None):
        assert not nudge
    if state["retry_in"] is not None and state["retry_in"] > -FOLLOW and not retry_ran:
        assert not nudge
    at_rest = not state["deleting"] and state["phase"] in ("Ready", "Failed", "Completed")
    if at_rest and state["retry_in"] is None and state["observed"] in (None, state["generation"]):
        assert not nudge
    if ended is None:  # the handler's end does not move with `quiet`
        assert not nudge or _decide(state, quiet + more)
    if (
        state["finalized"]
        and not at_rest
        and state["retry_in"] is None
        and state["nudged_ago"] is None
        and touched >= WAIT
    ):
        assert nudge


def test_kopf_progress_records_give_the_promised_retry() -> None:
    delayed = "2026-11-30T06:35:04.987000+00:00"
    annotations = {
        "trafficmirror.io/mirrorsession-reconcile.spec": (
            f'{{"started":"2026-11-30T06:35:01.790819+00:00","delayed":"{delayed}","purpose":"update","retries":1}}'
        ),
        "trafficmirror.io/mirrorsession-nudge.x": '{"started":"2026-11-30T06:35:01+00:00","success":true}',
        "trafficmirror.io/last-handled-configuration": '{"spec":{}}',
        "trafficmirror.io/aws-id": "tms-1",
        "other.io/x": '{"delayed":"2000-01-01T00:00:00+00:00"}',
    }
    assert promised_retry(annotations) == datetime.fromisoformat(delayed).timestamp()
    assert promised_retry({"trafficmirror.io/aws-id": "tms-1"}) is None


# --- a call that never answers: the loop goes on ----------------------------------------------------
# The loop awaits two things per pass: the shared Describe (a thread) and the nudges (API patches). Either
# may not answer (a hung connection, a thread that never finishes); the loop also carries the nudges of
# work nobody else carries on, so one pass that waits for good stops them all, with no log line.


class HangingSnapshot(FakeSnapshot):
    """A Describe that answers only once `answer` is set (never, unless the test sets it)."""

    def __init__(self, sessions: dict[str, Observed[AwsSession]]) -> None:
        super().__init__(sessions)
        self.answer = asyncio.Event()

    async def fetch(self, kind: str, region: str | None) -> tuple[float, dict[str, Any]]:
        self.calls += 1
        started = time.time()
        await self.answer.wait()
        return started, dict(self.sessions)


def _stalled(objects: list[Tracked], indexes: dict[str, Any], names: list[str]) -> None:
    key = session_handlers.BINDING.index_name
    for tracked in objects:
        if tracked.name in names:  # a retry promised long ago, nothing seen since: nudged every follow period
            indexes[key][("ns", tracked.name)] = [replace(tracked, phase="Pending", retry_at=time.time() - 600)]


def _fast_loop(
    indexes: dict[str, Any], snapshot: FakeSnapshot, nudge: Any, logger: logging.Logger | None = None
) -> ResyncLoop:
    return ResyncLoop(
        session_handlers.BINDING,
        snapshot,  # type: ignore[arg-type]
        indexes,
        nudge,
        period=0.05,
        follow_period=0.01,
        logger=logger or logging.getLogger("test"),
        describe_wait=0.05,
        nudge_timeout=0.05,
        handling=Handling(keep_ended=0.01),  # a stalled object is nudged again every pass
    )


async def _run_until(loop: ResyncLoop, done: Any, deadline: float = 20.0) -> bool:
    """Runs the loop until `done()` holds (True) or the deadline passes (False: the loop stopped)."""
    task = asyncio.create_task(loop.run())
    started = time.monotonic()
    while not done() and time.monotonic() - started < deadline:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return bool(done())


def test_a_describe_that_never_answers_does_not_stop_the_nudges_nor_start_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    indexes, _, objects = _world(5)
    snapshot = HangingSnapshot({})
    _stalled(objects, indexes, ["s0"])
    nudged: list[tuple[str, str]] = []

    async def nudge(binding: Binding, tracked: Tracked, why: str) -> None:
        nudged.append((tracked.name, why))

    with caplog.at_level(logging.WARNING, logger="test"):
        # the passes go on past it: s0 is nudged once per follow period
        assert asyncio.run(_run_until(_fast_loop(indexes, snapshot, nudge), lambda: len(nudged) >= 5))
    assert set(nudged) == {("s0", "stalled")}
    assert snapshot.calls == 1  # one Describe in flight, however many periods pass
    assert any("has not answered" in r.getMessage() for r in caplog.records)


def test_a_describe_that_answers_late_is_compared_then_the_next_one_starts() -> None:
    indexes, _, objects = _world(4)
    snapshot = HangingSnapshot({})  # s0 .. s3 are all missing from it: each is nudged "missing" once compared
    nudged: list[tuple[str, str]] = []

    async def nudge(binding: Binding, tracked: Tracked, why: str) -> None:
        nudged.append((tracked.name, why))

    async def scenario() -> None:
        loop = _fast_loop(indexes, snapshot, nudge)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.3)
        assert nudged == [] and snapshot.calls == 1
        snapshot.answer.set()
        started = time.monotonic()
        while (len(set(nudged)) < len(objects) or snapshot.calls < 2) and time.monotonic() - started < 20:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert set(nudged) == {(t.name, "missing") for t in objects}
    assert snapshot.calls >= 2  # the answered one is done with: later periods ask AWS again


def test_a_nudge_that_never_answers_is_dropped_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    indexes, snapshot, objects = _world(3)
    _stalled(objects, indexes, ["s0", "s1"])
    calls: list[str] = []

    async def nudge(binding: Binding, tracked: Tracked, why: str) -> None:
        calls.append(tracked.name)
        if tracked.name == "s0":
            await asyncio.Event().wait()  # an API call that never answers

    with caplog.at_level(logging.WARNING, logger="test"):
        loop = _fast_loop(indexes, snapshot, nudge)
        # s0's nudge is dropped, and s1 still nudged pass after pass; the periods' Describes go on too
        assert asyncio.run(_run_until(loop, lambda: calls.count("s0") >= 3 and snapshot.calls >= 3))
    assert calls.count("s1") >= 3
    assert any("not answered within" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("seed", range(8))
def test_random_hangs_never_stop_the_loop(seed: int) -> None:
    """Seeded: a random subset of the objects' nudges, and maybe the Describe, never answer; every other
    stalled object is still nudged pass after pass."""
    rng = random.Random(seed)
    print(f"seed={seed}")
    count = rng.randint(2, 40)
    indexes, snapshot, objects = _world(count)
    hanging_describe = rng.random() < 0.5
    if hanging_describe:
        snapshot = HangingSnapshot(dict(snapshot.sessions))
    stalled = [t.name for t in rng.sample(objects, rng.randint(1, count))]
    hanging = set(rng.sample(stalled, rng.randint(0, len(stalled) - 1)))
    _stalled(objects, indexes, stalled)
    calls: list[str] = []

    async def nudge(binding: Binding, tracked: Tracked, why: str) -> None:
        calls.append(tracked.name)
        if tracked.name in hanging:
            await asyncio.sleep(3600)

    answering = set(stalled) - hanging

    def went_on() -> bool:
        return all(calls.count(name) >= 3 for name in answering) and (hanging_describe or snapshot.calls >= 3)

    assert asyncio.run(_run_until(_fast_loop(indexes, snapshot, nudge), went_on)), (hanging_describe, sorted(hanging))
    assert snapshot.calls == 1 if hanging_describe else snapshot.calls >= 3


def test_a_late_retry_whose_handler_waits_its_turn_is_not_nudged_until_the_handler_is_done() -> None:
    """With thousands of objects at once, a handler waits for a reconcile slot long past the retry kopf
    promised: that retry is late, not dropped. Nudging it queues one more reconcile of the object (and
    a patch every follow period), so a handler at work counts as seen; one that ended after the retry
    was due was that retry, and only its status event is still to come (a late watch): such an object
    waits the whole `unhandled_after`, as does one already nudged."""
    indexes, snapshot, objects = _world(3)
    _stalled(objects, indexes, ["s0", "s1", "s2"])  # each: a retry due 600 s ago, no event since
    handling = Handling(keep_ended=1.0)
    nudged: list[tuple[str, str]] = []
    loop = _loop(indexes, snapshot, nudged, follow_period=0.2, handling=handling)
    with handling.at("uid-0"):  # s0: its handler waits for a slot
        with handling.at("uid-1"):  # s1: its handler (the retry) ends now
            pass
        asyncio.run(loop.tick(compare=False))
        assert nudged == [("s2", "stalled")]  # nobody ran s2's retry
        time.sleep(0.25)
        asyncio.run(loop.tick(compare=False))
        assert nudged == [("s2", "stalled")]  # s1's retry ran; s2 was nudged 0.25 s ago
    time.sleep(0.25)  # s0's handler (its retry) ended
    asyncio.run(loop.tick(compare=False))
    assert nudged == [("s2", "stalled")]
    time.sleep(0.6)  # s1 and s2 past the wait: s1's status never came, s2's nudge brought nothing
    asyncio.run(loop.tick(compare=False))
    assert sorted(nudged) == [("s1", "stalled"), ("s2", "stalled"), ("s2", "stalled")]
