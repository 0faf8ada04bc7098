"""The batched resync's decisions, one period at a time: which objects it hands to a reconcile, and
how many Describes it makes. In-memory: kopf's index is a dict of lists, the Describe a counted fake.

The invariants: at steady state (every object in sync) no object is nudged and each kind costs one
Describe per period, whatever the number of objects; an object is nudged at most once per follow period;
an object that changed after the Describe started is not judged on that Describe.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from trafficmirror.aws.ec2 import AwsSession
from trafficmirror.handlers import session as session_handlers
from trafficmirror.handlers.registration import Binding, Tracked, promised_retry
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


def _loop(indexes: dict[str, Any], snapshot: FakeSnapshot, nudged: list[tuple[str, str]]) -> ResyncLoop:
    async def nudge(binding: Binding, tracked: Tracked, why: str) -> None:
        nudged.append((tracked.name, why))

    return ResyncLoop(
        session_handlers.BINDING,
        snapshot,  # type: ignore[arg-type]
        indexes,
        nudge,
        period=PERIOD,
        follow_period=5.0,
        logger=logging.getLogger("test"),
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
        elif change == "skip-pending":  # kopf's change handler owns it; the resync stays away
            indexes[session_handlers.BINDING.index_name][key] = [replace(tracked, phase="Pending")]
            del snapshot.sessions[sid]
        else:
            indexes[session_handlers.BINDING.index_name][key] = [replace(tracked, deleting=True)]
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
    indexes, snapshot, objects = _world(6)
    key = session_handlers.BINDING.index_name
    now = time.time()
    cases = {
        "s0": {"phase": "Pending", "retry_at": now - 10},  # a retry due 10 s ago, no event since: dropped
        "s1": {"observed_generation": 7, "generation": 9},  # edits after the last status, nobody at work
        "s2": {"phase": "Pending", "retry_at": now + 60},  # a backoff still to come: kopf's
        "s3": {"observed_generation": 7, "generation": 9, "retry_at": now + 60},  # kopf retries it
        "s4": {"phase": "Pending", "retry_at": now - 10, "seen_at": now - 1},  # just changed: at work
        "s5": {"observed_generation": 3, "generation": 3},  # settled
    }
    for name, changes in cases.items():
        i = int(name[1:])
        indexes[key][("ns", name)] = [replace(objects[i], **changes)]
    nudged: list[tuple[str, str]] = []
    asyncio.run(_loop(indexes, snapshot, nudged).tick(compare=False))
    assert sorted(nudged) == [("s0", "stalled"), ("s1", "stalled")]


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
